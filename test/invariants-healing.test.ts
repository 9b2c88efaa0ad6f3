/**
 * Invariant 5: a crash between the steps of an allocation leaves no orphan. Each test
 * stops the protocol after one step (by doing only that step, or by crashing every
 * object mid-flight), lets time pass (deadlines moved into the past, alarms run), and
 * checks that the device, the pool and the user's quota agree again.
 */
import { abortAllDurableObjects, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, tokenFor, uid, until } from "./helpers";

const ZERO = { cpuCores: 0, memoryMB: 0, storageMB: 0 };
const ANY = { cpuCores: 1e6, memoryMB: 1e9, storageMB: 1e9 };

/**
 * Time passes for an object: its deadlines are due now; then its alarm handler runs to completion.
 * A device must have its own alarm set for the earliest confirm deadline of a claim it holds
 * (nobody else will ask it in time), so that is checked before the deadline is moved.
 */
async function timePasses(kind: "user" | "device", name: string): Promise<void> {
  const stub = kind === "user" ? env.USER_QUOTA.getByName(name) : env.DEVICE.getByName(name);
  await runInDurableObject(stub, async (instance, state) => {
    if (kind === "user") state.storage.sql.exec("UPDATE allocations SET deadline = 1 WHERE status = 'pending'");
    else {
      const due = state.storage.sql
        .exec<{ at: number | null }>("SELECT MIN(confirm_at) AS at FROM allocations WHERE state = 'held'")
        .one().at;
      if (due !== null) {
        const alarm = await state.storage.getAlarm();
        expect(alarm, "the device's alarm is set for its claim's confirm deadline").not.toBeNull();
        expect(alarm!, "the device's alarm is set for its claim's confirm deadline").toBeLessThanOrEqual(due);
      }
      state.storage.sql.exec("UPDATE allocations SET confirm_at = 1 WHERE state = 'held'");
    }
    await (instance as unknown as { alarm(): Promise<void> }).alarm();
  });
}

/**
 * A device long after its registration: the alarm a registration sets (outbox safety, 30 s) has
 * come and gone, so the alarm a later claim needs is the claim's own.
 */
async function settledDevice(deviceId: string): Promise<void> {
  await runDurableObjectAlarm(env.DEVICE.getByName(deviceId));
  await runInDurableObject(env.DEVICE.getByName(deviceId), async (_i, state) => expect(await state.storage.getAlarm()).toBeNull());
}

/** Step 1 of an allocation alone: the user's object holds quota for it, with the usual deadline. */
async function writePendingRow(user: string, allocationId: string, pool: string): Promise<void> {
  await env.USER_QUOTA.getByName(user).getQuota(user);
  await runInDurableObject(env.USER_QUOTA.getByName(user), (_i, state) => {
    state.storage.sql.exec(
      `INSERT INTO allocations (allocation_id, pool, status, cpu, mem, storage, duration_minutes, duration_ms, booked_hours,
         deadline, created_at)
       VALUES (?, ?, 'pending', 0, 0, 0, 10, 600000, 0.1666, ?, ?)`,
      allocationId,
      pool,
      Date.now() + 20_000,
      Date.now(),
    );
  });
}

/** The user's pending deadlines pass without its alarm having run yet. */
async function deadlinesPass(user: string): Promise<void> {
  await runInDurableObject(env.USER_QUOTA.getByName(user), (_i, state) => {
    state.storage.sql.exec("UPDATE allocations SET deadline = 1 WHERE status = 'pending'");
  });
}

async function deviceView(deviceId: string) {
  return (await call("GET", `/admin/devices/${deviceId}`, { token: await admin() })).body;
}

/** Every device holds only what its user knows, and every user's usage is its active allocations. */
async function expectConsistent(pool: string, deviceIds: string[], users: string[]) {
  const adminToken = await admin();
  const active = new Map<string, string>(); // allocationId → deviceId, per users
  for (const u of users) {
    const list = await call("GET", `/scheduler/allocations?userId=${u}&limit=200`, { token: adminToken });
    const mine = list.body.items as { allocationId: string; status: string; deviceId: string }[];
    expect(mine.filter((a) => a.status === "pending")).toEqual([]);
    const act = mine.filter((a) => a.status === "active");
    for (const a of act) active.set(a.allocationId, a.deviceId);
    const q = await call("GET", `/quotas/user/${u}`, { token: adminToken });
    expect(q.body.usage.devices).toBe(act.length);
  }
  const held = new Map<string, string>();
  for (const id of deviceIds) {
    const d = await deviceView(id);
    if (d.allocation) {
      held.set(d.allocation.allocationId, id);
      expect(d.allocation.confirmed).toBe(true);
    }
  }
  expect(held).toEqual(active);
  const summary = await call("GET", `/admin/pools/${pool}`, { token: adminToken });
  expect(summary.body.allocated).toBe(held.size);
}

describe("invariant 5: failures between steps heal", () => {
  it("device claimed but the user's object never completed (crash after step 2): the device frees itself", async () => {
    const pool = uid("heal-a");
    const dev = await registerDevice(pool);
    await settledDevice(dev.deviceId);
    const user = uid("crashy");
    const allocationId = `alc_crash_${crypto.randomUUID()}`;
    // Step 1: the user's object wrote its pending row (quota held) ...
    await writePendingRow(user, allocationId, pool);
    expect((await env.USER_QUOTA.getByName(user).getQuota(user)).usage.devices).toBe(1);
    // Step 2: the pool picked and the device claimed ... then the user's object died.
    const claimed = await env.DEVICE_POOL.getByName(pool).claim({
      allocationId,
      userId: user,
      pool,
      min: ZERO,
      max: ANY,
      durationMs: 600_000,
    });
    expect(claimed.ok).toBe(true);
    expect((await deviceView(dev.deviceId)).allocation.confirmed).toBe(false);

    await deadlinesPass(user);
    await timePasses("device", dev.deviceId);
    const d = await deviceView(dev.deviceId);
    expect(d.allocation).toBeNull();
    expect(d.status).toBe("available");
    expect((await env.USER_QUOTA.getByName(user).getQuota(user)).usage.devices).toBe(0);
    // The device is allocatable again, and the orphan is never billed.
    const next = await call("POST", "/scheduler/devices/allocate", {
      token: await tokenFor(uid("after")),
      body: { pool, durationMinutes: 1 },
    });
    expect(next.status).toBe(201);
    expect(next.body.deviceId).toBe(dev.deviceId);
    const billed = await env.DB.prepare("SELECT COUNT(*) AS n FROM usage_records WHERE allocation_id = ?")
      .bind(allocationId)
      .first<{ n: number }>();
    expect(billed!.n).toBe(0);
  });

  it("a claim nobody asked for (no user record at all) is freed", async () => {
    const pool = uid("heal-ghost");
    const dev = await registerDevice(pool);
    await settledDevice(dev.deviceId);
    const r = await env.DEVICE.getByName(dev.deviceId).claim({
      allocationId: "alc_ghost_1",
      userId: uid("ghost"),
      pool,
      min: ZERO,
      max: ANY,
      durationMs: 600_000,
    });
    expect(r.ok).toBe(true);
    await timePasses("device", dev.deviceId);
    expect((await deviceView(dev.deviceId)).allocation).toBeNull();
  });

  it(
    "the user's object aborts a stale pending row first (crash after step 1): " + "quota comes back, the late device claim is freed",
    async () => {
      const pool = uid("heal-b");
      const dev = await registerDevice(pool);
      const user = uid("slow");
      const allocationId = `alc_slow_${crypto.randomUUID()}`;
      await writePendingRow(user, allocationId, pool);
      await timePasses("user", user);
      expect((await env.USER_QUOTA.getByName(user).getQuota(user)).usage.devices).toBe(0);
      // A claim that arrives after the abort is refused by the user's answer.
      await env.DEVICE_POOL.getByName(pool).claim({
        allocationId,
        userId: user,
        pool,
        min: ZERO,
        max: ANY,
        durationMs: 600_000,
      });
      await timePasses("device", dev.deviceId);
      expect((await deviceView(dev.deviceId)).allocation).toBeNull();
      await expectConsistent(pool, [dev.deviceId], [user]);
    },
  );

  it("the user recorded the allocation but the device never got the confirm (step 4 lost): it stays allocated", async () => {
    const pool = uid("heal-c");
    const dev = await registerDevice(pool);
    const user = uid("keeper");
    const token = await tokenFor(user);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 10 } });
    expect(a.status).toBe(201);
    await runInDurableObject(env.DEVICE.getByName(dev.deviceId), (_i, state) => {
      state.storage.sql.exec("UPDATE allocations SET state = 'held', confirm_at = ? WHERE state = 'active'", Date.now() + 30_000);
    });
    await timePasses("device", dev.deviceId);
    const d = await deviceView(dev.deviceId);
    expect(d.allocation.allocationId).toBe(a.body.allocationId);
    expect(d.allocation.confirmed).toBe(true);
    await expectConsistent(pool, [dev.deviceId], [user]);
  });

  it("the device ended an allocation but the user's object never heard: its overdue check settles it", async () => {
    const pool = uid("heal-d");
    const dev = await registerDevice(pool);
    const user = uid("unaware");
    const token = await tokenFor(user);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 10 } });
    expect(a.status).toBe(201);
    // The device ends it (expiry) and its notice to the user is lost.
    await runInDurableObject(env.DEVICE.getByName(dev.deviceId), async (instance, state) => {
      const device = instance as unknown as {
        current(): unknown;
        endTx(a: unknown, reason: string, now: number): unknown;
        rearm(): Promise<void>;
      };
      state.storage.transactionSync(() => device.endTx(device.current(), "expired", Date.now()));
      state.storage.sql.exec("DELETE FROM outbox WHERE kind = 'user_ended'");
      await device.rearm(); // the rest of its outbox (pool, usage) goes out as usual
    });
    expect((await env.USER_QUOTA.getByName(user).getQuota(user)).usage.devices).toBe(1);
    // The user's object checks its overdue allocation with the device.
    await runInDurableObject(env.USER_QUOTA.getByName(user), async (instance, state) => {
      state.storage.sql.exec("UPDATE allocations SET expires_at = ? WHERE status = 'active'", Date.now() - 60_000);
      await (instance as unknown as { alarm(): Promise<void> }).alarm();
    });
    const q = await env.USER_QUOTA.getByName(user).getQuota(user);
    expect(q.usage.devices).toBe(0);
    const one = await call("GET", `/scheduler/allocations/${a.body.allocationId}`, { token });
    expect(one.body.status).toBe("released");
    expect(one.body.reason).toBe("expired");
    await until(async () => (await call("GET", `/admin/pools/${pool}`, { token: await admin() })).body.allocated === 0);
    await expectConsistent(pool, [dev.deviceId], [user]);
  });

  it("crashing every object in the middle of an allocation storm leaves no orphan once deadlines pass", async () => {
    const pool = uid("heal-storm");
    const devices = await Promise.all(Array.from({ length: 8 }, (_, i) => registerDevice(pool, { node: `n${i % 3}` })));
    const users = Array.from({ length: 12 }, () => uid("stormy"));
    const inflight = users.flatMap((u) =>
      [0, 1].map(async () =>
        call("POST", "/scheduler/devices/allocate", {
          token: await tokenFor(u),
          body: { pool, durationMinutes: 10 },
        }).catch((e) => ({ status: 0, body: String(e) })),
      ),
    );
    await new Promise((r) => setTimeout(r, 5));
    await abortAllDurableObjects();
    const results = await Promise.all(inflight);
    // Whatever the callers saw, the system must converge.
    for (const u of users) await timePasses("user", u);
    for (const d of devices) await timePasses("device", d.deviceId);
    await until(
      async () => {
        try {
          await expectConsistent(
            pool,
            devices.map((d) => d.deviceId),
            users,
          );
          return true;
        } catch {
          return false;
        }
      },
      10_000,
      200,
    ).catch(() => undefined);
    await expectConsistent(
      pool,
      devices.map((d) => d.deviceId),
      users,
    );
    // A caller that got 201 still holds its device.
    for (const r of results.filter((r) => r.status === 201) as { body: { allocationId: string; deviceId: string } }[]) {
      expect((await deviceView(r.body.deviceId)).allocation?.allocationId).toBe(r.body.allocationId);
    }
  });
});
