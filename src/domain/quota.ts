/**
 * Quota rules, pure. The UserQuota object owns the state and ordering; these functions
 * decide. Checks run in the documented order: status → validUntil → concurrent devices →
 * per-device limits → totals → device-hours of the period.
 */
import type { QuotaLimits } from "../config";
import { fail, type Failure } from "../errors";
import type { DeviceSpec, QuotaStatus, QuotaUsage } from "./types";

export interface QuotaState {
  suspended: boolean;
  validUntil: number;
  limits: QuotaLimits;
}

/** Start of the quota period (calendar month, UTC) that contains `now`. */
export function periodStartFor(now: number): number {
  const d = new Date(now);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/** A usage dimension at or over its limit blocks any further allocation of that kind. */
export function limitReached(limits: QuotaLimits, usage: QuotaUsage): boolean {
  return (
    usage.devices >= limits.maxDevices ||
    usage.cpuCores >= limits.maxCpuCores ||
    usage.memoryMB >= limits.maxMemoryMB ||
    usage.storageMB >= limits.maxStorageMB ||
    usage.deviceHours >= limits.maxDeviceHoursPerPeriod
  );
}

export function quotaStatus(q: QuotaState, usage: QuotaUsage, now: number): QuotaStatus {
  if (q.suspended) return "suspended";
  if (q.validUntil <= now) return "expired";
  return limitReached(q.limits, usage) ? "exceeded" : "active";
}

/** The largest device this user could take now (per-device limits and remaining totals). */
export function deviceHeadroom(limits: QuotaLimits, usage: QuotaUsage): DeviceSpec {
  return {
    cpuCores: Math.max(0, Math.min(limits.maxCpuCoresPerDevice, limits.maxCpuCores - usage.cpuCores)),
    memoryMB: Math.max(0, Math.min(limits.maxMemoryMBPerDevice, limits.maxMemoryMB - usage.memoryMB)),
    storageMB: Math.max(0, Math.min(limits.maxStorageMBPerDevice, limits.maxStorageMB - usage.storageMB)),
  };
}

const round = (n: number) => Math.round(n * 1000) / 1000;

/**
 * May this user take one more device of `spec` for `hours`? Returns the first failing
 * check, or null. `spec` is the requested minimum before a device is chosen and the
 * chosen device's real spec after.
 */
export function checkAllocation(q: QuotaState, usage: QuotaUsage, spec: DeviceSpec, hours: number, now: number): Failure | null {
  const L = q.limits;
  if (q.suspended) return fail(403, "QUOTA_SUSPENDED", "Your quota is suspended; contact an operator.");
  if (q.validUntil <= now)
    return fail(403, "QUOTA_EXPIRED", "Your quota has expired; it must be renewed.", {
      validUntil: new Date(q.validUntil).toISOString(),
    });
  if (usage.devices + 1 > L.maxDevices)
    return fail(409, "QUOTA_DEVICES_EXCEEDED", `You already hold ${usage.devices} of ${L.maxDevices} devices.`, {
      limit: L.maxDevices,
      used: usage.devices,
    });
  const perDevice = checkPerDevice(L, spec);
  if (perDevice) return perDevice;
  const totals: [keyof DeviceSpec, number][] = [
    ["cpuCores", L.maxCpuCores],
    ["memoryMB", L.maxMemoryMB],
    ["storageMB", L.maxStorageMB],
  ];
  for (const [k, max] of totals) {
    if (usage[k] + spec[k] > max)
      return fail(409, "QUOTA_TOTAL_EXCEEDED", `Taking ${spec[k]} more ${k} would exceed your total of ${max} (in use: ${usage[k]}).`, {
        field: k,
        limit: max,
        used: usage[k],
        requested: spec[k],
      });
  }
  if (usage.deviceHours + hours > L.maxDeviceHoursPerPeriod + 1e-9)
    return fail(
      409,
      "QUOTA_HOURS_EXCEEDED",
      `This would use ${round(hours)} device-hours; ` +
        `${round(Math.max(0, L.maxDeviceHoursPerPeriod - usage.deviceHours))} of ${L.maxDeviceHoursPerPeriod} are left this period.`,
      {
        limit: L.maxDeviceHoursPerPeriod,
        used: round(usage.deviceHours),
        requested: round(hours),
      },
    );
  return null;
}

/** The largest single device a user may hold. */
export function checkPerDevice(L: QuotaLimits, spec: DeviceSpec): Failure | null {
  const perDevice: [keyof DeviceSpec, number][] = [
    ["cpuCores", L.maxCpuCoresPerDevice],
    ["memoryMB", L.maxMemoryMBPerDevice],
    ["storageMB", L.maxStorageMBPerDevice],
  ];
  for (const [k, max] of perDevice) {
    if (spec[k] > max)
      return fail(409, "QUOTA_PER_DEVICE_EXCEEDED", `A device with ${spec[k]} ${k} is over your per-device limit of ${max}.`, {
        field: k,
        limit: max,
        requested: spec[k],
      });
  }
  return null;
}

/** Extra device-hours an extension books: the same rule as an allocation's hours. */
export function checkExtraHours(q: QuotaState, usage: QuotaUsage, hours: number, now: number): Failure | null {
  if (q.suspended) return fail(403, "QUOTA_SUSPENDED", "Your quota is suspended; contact an operator.");
  if (q.validUntil <= now) return fail(403, "QUOTA_EXPIRED", "Your quota has expired; it must be renewed.");
  if (usage.deviceHours + hours > q.limits.maxDeviceHoursPerPeriod + 1e-9)
    return fail(
      409,
      "QUOTA_HOURS_EXCEEDED",
      `Extending would use ${round(hours)} device-hours; ` +
        `${round(Math.max(0, q.limits.maxDeviceHoursPerPeriod - usage.deviceHours))} are left this period.`,
      {
        limit: q.limits.maxDeviceHoursPerPeriod,
        used: round(usage.deviceHours),
        requested: round(hours),
      },
    );
  return null;
}

/** New `validUntil` after renewing by `days`: from now if already expired, else from the old end. */
export function renewedUntil(validUntil: number, days: number, now: number): number {
  return Math.max(validUntil, now) + days * 86_400_000;
}

const described = (s: DeviceSpec) => `${s.cpuCores} cores, ${s.memoryMB} MB memory, ${s.storageMB} MB storage`;

/**
 * The quota, not the fleet, rules out the devices that meet the request's floor: each is larger
 * than the room the user has per device (`room`, from `deviceHeadroom`). Saying "no device
 * available" there would send them waiting for something the fleet already has. `among`: the
 * devices counted, free ones (allocate) or those in service (joining the queue).
 */
export function roomRefusal(
  among: "free" | "in service",
  pool: string,
  spec: DeviceSpec,
  room: DeviceSpec,
  count: number,
  smallest: DeviceSpec,
): Failure {
  const devices = count === 1 ? `1 device ${among} matches` : `${count} devices ${among} match`;
  const next =
    among === "free"
      ? "Ask an operator for a larger quota, release a device, or wait for a smaller one."
      : "Ask an operator for a larger quota: waiting would never give you one.";
  return fail(
    409,
    "NO_DEVICE_WITHIN_QUOTA",
    `${devices} your request in pool "${pool}", but your quota leaves room for at most ${described(room)} per device, ` +
      `and the smallest is ${described(smallest)}. ${next}`,
    { pool, spec, room, devices: count, smallest },
  );
}
