/**
 * A pool's waiting queue: entries wait (priority, then arrival) until a fitting device frees;
 * the device is then offered to the head entry (no other claim may pick it) and handed over.
 * The entry's id is the idempotency key of its allocation, so a retried hand-over never
 * allocates twice. Synchronous, over the pool's SQL; it calls no other object.
 */
import { QUEUE } from "../config";
import type { QueueEntryView, QueueJoin, QueueStatus } from "../contracts";
import { durationMsOf } from "../domain/duration";
import { estimateStart, joinHash, priorityName, type EstimateDevice } from "../domain/queue";
import { fits } from "../domain/strategy";
import type { ErrorCode, Failure } from "../errors";
import { newScopedId } from "../ids";
import { earliest } from "../objects/schedule";
import type { Sql } from "../objects/sql";
import { boundsArgs, type IndexRow } from "./pool-index";
import { iso } from "../domain/time";
import { specOf } from "../domain/spec";

export const QUEUE_SCHEMA = `CREATE TABLE queue (
    entry_id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, user_id TEXT NOT NULL, priority INTEGER NOT NULL,
    cpu_min INTEGER NOT NULL, mem_min INTEGER NOT NULL, storage_min INTEGER NOT NULL,
    cpu_max INTEGER NOT NULL, mem_max INTEGER NOT NULL, storage_max INTEGER NOT NULL,
    duration_minutes INTEGER NOT NULL, duration_seconds INTEGER, duration_ms INTEGER NOT NULL,
    max_wait_minutes INTEGER NOT NULL, wait_until INTEGER NOT NULL, status TEXT NOT NULL,
    device_id TEXT, allocation_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, retry_at INTEGER,
    error TEXT, created_by TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    idem_key TEXT, idem_hash TEXT);
  CREATE INDEX queue_order ON queue(status, priority DESC, seq);
  CREATE INDEX queue_user ON queue(user_id, created_at);
  CREATE UNIQUE INDEX queue_idem ON queue(user_id, idem_key) WHERE idem_key IS NOT NULL;`;

/** The bounds columns a queue entry and a reservation share. */
export interface Bounds {
  cpu_min: number;
  mem_min: number;
  storage_min: number;
  cpu_max: number;
  mem_max: number;
  storage_max: number;
}

/** Columns a queue entry and a reservation share: who made it, when, its last error, its idempotency key. */
export interface Tracked {
  error: string | null;
  created_by: string;
  created_at: number;
  updated_at: number;
  idem_key: string | null;
  idem_hash: string | null;
}

export interface QueueRow extends Bounds, Tracked {
  entry_id: string;
  seq: number;
  user_id: string;
  priority: number;
  duration_minutes: number;
  duration_seconds: number | null;
  duration_ms: number;
  max_wait_minutes: number;
  wait_until: number;
  status: QueueStatus;
  device_id: string | null;
  allocation_id: string | null;
  attempts: number;
  retry_at: number | null;
}

export const boundsOf = (r: Bounds) => ({
  min: { cpuCores: r.cpu_min, memoryMB: r.mem_min, storageMB: r.storage_min },
  max: { cpuCores: r.cpu_max, memoryMB: r.mem_max, storageMB: r.storage_max },
});

export const errorText = (f: Failure) => JSON.stringify({ code: f.code, message: f.message });

export function parseError(text: string | null): { code: ErrorCode; message: string } | null {
  return text ? (JSON.parse(text) as { code: ErrorCode; message: string }) : null;
}

export class QueueStore {
  /** Devices an entry's hand-over found not free after all (the index was behind), passed over for that entry a while. In memory. */
  private readonly raced = new Map<string, Map<string, number>>();

  constructor(private readonly sql: Sql) {}

  row(entryId: string): QueueRow | null {
    return this.sql.one<QueueRow>("SELECT * FROM queue WHERE entry_id = ?", entryId);
  }

  /** A new waiting entry; returns its id and when its wait ends. */
  insert(j: QueueJoin, now: number): { entryId: string; waitUntil: number } {
    const entryId = newScopedId("que", j.pool);
    const seq = (this.sql.one<{ s: number | null }>("SELECT MAX(seq) AS s FROM queue")?.s ?? 0) + 1;
    const waitUntil = now + durationMsOf(j.maxWaitMinutes, j.maxWaitSeconds);
    this.sql.exec(
      `INSERT INTO queue (entry_id, seq, user_id, priority, cpu_min, mem_min, storage_min, cpu_max, mem_max, storage_max,
         duration_minutes, duration_seconds, duration_ms, max_wait_minutes, wait_until, status, created_by, created_at, updated_at,
         idem_key, idem_hash)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'waiting', ?, ?, ?, ?, ?)`,
      entryId,
      seq,
      j.userId,
      j.priority,
      ...boundsArgs(j.min, j.max),
      j.durationMinutes,
      j.durationSeconds ?? null,
      durationMsOf(j.durationMinutes, j.durationSeconds),
      j.maxWaitMinutes,
      waitUntil,
      j.createdBy,
      now,
      now,
      j.idempotencyKey ?? null,
      j.idempotencyKey ? joinHash(j) : null,
    );
    return { entryId, waitUntil };
  }

  /** The entry a user's idempotency key made (null: the key is new). */
  byKey(userId: string, key: string): QueueRow | null {
    return this.sql.one<QueueRow>("SELECT * FROM queue WHERE user_id = ? AND idem_key = ?", userId, key);
  }

  /** Entries a user has waiting (or being handed a device). */
  openFor(userId: string): number {
    return this.sql.one<{ n: number }>("SELECT COUNT(*) AS n FROM queue WHERE user_id = ? AND status IN ('waiting','offered')", userId)!.n;
  }

  open(): number {
    return this.sql.one<{ n: number }>("SELECT COUNT(*) AS n FROM queue WHERE status IN ('waiting','offered')")!.n;
  }

  anyWaiting(): boolean {
    return this.sql.one("SELECT 1 AS x FROM queue WHERE status = 'waiting' LIMIT 1") !== null;
  }

  /** A user's entries (no `userId`: everyone's), newest first. */
  list(userId: string | undefined, status: QueueStatus | undefined, limit: number): QueueRow[] {
    return this.sql.all<QueueRow>(
      `SELECT * FROM queue WHERE 1 = 1 ${userId ? "AND user_id = ?" : ""} ${status ? "AND status = ?" : ""} ORDER BY created_at DESC,
        seq DESC LIMIT ?`,
      ...[...(userId ? [userId] : []), ...(status ? [status] : []), limit],
    );
  }

  cancel(entryId: string, now: number): void {
    this.sql.exec(
      `UPDATE queue SET status = 'cancelled', device_id = NULL, retry_at = NULL, updated_at = ? WHERE entry_id = ?
       AND status IN ('waiting','offered')`,
      now,
      entryId,
    );
  }

  // ---- the offer round ---------------------------------------------------------------------------

  /** Waiting entries whose wait has ended. */
  pastWait(now: number): QueueRow[] {
    return this.sql.all<QueueRow>("SELECT * FROM queue WHERE status = 'waiting' AND wait_until <= ?", now);
  }

  expire(entryId: string, now: number): void {
    this.sql.exec("UPDATE queue SET status = 'expired', updated_at = ? WHERE entry_id = ? AND status = 'waiting'", now, entryId);
  }

  /**
   * Matches free devices to waiting entries in queue order: each entry gets the smallest free
   * device it fits that has no reservation window before its allocation would end (`windowAt`:
   * each device's earliest window). Marks each offer; returns the offered entries.
   */
  offer(free: IndexRow[], windowAt: Map<string, number>, now: number): QueueRow[] {
    const waiting = this.sql.all<QueueRow>(
      "SELECT * FROM queue WHERE status = 'waiting' AND (retry_at IS NULL OR retry_at <= ?) ORDER BY priority DESC, seq LIMIT 2000",
      now,
    );
    const offers: QueueRow[] = [];
    for (const e of waiting) {
      if (free.length === 0) break;
      const b = boundsOf(e);
      const skip = this.racedFor(e.entry_id, now);
      const fitting = (d: IndexRow) =>
        fits(specOf(d), b.min, b.max) && !skip.has(d.device_id) && (windowAt.get(d.device_id) ?? Infinity) >= now + e.duration_ms;
      const i = free.findIndex(fitting);
      if (i < 0) continue;
      const [d] = free.splice(i, 1);
      this.sql.exec(
        "UPDATE queue SET status = 'offered', device_id = ?, retry_at = ?, updated_at = ? WHERE entry_id = ?",
        d!.device_id,
        now + QUEUE.offerRetryMs,
        now,
        e.entry_id,
      );
      offers.push({ ...e, status: "offered", device_id: d!.device_id });
    }
    return offers;
  }

  /** Offered entries whose hand-over did not finish (a restart, a user object that did not answer). */
  stuck(now: number): QueueRow[] {
    return this.sql.all<QueueRow>("SELECT * FROM queue WHERE status = 'offered' AND retry_at <= ?", now);
  }

  // ---- hand-over outcomes ----------------------------------------------------------------------

  fulfilled(entryId: string, allocationId: string, deviceId: string, now: number): void {
    this.sql.exec(
      "UPDATE queue SET status = 'fulfilled', device_id = ?, allocation_id = ?, retry_at = NULL, updated_at = ? WHERE entry_id = ?",
      deviceId,
      allocationId,
      now,
      entryId,
    );
    this.raced.delete(entryId);
  }

  failed(entryId: string, error: Failure, now: number): void {
    this.sql.exec(
      "UPDATE queue SET status = 'failed', device_id = NULL, retry_at = NULL, error = ?, updated_at = ? WHERE entry_id = ?",
      errorText(error),
      now,
      entryId,
    );
    this.raced.delete(entryId);
  }

  /** The offered device was not free after all: the entry waits for another, passing this one over a while. */
  raceLost(e: QueueRow, error: Failure, now: number): void {
    const m = this.raced.get(e.entry_id) ?? new Map<string, number>();
    m.set(e.device_id ?? "", now + QUEUE.raceSkipMs);
    this.raced.set(e.entry_id, m);
    this.sql.exec(
      "UPDATE queue SET status = 'waiting', device_id = NULL, retry_at = NULL, error = ?, updated_at = ? WHERE entry_id = ?",
      errorText(error),
      now,
      e.entry_id,
    );
  }

  /** Passing failures that go on: the device goes back to the queue and the entry waits again (retried later). */
  requeue(entryId: string, error: Failure, now: number): void {
    this.sql.exec(
      "UPDATE queue SET status = 'waiting', device_id = NULL, attempts = 0, retry_at = ?, error = ?, updated_at = ? WHERE entry_id = ?",
      now + QUEUE.offerRetryMs,
      errorText(error),
      now,
      entryId,
    );
  }

  /** A passing failure: the alarm drives the hand-over again, same key. */
  retryLater(entryId: string, error: Failure, now: number): void {
    this.sql.exec(
      "UPDATE queue SET attempts = attempts + 1, retry_at = ?, error = ?, updated_at = ? WHERE entry_id = ?",
      now + QUEUE.offerRetryMs,
      errorText(error),
      now,
      entryId,
    );
  }

  /** Devices this entry is passing over for now (each for `QUEUE.raceSkipMs` after its hand-over found it taken). */
  private racedFor(entryId: string, now: number): Set<string> {
    const m = this.raced.get(entryId);
    if (!m) return new Set();
    for (const [d, until] of m) if (until <= now) m.delete(d);
    if (m.size === 0) this.raced.delete(entryId);
    return new Set(m.keys());
  }

  // ---- the schedule ---------------------------------------------------------------------------

  /** The earliest end of a wait, or retry of a waiting entry (both served by the offer round). */
  nextWait(): number | null {
    const t = this.sql.one<{ wait: number | null; retry: number | null }>(
      `SELECT (SELECT MIN(wait_until) FROM queue WHERE status = 'waiting') AS wait,
              (SELECT MIN(retry_at) FROM queue WHERE status = 'waiting' AND retry_at IS NOT NULL) AS retry`,
    )!;
    return earliest(t.wait, t.retry);
  }

  /** The earliest retry of an offered entry's hand-over. */
  nextRetry(): number | null {
    return this.sql.one<{ t: number | null }>("SELECT MIN(retry_at) AS t FROM queue WHERE status = 'offered' AND retry_at IS NOT NULL")!.t;
  }

  // ---- views ------------------------------------------------------------------------------------

  view(r: QueueRow, pool: string, devices: () => EstimateDevice[]): QueueEntryView {
    const now = Date.now();
    const open = r.status === "waiting" || r.status === "offered";
    let position: number | null = null;
    let estimate: number | null = null;
    if (open) {
      const ahead = this.sql.all<QueueRow>(
        `SELECT * FROM queue WHERE status IN ('waiting','offered') AND (priority > ? OR (priority = ? AND seq < ?))
         ORDER BY priority DESC, seq LIMIT 1000`,
        r.priority,
        r.priority,
        r.seq,
      );
      position = ahead.length + 1;
      const entries = ahead.map((a) => ({ ...boundsOf(a), durationMs: a.duration_ms }));
      estimate = r.status === "offered" ? now : estimateStart(devices(), entries, boundsOf(r), now);
    }
    return {
      entryId: r.entry_id,
      userId: r.user_id,
      pool,
      status: r.status,
      priority: r.priority,
      priorityName: priorityName(r.priority),
      spec: boundsOf(r).min,
      durationMinutes: r.duration_minutes,
      maxWaitMinutes: r.max_wait_minutes,
      joinedAt: iso(r.created_at),
      waitUntil: iso(r.wait_until),
      position,
      estimatedStartAt: estimate === null ? null : iso(estimate),
      estimatedWaitSeconds: estimate === null ? null : Math.max(0, Math.round((estimate - now) / 1000)),
      allocationId: r.allocation_id,
      deviceId: r.status === "fulfilled" ? r.device_id : null,
      error: parseError(r.error),
      createdBy: r.created_by,
    };
  }
}
