/**
 * The user's side of their reservations: each window they booked (in any pool), so a new
 * booking is checked against everything the user already holds or has booked for that window,
 * and their balance counts every booking like a running allocation. The pools own the
 * reservations; a booking here is held while its pool books it, then settled (booked or dropped)
 * through the pool's outbox, and dropped when the reservation starts or ends. Synchronous, over
 * the user object's SQL.
 */
import type { DeviceSpec } from "../domain/types";
import type { Sql } from "../objects/sql";

export const BOOKINGS_SCHEMA = `CREATE TABLE bookings (
    reservation_id TEXT PRIMARY KEY, pool TEXT NOT NULL, start_at INTEGER NOT NULL, end_at INTEGER NOT NULL,
    cpu INTEGER NOT NULL, mem INTEGER NOT NULL, storage INTEGER NOT NULL, held_until INTEGER);
  CREATE INDEX bookings_end ON bookings(end_at);`;

/** What a booking covers (as the pool settles it). */
export interface Booking {
  reservationId: string;
  pool: string;
  startAt: number;
  endAt: number;
  spec: DeviceSpec;
}

interface BookingRow {
  reservation_id: string;
  start_at: number;
  end_at: number;
  cpu: number;
  mem: number;
  storage: number;
}

export class BookingStore {
  constructor(private readonly sql: Sql) {}

  /** Open bookings at `now`: booked ones whose window has not ended, and holds not yet timed out. */
  open(
    now: number,
    excluding?: string,
  ): { startAt: number; endAt: number; spec: DeviceSpec; cpu: number; mem: number; storage: number; duration_ms: number }[] {
    return this.sql
      .all<BookingRow>(
        "SELECT reservation_id, start_at, end_at, cpu, mem, storage FROM bookings " +
          "WHERE end_at > ? AND (held_until IS NULL OR held_until > ?) AND reservation_id != ?",
        now,
        now,
        excluding ?? "",
      )
      .map((r) => ({
        startAt: r.start_at,
        endAt: r.end_at,
        spec: { cpuCores: r.cpu, memoryMB: r.mem, storageMB: r.storage },
        cpu: r.cpu,
        mem: r.mem,
        storage: r.storage,
        duration_ms: r.end_at - r.start_at,
      }));
  }

  /** A booking its pool is making: counted until `heldUntil` unless settled first. */
  hold(b: Booking, heldUntil: number): void {
    this.write(b, heldUntil);
  }

  /** The pool booked it (kept until it starts or ends) or did not (dropped). Idempotent. */
  settle(b: Booking, booked: boolean): void {
    if (booked) this.write(b, null);
    else this.drop(b.reservationId);
  }

  drop(reservationId: string): void {
    this.sql.exec("DELETE FROM bookings WHERE reservation_id = ?", reservationId);
  }

  /** Rows that count no more (windows over, holds timed out). */
  prune(now: number): void {
    this.sql.exec("DELETE FROM bookings WHERE end_at <= ? OR (held_until IS NOT NULL AND held_until <= ?)", now, now);
  }

  private write(b: Booking, heldUntil: number | null): void {
    this.sql.exec(
      "INSERT INTO bookings (reservation_id, pool, start_at, end_at, cpu, mem, storage, held_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?) " +
        "ON CONFLICT (reservation_id) DO UPDATE SET cpu = excluded.cpu, mem = excluded.mem, storage = excluded.storage, " +
        "held_until = excluded.held_until",
      b.reservationId,
      b.pool,
      b.startAt,
      b.endAt,
      b.spec.cpuCores,
      b.spec.memoryMB,
      b.spec.storageMB,
      heldUntil,
    );
  }
}
