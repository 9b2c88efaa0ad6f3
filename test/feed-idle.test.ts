/**
 * Idle release: an allocation with an idle grace (its own or its pool's) ends with reason
 * `idle`, and is billed, once its holder has had no user feed socket open for the grace;
 * never while one is open; a reconnect within the grace cancels it. Real sockets, real time.
 */
import { abortAllDurableObjects } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, sleep, tokenFor, uid, until } from "./helpers";
import { rawFeed, ticket, type RawFeed } from "./feed-helpers";

const GRACE_MS = 2000;

async function userFeed(token: string): Promise<RawFeed> {
  const f = await rawFeed(`/ws?ticket=${encodeURIComponent(await ticket(token))}`);
  await until(async () => f.frames.length > 0);
  return f;
}

async function closeFeed(f: RawFeed): Promise<number> {
  f.ws.close(1000);
  await f.closed;
  return Date.now();
}

const allocate = (token: string, body: Record<string, unknown>) => call("POST", "/scheduler/devices/allocate", { token, body });
const view = async (token: string, id: string) => (await call("GET", `/scheduler/allocations/${id}`, { token })).body;
const released = (token: string, id: string, timeoutMs = 8000) =>
  until(
    async () => {
      const v = await view(token, id);
      return v.status === "released" && v;
    },
    timeoutMs,
    25,
  );

// Each test has its own pool, user and sockets, and most of their time is the grace running out:
// they run side by side. The restart test aborts every object, so it runs alone, after them.
describe.concurrent("idle release", () => {
  it("stays while any socket is open; released (idle) a grace after the last one closed, not before; billed", async ({ expect }) => {
    const pool = uid("idle");
    const dev = await registerDevice(pool);
    const user = uid("idler");
    const token = await tokenFor(user);
    const [f1, f2] = [await userFeed(token), await userFeed(token)];
    const a = await allocate(token, { pool, durationSeconds: 60, idleReleaseSeconds: 2 });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    expect(a.body.idleReleaseSeconds).toBe(2);
    await sleep(GRACE_MS + 500);
    expect((await view(token, a.body.allocationId)).status).toBe("active");
    // One of two sockets goes: the other keeps it.
    await closeFeed(f1);
    await sleep(GRACE_MS + 500);
    expect((await view(token, a.body.allocationId)).status).toBe("active");

    const gone = await closeFeed(f2);
    await sleep(GRACE_MS - 500);
    const before = await view(token, a.body.allocationId);
    expect(before.status, "still active shortly before the grace ends").toBe("active");
    expect(before.idleReleaseSeconds).toBe(2);
    const v = await released(token, a.body.allocationId);
    expect(v.reason).toBe("idle");
    expect(Date.parse(v.releasedAt) - gone).toBeGreaterThanOrEqual(GRACE_MS - 50);
    expect(Date.parse(v.releasedAt) - gone).toBeLessThan(GRACE_MS + 1000);

    // Billed as usual: one usage record with the reason, one charge; quota and device freed.
    const usage = await until(async () =>
      env.DB.prepare("SELECT * FROM usage_records WHERE allocation_id = ?").bind(a.body.allocationId).first<Record<string, unknown>>(),
    );
    expect(usage).toMatchObject({
      reason: "idle",
      user_id: user,
      device_id: dev.deviceId,
      duration_seconds: v.durationSeconds,
    });
    const charges = await until(async () => {
      const r = await env.DB.prepare("SELECT amount FROM ledger WHERE allocation_id = ? AND kind = 'charge'")
        .bind(a.body.allocationId)
        .all<{ amount: number }>();
      return r.results.length > 0 && r.results;
    });
    expect(charges).toHaveLength(1);
    expect(charges[0]!.amount).toBeLessThan(0);
    expect((await call("GET", `/quotas/user/${user}`, { token })).body.usage.devices).toBe(0);
    const d = await call("GET", `/admin/devices/${dev.deviceId}`, { token: await admin() });
    expect(d.body).toMatchObject({ status: "available", allocation: null });
    // The user's log says why.
    const evs = (await call("GET", "/scheduler/events?limit=200", { token })).body.events as {
      type: string;
      data: Record<string, unknown>;
    }[];
    expect(evs.filter((e) => e.type === "device.released").map((e) => e.data.reason)).toEqual(["idle"]);
  });

  it("a reconnect within the grace cancels it; the clock starts again at the next close", async ({ expect }) => {
    const pool = uid("idle-back");
    await registerDevice(pool);
    const token = await tokenFor(uid("returner"));
    const f1 = await userFeed(token);
    const a = await allocate(token, { pool, durationSeconds: 60, idleReleaseSeconds: 2 });
    expect(a.status).toBe(201);
    await closeFeed(f1);
    await sleep(GRACE_MS / 2);
    const f2 = await userFeed(token);
    await sleep(GRACE_MS + 1000);
    expect((await view(token, a.body.allocationId)).status).toBe("active");
    const gone = await closeFeed(f2);
    const v = await released(token, a.body.allocationId);
    expect(v.reason).toBe("idle");
    expect(Date.parse(v.releasedAt) - gone).toBeGreaterThanOrEqual(GRACE_MS - 50);
    expect(Date.parse(v.releasedAt) - gone).toBeLessThan(GRACE_MS + 1000);
  });

  it("with no socket at all the grace runs from the allocation; without a grace nothing is released", async ({ expect }) => {
    const pool = uid("idle-none");
    await registerDevice(pool);
    await registerDevice(pool);
    const token = await tokenFor(uid("nosocket"));
    const a = await allocate(token, { pool, durationSeconds: 60, idleReleaseSeconds: 2 });
    const plain = await allocate(token, { pool, durationSeconds: 60 });
    expect([a.status, plain.status]).toEqual([201, 201]);
    expect(plain.body.idleReleaseSeconds).toBeUndefined();
    const v = await released(token, a.body.allocationId);
    expect(v.reason).toBe("idle");
    expect(Date.parse(v.releasedAt) - Date.parse(a.body.allocatedAt)).toBeGreaterThanOrEqual(GRACE_MS - 50);
    expect(Date.parse(v.releasedAt) - Date.parse(a.body.allocatedAt)).toBeLessThan(GRACE_MS + 1000);
    await sleep(1000);
    const p = await view(token, plain.body.allocationId);
    expect(p).toMatchObject({ status: "active", idleReleaseSeconds: null });
    await call("POST", "/scheduler/devices/release", { token, body: { deviceId: plain.body.deviceId } });
  });

  it("pool setting: applies to allocations without one, the shorter wins, null turns it off; the summary shows it", async ({ expect }) => {
    const pool = uid("idle-pool");
    for (let i = 0; i < 3; i++) await registerDevice(pool);
    const adminToken = await admin();
    const set = await call("PUT", `/admin/pools/${pool}`, { token: adminToken, body: { idleReleaseSeconds: 2 } });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    expect(set.body).toMatchObject({ pool, strategy: "least-loaded", idleReleaseSeconds: 2 });
    expect((await call("GET", `/admin/pools/${pool}`, { token: adminToken })).body).toMatchObject({
      idleReleaseSeconds: 2,
      idleReleaseMinutes: 2 / 60,
    });

    const token = await tokenFor(uid("pooled"));
    const a = await allocate(token, { pool, durationSeconds: 60 });
    const longer = await allocate(token, { pool, durationSeconds: 60, idleReleaseMinutes: 5 });
    expect([a.status, longer.status]).toEqual([201, 201]);
    expect(a.body.idleReleaseSeconds).toBe(2);
    expect(longer.body.idleReleaseSeconds, "the pool's 2 s is shorter than 5 min").toBe(2);
    for (const x of [a, longer]) expect((await released(token, x.body.allocationId)).reason).toBe("idle");

    const off = await call("PUT", `/admin/pools/${pool}`, { token: adminToken, body: { idleReleaseMinutes: null } });
    expect(off.body).toMatchObject({ idleReleaseSeconds: null, idleReleaseMinutes: null, strategy: "least-loaded" });
    const kept = await allocate(token, { pool, durationSeconds: 60 });
    expect(kept.body.idleReleaseSeconds).toBeUndefined();
    const own = await allocate(token, { pool, durationSeconds: 60, idleReleaseSeconds: 3 });
    expect(own.body.idleReleaseSeconds).toBe(3);
    await sleep(GRACE_MS + 1000);
    expect((await view(token, kept.body.allocationId)).status).toBe("active");
    expect((await released(token, own.body.allocationId)).reason).toBe("idle");

    const minutes = await call("PUT", `/admin/pools/${pool}`, {
      token: adminToken,
      body: { idleReleaseMinutes: 15, strategy: "spread" },
    });
    expect(minutes.body).toMatchObject({ idleReleaseMinutes: 15, idleReleaseSeconds: 900, strategy: "spread" });
    await call("POST", "/scheduler/devices/release", { token, body: { deviceId: kept.body.deviceId } });
  });

  it("the OpenAPI document describes the idle fields", async ({ expect }) => {
    const doc = await call("GET", "/openapi.json");
    expect(doc.status).toBe(200);
    const s = doc.body.components.schemas;
    expect(s.AllocateRequest.properties.idleReleaseMinutes).toMatchObject({
      type: "integer",
      minimum: 1,
      maximum: 1440,
      description: expect.stringContaining("idle"),
    });
    expect(s.AllocateRequest.properties.idleReleaseSeconds.description).toContain("Test-only");
    expect(JSON.stringify(s.PoolSettings.properties.idleReleaseMinutes)).toContain("null");
    expect(s.PoolSettings.properties.idleReleaseMinutes.description).toContain("turns it off");
    expect(s.Allocation.properties.idleReleaseSeconds.description).toEqual(expect.any(String));
  });

  it("bad idle settings are refused with 400 and change nothing", async ({ expect }) => {
    const pool = uid("idle-bad");
    await registerDevice(pool);
    const token = await tokenFor(uid("bad"));
    const adminToken = await admin();
    for (const body of [
      { pool, idleReleaseMinutes: 0 },
      { pool, idleReleaseMinutes: 1441 },
      { pool, idleReleaseMinutes: 1.5 },
      { pool, idleReleaseMinutes: null },
      { pool, idleReleaseSeconds: 0 },
      { pool, idleReleaseMinutes: 5, idleReleaseSeconds: 5 },
    ]) {
      const r = await allocate(token, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.code).toBe("VALIDATION_FAILED");
    }
    for (const body of [
      {},
      { idleReleaseMinutes: 0 },
      { idleReleaseMinutes: "5" },
      { idleReleaseMinutes: 5, idleReleaseSeconds: 5 },
      { idle: 5 },
    ]) {
      const r = await call("PUT", `/admin/pools/${pool}`, { token: adminToken, body });
      expect(r.status, JSON.stringify(body)).toBe(400);
    }
    const s = await call("GET", `/admin/pools/${pool}`, { token: adminToken });
    expect(s.body).toMatchObject({ strategy: "least-loaded", idleReleaseMinutes: null });
    expect((await call("GET", "/scheduler/allocations", { token })).body.items).toEqual([]);
  });
});

describe("idle release across a restart (runs alone: it aborts every object)", () => {
  it("after a restart dropped the sockets without a close event, the alarm's re-check notices: released within two graces", async () => {
    const pool = uid("idle-restart");
    await registerDevice(pool);
    const token = await tokenFor(uid("restarted"));
    const f = await userFeed(token);
    const a = await allocate(token, { pool, durationSeconds: 60, idleReleaseSeconds: 2 });
    expect(a.status).toBe(201);
    await abortAllDurableObjects();
    const restartedAt = Date.now();
    await f.closed;
    // Nothing calls the user's object: its re-check alarm (one grace after the socket was last seen) wakes it.
    const v = await released(token, a.body.allocationId);
    expect(v.reason).toBe("idle");
    expect(Date.parse(v.releasedAt) - restartedAt).toBeGreaterThanOrEqual(GRACE_MS - 100);
    expect(Date.parse(v.releasedAt) - restartedAt).toBeLessThan(2 * GRACE_MS + 1000);
  });
});
