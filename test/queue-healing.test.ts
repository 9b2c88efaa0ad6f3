/**
 * The queue and reservations across crashes: waits, reminders and starts live in object
 * storage and alarms, not in memory; a hand-over driven twice (a crash after the user's object
 * allocated, before the pool recorded it) gives one allocation, never two.
 */
import { abortAllDurableObjects, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, tokenFor, uid, until } from "./helpers";
import { iso } from "../src/domain/time";

const join = (token: string, body: Record<string, unknown>) => call("POST", "/scheduler/queue/join", { token, body });
const entry = async (token: string, id: string) => (await call("GET", `/scheduler/queue/${id}`, { token })).body;

describe("queue and reservations survive restarts", () => {
  it("after every object restarts, a max wait still expires, the next entry is still served, a reservation still starts", async () => {
    const pool = uid("qh-restart");
    const dev = await registerDevice(pool);
    const spare = await registerDevice(pool, { cpuCores: 4 });
    const holder = await tokenFor(uid("qh-holder"));
    const held = await call("POST", "/scheduler/devices/allocate", {
      token: holder,
      body: { pool, durationMinutes: 30, spec: { cpuCores: 2 } },
    });
    expect(held.body.deviceId).toBe(dev.deviceId);
    // The spare is reserved first (from 2.5 s, for a minute), so the queue cannot take it.
    const t3 = await tokenFor(uid("qh-3"));
    const rsv = await call("POST", "/scheduler/reservations", {
      token: t3,
      body: { pool, spec: { cpuCores: 4 }, startAt: iso(Date.now() + 2_500), durationSeconds: 60, reminderMinutes: 0 },
    });
    expect(rsv.body.deviceId).toBe(spare.deviceId);
    const t1 = await tokenFor(uid("qh-1"));
    const t2 = await tokenFor(uid("qh-2"));
    const short = await join(t1, { pool, spec: { cpuCores: 2 }, durationMinutes: 5, maxWaitSeconds: 2 });
    const long = await join(t2, { pool, spec: { cpuCores: 2 }, durationMinutes: 5 });
    expect([short.body.status, long.body.status]).toEqual(["waiting", "waiting"]);
    await abortAllDurableObjects();
    const expired = await until(async () => {
      const v = await entry(t1, short.body.entryId);
      return v.status === "expired" ? v : null;
    }, 10_000);
    expect(expired.position).toBeNull();
    expect((await entry(t2, long.body.entryId)).position).toBe(1);
    const started = await until(async () => {
      const v = (await call("GET", `/scheduler/reservations/${rsv.body.reservationId}`, { token: t3 })).body;
      return v.status === "executing" ? v : null;
    }, 10_000);
    expect(started.deviceId).toBe(spare.deviceId);
    await abortAllDurableObjects();
    await call("POST", "/scheduler/devices/release", { token: holder, body: { deviceId: dev.deviceId } });
    const served = await until(async () => {
      const v = await entry(t2, long.body.entryId);
      return v.status === "fulfilled" ? v : null;
    });
    expect(served.deviceId).toBe(dev.deviceId);
  });

  it(
    "a hand-over driven again after a crash (the user's object allocated, the pool never recorded it) " + "yields the same one allocation",
    async () => {
      const pool = uid("qh-twice");
      const dev = await registerDevice(pool);
      const user = uid("qh-twice-u");
      const token = await tokenFor(user);
      const first = await join(token, { pool, durationMinutes: 5 });
      expect(first.body.status).toBe("fulfilled");
      // As if the pool crashed before recording the outcome: the entry is still "offered", due for a retry.
      const stub = env.DEVICE_POOL.getByName(pool);
      await runInDurableObject(stub, (_i, state) => {
        state.storage.sql.exec(
          "UPDATE queue SET status = 'offered', allocation_id = NULL, retry_at = ? WHERE entry_id = ?",
          Date.now() - 1,
          first.body.entryId,
        );
      });
      await abortAllDurableObjects();
      const fresh = env.DEVICE_POOL.getByName(pool);
      await runInDurableObject(fresh, async (_i, state) => {
        await state.storage.setAlarm(Date.now());
      });
      await runDurableObjectAlarm(fresh);
      const again = await until(async () => {
        const v = await entry(token, first.body.entryId);
        return v.status === "fulfilled" ? v : null;
      });
      expect(again.allocationId).toBe(first.body.allocationId);
      expect((await call("GET", `/quotas/user/${user}`, { token })).body.usage.devices).toBe(1);
      const list = await call("GET", "/scheduler/allocations", { token });
      expect(list.body.items).toHaveLength(1);
      const d = await call("GET", `/admin/devices/${dev.deviceId}`, { token: await admin() });
      expect(d.body.allocation.allocationId).toBe(first.body.allocationId);
    },
  );

  it("a booking whose request crashed before the device confirmed it is dropped, and its window freed", async () => {
    const pool = uid("qh-pending");
    const dev = await registerDevice(pool);
    const token = await tokenFor(uid("qh-pending-u"));
    const r = await call("POST", "/scheduler/reservations", {
      token,
      body: { pool, startAt: iso(Date.now() + 600_000), durationMinutes: 30 },
    });
    expect(r.status).toBe(201);
    // As if the pool crashed after the device took the window but before the booking was confirmed, a minute ago.
    await runInDurableObject(env.DEVICE_POOL.getByName(pool), (_i, state) => {
      state.storage.sql.exec(
        "UPDATE reservations SET status = 'pending', remind_at = NULL, created_at = ? WHERE reservation_id = ?",
        Date.now() - 61_000,
        r.body.reservationId,
      );
    });
    await abortAllDurableObjects();
    const stub = env.DEVICE_POOL.getByName(pool);
    await runInDurableObject(stub, async (_i, state) => {
      await state.storage.setAlarm(Date.now());
    });
    await runDurableObjectAlarm(stub);
    expect((await call("GET", `/scheduler/reservations/${r.body.reservationId}`, { token })).status).toBe(404);
    // The device's window went with it: an hour-long allocation (across the old window) is allowed.
    const a = await until(async () => {
      const res = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 60 } });
      return res.status === 201 ? res : null;
    });
    expect(a.body.deviceId).toBe(dev.deviceId);
  });
});
