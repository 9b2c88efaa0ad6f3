/**
 * A direct allocation, the Worker's side of the protocol (docs/design.md#the-allocation-protocol):
 *   1. the pool picks a device: a read of its index, no write (the device is kept from other
 *      picks for a moment, until its claim's state reaches the pool);
 *   2. side by side, each with one commit: the user's object records the allocation (quota and
 *      funds checked on the picked device's real spec, written `active`), and the device claims
 *      itself (`held`, one claim wins);
 *   3. the answer. After it, off the path: the device is told the record stands (`confirm`), and
 *      the device tells the pool its new state.
 * Two sequential object round trips and two commits before the answer. When one side fails the
 * other is undone before the answer (or the next pick); a stale pick is tried again with what
 * the device said. The healing when the Worker itself dies
 * between steps is the objects' own: a claim nobody confirms asks the user's object at its confirm
 * deadline, and a record is checked with its device (`ALLOCATION.recordCheckMs`).
 */
import { ALLOCATION } from "./config";
import type { AllocateInput, AllocationResult, Claimed, ClaimRequest, DeviceState, Picked } from "./contracts";
import { durationMsOf } from "./domain/duration";
import type { DeviceSpec } from "./domain/types";
import type { Env } from "./env";
import { fail, ok, type Failure, type Result } from "./errors";
import { newAllocationId } from "./ids";
import { take } from "./rpc";

/** Work that may finish after the answer (the request's `waitUntil`). */
export type Defer = (work: Promise<unknown>) => void;

/** Refusals of a claim that mean the pick was stale: another device is tried. */
const STALE = new Set(["DEVICE_BUSY", "DEVICE_UNFIT", "DEVICE_RESERVED", "DEVICE_UNAVAILABLE"]);

export async function allocate(env: Env, input: AllocateInput, defer: Defer): Promise<Result<AllocationResult>> {
  // A repeated key must wait for its first request, so a keyed allocation is begun by the user's
  // object, which drives the longer protocol (durable-objects/user/allocator.ts).
  if (input.idempotencyKey) return take(env.USER_QUOTA.getByName(input.userId).allocate(input));
  const durationMs = durationMsOf(input.durationMinutes, input.durationSeconds);
  const tried: string[] = [];
  let learned: DeviceState[] = [];
  let max: DeviceSpec | undefined;
  for (let attempt = 0; attempt < ALLOCATION.claimAttempts; attempt++) {
    let picked: Result<Picked>;
    try {
      picked = (await take(
        env.DEVICE_POOL.getByName(input.pool).pick({ pool: input.pool, min: input.spec, max, durationMs, exclude: tried, learned }),
      )) as Result<Picked>;
    } catch (err) {
      return fail(503, "POOL_UNAVAILABLE", "The device pool did not answer; nothing was allocated. Try again.", { cause: String(err) });
    }
    if (!picked.ok) {
      // Nothing free for this request: the user's quota, when it refuses, is the reason given first.
      const refused = picked as Failure;
      const fleet = refused.code === "NO_DEVICE_AVAILABLE" || refused.code === "NO_DEVICE_WITHIN_QUOTA";
      const quota = fleet ? await refusalOf(env, input) : null;
      return quota ?? refused;
    }
    learned = [];
    const d = picked.value;
    tried.push(d.deviceId);
    const allocationId = newAllocationId(input.userId);
    const at = Date.now();
    const spec = { cpuCores: d.cpuCores, memoryMB: d.memoryMB, storageMB: d.storageMB };
    const req: ClaimRequest = { allocationId, userId: input.userId, pool: input.pool, min: input.spec, max: spec, durationMs, at };
    const user = env.USER_QUOTA.getByName(input.userId);
    const dev = env.DEVICE.getByName(d.deviceId);
    const [rec, claim] = await Promise.allSettled([take(user.record(input, allocationId, d, at)), take(dev.claim(req))]);
    const recorded = rec.status === "fulfilled" ? (rec.value as Result<AllocationResult>) : null;
    const claimed = claim.status === "fulfilled" ? (claim.value as Result<Claimed>) : null;
    if (recorded?.ok && claimed?.ok) {
      defer(quietly(dev.confirm(allocationId)));
      return ok({ ...recorded.value, access: claimed.value.access });
    }
    // One side failed: the side that stands (or whose answer was lost) is undone.
    // Both before the answer or the next pick: a refusal leaves the device free and the quota as it was.
    if (claimed === null || claimed.ok) await quietly(dev.abort(allocationId));
    if (recorded === null || recorded.ok) await quietly(user.abortRecord(allocationId));
    if (recorded === null) return fail(503, "USER_UNAVAILABLE", "Your quota could not be checked; nothing was allocated. Try again.");
    if (!recorded.ok) {
      const room = (recorded.details as { room?: DeviceSpec } | undefined)?.room;
      // The smallest free device is beyond the quota's room per device: pick again within it (the pool says why not).
      if (recorded.code === "NO_DEVICE_WITHIN_QUOTA" && room && !max) {
        max = room;
        tried.pop(); // not stale, only too large: the pool counts it when it says why
        continue;
      }
      return recorded;
    }
    // Here the record stood (now undone) and the claim did not.
    if (claimed === null || claimed.ok)
      return fail(503, "DEVICE_UNAVAILABLE", "The device did not answer; nothing was allocated. Try again.", { deviceId: d.deviceId });
    if (!STALE.has(claimed.code)) return claimed;
    const state = (claimed.details as { state?: DeviceState | null } | undefined)?.state;
    if (state) learned.push(state);
  }
  return fail(409, "NO_DEVICE_AVAILABLE", `No free device in pool "${input.pool}" matches the request.`, {
    pool: input.pool,
    spec: input.spec,
    nextExpiryAt: null,
  });
}

async function refusalOf(env: Env, input: AllocateInput): Promise<Failure | null> {
  try {
    return (await take(env.USER_QUOTA.getByName(input.userId).allocationRefusal(input))) as Failure | null;
  } catch {
    return null;
  }
}

/** A call whose failure the objects heal on their own (the answer does not wait on it, or already failed). */
async function quietly(call: Promise<unknown>): Promise<void> {
  try {
    await take(call);
  } catch {
    /* healed by the confirm deadline or the record check */
  }
}
