/**
 * Idle release, pure: an allocation with an idle grace is released once its holder has had
 * no user-feed socket open for that long. The clock never starts before the allocation did,
 * and an expiry that comes first makes the idle deadline moot.
 */

/** The grace that applies: the smaller of the allocation's and the pool's, or whichever is set. */
export function effectiveIdleGraceMs(allocationMs: number | null | undefined, poolMs: number | null | undefined): number | null {
  const set = [allocationMs, poolMs].filter((x): x is number => typeof x === "number" && x > 0);
  return set.length ? Math.min(...set) : null;
}

/** The grace an allocate request asks for (the test-only seconds win over minutes). */
export function requestedIdleGraceMs(minutes: number | undefined, seconds: number | undefined): number | null {
  if (seconds !== undefined) return seconds * 1000;
  if (minutes !== undefined) return minutes * 60_000;
  return null;
}

export interface IdleInput {
  /** User-feed sockets open right now. */
  openSockets: number;
  /** Since when the holder has had no socket (null: unknown, e.g. a restart dropped them). */
  goneAt: number | null;
  allocatedAt: number;
  expiresAt: number;
  graceMs: number | null;
  now: number;
}

/** When the allocation is released as idle; null while a socket is open, without a grace, or when expiry comes first. */
export function idleDeadline(i: IdleInput): number | null {
  if (i.graceMs === null || i.graceMs <= 0 || i.openSockets > 0) return null;
  // Unknown since when: the clock starts now (the caller records it so it does not move).
  const since = Math.max(i.goneAt ?? i.now, i.allocatedAt);
  const at = since + i.graceMs;
  return at < i.expiresAt ? at : null;
}

/**
 * When each active idle-release allocation is due. While a socket is open nothing is due, but
 * the alarm looks again one grace later (`recheck`): a restart can drop sockets without a close
 * event, and then only a wake-up notices they are gone (release ≤ 2 graces late).
 */
export function idleSchedule<R extends { allocated_at: number | null; expires_at: number | null; idle_ms: number | null }>(
  rows: R[],
  openSockets: number,
  goneAt: number | null,
  now: number,
): { row: R; at: number; recheck?: true }[] {
  return rows.flatMap((row) => {
    if (openSockets > 0)
      return row.idle_ms && now + row.idle_ms < row.expires_at! ? [{ row, at: now + row.idle_ms, recheck: true as const }] : [];
    const at = idleDeadline({ openSockets, goneAt, allocatedAt: row.allocated_at!, expiresAt: row.expires_at!, graceMs: row.idle_ms, now });
    return at === null ? [] : [{ row, at }];
  });
}
