/** offerOf (src/domain/catalogue.ts): a class's price and the quota's verdict, pure. */
import { describe, expect, it } from "vitest";
import { PLAN_LIMITS } from "../../src/config";
import { offerOf } from "../../src/domain/catalogue";
import { priceOf } from "../../src/domain/pricing";
import type { Quota } from "../../src/domain/types";

const NOW = Date.UTC(2030, 0, 1);
const rates = { basePerSecond: 100, cpuCorePerSecond: 10, memoryGBPerSecond: 5, storageGBPerSecond: 1 };
const usage = { devices: 0, cpuCores: 0, memoryMB: 0, storageMB: 0, deviceHours: 0 };
const quota = (over: Partial<Quota> = {}): Quota => ({
  userId: "u",
  plan: "free",
  status: "active",
  suspended: false,
  validUntil: NOW + 86_400_000,
  limits: PLAN_LIMITS.free,
  periodStart: NOW - 86_400_000,
  usage,
  updatedAt: NOW,
  ...over,
});
const small = { cpuCores: 2, memoryMB: 4096, storageMB: 32768 };

describe("offerOf", () => {
  it("prices an hour as a charge is rounded, and allows what the quota allows", () => {
    const o = offerOf({ ...small, devices: 2, free: 1, nextFreeAt: NOW + 60_000 }, rates, quota(), NOW);
    expect(o.pricePerHourMinor).toBe(priceOf(rates, small, 3600));
    expect(o.refusal).toBeNull();
    expect(o.nextFreeAt).toBeNull(); // one is free: no waiting time to tell
  });

  it("says when none is free, and why the quota refuses: over the per-device limit, no devices left, suspended, expired", () => {
    const none = { ...small, devices: 1, free: 0, nextFreeAt: NOW + 60_000 };
    expect(offerOf(none, rates, quota(), NOW).nextFreeAt).toBe(NOW + 60_000);
    const huge = { cpuCores: PLAN_LIMITS.free.maxCpuCoresPerDevice + 1, memoryMB: 1, storageMB: 1, devices: 1, free: 1, nextFreeAt: null };
    expect(offerOf(huge, rates, quota(), NOW).refusal?.code).toBe("QUOTA_PER_DEVICE_EXCEEDED");
    const full = quota({ usage: { ...usage, devices: PLAN_LIMITS.free.maxDevices } });
    expect(offerOf(none, rates, full, NOW).refusal?.code).toBe("QUOTA_DEVICES_EXCEEDED");
    expect(offerOf(none, rates, quota({ suspended: true }), NOW).refusal?.code).toBe("QUOTA_SUSPENDED");
    expect(offerOf(none, rates, quota({ validUntil: NOW - 1 }), NOW).refusal?.code).toBe("QUOTA_EXPIRED");
  });
});
