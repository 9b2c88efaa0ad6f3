/**
 * Invariants 1 and 2 under concurrency storms: a device never has two allocations, and
 * a user's active allocations never exceed any quota limit.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, tokenFor, uid } from "./helpers";

describe("invariant 1: at most one active allocation per device", () => {
  it("50 users race for one free device: exactly one wins, the rest get 409 NO_DEVICE_AVAILABLE", async () => {
    const pool = uid("solo");
    const dev = await registerDevice(pool);
    const users = Array.from({ length: 50 }, () => uid("racer"));
    const results = await Promise.all(
      users.map(async (u) =>
        call("POST", "/scheduler/devices/allocate", { token: await tokenFor(u), body: { pool, durationMinutes: 10 } }),
      ),
    );
    const wins = results.filter((r) => r.status === 201);
    expect(wins).toHaveLength(1);
    expect(wins[0]!.body.deviceId).toBe(dev.deviceId);
    for (const r of results.filter((r) => r.status !== 201)) {
      expect(r.status).toBe(409);
      expect(r.body.error.code).toBe("NO_DEVICE_AVAILABLE");
      expect(typeof r.body.error.message).toBe("string");
    }
    // The device and every user agree: one holder, and nobody else holds quota.
    const d = await call("GET", `/admin/devices/${dev.deviceId}`, { token: await admin() });
    expect(d.body.allocation.userId).toBe(wins[0]!.body.userId);
    const usages = await Promise.all(users.map((u) => env.USER_QUOTA.getByName(u).getQuota(u)));
    expect(usages.reduce((s, q) => s + q.usage.devices, 0)).toBe(1);
  });

  it("50 concurrent claims straight at the Device object: exactly one succeeds", async () => {
    const pool = uid("direct");
    const dev = await registerDevice(pool);
    const stub = env.DEVICE.getByName(dev.deviceId);
    const zero = { cpuCores: 0, memoryMB: 0, storageMB: 0 };
    const big = { cpuCores: 1e6, memoryMB: 1e9, storageMB: 1e9 };
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        stub.claim({ allocationId: `alc-direct-${i}`, userId: `u${i}`, pool, min: zero, max: big, durationMs: 60_000 }),
      ),
    );
    expect(results.filter((r) => r.ok)).toHaveLength(1);
    expect(results.filter((r) => !r.ok).every((r) => (r as { code?: string }).code === "DEVICE_BUSY")).toBe(true);
  });

  it("a storm over a small pool never gives one device to two users", async () => {
    const pool = uid("storm");
    const devices = await Promise.all(Array.from({ length: 5 }, (_, i) => registerDevice(pool, { node: `n${i % 2}` })));
    const users = Array.from({ length: 40 }, () => uid("stormer"));
    const results = await Promise.all(
      users.map(async (u) => call("POST", "/scheduler/devices/allocate", { token: await tokenFor(u), body: { pool, durationMinutes: 5 } })),
    );
    const wins = results.filter((r) => r.status === 201);
    expect(wins).toHaveLength(5);
    expect(new Set(wins.map((w) => w.body.deviceId)).size).toBe(5);
    expect(new Set(wins.map((w) => w.body.deviceId))).toEqual(new Set(devices.map((d) => d.deviceId)));
    // Release and re-race: still one holder per device.
    await Promise.all(
      wins.map(async (w) =>
        call("POST", "/scheduler/devices/release", {
          token: await tokenFor(w.body.userId),
          body: { deviceId: w.body.deviceId },
        }),
      ),
    );
    const again = await Promise.all(
      users.map(async (u) => call("POST", "/scheduler/devices/allocate", { token: await tokenFor(u), body: { pool, durationMinutes: 5 } })),
    );
    const wins2 = again.filter((r) => r.status === 201);
    expect(wins2).toHaveLength(5);
    expect(new Set(wins2.map((w) => w.body.deviceId)).size).toBe(5);
  });
});

describe("invariant 2: quota is never exceeded", () => {
  it("200 concurrent allocations by one user stop exactly at maxDevices", async () => {
    const pool = uid("quota");
    await Promise.all(Array.from({ length: 12 }, (_, i) => registerDevice(pool, { node: `n${i % 3}` })));
    const user = uid("greedy");
    const set = await call("PUT", `/quotas/user/${user}?create=true`, {
      token: await admin(),
      body: { tier: "pro", limits: { maxDevices: 7 } },
    });
    expect(set.status).toBe(200);
    const token = await tokenFor(user);
    const results = await Promise.all(
      Array.from({ length: 200 }, () => call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 5 } })),
    );
    const wins = results.filter((r) => r.status === 201);
    expect(wins).toHaveLength(7);
    expect(new Set(wins.map((w) => w.body.deviceId)).size).toBe(7);
    for (const r of results.filter((r) => r.status !== 201)) {
      expect(r.status).toBe(409);
      expect(r.body.error.code).toBe("QUOTA_DEVICES_EXCEEDED");
    }
    const q = await call("GET", `/quotas/user/${user}`, { token });
    expect(q.body.usage.devices).toBe(7);
    expect(q.body.status).toBe("exceeded");
    const list = await call("GET", "/scheduler/allocations?status=active&limit=200", { token });
    expect(list.body.items).toHaveLength(7);
    // quota.exceeded was said once, not once per refused request.
    const ev = await call("GET", "/scheduler/events?limit=200", { token });
    expect(ev.body.events.filter((e: { type: string }) => e.type === "quota.exceeded")).toHaveLength(1);
  });

  it("total cpu, memory and device-hours limits hold under a storm", async () => {
    const pool = uid("totals");
    await Promise.all(
      Array.from({ length: 10 }, (_, i) => registerDevice(pool, { node: `n${i % 2}`, cpuCores: 4, memoryMB: 4096, storageMB: 1000 })),
    );
    const user = uid("cpu");
    await call("PUT", `/quotas/user/${user}?create=true`, {
      token: await admin(),
      body: {
        limits: {
          maxDevices: 100,
          maxCpuCores: 10,
          maxCpuCoresPerDevice: 8,
          maxMemoryMB: 1e6,
          maxMemoryMBPerDevice: 1e5,
          maxStorageMB: 1e6,
          maxDeviceHoursPerPeriod: 1000,
        },
      },
    });
    const token = await tokenFor(user);
    const results = await Promise.all(
      Array.from({ length: 60 }, () => call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 60 } })),
    );
    expect(results.filter((r) => r.status === 201)).toHaveLength(2); // 2 × 4 cores ≤ 10 < 3 × 4
    const q = (await call("GET", `/quotas/user/${user}`, { token })).body;
    expect(q.usage.cpuCores).toBe(8);

    const hoursUser = uid("hours");
    await call("PUT", `/quotas/user/${hoursUser}?create=true`, {
      token: await admin(),
      body: { limits: { maxDevices: 100, maxCpuCores: 1000, maxDeviceHoursPerPeriod: 3 } },
    });
    const t2 = await tokenFor(hoursUser);
    const r2 = await Promise.all(
      Array.from({ length: 30 }, () => call("POST", "/scheduler/devices/allocate", { token: t2, body: { pool, durationMinutes: 60 } })),
    );
    const won = r2.filter((r) => r.status === 201).length;
    expect(won).toBeLessThanOrEqual(3);
    expect(r2.filter((r) => r.status === 409 && r.body.error.code === "QUOTA_HOURS_EXCEEDED").length + won).toBeGreaterThanOrEqual(30 - 8);
    const q2 = (await call("GET", `/quotas/user/${hoursUser}`, { token: t2 })).body;
    expect(q2.usage.deviceHours).toBeLessThanOrEqual(3);
  });
});
