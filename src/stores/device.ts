/**
 * A device's own rows: the device (one row, cached: only its object writes it), the
 * allocations it has held (at most one `held` or `active` at a time) and the reservation
 * windows booked on it. Synchronous, over the object's SQL; it calls no other object.
 */
import type { CurrentAllocation, DeviceState } from "../contracts";
import type { AllocationEventData, DeviceFeedState } from "../feed/protocol";
import { expiryWarningAt } from "../domain/expiry";
import type { DeviceInfo, DeviceMeta, DevicePatch, DeviceSpec, DeviceStatus, EndReason, EndedAllocation } from "../domain/types";
import { CachedRow, type Sql } from "../objects/sql";
import { iso } from "../domain/time";
import { NO_META, metaColumns, metaOf, patchMeta, type MetaColumns } from "./device-meta";

export const DEVICE_SCHEMA = `CREATE TABLE device (
    id INTEGER PRIMARY KEY CHECK (id = 1), device_id TEXT NOT NULL, pool TEXT NOT NULL, node TEXT NOT NULL,
    cpu INTEGER NOT NULL, mem INTEGER NOT NULL, storage INTEGER NOT NULL, status TEXT NOT NULL,
    version INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
  CREATE TABLE allocations (
    allocation_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, state TEXT NOT NULL,
    cpu INTEGER NOT NULL, mem INTEGER NOT NULL, storage INTEGER NOT NULL,
    allocated_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, confirm_at INTEGER,
    warn_at INTEGER, warned INTEGER NOT NULL DEFAULT 0,
    released_at INTEGER, duration_seconds INTEGER, reason TEXT, reservation_id TEXT);
  CREATE INDEX allocations_state ON allocations(state);
  CREATE INDEX allocations_alloc_at ON allocations(allocated_at);
  -- Reservation windows booked on this device; an allocation made for one names it.
  CREATE TABLE windows (reservation_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, start_at INTEGER NOT NULL, end_at INTEGER NOT NULL);
  CREATE INDEX windows_start ON windows(start_at, end_at);`;

/** Migration 6: the allocations keyed by their id alone (WITHOUT ROWID: the key's index was a row written per claim). */
export const DEVICE_ALLOCATIONS_LEAN = `CREATE TABLE allocations_lean (
    allocation_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, state TEXT NOT NULL,
    cpu INTEGER NOT NULL, mem INTEGER NOT NULL, storage INTEGER NOT NULL,
    allocated_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, confirm_at INTEGER,
    warn_at INTEGER, warned INTEGER NOT NULL DEFAULT 0,
    released_at INTEGER, duration_seconds INTEGER, reason TEXT, reservation_id TEXT) WITHOUT ROWID;
  INSERT INTO allocations_lean SELECT allocation_id, user_id, state, cpu, mem, storage, allocated_at, expires_at, confirm_at,
    warn_at, warned, released_at, duration_seconds, reason, reservation_id FROM allocations;
  DROP TABLE allocations;
  ALTER TABLE allocations_lean RENAME TO allocations;
  CREATE INDEX allocations_state ON allocations(state);
  CREATE INDEX allocations_alloc_at ON allocations(allocated_at);`;

/** held: claimed, its user's object has not confirmed it yet; active: confirmed; ended. */
export type HoldState = "held" | "active" | "ended";

export interface HoldRow {
  allocation_id: string;
  user_id: string;
  state: HoldState;
  cpu: number;
  mem: number;
  storage: number;
  allocated_at: number;
  expires_at: number;
  confirm_at: number | null;
  warn_at: number | null;
  warned: number;
  released_at: number | null;
  duration_seconds: number | null;
  reason: EndReason | null;
  reservation_id: string | null;
}

/** The device's row (the metadata columns come with migration 4). */
export interface DeviceRow extends MetaColumns {
  device_id: string;
  pool: string;
  node: string;
  cpu: number;
  mem: number;
  storage: number;
  status: DeviceStatus;
  version: number;
  created_at: number;
  updated_at: number;
}

/** A reservation window booked on the device. */
export type Window = { reservationId: string; userId: string; startAt: number; endAt: number };

export type Registration = { deviceId: string; pool: string; node: string } & DeviceSpec & Partial<DeviceMeta>;

export class DeviceStore {
  private readonly row: CachedRow<DeviceRow>;

  constructor(private readonly sql: Sql) {
    this.row = new CachedRow<DeviceRow>(sql, "SELECT * FROM device WHERE id = 1");
  }

  // ---- the device ------------------------------------------------------------------------

  device(): DeviceRow | null {
    return this.row.get();
  }

  /** The device, unless it was never registered or has been removed. */
  registered(): DeviceRow | null {
    const d = this.row.get();
    return d && d.status !== "removed" ? d : null;
  }

  /** Registers (or registers again) the device, available and without windows. */
  register(r: Registration, now: number): void {
    const m = metaColumns(patchMeta(NO_META, r));
    this.row.write(
      `INSERT INTO device (id, device_id, pool, node, cpu, mem, storage, status, version, created_at, updated_at,
         name, model, os_version, labels)
       VALUES (1, ?, ?, ?, ?, ?, ?, 'available', 1, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET device_id = excluded.device_id, pool = excluded.pool, node = excluded.node,
         cpu = excluded.cpu, mem = excluded.mem, storage = excluded.storage, status = 'available',
         version = device.version + 1, created_at = excluded.created_at, updated_at = excluded.updated_at,
         name = excluded.name, model = excluded.model, os_version = excluded.os_version, labels = excluded.labels`,
      r.deviceId,
      r.pool,
      r.node,
      r.cpuCores,
      r.memoryMB,
      r.storageMB,
      now,
      now,
      m.name,
      m.model,
      m.os_version,
      m.labels,
    );
    // A device registered again starts with no windows (its old pool's reservations move elsewhere at their start).
    this.sql.exec("DELETE FROM windows");
  }

  /** Pool, node, spec and metadata (an absent field is unchanged; a null clears name, model or osVersion). */
  update(d: DeviceRow, patch: DevicePatch, now: number): void {
    const m = metaColumns(patchMeta(metaOf(d), patch));
    this.row.write(
      `UPDATE device SET pool = ?, node = ?, cpu = ?, mem = ?, storage = ?, name = ?, model = ?, os_version = ?, labels = ?,
         version = version + 1, updated_at = ? WHERE id = 1`,
      patch.pool ?? d.pool,
      patch.node ?? d.node,
      patch.cpuCores ?? d.cpu,
      patch.memoryMB ?? d.mem,
      patch.storageMB ?? d.storage,
      m.name,
      m.model,
      m.os_version,
      m.labels,
      now,
    );
  }

  setStatus(status: DeviceStatus, now: number): void {
    this.row.write("UPDATE device SET status = ?, version = version + 1, updated_at = ? WHERE id = 1", status, now);
  }

  info(d: DeviceRow): DeviceInfo {
    return {
      deviceId: d.device_id,
      pool: d.pool,
      node: d.node,
      cpuCores: d.cpu,
      memoryMB: d.mem,
      storageMB: d.storage,
      status: d.status,
      ...metaOf(d),
      createdAt: d.created_at,
      updatedAt: d.updated_at,
    };
  }

  /** What the pool index keeps of the device (with what it holds now, and its metadata). */
  state(d: DeviceRow): DeviceState {
    const a = this.current();
    return {
      deviceId: d.device_id,
      node: d.node,
      cpuCores: d.cpu,
      memoryMB: d.mem,
      storageMB: d.storage,
      status: d.status,
      version: d.version,
      allocationId: a?.allocation_id ?? null,
      userId: a?.user_id ?? null,
      expiresAt: a?.expires_at ?? null,
      meta: metaOf(d),
    };
  }

  // ---- allocations -----------------------------------------------------------------------

  /** The allocation the device holds (held or active), if any. */
  current(): HoldRow | null {
    return this.sql.one<HoldRow>("SELECT * FROM allocations WHERE state IN ('held','active') LIMIT 1");
  }

  allocation(allocationId: string): HoldRow | null {
    return this.sql.one<HoldRow>("SELECT * FROM allocations WHERE allocation_id = ?", allocationId);
  }

  /** Writes a claim as `held`, and the device as allocated. */
  hold(
    claim: { allocationId: string; userId: string; expiresAt: number; confirmAt: number; warnAt: number; reservationId: string | null },
    now: number,
  ): void {
    const d = this.row.get()!;
    this.sql.exec(
      `INSERT INTO allocations (allocation_id, user_id, state, cpu, mem, storage, allocated_at, expires_at, confirm_at, warn_at,
        reservation_id)
       VALUES (?, ?, 'held', ?, ?, ?, ?, ?, ?, ?, ?)`,
      claim.allocationId,
      claim.userId,
      d.cpu,
      d.mem,
      d.storage,
      now,
      claim.expiresAt,
      claim.confirmAt,
      claim.warnAt,
      claim.reservationId,
    );
    this.row.write("UPDATE device SET status = 'allocated', version = version + 1, updated_at = ? WHERE id = 1", now);
  }

  /** held → active. */
  activate(allocationId: string): void {
    this.sql.exec("UPDATE allocations SET state = 'active', confirm_at = NULL WHERE allocation_id = ?", allocationId);
  }

  /** Asks the user's object again at `at`. */
  confirmBy(allocationId: string, at: number): void {
    this.sql.exec("UPDATE allocations SET confirm_at = ? WHERE allocation_id = ?", at, allocationId);
  }

  warned(allocationId: string): void {
    this.sql.exec("UPDATE allocations SET warned = 1 WHERE allocation_id = ?", allocationId);
  }

  extend(allocationId: string, expiresAt: number, now: number): void {
    this.sql.exec(
      "UPDATE allocations SET expires_at = ?, warn_at = ?, warned = 0 WHERE allocation_id = ?",
      expiresAt,
      expiryWarningAt(now, expiresAt),
      allocationId,
    );
  }

  /**
   * Ends an allocation: its row, its reservation window, and the device free again (unless out
   * of service). Returns what ended and the device's state after it, without reading it back.
   */
  /** Ends the allocation; the device is then available, or `after` (a drain's status). */
  end(a: HoldRow, reason: EndReason, now: number, after?: DeviceStatus): { ended: EndedAllocation; state: DeviceState } {
    const d = this.row.get()!;
    // Expiry bills up to expiresAt, never the alarm's lag.
    const releasedAt = Math.max(a.allocated_at, reason === "expired" ? Math.min(now, a.expires_at) : now);
    // Billed to the nearest second, and never less than one: no use is free (a release at once is one second).
    const durationSeconds = Math.max(1, Math.round((releasedAt - a.allocated_at) / 1000));
    this.sql.exec(
      `UPDATE allocations SET state = 'ended', released_at = ?, duration_seconds = ?, reason = ?, confirm_at = NULL
       WHERE allocation_id = ?`,
      releasedAt,
      durationSeconds,
      reason,
      a.allocation_id,
    );
    // A reservation's allocation ended: its window holds the device no longer (others may take it).
    if (a.reservation_id) this.sql.exec("DELETE FROM windows WHERE reservation_id = ?", a.reservation_id);
    const status: DeviceStatus = after ?? (d.status === "allocated" ? "available" : d.status);
    this.row.write("UPDATE device SET status = ?, version = version + 1, updated_at = ? WHERE id = 1", status, now);
    const ended: EndedAllocation = {
      allocationId: a.allocation_id,
      deviceId: d.device_id,
      userId: a.user_id,
      allocatedAt: a.allocated_at,
      releasedAt,
      durationSeconds,
      reason,
    };
    // The device holds nothing now (one allocation at a time).
    const state: DeviceState = {
      deviceId: d.device_id,
      node: d.node,
      cpuCores: d.cpu,
      memoryMB: d.mem,
      storageMB: d.storage,
      status,
      version: d.version + 1,
      allocationId: null,
      userId: null,
      expiresAt: null,
      meta: metaOf(d),
      ended: { allocationId: a.allocation_id, reason, lagMs: reason === "expired" ? Math.max(0, now - a.expires_at) : null },
    };
    return { ended, state };
  }

  /** An ended allocation as its record. */
  ended(a: HoldRow): EndedAllocation {
    return {
      allocationId: a.allocation_id,
      deviceId: this.row.get()!.device_id,
      userId: a.user_id,
      allocatedAt: a.allocated_at,
      releasedAt: a.released_at!,
      durationSeconds: a.duration_seconds!,
      reason: a.reason!,
    };
  }

  /** Ended, billable allocations, newest first, before `cursor` (an allocated-at time). */
  history(cursor: number | undefined, limit: number): { items: EndedAllocation[]; nextCursor: number | null } {
    const rows = this.sql.all<HoldRow>(
      "SELECT * FROM allocations WHERE state = 'ended' AND reason != 'orphaned' AND allocated_at < ? ORDER BY allocated_at DESC LIMIT ?",
      cursor ?? Number.MAX_SAFE_INTEGER,
      limit + 1,
    );
    const items = rows.slice(0, limit).map((r) => this.ended(r));
    return { items, nextCursor: rows.length > limit ? rows[limit - 1]!.allocated_at : null };
  }

  /** The allocation the device holds, as the API shows it. */
  currentView(): CurrentAllocation | null {
    const a = this.current();
    return a
      ? {
          allocationId: a.allocation_id,
          userId: a.user_id,
          confirmed: a.state === "active",
          allocatedAt: a.allocated_at,
          expiresAt: a.expires_at,
        }
      : null;
  }

  /** An allocation as the feeds show it. */
  allocationData(a: HoldRow): AllocationEventData {
    const d = this.row.get()!;
    return {
      allocationId: a.allocation_id,
      deviceId: d.device_id,
      pool: d.pool,
      node: d.node,
      cpuCores: a.cpu,
      memoryMB: a.mem,
      storageMB: a.storage,
      allocatedAt: iso(a.allocated_at),
      expiresAt: iso(a.expires_at),
      durationMinutes: Math.ceil((a.expires_at - a.allocated_at) / 60_000),
    };
  }

  /** The device feed's hello: the device and what it holds. */
  snapshot(d: DeviceRow, a: HoldRow | null): DeviceFeedState {
    return {
      deviceId: d.device_id,
      pool: d.pool,
      node: d.node,
      status: d.status,
      allocation: a
        ? {
            allocationId: a.allocation_id,
            userId: a.user_id,
            state: a.state === "active" ? "active" : "held",
            allocatedAt: iso(a.allocated_at),
            expiresAt: iso(a.expires_at),
            secondsLeft: Math.max(0, Math.round((a.expires_at - Date.now()) / 1000)),
          }
        : null,
    };
  }

  // ---- reservation windows ---------------------------------------------------------------

  /** A window booked by another reservation that starts before `until` and has not ended at `now`. */
  windowBefore(until: number, now: number, own: string | null): { reservation_id: string; start_at: number } | null {
    return this.sql.one(
      "SELECT reservation_id, start_at FROM windows WHERE start_at < ? AND end_at > ? AND reservation_id != ? ORDER BY start_at LIMIT 1",
      until,
      now,
      own ?? "",
    );
  }

  /** Windows that have not ended, and when the first starts. */
  openWindows(now: number): { n: number; first: number | null } {
    return this.sql.one<{ n: number; first: number | null }>(
      "SELECT COUNT(*) AS n, MIN(start_at) AS first FROM windows WHERE end_at > ?",
      now,
    )!;
  }

  hasWindow(reservationId: string): boolean {
    return this.sql.one("SELECT 1 AS x FROM windows WHERE reservation_id = ?", reservationId) !== null;
  }

  /** Another window in [startAt, endAt) that has not ended at `now`. */
  clash(startAt: number, endAt: number, now: number): boolean {
    return this.sql.one("SELECT start_at FROM windows WHERE start_at < ? AND end_at > ? LIMIT 1", endAt, Math.max(startAt, now)) !== null;
  }

  /** Books a window (windows that ended are dropped on the way). */
  reserve(w: Window, now: number): void {
    this.sql.tx(() => {
      this.sql.exec("DELETE FROM windows WHERE end_at < ?", now);
      this.sql.exec(
        "INSERT INTO windows (reservation_id, user_id, start_at, end_at) VALUES (?, ?, ?, ?)",
        w.reservationId,
        w.userId,
        w.startAt,
        w.endAt,
      );
    });
  }

  unreserve(reservationId: string): void {
    this.sql.exec("DELETE FROM windows WHERE reservation_id = ?", reservationId);
  }
}
