/**
 * What a pool asks the user's object before it queues or books for them, composed into
 * UserQuota: the queue entry's priority and limits, and the user's reservations. A pool books a window only after the user's
 * object held it here: checked against the plan's device count and totals for that window (with
 * what the user holds and has booked then) and against the balance, with every booking committed
 * like a running allocation. The pool settles the hold through its outbox (booked or dropped); a
 * reservation that starts or ends is dropped when its feed event arrives. What is booked is the
 * spec of the device the pool picked (a retry on another device holds again with that one's).
 */
import { ALLOCATION, PLAN_BOUNDS, RESERVATION } from "../../src/config";
import type { QueueJoinInput, ReserveInput } from "../../src/contracts";
import { entryPriority } from "../../src/domain/queue";
import { fundsRefusal } from "../../src/billing/balance";
import type { Funds } from "../../src/billing/ledger";
import { durationMsOf } from "../../src/domain/duration";
import { checkReservation, checkWindowLoad } from "../../src/domain/reservation";
import type { DeviceSpec } from "../../src/domain/types";
import { ok, type Failure, type Result } from "../../src/errors";
import type { Booking, BookingStore } from "../../src/stores/bookings";
import type { UserContext } from "./context";

/** The feed events that end a booking: its reservation started (now an allocation) or ended. */
const ENDING = new Set([
  "reservation.started",
  "reservation.completed",
  "reservation.cancelled",
  "reservation.expired",
  "reservation.failed",
]);

export class PoolChecks {
  constructor(
    private readonly u: UserContext,
    readonly store: BookingStore,
  ) {}

  /**
   * Before a queue entry (the pool is the front door): its priority from the plan (a refusal
   * fails the call), the largest device the quota allows, the plan's bound on waiting entries,
   * and the quota and funds verdict now; the pool answers a repeated idempotency key before that
   * verdict. All is checked again at hand-over.
   */
  async queue(input: QueueJoinInput): Promise<Result<{ priority: number; max: DeviceSpec; bound: number; refusal: Failure | null }>> {
    const p = this.u.profile(input.userId);
    const priority = entryPriority(p.plan, input.priority, input.byAdmin !== null);
    if (typeof priority !== "number") return priority;
    const durationMs = durationMsOf(input.durationMinutes, input.durationSeconds);
    let max: DeviceSpec = input.spec;
    const funds = await this.u.balance.checked(input.userId, (f) => {
      const checked = this.u.allocationCheck(input.userId, input.spec, durationMs, f);
      max = checked.max;
      return checked.refusal;
    });
    return ok({ priority, max, bound: PLAN_BOUNDS[p.plan].waitingEntries, refusal: funds.ok ? null : funds });
  }

  /**
   * Before a booking: per-device limits, quota status and funds now, and the plan's bound on open
   * reservations; the pool answers a repeated idempotency key first.
   */
  async booking(input: ReserveInput, max: DeviceSpec): Promise<Result<{ max: DeviceSpec; bound: number; refusal: Failure | null }>> {
    const bound = PLAN_BOUNDS[this.u.profile(input.userId).plan].openReservations;
    const durationMs = durationMsOf(input.durationMinutes, input.durationSeconds);
    const funds = await this.u.balance.checked(input.userId, (f) => {
      const st = this.u.profiles.state(this.u.profile(input.userId));
      return checkReservation(st, input.spec, durationMs / 3_600_000, input.startAt) ?? this.fundsRefusal(f, input.spec, durationMs);
    });
    return ok({ max, bound, refusal: funds.ok ? null : funds });
  }

  /** Holds `b` if the user's limits for its window and their balance allow it (a refusal holds nothing). */
  async hold(userId: string, b: Booking): Promise<Result<null>> {
    this.u.profile(userId);
    const now = Date.now();
    this.store.prune(now);
    const durationMs = b.endAt - b.startAt;
    const verdict = (f: Funds | null) => {
      const st = this.u.profiles.state(this.u.profile(userId));
      const held = [...this.u.allocations.holding(now), ...this.store.open(now)];
      return (
        checkReservation(st, b.spec, durationMs / 3_600_000, b.startAt) ??
        checkWindowLoad(st.limits, held, b.spec, b.startAt, b.endAt) ??
        this.fundsRefusal(f, b.spec, durationMs)
      );
    };
    const funds = await this.u.balance.checked(userId, verdict);
    if (!funds.ok) return funds;
    // Again in the same turn as the write: a booking that raced this one is counted now.
    const again = verdict(funds.value.funds);
    if (again) return again;
    this.store.hold(b, now + RESERVATION.pendingTimeoutMs + ALLOCATION.clockMarginMs);
    return ok(null);
  }

  settle(userId: string, b: Booking, booked: boolean): void {
    this.u.profile(userId);
    this.store.settle(b, booked);
  }

  /** A feed event about one of the user's reservations: one that started or ended is not booked any more. */
  noteEvent(type: string, data: unknown): void {
    const id = (data as { reservationId?: unknown } | null)?.reservationId;
    if (ENDING.has(type) && typeof id === "string") this.store.drop(id);
  }

  /** Allocations and bookings are both committed funds (`excluding`: the booking an allocation now starts). */
  fundsRefusal(f: Funds | null, spec: DeviceSpec, durationMs: number, excluding?: { allocation?: string; reservation?: string }) {
    const open = [...this.u.allocations.open(excluding?.allocation), ...this.store.open(Date.now(), excluding?.reservation)];
    return fundsRefusal(f, open, spec, durationMs);
  }
}
