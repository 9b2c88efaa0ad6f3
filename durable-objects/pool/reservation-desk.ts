/**
 * The pool's reservations, composed into DevicePool: bookings (the pool is the front door: the
 * user's object only checks the request), window checks, reads and cancels, reminders, and the
 * start, which allocates the reserved device (another free one if it is still busy) by the
 * hand-over. Rows live in ReservationStore; each device records its own windows too.
 */
import { ALLOCATION, PAGING, RESERVATION } from "../../src/config";
import type { DeviceState, ReservationBooking, ReservationView, ReserveInput, Viewer, WindowCheck } from "../../src/contracts";
import { durationMsOf } from "../../src/domain/duration";
import { bookingHash, checkWindow, reminderAt, type ReservationStatus } from "../../src/domain/reservation";
import type { DeviceSpec } from "../../src/domain/types";
import { fail, ok, type Failure, type Result } from "../../src/errors";
import { newScopedId } from "../../src/ids";
import { take } from "../../src/rpc";
import { iso } from "../../src/domain/time";
import { boundsOf } from "../../src/stores/pool-queue";
import type { ReservationRow } from "../../src/stores/pool-reservations";
import type { Booking } from "../../src/stores/bookings";
import { specOf } from "../../src/domain/spec";
import type { PoolContext } from "./context";
import { isFinalRefusal, type HandOver } from "./handover";
import { sees } from "./queue-desk";

export class ReservationDesk {
  constructor(
    private readonly p: PoolContext,
    private readonly handOver: HandOver,
  ) {}

  /**
   * Books a window. The user's object checks it first (quota status, per-device limits and
   * balance; everything again at the start); a repeated idempotency key answers the first
   * reservation before any refusal. The device is chosen and the row written in one synchronous
   * step, so a concurrent booking sees it taken; then the device records the window (and may
   * refuse, e.g. extended into it meanwhile: the next device is tried).
   */
  async book(input: ReserveInput): Promise<Result<ReservationView>> {
    const checked = (await take(this.p.env.USER_QUOTA.getByName(input.userId).bookingCheck(input))) as Result<{
      max: DeviceSpec;
      bound: number;
      refusal: Failure | null;
    }>;
    if (!checked.ok) return checked;
    const endAt = input.startAt + durationMsOf(input.durationMinutes, input.durationSeconds);
    const b: ReservationBooking = {
      userId: input.userId,
      pool: input.pool,
      min: input.spec,
      max: checked.value.max,
      startAt: input.startAt,
      endAt,
      durationMinutes: input.durationMinutes,
      reminderMinutes: input.reminderMinutes,
      createdBy: input.byAdmin ?? input.userId,
      idempotencyKey: input.idempotencyKey,
    };
    const keyed = input.idempotencyKey ? { key: input.idempotencyKey, hash: bookingHash(b) } : null;
    const prior = keyed && this.prior(input.userId, keyed.key, keyed.hash);
    if (prior) return prior;
    const badWindow = checkWindow(b.startAt, b.endAt, Date.now());
    if (badWindow) return badWindow;
    if (checked.value.refusal) return checked.value.refusal;
    const missing = this.p.index.missing(b.pool);
    if (missing) return missing;
    this.p.index.settings(b.pool);
    const before = (keyed && this.prior(input.userId, keyed.key, keyed.hash)) || this.limit(input.userId, checked.value.bound);
    if (before) return before;
    const reservationId = newScopedId("rsv", b.pool);
    this.handOver.busy.add(reservationId);
    const held: { booking: Booking | null } = { booking: null };
    let r: Result<ReservationView> | null = null;
    try {
      return (r = await this.bookOn(reservationId, b, held));
    } finally {
      this.handOver.busy.delete(reservationId);
      // The user's hold settled through the outbox (a crash before this leaves it to time out there, as the pending row here).
      if (held.booking) {
        this.p.outbox.add({ kind: "booking", payload: { userId: b.userId, booking: held.booking, booked: r?.ok === true } });
        await this.p.outbox.flush().catch(() => {});
        await this.p.rearm();
      }
    }
  }

  private prior(userId: string, key: string, hash: string): Result<ReservationView> | null {
    const row = this.p.reservations.byKey(userId, key);
    if (!row) return null;
    if (row.idem_hash !== hash)
      return fail(409, "IDEMPOTENCY_KEY_REUSED", "This idempotency key was used for a different request.", { idempotencyKey: key });
    return ok(this.view(row));
  }

  /** At most `max` open reservations per user in this pool (their plan's PLAN_BOUNDS). */
  private limit(userId: string, max: number): Failure | null {
    const open = this.p.reservations.openFor(userId);
    return open >= max
      ? fail(409, "RESERVATION_LIMIT", `You already have ${open} open reservations in pool "${this.p.pool()}" (at most ${max}).`, {
          limit: max,
        })
      : null;
  }

  /**
   * The device is picked and the pending row written in one step; then the user's object holds
   * the window with that device's spec against their plan and balance (with everything they hold
   * or booked then; `held` says what, for the settlement), then the device records the window.
   */
  private async bookOn(reservationId: string, b: ReservationBooking, held: { booking: Booking | null }): Promise<Result<ReservationView>> {
    const tried = new Set<string>();
    for (let attempt = 0; attempt < ALLOCATION.claimAttempts; attempt++) {
      const device = this.p.index.freeForWindow(b, b.startAt, b.endAt, tried)[0];
      if (!device) break;
      tried.add(device.device_id);
      if (attempt === 0) this.p.reservations.insertPending(reservationId, b, device.device_id, Date.now());
      else this.p.reservations.moveTo(reservationId, device.device_id, Date.now());
      held.booking = { reservationId, pool: b.pool, startAt: b.startAt, endAt: b.endAt, spec: specOf(device) };
      const hold = (await take(this.p.env.USER_QUOTA.getByName(b.userId).bookingHold(b.userId, held.booking))) as Result<null>;
      if (!hold.ok) {
        this.p.reservations.dropPending(reservationId);
        return hold;
      }
      let r: Result<{ deviceId: string }>;
      try {
        const w = { reservationId, userId: b.userId, pool: b.pool, startAt: b.startAt, endAt: b.endAt };
        r = (await take(this.p.env.DEVICE.getByName(device.device_id).reserve(w))) as Result<{ deviceId: string }>;
      } catch (err) {
        // Unknown whether the device wrote the window: give it back through the outbox, book nothing.
        this.p.sql.tx(() => {
          this.p.reservations.delete(reservationId);
          this.unreserve(device.device_id, reservationId);
        });
        await this.p.dispatch(); // delivers the unreserve (or arms its retry)
        return fail(503, "DEVICE_UNAVAILABLE", "The device did not answer; nothing was booked. Try again.", {
          cause: String(err).slice(0, 200),
        });
      }
      if (r.ok) {
        const remindAt = reminderAt(b.startAt, b.reminderMinutes, Date.now());
        this.p.reservations.confirm(reservationId, remindAt, Date.now());
        await this.p.clock.arm(Math.min(remindAt ?? b.startAt, b.startAt));
        if (remindAt !== null && remindAt <= Date.now()) void this.p.runAlarm().catch(() => {});
        // A crash before this point leaves a pending row: the alarm drops it after pendingTimeoutMs.
        return ok(this.view(this.p.reservations.row(reservationId)!));
      }
      this.p.learn(device.device_id, r);
    }
    this.p.reservations.dropPending(reservationId);
    return fail(409, "NO_CAPACITY", `No device in pool "${b.pool}" matching the request is free for the whole window.`, {
      pool: b.pool,
      startAt: iso(b.startAt),
      endAt: iso(b.endAt),
      matchingDevices: this.p.index.matching(b.min, b.max),
    });
  }

  /** Would a booking of this window get a device now (within the user's per-device limits)? With the caller's overlapping ones. */
  async check(input: Pick<ReserveInput, "userId" | "pool" | "startAt" | "spec"> & { endAt: number }): Promise<Result<WindowCheck>> {
    const max = (await take(this.p.env.USER_QUOTA.getByName(input.userId).perDeviceMax(input.userId))) as DeviceSpec;
    const missing = this.p.index.missing(input.pool);
    if (missing) return missing;
    const bad = checkWindow(input.startAt, input.endAt, Date.now());
    if (bad) return bad;
    const bounds = { min: input.spec, max };
    const free = this.p.index.freeForWindow(bounds, input.startAt, input.endAt, new Set()).length;
    const mine = this.p.reservations.overlapping(input.userId, input.startAt, input.endAt);
    return ok({
      pool: input.pool,
      startAt: iso(input.startAt),
      endAt: iso(input.endAt),
      available: free > 0,
      matchingDevices: this.p.index.matching(input.spec, max),
      freeDevices: free,
      overlapping: mine.map((r) => this.view(r)),
    });
  }

  get(reservationId: string, viewer: Viewer): Result<ReservationView> {
    const row = this.p.reservations.row(reservationId);
    if (!row || !sees(viewer, row.user_id)) return fail(404, "RESERVATION_NOT_FOUND", "No such reservation.", { reservationId });
    return ok(this.view(row));
  }

  list(viewer: Viewer, opts: { userId?: string; status?: ReservationStatus; limit?: number }): Result<{ items: ReservationView[] }> {
    const who = viewer.admin ? opts.userId : viewer.userId;
    const rows = this.p.reservations.list(who, opts.status, Math.min(opts.limit ?? PAGING.defaultLimit, PAGING.maxLimit));
    return ok({ items: rows.map((r) => this.view(r)) });
  }

  /** Cancels a reservation that has not started; its device's window is freed (through the outbox). */
  async cancel(reservationId: string, viewer: Viewer): Promise<Result<ReservationView>> {
    const row = this.p.reservations.row(reservationId);
    if (!row || !sees(viewer, row.user_id)) return fail(404, "RESERVATION_NOT_FOUND", "No such reservation.", { reservationId });
    if (row.status === "executing")
      return fail(409, "RESERVATION_EXECUTING", "The reservation has started; release its allocation instead.", {
        reservationId,
        allocationId: row.allocation_id,
      });
    if ((row.status !== "pending" && row.status !== "confirmed") || this.handOver.busy.has(reservationId))
      return fail(409, "RESERVATION_CLOSED", `The reservation is already ${row.status === "confirmed" ? "starting" : row.status}.`, {
        reservationId,
        status: row.status,
      });
    this.end(row, "cancelled", null);
    // The window is given back to the device, and a waiting entry may now take it.
    await this.p.dispatch();
    return ok(this.view(this.p.reservations.row(reservationId)!));
  }

  /** Moves a reservation that has not started to an end state: the device's window goes, the user hears. */
  end(row: ReservationRow, status: "cancelled" | "expired" | "failed", error: Failure | null): void {
    this.p.sql.tx(() => {
      this.p.reservations.end(row.reservation_id, status, error, Date.now());
      if (row.device_id) this.unreserve(row.device_id, row.reservation_id);
      this.p.notify(row.user_id, `reservation.${status}:${row.reservation_id}`, `reservation.${status}`, {
        ...this.eventData({ ...row, status }),
        ...(error ? { error: { code: error.code, message: error.message } } : {}),
      });
    });
  }

  /** Inside an index change: an executing reservation whose allocation has ended (seen in the device's new state) is completed. */
  allocationEnded(s: Pick<DeviceState, "deviceId" | "allocationId">): void {
    for (const row of this.p.reservations.completeEnded(s.deviceId, s.allocationId, Date.now()))
      this.p.notify(
        row.user_id,
        `reservation.completed:${row.reservation_id}`,
        "reservation.completed",
        this.eventData({ ...row, status: "completed" }),
      );
  }

  // ---- schedule handlers -----------------------------------------------------------------------

  /** Bookings whose request crashed before the device confirmed: never confirmed to anyone, dropped. */
  dropStale(now: number): void {
    for (const r of this.p.reservations.stalePending(now)) {
      if (this.handOver.busy.has(r.reservation_id)) continue;
      this.p.sql.tx(() => {
        this.p.reservations.dropPending(r.reservation_id);
        if (r.device_id) this.unreserve(r.device_id, r.reservation_id);
      });
    }
  }

  /** Reminders that are due (before the starts: a reminder never comes after its start). */
  remind(now: number): void {
    for (const r of this.p.reservations.dueReminders(now)) {
      this.p.sql.tx(() => {
        this.p.reservations.reminded(r.reservation_id);
        const minutesBefore = Math.max(0, Math.round((r.start_at - now) / 60_000));
        this.p.notify(r.user_id, `reservation.reminder:${r.reservation_id}`, "reservation.reminder", {
          ...this.eventData(r),
          minutesBefore,
        });
      });
    }
  }

  /** Starts that are due (a window that passed whole, e.g. while the pool was down, expires). */
  starts(now: number): Promise<void>[] {
    const due = this.p.reservations.dueStarts(now).filter((r) => !this.handOver.busy.has(r.reservation_id));
    const run: Promise<void>[] = [];
    for (const r of due) {
      if (r.end_at <= now) this.end(r, "expired", null);
      else run.push(this.start(r));
    }
    return run;
  }

  /** At the start: the user's object allocates the reserved device (another free one if it is still busy). */
  private async start(row: ReservationRow): Promise<void> {
    if (this.handOver.busy.has(row.reservation_id)) return;
    const execFrom = this.p.reservations.startedAt(row);
    // The duration is fixed at the first attempt, so a retry is the same request (same idempotency key).
    const seconds = Math.max(1, Math.ceil((row.end_at - execFrom) / 1000));
    const r = await this.handOver.run(row.reservation_id, {
      userId: row.user_id,
      pool: this.p.pool(),
      durationMinutes: Math.ceil(seconds / 60),
      durationSeconds: seconds,
      spec: boundsOf(row).min,
      idempotencyKey: `reservation:${row.reservation_id}`,
      via: { kind: "reservation", id: row.reservation_id, deviceId: row.device_id, until: row.end_at },
    });
    if (!r) return;
    const now = Date.now();
    const cur = this.p.reservations.row(row.reservation_id);
    if (!cur || cur.status !== "confirmed") return;
    if (r.ok) {
      const { deviceId, allocationId } = r.value;
      this.p.sql.tx(() => {
        this.p.reservations.executing(row.reservation_id, deviceId, allocationId, now);
        // Handed a different device: the reserved one's window is free again.
        if (cur.device_id && cur.device_id !== deviceId) this.unreserve(cur.device_id, row.reservation_id);
        this.p.notify(row.user_id, `reservation.started:${row.reservation_id}`, "reservation.started", {
          ...this.eventData({ ...cur, status: "executing", device_id: deviceId }),
          allocationId,
        });
      });
      // The allocation may have ended already (a very short window): the index knows.
      const dev = this.p.index.device(deviceId);
      if (dev && dev.allocation_id !== allocationId && dev.status !== "allocated")
        this.allocationEnded({ deviceId, allocationId: dev.allocation_id });
    } else if (isFinalRefusal(r) || now >= row.start_at + RESERVATION.startGraceMs || now >= row.end_at) {
      this.end(cur, "failed", r);
    } else {
      this.p.reservations.retryStart(row.reservation_id, r, now);
    }
  }

  private unreserve(deviceId: string, reservationId: string): void {
    this.p.outbox.add({ kind: "unreserve", payload: { deviceId, reservationId } });
  }

  private view(r: ReservationRow): ReservationView {
    return this.p.reservations.view(r, this.p.pool());
  }

  private eventData(r: ReservationRow) {
    return this.p.reservations.eventData(r, this.p.pool());
  }
}
