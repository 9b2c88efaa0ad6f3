/**
 * Invariant 4: an expired allocation is released within about a second of `expiresAt`,
 * also after the objects were evicted or crashed; expiry restores quota, frees the device,
 * warns once before, and yields a usage record.
 */
import { abortAllDurableObjects, evictDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, tokenFor, uid, until } from "./helpers";

interface Ev {
  seq: number;
  type: string;
  data: Record<string, any>;
  timestamp: string;
}

async function events(token: string): Promise<Ev[]> {
  return (await call("GET", "/scheduler/events?limit=200", { token })).body.events;
}

async function releasedEvent(token: string, allocationId: string, timeoutMs = 8000): Promise<Ev> {
  return until(
    async () => (await events(token)).find((e) => e.type === "device.released" && e.data.allocationId === allocationId),
    timeoutMs,
    25,
  );
}

// Each test has its own pool and user and mostly waits for its allocation to expire: they run side
// by side. The tests that abort every object run alone, after them.
describe.concurrent("invariant 4: expiry by alarm", () => {
  it("still releases on time when each of its objects is evicted (restarted) repeatedly before expiry", async ({ expect }) => {
    const pool = uid("evict");
    const dev = await registerDevice(pool);
    const user = uid("evicted");
    const token = await tokenFor(user);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationSeconds: 3 } });
    expect(a.status).toBe(201);
    // Only this test's objects restart, so the others run on beside it. Eviction refuses an object
    // that is not running, so each round first wakes all three with a read.
    const stubs = [env.USER_QUOTA.getByName(user), env.DEVICE.getByName(dev.deviceId), env.DEVICE_POOL.getByName(pool)];
    for (let i = 0; i < 4; i++) {
      await call("GET", `/quotas/user/${user}`, { token });
      await call("GET", `/admin/devices/${dev.deviceId}`, { token: await admin() });
      await call("GET", `/admin/pools/${pool}`, { token: await admin() });
      for (const stub of stubs) await evictDurableObject(stub as DurableObjectStub);
      await new Promise((r) => setTimeout(r, 500));
    }
    const ev = await releasedEvent(token, a.body.allocationId);
    expect(ev.data.reason).toBe("expired");
    expect(Date.parse(ev.timestamp) - Date.parse(a.body.expiresAt), "lag ms").toBeLessThan(1000);
    expect((await call("GET", `/quotas/user/${user}`, { token })).body.usage.devices).toBe(0);
    const d = await call("GET", `/admin/devices/${dev.deviceId}`, { token: await admin() });
    expect(d.body).toMatchObject({ status: "available", allocation: null });
  });

  it("releases on time, restores quota, frees the device and writes one usage record", async ({ expect }) => {
    const pool = uid("exp");
    const dev = await registerDevice(pool);
    const user = uid("short");
    const token = await tokenFor(user);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationSeconds: 2 } });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    const expiresAt = Date.parse(a.body.expiresAt);
    const busy = await call("GET", `/quotas/user/${user}`, { token });
    expect(busy.body.usage.devices).toBe(1);

    const ev = await releasedEvent(token, a.body.allocationId);
    expect(ev.data.reason).toBe("expired");
    const lag = Date.parse(ev.timestamp) - expiresAt;
    expect(lag).toBeGreaterThanOrEqual(0);
    expect(lag).toBeLessThan(1000);
    expect(ev.data.durationSeconds).toBe(2); // billed up to expiresAt, not the alarm's lag

    const q = await call("GET", `/quotas/user/${user}`, { token });
    expect(q.body.usage.devices).toBe(0);
    expect(q.body.usage.cpuCores).toBe(0);
    const one = await call("GET", `/scheduler/allocations/${a.body.allocationId}`, { token });
    expect(one.body.status).toBe("released");
    expect(one.body.reason).toBe("expired");

    // The device is free again for someone else.
    const b = await call("POST", "/scheduler/devices/allocate", {
      token: await tokenFor(uid("next")),
      body: { pool, durationMinutes: 1 },
    });
    expect(b.status).toBe(201);
    expect(b.body.deviceId).toBe(dev.deviceId);

    const row = await until(async () =>
      env.DB.prepare("SELECT * FROM usage_records WHERE allocation_id = ?").bind(a.body.allocationId).first<Record<string, unknown>>(),
    );
    expect(row.duration_seconds).toBe(2);
    expect(row.reason).toBe("expired");
    expect(row.user_id).toBe(user);
  });

  it("warns once with device.expiring before releasing", async ({ expect }) => {
    const pool = uid("warn");
    await registerDevice(pool);
    const user = uid("warned");
    const token = await tokenFor(user);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationSeconds: 3 } });
    expect(a.status).toBe(201);
    await releasedEvent(token, a.body.allocationId);
    const all = await events(token);
    const warnings = all.filter((e) => e.type === "device.expiring");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.data.allocationId).toBe(a.body.allocationId);
    // Warned before the release, about half-way through a short allocation.
    const released = all.find((e) => e.type === "device.released")!;
    expect(warnings[0]!.seq).toBeLessThan(released.seq);
    expect(Date.parse(warnings[0]!.timestamp)).toBeLessThan(Date.parse(a.body.expiresAt));
    // One envelope for every event.
    for (const e of all) expect(Object.keys(e).sort()).toEqual(["data", "seq", "timestamp", "type", "userId"]);
  });

  it("an extension moves the expiry; a forced release ends it and restores quota", async ({ expect }) => {
    const pool = uid("ext");
    const dev = await registerDevice(pool);
    const user = uid("extender");
    const token = await tokenFor(user);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationSeconds: 2 } });
    const x = await call("PUT", `/scheduler/allocations/${a.body.allocationId}/extend`, {
      token,
      body: { additionalMinutes: 1 },
    });
    expect(x.status, JSON.stringify(x.body)).toBe(200);
    expect(Date.parse(x.body.expiresAt) - Date.parse(a.body.expiresAt)).toBe(60_000);
    expect(x.body.extendCount).toBe(1);
    await new Promise((r) => setTimeout(r, 3000));
    const still = await call("GET", `/scheduler/allocations/${a.body.allocationId}`, { token });
    expect(still.body.status).toBe("active");
    // Free plan: a second extension inside the 300 s cooldown is refused and changes nothing.
    const again = await call("PUT", `/scheduler/allocations/${a.body.allocationId}/extend`, {
      token,
      body: { additionalMinutes: 1 },
    });
    expect(again.status).toBe(429);
    expect(again.body.error.code).toBe("EXTEND_COOLDOWN");
    const f = await call("POST", `/admin/devices/${dev.deviceId}/force-release`, { token: await admin() });
    expect(f.status).toBe(200);
    expect(f.body.reason).toBe("force_released");
    const q = await call("GET", `/quotas/user/${user}`, { token });
    expect(q.body.usage.devices).toBe(0);
    const evs = await events(token);
    expect(evs.filter((e) => e.type === "device.released" && e.data.reason === "force_released")).toHaveLength(1);
  });
});

describe("invariant 4: expiry across crashes (runs alone: these abort every object)", () => {
  it("still releases on time when every object is restarted repeatedly before expiry", async () => {
    const pool = uid("restart");
    const dev = await registerDevice(pool);
    const user = uid("restarted");
    const token = await tokenFor(user);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationSeconds: 3 } });
    expect(a.status).toBe(201);
    for (let i = 0; i < 4; i++) {
      await abortAllDurableObjects();
      await new Promise((r) => setTimeout(r, 500));
    }
    const ev = await releasedEvent(token, a.body.allocationId);
    expect(ev.data.reason).toBe("expired");
    expect(Date.parse(ev.timestamp) - Date.parse(a.body.expiresAt), "lag ms").toBeLessThan(1000);
    expect((await call("GET", `/quotas/user/${user}`, { token })).body.usage.devices).toBe(0);
    const d = await call("GET", `/admin/devices/${dev.deviceId}`, { token: await admin() });
    expect(d.body.status).toBe("available");
    expect(d.body.allocation).toBeNull();
  });

  it("still releases on time after all objects crashed (aborted)", async () => {
    const pool = uid("crash");
    await registerDevice(pool);
    const user = uid("crashed");
    const token = await tokenFor(user);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationSeconds: 2 } });
    expect(a.status).toBe(201);
    await abortAllDurableObjects();
    const ev = await releasedEvent(token, a.body.allocationId);
    expect(ev.data.reason).toBe("expired");
    expect(Date.parse(ev.timestamp) - Date.parse(a.body.expiresAt), "lag ms").toBeLessThan(1000);
    expect((await call("GET", `/quotas/user/${user}`, { token })).body.usage.devices).toBe(0);
  });
});
