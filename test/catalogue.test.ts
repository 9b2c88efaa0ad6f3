/**
 * GET /scheduler/pools: what a user may rent — each pool's device classes, free now, the first
 * expected free time when none is, the price per hour under their pricing plan, and whether
 * their quota allows one (issue 19).
 */
import { describe, expect, it } from "vitest";
import { priceOf } from "../src/domain/pricing";
import { admin, call, registerDevice, tokenFor, uid } from "./helpers";

type Offer = { cpuCores: number; free: number; devices: number; nextFreeAt: string | null; pricePerHourMinor: number } & Record<
  string,
  unknown
>;
const offers = async (token: string, pool: string) => {
  const r = await call("GET", "/scheduler/pools", { token });
  expect(r.status).toBe(200);
  return { body: r.body, pool: r.body.items.find((p: { pool: string }) => p.pool === pool) as { free: number; classes: Offer[] } };
};

describe("the catalogue", () => {
  it("lists each class with its free count, price and the quota's verdict; none free → when the first frees", async () => {
    const pool = uid("cat");
    const small = { cpuCores: 2, memoryMB: 4096, storageMB: 32768 };
    const big = { cpuCores: 8, memoryMB: 16384, storageMB: 65536 };
    const s1 = await registerDevice(pool, small);
    await registerDevice(pool, small);
    const b1 = await registerDevice(pool, big);
    const user = uid("u");
    const token = await tokenFor(user);

    const first = await offers(token, pool);
    expect(first.pool.free).toBe(3);
    expect(first.pool.classes.map((k) => [k.cpuCores, k.devices, k.free, k.nextFreeAt])).toEqual([
      [2, 2, 2, null],
      [8, 1, 1, null],
    ]);
    // A new user is on the free tier: 4 cores per device at most.
    expect(first.pool.classes[0]).toMatchObject({ allowed: true, refusal: null, currency: first.body.currency });
    expect(first.pool.classes[1]).toMatchObject({ allowed: false, refusal: { code: "QUOTA_PER_DEVICE_EXCEEDED" } });
    const plans = await call("GET", "/billing/pricing-plans", { token });
    const plan = plans.body.items.find((p: { pricingPlanId: string }) => p.pricingPlanId === first.body.pricingPlanId);
    const rates = {
      basePerSecond: plan.baseMicrosPerSecond,
      cpuCorePerSecond: plan.cpuCoreMicrosPerSecond,
      memoryGBPerSecond: plan.memoryGBMicrosPerSecond,
      storageGBPerSecond: plan.storageGBMicrosPerSecond,
    };
    expect(first.pool.classes[0]!.pricePerHourMinor).toBe(priceOf(rates, small, 3600));
    expect(first.pool.classes[1]!.pricePerHourMinor).toBe(priceOf(rates, big, 3600));

    // Both small devices held (the sooner one ends in 30 minutes); the big one in maintenance.
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, spec: { cpuCores: 2 }, durationMinutes: 30 } });
    const other = await tokenFor(uid("u"));
    const b = await call("POST", "/scheduler/devices/allocate", {
      token: other,
      body: { pool, spec: { cpuCores: 2 }, durationMinutes: 90 },
    });
    expect([a.status, b.status]).toEqual([201, 201]);
    expect(a.body.deviceId === s1.deviceId || b.body.deviceId === s1.deviceId).toBe(true);
    expect((await call("POST", `/admin/devices/${b1.deviceId}/maintenance`, { token: await admin() })).status).toBe(200);

    const held = await offers(token, pool);
    expect(held.pool.free).toBe(0);
    expect(held.pool.classes).toHaveLength(1);
    expect(held.pool.classes[0]).toMatchObject({ cpuCores: 2, devices: 2, free: 0, nextFreeAt: a.body.expiresAt });
  });

  it("a suspended user sees every class refused, with the reason allocate would give", async () => {
    const pool = uid("cat");
    await registerDevice(pool, { cpuCores: 2 });
    const user = uid("u");
    expect((await call("PUT", `/quotas/user/${user}?create=true`, { token: await admin(), body: { suspended: true } })).status).toBe(200);
    const { pool: p } = await offers(await tokenFor(user), pool);
    expect(p.classes).toEqual([expect.objectContaining({ allowed: false, refusal: expect.objectContaining({ code: "QUOTA_SUSPENDED" }) })]);
  });

  it("needs a signed-in user", async () => {
    expect((await call("GET", "/scheduler/pools")).status).toBe(401);
  });
});
