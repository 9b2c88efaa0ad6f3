/**
 * The device feed (GET /ws/devices/:deviceId): who may watch, what the holder and admins see,
 * that a device passing to another user never shows the new holder's events to the old one
 * (invariant 6), clean closes, and operator events on the admin feed. Real sockets, no mocks.
 */
import { runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, sleep, tokenFor, uid, until } from "./helpers";
import { events, rawFeed, ticket, type RawFeed } from "./feed-helpers";
import type { DeviceFeedState, Envelope, HelloData } from "../src/feed/protocol";
import { mintTicket, scopeOf } from "../src/feed/tickets";

async function deviceFeed(token: string, deviceId: string, since?: number): Promise<RawFeed> {
  const t = await ticket(token, { feed: "device", deviceId });
  return rawFeed(`/ws/devices/${deviceId}?ticket=${encodeURIComponent(t)}${since === undefined ? "" : `&since=${since}`}`);
}

/** A device feed opened with a ticket minted here, for a device the ticket route would refuse (404: unknown). */
async function unknownDeviceFeed(deviceId: string): Promise<RawFeed> {
  const t = await mintTicket(env, { userId: "root-admin", role: "admin" }, scopeOf("device", deviceId));
  return rawFeed(`/ws/devices/${deviceId}?ticket=${encodeURIComponent(t.ticket)}`);
}

async function hello(f: RawFeed): Promise<HelloData & { state: DeviceFeedState }> {
  await until(async () => f.frames.length > 0);
  expect(f.frames[0]!.type).toBe("feed.hello");
  return f.frames[0]!.data as HelloData & { state: DeviceFeedState };
}

const logged = (f: RawFeed) => f.frames.filter((e) => e.seq !== null);
const allocate = (token: string, body: Record<string, unknown>) => call("POST", "/scheduler/devices/allocate", { token, body });

describe("device feed", () => {
  it("the holder sees allocated, expiring, extended and released, then a clean close (1000)", async () => {
    const pool = uid("df");
    const dev = await registerDevice(pool);
    const user = uid("holder");
    const token = await tokenFor(user);
    const a = await allocate(token, { pool, durationSeconds: 4 });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    // Confirmed before allocate returned: since=0 replays it.
    const f = await deviceFeed(token, dev.deviceId, 0);
    const h = await hello(f);
    expect(h.feed).toBe("device");
    expect(h.state).toMatchObject({
      deviceId: dev.deviceId,
      pool,
      status: "allocated",
      allocation: {
        allocationId: a.body.allocationId,
        userId: user,
        state: "active",
        allocatedAt: a.body.allocatedAt,
        expiresAt: a.body.expiresAt,
      },
    });
    expect(h.state.allocation!.secondsLeft).toBeGreaterThanOrEqual(0);
    expect(h.state.allocation!.secondsLeft).toBeLessThanOrEqual(4);

    // The warning comes at half of a short allocation (~2 s).
    const first = await events(f.frames, 2, 5000);
    expect(first.map((e) => e.type)).toEqual(["device.allocated", "device.expiring"]);
    const x = await call("PUT", `/scheduler/allocations/${a.body.allocationId}/extend`, {
      token,
      body: { additionalMinutes: 1 },
    });
    expect(x.status, JSON.stringify(x.body)).toBe(200);
    await events(f.frames, 3);
    const r = await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } });
    expect(r.status).toBe(200);

    expect(await f.closed).toEqual({ code: 1000, reason: "allocation ended" });
    const got = logged(f);
    expect(got.map((e) => e.type)).toEqual(["device.allocated", "device.expiring", "device.extended", "device.released"]);
    for (const e of got) {
      expect(e.userId).toBe(user);
      expect((e.data as { allocationId: string }).allocationId).toBe(a.body.allocationId);
      expect(Object.keys(e).sort()).toEqual(["data", "seq", "timestamp", "type", "userId"]);
    }
    expect(got.map((e) => e.seq)).toEqual([1, 2, 3, 4].map((n) => got[0]!.seq! + n - 1));
    expect(got[1]!.data).toMatchObject({ deviceId: dev.deviceId, expiresAt: a.body.expiresAt });
    expect(got[2]!.data).toMatchObject({
      additionalMinutes: 1,
      extendCount: 1,
      extendedMinutes: 1,
      expiresAt: x.body.expiresAt,
      deviceId: dev.deviceId,
      pool,
    });
    expect(got[3]!.data).toMatchObject({
      deviceId: dev.deviceId,
      pool,
      reason: "released",
      allocatedAt: a.body.allocatedAt,
      releasedAt: r.body.releasedAt,
      durationSeconds: r.body.durationSeconds,
    });
  });

  it("refuses a user who does not hold the device (4403), an unknown device (4404) and a ticket for another device (4401)", async () => {
    const pool = uid("df-deny");
    const dev = await registerDevice(pool);
    const other = await registerDevice(pool);
    const holder = await tokenFor(uid("holder"));
    const stranger = await tokenFor(uid("stranger"));
    // Nobody holds it yet: a user may not watch a free device.
    const free = await deviceFeed(stranger, dev.deviceId);
    expect((await free.closed).code).toBe(4403);
    const a = await allocate(holder, { pool, durationMinutes: 5 });
    expect(a.status).toBe(201);
    const held = a.body.deviceId as string;

    const denied = await deviceFeed(stranger, held);
    expect((await denied.closed).code).toBe(4403);
    expect(denied.frames[0]).toMatchObject({ type: "feed.error", seq: null, data: { code: "FORBIDDEN" } });
    expect(denied.frames.filter((e) => e.seq !== null)).toEqual([]);

    // An unknown device gets no ticket (404), and a ticket minted anyway opens nothing (4404).
    const nobody = uid("no-such-device");
    const refused = await call("POST", "/ws/ticket", { token: await admin(), body: { feed: "device", deviceId: nobody } });
    expect(refused.status).toBe(404);
    expect(refused.body.error.code).toBe("DEVICE_NOT_FOUND");
    const unknown = await unknownDeviceFeed(nobody);
    expect((await unknown.closed).code).toBe(4404);
    expect(unknown.frames[0]).toMatchObject({ type: "feed.error", data: { code: "DEVICE_NOT_FOUND" } });

    // A ticket names its device: it opens that one only, whoever holds it.
    const freeOne = held === dev.deviceId ? other.deviceId : dev.deviceId;
    const t = await ticket(holder, { feed: "device", deviceId: freeOne });
    const crossed = await rawFeed(`/ws/devices/${held}?ticket=${encodeURIComponent(t)}`);
    expect((await crossed.closed).code).toBe(4401);
    expect(crossed.frames[0]).toMatchObject({ type: "feed.error", data: { code: "TICKET_INVALID" } });

    // The holder's own ticket works once.
    const ht = await ticket(holder, { feed: "device", deviceId: held });
    const ok = await rawFeed(`/ws/devices/${held}?ticket=${encodeURIComponent(ht)}`);
    await hello(ok);
    const again = await rawFeed(`/ws/devices/${held}?ticket=${encodeURIComponent(ht)}`);
    expect((await again.closed).code).toBe(4401);
    ok.ws.close(1000);
  });

  it("after the device passes from A to B, A's socket got nothing of B's; admins see both", async () => {
    const pool = uid("df-pass");
    const dev = await registerDevice(pool); // the only device: B gets the one A had
    const [ua, ub] = [uid("a"), uid("b")];
    const [ta, tb] = [await tokenFor(ua), await tokenFor(ub)];
    const adminFeed = await deviceFeed(await admin(), dev.deviceId, 0);
    const adminHello = await hello(adminFeed);
    expect(adminHello.state.allocation).toBeNull();

    const a = await allocate(ta, { pool, durationMinutes: 5 });
    expect(a.status).toBe(201);
    const fa = await deviceFeed(ta, dev.deviceId, 0);
    await events(fa.frames, 1);
    expect((await call("POST", "/scheduler/devices/release", { token: ta, body: { deviceId: dev.deviceId } })).status).toBe(200);
    expect((await fa.closed).code).toBe(1000);

    const b = await allocate(tb, { pool, durationMinutes: 5 });
    expect(b.status).toBe(201);
    expect(b.body.deviceId).toBe(dev.deviceId);
    // A no longer holds it: refused.
    const late = await deviceFeed(ta, dev.deviceId, 0);
    expect((await late.closed).code).toBe(4403);
    // B's replay from 0 holds only B's events (A's are in the device log too).
    const fb = await deviceFeed(tb, dev.deviceId, 0);
    const hb = await hello(fb);
    expect(hb.state.allocation).toMatchObject({ allocationId: b.body.allocationId, userId: ub });
    await events(fb.frames, 1);
    const x = await call("PUT", `/scheduler/allocations/${b.body.allocationId}/extend`, {
      token: tb,
      body: { additionalMinutes: 1 },
    });
    expect(x.status).toBe(200);
    await events(fb.frames, 2);
    expect((await call("POST", "/scheduler/devices/release", { token: tb, body: { deviceId: dev.deviceId } })).status).toBe(200);
    expect((await fb.closed).code).toBe(1000);

    const adminEvents = await events(adminFeed.frames, 5);
    await sleep(200);
    const byAlloc = (f: RawFeed, id: string) =>
      logged(f)
        .filter((e) => (e.data as { allocationId?: string }).allocationId === id)
        .map((e) => e.type);
    expect(byAlloc(adminFeed, a.body.allocationId)).toEqual(["device.allocated", "device.released"]);
    expect(byAlloc(adminFeed, b.body.allocationId)).toEqual(["device.allocated", "device.extended", "device.released"]);
    expect(adminEvents.length).toBe(5);

    const hasB = (e: Envelope) => e.userId === ub || JSON.stringify(e).includes(ub) || JSON.stringify(e).includes(b.body.allocationId);
    const hasA = (e: Envelope) => e.userId === ua || JSON.stringify(e).includes(ua) || JSON.stringify(e).includes(a.body.allocationId);
    expect(fa.frames.filter(hasB)).toEqual([]);
    expect(late.frames.filter(hasB)).toEqual([]);
    expect(logged(fa).map((e) => e.type)).toEqual(["device.allocated", "device.released"]);
    expect(fb.frames.filter(hasA)).toEqual([]);
    expect(logged(fb).map((e) => e.type)).toEqual(["device.allocated", "device.extended", "device.released"]);
    // Admins keep their socket when an allocation ends.
    expect(adminFeed.closeInfo).toBeNull();
    adminFeed.ws.close(1000);
  });

  it("maintenance ends the holder's feed and publishes device.status to the admin feed once", async () => {
    const pool = uid("df-maint");
    const dev = await registerDevice(pool);
    const user = uid("maint");
    const token = await tokenFor(user);
    const adminToken = await admin();
    const ops = await rawFeed(`/ws/admin?ticket=${encodeURIComponent(await ticket(adminToken, { feed: "admin" }))}`);
    await until(async () => ops.frames.length > 0);
    const a = await allocate(token, { pool, durationMinutes: 5 });
    expect(a.status).toBe(201);
    const f = await deviceFeed(token, dev.deviceId);
    const watcher = await deviceFeed(adminToken, dev.deviceId);
    await hello(f);
    await hello(watcher);

    expect((await call("POST", `/admin/devices/${dev.deviceId}/maintenance`, { token: adminToken })).status).toBe(200);
    expect(await f.closed).toEqual({ code: 1000, reason: "allocation ended" });
    expect(logged(f).map((e) => e.type)).toEqual(["device.released", "device.status"]);
    expect(logged(f)[0]!.data).toMatchObject({ reason: "maintenance", allocationId: a.body.allocationId });

    const statusOnOps = () =>
      logged(ops).filter((e) => e.type === "device.status" && (e.data as { deviceId: string }).deviceId === dev.deviceId);
    await until(async () => statusOnOps().length === 1);
    // Nothing new: a repeat of maintenance, and the device's alarm run again (the outbox is empty).
    expect((await call("POST", `/admin/devices/${dev.deviceId}/maintenance`, { token: adminToken })).status).toBe(200);
    await runDurableObjectAlarm(env.DEVICE.getByName(dev.deviceId));
    await sleep(300);
    expect(statusOnOps()).toHaveLength(1);
    const e = statusOnOps()[0]!;
    expect(e.userId).toBe(user);
    expect(e.data).toEqual({
      deviceId: dev.deviceId,
      pool,
      node: dev.node,
      status: "maintenance",
      previousStatus: "allocated",
      endedAllocationId: a.body.allocationId,
      reason: null, // none given (issue 20: a reason is carried when given)
    });

    // Back online: one more, about nobody's allocation.
    expect((await call("POST", `/admin/devices/${dev.deviceId}/online`, { token: adminToken })).status).toBe(200);
    await until(async () => statusOnOps().length === 2);
    expect(statusOnOps()[1]).toMatchObject({
      userId: "",
      data: { status: "available", previousStatus: "maintenance", endedAllocationId: null },
    });
    // The admin watching the device saw it all and is still connected.
    await until(async () => logged(watcher).length === 3);
    expect(logged(watcher).map((x) => x.type)).toEqual(["device.released", "device.status", "device.status"]);
    expect(watcher.closeInfo).toBeNull();
    watcher.ws.close(1000);
    ops.ws.close(1000);
  });

  it("removing the device closes every socket with 4410; then the device is unknown (4404)", async () => {
    const pool = uid("df-rm");
    const dev = await registerDevice(pool);
    const user = uid("rm");
    const token = await tokenFor(user);
    const adminToken = await admin();
    expect((await allocate(token, { pool, durationMinutes: 5 })).status).toBe(201);
    const f = await deviceFeed(token, dev.deviceId);
    const w = await deviceFeed(adminToken, dev.deviceId);
    await hello(f);
    await hello(w);
    expect((await call("DELETE", `/admin/devices/${dev.deviceId}`, { token: adminToken })).status).toBe(200);
    expect((await f.closed).code).toBe(4410);
    expect((await w.closed).code).toBe(4410);
    expect(logged(f).map((e) => e.type)).toEqual(["device.released", "device.status"]);
    expect(logged(w).map((e) => e.type)).toEqual(["device.released", "device.status"]);
    expect(logged(w)[1]!.data).toMatchObject({ status: "removed", previousStatus: "allocated" });
    const refused = await call("POST", "/ws/ticket", { token: adminToken, body: { feed: "device", deviceId: dev.deviceId } });
    expect(refused.body.error?.code).toBe("DEVICE_NOT_FOUND");
    const after = await unknownDeviceFeed(dev.deviceId);
    expect((await after.closed).code).toBe(4404);
  });
});
