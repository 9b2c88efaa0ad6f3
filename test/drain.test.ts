/**
 * Drain (issue 20): maintenance or offline with `drain: true` lets the running allocation reach
 * its end — no new claims, no extension past the deadline — and then changes the status; the
 * `reason` is kept, shown, sent on the admin feed (and the holder's feeds) and audited.
 */
import { runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, tokenFor, uid, until } from "./helpers";
import { rawFeed, ticket } from "./feed-helpers";

const allocate = (token: string, body: Record<string, unknown>) => call("POST", "/scheduler/devices/allocate", { token, body });
const device = async (id: string) => (await call("GET", `/admin/devices/${id}`, { token: await admin() })).body;
const setStatus = async (id: string, status: string, body?: Record<string, unknown>) =>
  call("POST", `/admin/devices/${id}/${status}`, { token: await admin(), ...(body ? { body } : {}) });

async function held(durationMinutes = 30) {
  const pool = uid("drain");
  const dev = await registerDevice(pool);
  const user = uid("holder");
  const token = await tokenFor(user);
  const a = await allocate(token, { pool, durationMinutes });
  expect(a.status, JSON.stringify(a.body)).toBe(201);
  return { pool, dev, user, token, a: a.body };
}

describe("drain", () => {
  it("the allocation runs on; no extension; at its release the device goes to maintenance with the reason", async () => {
    const { pool, dev, user, token, a } = await held();
    const adminFeed = await rawFeed(`/ws/admin?ticket=${encodeURIComponent(await ticket(await admin(), { feed: "admin" }))}`);
    const userFeed = await rawFeed(`/ws?ticket=${encodeURIComponent(await ticket(token))}`);
    const r = await setStatus(dev.deviceId, "maintenance", { drain: true, reason: "battery swap" });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({
      status: "allocated",
      ended: null,
      statusReason: "battery swap",
      drain: { status: "maintenance", deadline: a.expiresAt },
    });
    expect(await device(dev.deviceId)).toMatchObject({
      status: "allocated",
      allocation: { allocationId: a.allocationId },
      drain: { status: "maintenance" },
    });

    // The holder hears it, and may not extend past the deadline.
    const draining = {
      type: "device.draining",
      data: { deviceId: dev.deviceId, status: "maintenance", reason: "battery swap", deadline: a.expiresAt },
    };
    await until(async () => userFeed.frames.some((f) => f.type === "device.draining"));
    expect(userFeed.frames.find((f) => f.type === "device.draining")).toMatchObject({ ...draining, userId: user });
    const x = await call("PUT", `/scheduler/allocations/${a.allocationId}/extend`, { token, body: { additionalMinutes: 5 } });
    expect(x.status).toBe(409);
    expect(x.body.error).toMatchObject({
      code: "DEVICE_DRAINING",
      details: { status: "maintenance", deadline: a.expiresAt, reason: "battery swap" },
    });

    // Its release ends the drain: maintenance now, said on the admin feed with the reason.
    expect((await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } })).status).toBe(200);
    expect(await device(dev.deviceId)).toMatchObject({
      status: "maintenance",
      allocation: null,
      drain: null,
      statusReason: "battery swap",
    });
    await until(async () =>
      adminFeed.frames.some((f) => f.type === "device.status" && (f.data as { deviceId: string }).deviceId === dev.deviceId),
    );
    expect(adminFeed.frames.find((f) => f.type === "device.draining")).toMatchObject(draining);
    expect(
      adminFeed.frames.find((f) => f.type === "device.status" && (f.data as { deviceId: string }).deviceId === dev.deviceId),
    ).toMatchObject({
      data: { status: "maintenance", previousStatus: "allocated", endedAllocationId: a.allocationId, reason: "battery swap" },
    });
    // Nobody gets it now.
    const next = await allocate(await tokenFor(uid("u")), { pool });
    expect(next.status).toBe(409);
    const audit = await call("GET", `/admin/audit?target=device:${dev.deviceId}`, { token: await admin() });
    expect(audit.body.items[0]).toMatchObject({
      action: "device.set_status",
      change: { status: "maintenance", reason: "battery swap", drain: { status: "maintenance" } },
    });
    adminFeed.ws.close();
    userFeed.ws.close();
  });

  it("a later deadline allows extending up to it, not past it; the expiry then drains to offline", async () => {
    const { dev, token, a } = await held(10);
    const deadline = new Date(Date.parse(a.expiresAt) + 20 * 60_000).toISOString();
    const r = await setStatus(dev.deviceId, "offline", { drain: true, deadline });
    expect(r.body.drain).toEqual({ status: "offline", deadline });
    const extend = (m: number) => call("PUT", `/scheduler/allocations/${a.allocationId}/extend`, { token, body: { additionalMinutes: m } });
    expect((await extend(25)).body.error.code).toBe("DEVICE_DRAINING");
    expect((await extend(20)).status).toBe(200);
    // Expiry by the device's alarm: the allocation's own end, then the drain takes effect.
    const tiny = await registerDevice(uid("drain"));
    const t = await tokenFor(uid("u"));
    const ta = await allocate(t, { pool: tiny.pool, durationSeconds: 2 });
    expect(ta.status).toBe(201);
    expect((await setStatus(tiny.deviceId, "offline", { drain: true, reason: "rack move" })).body.drain).toMatchObject({
      status: "offline",
    });
    await until(async () => {
      await runDurableObjectAlarm(env.DEVICE.getByName(tiny.deviceId));
      return (await device(tiny.deviceId)).status === "offline";
    });
    expect(await device(tiny.deviceId)).toMatchObject({ status: "offline", allocation: null, drain: null, statusReason: "rack move" });
  });

  it("without an allocation a drain is immediate; online cancels a drain under way; a plain maintenance keeps its reason", async () => {
    const pool = uid("drain");
    const idle = await registerDevice(pool);
    const now = await setStatus(idle.deviceId, "maintenance", { drain: true, reason: "firmware" });
    expect(now.body).toMatchObject({ status: "maintenance", drain: null, statusReason: "firmware" });

    const { dev, token, a } = await held();
    await setStatus(dev.deviceId, "maintenance", { drain: true });
    const back = await setStatus(dev.deviceId, "online", { reason: "swap postponed" });
    expect(back.body).toMatchObject({ status: "allocated", drain: null, statusReason: "swap postponed" });
    expect((await call("PUT", `/scheduler/allocations/${a.allocationId}/extend`, { token, body: { additionalMinutes: 5 } })).status).toBe(
      200,
    );
    await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } });
    expect((await device(dev.deviceId)).status).toBe("available");

    // Without drain the allocation ends now, as before; the reason is no longer dropped.
    const other = await held();
    const cut = await setStatus(other.dev.deviceId, "offline", { reason: "power" });
    expect(cut.body).toMatchObject({
      status: "offline",
      statusReason: "power",
      ended: { allocationId: other.a.allocationId, reason: "offline" },
    });
    // No body at all still works (old clients).
    expect((await setStatus(other.dev.deviceId, "online")).body).toMatchObject({ status: "available", statusReason: null });
  });

  it("refuses what makes no sense, and a drained device takes no new reservation window", async () => {
    const { dev, pool } = await held();
    expect((await setStatus(dev.deviceId, "maintenance", { deadline: new Date().toISOString() })).status).toBe(400);
    expect((await setStatus(dev.deviceId, "online", { drain: true })).status).toBe(400);
    expect((await setStatus(dev.deviceId, "maintenance", { reason: "x".repeat(501) })).status).toBe(400);
    expect((await setStatus(dev.deviceId, "maintenance", { drain: "yes" })).status).toBe(400);
    expect((await setStatus(dev.deviceId, "maintenance", { drain: true })).status).toBe(200);
    const start = new Date(Date.now() + 3 * 3600_000).toISOString();
    const booking = await call("POST", "/scheduler/reservations", {
      token: await tokenFor(uid("booker")),
      body: { pool, startAt: start, durationMinutes: 30 },
    });
    expect(booking.status).toBe(409);
  });
});
