/**
 * The waiting queue (on the pool object): hand-over at once, order by priority then arrival
 * under concurrency, no device given twice, quota checked at hand-over, max-wait expiry,
 * cancellation, priority rules and the wait estimate. Real objects, alarms and feeds.
 */
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, sleep, tokenFor, uid, until } from "./helpers";
import { iso } from "../src/domain/time";

const join = (token: string, body: Record<string, unknown>) => call("POST", "/scheduler/queue/join", { token, body });
const entry = async (token: string, id: string) => (await call("GET", `/scheduler/queue/${id}`, { token })).body;
const events = async (token: string) =>
  (await call("GET", "/scheduler/events?since=0", { token })).body.events as { type: string; data: any }[];
const allocate = (token: string, body: Record<string, unknown>) => call("POST", "/scheduler/devices/allocate", { token, body });

/** A pool with one device, held by a fresh user for `seconds` (the queue waits behind it). */
async function busyPool(prefix: string, seconds = 60) {
  const pool = uid(prefix);
  const dev = await registerDevice(pool);
  const holder = await tokenFor(uid("holder"));
  const held = await allocate(holder, { pool, durationSeconds: seconds });
  expect(held.status, JSON.stringify(held.body)).toBe(201);
  return { pool, deviceId: dev.deviceId, holder };
}

async function setPlan(userId: string, tier: string) {
  const r = await call("PUT", `/quotas/user/${userId}?create=true`, { token: await admin(), body: { tier } });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
}

describe.concurrent("queue: joining", () => {
  it("a free fitting device is handed over before join returns, with queue.fulfilled and device.allocated on the feed", async ({
    expect,
  }) => {
    const pool = uid("q-free");
    const dev = await registerDevice(pool);
    const user = uid("q-free-user");
    const token = await tokenFor(user);
    const r = await join(token, { pool, durationMinutes: 5 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({
      status: "fulfilled",
      deviceId: dev.deviceId,
      userId: user,
      priority: 0,
      priorityName: "standard",
      position: null,
    });
    expect(r.body.entryId).toMatch(/^que_/);
    const alloc = await call("GET", `/scheduler/allocations/${r.body.allocationId}`, { token });
    expect(alloc.body).toMatchObject({ status: "active", deviceId: dev.deviceId });
    const log = await until(async () => {
      const ev = await events(token);
      return ev.some((e) => e.type === "queue.fulfilled") ? ev : null;
    });
    expect(log.filter((e) => e.type === "device.allocated")).toHaveLength(1);
    expect(log.find((e) => e.type === "queue.fulfilled")!.data).toMatchObject({
      entryId: r.body.entryId,
      allocationId: r.body.allocationId,
      deviceId: dev.deviceId,
    });
  });

  it("waits behind a busy device with position 1 and an estimate from the device's real expiry", async ({ expect }) => {
    const { pool } = await busyPool("q-est", 120);
    const token = await tokenFor(uid("q-est-user"));
    const r = await join(token, { pool, durationMinutes: 10 });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ status: "waiting", position: 1 });
    // The holder's allocation ends in ~120 s: the estimate says so, not "position × 30 minutes".
    expect(r.body.estimatedWaitSeconds).toBeGreaterThan(100);
    expect(r.body.estimatedWaitSeconds).toBeLessThanOrEqual(121);
    const second = await join(await tokenFor(uid("q-est-2")), { pool, durationMinutes: 10 });
    expect(second.body.position).toBe(2);
    // Behind the first entry's 10 minutes on the only device.
    expect(second.body.estimatedWaitSeconds).toBeGreaterThan(r.body.estimatedWaitSeconds + 590);
    const pos = await call("GET", `/scheduler/queue/${second.body.entryId}/position`, { token: await admin() });
    expect(pos.body.position).toBe(2);
  });

  it("refuses what could never be served or is not allowed, and changes nothing", async ({ expect }) => {
    const { pool } = await busyPool("q-refuse");
    const user = uid("q-refuse-user");
    const token = await tokenFor(user);
    const huge = await join(token, { pool, spec: { cpuCores: 4 } }); // the pool's only device has 2 cores
    expect(huge.status).toBe(409);
    expect(huge.body.error.code).toBe("NO_MATCHING_DEVICE");
    const vip = await join(token, { pool, priority: 3 }); // free plan: standard (0)
    expect(vip.status).toBe(403);
    expect(vip.body.error.code).toBe("PRIORITY_NOT_ALLOWED");
    const other = await join(token, { pool, userId: uid("someone") });
    expect(other.status).toBe(403);
    const long = await join(token, { pool, maxWaitMinutes: 121 });
    expect(long.status).toBe(400);
    const noPool = await join(token, { pool: uid("nowhere") });
    expect(noPool.status).toBe(404);
    const list = await call("GET", `/scheduler/queue?pool=${pool}`, { token });
    expect(list.body.items).toEqual([]);
    // An admin may queue for the user at any priority.
    const byAdmin = await join(await admin(), { pool, userId: user, priority: 3 });
    expect(byAdmin.status).toBe(201);
    expect(byAdmin.body).toMatchObject({
      userId: user,
      priority: 3,
      priorityName: "enterprise",
      createdBy: "root-admin",
    });
  });

  it("ids do not leak: another user's entry and forged ids are 404", async ({ expect }) => {
    const { pool } = await busyPool("q-leak");
    const a = await tokenFor(uid("q-leak-a"));
    const r = await join(a, { pool });
    const b = await tokenFor(uid("q-leak-b"));
    for (const path of [
      `/scheduler/queue/${r.body.entryId}`,
      "/scheduler/queue/que_Zm9v_000000000000000000000000",
      "/scheduler/queue/nonsense",
    ]) {
      const got = await call("GET", path, { token: b });
      expect(got.status, path).toBe(404);
      expect(got.body.error.code).toBe("QUEUE_ENTRY_NOT_FOUND");
    }
    expect((await call("DELETE", `/scheduler/queue/${r.body.entryId}`, { token: b })).status).toBe(404);
    expect((await entry(a, r.body.entryId)).status).toBe("waiting");
  });
});

describe.concurrent("queue: hand-over order and exclusivity", () => {
  it("under a concurrent storm of joins, devices go by priority then arrival, each to one entry at a time", async ({ expect }) => {
    const { pool, deviceId } = await busyPool("q-storm", 2);
    const plans = ["free", "basic", "pro", "enterprise"] as const;
    const users = Array.from({ length: 12 }, (_, i) => ({ id: uid(`q-storm-${i}`), plan: plans[i % 4]! }));
    await Promise.all(users.map((u) => setPlan(u.id, u.plan)));
    const tokens = await Promise.all(users.map((u) => tokenFor(u.id)));
    const joined = await Promise.all(users.map((_, i) => join(tokens[i]!, { pool, durationSeconds: 1, maxWaitMinutes: 10 })));
    for (const r of joined) expect(r.status, JSON.stringify(r.body)).toBe(201);
    // Positions right after the storm: a permutation, higher priority always ahead.
    const views = await Promise.all(joined.map((r, i) => entry(tokens[i]!, r.body.entryId)));
    const waiting = views.filter((v) => v.status === "waiting" || v.status === "offered");
    expect(waiting.length).toBeGreaterThanOrEqual(11);
    const byPosition = [...waiting].sort((a, b) => a.position - b.position);
    expect(byPosition.map((v) => v.position)).toEqual(byPosition.map((_, i) => i + 1 + (12 - waiting.length)));
    for (let i = 1; i < byPosition.length; i++) {
      expect(byPosition[i - 1]!.priority).toBeGreaterThanOrEqual(byPosition[i]!.priority);
      if (byPosition[i - 1]!.priority === byPosition[i]!.priority)
        expect(byPosition[i - 1]!.joinedAt <= byPosition[i]!.joinedAt).toBe(true);
    }
    // Each 1-second allocation expires and hands the device on: everyone is served in that order.
    const served = await until(
      async () => {
        const all = await Promise.all(joined.map((r, i) => entry(tokens[i]!, r.body.entryId)));
        return all.every((v) => v.status === "fulfilled") ? all : null;
      },
      40_000,
      250,
    );
    const allocations = await Promise.all(
      served.map(async (v, i) => (await call("GET", `/scheduler/allocations/${v.allocationId}`, { token: tokens[i]! })).body),
    );
    expect(new Set(allocations.map((a) => a.allocationId)).size).toBe(12);
    for (const a of allocations) expect(a.deviceId).toBe(deviceId);
    const order = allocations
      .map((a, i) => ({ at: Date.parse(a.allocatedAt as string), entry: served[i]!.entryId as string }))
      .sort((x, y) => x.at - y.at)
      .map((x) => x.entry);
    const expected = [...views].sort((a, b) => (a.position ?? 0) - (b.position ?? 0)).map((v) => v.entryId);
    expect(order).toEqual(expected);
    // Never two allocations on the device at once.
    const hist = await call("GET", `/admin/devices/${deviceId}/history?limit=50`, { token: await admin() });
    const spans = (hist.body.items as { allocatedAt: string; releasedAt: string }[])
      .map((s) => ({ allocatedAt: Date.parse(s.allocatedAt), releasedAt: Date.parse(s.releasedAt) }))
      .sort((a, b) => a.allocatedAt - b.allocatedAt);
    for (let i = 1; i < spans.length; i++) expect(spans[i]!.allocatedAt).toBeGreaterThanOrEqual(spans[i - 1]!.releasedAt);
  });

  it("a freed device goes to the queue, not to a newcomer's direct allocation; another pool device is untouched", async ({ expect }) => {
    const { pool, deviceId, holder } = await busyPool("q-fair");
    const waiter = await tokenFor(uid("q-fair-w"));
    const w = await join(waiter, { pool, durationMinutes: 5 });
    expect(w.body.status).toBe("waiting");
    const newcomer = await tokenFor(uid("q-fair-n"));
    const rel = await call("POST", "/scheduler/devices/release", { token: holder, body: { deviceId } });
    expect(rel.status).toBe(200);
    // Race a direct allocation against the hand-over: the queue wins (the device is offered to the entry).
    const direct = await allocate(newcomer, { pool, durationMinutes: 5 });
    const served = await until(async () => {
      const v = await entry(waiter, w.body.entryId);
      return v.status === "fulfilled" ? v : null;
    });
    expect(served.deviceId).toBe(deviceId);
    expect(direct.status).toBe(409);
    expect(direct.body.error.code).toBe("NO_DEVICE_AVAILABLE");
  });

  it("a device coming back into service goes to the head of the queue", async ({ expect }) => {
    const pool = uid("q-back");
    const dev = await registerDevice(pool);
    const adm = await admin();
    expect((await call("POST", `/admin/devices/${dev.deviceId}/maintenance`, { token: adm })).status).toBe(200);
    // A device in maintenance still counts as the pool's, but the join must find one in service: register a busy twin.
    const twin = await registerDevice(pool);
    const holder = await tokenFor(uid("q-back-h"));
    expect((await allocate(holder, { pool, durationMinutes: 30 })).body.deviceId).toBe(twin.deviceId);
    const token = await tokenFor(uid("q-back-u"));
    const w = await join(token, { pool, durationMinutes: 5 });
    expect(w.body.status).toBe("waiting");
    expect((await call("POST", `/admin/devices/${dev.deviceId}/online`, { token: adm })).status).toBe(200);
    const served = await until(async () => {
      const v = await entry(token, w.body.entryId);
      return v.status === "fulfilled" ? v : null;
    });
    expect(served.deviceId).toBe(dev.deviceId);
  });
});

describe.concurrent("queue: checks at hand-over, expiry and cancellation", () => {
  it("quota is checked at hand-over: a user suspended while waiting fails with queue.failed, and the next entry gets the device", async ({
    expect,
  }) => {
    const { pool, deviceId } = await busyPool("q-quota", 2);
    const first = uid("q-quota-1");
    const t1 = await tokenFor(first);
    const t2 = await tokenFor(uid("q-quota-2"));
    const e1 = await join(t1, { pool, durationMinutes: 5 });
    const e2 = await join(t2, { pool, durationMinutes: 5 });
    expect([e1.body.position, e2.body.position]).toEqual([1, 2]);
    const susp = await call("PUT", `/quotas/user/${first}?create=true`, { token: await admin(), body: { suspended: true } });
    expect(susp.status).toBe(200);
    const second = await until(async () => {
      const v = await entry(t2, e2.body.entryId);
      return v.status === "fulfilled" ? v : null;
    }, 15_000);
    expect(second.deviceId).toBe(deviceId);
    const failed = await entry(t1, e1.body.entryId);
    expect(failed).toMatchObject({ status: "failed", allocationId: null, error: { code: "QUOTA_SUSPENDED" } });
    const log = await until(async () => {
      const ev = await events(t1);
      return ev.some((e) => e.type === "queue.failed") ? ev : null;
    });
    expect(log.find((e) => e.type === "queue.failed")!.data.error.code).toBe("QUOTA_SUSPENDED");
    expect(log.some((e) => e.type === "device.allocated")).toBe(false);
    expect((await call("GET", `/quotas/user/${first}`, { token: t1 })).body.usage.devices).toBe(0);
  });

  it("an entry past its max wait expires with queue.expired and is never served", async ({ expect }) => {
    const { pool, deviceId, holder } = await busyPool("q-expire");
    const token = await tokenFor(uid("q-expire-u"));
    const w = await join(token, { pool, durationMinutes: 5, maxWaitSeconds: 1 });
    expect(w.body.status).toBe("waiting");
    const expired = await until(async () => {
      const v = await entry(token, w.body.entryId);
      return v.status === "expired" ? v : null;
    }, 10_000);
    expect(expired.position).toBeNull();
    const log = await until(async () => {
      const ev = await events(token);
      return ev.some((e) => e.type === "queue.expired") ? ev : null;
    });
    expect(log.find((e) => e.type === "queue.expired")!.data.entryId).toBe(w.body.entryId);
    // The device frees later: nobody is waiting, so it stays free.
    await call("POST", "/scheduler/devices/release", { token: holder, body: { deviceId } });
    await sleep(300);
    expect((await entry(token, w.body.entryId)).status).toBe("expired");
    const free = await call("GET", `/scheduler/devices/available?pool=${pool}`, { token });
    expect(free.body.items.map((d: { deviceId: string }) => d.deviceId)).toEqual([deviceId]);
  });

  it("a cancelled entry is skipped; cancelling twice is a clear 409", async ({ expect }) => {
    const { pool, deviceId, holder } = await busyPool("q-cancel");
    const t1 = await tokenFor(uid("q-cancel-1"));
    const t2 = await tokenFor(uid("q-cancel-2"));
    const e1 = await join(t1, { pool });
    const e2 = await join(t2, { pool });
    const c = await call("DELETE", `/scheduler/queue/${e1.body.entryId}`, { token: t1 });
    expect(c.status).toBe(200);
    expect(c.body.status).toBe("cancelled");
    const again = await call("DELETE", `/scheduler/queue/${e1.body.entryId}`, { token: t1 });
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe("QUEUE_ENTRY_CLOSED");
    expect((await entry(t2, e2.body.entryId)).position).toBe(1);
    await call("POST", "/scheduler/devices/release", { token: holder, body: { deviceId } });
    const served = await until(async () => {
      const v = await entry(t2, e2.body.entryId);
      return v.status === "fulfilled" ? v : null;
    });
    expect(served.deviceId).toBe(deviceId);
    expect((await entry(t1, e1.body.entryId)).status).toBe("cancelled");
  });

  it("a device held by a reservation window is passed over until the reservation is cancelled; then the queue gets it at once", async ({
    expect,
  }) => {
    const pool = uid("q-window");
    const dev = await registerDevice(pool);
    const booker = await tokenFor(uid("q-window-b"));
    const r = await call("POST", "/scheduler/reservations", {
      token: booker,
      body: { pool, startAt: iso(Date.now() + 10 * 60_000), durationMinutes: 30 },
    });
    expect(r.body.deviceId).toBe(dev.deviceId);
    const token = await tokenFor(uid("q-window-u"));
    // An hour would run into the window: wait. (Five minutes would not, and is served at once.)
    const long = await join(token, { pool, durationMinutes: 60 });
    expect(long.body.status).toBe("waiting");
    const cancel = await call("DELETE", `/scheduler/reservations/${r.body.reservationId}`, { token: booker });
    expect(cancel.status).toBe(200);
    const served = await until(async () => {
      const v = await entry(token, long.body.entryId);
      return v.status === "fulfilled" ? v : null;
    }, 5_000);
    expect(served.deviceId).toBe(dev.deviceId);
  });
});
