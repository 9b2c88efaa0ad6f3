/**
 * Reservation rules, pure: the statuses, when to remind, the window's bounds, and what a
 * user's quota allows to be booked. The pool object owns the reservations, their order and
 * their status changes:
 *
 * pending ──► confirmed ──► executing ──► completed
 *    │            │             │
 *    └────────────┴──► cancelled, expired (the window passed unused), failed (could not be allocated at start)
 */
import { RESERVATION, type QuotaLimits } from "../config";
import { fail, type Failure } from "../errors";
import { checkPerDevice, type QuotaState } from "./quota";
import type { DeviceSpec } from "./types";

export const RESERVATION_STATUSES = ["pending", "confirmed", "executing", "completed", "cancelled", "expired", "failed"] as const;
export type ReservationStatus = (typeof RESERVATION_STATUSES)[number];

/** When the reminder goes out: `minutes` before the start, or at once if that is already past (never after the start). */
export function reminderAt(startAt: number, minutes: number, now: number): number | null {
  if (minutes <= 0) return null;
  const at = startAt - minutes * 60_000;
  return at >= startAt ? null : Math.max(at, Math.min(now, startAt));
}

/** Is the window itself acceptable (in the future, not too far ahead)? */
export function checkWindow(startAt: number, endAt: number, now: number): Failure | null {
  if (!Number.isFinite(startAt) || startAt < now)
    return fail(400, "RESERVATION_IN_PAST", "A reservation must start in the future.", {
      startAt: iso(startAt),
      now: iso(now),
    });
  if (startAt > now + RESERVATION.maxAheadDays * 86_400_000)
    return fail(400, "RESERVATION_TOO_FAR", `A reservation may start at most ${RESERVATION.maxAheadDays} days ahead.`, {
      startAt: iso(startAt),
    });
  if (endAt <= startAt) return fail(400, "VALIDATION_FAILED", "The window must have a positive duration.");
  return null;
}

/**
 * May this user book a device of `spec` for `hours` in a window starting at `startAt`? Only
 * what does not depend on the day's usage: status, validity at the start, per-device limits
 * and the period's hours. The full quota check runs again when the window starts.
 */
export function checkReservation(q: QuotaState, spec: DeviceSpec, hours: number, startAt: number): Failure | null {
  if (q.suspended) return fail(403, "QUOTA_SUSPENDED", "Your quota is suspended; contact an operator.");
  if (q.validUntil <= startAt)
    return fail(403, "QUOTA_EXPIRED", "Your quota ends before the reservation starts; it must be renewed first.", {
      validUntil: iso(q.validUntil),
      startAt: iso(startAt),
    });
  const perDevice = checkPerDevice(q.limits, spec);
  if (perDevice) return perDevice;
  if (hours > q.limits.maxDeviceHoursPerPeriod)
    return fail(
      409,
      "QUOTA_HOURS_EXCEEDED",
      `The window is longer than your ${q.limits.maxDeviceHoursPerPeriod} device-hours per period.`,
      { limit: q.limits.maxDeviceHoursPerPeriod, requested: hours },
    );
  return null;
}

/** What a repeated idempotency key of a booking must match: the request as made. */
export function bookingHash(b: {
  min: DeviceSpec;
  startAt: number;
  endAt: number;
  durationMinutes: number;
  reminderMinutes: number;
}): string {
  return JSON.stringify([b.min, b.startAt, b.endAt, b.durationMinutes, b.reminderMinutes]);
}

const iso = (t: number) => (Number.isFinite(t) ? new Date(t).toISOString() : String(t));

/** Something the user holds or has booked over [startAt, endAt). */
export interface Held {
  startAt: number;
  endAt: number;
  spec: DeviceSpec;
}

/**
 * The most the user would hold at once during [startAt, endAt) with what is `held` already:
 * devices and each total, each at its own peak (every peak falls where something starts).
 */
export function peakOver(held: Held[], startAt: number, endAt: number): { devices: number } & DeviceSpec {
  const inWindow = held.filter((h) => h.startAt < endAt && h.endAt > startAt);
  const points = [startAt, ...inWindow.map((h) => h.startAt).filter((t) => t > startAt)];
  const peak = { devices: 0, cpuCores: 0, memoryMB: 0, storageMB: 0 };
  for (const t of points) {
    const at = inWindow.filter((h) => h.startAt <= t && h.endAt > t);
    peak.devices = Math.max(peak.devices, at.length);
    for (const k of ["cpuCores", "memoryMB", "storageMB"] as const)
      peak[k] = Math.max(
        peak[k],
        at.reduce((s, h) => s + h.spec[k], 0),
      );
  }
  return peak;
}

/**
 * May a window of `spec` be booked beside what the user holds or has booked then? The device
 * count and the totals of the plan apply to the window as they apply to a running allocation.
 */
export function checkWindowLoad(limits: QuotaLimits, held: Held[], spec: DeviceSpec, startAt: number, endAt: number): Failure | null {
  const peak = peakOver(held, startAt, endAt);
  const window = { startAt: iso(startAt), endAt: iso(endAt) };
  if (peak.devices + 1 > limits.maxDevices)
    return fail(
      409,
      "QUOTA_DEVICES_EXCEEDED",
      `In that window you already hold or have booked ${peak.devices} of your ${limits.maxDevices} devices.`,
      { limit: limits.maxDevices, used: peak.devices, ...window },
    );
  const totals: [keyof DeviceSpec, number][] = [
    ["cpuCores", limits.maxCpuCores],
    ["memoryMB", limits.maxMemoryMB],
    ["storageMB", limits.maxStorageMB],
  ];
  for (const [k, max] of totals)
    if (peak[k] + spec[k] > max)
      return fail(
        409,
        "QUOTA_TOTAL_EXCEEDED",
        `Booking ${spec[k]} more ${k} would exceed your total of ${max} in that window (held or booked then: ${peak[k]}).`,
        { field: k, limit: max, used: peak[k], requested: spec[k], ...window },
      );
  return null;
}
