/**
 * Reservations (on the pool object, windows recorded by the devices): no overbooking under
 * concurrent bookings, the reserved device held against allocations and extends, handed over
 * at the start (alarm), reminders, cancellation freeing the window, quota at the start.
 */
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, tokenFor, uid, until } from "./helpers";
import { iso } from "../src/domain/time";

const reserve = (token: string, body: Record<string, unknown>) => call("POST", "/scheduler/reservations", { token, body });
const view = async (token: string, id: string) => (await call("GET", `/scheduler/reservations/${id}`, { token })).body;
const events = async (token: string) =>
  (await call("GET", "/scheduler/events?since=0", { token })).body.events as { type: string; data: any }[];
const allocate = (token: string, body: Record<string, unknown>) => call("POST", "/scheduler/devices/allocate", { token, body });
const HOUR = 3_600_000;

describe.concurrent("reservations: booking", () => {
  it("never overbooks a pool under a storm of concurrent bookings of overlapping windows", async ({ expect }) => {
    const pool = uid("r-storm");
    const devices = await Promise.all([0, 1, 2].map(() => registerDevice(pool)));
    const start = Date.now() + 2 * HOUR;
    const users = Array.from({ length: 16 }, (_, i) => uid(`r-storm-${i}`));
    const tokens = await Promise.all(users.map((u) => tokenFor(u)));
    // Half book [start, start+60m), half a window shifted by 30 minutes: every pair overlaps.
    const results = await Promise.all(
      tokens.map((t, i) => reserve(t, { pool, startAt: new Date(start + (i % 2) * 30 * 60_000).toISOString(), durationMinutes: 60 })),
    );
    const won = results.filter((r) => r.status === 201);
    for (const r of results) if (r.status !== 201) expect(r.body.error.code, JSON.stringify(r.body)).toBe("NO_CAPACITY");
    expect(won).toHaveLength(3);
    expect(new Set(won.map((r) => r.body.deviceId))).toEqual(new Set(devices.map((d) => d.deviceId)));
    for (const r of won) expect(r.body.status).toBe("confirmed");
    // A window after all of them is free again on every device.
    const later = await Promise.all(
      tokens.slice(0, 4).map((t) => reserve(t, { pool, startAt: iso(start + 2 * HOUR), durationMinutes: 30 })),
    );
    expect(later.map((r) => r.status).sort()).toEqual([201, 201, 201, 409]);
    const check = await call("POST", "/scheduler/reservations/check", {
      token: tokens[5]!,
      body: { pool, startAt: iso(start + 40 * 60_000), durationMinutes: 10 },
    });
    expect(check.body).toMatchObject({ available: false, matchingDevices: 3, freeDevices: 0 });
  });

  it("the conflict check shows free devices and your own overlapping reservations; bad windows are 400", async ({ expect }) => {
    const pool = uid("r-check");
    await Promise.all([registerDevice(pool), registerDevice(pool)]);
    const token = await tokenFor(uid("r-check-u"));
    const start = Date.now() + HOUR;
    const before = await call("POST", "/scheduler/reservations/check", {
      token,
      body: { pool, startAt: iso(start), durationMinutes: 60 },
    });
    expect(before.body).toMatchObject({ available: true, matchingDevices: 2, freeDevices: 2, overlapping: [] });
    const r = await reserve(token, { pool, startAt: iso(start), durationMinutes: 60, reminderMinutes: 5 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.remindAt).toBe(new Date(start - 5 * 60_000).toISOString());
    const after = await call("POST", "/scheduler/reservations/check", {
      token,
      body: { pool, startAt: iso(start + 30 * 60_000), durationMinutes: 60 },
    });
    expect(after.body).toMatchObject({ available: true, freeDevices: 1 });
    expect(after.body.overlapping.map((o: { reservationId: string }) => o.reservationId)).toEqual([r.body.reservationId]);
    for (const bad of [
      { startAt: iso(Date.now() - 60_000) },
      { startAt: "tomorrow" },
      { startAt: iso(Date.now() + 40 * 86_400_000) },
      { startAt: iso(start), spec: { cpuCores: -1 } },
    ]) {
      const res = await reserve(token, { pool, durationMinutes: 10, ...bad });
      expect(res.status, JSON.stringify(bad)).toBe(400);
      expect(res.body.error.code).toMatch(/VALIDATION_FAILED|RESERVATION_IN_PAST|RESERVATION_TOO_FAR/);
    }
    const list = await call("GET", `/scheduler/reservations?pool=${pool}`, { token });
    expect(list.body.items).toHaveLength(1);
  });

  it("an admin reserves on behalf of a user; another user cannot see or cancel it", async ({ expect }) => {
    const pool = uid("r-admin");
    await registerDevice(pool);
    const user = uid("r-admin-u");
    const r = await reserve(await admin(), { pool, userId: user, startAt: iso(Date.now() + HOUR), durationMinutes: 30 });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ userId: user, createdBy: "root-admin" });
    const owner = await tokenFor(user);
    expect((await view(owner, r.body.reservationId)).status).toBe("confirmed");
    const stranger = await tokenFor(uid("r-admin-s"));
    expect((await call("GET", `/scheduler/reservations/${r.body.reservationId}`, { token: stranger })).status).toBe(404);
    expect((await call("DELETE", `/scheduler/reservations/${r.body.reservationId}`, { token: stranger })).status).toBe(404);
    expect((await reserve(stranger, { pool, userId: user, startAt: iso(Date.now() + HOUR) })).status).toBe(403);
  });
});

describe.concurrent("reservations: the device is held", () => {
  it("allocations and extends that would run into a window are refused; ones that end before it are not", async ({ expect }) => {
    const pool = uid("r-held");
    const dev = await registerDevice(pool);
    const token = await tokenFor(uid("r-held-u"));
    const other = await tokenFor(uid("r-held-o"));
    const start = Date.now() + 10 * 60_000;
    const r = await reserve(token, { pool, startAt: iso(start), durationMinutes: 30 });
    expect(r.body.deviceId).toBe(dev.deviceId);
    const long = await allocate(other, { pool, durationMinutes: 60 });
    expect(long.status).toBe(409);
    expect(long.body.error.code).toBe("NO_DEVICE_AVAILABLE");
    const short = await allocate(other, { pool, durationMinutes: 5 });
    expect(short.status, JSON.stringify(short.body)).toBe(201);
    const ext = await call("PUT", `/scheduler/allocations/${short.body.allocationId}/extend`, {
      token: other,
      body: { additionalMinutes: 30 },
    });
    expect(ext.status).toBe(409);
    expect(ext.body.error.code).toBe("DEVICE_RESERVED");
    expect(ext.body.error.details.reservedFrom).toBe(new Date(start).toISOString());
    // Nothing changed by the refused extend.
    const a = await call("GET", `/scheduler/allocations/${short.body.allocationId}`, { token: other });
    expect(a.body.extendCount).toBe(0);
    expect(a.body.expiresAt).toBe(short.body.expiresAt);
  });

  it("cancelling frees the window for other bookings and for allocations", async ({ expect }) => {
    const pool = uid("r-cancel");
    await registerDevice(pool);
    const t1 = await tokenFor(uid("r-cancel-1"));
    const t2 = await tokenFor(uid("r-cancel-2"));
    const start = Date.now() + 10 * 60_000;
    const r1 = await reserve(t1, { pool, startAt: iso(start), durationMinutes: 30 });
    const blocked = await reserve(t2, { pool, startAt: iso(start + 60_000), durationMinutes: 10 });
    expect(blocked.status).toBe(409);
    expect(blocked.body.error.code).toBe("NO_CAPACITY");
    const c = await call("DELETE", `/scheduler/reservations/${r1.body.reservationId}`, { token: t1 });
    expect(c.status).toBe(200);
    expect(c.body.status).toBe("cancelled");
    expect((await call("DELETE", `/scheduler/reservations/${r1.body.reservationId}`, { token: t1 })).body.error.code).toBe(
      "RESERVATION_CLOSED",
    );
    // The device's own window is gone too (an hour-long allocation would cross it).
    const long = await until(async () => {
      const res = await allocate(t2, { pool, durationMinutes: 60 });
      return res.status === 201 ? res : null;
    });
    expect(long.body.deviceId).toBe(r1.body.deviceId);
    await call("POST", "/scheduler/devices/release", { token: t2, body: { deviceId: long.body.deviceId } });
    const r2 = await reserve(t2, { pool, startAt: iso(start + 60_000), durationMinutes: 10 });
    expect(r2.status).toBe(201);
    const log = await until(async () => {
      const ev = await events(t1);
      return ev.some((e) => e.type === "reservation.cancelled") ? ev : null;
    });
    expect(log.find((e) => e.type === "reservation.cancelled")!.data.reservationId).toBe(r1.body.reservationId);
  });
});

describe.concurrent("reservations: the start", () => {
  it("reminds, hands the reserved device over at startAt, and completes when the window's allocation ends", async ({ expect }) => {
    const pool = uid("r-start");
    const dev = await registerDevice(pool);
    const twin = await registerDevice(pool); // the handed-over device must be the reserved one, not any free one
    const user = uid("r-start-u");
    const token = await tokenFor(user);
    const startAt = Date.now() + 2_000;
    const r = await reserve(token, { pool, startAt: iso(startAt), durationSeconds: 2, reminderMinutes: 15 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const reserved = r.body.deviceId;
    expect([dev.deviceId, twin.deviceId]).toContain(reserved);
    // The reminder comes at once (the start is closer than 15 minutes), before the start.
    const reminded = await until(async () => {
      const ev = await events(token);
      return ev.find((e) => e.type === "reservation.reminder");
    });
    expect(Date.now()).toBeLessThan(startAt + 500);
    expect(reminded.data.reservationId).toBe(r.body.reservationId);
    const started = await until(async () => {
      const v = await view(token, r.body.reservationId);
      return v.status === "executing" ? v : null;
    }, 10_000);
    expect(started.deviceId).toBe(reserved);
    const alloc = await call("GET", `/scheduler/allocations/${started.allocationId}`, { token });
    expect(alloc.body).toMatchObject({ status: "active", deviceId: reserved });
    // Allocated at the start (within the alarm's lag), until the window's end.
    expect(Date.parse(alloc.body.allocatedAt)).toBeGreaterThanOrEqual(startAt);
    expect(Date.parse(alloc.body.allocatedAt)).toBeLessThan(startAt + 1_500);
    expect(Date.parse(alloc.body.expiresAt)).toBeLessThanOrEqual(startAt + 2_000 + 1_000);
    const done = await until(async () => {
      const v = await view(token, r.body.reservationId);
      return v.status === "completed" ? v : null;
    }, 10_000);
    expect(done.allocationId).toBe(started.allocationId);
    const types = (await events(token)).map((e) => e.type);
    for (const t of ["reservation.reminder", "reservation.started", "device.allocated", "device.released", "reservation.completed"])
      expect(types, t).toContain(t);
    expect(types.indexOf("reservation.reminder")).toBeLessThan(types.indexOf("reservation.started"));
  });

  it("quota is checked at the start: a user suspended meanwhile gets reservation.failed and the device stays free", async ({ expect }) => {
    const pool = uid("r-quota");
    const dev = await registerDevice(pool);
    const user = uid("r-quota-u");
    const token = await tokenFor(user);
    const r = await reserve(token, { pool, startAt: iso(Date.now() + 1_500), durationSeconds: 30, reminderMinutes: 0 });
    expect(r.status).toBe(201);
    await call("PUT", `/quotas/user/${user}?create=true`, { token: await admin(), body: { suspended: true } });
    const failed = await until(async () => {
      const v = await view(token, r.body.reservationId);
      return v.status === "failed" ? v : null;
    }, 10_000);
    expect(failed.error.code).toBe("QUOTA_SUSPENDED");
    expect(failed.allocationId).toBeNull();
    const log = await until(async () => {
      const ev = await events(token);
      return ev.some((e) => e.type === "reservation.failed") ? ev : null;
    });
    expect(log.some((e) => e.type === "reservation.reminder")).toBe(false);
    const free = await call("GET", `/scheduler/devices/available?pool=${pool}`, {
      token: await tokenFor(uid("r-quota-o")),
    });
    expect(free.body.items.map((d: { deviceId: string }) => d.deviceId)).toEqual([dev.deviceId]);
    // And the window no longer holds it.
    const other = await allocate(await tokenFor(uid("r-quota-x")), { pool, durationMinutes: 60 });
    expect(other.status).toBe(201);
  });

  it("back-to-back windows on one device: each is handed over in turn, the first ends as the second starts", async ({ expect }) => {
    const pool = uid("r-b2b");
    const dev = await registerDevice(pool);
    const t1 = await tokenFor(uid("r-b2b-1"));
    const t2 = await tokenFor(uid("r-b2b-2"));
    const start = Date.now() + 1_500;
    const r1 = await reserve(t1, { pool, startAt: iso(start), durationSeconds: 2, reminderMinutes: 0 });
    const r2 = await reserve(t2, { pool, startAt: iso(start + 2_000), durationSeconds: 2, reminderMinutes: 0 });
    expect([r1.body.deviceId, r2.body.deviceId]).toEqual([dev.deviceId, dev.deviceId]);
    const done = await until(async () => {
      const [a, b] = await Promise.all([view(t1, r1.body.reservationId), view(t2, r2.body.reservationId)]);
      return a.status === "completed" && b.status === "completed" ? [a, b] : null;
    }, 15_000);
    const a1 = (await call("GET", `/scheduler/allocations/${done[0]!.allocationId}`, { token: t1 })).body;
    const a2 = (await call("GET", `/scheduler/allocations/${done[1]!.allocationId}`, { token: t2 })).body;
    expect([a1.deviceId, a2.deviceId]).toEqual([dev.deviceId, dev.deviceId]);
    // The first never runs into the second's window.
    expect(Date.parse(a1.expiresAt)).toBeLessThanOrEqual(start + 2_000);
    expect(Date.parse(a1.releasedAt)).toBeLessThanOrEqual(Date.parse(a2.allocatedAt));
  });
});

describe.concurrent("reservations and queue entries: idempotency keys", () => {
  it(
    "a repeated key answers the first reservation or entry; the same key for another request is 409; " +
      "a repeat works even at the quota limit",
    async ({ expect }) => {
      const pool = uid("r-idem");
      await Promise.all([registerDevice(pool), registerDevice(pool)]);
      const token = await tokenFor(uid("r-idem-u"));
      const body = { pool, startAt: iso(Date.now() + 3_600_000), durationMinutes: 30, idempotencyKey: "book-1" };
      const [a, b] = await Promise.all([reserve(token, body), reserve(token, body)]);
      expect(a.status).toBe(201);
      expect(b.body.reservationId).toBe(a.body.reservationId);
      const other = await reserve(token, { ...body, durationMinutes: 45 });
      expect(other.status).toBe(409);
      expect(other.body.error.code).toBe("IDEMPOTENCY_KEY_REUSED");
      expect((await call("GET", `/scheduler/reservations?pool=${pool}`, { token })).body.items).toHaveLength(1);
      // Two joins with one key: one entry. The first takes a device; with the second device held too
      // the user is at the free plan's 2 devices, and a repeat still answers the first entry.
      const j1 = await call("POST", "/scheduler/queue/join", {
        token,
        body: { pool, durationMinutes: 5, idempotencyKey: "join-1" },
      });
      expect(j1.body.status).toBe("fulfilled");
      expect((await allocate(token, { pool, durationMinutes: 5 })).status).toBe(201);
      const j2 = await call("POST", "/scheduler/queue/join", {
        token,
        body: { pool, durationMinutes: 5, idempotencyKey: "join-1" },
      });
      expect(j2.status, JSON.stringify(j2.body)).toBe(201);
      expect(j2.body).toMatchObject({ entryId: j1.body.entryId, allocationId: j1.body.allocationId });
      const j3 = await call("POST", "/scheduler/queue/join", {
        token,
        body: { pool, durationMinutes: 6, idempotencyKey: "join-1" },
      });
      expect(j3.body.error.code).toBe("IDEMPOTENCY_KEY_REUSED");
    },
  );
});

describe.concurrent("reservations: the fleet changes", () => {
  it("a device with booked windows cannot move to another pool; removed, its reservation starts on another device", async ({ expect }) => {
    const pool = uid("r-move");
    const dev = await registerDevice(pool);
    const token = await tokenFor(uid("r-move-u"));
    const r = await reserve(token, { pool, startAt: iso(Date.now() + 1_500), durationSeconds: 30, reminderMinutes: 0 });
    expect(r.body.deviceId).toBe(dev.deviceId);
    const adm = await admin();
    const move = await call("PATCH", `/admin/devices/${dev.deviceId}`, {
      token: adm,
      body: { pool: uid("r-move-elsewhere") },
    });
    expect(move.status).toBe(409);
    expect(move.body.error.code).toBe("DEVICE_RESERVED");
    const twin = await registerDevice(pool);
    expect((await call("DELETE", `/admin/devices/${dev.deviceId}`, { token: adm })).status).toBe(200);
    const started = await until(async () => {
      const v = await view(token, r.body.reservationId);
      return v.status === "executing" ? v : null;
    }, 10_000);
    expect(started.deviceId).toBe(twin.deviceId);
  });
});
