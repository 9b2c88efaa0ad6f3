/** Pure rules of the waiting queue and reservations (src/domain/queue.ts, src/domain/reservation.ts). */
import { describe, expect, it } from "vitest";
import { entryPriority, estimateStart, planPriority, priorityName } from "../../src/domain/queue";
import { checkReservation, checkWindow, reminderAt } from "../../src/domain/reservation";
import { PLAN_LIMITS } from "../../src/config";

const S = (cpuCores: number) => ({ cpuCores, memoryMB: 0, storageMB: 0 });
const ANY = { min: S(0), max: S(1000) };

describe("queue priority", () => {
  it("comes from the plan; a user may lower it, only an admin raise it", () => {
    expect(["free", "basic", "pro", "enterprise"].map((p) => planPriority(p as never))).toEqual([0, 1, 2, 3]);
    expect([0, 1, 2, 3].map(priorityName)).toEqual(["standard", "vip", "premium", "enterprise"]);
    expect(entryPriority("pro", undefined, false)).toBe(2);
    expect(entryPriority("pro", 1, false)).toBe(1);
    expect(entryPriority("pro", 3, false)).toMatchObject({ status: 403, code: "PRIORITY_NOT_ALLOWED" });
    expect(entryPriority("free", 3, true)).toBe(3);
  });
});

describe("wait estimate", () => {
  const now = 1_000_000;
  it("is the soonest fitting expiry, pushed back by the entries ahead", () => {
    const devices = [
      { ...S(2), freeAt: now + 60_000 },
      { ...S(2), freeAt: now + 120_000 },
    ];
    expect(estimateStart(devices, [], ANY, now)).toBe(now + 60_000);
    // One entry ahead takes the first device for 10 minutes: the second device frees first.
    expect(estimateStart(devices, [{ ...ANY, durationMs: 600_000 }], ANY, now)).toBe(now + 120_000);
    // Two ahead: the first device again, after its holder's 10 minutes.
    expect(
      estimateStart(
        devices,
        [
          { ...ANY, durationMs: 600_000 },
          { ...ANY, durationMs: 600_000 },
        ],
        ANY,
        now,
      ),
    ).toBe(now + 660_000);
  });

  it("ignores entries ahead that cannot use my devices, and devices out of service", () => {
    const devices = [
      { ...S(2), freeAt: now + 60_000 },
      { ...S(8), freeAt: now + 30_000 },
      { ...S(2), freeAt: null },
    ];
    const big = { min: S(8), max: S(8), durationMs: 3_600_000 };
    const small = { min: S(1), max: S(2) };
    expect(estimateStart(devices, [big], small, now)).toBe(now + 60_000);
    expect(estimateStart([{ ...S(2), freeAt: null }], [], small, now)).toBeNull();
    expect(estimateStart(devices, [], { min: S(16), max: S(16) }, now)).toBeNull();
    // A free device is free now, never in the past.
    expect(estimateStart([{ ...S(2), freeAt: now - 5_000 }], [], small, now)).toBe(now);
  });
});

describe("reservation rules", () => {
  it("reminds the given minutes before the start, at once when that is past, never after the start", () => {
    const start = 10_000_000;
    expect(reminderAt(start, 15, 0)).toBe(start - 900_000);
    expect(reminderAt(start, 15, start - 60_000)).toBe(start - 60_000);
    expect(reminderAt(start, 0, 0)).toBeNull();
  });

  it("checks the window and what the quota allows at booking", () => {
    const now = 1_000_000;
    expect(checkWindow(now - 1, now + 10, now)).toMatchObject({ code: "RESERVATION_IN_PAST" });
    expect(checkWindow(now + 31 * 86_400_000, now + 32 * 86_400_000, now)).toMatchObject({
      code: "RESERVATION_TOO_FAR",
    });
    expect(checkWindow(now + 10, now + 20, now)).toBeNull();
    const q = { suspended: false, validUntil: now + 86_400_000, limits: PLAN_LIMITS.free };
    expect(checkReservation(q, S(2), 1, now + 3_600_000)).toBeNull();
    expect(checkReservation({ ...q, suspended: true }, S(2), 1, now)).toMatchObject({ code: "QUOTA_SUSPENDED" });
    expect(checkReservation(q, S(2), 1, now + 2 * 86_400_000)).toMatchObject({ code: "QUOTA_EXPIRED" });
    expect(checkReservation(q, S(64), 1, now)).toMatchObject({ code: "QUOTA_PER_DEVICE_EXCEEDED" });
    expect(checkReservation(q, S(2), 1000, now)).toMatchObject({ code: "QUOTA_HOURS_EXCEEDED" });
  });
});
