/**
 * A pool's reservations of a future window on one of its devices. A booking takes one fitting
 * device whose window is free (chosen and written with no await between, so two bookings never
 * get one window); the device itself records the window. Statuses: pending (the device has not
 * confirmed yet), confirmed, executing (allocated at the start), completed, cancelled, expired,
 * failed. Synchronous, over the pool's SQL; it calls no other object.
 */
import { RESERVATION } from "../config";
import type { ReservationBooking, ReservationView } from "../contracts";
import { bookingHash, type ReservationStatus } from "../domain/reservation";
import type { Failure } from "../errors";
import type { ReservationEventData } from "../feed/protocol";
import type { Sql } from "../objects/sql";
import { boundsArgs } from "./pool-index";
import { iso } from "../domain/time";
import { boundsOf, errorText, parseError, type Bounds, type Tracked } from "./pool-queue";

export const RESERVATIONS_SCHEMA = `CREATE TABLE reservations (
    reservation_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, device_id TEXT, status TEXT NOT NULL,
    cpu_min INTEGER NOT NULL, mem_min INTEGER NOT NULL, storage_min INTEGER NOT NULL,
    cpu_max INTEGER NOT NULL, mem_max INTEGER NOT NULL, storage_max INTEGER NOT NULL,
    start_at INTEGER NOT NULL, end_at INTEGER NOT NULL, duration_minutes INTEGER NOT NULL,
    reminder_minutes INTEGER NOT NULL, remind_at INTEGER, exec_from INTEGER, retry_at INTEGER,
    allocation_id TEXT, error TEXT, created_by TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    idem_key TEXT, idem_hash TEXT);
  CREATE INDEX reservations_device ON reservations(device_id, status, start_at);
  CREATE INDEX reservations_user ON reservations(user_id, start_at);
  CREATE INDEX reservations_status ON reservations(status, start_at);
  CREATE UNIQUE INDEX reservations_idem ON reservations(user_id, idem_key) WHERE idem_key IS NOT NULL;`;

export interface ReservationRow extends Bounds, Tracked {
  reservation_id: string;
  user_id: string;
  device_id: string | null;
  status: ReservationStatus;
  start_at: number;
  end_at: number;
  duration_minutes: number;
  reminder_minutes: number;
  remind_at: number | null;
  exec_from: number | null;
  retry_at: number | null;
  allocation_id: string | null;
}

export class ReservationStore {
  constructor(private readonly sql: Sql) {}

  row(reservationId: string): ReservationRow | null {
    return this.sql.one<ReservationRow>("SELECT * FROM reservations WHERE reservation_id = ?", reservationId);
  }

  byKey(userId: string, key: string): ReservationRow | null {
    return this.sql.one<ReservationRow>("SELECT * FROM reservations WHERE user_id = ? AND idem_key = ?", userId, key);
  }

  /** Reservations of a user that are pending or confirmed. */
  openFor(userId: string): number {
    return this.sql.one<{ n: number }>(
      "SELECT COUNT(*) AS n FROM reservations WHERE user_id = ? AND status IN ('pending','confirmed')",
      userId,
    )!.n;
  }

  /** Reservations that have not ended (pending, confirmed, executing). */
  open(): number {
    return this.sql.one<{ n: number }>("SELECT COUNT(*) AS n FROM reservations WHERE status IN ('pending','confirmed','executing')")!.n;
  }

  /** The booking's row, pending on `deviceId` until the device confirms the window. */
  insertPending(reservationId: string, b: ReservationBooking, deviceId: string, now: number): void {
    this.sql.exec(
      `INSERT INTO reservations (reservation_id, user_id, device_id, status, cpu_min, mem_min, storage_min, cpu_max, mem_max, storage_max,
         start_at, end_at, duration_minutes, reminder_minutes, created_by, created_at, updated_at, idem_key, idem_hash)
       VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      reservationId,
      b.userId,
      deviceId,
      ...boundsArgs(b.min, b.max),
      b.startAt,
      b.endAt,
      b.durationMinutes,
      b.reminderMinutes,
      b.createdBy,
      now,
      now,
      b.idempotencyKey ?? null,
      b.idempotencyKey ? bookingHash(b) : null,
    );
  }

  /** The booking tries another device. */
  moveTo(reservationId: string, deviceId: string, now: number): void {
    this.sql.exec("UPDATE reservations SET device_id = ?, updated_at = ? WHERE reservation_id = ?", deviceId, now, reservationId);
  }

  confirm(reservationId: string, remindAt: number | null, now: number): void {
    this.sql.exec(
      "UPDATE reservations SET status = 'confirmed', remind_at = ?, updated_at = ? WHERE reservation_id = ? AND status = 'pending'",
      remindAt,
      now,
      reservationId,
    );
  }

  dropPending(reservationId: string): void {
    this.sql.exec("DELETE FROM reservations WHERE reservation_id = ? AND status = 'pending'", reservationId);
  }

  delete(reservationId: string): void {
    this.sql.exec("DELETE FROM reservations WHERE reservation_id = ?", reservationId);
  }

  /** A user's reservations (no `userId`: everyone's), by start. */
  list(userId: string | undefined, status: ReservationStatus | undefined, limit: number): ReservationRow[] {
    return this.sql.all<ReservationRow>(
      `SELECT * FROM reservations WHERE 1 = 1 ${userId ? "AND user_id = ?" : ""} ${status ? "AND status = ?" : ""} ORDER BY start_at,
        reservation_id LIMIT ?`,
      ...[...(userId ? [userId] : []), ...(status ? [status] : []), limit],
    );
  }

  /** A user's reservations that have not ended and overlap [startAt, endAt). */
  overlapping(userId: string, startAt: number, endAt: number): ReservationRow[] {
    return this.sql.all<ReservationRow>(
      `SELECT * FROM reservations WHERE user_id = ? AND status IN ('pending','confirmed','executing') AND start_at < ? AND end_at > ?
        ORDER BY start_at`,
      userId,
      endAt,
      startAt,
    );
  }

  /** The earliest window on each device that has not ended (one in progress blocks it now). */
  windowStarts(now: number): Map<string, number> {
    const rows = this.sql.all<{ device_id: string; t: number }>(
      "SELECT device_id, MIN(start_at) AS t FROM reservations WHERE status IN ('pending','confirmed') AND end_at > ? GROUP BY device_id",
      now,
    );
    return new Map(rows.map((w) => [w.device_id, w.t]));
  }

  // ---- the schedule ---------------------------------------------------------------------------

  /** Bookings whose request crashed before the device confirmed: never confirmed to anyone. */
  stalePending(now: number): ReservationRow[] {
    return this.sql.all<ReservationRow>(
      "SELECT * FROM reservations WHERE status = 'pending' AND created_at <= ?",
      now - RESERVATION.pendingTimeoutMs,
    );
  }

  nextStale(): number | null {
    const t = this.sql.one<{ t: number | null }>("SELECT MIN(created_at) AS t FROM reservations WHERE status = 'pending'")!.t;
    return t === null ? null : t + RESERVATION.pendingTimeoutMs;
  }

  dueReminders(now: number): ReservationRow[] {
    return this.sql.all<ReservationRow>(
      "SELECT * FROM reservations WHERE status = 'confirmed' AND remind_at IS NOT NULL AND remind_at <= ?",
      now,
    );
  }

  nextReminder(): number | null {
    return this.sql.one<{ t: number | null }>(
      "SELECT MIN(remind_at) AS t FROM reservations WHERE status = 'confirmed' AND remind_at IS NOT NULL",
    )!.t;
  }

  reminded(reservationId: string): void {
    this.sql.exec("UPDATE reservations SET remind_at = NULL WHERE reservation_id = ?", reservationId);
  }

  /** Confirmed reservations whose start (or retry of it) is due, at most 50. */
  dueStarts(now: number): ReservationRow[] {
    return this.sql.all<ReservationRow>(
      `SELECT * FROM reservations WHERE status = 'confirmed' AND start_at <= ? AND (retry_at IS NULL OR retry_at <= ?)
       ORDER BY start_at LIMIT 50`,
      now,
      now,
    );
  }

  nextStart(): number | null {
    return this.sql.one<{ t: number | null }>(
      "SELECT MIN(MAX(start_at, COALESCE(retry_at, 0))) AS t FROM reservations WHERE status = 'confirmed'",
    )!.t;
  }

  // ---- the start ---------------------------------------------------------------------------------

  /** The first attempt of a start fixes when it began (so a retry is the same request). */
  startedAt(row: ReservationRow): number {
    if (row.exec_from !== null) return row.exec_from;
    const t = Date.now();
    this.sql.exec("UPDATE reservations SET exec_from = ? WHERE reservation_id = ?", t, row.reservation_id);
    return t;
  }

  executing(reservationId: string, deviceId: string, allocationId: string, now: number): void {
    this.sql.exec(
      `UPDATE reservations SET status = 'executing', device_id = ?, allocation_id = ?, retry_at = NULL, remind_at = NULL, error = NULL,
       updated_at = ? WHERE reservation_id = ?`,
      deviceId,
      allocationId,
      now,
      reservationId,
    );
  }

  retryStart(reservationId: string, error: Failure, now: number): void {
    this.sql.exec(
      "UPDATE reservations SET retry_at = ?, error = ?, updated_at = ? WHERE reservation_id = ?",
      now + RESERVATION.startRetryMs,
      errorText(error),
      now,
      reservationId,
    );
  }

  /** A reservation that has not started moves to an end state. */
  end(reservationId: string, status: "cancelled" | "expired" | "failed", error: Failure | null, now: number): void {
    this.sql.exec(
      "UPDATE reservations SET status = ?, error = ?, retry_at = NULL, remind_at = NULL, updated_at = ? WHERE reservation_id = ?",
      status,
      error ? errorText(error) : null,
      now,
      reservationId,
    );
  }

  /** Executing reservations on `deviceId` whose allocation is not `allocationId` (it ended): marked completed and returned. */
  completeEnded(deviceId: string, allocationId: string | null, now: number): ReservationRow[] {
    const done = this.sql.all<ReservationRow>(
      "SELECT * FROM reservations WHERE status = 'executing' AND device_id = ? AND allocation_id IS NOT NULL AND allocation_id IS NOT ?",
      deviceId,
      allocationId,
    );
    for (const row of done)
      this.sql.exec("UPDATE reservations SET status = 'completed', updated_at = ? WHERE reservation_id = ?", now, row.reservation_id);
    return done;
  }

  // ---- views ------------------------------------------------------------------------------------

  view(r: ReservationRow, pool: string): ReservationView {
    return {
      reservationId: r.reservation_id,
      userId: r.user_id,
      pool,
      deviceId: r.device_id,
      status: r.status,
      spec: boundsOf(r).min,
      startAt: iso(r.start_at),
      endAt: iso(r.end_at),
      durationMinutes: r.duration_minutes,
      reminderMinutes: r.reminder_minutes,
      remindAt: r.remind_at === null ? null : iso(r.remind_at),
      allocationId: r.allocation_id,
      error: parseError(r.error),
      createdBy: r.created_by,
      createdAt: iso(r.created_at),
    };
  }

  eventData(r: ReservationRow, pool: string): ReservationEventData {
    return {
      reservationId: r.reservation_id,
      pool,
      deviceId: r.device_id,
      startAt: iso(r.start_at),
      endAt: iso(r.end_at),
      status: r.status,
    };
  }
}
