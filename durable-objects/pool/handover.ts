/**
 * The pool's hand-over of a device to a queue entry or a reservation's start: the user's object
 * checks and holds the quota (step 1, `beginHandOver`), this pool claims the device itself
 * (step 2), the user's object records and confirms it (steps 3-4, `finishHandOver`). The pool
 * never waits on a call that calls back into it. The entry's or reservation's id is the
 * idempotency key, so a retry never allocates twice.
 */
import type { AllocateInput, AllocationResult, Claimed, ClaimRequest, HandOverBegun } from "../../src/contracts";
import { claimRequest } from "../../src/domain/claim";

import { fail, type Failure, type Result } from "../../src/errors";
import { take } from "../../src/rpc";
import type { PoolContext } from "./context";

/** Hand-over failures that mean the device was not there after all: wait for the next one at once. */
export const DEVICE_RACES = new Set([
  "DEVICE_BUSY",
  "DEVICE_RESERVED",
  "DEVICE_UNAVAILABLE",
  "NO_DEVICE_AVAILABLE",
  "NO_DEVICE_WITHIN_QUOTA",
  "QUEUE_OFFER_GONE",
  "DEVICE_UNFIT",
]);

/** Refusals of the user's own account: the entry or reservation fails with them. */
export const isFinalRefusal = (f: Failure) =>
  f.status === 402 || f.status === 403 || f.code.startsWith("QUOTA_") || f.code === "IDEMPOTENCY_KEY_REUSED" || f.code === "POOL_NOT_FOUND";

export type HandOverInput = AllocateInput & { via: NonNullable<ClaimRequest["via"]> };

export class HandOver {
  /** Entries and reservations whose hand-over (or booking) call is running: the alarm and cancels leave them alone. */
  readonly busy = new Set<string>();

  constructor(private readonly p: PoolContext) {}

  /** One hand-over per entry or reservation at a time (null: one is running already). */
  async run(key: string, input: HandOverInput): Promise<Result<AllocationResult> | null> {
    if (this.busy.has(key)) return null;
    this.busy.add(key);
    try {
      return await this.steps(input);
    } catch (err) {
      return fail(503, "USER_UNAVAILABLE", "The user's object did not answer.", { cause: String(err).slice(0, 200) });
    } finally {
      this.busy.delete(key);
    }
  }

  private async steps(input: HandOverInput): Promise<Result<AllocationResult>> {
    const user = this.p.env.USER_QUOTA.getByName(input.userId);
    const begun = (await take(user.beginHandOver(input))) as Result<AllocationResult> | { begun: HandOverBegun };
    if (!("begun" in begun)) return begun;
    const b = begun.begun;
    let claimed: Result<Claimed>;
    try {
      claimed = await this.p.claim(claimRequest(input, b));
    } catch (err) {
      // A device that did not answer may hold it: it asks the user's object later and frees itself.
      claimed = fail(503, "DEVICE_UNAVAILABLE", "The device did not answer.", { cause: String(err).slice(0, 200) });
    }
    return (await take(user.finishHandOver(input, b.allocationId, claimed))) as Result<AllocationResult>;
  }
}
