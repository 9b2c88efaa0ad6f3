/**
 * What a user may rent, pure: each device class of a pool with its price under the user's
 * pricing plan and whether their quota lets them take one now (GET /scheduler/pools).
 */
import { ALLOCATION } from "../config";
import type { Failure } from "../errors";
import { priceOf, type Rates } from "./pricing";
import { checkAllocation } from "./quota";
import type { DeviceSpec, Quota } from "./types";

/** One spec of device in a pool, as its index counts it (devices in service only). */
export interface ClassCount extends DeviceSpec {
  devices: number;
  free: number;
  /** When the first allocated device of the class is due to end (epoch ms; null: none held). */
  nextFreeAt: number | null;
}

export interface Offer extends ClassCount {
  /** One hour of a device of this class, in minor units, rounded up as a charge is. */
  pricePerHourMinor: number;
  /** Why the user's quota would refuse one now (the allocate route's own refusal), or null. */
  refusal: Pick<Failure, "code" | "message"> | null;
}

/** The quota is checked as an allocation of the default duration would be. */
export function offerOf(c: ClassCount, rates: Rates, quota: Quota, now: number): Offer {
  const spec = { cpuCores: c.cpuCores, memoryMB: c.memoryMB, storageMB: c.storageMB };
  const refused = checkAllocation(quota, quota.usage, spec, ALLOCATION.defaultMinutes / 60, now);
  return {
    ...c,
    // The first free time only says something when nothing is free now.
    nextFreeAt: c.free > 0 ? null : c.nextFreeAt,
    pricePerHourMinor: priceOf(rates, spec, 3600),
    refusal: refused ? { code: refused.code, message: refused.message } : null,
  };
}
