/**
 * A user's allocations, as their object keeps them: `pending` (step 1 of the protocol: quota
 * held until the device is recorded or the deadline passes), `active`, `released`, `aborted`.
 * Usage is always derived from the pending and active rows, never kept as a counter that could
 * drift. Synchronous, over the object's SQL; it calls no other object.
 */
import type { AllocationResult, Claimed, ExtendInfo, Picked, ReleaseResult } from "../contracts";
import { fail, ok, type Failure, type Result } from "../errors";
import { decodeCursor, encodeCursor } from "../cursor";
import type { Allocation, AllocationStatus, DeviceSpec, EndReason, EndedAllocation, QuotaUsage, UsageRecord } from "../domain/types";
import type { AllocationEventData } from "../feed/protocol";
import type { Sql } from "../objects/sql";
import { iso } from "../domain/time";

export const ALLOCATIONS_SCHEMA = `CREATE TABLE allocations (
    allocation_id TEXT PRIMARY KEY, device_id TEXT, pool TEXT NOT NULL, node TEXT, status TEXT NOT NULL,
    cpu INTEGER NOT NULL, mem INTEGER NOT NULL, storage INTEGER NOT NULL,
    allocated_at INTEGER, expires_at INTEGER, duration_minutes INTEGER NOT NULL, duration_ms INTEGER NOT NULL,
    booked_hours REAL NOT NULL, released_at INTEGER, duration_seconds INTEGER, reason TEXT,
    extend_count INTEGER NOT NULL DEFAULT 0, extended_minutes INTEGER NOT NULL DEFAULT 0, last_extended_at INTEGER,
    idem_key TEXT UNIQUE, idem_hash TEXT, deadline INTEGER, created_at INTEGER NOT NULL, idle_ms INTEGER);
  CREATE INDEX allocations_status ON allocations(status, created_at);
  CREATE INDEX allocations_device ON allocations(device_id, status);
  CREATE INDEX allocations_created ON allocations(created_at);
  CREATE INDEX allocations_released ON allocations(status, released_at);`;

/**
 * Migration 4: the same table keyed by its id alone (WITHOUT ROWID: the key's own index was a
 * second row written per insert), the idempotency key unique only where there is one (NULL
 * keys had index entries too), and one index with the status instead of three: (status,
 * released_at) serves the usage sums and the ended ones; the device lookup and a page by status
 * read the few live rows through it or walk the newest first. Rows written are billed.
 */
export const ALLOCATIONS_LEAN = `CREATE TABLE allocations_lean (
    allocation_id TEXT PRIMARY KEY, device_id TEXT, pool TEXT NOT NULL, node TEXT, status TEXT NOT NULL,
    cpu INTEGER NOT NULL, mem INTEGER NOT NULL, storage INTEGER NOT NULL,
    allocated_at INTEGER, expires_at INTEGER, duration_minutes INTEGER NOT NULL, duration_ms INTEGER NOT NULL,
    booked_hours REAL NOT NULL, released_at INTEGER, duration_seconds INTEGER, reason TEXT,
    extend_count INTEGER NOT NULL DEFAULT 0, extended_minutes INTEGER NOT NULL DEFAULT 0, last_extended_at INTEGER,
    idem_key TEXT, idem_hash TEXT, deadline INTEGER, created_at INTEGER NOT NULL, idle_ms INTEGER) WITHOUT ROWID;
  INSERT INTO allocations_lean SELECT allocation_id, device_id, pool, node, status, cpu, mem, storage, allocated_at, expires_at,
    duration_minutes, duration_ms, booked_hours, released_at, duration_seconds, reason, extend_count, extended_minutes,
    last_extended_at, idem_key, idem_hash, deadline, created_at, idle_ms FROM allocations;
  DROP TABLE allocations;
  ALTER TABLE allocations_lean RENAME TO allocations;
  CREATE UNIQUE INDEX allocations_idem ON allocations(idem_key) WHERE idem_key IS NOT NULL;
  CREATE INDEX allocations_created ON allocations(created_at);
  CREATE INDEX allocations_released ON allocations(status, released_at);`;

export interface AllocationRow {
  allocation_id: string;
  device_id: string | null;
  pool: string;
  node: string | null;
  status: AllocationStatus;
  cpu: number;
  mem: number;
  storage: number;
  allocated_at: number | null;
  expires_at: number | null;
  duration_minutes: number;
  duration_ms: number;
  booked_hours: number;
  released_at: number | null;
  duration_seconds: number | null;
  reason: EndReason | null;
  extend_count: number;
  extended_minutes: number;
  last_extended_at: number | null;
  idem_key: string | null;
  idem_hash: string | null;
  /** A pending row not recorded by then is aborted; an active one recorded beside its claim is checked with its device then. */
  deadline: number | null;
  created_at: number;
  /** Idle release grace (null: off). */
  idle_ms: number | null;
}

export interface PendingAllocation {
  allocationId: string;
  pool: string;
  spec: DeviceSpec;
  durationMinutes: number;
  durationMs: number;
  idempotencyKey: string | null;
  hash: string;
  deadline: number;
  idleMs: number | null;
}

export class AllocationStore {
  constructor(private readonly sql: Sql) {}

  row(allocationId: string): AllocationRow | null {
    return this.sql.one<AllocationRow>("SELECT * FROM allocations WHERE allocation_id = ?", allocationId);
  }

  /** An active allocation, or why not (a pending or aborted one is "not found"). */
  active(allocationId: string): Result<AllocationRow> {
    const row = this.row(allocationId);
    if (!row || row.status === "aborted" || row.status === "pending") return allocationNotFound(allocationId);
    if (row.status !== "active") return fail(409, "ALLOCATION_ENDED", "The allocation has already ended.", { allocationId });
    return ok(row);
  }

  byKey(idempotencyKey: string): AllocationRow | null {
    return this.sql.one<AllocationRow>("SELECT * FROM allocations WHERE idem_key = ?", idempotencyKey);
  }

  activeOn(deviceId: string): AllocationRow | null {
    return this.sql.one<AllocationRow>("SELECT * FROM allocations WHERE device_id = ? AND status = 'active'", deviceId);
  }

  /** Usage = the pending and active allocations (`hoursUsed`: the period's finished hours). */
  usage(hoursUsed: number, excluding?: string): QuotaUsage {
    const u = this.sql.one<{ n: number; cpu: number | null; mem: number | null; storage: number | null; hours: number | null }>(
      `SELECT COUNT(*) AS n, SUM(cpu) AS cpu, SUM(mem) AS mem, SUM(storage) AS storage, SUM(booked_hours) AS hours
       FROM allocations WHERE status IN ('pending','active') AND allocation_id != ?`,
      excluding ?? "",
    )!;
    return { devices: u.n, cpuCores: u.cpu ?? 0, memoryMB: u.mem ?? 0, storageMB: u.storage ?? 0, deviceHours: hoursUsed + (u.hours ?? 0) };
  }

  /** Pending and active allocations' specs and booked durations (what they may still cost). */
  open(excluding?: string): { cpu: number; mem: number; storage: number; duration_ms: number }[] {
    return this.sql.all(
      "SELECT cpu, mem, storage, duration_ms FROM allocations WHERE status IN ('pending','active') AND allocation_id != ?",
      excluding ?? "",
    );
  }

  /** What the user holds from `now` on, each until it expires (a pending one: for its whole duration). */
  holding(now: number): { startAt: number; endAt: number; spec: DeviceSpec }[] {
    return this.sql
      .all<{ cpu: number; mem: number; storage: number; expires_at: number | null; duration_ms: number }>(
        "SELECT cpu, mem, storage, expires_at, duration_ms FROM allocations WHERE status IN ('pending','active')",
      )
      .map((r) => ({
        startAt: now,
        endAt: r.expires_at ?? now + r.duration_ms,
        spec: { cpuCores: r.cpu, memoryMB: r.mem, storageMB: r.storage },
      }));
  }

  /** Billable allocations that ended at or after `since`. */
  endedSince(since: number): { cpu: number; mem: number; storage: number; duration_seconds: number }[] {
    return this.sql.all(
      "SELECT cpu, mem, storage, duration_seconds FROM allocations WHERE status = 'released' AND reason != 'orphaned' AND released_at >= ?",
      since,
    );
  }

  /** Step 1: the pending row (quota held). */
  insertPending(p: PendingAllocation, now: number): void {
    this.sql.exec(
      `INSERT INTO allocations (allocation_id, pool, status, cpu, mem, storage, duration_minutes, duration_ms, booked_hours, idem_key,
        idem_hash, deadline, created_at, idle_ms)
       VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      p.allocationId,
      p.pool,
      p.spec.cpuCores,
      p.spec.memoryMB,
      p.spec.storageMB,
      p.durationMinutes,
      p.durationMs,
      p.durationMs / 3_600_000,
      p.idempotencyKey,
      p.hash,
      p.deadline,
      now,
      p.idleMs,
    );
  }

  /** A claim that failed: the pending row goes (its key may be used again). */
  /**
   * A direct allocation recorded beside its device's claim (src/allocate.ts): active at once on
   * the picked device, checked with the device at `deadline` unless it has ended by then.
   */
  insertActive(p: Omit<PendingAllocation, "spec"> & { device: Picked; allocatedAt: number; expiresAt: number }, now: number): void {
    const d = p.device;
    this.sql.exec(
      `INSERT INTO allocations (allocation_id, device_id, pool, node, status, cpu, mem, storage, allocated_at, expires_at,
        duration_minutes, duration_ms, booked_hours, idem_key, idem_hash, deadline, created_at, idle_ms)
       VALUES (?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      p.allocationId,
      d.deviceId,
      p.pool,
      d.node,
      d.cpuCores,
      d.memoryMB,
      d.storageMB,
      p.allocatedAt,
      p.expiresAt,
      p.durationMinutes,
      p.durationMs,
      p.durationMs / 3_600_000,
      p.idempotencyKey,
      p.hash,
      p.deadline,
      now,
      p.idleMs,
    );
  }

  /** The device's claim failed: the recorded allocation never was (no usage; its id reads as not found). */
  abortRecorded(allocationId: string): boolean {
    return (
      this.sql.all(
        `UPDATE allocations SET status = 'aborted', deadline = NULL, idem_key = NULL
        WHERE allocation_id = ? AND status = 'active' RETURNING allocation_id`,
        allocationId,
      ).length > 0
    );
  }

  /** When the first recorded allocation's check with its device is due. */
  firstRecordCheck(): number | null {
    return this.sql.one<{ t: number | null }>(
      "SELECT MIN(deadline) AS t FROM allocations WHERE status = 'active' AND deadline IS NOT NULL",
    )!.t;
  }

  recordChecksDue(now: number): AllocationRow[] {
    return this.sql.all<AllocationRow>("SELECT * FROM allocations WHERE status = 'active' AND deadline <= ? LIMIT 50", now);
  }

  /** The device holds it: no more checks until its expiry. */
  recordChecked(allocationId: string): void {
    this.sql.exec("UPDATE allocations SET deadline = NULL WHERE allocation_id = ? AND status = 'active'", allocationId);
  }

  dropPending(allocationId: string): void {
    this.sql.exec("DELETE FROM allocations WHERE allocation_id = ? AND status = 'pending'", allocationId);
  }

  abortPending(allocationId: string): void {
    this.sql.exec(
      "UPDATE allocations SET status = 'aborted', deadline = NULL, idem_key = NULL WHERE allocation_id = ? AND status = 'pending'",
      allocationId,
    );
  }

  /** Step 3: the claimed device recorded (its real spec), the row active. */
  activate(allocationId: string, c: Claimed, idleMs: number | null): void {
    this.sql.exec(
      `UPDATE allocations SET status = 'active', device_id = ?, node = ?, cpu = ?, mem = ?, storage = ?, allocated_at = ?,
        expires_at = ?, deadline = NULL, idle_ms = ?
       WHERE allocation_id = ?`,
      c.deviceId,
      c.node,
      c.cpuCores,
      c.memoryMB,
      c.storageMB,
      c.allocatedAt,
      c.expiresAt,
      idleMs,
      allocationId,
    );
  }

  /** An active allocation ended; returns the row as it was (null: it was not active, nothing changed). */
  markReleased(e: EndedAllocation): Pick<AllocationRow, "status" | "pool" | "cpu" | "mem" | "storage"> | null {
    const row = this.sql.one<Pick<AllocationRow, "status" | "pool" | "cpu" | "mem" | "storage">>(
      "SELECT status, pool, cpu, mem, storage FROM allocations WHERE allocation_id = ?",
      e.allocationId,
    );
    if (!row) return null;
    if (row.status === "pending") {
      this.abortPending(e.allocationId);
      return null;
    }
    if (row.status !== "active") return null;
    this.sql.exec(
      `UPDATE allocations SET status = 'released', released_at = ?, duration_seconds = ?, reason = ?, booked_hours = 0
       WHERE allocation_id = ?`,
      e.releasedAt,
      e.durationSeconds,
      e.reason,
      e.allocationId,
    );
    return row;
  }

  /** Books an extension (quota held before the device moves its alarm). */
  extend(allocationId: string, expiresAt: number, minutes: number, now: number): void {
    this.sql.exec(
      `UPDATE allocations SET expires_at = ?, duration_minutes = duration_minutes + ?, duration_ms = duration_ms + ?,
        booked_hours = booked_hours + ?,
         extend_count = extend_count + 1, extended_minutes = extended_minutes + ?, last_extended_at = ? WHERE allocation_id = ?`,
      expiresAt,
      minutes,
      minutes * 60_000,
      minutes / 60,
      minutes,
      now,
      allocationId,
    );
  }

  /** Undoes a booked extension the device refused: the row as it was. */
  restore(r: AllocationRow): void {
    this.sql.exec(
      `UPDATE allocations SET expires_at = ?, duration_minutes = ?, duration_ms = ?, booked_hours = ?, extend_count = ?,
        extended_minutes = ?, last_extended_at = ?
       WHERE allocation_id = ? AND status = 'active'`,
      r.expires_at,
      r.duration_minutes,
      r.duration_ms,
      r.booked_hours,
      r.extend_count,
      r.extended_minutes,
      r.last_extended_at,
      r.allocation_id,
    );
  }

  setExpires(allocationId: string, expiresAt: number): void {
    this.sql.exec("UPDATE allocations SET expires_at = ? WHERE allocation_id = ? AND status = 'active'", expiresAt, allocationId);
  }

  // ---- what the alarm looks at ---------------------------------------------------------------

  firstDeadline(): number | null {
    return this.sql.one<{ t: number | null }>("SELECT MIN(deadline) AS t FROM allocations WHERE status = 'pending'")!.t;
  }

  stalePending(now: number): string[] {
    return this.sql
      .all<{ allocation_id: string }>("SELECT allocation_id FROM allocations WHERE status = 'pending' AND deadline <= ?", now)
      .map((r) => r.allocation_id);
  }

  /** The first active allocation's expiry, plus `graceMs` (when its overdue check is due). */
  firstOverdue(graceMs: number): number | null {
    const t = this.sql.one<{ t: number | null }>("SELECT MIN(expires_at) AS t FROM allocations WHERE status = 'active'")!.t;
    return t === null ? null : t + graceMs;
  }

  /** Active allocations past `before`, at most 50. */
  overdue(before: number): AllocationRow[] {
    return this.sql.all<AllocationRow>("SELECT * FROM allocations WHERE status = 'active' AND expires_at <= ? LIMIT 50", before);
  }

  /** Active allocations with an idle release grace. */
  idleReleasable(): AllocationRow[] {
    return this.sql.all<AllocationRow>("SELECT * FROM allocations WHERE status = 'active' AND idle_ms IS NOT NULL");
  }

  // ---- pages ------------------------------------------------------------------------------------

  /** Newest first (aborted rows are never shown). */
  page(opts: { status?: AllocationStatus; cursor?: string; limit: number }): { rows: AllocationRow[]; nextCursor: string | null } {
    const [cAt, cId] = decodeCursor(opts.cursor);
    const rows = this.sql.all<AllocationRow>(
      `SELECT * FROM allocations WHERE status != 'aborted' ${opts.status ? "AND status = ?" : ""}
         AND (created_at < ? OR (created_at = ? AND allocation_id < ?)) ORDER BY created_at DESC, allocation_id DESC LIMIT ?`,
      ...[...(opts.status ? [opts.status] : []), cAt, cAt, cId, opts.limit + 1],
    );
    const page = rows.slice(0, opts.limit);
    const last = page[page.length - 1];
    return { rows: page, nextCursor: rows.length > opts.limit && last ? encodeCursor(last.created_at, last.allocation_id) : null };
  }

  /** Billable allocations that ended in [from, to), oldest first, as the usage records they must have produced. */
  usageRecords(
    userId: string,
    from: number,
    to: number,
    after: string | undefined,
    limit: number,
  ): { records: UsageRecord[]; next: string | null } {
    const [aAt, aId] = after ? decodeCursor(after) : [from, ""];
    const rows = this.sql.all<AllocationRow>(
      `SELECT * FROM allocations WHERE status = 'released' AND reason != 'orphaned' AND released_at < ?
         AND (released_at > ? OR (released_at = ? AND allocation_id > ?)) ORDER BY released_at, allocation_id LIMIT ?`,
      to,
      aAt,
      aAt,
      aId,
      limit + 1,
    );
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return {
      records: page.map((r) => ({
        allocationId: r.allocation_id,
        deviceId: r.device_id!,
        userId,
        durationSeconds: r.duration_seconds ?? 0,
        cpuCores: r.cpu,
        memoryMB: r.mem,
        storageMB: r.storage,
        allocatedAt: r.allocated_at!,
        releasedAt: r.released_at!,
        reason: r.reason!,
      })),
      next: rows.length > limit && last ? encodeCursor(last.released_at!, last.allocation_id) : null,
    };
  }
}

/** An active allocation its device does not know: it ends here, unbilled. */
export function orphanedEnd(row: AllocationRow, userId: string, now: number): EndedAllocation {
  const { allocation_id: allocationId, device_id: deviceId, allocated_at: allocatedAt } = row;
  return { allocationId, deviceId: deviceId!, userId, allocatedAt: allocatedAt!, releasedAt: now, durationSeconds: 0, reason: "orphaned" };
}

export function allocationNotFound(allocationId: string): Failure {
  return fail(404, "ALLOCATION_NOT_FOUND", "No such allocation.", { allocationId });
}

/** What the device is told of an extension by `minutes` (for its `device.extended` event). */
export function extendInfo(r: AllocationRow, minutes: number): ExtendInfo {
  const { extend_count: n, extended_minutes: done, duration_minutes: total } = r;
  return { additionalMinutes: minutes, extendCount: n + 1, extendedMinutes: done + minutes, durationMinutes: total + minutes };
}

export function releaseResult(e: EndedAllocation): ReleaseResult {
  const { allocationId, deviceId, userId, durationSeconds, reason } = e;
  return { allocationId, deviceId, userId, allocatedAt: iso(e.allocatedAt), releasedAt: iso(e.releasedAt), durationSeconds, reason };
}

// ---- views ------------------------------------------------------------------------------------

export function eventData(r: AllocationRow): AllocationEventData {
  return {
    allocationId: r.allocation_id,
    deviceId: r.device_id,
    pool: r.pool,
    node: r.node,
    cpuCores: r.cpu,
    memoryMB: r.mem,
    storageMB: r.storage,
    allocatedAt: iso(r.allocated_at!),
    expiresAt: iso(r.expires_at!),
    durationMinutes: r.duration_minutes,
  };
}

export function resultOf(userId: string, r: AllocationRow): AllocationResult {
  return {
    allocationId: r.allocation_id,
    deviceId: r.device_id!,
    userId,
    pool: r.pool,
    node: r.node ?? "",
    cpuCores: r.cpu,
    memoryMB: r.mem,
    storageMB: r.storage,
    allocatedAt: iso(r.allocated_at!),
    expiresAt: iso(r.expires_at!),
    durationMinutes: r.duration_minutes,
    ...(r.idle_ms === null ? {} : { idleReleaseSeconds: r.idle_ms / 1000 }),
  };
}

export function viewOf(userId: string, r: AllocationRow): Allocation & { idleReleaseSeconds: number | null } {
  return {
    allocationId: r.allocation_id,
    userId,
    deviceId: r.device_id,
    pool: r.pool,
    status: r.status,
    cpuCores: r.cpu,
    memoryMB: r.mem,
    storageMB: r.storage,
    allocatedAt: r.allocated_at,
    expiresAt: r.expires_at,
    durationMinutes: r.duration_minutes,
    releasedAt: r.released_at,
    durationSeconds: r.duration_seconds,
    reason: r.reason,
    extendCount: r.extend_count,
    extendedMinutes: r.extended_minutes,
    idempotencyKey: r.idem_key,
    idleReleaseSeconds: r.idle_ms === null ? null : r.idle_ms / 1000,
  };
}

/** Same request ⇔ same hash, so a reused idempotency key with other parameters is caught. */
export function requestHash(
  i: { pool: string; durationMinutes: number; durationSeconds?: number; spec: DeviceSpec },
  idleMs: number | null,
): string {
  return JSON.stringify([
    i.pool,
    i.durationMinutes,
    i.durationSeconds ?? null,
    i.spec.cpuCores,
    i.spec.memoryMB,
    i.spec.storageMB,
    ...(idleMs === null ? [] : [idleMs]),
  ]);
}
