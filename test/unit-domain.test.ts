/** Plain unit tests of the pure rules: quota checks, extend policy, strategies, expiry warning. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EXTEND_POLICIES, PLAN_LIMITS, type QuotaLimits } from "../src/config";
import { checkExtend } from "../src/domain/extend";
import { expiryWarningAt } from "../src/domain/expiry";
import { checkAllocation, checkExtraHours, deviceHeadroom, limitReached, periodStartFor, quotaStatus, renewedUntil, type QuotaState } from "../src/domain/quota";
import { compareFit, fits, orderNodes, type NodeLoad } from "../src/domain/strategy";
import type { QuotaUsage } from "../src/domain/types";

const NOW = Date.UTC(2026, 10, 21, 12, 0, 0);
const LIMITS: QuotaLimits = {
  maxDevices: 3, maxCpuCores: 10, maxMemoryMB: 10_000, maxStorageMB: 100_000,
  maxCpuCoresPerDevice: 4, maxMemoryMBPerDevice: 4_000, maxStorageMBPerDevice: 50_000, maxDeviceHoursPerPeriod: 10,
};
const Q: QuotaState = { suspended: false, validUntil: NOW + 86_400_000, limits: LIMITS };
const USAGE: QuotaUsage = { devices: 0, cpuCores: 0, memoryMB: 0, storageMB: 0, deviceHours: 0 };
const SPEC = { cpuCores: 2, memoryMB: 2_000, storageMB: 10_000 };

describe("checkAllocation", () => {
  it("allows a request within every limit", () => {
    expect(checkAllocation(Q, USAGE, SPEC, 1, NOW)).toBeNull();
  });

  it("checks in order: status, validUntil, devices, per-device, totals, hours", () => {
    const everything = { ...USAGE, devices: 3, cpuCores: 10, deviceHours: 10 };
    const big = { cpuCores: 8, memoryMB: 8_000, storageMB: 60_000 };
    expect(checkAllocation({ ...Q, suspended: true, validUntil: NOW - 1 }, everything, big, 99, NOW)).toMatchObject({ status: 403, code: "QUOTA_SUSPENDED" });
    expect(checkAllocation({ ...Q, validUntil: NOW }, everything, big, 99, NOW)).toMatchObject({ status: 403, code: "QUOTA_EXPIRED" });
    expect(checkAllocation(Q, everything, big, 99, NOW)).toMatchObject({ status: 409, code: "QUOTA_DEVICES_EXCEEDED" });
    expect(checkAllocation(Q, { ...everything, devices: 2 }, big, 99, NOW)).toMatchObject({ code: "QUOTA_PER_DEVICE_EXCEEDED", details: { field: "cpuCores" } });
    expect(checkAllocation(Q, { ...everything, devices: 2 }, SPEC, 99, NOW)).toMatchObject({ code: "QUOTA_TOTAL_EXCEEDED", details: { field: "cpuCores" } });
    expect(checkAllocation(Q, { ...USAGE, deviceHours: 10 }, SPEC, 0.5, NOW)).toMatchObject({ code: "QUOTA_HOURS_EXCEEDED" });
  });

  it("allows exactly reaching each limit and refuses one over", () => {
    expect(checkAllocation(Q, { ...USAGE, devices: 2 }, SPEC, 1, NOW)).toBeNull();
    expect(checkAllocation(Q, USAGE, { ...SPEC, cpuCores: 4 }, 1, NOW)).toBeNull();
    expect(checkAllocation(Q, USAGE, { ...SPEC, cpuCores: 5 }, 1, NOW)?.code).toBe("QUOTA_PER_DEVICE_EXCEEDED");
    expect(checkAllocation(Q, USAGE, { ...SPEC, memoryMB: 4_001 }, 1, NOW)?.details).toMatchObject({ field: "memoryMB", limit: 4_000 });
    expect(checkAllocation(Q, USAGE, { ...SPEC, storageMB: 50_001 }, 1, NOW)?.details).toMatchObject({ field: "storageMB" });
    expect(checkAllocation(Q, { ...USAGE, cpuCores: 8 }, SPEC, 1, NOW)).toBeNull();
    expect(checkAllocation(Q, { ...USAGE, cpuCores: 9 }, SPEC, 1, NOW)?.code).toBe("QUOTA_TOTAL_EXCEEDED");
    expect(checkAllocation(Q, { ...USAGE, memoryMB: 8_001 }, SPEC, 1, NOW)?.details).toMatchObject({ field: "memoryMB" });
    expect(checkAllocation(Q, { ...USAGE, storageMB: 90_001 }, SPEC, 1, NOW)?.details).toMatchObject({ field: "storageMB" });
    expect(checkAllocation(Q, { ...USAGE, deviceHours: 9 }, SPEC, 1, NOW)).toBeNull();
    expect(checkAllocation(Q, { ...USAGE, deviceHours: 9 }, SPEC, 1.01, NOW)?.code).toBe("QUOTA_HOURS_EXCEEDED");
    expect(checkAllocation({ ...Q, validUntil: NOW + 1 }, USAGE, SPEC, 1, NOW)).toBeNull();
  });

  it("never lets usage plus a request pass a limit (property)", () => {
    const n = (max: number) => fc.integer({ min: 0, max });
    fc.assert(
      fc.property(
        fc.record({ maxDevices: n(5), maxCpuCores: n(40), maxMemoryMB: n(40_000), maxStorageMB: n(400_000), maxCpuCoresPerDevice: n(16), maxMemoryMBPerDevice: n(16_000), maxStorageMBPerDevice: n(160_000), maxDeviceHoursPerPeriod: n(50) }),
        fc.record({ devices: n(6), cpuCores: n(45), memoryMB: n(45_000), storageMB: n(450_000), deviceHours: n(60) }),
        fc.record({ cpuCores: n(20), memoryMB: n(20_000), storageMB: n(200_000) }),
        n(30),
        (limits, usage, spec, hours) => {
          const q = { suspended: false, validUntil: NOW + 1, limits };
          if (checkAllocation(q, usage, spec, hours, NOW) !== null) return;
          expect(usage.devices + 1).toBeLessThanOrEqual(limits.maxDevices);
          expect(usage.cpuCores + spec.cpuCores).toBeLessThanOrEqual(limits.maxCpuCores);
          expect(usage.memoryMB + spec.memoryMB).toBeLessThanOrEqual(limits.maxMemoryMB);
          expect(usage.storageMB + spec.storageMB).toBeLessThanOrEqual(limits.maxStorageMB);
          expect(spec.cpuCores).toBeLessThanOrEqual(limits.maxCpuCoresPerDevice);
          expect(usage.deviceHours + hours).toBeLessThanOrEqual(limits.maxDeviceHoursPerPeriod);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("a device of the headroom's size passes the per-device and total checks (property)", () => {
    const n = (max: number) => fc.integer({ min: 0, max });
    fc.assert(
      fc.property(n(40), n(40), n(16), (maxCpu, used, perDevice) => {
        const limits = { ...LIMITS, maxDevices: 100, maxCpuCores: maxCpu, maxCpuCoresPerDevice: perDevice };
        const usage = { ...USAGE, cpuCores: Math.min(used, maxCpu) };
        const room = deviceHeadroom(limits, usage);
        expect(room.cpuCores).toBeGreaterThanOrEqual(0);
        expect(checkAllocation({ ...Q, limits }, usage, { cpuCores: room.cpuCores, memoryMB: 0, storageMB: 0 }, 0, NOW)).toBeNull();
      }),
    );
  });
});

describe("quota status and periods", () => {
  it("status: suspended, then expired, then exceeded, else active", () => {
    expect(quotaStatus({ ...Q, suspended: true, validUntil: 0 }, USAGE, NOW)).toBe("suspended");
    expect(quotaStatus({ ...Q, validUntil: NOW }, USAGE, NOW)).toBe("expired");
    expect(quotaStatus(Q, { ...USAGE, devices: 3 }, NOW)).toBe("exceeded");
    expect(quotaStatus(Q, { ...USAGE, devices: 2, cpuCores: 9 }, NOW)).toBe("active");
  });

  it("limitReached looks at every dimension", () => {
    expect(limitReached(LIMITS, USAGE)).toBe(false);
    for (const k of ["devices", "cpuCores", "memoryMB", "storageMB", "deviceHours"] as const) {
      const at = { devices: 3, cpuCores: 10, memoryMB: 10_000, storageMB: 100_000, deviceHours: 10 }[k];
      expect(limitReached(LIMITS, { ...USAGE, [k]: at })).toBe(true);
      expect(limitReached(LIMITS, { ...USAGE, [k]: at - 1 })).toBe(false);
    }
  });

  it("headroom is the smaller of per-device and remaining totals, never negative", () => {
    expect(deviceHeadroom(LIMITS, USAGE)).toEqual({ cpuCores: 4, memoryMB: 4_000, storageMB: 50_000 });
    expect(deviceHeadroom(LIMITS, { ...USAGE, cpuCores: 8, memoryMB: 9_500, storageMB: 100_000 })).toEqual({ cpuCores: 2, memoryMB: 500, storageMB: 0 });
    expect(deviceHeadroom(LIMITS, { ...USAGE, cpuCores: 12 })).toMatchObject({ cpuCores: 0 });
  });

  it("periods are calendar months in UTC", () => {
    expect(periodStartFor(NOW)).toBe(Date.UTC(2026, 10, 1));
    expect(periodStartFor(Date.UTC(2026, 11, 31, 23, 59, 59, 999))).toBe(Date.UTC(2026, 11, 1));
    expect(periodStartFor(Date.UTC(2027, 0, 1))).toBe(Date.UTC(2027, 0, 1));
    expect(periodStartFor(Date.UTC(2028, 1, 29, 10))).toBe(Date.UTC(2028, 1, 1));
  });

  it("renewal extends from the old end, or from now once expired", () => {
    expect(renewedUntil(NOW + 1_000, 30, NOW)).toBe(NOW + 1_000 + 30 * 86_400_000);
    expect(renewedUntil(NOW - 5_000, 30, NOW)).toBe(NOW + 30 * 86_400_000);
    expect(renewedUntil(NOW, 1, NOW)).toBe(NOW + 86_400_000);
  });

  it("extra hours of an extension obey status, validity and the period's hours", () => {
    expect(checkExtraHours(Q, { ...USAGE, deviceHours: 9 }, 1, NOW)).toBeNull();
    expect(checkExtraHours(Q, { ...USAGE, deviceHours: 9.5 }, 1, NOW)?.code).toBe("QUOTA_HOURS_EXCEEDED");
    expect(checkExtraHours({ ...Q, suspended: true }, USAGE, 1, NOW)?.code).toBe("QUOTA_SUSPENDED");
    expect(checkExtraHours({ ...Q, validUntil: NOW }, USAGE, 1, NOW)?.code).toBe("QUOTA_EXPIRED");
  });

  it("plans grow with the tier", () => {
    const tiers = ["free", "basic", "pro", "enterprise"] as const;
    for (let i = 1; i < tiers.length; i++) {
      for (const k of Object.keys(PLAN_LIMITS.free) as (keyof QuotaLimits)[]) expect(PLAN_LIMITS[tiers[i]!][k]).toBeGreaterThanOrEqual(PLAN_LIMITS[tiers[i - 1]!][k]);
    }
  });
});

describe("extend policy by tier", () => {
  const fresh = { extendCount: 0, extendedMinutes: 0, lastExtendedAt: null };
  const table = [
    ["free", 2, 30, 120, 300],
    ["basic", 5, 60, 480, 120],
    ["pro", 10, 120, 1440, 60],
  ] as const;

  for (const [tier, count, each, total, cooldown] of table) {
    it(`${tier}: ${count} extends, ${each} min each, ${total} min in total, ${cooldown} s apart`, () => {
      const p = EXTEND_POLICIES[tier];
      expect(checkExtend(p, fresh, each, NOW)).toBeNull();
      expect(checkExtend(p, fresh, each + 1, NOW)).toMatchObject({ status: 409, code: "EXTEND_TOO_LONG" });
      expect(checkExtend(p, { ...fresh, extendCount: count - 1 }, 1, NOW)).toBeNull();
      expect(checkExtend(p, { ...fresh, extendCount: count }, 1, NOW)).toMatchObject({ code: "EXTEND_LIMIT_REACHED" });
      expect(checkExtend(p, { ...fresh, extendedMinutes: total - 1 }, 1, NOW)).toBeNull();
      expect(checkExtend(p, { ...fresh, extendedMinutes: total - 1 }, 2, NOW)).toMatchObject({ code: "EXTEND_TOTAL_EXCEEDED" });
      const last = NOW - cooldown * 1000;
      expect(checkExtend(p, { ...fresh, extendCount: 1, lastExtendedAt: last }, 1, NOW)).toBeNull();
      expect(checkExtend(p, { ...fresh, extendCount: 1, lastExtendedAt: last + 1 }, 1, NOW)).toMatchObject({
        status: 429, code: "EXTEND_COOLDOWN", details: { retryAfterSeconds: 1 },
      });
    });
  }

  it("enterprise: unlimited count and total, 240 min each, no cooldown", () => {
    const p = EXTEND_POLICIES.enterprise;
    expect(checkExtend(p, { extendCount: 10_000, extendedMinutes: 1e7, lastExtendedAt: NOW }, 240, NOW)).toBeNull();
    expect(checkExtend(p, fresh, 241, NOW)?.code).toBe("EXTEND_TOO_LONG");
  });
});

describe("scheduling strategies", () => {
  const nodes: NodeLoad[] = [
    { node: "c", busy: 1, total: 4, free: 3, lastPickedAt: 30 },
    { node: "a", busy: 2, total: 4, free: 2, lastPickedAt: 10 },
    { node: "b", busy: 1, total: 4, free: 3, lastPickedAt: 20 },
    { node: "full", busy: 4, total: 4, free: 0, lastPickedAt: 0 },
  ];
  const names = (ns: NodeLoad[]) => ns.map((n) => n.node);

  it("least-loaded: smallest busy share first, ties by name, full nodes left out", () => {
    expect(names(orderNodes("least-loaded", nodes))).toEqual(["b", "c", "a"]);
  });
  it("spread: the node picked longest ago first", () => {
    expect(names(orderNodes("spread", nodes))).toEqual(["a", "b", "c"]);
  });
  it("bin-pack: the busiest node with room first", () => {
    expect(names(orderNodes("bin-pack", nodes))).toEqual(["a", "b", "c"]);
  });
  it("does not reorder its input", () => {
    const copy = nodes.map((n) => ({ ...n }));
    orderNodes("least-loaded", nodes);
    expect(nodes).toEqual(copy);
  });

  it("fits: inclusive of both bounds", () => {
    const d = { cpuCores: 4, memoryMB: 4096, storageMB: 100 };
    expect(fits(d, d, d)).toBe(true);
    expect(fits(d, { ...d, cpuCores: 5 }, { ...d, cpuCores: 8 })).toBe(false);
    expect(fits(d, { cpuCores: 0, memoryMB: 0, storageMB: 0 }, { ...d, memoryMB: 4095 })).toBe(false);
  });

  it("compareFit: smallest device first, then by id", () => {
    const list = [
      { deviceId: "z", cpuCores: 2, memoryMB: 2, storageMB: 2 },
      { deviceId: "b", cpuCores: 1, memoryMB: 9, storageMB: 9 },
      { deviceId: "a", cpuCores: 2, memoryMB: 2, storageMB: 2 },
    ];
    expect(list.sort(compareFit).map((d) => d.deviceId)).toEqual(["b", "a", "z"]);
  });
});

describe("expiry warning", () => {
  it("5 minutes before a long allocation, half-way through a short one", () => {
    expect(expiryWarningAt(NOW, NOW + 60 * 60_000)).toBe(NOW + 55 * 60_000);
    expect(expiryWarningAt(NOW, NOW + 4 * 60_000)).toBe(NOW + 2 * 60_000);
    expect(expiryWarningAt(NOW, NOW)).toBe(NOW);
  });
});
