/**
 * Plain unit tests of the pure rules: quota checks (each check, its boundary and the
 * documented order), quota status and periods, extend policy per plan tier, scheduling
 * strategies and the expiry warning. Exact expected values throughout; two fast-check
 * properties for checkAllocation and deviceHeadroom.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EXTEND_POLICIES, PLAN_LIMITS, PLAN_TIERS, type QuotaLimits, type Strategy } from "../../src/config";
import type { Failure } from "../../src/errors";
import { checkExtend, type ExtendState } from "../../src/domain/extend";
import { expiryWarningAt } from "../../src/domain/expiry";
import {
  checkAllocation,
  checkExtraHours,
  deviceHeadroom,
  limitReached,
  periodStartFor,
  quotaStatus,
  renewedUntil,
  type QuotaState,
} from "../../src/domain/quota";
import { fits, orderNodes, sizeFirst, type NodeLoad } from "../../src/domain/strategy";
import type { DeviceSpec, QuotaUsage } from "../../src/domain/types";

const MIN = 60_000;
const DAY = 86_400_000;
const NOW = Date.UTC(2026, 10, 21, 12, 0, 0); // 2026-11-21T12:00:00.000Z
const LIMITS: QuotaLimits = {
  maxDevices: 3,
  maxCpuCores: 10,
  maxMemoryMB: 10_000,
  maxStorageMB: 100_000,
  maxCpuCoresPerDevice: 4,
  maxMemoryMBPerDevice: 4_000,
  maxStorageMBPerDevice: 50_000,
  maxDeviceHoursPerPeriod: 10,
};
const Q: QuotaState = { suspended: false, validUntil: NOW + DAY, limits: LIMITS };
const USAGE: QuotaUsage = { devices: 0, cpuCores: 0, memoryMB: 0, storageMB: 0, deviceHours: 0 };
const SPEC: DeviceSpec = { cpuCores: 2, memoryMB: 2_000, storageMB: 10_000 };

/** The parts of a refusal a caller acts on (the message is prose). */
const brief = (f: Failure | null) => (f === null ? null : { ok: f.ok, status: f.status, code: f.code, details: f.details });

describe("quota.checkAllocation: each check", () => {
  it("allows a request within every limit", () => {
    expect(checkAllocation(Q, USAGE, SPEC, 1, NOW)).toBeNull();
  });

  it("status: a suspended quota refuses with 403 QUOTA_SUSPENDED", () => {
    const f = checkAllocation({ ...Q, suspended: true }, USAGE, SPEC, 1, NOW);
    expect(brief(f)).toEqual({ ok: false, status: 403, code: "QUOTA_SUSPENDED", details: undefined });
    expect(f?.message).toEqual(expect.any(String));
  });

  it("validUntil: expired at validUntil itself (403 QUOTA_EXPIRED), valid 1 ms before", () => {
    expect(brief(checkAllocation({ ...Q, validUntil: NOW }, USAGE, SPEC, 1, NOW))).toEqual({
      ok: false,
      status: 403,
      code: "QUOTA_EXPIRED",
      details: { validUntil: "2026-11-21T12:00:00.000Z" },
    });
    expect(checkAllocation({ ...Q, validUntil: NOW - 1 }, USAGE, SPEC, 1, NOW)?.code).toBe("QUOTA_EXPIRED");
    expect(checkAllocation({ ...Q, validUntil: NOW + 1 }, USAGE, SPEC, 1, NOW)).toBeNull();
  });

  it("concurrent devices: the last allowed device passes, one more is refused with 409", () => {
    expect(checkAllocation(Q, { ...USAGE, devices: 2 }, SPEC, 1, NOW)).toBeNull();
    expect(brief(checkAllocation(Q, { ...USAGE, devices: 3 }, SPEC, 1, NOW))).toEqual({
      ok: false,
      status: 409,
      code: "QUOTA_DEVICES_EXCEEDED",
      details: { limit: 3, used: 3 },
    });
    expect(brief(checkAllocation(Q, { ...USAGE, devices: 4 }, SPEC, 1, NOW))).toEqual({
      ok: false,
      status: 409,
      code: "QUOTA_DEVICES_EXCEEDED",
      details: { limit: 3, used: 4 },
    });
  });

  it("per-device limits: exactly the limit passes, one over is refused per field", () => {
    expect(checkAllocation(Q, USAGE, { cpuCores: 4, memoryMB: 4_000, storageMB: 50_000 }, 1, NOW)).toBeNull();
    expect(brief(checkAllocation(Q, USAGE, { ...SPEC, cpuCores: 5 }, 1, NOW))).toEqual({
      ok: false,
      status: 409,
      code: "QUOTA_PER_DEVICE_EXCEEDED",
      details: { field: "cpuCores", limit: 4, requested: 5 },
    });
    expect(brief(checkAllocation(Q, USAGE, { ...SPEC, memoryMB: 4_001 }, 1, NOW))).toEqual({
      ok: false,
      status: 409,
      code: "QUOTA_PER_DEVICE_EXCEEDED",
      details: { field: "memoryMB", limit: 4_000, requested: 4_001 },
    });
    expect(brief(checkAllocation(Q, USAGE, { ...SPEC, storageMB: 50_001 }, 1, NOW))).toEqual({
      ok: false,
      status: 409,
      code: "QUOTA_PER_DEVICE_EXCEEDED",
      details: { field: "storageMB", limit: 50_000, requested: 50_001 },
    });
  });

  it("totals: reaching a total exactly passes, one over is refused per field", () => {
    expect(checkAllocation(Q, { ...USAGE, devices: 2, cpuCores: 8, memoryMB: 8_000, storageMB: 90_000 }, SPEC, 1, NOW)).toBeNull();
    expect(brief(checkAllocation(Q, { ...USAGE, cpuCores: 9 }, SPEC, 1, NOW))).toEqual({
      ok: false,
      status: 409,
      code: "QUOTA_TOTAL_EXCEEDED",
      details: { field: "cpuCores", limit: 10, used: 9, requested: 2 },
    });
    expect(brief(checkAllocation(Q, { ...USAGE, memoryMB: 8_001 }, SPEC, 1, NOW))).toEqual({
      ok: false,
      status: 409,
      code: "QUOTA_TOTAL_EXCEEDED",
      details: { field: "memoryMB", limit: 10_000, used: 8_001, requested: 2_000 },
    });
    expect(brief(checkAllocation(Q, { ...USAGE, storageMB: 90_001 }, SPEC, 1, NOW))).toEqual({
      ok: false,
      status: 409,
      code: "QUOTA_TOTAL_EXCEEDED",
      details: { field: "storageMB", limit: 100_000, used: 90_001, requested: 10_000 },
    });
  });

  it("device-hours of the period: reaching the limit passes, over is refused with rounded details", () => {
    expect(checkAllocation(Q, { ...USAGE, deviceHours: 9 }, SPEC, 1, NOW)).toBeNull();
    expect(brief(checkAllocation(Q, { ...USAGE, deviceHours: 9 }, SPEC, 1.5, NOW))).toEqual({
      ok: false,
      status: 409,
      code: "QUOTA_HOURS_EXCEEDED",
      details: { limit: 10, used: 9, requested: 1.5 },
    });
    expect(brief(checkAllocation(Q, { ...USAGE, deviceHours: 9.5 }, SPEC, 40 / 60, NOW))).toEqual({
      ok: false,
      status: 409,
      code: "QUOTA_HOURS_EXCEEDED",
      details: { limit: 10, used: 9.5, requested: 0.667 },
    });
    // Hours come from minutes / 60: the last minute of the period fits despite float noise, the next one does not.
    expect(checkAllocation(Q, { ...USAGE, deviceHours: 9 + 59 / 60 }, SPEC, 1 / 60, NOW)).toBeNull();
    expect(checkAllocation(Q, { ...USAGE, deviceHours: 9 + 59 / 60 }, SPEC, 2 / 60, NOW)?.code).toBe("QUOTA_HOURS_EXCEEDED");
    // Usage summed from several bookings (1 + 46 + 46 min) carries float error: 93/60 + 27/60 = 2.0000000000000004 h.
    const q2 = { ...Q, limits: { ...LIMITS, maxDeviceHoursPerPeriod: 2 } };
    const booked = 1 / 60 + 46 / 60 + 46 / 60;
    expect(booked + 27 / 60).toBeGreaterThan(2);
    expect(checkAllocation(q2, { ...USAGE, deviceHours: booked }, SPEC, 27 / 60, NOW)).toBeNull();
    expect(checkAllocation(q2, { ...USAGE, deviceHours: booked }, SPEC, 28 / 60, NOW)?.code).toBe("QUOTA_HOURS_EXCEEDED");
  });
});

describe("quota.checkAllocation: order (the earlier failing check is reported)", () => {
  const over = { cpuCores: 5, memoryMB: 5_000, storageMB: 60_000 };
  const cases: [string, QuotaState, QuotaUsage, DeviceSpec, number, string, unknown?][] = [
    ["suspended before expired", { ...Q, suspended: true, validUntil: NOW - 1 }, USAGE, SPEC, 1, "QUOTA_SUSPENDED"],
    ["expired before devices", { ...Q, validUntil: NOW }, { ...USAGE, devices: 3 }, SPEC, 1, "QUOTA_EXPIRED"],
    ["devices before per-device", Q, { ...USAGE, devices: 3 }, over, 1, "QUOTA_DEVICES_EXCEEDED"],
    [
      "per-device before totals",
      Q,
      { ...USAGE, cpuCores: 9 },
      { ...SPEC, cpuCores: 5 },
      1,
      "QUOTA_PER_DEVICE_EXCEEDED",
      { field: "cpuCores" },
    ],
    [
      "every per-device field before any total",
      Q,
      { ...USAGE, cpuCores: 9 },
      { ...SPEC, storageMB: 50_001 },
      1,
      "QUOTA_PER_DEVICE_EXCEEDED",
      { field: "storageMB" },
    ],
    ["per-device cpu before memory", Q, USAGE, over, 1, "QUOTA_PER_DEVICE_EXCEEDED", { field: "cpuCores" }],
    ["per-device memory before storage", Q, USAGE, { ...over, cpuCores: 1 }, 1, "QUOTA_PER_DEVICE_EXCEEDED", { field: "memoryMB" }],
    ["totals before hours", Q, { ...USAGE, cpuCores: 9, deviceHours: 10 }, SPEC, 1, "QUOTA_TOTAL_EXCEEDED", { field: "cpuCores" }],
    [
      "total memory before total storage",
      Q,
      { ...USAGE, memoryMB: 9_000, storageMB: 95_000 },
      SPEC,
      1,
      "QUOTA_TOTAL_EXCEEDED",
      { field: "memoryMB" },
    ],
    [
      "all failing: suspended wins",
      { ...Q, suspended: true, validUntil: 0 },
      { devices: 9, cpuCores: 99, memoryMB: 99_999, storageMB: 999_999, deviceHours: 99 },
      over,
      99,
      "QUOTA_SUSPENDED",
    ],
  ];
  for (const [name, q, usage, spec, hours, code, details] of cases) {
    it(name, () => {
      const f = checkAllocation(q, usage, spec, hours, NOW);
      expect(f?.code).toBe(code);
      if (details) expect(f?.details).toMatchObject(details as object);
    });
  }
});

describe("quota status, headroom, periods, renewal, extra hours", () => {
  it("quotaStatus: suspended, then expired, then exceeded, else active", () => {
    expect(quotaStatus({ ...Q, suspended: true, validUntil: 0 }, { ...USAGE, devices: 3 }, NOW)).toBe("suspended");
    expect(quotaStatus({ ...Q, validUntil: NOW }, { ...USAGE, devices: 3 }, NOW)).toBe("expired");
    expect(quotaStatus({ ...Q, validUntil: NOW - 1 }, USAGE, NOW)).toBe("expired");
    expect(quotaStatus({ ...Q, validUntil: NOW + 1 }, { ...USAGE, devices: 3 }, NOW)).toBe("exceeded");
    expect(quotaStatus(Q, { ...USAGE, cpuCores: 11 }, NOW)).toBe("exceeded");
    expect(quotaStatus(Q, { devices: 2, cpuCores: 9, memoryMB: 9_999, storageMB: 99_999, deviceHours: 9.99 }, NOW)).toBe("active");
    expect(quotaStatus(Q, USAGE, NOW)).toBe("active");
  });

  it("limitReached: each dimension at its limit (or over) counts, one below does not", () => {
    expect(limitReached(LIMITS, USAGE)).toBe(false);
    const at = { devices: 3, cpuCores: 10, memoryMB: 10_000, storageMB: 100_000, deviceHours: 10 };
    for (const k of Object.keys(at) as (keyof QuotaUsage)[]) {
      expect(limitReached(LIMITS, { ...USAGE, [k]: at[k] })).toBe(true);
      expect(limitReached(LIMITS, { ...USAGE, [k]: at[k] + 1 })).toBe(true);
      expect(limitReached(LIMITS, { ...USAGE, [k]: at[k] - 1 })).toBe(false);
    }
    expect(limitReached(LIMITS, { devices: 2, cpuCores: 9, memoryMB: 9_999, storageMB: 99_999, deviceHours: 9.999 })).toBe(false);
  });

  it("deviceHeadroom: the smaller of per-device limit and remaining total, never negative", () => {
    expect(deviceHeadroom(LIMITS, USAGE)).toEqual({ cpuCores: 4, memoryMB: 4_000, storageMB: 50_000 });
    expect(deviceHeadroom(LIMITS, { ...USAGE, cpuCores: 7, memoryMB: 6_500, storageMB: 60_000 })).toEqual({
      cpuCores: 3,
      memoryMB: 3_500,
      storageMB: 40_000,
    });
    expect(deviceHeadroom(LIMITS, { ...USAGE, cpuCores: 8, memoryMB: 9_500, storageMB: 100_000 })).toEqual({
      cpuCores: 2,
      memoryMB: 500,
      storageMB: 0,
    });
    expect(deviceHeadroom(LIMITS, { ...USAGE, cpuCores: 12, memoryMB: 20_000, storageMB: 200_000 })).toEqual({
      cpuCores: 0,
      memoryMB: 0,
      storageMB: 0,
    });
    expect(deviceHeadroom(PLAN_LIMITS.free, { ...USAGE, cpuCores: 6, memoryMB: 12_288 })).toEqual({
      cpuCores: 2,
      memoryMB: 4_096,
      storageMB: 65_536,
    });
  });

  it("periodStartFor: first instant of the UTC calendar month", () => {
    const iso = (t: number) => new Date(periodStartFor(t)).toISOString();
    expect(iso(NOW)).toBe("2026-11-01T00:00:00.000Z");
    expect(iso(Date.UTC(2026, 10, 1))).toBe("2026-11-01T00:00:00.000Z");
    expect(iso(Date.UTC(2026, 10, 1) - 1)).toBe("2026-10-01T00:00:00.000Z");
    // December → January crosses the year.
    expect(iso(Date.UTC(2026, 11, 31, 23, 59, 59, 999))).toBe("2026-12-01T00:00:00.000Z");
    expect(iso(Date.UTC(2027, 0, 1))).toBe("2027-01-01T00:00:00.000Z");
    // Leap year: Feb 29 still belongs to February.
    expect(iso(Date.UTC(2028, 1, 29, 10))).toBe("2028-02-01T00:00:00.000Z");
    expect(iso(Date.UTC(2028, 2, 1) - 1)).toBe("2028-02-01T00:00:00.000Z");
    expect(iso(Date.UTC(2028, 2, 1))).toBe("2028-03-01T00:00:00.000Z");
    expect(periodStartFor(Date.UTC(2027, 0, 1))).toBe(1_798_761_600_000);
  });

  it("renewedUntil: from the old end while valid, from now once expired", () => {
    expect(renewedUntil(NOW + 1_000, 30, NOW)).toBe(NOW + 1_000 + 2_592_000_000);
    expect(renewedUntil(NOW - 5_000, 30, NOW)).toBe(NOW + 2_592_000_000);
    expect(renewedUntil(NOW, 1, NOW)).toBe(NOW + DAY);
    expect(renewedUntil(0, 7, NOW)).toBe(NOW + 7 * DAY);
  });

  it("checkExtraHours: status, then validity, then the period's hours (at the limit allowed)", () => {
    expect(checkExtraHours(Q, { ...USAGE, deviceHours: 9 }, 1, NOW)).toBeNull();
    const q2 = { ...Q, limits: { ...LIMITS, maxDeviceHoursPerPeriod: 2 } };
    // float sum 2.0000000000000004
    expect(checkExtraHours(q2, { ...USAGE, deviceHours: 1 / 60 + 46 / 60 + 46 / 60 }, 27 / 60, NOW)).toBeNull();
    expect(checkExtraHours(q2, { ...USAGE, deviceHours: 1 / 60 + 46 / 60 + 46 / 60 }, 28 / 60, NOW)?.code).toBe("QUOTA_HOURS_EXCEEDED");
    expect(brief(checkExtraHours(Q, { ...USAGE, deviceHours: 9.5 }, 1, NOW))).toEqual({
      ok: false,
      status: 409,
      code: "QUOTA_HOURS_EXCEEDED",
      details: { limit: 10, used: 9.5, requested: 1 },
    });
    expect(brief(checkExtraHours({ ...Q, suspended: true }, USAGE, 1, NOW))).toEqual({
      ok: false,
      status: 403,
      code: "QUOTA_SUSPENDED",
      details: undefined,
    });
    expect(brief(checkExtraHours({ ...Q, validUntil: NOW }, USAGE, 1, NOW))).toEqual({
      ok: false,
      status: 403,
      code: "QUOTA_EXPIRED",
      details: undefined,
    });
    expect(checkExtraHours({ ...Q, suspended: true, validUntil: 0 }, { ...USAGE, deviceHours: 99 }, 1, NOW)?.code).toBe("QUOTA_SUSPENDED");
    expect(checkExtraHours({ ...Q, validUntil: NOW }, { ...USAGE, deviceHours: 99 }, 1, NOW)?.code).toBe("QUOTA_EXPIRED");
    // An extension holds no extra device: devices and totals at their limits do not matter.
    expect(checkExtraHours(Q, { devices: 3, cpuCores: 10, memoryMB: 10_000, storageMB: 100_000, deviceHours: 0 }, 1, NOW)).toBeNull();
  });

  it("plans grow with the tier", () => {
    for (let i = 1; i < PLAN_TIERS.length; i++) {
      for (const k of Object.keys(PLAN_LIMITS.free) as (keyof QuotaLimits)[]) {
        expect(PLAN_LIMITS[PLAN_TIERS[i]!][k]).toBeGreaterThanOrEqual(PLAN_LIMITS[PLAN_TIERS[i - 1]!][k]);
      }
    }
  });
});

describe("quota properties", () => {
  const n = (max: number) => fc.integer({ min: 0, max });
  const limitsArb = fc.record({
    maxDevices: n(5),
    maxCpuCores: n(40),
    maxMemoryMB: n(40_000),
    maxStorageMB: n(400_000),
    maxCpuCoresPerDevice: n(16),
    maxMemoryMBPerDevice: n(16_000),
    maxStorageMBPerDevice: n(160_000),
    maxDeviceHoursPerPeriod: n(50),
  });
  const specArb = fc.record({ cpuCores: n(20), memoryMB: n(20_000), storageMB: n(200_000) });

  it("checkAllocation returns null exactly when usage + spec stays within every limit (no overrun)", () => {
    fc.assert(
      fc.property(
        limitsArb,
        fc.record({
          devices: n(6),
          cpuCores: n(45),
          memoryMB: n(45_000),
          storageMB: n(450_000),
          deviceMinutes: n(3_600),
        }),
        specArb,
        n(1_800),
        fc.boolean(),
        fc.integer({ min: -2, max: 2 }),
        (limits, u, spec, minutes, suspended, validOffset) => {
          const usage: QuotaUsage = {
            devices: u.devices,
            cpuCores: u.cpuCores,
            memoryMB: u.memoryMB,
            storageMB: u.storageMB,
            deviceHours: u.deviceMinutes / 60,
          };
          const hours = minutes / 60;
          const q: QuotaState = { suspended, validUntil: NOW + validOffset, limits };
          const within =
            !suspended &&
            q.validUntil > NOW &&
            usage.devices + 1 <= limits.maxDevices &&
            spec.cpuCores <= limits.maxCpuCoresPerDevice &&
            spec.memoryMB <= limits.maxMemoryMBPerDevice &&
            spec.storageMB <= limits.maxStorageMBPerDevice &&
            usage.cpuCores + spec.cpuCores <= limits.maxCpuCores &&
            usage.memoryMB + spec.memoryMB <= limits.maxMemoryMB &&
            usage.storageMB + spec.storageMB <= limits.maxStorageMB &&
            u.deviceMinutes + minutes <= limits.maxDeviceHoursPerPeriod * 60; // exact, in whole minutes
          const f = checkAllocation(q, usage, spec, hours, NOW);
          expect(f === null).toBe(within);
          if (f) expect([403, 409]).toContain(f.status);
        },
      ),
      { numRuns: 2_000 },
    );
  });

  it("a device of deviceHeadroom's size passes when devices and hours allow; one unit more in any field does not", () => {
    fc.assert(
      fc.property(limitsArb, fc.tuple(n(5), n(45), n(45_000), n(450_000)), (limits, [devices, cpu, mem, sto]) => {
        fc.pre(limits.maxDevices >= 1 && limits.maxDeviceHoursPerPeriod >= 1);
        // Usage within the totals (an over-limit user has no headroom at all: see the test below).
        const usage: QuotaUsage = {
          devices: Math.min(devices, limits.maxDevices - 1),
          cpuCores: Math.min(cpu, limits.maxCpuCores),
          memoryMB: Math.min(mem, limits.maxMemoryMB),
          storageMB: Math.min(sto, limits.maxStorageMB),
          deviceHours: limits.maxDeviceHoursPerPeriod - 1,
        };
        const room = deviceHeadroom(limits, usage);
        expect(checkAllocation({ ...Q, limits }, usage, room, 1, NOW)).toBeNull();
        for (const k of ["cpuCores", "memoryMB", "storageMB"] as const) {
          const f = checkAllocation({ ...Q, limits }, usage, { ...room, [k]: room[k] + 1 }, 1, NOW);
          expect(["QUOTA_PER_DEVICE_EXCEEDED", "QUOTA_TOTAL_EXCEEDED"]).toContain(f?.code);
          expect(f?.details).toMatchObject({ field: k });
        }
      }),
      { numRuns: 1_000 },
    );
  });

  it("deviceHeadroom is never negative and never above a per-device limit, whatever the usage", () => {
    fc.assert(
      fc.property(
        limitsArb,
        fc.record({ devices: n(9), cpuCores: n(90), memoryMB: n(90_000), storageMB: n(900_000), deviceHours: n(99) }),
        (limits, usage) => {
          const room = deviceHeadroom(limits, usage);
          expect(room.cpuCores).toBeGreaterThanOrEqual(0);
          expect(room.memoryMB).toBeGreaterThanOrEqual(0);
          expect(room.storageMB).toBeGreaterThanOrEqual(0);
          expect(room.cpuCores).toBeLessThanOrEqual(limits.maxCpuCoresPerDevice);
          expect(room.memoryMB).toBeLessThanOrEqual(limits.maxMemoryMBPerDevice);
          expect(room.storageMB).toBeLessThanOrEqual(limits.maxStorageMBPerDevice);
        },
      ),
    );
  });
});

describe("extend policy by plan tier", () => {
  const fresh: ExtendState = { extendCount: 0, extendedMinutes: 0, lastExtendedAt: null };

  it("EXTEND_POLICIES are the old system's numbers", () => {
    expect(EXTEND_POLICIES).toEqual({
      free: { maxExtends: 2, maxMinutesPerExtend: 30, maxTotalExtendMinutes: 120, cooldownSeconds: 300 },
      basic: { maxExtends: 5, maxMinutesPerExtend: 60, maxTotalExtendMinutes: 480, cooldownSeconds: 120 },
      pro: { maxExtends: 10, maxMinutesPerExtend: 120, maxTotalExtendMinutes: 1440, cooldownSeconds: 60 },
      enterprise: { maxExtends: null, maxMinutesPerExtend: 240, maxTotalExtendMinutes: null, cooldownSeconds: 0 },
    });
  });

  const table = [
    ["free", 2, 30, 120, 300],
    ["basic", 5, 60, 480, 120],
    ["pro", 10, 120, 1440, 60],
  ] as const;

  for (const [tier, count, each, total, cooldown] of table) {
    describe(`${tier}: ${count} extends, ${each} min each, ${total} min in total, ${cooldown} s apart`, () => {
      const p = EXTEND_POLICIES[tier];

      it("count: the last allowed extend passes, one more is refused", () => {
        expect(checkExtend(p, { ...fresh, extendCount: count - 1 }, 1, NOW)).toBeNull();
        expect(brief(checkExtend(p, { ...fresh, extendCount: count }, 1, NOW))).toEqual({
          ok: false,
          status: 409,
          code: "EXTEND_LIMIT_REACHED",
          details: { maxExtends: count },
        });
        expect(checkExtend(p, { ...fresh, extendCount: count + 1 }, 1, NOW)?.code).toBe("EXTEND_LIMIT_REACHED");
      });

      it("minutes per extend: exactly the maximum passes, one more is refused", () => {
        expect(checkExtend(p, fresh, each, NOW)).toBeNull();
        expect(brief(checkExtend(p, fresh, each + 1, NOW))).toEqual({
          ok: false,
          status: 409,
          code: "EXTEND_TOO_LONG",
          details: { maxMinutesPerExtend: each, requested: each + 1 },
        });
      });

      it("total minutes: reaching the total exactly passes, one minute over is refused", () => {
        expect(checkExtend(p, { ...fresh, extendedMinutes: total - each }, each, NOW)).toBeNull();
        expect(checkExtend(p, { ...fresh, extendedMinutes: total - 1 }, 1, NOW)).toBeNull();
        expect(brief(checkExtend(p, { ...fresh, extendedMinutes: total - each + 1 }, each, NOW))).toEqual({
          ok: false,
          status: 409,
          code: "EXTEND_TOTAL_EXCEEDED",
          details: { maxTotalExtendMinutes: total, used: total - each + 1, requested: each },
        });
        expect(checkExtend(p, { ...fresh, extendedMinutes: total }, 1, NOW)?.code).toBe("EXTEND_TOTAL_EXCEEDED");
      });

      it("cooldown: allowed exactly at readyAt, refused 1 ms before with 429 and retryAfterSeconds", () => {
        const readyAt = NOW; // lastExtendedAt + cooldown
        const last = readyAt - cooldown * 1000;
        expect(checkExtend(p, { ...fresh, extendCount: 1, lastExtendedAt: last }, 1, readyAt)).toBeNull();
        expect(checkExtend(p, { ...fresh, extendCount: 1, lastExtendedAt: last }, 1, readyAt + 1)).toBeNull();
        expect(brief(checkExtend(p, { ...fresh, extendCount: 1, lastExtendedAt: last }, 1, readyAt - 1))).toEqual({
          ok: false,
          status: 429,
          code: "EXTEND_COOLDOWN",
          details: { retryAfterSeconds: 1 },
        });
        expect(brief(checkExtend(p, { ...fresh, extendCount: 1, lastExtendedAt: NOW }, 1, NOW))).toEqual({
          ok: false,
          status: 429,
          code: "EXTEND_COOLDOWN",
          details: { retryAfterSeconds: cooldown },
        });
        expect(checkExtend(p, { ...fresh, extendCount: 1, lastExtendedAt: NOW - 1_500 }, 1, NOW)?.details).toEqual({
          retryAfterSeconds: cooldown - 1,
        });
      });

      it("the count limit is reported before length, total and cooldown", () => {
        const all = { extendCount: count, extendedMinutes: total, lastExtendedAt: NOW };
        expect(checkExtend(p, all, each + 1, NOW)?.code).toBe("EXTEND_LIMIT_REACHED");
        expect(checkExtend(p, { ...all, extendCount: 0 }, each + 1, NOW)?.code).toBe("EXTEND_TOO_LONG");
        expect(checkExtend(p, { ...all, extendCount: 0 }, each, NOW)?.code).toBe("EXTEND_TOTAL_EXCEEDED");
      });
    });
  }

  it("enterprise: never hits a count or total limit, 240 min each, no cooldown", () => {
    const p = EXTEND_POLICIES.enterprise;
    expect(checkExtend(p, fresh, 240, NOW)).toBeNull();
    expect(checkExtend(p, { extendCount: 1_000_000, extendedMinutes: 240_000_000, lastExtendedAt: NOW }, 240, NOW)).toBeNull();
    expect(checkExtend(p, { extendCount: Number.MAX_SAFE_INTEGER, extendedMinutes: 1e12, lastExtendedAt: NOW - 1 }, 1, NOW)).toBeNull();
    expect(brief(checkExtend(p, fresh, 241, NOW))).toEqual({
      ok: false,
      status: 409,
      code: "EXTEND_TOO_LONG",
      details: { maxMinutesPerExtend: 240, requested: 241 },
    });
  });
});

describe("scheduling strategies", () => {
  const nodes: NodeLoad[] = [
    { node: "c", busy: 1, total: 4, free: 3, lastPickedAt: 20 }, // load 0.25
    { node: "a", busy: 2, total: 4, free: 2, lastPickedAt: 10 }, // load 0.5
    { node: "full", busy: 4, total: 4, free: 0, lastPickedAt: 0 },
    { node: "b", busy: 1, total: 4, free: 3, lastPickedAt: 20 }, // load 0.25
    { node: "e", busy: 3, total: 4, free: 1, lastPickedAt: 40 }, // load 0.75
    { node: "empty", busy: 0, total: 0, free: 0, lastPickedAt: 0 },
    { node: "d", busy: 0, total: 2, free: 2, lastPickedAt: 10 }, // load 0
  ];
  const names = (ns: NodeLoad[]) => ns.map((n) => n.node);

  it("least-loaded: smallest busy share first, ties by name, nodes without a free device left out", () => {
    expect(names(orderNodes("least-loaded", nodes))).toEqual(["d", "b", "c", "a", "e"]);
  });
  it("load-first orders nodes as least-loaded does, and is the one strategy that puts the node before size", () => {
    expect(names(orderNodes("load-first", nodes))).toEqual(names(orderNodes("least-loaded", nodes)));
    expect(["least-loaded", "spread", "bin-pack", "load-first"].map((s) => sizeFirst(s as Strategy))).toEqual([true, true, true, false]);
  });
  it("spread: picked longest ago first, then least loaded, then by name", () => {
    expect(names(orderNodes("spread", nodes))).toEqual(["d", "a", "b", "c", "e"]);
  });
  it("bin-pack: the busiest node that still has a free device first, ties by name", () => {
    expect(names(orderNodes("bin-pack", nodes))).toEqual(["e", "a", "b", "c", "d"]);
  });
  it("no node with room: an empty order; the input is not reordered", () => {
    expect(
      orderNodes(
        "least-loaded",
        nodes.filter((n) => n.free === 0),
      ),
    ).toEqual([]);
    expect(orderNodes("spread", [])).toEqual([]);
    const copy = nodes.map((n) => ({ ...n }));
    for (const s of ["least-loaded", "spread", "bin-pack"] as const) orderNodes(s, nodes);
    expect(nodes).toEqual(copy);
  });

  it("fits: min and max bounds are inclusive in every field", () => {
    const d: DeviceSpec = { cpuCores: 4, memoryMB: 4_096, storageMB: 100 };
    const zero: DeviceSpec = { cpuCores: 0, memoryMB: 0, storageMB: 0 };
    const big: DeviceSpec = { cpuCores: 64, memoryMB: 1e6, storageMB: 1e7 };
    expect(fits(d, d, d)).toBe(true);
    expect(fits(d, zero, big)).toBe(true);
    expect(fits(d, { ...zero, cpuCores: 5 }, big)).toBe(false);
    expect(fits(d, { ...zero, memoryMB: 4_097 }, big)).toBe(false);
    expect(fits(d, { ...zero, storageMB: 101 }, big)).toBe(false);
    expect(fits(d, zero, { ...big, cpuCores: 3 })).toBe(false);
    expect(fits(d, zero, { ...big, memoryMB: 4_095 })).toBe(false);
    expect(fits(d, zero, { ...big, storageMB: 99 })).toBe(false);
  });
});

describe("expiry warning", () => {
  it("5 minutes before a long allocation", () => {
    expect(expiryWarningAt(NOW, NOW + 60 * MIN)).toBe(NOW + 55 * MIN);
    expect(expiryWarningAt(NOW, NOW + 1_440 * MIN)).toBe(NOW + 1_435 * MIN);
    expect(expiryWarningAt(NOW, NOW + 10 * MIN)).toBe(NOW + 5 * MIN); // both rules agree
  });
  it("half-way through a shorter one", () => {
    expect(expiryWarningAt(NOW, NOW + 4 * MIN)).toBe(NOW + 2 * MIN);
    expect(expiryWarningAt(NOW, NOW + 9 * MIN)).toBe(NOW + 270_000);
    expect(expiryWarningAt(NOW, NOW + 3)).toBe(NOW + 2); // half rounded down to whole ms
  });
  it("0-length and already-past allocations warn at expiry", () => {
    expect(expiryWarningAt(NOW, NOW)).toBe(NOW);
    expect(expiryWarningAt(NOW, NOW - 1_000)).toBe(NOW - 1_000);
  });
});
