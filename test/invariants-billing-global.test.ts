/**
 * Invariant 3 (see test/invariants-billing.test.ts), the tests that change what every other test
 * would see: the pricing table renamed (the consumer fails every batch), a replay and a
 * reconciliation of everything, every object aborted. A test file has storage of its own, so here
 * they run one after another without holding up the tests that can run side by side.
 */
import { abortAllDurableObjects } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, it } from "vitest";
import { reconcile } from "../src/billing/reconcile";
import { admin, call, registerDevice, SERVICE_TOKEN, sleep, tokenFor, uid, until } from "./helpers";
import { QUEUE_QUIET_MS } from "./timing";
import {
  invariant3Setup,
  logs,
  FAST,
  accountsOf,
  activeCount,
  allBooked,
  allocate,
  booked,
  charge,
  dearUser,
  ended,
  exec,
  expectExactlyOnce,
  one,
  pmap,
  price,
  q,
  reconcileUser,
  specOf,
  usage,
} from "./invariant3";

invariant3Setup();

// ---- 1. the one global outage: runs alone ------------------------------------------------------------

describe("invariant 3 — consumer outage (global, runs alone)", () => {
  it("the consumer fails whole batches while pricing_plans is gone; after recovery every record is booked exactly once", async ({
    expect,
  }) => {
    const pool = uid("inv3-outage");
    const users = await Promise.all(Array.from({ length: 5 }, () => dearUser("outage")));
    for (let i = 0; i < 10; i++) await registerDevice(pool, specOf(i));
    const allocs = await pmap(
      users.flatMap((u) => [u, u]),
      10,
      (u) => allocate(u, pool, 30),
    );
    const ids = allocs.map((a) => a.allocationId);
    await sleep(1200);
    await exec("ALTER TABLE pricing_plans RENAME TO pricing_plans_gone");
    const outageStart = Date.now();
    let batchFailures = 0;
    try {
      const rel = await Promise.all(
        allocs.map(async (a) =>
          call("POST", "/scheduler/devices/release", {
            token: await tokenFor(a.userId),
            body: { deviceId: a.deviceId },
          }),
        ),
      );
      expect(rel.map((r) => r.status)).toEqual(allocs.map(() => 200));
      // Several redeliveries fail as whole batches (accounts unreadable) before D1 comes back.
      await until(async () => logs.filter((l) => l.msg === "usage batch failed" && l.at >= outageStart).length >= 3, 20_000, 50);
      batchFailures = logs.filter((l) => l.msg === "usage batch failed" && l.at >= outageStart).length;
      const during = await booked(ids);
      expect([...during.values()].filter((b) => b.usage || b.charges)).toEqual([]);
    } finally {
      await exec("ALTER TABLE pricing_plans_gone RENAME TO pricing_plans");
    }
    await until(() => allBooked(ids), 20_000, 100);
    await sleep(QUEUE_QUIET_MS); // any late redelivery lands now
    const b = await expectExactlyOnce(expect, ids);
    const releases = await Promise.all(users.map((u) => ended(u)));
    for (const e of releases.flat()) expect(b.get(e.allocationId)!.amount).toBe(charge(price(FAST, e, e.durationSeconds)));
    const acc = await accountsOf(users);
    for (const u of users) {
      const a = acc.get(u)!;
      expect(a.balance).toBe(a.ledgerSum);
      expect(a.charges).toBe(2);
    }
    // Recovered by the queue's own retries: nothing reached the dead-letter store.
    expect(
      await one<{ n: number }>(`SELECT COUNT(*) AS n FROM failed_usage WHERE allocation_id IN (${ids.map(() => "?").join(",")})`, ...ids),
    ).toEqual({ n: 0 });
    expect(batchFailures).toBeGreaterThanOrEqual(3);
  });
});

// ---- 2. `replay {all:true}` touches every open dead letter: runs alone too ------------------------

describe("invariant 3 — dead-letter replay of everything (runs alone)", () => {
  it("replay {all:true} reaches a kept record even behind more than a batch of malformed dead letters", async ({ expect }) => {
    // 101 malformed messages through the real queue: the consumer keeps each as `invalid`.
    const junk = Array.from({ length: 101 }, () => ({ allocationId: uid("junk"), note: "not a usage record" }));
    for (let i = 0; i < junk.length; i += 100)
      await env.USAGE_QUEUE.sendBatch(junk.slice(i, i + 100).map((body) => ({ body: body as never, contentType: "json" as const })));
    const junkIds = junk.map((j) => j.allocationId);
    const invalidCount = async () =>
      (await one<{ n: number }>(`SELECT COUNT(*) AS n FROM failed_usage WHERE status = 'invalid' AND allocation_id LIKE 'junk-%'`)).n;
    await until(async () => (await invalidCount()) === junkIds.length, 15_000, 100);
    // Then a good record the dead-letter queue kept (its D1 write had failed).
    const user = uid("behind");
    const r = usage(user);
    await env.USAGE_DLQ.send(r, { contentType: "json" });
    await until(
      async () => (await q(`SELECT 1 FROM failed_usage WHERE allocation_id = ? AND status = 'failed'`, r.allocationId)).length === 1,
      15_000,
      100,
    );
    const rep = await call("POST", "/admin/billing/failed-usage/replay", { token: await admin(), body: { all: true } });
    expect(rep.status).toBe(200);
    expect(rep.body.results).toContainEqual({ allocationId: r.allocationId, status: "recorded", amountMinor: 25, currency: "USD" });
    await expectExactlyOnce(expect, [r.allocationId]);
    expect((await accountsOf([user])).get(user)).toMatchObject({ balance: 975, ledgerSum: 975, charges: 1 });
    // Nothing bookable is left; the malformed ones stay for an operator, and booking is not repeated.
    const again = await call("POST", "/admin/billing/failed-usage/replay", {
      token: await admin(),
      body: { all: true },
    });
    expect(again.body.results.filter((x: { status: string }) => x.status === "recorded")).toEqual([]);
    expect(again.body.remaining).toBeGreaterThanOrEqual(junkIds.length);
    expect(await invalidCount()).toBe(junkIds.length);
    await expectExactlyOnce(expect, [r.allocationId]);
    expect((await accountsOf([user])).get(user)).toMatchObject({ balance: 975, ledgerSum: 975, charges: 1 });
  });
});

// ---- 3. reconciliation over every account: runs alone (it would heal others' records) -----------

describe("invariant 3 — reconciliation over all accounts (runs alone)", () => {
  it(
    "an operator's reconcile over a window, without userId, checks every account — " +
      "also beyond the first 100 — and finds a missing record",
    async ({ expect }) => {
      const t0 = Date.now();
      // More than a cron run's worth of accounts, all older than the one with the missing record.
      await pmap(
        Array.from({ length: 105 }, () => uid("bulk")),
        10,
        async (u) => {
          const r = await call("GET", `/api/internal/balance/user/${u}`, { service: SERVICE_TOKEN });
          if (r.status !== 200) throw new Error(`balance ${r.status}`);
        },
      );
      const total = (await one<{ n: number }>("SELECT COUNT(*) AS n FROM accounts")).n;
      expect(total).toBeGreaterThanOrEqual(105);
      const pool = uid("inv3-recon");
      await registerDevice(pool, specOf(1));
      const user = await dearUser("late");
      await exec(
        `CREATE TRIGGER late_block BEFORE INSERT ON usage_records WHEN NEW.user_id = '${user}' BEGIN SELECT RAISE(ABORT, ` +
          `'injected: usage down'); END`,
      );
      let id = "";
      const window = () => ({
        from: new Date(t0 - 60_000).toISOString(),
        to: new Date(Date.now() + 60_000).toISOString(),
      });
      try {
        const a = await allocate(user, pool, 30);
        id = a.allocationId;
        await sleep(1100);
        expect(
          (
            await call("POST", "/scheduler/devices/release", {
              token: await tokenFor(user),
              body: { deviceId: a.deviceId },
            })
          ).status,
        ).toBe(200);
        for (let pass = 0; pass < 2; pass++) {
          const r = await call("POST", "/admin/billing/reconcile", {
            token: await admin(),
            body: { ...window(), heal: false },
          });
          expect(r.status).toBe(200);
          expect(r.body).toMatchObject({ users: total + 1, remaining: false, missingUsage: 1, healed: 0 });
          expect(r.body.differences.map((d: { userId: string; missingUsage: string[] }) => [d.userId, d.missingUsage])).toEqual([
            [user, [id]],
          ]);
        }
      } finally {
        await exec("DROP TRIGGER IF EXISTS late_block");
      }
      // Healed by whichever comes first, the queue's retry or this pass; either way once.
      const heal = await call("POST", "/admin/billing/reconcile", { token: await admin(), body: window() });
      expect(heal.body).toMatchObject({ stillMissing: 0, balanceDrift: 0, mismatched: 0 });
      await until(() => allBooked([id]), 10_000, 100);
      await sleep(QUEUE_QUIET_MS);
      await expectExactlyOnce(expect, [id]);
      const again = await call("POST", "/admin/billing/reconcile", { token: await admin(), body: window() });
      expect(again.body).toMatchObject({
        missingUsage: 0,
        missingCharges: 0,
        mismatched: 0,
        healed: 0,
        balanceDrift: 0,
        differences: [],
      });
      expect(again.body.checked).toBeGreaterThanOrEqual(1);
      // An operator's `to` in the future is checked over every account (`from` filled in) and moves
      // no watermark: the cron must still look at what ends from now on. (Before issue 20 a window
      // without `from` ran the cron's pass: the 100 accounts checked longest ago.)
      const future = await call("POST", "/admin/billing/reconcile", {
        token: await admin(),
        body: { to: new Date(Date.now() + 86_400_000).toISOString() },
      });
      expect(future.status).toBe(200);
      expect(future.body).toMatchObject({ users: total + 1, defaulted: ["from"] });
      expect(await one<{ n: number }>("SELECT COUNT(*) AS n FROM accounts WHERE reconciled_through > ?", Date.now())).toEqual({ n: 0 });
      // The cron's pass given a later `to` checks it, but moves no watermark past `now − grace` (a
      // new account starts at its opening time).
      const cronPass = await reconcile(env as never, { to: Date.now() + 86_400_000 });
      expect(cronPass.users).toBe(100);
      expect(await one<{ n: number }>("SELECT COUNT(*) AS n FROM accounts WHERE reconciled_through > ?", Date.now())).toEqual({ n: 0 });
    },
  );
});

// ---- 4. objects restarted while allocations end: runs alone (it aborts every object) ------------

describe("invariant 3 — restarts while allocations end (runs alone)", () => {
  it(
    "every object is aborted repeatedly while releases and expiry alarms are in flight: each allocation still ends billed once, " +
      "by the queue alone",
    async ({ expect }) => {
      const t0 = Date.now();
      const pool = uid("inv3-crash");
      for (let i = 0; i < 12; i++) await registerDevice(pool, specOf(i + 3));
      const users = await Promise.all(Array.from({ length: 6 }, () => dearUser("crash")));
      // Per user one allocation that expires at 2 s (ended by alarm) and one released by hand.
      const allocs = await pmap(
        users.flatMap(
          (u) =>
            [
              [u, 2],
              [u, 30],
            ] as const,
        ),
        12,
        ([u, seconds]) => allocate(u, pool, seconds),
      );
      const expiresAt = Math.min(...allocs.map((a) => Date.parse(a.expiresAt)));
      await sleep(Math.max(0, expiresAt - Date.now() - 300));
      // Around the expiry moment: releases spread over ~300 ms, every object aborted every ~25 ms for ~700 ms.
      const releases = allocs
        .filter((a) => Date.parse(a.expiresAt) - Date.parse(a.allocatedAt) > 5_000)
        .map(async (a, i) => {
          await sleep(i * 50);
          try {
            return (
              await call("POST", "/scheduler/devices/release", {
                token: await tokenFor(a.userId),
                body: { deviceId: a.deviceId },
              })
            ).status;
          } catch {
            return "thrown";
          }
        });
      for (let i = 0; i < 28; i++) {
        await sleep(5 + ((i * 7) % 30));
        await abortAllDurableObjects();
      }
      const statuses = await Promise.all(releases);
      // Whatever the releases answered, every allocation ends (released, by expiry, or at 30 s at worst).
      await until(async () => (await Promise.all(users.map(activeCount))).every((n) => n === 0), 20_000, 200);
      const endedAll = (await Promise.all(users.map(ended))).flat();
      expect(endedAll.map((e) => e.allocationId).sort()).toEqual(allocs.map((a) => a.allocationId).sort());
      const billable = endedAll.filter((e) => e.reason !== "orphaned");
      await until(() => allBooked(billable.map((e) => e.allocationId)), 20_000, 200);
      await sleep(QUEUE_QUIET_MS);
      const b = await expectExactlyOnce(
        expect,
        billable.map((e) => e.allocationId),
      );
      for (const e of billable) {
        const x = b.get(e.allocationId)!;
        expect([x.reason, x.duration, x.amount, x.source]).toEqual([
          e.reason,
          e.durationSeconds,
          charge(price(FAST, e, e.durationSeconds)),
          "device",
        ]);
      }
      // Nothing billed for what the user was told never happened.
      const orphaned = endedAll.filter((e) => e.reason === "orphaned").map((e) => e.allocationId);
      if (orphaned.length) expect([...(await booked(orphaned)).values()].map((x) => x.usage + x.charges)).toEqual(orphaned.map(() => 0));
      const rec = await Promise.all(users.map((u) => reconcileUser(u, t0 - 60_000)));
      expect(rec.map((r) => [r.missingUsage, r.missingCharges, r.mismatched, r.balanceDrift])).toEqual(users.map(() => [0, 0, 0, 0]));
      const acc = await accountsOf(users);
      for (const u of users) expect(acc.get(u)!.balance).toBe(acc.get(u)!.ledgerSum);
      console.log(
        `[invariant 3, restarts] release answers: ` +
          `${JSON.stringify(statuses.reduce<Record<string, number>>((m, s) => ({ ...m, [s]: (m[s] ?? 0) + 1 }), {}))}; reasons: ` +
          `${JSON.stringify(endedAll.reduce<Record<string, number>>((m, e) => ({ ...m, [e.reason]: (m[e.reason] ?? 0) + 1 }), {}))}`,
      );
    },
  );
});
