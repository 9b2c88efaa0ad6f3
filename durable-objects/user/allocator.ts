/**
 * The allocation protocol of a user's object, composed into UserQuota.
 *
 * A direct allocation (src/allocate.ts) is recorded here in one step, `record`, beside the
 * device's claim: the pick's device checked against quota and funds and written `active`.
 *
 * A pool's hand-over runs the older shape (each step heals if the next never happens):
 *   1. write `pending` (quota held) with a deadline          → the alarm aborts it at the deadline
 *   2. the pool picks, the device claims it as `held`         → the device asks `verify` later, frees if unknown
 *   3. re-read the row; `active` + event                      → aborted meanwhile: give the device back
 *   4. device.confirm                                          → missing: the device's `verify` says active
 * A direct allocation runs all four from here (`allocate`). A pool handing over a device (a
 * queue entry, a reservation's start) runs step 1 here (`beginHandOver`), step 2 itself, and
 * steps 3-4 here (`finishHandOver`), so it never waits on a call that calls back into it.
 */
import { ALLOCATION } from "../../src/config";
import type { AllocateInput, AllocationResult, Claimed, Picked } from "../../src/contracts";
import type { KnownFunds } from "../../src/billing/balance";
import { durationMsOf } from "../../src/domain/duration";
import { effectiveIdleGraceMs, requestedIdleGraceMs } from "../../src/domain/idle";

import { fail, ok, type Failure, type Result } from "../../src/errors";
import { newAllocationId } from "../../src/ids";
import { log } from "../../src/log";
import { take } from "../../src/rpc";
import { eventData, requestHash, resultOf, type AllocationRow } from "../../src/stores/allocations";
import type { UserContext } from "./context";
import type { HandOverBegun } from "../../src/contracts";
import { claimRequest } from "../../src/domain/claim";
import { fits } from "../../src/domain/strategy";
import { iso } from "../../src/domain/time";

/** An allocation past step 1: its pending row, the largest device its quota allows, the funds it was checked against. */
interface Begun extends HandOverBegun {
  known: KnownFunds;
}

export class Allocator {
  /** Allocations still in steps 2-4, so a repeated idempotency key waits for the first. */
  readonly inFlight = new Map<string, Promise<Result<AllocationResult>>>();
  /** Funds known at step 1 of hand-overs whose pool has not reported back yet. */
  private readonly handOvers = new Map<string, KnownFunds>();

  constructor(private readonly u: UserContext) {}

  async allocate(input: AllocateInput): Promise<Result<AllocationResult>> {
    const begun = await this.begin(input);
    if (!("allocationId" in begun)) return begun;
    const run = this.completeAllocation(begun, input);
    this.inFlight.set(begun.allocationId, run);
    try {
      return await run;
    } finally {
      this.inFlight.delete(begun.allocationId);
    }
  }

  /**
   * A direct allocation's second step, beside the device's claim (src/allocate.ts): a refusal, or
   * the allocation written `active` on the picked device, its quota and funds checked on the
   * device's real spec with no await between the check and the write. A device larger than the
   * quota's room per device is `NO_DEVICE_WITHIN_QUOTA` with that room, for the caller to pick
   * again within it. (A keyed allocation never comes here: `allocate` serves it, so a repeat can
   * wait for the first.)
   */
  async record(input: AllocateInput, allocationId: string, device: Picked, at: number): Promise<Result<AllocationResult>> {
    this.u.profile(input.userId);
    const idleMs = requestedIdleGraceMs(input.idleReleaseMinutes, input.idleReleaseSeconds);
    const durationMs = durationMsOf(input.durationMinutes, input.durationSeconds);
    let done: AllocationRow | null = null;
    let quotaRefused = false;
    // The balance is known before the synchronous check-and-write; the check runs after each read.
    const funds = await this.u.balance.checked(input.userId, (f) => {
      const checked = this.u.allocationCheck(input.userId, device, durationMs, f);
      if (!fits(device, input.spec, checked.max))
        return fail(409, "NO_DEVICE_WITHIN_QUOTA", "The picked device is larger than the quota's room per device.", { room: checked.max });
      quotaRefused = checked.refusal !== null;
      if (checked.refusal) return checked.refusal;
      const idle = effectiveIdleGraceMs(idleMs, device.idleReleaseSeconds == null ? null : device.idleReleaseSeconds * 1000);
      const row = {
        allocationId,
        pool: input.pool,
        durationMinutes: input.durationMinutes,
        durationMs,
        idempotencyKey: null,
        hash: requestHash(input, idleMs),
        deadline: at + ALLOCATION.recordCheckMs,
        idleMs: idle,
        device,
        allocatedAt: at,
        expiresAt: at + durationMs,
      };
      this.u.sql.tx(() => {
        this.u.allocations.insertActive(row, Date.now());
        done = this.u.allocations.row(allocationId)!;
        this.u.emit(input.userId, "device.allocated", eventData(done));
        this.u.noteQuotaStatus(this.u.profile(input.userId));
      });
      return null;
    });
    if (!funds.ok) {
      if (quotaRefused) this.u.noteQuotaStatus(this.u.profile(input.userId));
      return funds;
    }
    const row = done as AllocationRow | null;
    if (!row) return fail(503, "ALLOCATION_ABORTED", "The allocation could not be recorded; nothing was allocated. Try again.");
    log("info", "allocation active", { userId: input.userId, allocationId, deviceId: device.deviceId, pool: input.pool });
    // Its record check, or its overdue check if that comes first; an idle grace needs the full computation.
    const check = Math.min(at + ALLOCATION.recordCheckMs, at + durationMs + ALLOCATION.overdueGraceMs);
    if (idleMs === null && device.idleReleaseSeconds == null) await this.u.clock.arm(check);
    else await this.u.schedule.rearm();
    return ok(resultOf(input.userId, row));
  }

  /** Why this user may not allocate `input` now, whatever the pool has free (null: they may). */
  async refusal(input: AllocateInput): Promise<Failure | null> {
    this.u.profile(input.userId);
    const durationMs = durationMsOf(input.durationMinutes, input.durationSeconds);
    const r = await this.u.balance.checked(input.userId, (f) => this.u.allocationCheck(input.userId, input.spec, durationMs, f).refusal);
    return r.ok ? null : r;
  }

  /** The device's claim failed (or its answer was lost): the recorded allocation never was. */
  abortRecord(allocationId: string): boolean {
    const row = this.u.allocations.row(allocationId);
    if (!row || row.status !== "active") return false;
    return this.u.sql.tx(() => {
      if (!this.u.allocations.abortRecorded(allocationId)) return false;
      // Its `device.allocated` went out: the user's feed says it is over, as an orphan (never billed).
      this.u.emit(this.u.profiles.owner(), "device.released", {
        allocationId,
        deviceId: row.device_id!,
        pool: row.pool,
        allocatedAt: iso(row.allocated_at!),
        releasedAt: iso(Date.now()),
        durationSeconds: 0,
        reason: "orphaned",
      });
      this.u.noteQuotaStatus(this.u.profile(this.u.profiles.owner()));
      return true;
    });
  }

  /**
   * A pool handing over a device (a queue entry, a reservation's start), step 1: the same checks
   * and pending row as an allocation; the pool then claims the device itself and reports with
   * `finishHandOver`. (Were the pool to call `allocate`, the claim would call back into the pool
   * mid-call.) A repeated key answers its first result, as for `allocate`.
   */
  async beginHandOver(input: AllocateInput): Promise<Result<AllocationResult> | { begun: HandOverBegun }> {
    const begun = await this.begin(input);
    if (!("allocationId" in begun)) return begun;
    this.handOvers.set(begun.allocationId, begun.known);
    // The pool may never report back: the pending row's deadline then aborts it (as after a crash).
    await this.u.clock.arm(Date.now() + ALLOCATION.intentTimeoutMs);
    return { begun: { allocationId: begun.allocationId, durationMs: begun.durationMs, max: begun.max } };
  }

  /** A pool's hand-over, step 2: the device it claimed (or why not). Steps 3 and 4 as for `allocate`. */
  async finishHandOver(input: AllocateInput, allocationId: string, claimed: Result<Claimed>): Promise<Result<AllocationResult>> {
    this.u.profile(input.userId);
    let known = this.handOvers.get(allocationId);
    this.handOvers.delete(allocationId);
    if (!known) {
      // Restarted since step 1: read the balance again.
      const funds = await this.u.balance.funds(input.userId);
      known = funds.ok ? funds.value : { funds: null, reused: false };
    }
    const durationMs = this.u.allocations.row(allocationId)?.duration_ms ?? 0;
    return this.finishAllocation({ allocationId, durationMs, known }, input, claimed);
  }

  /**
   * Step 1 of an allocation: a repeated key's answer, a refusal, or the checks passed and the
   * pending row written (quota held) with no await between them.
   */
  private async begin(input: AllocateInput): Promise<Result<AllocationResult> | Begun> {
    this.u.profile(input.userId);
    const idleMs = requestedIdleGraceMs(input.idleReleaseMinutes, input.idleReleaseSeconds);
    const hash = requestHash(input, idleMs);
    const replay = this.replayOf(input, hash);
    if (replay) return replay;
    const durationMs = durationMsOf(input.durationMinutes, input.durationSeconds);
    let answer: Result<AllocationResult> | Promise<Result<AllocationResult>> | Begun | null = null;
    let refusal: Failure | null = null;
    // The balance is known before the synchronous check-and-write (an await in between would let
    // other requests interleave); the check runs after each read.
    const funds = await this.u.balance.checked(input.userId, (f) => {
      answer = this.replayOf(input, hash); // the same key may have been used meanwhile
      if (answer) return null;
      const checked = this.u.allocationCheck(input.userId, input.spec, durationMs, f, undefined, startsBooking(input));
      refusal = checked.refusal;
      if (refusal) return refusal;
      const allocationId = newAllocationId(input.userId);
      const now = Date.now();
      this.u.allocations.insertPending(
        {
          allocationId,
          pool: input.pool,
          spec: input.spec,
          durationMinutes: input.durationMinutes,
          durationMs,
          idempotencyKey: input.idempotencyKey ?? null,
          hash,
          deadline: now + ALLOCATION.intentTimeoutMs,
          idleMs,
        },
        now,
      );
      answer = { allocationId, durationMs, max: checked.max, known: { funds: f, reused: false } };
      return null;
    });
    if (!funds.ok) {
      if (funds === refusal) this.u.noteQuotaStatus(this.u.profile(input.userId));
      return funds;
    }
    const a = answer as Result<AllocationResult> | Promise<Result<AllocationResult>> | Begun | null;
    if (a && "allocationId" in a) return { ...a, known: funds.value };
    return a!;
  }

  /** A repeated idempotency key: the first request's answer, or null for a new request. */
  private replayOf(input: AllocateInput, hash: string): Result<AllocationResult> | Promise<Result<AllocationResult>> | null {
    if (!input.idempotencyKey) return null;
    const prior = this.u.allocations.byKey(input.idempotencyKey);
    if (!prior) return null;
    if (prior.idem_hash !== hash)
      return fail(409, "IDEMPOTENCY_KEY_REUSED", "This idempotency key was used for a different request.", {
        idempotencyKey: input.idempotencyKey,
      });
    if (prior.status === "active" || prior.status === "released") return ok(resultOf(input.userId, prior));
    const running = this.inFlight.get(prior.allocation_id);
    if (running) return running;
    return fail(409, "ALLOCATION_IN_PROGRESS", "An allocation with this idempotency key is still being set up; retry shortly.");
  }

  private async completeAllocation(b: Begun, input: AllocateInput): Promise<Result<AllocationResult>> {
    // No alarm for the pending row's deadline: while this runs the alarm leaves the row alone
    // (inFlight), and after a crash the constructor re-arms for it. (An alarm write costs a commit.)
    let claimed: Result<Claimed>;
    try {
      claimed = (await take(this.u.env.DEVICE_POOL.getByName(input.pool).claim(claimRequest(input, b)))) as Result<Claimed>;
    } catch (err) {
      // We cannot know whether a device holds it: abort, and a device holding it frees itself on `verify`.
      this.u.allocations.abortPending(b.allocationId);
      return fail(503, "POOL_UNAVAILABLE", "The device pool did not answer; nothing was allocated. Try again.", { cause: String(err) });
    }
    return this.finishAllocation(b, input, claimed);
  }

  /** Steps 3 and 4: the claimed device is recorded (quota and funds checked on its real spec) and confirmed. */
  private async finishAllocation(
    { allocationId, durationMs, known }: Omit<Begun, "max">,
    input: AllocateInput,
    claimed: Result<Claimed>,
  ): Promise<Result<AllocationResult>> {
    if (!claimed.ok) {
      this.u.allocations.dropPending(allocationId);
      return claimed;
    }
    const c = claimed.value;
    // Step 3: state may have moved while we awaited (deadline passed, device ended it). The chosen
    // device may be larger than asked for: quota and funds are checked on its real spec (the
    // device stays held while a remembered balance is read again).
    let row: AllocationRow | null = null;
    const checked = await this.u.balance.checked(
      input.userId,
      (f) => {
        row = this.u.allocations.row(allocationId);
        return row?.status === "pending"
          ? this.u.allocationCheck(input.userId, c, durationMs, f, allocationId, startsBooking(input)).refusal
          : null;
      },
      { first: known, keepRefusal: true },
    );
    const pending = row as AllocationRow | null;
    if (!checked.ok || !pending || pending.status !== "pending") {
      this.u.allocations.abortPending(allocationId);
      await this.giveBack(c.deviceId, allocationId);
      return checked.ok
        ? fail(503, "ALLOCATION_ABORTED", "The allocation could not be completed in time; nothing was allocated. Try again.")
        : checked;
    }
    const idleMs = effectiveIdleGraceMs(pending.idle_ms, c.idleReleaseSeconds == null ? null : c.idleReleaseSeconds * 1000);
    const done: AllocationRow = {
      ...pending,
      status: "active",
      device_id: c.deviceId,
      node: c.node,
      cpu: c.cpuCores,
      mem: c.memoryMB,
      storage: c.storageMB,
      allocated_at: c.allocatedAt,
      expires_at: c.expiresAt,
      deadline: null,
      idle_ms: idleMs,
    };
    this.u.sql.tx(() => {
      this.u.allocations.activate(allocationId, c, idleMs);
      this.u.emit(input.userId, "device.allocated", eventData(done));
      this.u.noteQuotaStatus(this.u.profile(input.userId));
    });
    log("info", "allocation active", {
      userId: input.userId,
      allocationId,
      deviceId: c.deviceId,
      pool: c.pool,
      expiresAt: iso(c.expiresAt),
    });
    // The overdue check of this allocation (an idle grace needs the full computation).
    if (idleMs === null) await this.u.clock.arm(c.expiresAt + ALLOCATION.overdueGraceMs);
    else await this.u.schedule.rearm();
    try {
      await take(this.u.env.DEVICE.getByName(c.deviceId).confirm(allocationId));
    } catch {
      // The device asks `verify` at its confirm deadline and learns the same.
    }
    // The holder's own answer says how to reach the device (a hand-over's answer goes to the pool, so not there).
    return ok({ ...resultOf(input.userId, done), ...(input.via ? {} : { access: c.access }) });
  }

  private async giveBack(deviceId: string, allocationId: string): Promise<void> {
    try {
      await take(this.u.env.DEVICE.getByName(deviceId).abort(allocationId));
    } catch {
      // The device's own confirm check frees it.
    }
  }
}

/** The booking an allocation starts (a reservation's hand-over), whose funds it takes over. */
const startsBooking = (input: AllocateInput): string | undefined => (input.via?.kind === "reservation" ? input.via.id : undefined);
