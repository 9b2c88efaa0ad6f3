/**
 * Invariant 3: every ended allocation yields exactly one usage record and one charge —
 * nothing lost when the Queue, the consumer or D1 fails, nothing doubled on redelivery.
 *
 * Everything runs through the real queue (device-usage → consumer → device-usage-dlq →
 * dead-letter consumer), real D1 and the real objects. Failures are injected in D1 itself,
 * without mocks: triggers that RAISE on inserts into usage_records / ledger / failed_usage
 * (the whole D1 batch rolls back). Triggers are scoped to the users of one test (by user id
 * prefix), so the tests here run side by side. The tests that change what every test sees (a
 * renamed table, replaying or reconciling everything, aborting every object) are in
 * test/invariants-billing-global.test.ts: a file of their own has storage of its own.
 *
 * The consumer's own logs are the count of injected failures: console.error is collected
 * (not printed) for the whole file.
 */
import { env } from "cloudflare:workers";
import { describe, it } from "vitest";
import type { UsageRecord } from "../src/domain/types";
import { admin, asReport, call, registerDevice, SERVICE_TOKEN, sleep, tokenFor, uid, until } from "./helpers";
import { QUEUE_QUIET_MS } from "./timing";
import {
  invariant3Setup,
  FAST,
  STANDARD,
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
  logsFor,
  one,
  pmap,
  price,
  q,
  reconcileUser,
  specOf,
  usage,
  type Alloc,
} from "./invariant3";

invariant3Setup();

// ---- 5. everything else, concurrently (failures scoped by user id prefix) -----------------------

describe.concurrent("invariant 3 — under failures", () => {
  it(
    "headline: ≥200 allocations ended every way while ~30% of usage/ledger writes fail at random; a share goes to the DLQ, " +
      "a share is dropped; after recovery 0 lost, 0 doubled",
    async ({ expect }) => {
      const t0 = Date.now();
      const POOLS = 5;
      const PER_POOL = 12; // devices per pool = allocations per pool per round (6 users × 2)
      const ROUNDS = 4;
      const adminToken = await admin();
      // Users: even ones on the dear plan, odd ones on standard; all with money to spare.
      const users: string[] = [];
      for (let i = 0; i < POOLS * (PER_POOL / 2); i++) users.push(i % 2 === 0 ? await dearUser("hl") : uid("hl"));
      await pmap(users, 10, async (u) => {
        const t = await call("POST", `/billing/users/${u}/top-ups?create=true`, {
          token: adminToken,
          body: { amountMinor: 20_000, paymentId: uid("pay") },
        });
        if (t.status !== 201) throw new Error(`top-up ${t.status}`);
      });
      const ratesOf = (u: string) => (users.indexOf(u) % 2 === 0 ? FAST : STANDARD);
      const pools = Array.from({ length: POOLS }, () => uid("hl-pool"));
      await pmap(
        pools.flatMap((p, pi) => Array.from({ length: PER_POOL }, (_, i) => [p, pi * PER_POOL + i] as const)),
        10,
        ([p, i]) => registerDevice(p, specOf(i)),
      );

      await exec(
        "CREATE TABLE IF NOT EXISTS chaos_doomed (allocation_id TEXT PRIMARY KEY, lost INTEGER NOT NULL)",
        // ~30% of booking attempts fail: 18% at the usage insert, 15% at the charge (after the usage insert, same batch).
        `CREATE TRIGGER hl_chaos_usage BEFORE INSERT ON usage_records WHEN NEW.user_id LIKE 'hl-%' AND (abs(random()) % 100 < 18 ` +
          `OR NEW.allocation_id IN (SELECT allocation_id FROM chaos_doomed)) BEGIN SELECT RAISE(ABORT, 'injected: usage'); END`,
        `CREATE TRIGGER hl_chaos_ledger BEFORE INSERT ON ledger WHEN NEW.user_id LIKE 'hl-%' AND NEW.kind = 'charge' ` +
          `AND abs(random()) % 100 < 15 BEGIN SELECT RAISE(ABORT, 'injected: ledger'); END`,
        // The dead-letter store refuses the "lost" share: the queue drops those after the DLQ's retries.
        `CREATE TRIGGER hl_chaos_dlq BEFORE INSERT ON failed_usage WHEN NEW.allocation_id IN (SELECT allocation_id FROM chaos_doomed ` +
          `WHERE lost = 1) BEGIN SELECT RAISE(ABORT, 'injected: dead letter'); END`,
      );
      type Method = "release" | "expire" | "force" | "maintenance" | "remove";
      const CYCLE: Method[] = ["release", "release", "expire", "force", "release", "maintenance", "expire", "remove", "release", "force"];
      const created: (Alloc & { method: Method })[] = [];
      const doomed: string[] = [];
      const lost: string[] = [];
      // Racers: another service re-reports released allocations, and reconciliation heals, while the
      // queue is still retrying the same records under the chaos.
      const external = { recorded: 0, duplicate: 0, failed: 0, refused: 0 };
      const midRun = { checked: 0, healed: 0, stillMissing: 0 };
      try {
        for (let round = 0; round < ROUNDS; round++) {
          // Every pool has all its devices free again.
          await until(
            async () => {
              for (const p of pools)
                if (
                  (await call("GET", `/scheduler/devices/available?pool=${p}&limit=50`, { token: adminToken })).body.items.length < PER_POOL
                )
                  return false;
              return true;
            },
            20_000,
            100,
          );
          const plan = users.flatMap((u, ui) =>
            [0, 1].map((k) => ({ u, pool: pools[ui % POOLS]!, method: CYCLE[(round * 7 + ui * 2 + k) % CYCLE.length]! })),
          );
          const allocs = await pmap(plan, 20, async (p) => ({
            ...(await allocate(p.u, p.pool, p.method === "expire" ? 2 : 30)),
            method: p.method,
          }));
          created.push(...allocs);
          const manual = allocs.filter((a) => a.method !== "expire");
          if (round === 0) {
            // A fixed share always fails (→ DLQ); part of it cannot even be kept there (→ dropped).
            manual.filter((_, i) => i % 5 === 0).forEach((a, i) => (i % 2 === 0 ? lost : doomed).push(a.allocationId));
            for (const id of [...doomed, ...lost])
              await env.DB.prepare("INSERT INTO chaos_doomed VALUES (?, ?)")
                .bind(id, lost.includes(id) ? 1 : 0)
                .run();
          }
          await sleep(1500);
          await pmap(manual, 20, async (a) => {
            let r;
            if (a.method === "release")
              r = await call("POST", "/scheduler/devices/release", {
                token: await tokenFor(a.userId),
                body: { deviceId: a.deviceId },
              });
            else if (a.method === "force") r = await call("POST", `/admin/devices/${a.deviceId}/force-release`, { token: adminToken });
            else if (a.method === "maintenance") {
              r = await call("POST", `/admin/devices/${a.deviceId}/maintenance`, { token: adminToken });
              const on = await call("POST", `/admin/devices/${a.deviceId}/online`, { token: adminToken });
              if (on.status !== 200) throw new Error(`online ${on.status} ${JSON.stringify(on.body)}`);
            } else {
              r = await call("DELETE", `/admin/devices/${a.deviceId}`, { token: adminToken });
              await registerDevice(a.pool, { cpuCores: a.cpuCores, memoryMB: a.memoryMB, storageMB: a.storageMB });
            }
            if (r.status !== 200) throw new Error(`${a.method} ${a.deviceId}: ${r.status} ${JSON.stringify(r.body)}`);
            if (a.method === "release" && round > 0) {
              const e = r.body as { durationSeconds: number; allocatedAt: string; releasedAt: string; reason: string };
              const rep = await call("POST", "/api/internal/metering/device-usage", {
                service: SERVICE_TOKEN,
                body: {
                  allocationId: a.allocationId,
                  deviceId: a.deviceId,
                  userId: a.userId,
                  durationSeconds: e.durationSeconds,
                  cpuCores: a.cpuCores,
                  memoryMB: a.memoryMB,
                  storageMB: a.storageMB,
                  allocatedAt: e.allocatedAt,
                  releasedAt: e.releasedAt,
                  reason: e.reason,
                },
              });
              // The service's own allocations are booked from their device's record only: a report is refused, nothing written.
              if (rep.status !== 409 || rep.body.error.code !== "OWN_ALLOCATION")
                throw new Error(`report ${rep.status} ${JSON.stringify(rep.body)}`);
              external.refused++;
            }
          });
          // The expiring ones end by alarm; every user object knows all its allocations ended.
          await until(async () => (await Promise.all(users.map(activeCount))).every((n) => n === 0), 20_000, 100);
          if (round === 1) {
            // Reconciliation racing the queue's retries (the chaos hits its writes too).
            for (const r of await Promise.all(users.map((u) => reconcileUser(u, t0 - 60_000)))) {
              midRun.checked += r.checked;
              midRun.healed += r.healed;
              midRun.stillMissing += r.stillMissing;
            }
          }
        }
        const ids = created.map((a) => a.allocationId);
        const fine = ids.filter((id) => !doomed.includes(id) && !lost.includes(id));
        // While the chaos goes on, the queue's retries book everything but the doomed share.
        await until(() => allBooked(fine), 45_000, 250);
        // The doomed share reaches the dead-letter store; the lost share is refused there on every
        // one of the DLQ's attempts (1 + max_retries 10) and dropped by the queue.
        await until(
          async () => {
            const kept = await q<{ id: string }>(
              `SELECT allocation_id AS id FROM failed_usage WHERE allocation_id IN (${doomed.map(() => "?").join(",")})`,
              ...doomed,
            );
            const refused = new Map<string, number>();
            for (const l of logsFor("dead letter could not be stored", lost))
              refused.set(l.allocationId!, Math.max(refused.get(l.allocationId!) ?? 0, l.attempts ?? 0));
            return kept.length === doomed.length && lost.every((id) => (refused.get(id) ?? 0) >= 11);
          },
          60_000,
          250,
        );
      } finally {
        await exec(
          "DROP TRIGGER IF EXISTS hl_chaos_usage",
          "DROP TRIGGER IF EXISTS hl_chaos_ledger",
          "DROP TRIGGER IF EXISTS hl_chaos_dlq",
          "DROP TABLE IF EXISTS chaos_doomed",
        );
      }
      const ids = created.map((a) => a.allocationId);
      await sleep(QUEUE_QUIET_MS);
      // The lost share is really gone from the queue path: nothing books it after recovery.
      const gone = await booked(lost);
      expect(
        [...gone.values()].every((b) => b.usage === 0 && b.charges === 0),
        "dropped records must not be booked by the queue",
      ).toBe(true);
      expect(
        await one<{ n: number }>(
          `SELECT COUNT(*) AS n FROM failed_usage WHERE allocation_id IN (${lost.map(() => "?").join(",")})`,
          ...lost,
        ),
      ).toEqual({ n: 0 });

      // Recovery 1: replay what the dead-letter store kept.
      const kept = (
        await q<{ id: string; attempts: number }>(
          "SELECT allocation_id AS id, attempts FROM failed_usage WHERE user_id LIKE 'hl-%' AND status = 'failed'",
        )
      ).map((r) => r.id);
      expect(kept).toEqual(expect.arrayContaining(doomed));
      const replay = await call("POST", "/admin/billing/failed-usage/replay", {
        token: adminToken,
        body: { allocationIds: kept },
      });
      expect(replay.status, JSON.stringify(replay.body)).toBe(200);
      expect(replay.body.failed).toBe(0);
      const replayedRecorded = replay.body.results.filter((r: { status: string }) => r.status === "recorded").length;
      expect(replayedRecorded).toBe(kept.length);

      // Recovery 2: reconcile every user over the test's window (explicit from/to).
      const firstPass = await Promise.all(users.map((u) => reconcileUser(u, t0 - 60_000)));
      const healed = firstPass.reduce((n, r) => n + r.healed, 0);
      const missingFound = firstPass.flatMap((r) => r.differences.flatMap((d) => d.missingUsage));
      expect(firstPass.reduce((n, r) => n + r.stillMissing, 0)).toBe(0);
      expect(missingFound.sort()).toEqual([...lost].sort());
      expect(healed).toBe(lost.length);
      const secondPass = await Promise.all(users.map((u) => reconcileUser(u, t0 - 60_000)));
      expect(secondPass.map((r) => [r.missingUsage, r.missingCharges, r.mismatched, r.healed, r.balanceDrift])).toEqual(
        users.map(() => [0, 0, 0, 0, 0]),
      );
      expect(secondPass.reduce((n, r) => n + r.checked, 0)).toBe(ids.length);

      // The check: every allocation a user object knows as ended has exactly one usage row and one
      // charge at the right price; balances are the sum of their ledger, moved once per charge.
      const endedByUser = await Promise.all(users.map(ended));
      const endedAll = endedByUser.flat();
      expect(endedAll.length).toBe(ids.length);
      expect(new Set(endedAll.map((e) => e.allocationId))).toEqual(new Set(ids));
      const b = await expectExactlyOnce(expect, ids);
      let lostCount = 0;
      let doubled = 0;
      const reasons: Record<string, number> = {};
      const userOf = new Map(created.map((a) => [a.allocationId, a.userId]));
      const wrongPrice: unknown[] = [];
      for (const e of endedAll) {
        const x = b.get(e.allocationId)!;
        if (x.usage === 0 || x.charges === 0) lostCount++;
        doubled += Math.max(0, x.usage - 1) + Math.max(0, x.charges - 1);
        reasons[x.reason!] = (reasons[x.reason!] ?? 0) + 1;
        expect(x.reason).toBe(e.reason);
        expect(x.duration).toBe(e.durationSeconds);
        const amount = charge(price(ratesOf(userOf.get(e.allocationId)!), e, e.durationSeconds));
        if (x.amount !== amount) wrongPrice.push({ id: e.allocationId, amount: x.amount, want: amount, seconds: e.durationSeconds });
      }
      expect(wrongPrice).toEqual([]);
      const want = (m: Method) => created.filter((a) => a.method === m).length;
      expect(reasons).toEqual({
        released: want("release"),
        expired: want("expire"),
        force_released: want("force"),
        maintenance: want("maintenance"),
        removed: want("remove"),
      });
      const acc = await accountsOf(users);
      for (const [ui, u] of users.entries()) {
        const a = acc.get(u)!;
        const mine = endedByUser[ui]!;
        const expected = mine.reduce((n, e) => n + price(ratesOf(u), e, e.durationSeconds), 0);
        if (a.balance !== a.ledgerSum) doubled++;
        expect(a.balance).toBe(a.ledgerSum);
        expect(a.charges).toBe(mine.length);
        expect(a.chargeSum).toBe(charge(expected));
        expect(a.balance).toBe(1000 + 20_000 + (ui % 2 === 0 ? 20_000 : 0) - expected);
      }
      // No usage row or charge for these users beyond their allocations.
      const extra = await one<{ u: number; c: number }>(
        `SELECT (SELECT COUNT(*) FROM usage_records WHERE user_id LIKE 'hl-%') AS u, (SELECT COUNT(*) FROM ledger ` +
          `WHERE user_id LIKE 'hl-%' AND kind = 'charge') AS c`,
      );
      expect(extra).toEqual({ u: ids.length, c: ids.length });
      expect(lostCount).toBe(0);
      expect(doubled).toBe(0);

      expect(external.refused).toBeGreaterThan(0);
      expect(external.recorded + external.duplicate + external.failed).toBe(0);
      expect(midRun.checked).toBeGreaterThan(0);
      const writeFailures = logsFor("usage write failed", ids).length;
      const randomFailures = logsFor(
        "usage write failed",
        ids.filter((id) => !doomed.includes(id) && !lost.includes(id)),
      ).length;
      const dlqStoreFailures = logsFor("dead letter could not be stored", ids).length;
      const chargedTotal = -[...b.values()].reduce((n, x) => n + (x.amount ?? 0), 0);
      expect(randomFailures, "the random chaos must actually have hit").toBeGreaterThan(ids.length * 0.1);
      console.log(
        `[invariant 3] allocations ended=${ids.length} (released ${reasons.released}, expired ${reasons.expired}, ` +
          `force_released ${reasons.force_released}, ` +
          `maintenance ${reasons.maintenance}, removed ${reasons.removed}) ` +
          `users=${users.length} devices=${POOLS * PER_POOL}+${want("remove")} replaced; ` +
          `injected failures observed: ${writeFailures} failed record writes retried by the queue (${randomFailures} random, ` +
          `${writeFailures - randomFailures} on the doomed share) + ${dlqStoreFailures} refused dead-letter stores; ` +
          `reached DLQ and kept=${kept.length} → replayed=${replayedRecorded}; ` +
          `dropped by the queue=${lost.length} → healed by reconcile=${healed}; ` +
          `racing the queue: re-reported by a service ${external.recorded + external.duplicate + external.failed} ` +
          `(recorded ${external.recorded}, duplicate ${external.duplicate}, failed ${external.failed}), ` +
          `mid-chaos reconcile checked ${midRun.checked} healed ${midRun.healed} (${midRun.stillMissing} failed, left to the queue); ` +
          `charged ${chargedTotal} cents; lost=${lostCount} doubled=${doubled}; ${((Date.now() - t0) / 1000).toFixed(1)} s`,
      );
    },
  );

  it(
    "D1 refuses charges long enough to exhaust the queue's retries: kept in failed_usage, nothing half-booked; replay books once, " +
      "again changes nothing",
    async ({ expect }) => {
      const pool = uid("inv3-dlq");
      const users = [await dearUser("dlq4"), await dearUser("dlq4")];
      for (let i = 0; i < 4; i++) await registerDevice(pool, specOf(i + 1));
      await exec(
        `CREATE TRIGGER dlq4_refuse BEFORE INSERT ON ledger WHEN NEW.user_id LIKE 'dlq4-%' AND NEW.kind = 'charge' BEGIN ` +
          `SELECT RAISE(ABORT, 'injected: ledger down'); END`,
      );
      let ids: string[] = [];
      try {
        const allocs = await pmap([users[0]!, users[0]!, users[1]!, users[1]!], 4, (u) => allocate(u, pool, 30));
        ids = allocs.map((a) => a.allocationId);
        await sleep(1200);
        for (const a of allocs.slice(0, 3))
          expect(
            (
              await call("POST", "/scheduler/devices/release", {
                token: await tokenFor(a.userId),
                body: { deviceId: a.deviceId },
              })
            ).status,
          ).toBe(200);
        expect((await call("POST", `/admin/devices/${allocs[3]!.deviceId}/force-release`, { token: await admin() })).status).toBe(200);
        await until(
          async () =>
            (await q(`SELECT 1 FROM failed_usage WHERE status = 'failed' AND allocation_id IN (${ids.map(() => "?").join(",")})`, ...ids))
              .length === 4,
          45_000,
          250,
        );
        // Every attempt (1 + max_retries 10) failed, and none left half a booking (the usage insert
        // ran first in the same batch and was rolled back with the charge).
        for (const id of ids) expect(logsFor("usage write failed", [id]).length).toBeGreaterThanOrEqual(11);
        expect([...(await booked(ids)).values()].map((b) => [b.usage, b.charges])).toEqual(ids.map(() => [0, 0]));
        const acc = await accountsOf(users);
        for (const u of users) expect(acc.get(u)).toMatchObject({ balance: 21_000, ledgerSum: 21_000, charges: 0 });
        const list = await call("GET", "/admin/billing/failed-usage?status=failed&limit=200", { token: await admin() });
        expect(
          list.body.items
            .filter((i: { allocationId: string }) => ids.includes(i.allocationId))
            .map((i: { record: UsageRecord }) => i.record.allocationId)
            .sort(),
        ).toEqual([...ids].sort());
        // A replay while D1 still refuses loses nothing: the records stay open.
        const early = await call("POST", "/admin/billing/failed-usage/replay", {
          token: await admin(),
          body: { allocationIds: ids },
        });
        expect(early.status).toBe(200);
        expect(early.body.failed).toBe(4);
        expect(
          (
            await q<{ status: string }>(`SELECT status FROM failed_usage WHERE allocation_id IN (${ids.map(() => "?").join(",")})`, ...ids)
          ).map((r) => r.status),
        ).toEqual(ids.map(() => "failed"));
      } finally {
        await exec("DROP TRIGGER IF EXISTS dlq4_refuse");
      }
      // Two operators replay at once: each record is recorded by exactly one of them.
      const [r1, r2] = await Promise.all(
        [1, 2].map(async () => call("POST", "/admin/billing/failed-usage/replay", { token: await admin(), body: { allocationIds: ids } })),
      );
      expect([r1!.status, r2!.status]).toEqual([200, 200]);
      const outcomes = [...r1!.body.results, ...r2!.body.results] as { allocationId: string; status: string }[];
      for (const id of ids) expect(outcomes.filter((o) => o.allocationId === id && o.status === "recorded").length, id).toBe(1);
      expect(outcomes.filter((o) => o.status === "failed")).toEqual([]);
      const b = await expectExactlyOnce(expect, ids);
      const endedAll = (await Promise.all(users.map(ended))).flat();
      for (const e of endedAll) expect(b.get(e.allocationId)!.amount).toBe(charge(price(FAST, e, e.durationSeconds)));
      expect(endedAll.map((e) => b.get(e.allocationId)!.source)).toEqual(endedAll.map(() => "replay"));
      const snapshot = await accountsOf(users);
      // Replaying again changes nothing.
      const again = await call("POST", "/admin/billing/failed-usage/replay", {
        token: await admin(),
        body: { allocationIds: ids },
      });
      expect(again.body.results.map((r: { status: string }) => r.status)).toEqual(ids.map(() => "already_done"));
      expect(await accountsOf(users)).toEqual(snapshot);
      await expectExactlyOnce(expect, ids);
      for (const u of users) {
        const a = snapshot.get(u)!;
        expect(a.balance).toBe(a.ledgerSum);
        expect(a.charges).toBe(2);
      }
      expect(
        (
          await q<{ status: string }>(`SELECT status FROM failed_usage WHERE allocation_id IN (${ids.map(() => "?").join(",")})`, ...ids)
        ).map((r) => r.status),
      ).toEqual(ids.map(() => "replayed"));
    },
  );

  it("the dead-letter store fails too: the queue drops the records; reconciliation finds them missing and heals them once", async ({
    expect,
  }) => {
    const t0 = Date.now();
    const pool = uid("inv3-lost");
    const users = [await dearUser("lost5"), await dearUser("lost5")];
    for (let i = 0; i < 3; i++) await registerDevice(pool, specOf(i + 2));
    await exec(
      `CREATE TRIGGER lost5_usage BEFORE INSERT ON usage_records WHEN NEW.user_id LIKE 'lost5-%' BEGIN SELECT RAISE(ABORT, ` +
        `'injected: usage down'); END`,
      `CREATE TRIGGER lost5_dlq BEFORE INSERT ON failed_usage WHEN NEW.user_id LIKE 'lost5-%' BEGIN SELECT RAISE(ABORT, ` +
        `'injected: dead letters down'); END`,
    );
    let ids: string[] = [];
    try {
      const [a, b] = [await allocate(users[0]!, pool, 30), await allocate(users[0]!, pool, 2)];
      const c = await allocate(users[1]!, pool, 30);
      ids = [a.allocationId, b.allocationId, c.allocationId];
      await sleep(1500);
      expect(
        (
          await call("POST", "/scheduler/devices/release", {
            token: await tokenFor(a.userId),
            body: { deviceId: a.deviceId },
          })
        ).status,
      ).toBe(200);
      expect((await call("POST", `/admin/devices/${c.deviceId}/force-release`, { token: await admin() })).status).toBe(200);
      // b expires by alarm. All three exhaust the queue's retries, then the DLQ's.
      await until(
        async () => ids.every((id) => logsFor("dead letter could not be stored", [id]).some((l) => (l.attempts ?? 0) >= 11)),
        60_000,
        250,
      );
      expect(ids.map((id) => logsFor("usage write failed", [id]).length >= 11)).toEqual([true, true, true]);
      await sleep(QUEUE_QUIET_MS);
    } finally {
      await exec("DROP TRIGGER IF EXISTS lost5_usage", "DROP TRIGGER IF EXISTS lost5_dlq");
    }
    await sleep(QUEUE_QUIET_MS);
    // Gone from every path but the user objects' own record.
    expect([...(await booked(ids)).values()].map((x) => [x.usage, x.charges])).toEqual(ids.map(() => [0, 0]));
    expect(await q(`SELECT 1 FROM failed_usage WHERE allocation_id IN (${ids.map(() => "?").join(",")})`, ...ids)).toEqual([]);
    // A report without healing names exactly them.
    const look = await Promise.all(users.map((u) => reconcileUser(u, t0 - 60_000, false)));
    expect(look.flatMap((r) => r.differences.flatMap((d) => d.missingUsage)).sort()).toEqual([...ids].sort());
    expect(look.map((r) => r.healed)).toEqual([0, 0]);
    expect([...(await booked(ids)).values()].map((x) => x.usage)).toEqual([0, 0, 0]);
    // Healing books them once; the next pass finds nothing missing and heals nothing.
    const heal = await Promise.all(users.map((u) => reconcileUser(u, t0 - 60_000)));
    expect(heal.map((r) => [r.missingUsage, r.healed, r.stillMissing])).toEqual([
      [2, 2, 0],
      [1, 1, 0],
    ]);
    const again = await Promise.all(users.map((u) => reconcileUser(u, t0 - 60_000)));
    expect(again.map((r) => [r.checked, r.missingUsage, r.missingCharges, r.mismatched, r.healed, r.balanceDrift])).toEqual([
      [2, 0, 0, 0, 0, 0],
      [1, 0, 0, 0, 0, 0],
    ]);
    const bk = await expectExactlyOnce(expect, ids);
    const endedAll = (await Promise.all(users.map(ended))).flat();
    expect(endedAll.map((e) => e.reason).sort()).toEqual(["expired", "force_released", "released"]);
    for (const e of endedAll) {
      const x = bk.get(e.allocationId)!;
      expect([x.source, x.reason, x.duration, x.amount]).toEqual([
        "reconcile",
        e.reason,
        e.durationSeconds,
        charge(price(FAST, e, e.durationSeconds)),
      ]);
    }
    const acc = await accountsOf(users);
    for (const [i, u] of users.entries()) {
      const mine = endedAll.filter((e) => (i === 0 ? [ids[0], ids[1]] : [ids[2]]).includes(e.allocationId));
      expect(acc.get(u)).toMatchObject({
        balance: 21_000 - mine.reduce((n, e) => n + price(FAST, e, e.durationSeconds), 0),
        charges: mine.length,
      });
      expect(acc.get(u)!.balance).toBe(acc.get(u)!.ledgerSum);
    }
  });

  it("the same record sent to the queue many times, also concurrently and after it was booked, is booked once", async ({ expect }) => {
    const user = uid("dupq");
    const r = usage(user); // 1 h of 2 cores, 4 GB, 32 GB on standard: 24.552 → 25 cents
    await Promise.all([
      ...Array.from({ length: 5 }, () => env.USAGE_QUEUE.send(r, { contentType: "json" })),
      env.USAGE_QUEUE.sendBatch([r, r, r].map((body) => ({ body, contentType: "json" as const }))),
      env.USAGE_QUEUE.sendBatch([r, r].map((body) => ({ body, contentType: "json" as const }))),
    ]);
    await until(() => allBooked([r.allocationId]), 15_000, 50);
    // Late redeliveries, one of them altered (a redelivery must never rebook or rewrite).
    await env.USAGE_QUEUE.sendBatch(
      [r, { ...r, durationSeconds: 7200, releasedAt: 7_201_000 }, r].map((body) => ({
        body,
        contentType: "json" as const,
      })),
    );
    const sentinel = usage(uid("dupq-sentinel"));
    await env.USAGE_QUEUE.send(sentinel, { contentType: "json" });
    await until(() => allBooked([sentinel.allocationId]), 15_000, 50);
    await sleep(QUEUE_QUIET_MS);
    const b = await expectExactlyOnce(expect, [r.allocationId]);
    expect(b.get(r.allocationId)).toMatchObject({ amount: -25, duration: 3600, source: "device" });
    expect(price(STANDARD, r, 3600)).toBe(25);
    const acc = (await accountsOf([user])).get(user)!;
    expect(acc).toEqual({ userId: user, balance: 975, ledgerSum: 975, entries: 2, charges: 1, chargeSum: -25 });
  });

  it(
    "the same record reported by another service (single, batch, concurrent) is booked once; " +
      "a report of an allocation this service made is refused, and its device's record is booked once",
    async ({ expect }) => {
      const user = uid("dupext");
      const post = (body: object) => call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body: asReport(body) });
      // Someone else, with an older account, who must never be touched by this user's duplicates.
      const bystander = uid("dupext-other");
      expect((await call("GET", `/api/internal/balance/user/${bystander}`, { service: SERVICE_TOKEN })).body.balanceMinor).toBe(1000);
      const [a, b, c, d, e] = [
        usage(user),
        usage(user, { durationSeconds: 1800, releasedAt: 1_801_000, cpuCores: 4 }),
        usage(user, { durationSeconds: 61, releasedAt: 62_000, reason: "expired" }),
        usage(user, { durationSeconds: 7200, releasedAt: 7_201_000, memoryMB: 1536 }),
        usage(user, { durationSeconds: 5, releasedAt: 6_000, storageMB: 0 }),
      ];
      const p = (x: UsageRecord) => price(STANDARD, x, x.durationSeconds);
      const first = await post(a);
      expect(first.status).toBe(200);
      expect(first.body).toMatchObject({
        recorded: 1,
        duplicates: 0,
        failed: 0,
        results: [{ allocationId: a.allocationId, status: "recorded", amountMinor: p(a), currency: "USD" }],
      });
      expect((await post(a)).body).toMatchObject({
        recorded: 0,
        duplicates: 1,
        results: [{ allocationId: a.allocationId, status: "duplicate" }],
      });
      expect((await post({ ...a, durationSeconds: 3000 })).body).toMatchObject({ recorded: 0, duplicates: 1 });
      expect((await post([a, b])).body).toMatchObject({ recorded: 1, duplicates: 1 });
      expect((await post({ records: [b, c] })).body).toMatchObject({ recorded: 1, duplicates: 1 });
      // Concurrent: 8 single reports of d and 4 overlapping batches [d, e] at once.
      const storm = await Promise.all([...Array.from({ length: 8 }, () => post(d)), ...Array.from({ length: 4 }, () => post([e, d]))]);
      expect(storm.map((s) => s.status)).toEqual(storm.map(() => 200));
      const outcomes = storm.flatMap((s) => s.body.results as { allocationId: string; status: string }[]);
      expect(outcomes.filter((o) => o.allocationId === d.allocationId && o.status === "recorded")).toHaveLength(1);
      expect(outcomes.filter((o) => o.allocationId === e.allocationId && o.status === "recorded")).toHaveLength(1);
      expect(outcomes.filter((o) => o.status !== "recorded" && o.status !== "duplicate")).toEqual([]);
      const all = [a, b, c, d, e];
      const bk = await expectExactlyOnce(
        expect,
        all.map((x) => x.allocationId),
      );
      for (const x of all)
        expect(bk.get(x.allocationId)).toMatchObject({
          amount: charge(p(x)),
          duration: x.durationSeconds,
          source: "external",
        });
      const total = all.reduce((n, x) => n + p(x), 0);
      expect((await accountsOf([user])).get(user)).toEqual({
        userId: user,
        balance: 1000 - total,
        ledgerSum: 1000 - total,
        entries: 6,
        charges: 5,
        chargeSum: charge(total),
      });
      // A duplicate that names another user (a confused reporter) books nothing and moves no balance.
      const misattributed = await post({ ...a, userId: bystander });
      expect(misattributed.status).toBe(200);
      expect(misattributed.body).toMatchObject({ recorded: 0, duplicates: 1 });
      const accs = await accountsOf([user, bystander]);
      expect(accs.get(bystander)).toEqual({
        userId: bystander,
        balance: 1000,
        ledgerSum: 1000,
        entries: 1,
        charges: 0,
        chargeSum: 0,
      });
      expect(accs.get(user)).toMatchObject({ balance: 1000 - total, ledgerSum: 1000 - total });

      // A real allocation booked by the queue, then reported again by another service.
      const pool = uid("inv3-ext");
      await registerDevice(pool, specOf(3));
      await registerDevice(pool, specOf(4));
      const owner = await dearUser("dupext-dev");
      const token = await tokenFor(owner);
      const asRecord = (al: Alloc, rel: { durationSeconds: number; allocatedAt: string; releasedAt: string; reason: string }) => ({
        allocationId: al.allocationId,
        deviceId: al.deviceId,
        userId: owner,
        durationSeconds: rel.durationSeconds,
        cpuCores: al.cpuCores,
        memoryMB: al.memoryMB,
        storageMB: al.storageMB,
        allocatedAt: rel.allocatedAt,
        releasedAt: rel.releasedAt,
        reason: rel.reason,
      });
      const x = await allocate(owner, pool, 30);
      await sleep(1100);
      const xr = await call("POST", "/scheduler/devices/release", { token, body: { deviceId: x.deviceId } });
      expect(xr.status).toBe(200);
      await until(() => allBooked([x.allocationId]), 15_000, 50);
      const dup = await post(asRecord(x, xr.body));
      expect(dup.status).toBe(409);
      expect(dup.body.error).toMatchObject({ code: "OWN_ALLOCATION", details: { allocationId: x.allocationId } });
      // A re-booking attempt with another duration (the attack: 0 s, before the user releases) is refused the same way.
      expect((await post({ ...asRecord(x, xr.body), durationSeconds: 0 })).status).toBe(409);
      // And a race: the service reports while the device's message is still on its way.
      const y = await allocate(owner, pool, 30);
      await sleep(1100);
      const yr = await call("POST", "/scheduler/devices/release", { token, body: { deviceId: y.deviceId } });
      const race = await Promise.all([post(asRecord(y, yr.body)), post(asRecord(y, yr.body))]);
      expect(race.map((r) => r.status)).toEqual([409, 409]);
      await until(() => allBooked([y.allocationId]), 15_000, 50);
      await sleep(QUEUE_QUIET_MS); // the queue message has been consumed by now
      const bx = await expectExactlyOnce(expect, [x.allocationId, y.allocationId]);
      expect(bx.get(x.allocationId)!.source).toBe("device");
      expect(bx.get(y.allocationId)!.source).toBe("device");
      for (const [al, rel] of [
        [x, xr.body],
        [y, yr.body],
      ] as const)
        expect(bx.get(al.allocationId)!.amount).toBe(charge(price(FAST, al, rel.durationSeconds)));
      const oa = (await accountsOf([owner])).get(owner)!;
      expect(oa).toMatchObject({
        charges: 2,
        balance: oa.ledgerSum,
        chargeSum: charge(price(FAST, x, xr.body.durationSeconds) + price(FAST, y, yr.body.durationSeconds)),
      });
    },
  );

  it("an entry id reused for another user (a payment credited twice to different users) is refused and moves nobody's balance", async ({
    expect,
  }) => {
    const [first, other] = [uid("payer"), uid("payer-other")];
    const adminToken = await admin();
    // The other account is older, so its last ledger row comes before the reused one.
    expect((await call("GET", `/api/internal/balance/user/${other}`, { service: SERVICE_TOKEN })).status).toBe(200);
    const paymentId = uid("pay");
    const t1 = await call("POST", `/billing/users/${first}/top-ups?create=true`, {
      token: adminToken,
      body: { amountMinor: 500, paymentId },
    });
    expect(t1.status).toBe(201);
    const t2 = await call("POST", `/billing/users/${other}/top-ups?create=true`, {
      token: adminToken,
      body: { amountMinor: 500, paymentId },
    });
    expect(t2.status).toBe(409);
    expect(t2.body.error.code).toBe("PAYMENT_ID_REUSED");
    const acc = await accountsOf([first, other]);
    expect(acc.get(first)).toMatchObject({ balance: 1500, ledgerSum: 1500, entries: 2 });
    expect(acc.get(other)).toMatchObject({ balance: 1000, ledgerSum: 1000, entries: 1 });
    // Refused before anything is written: a user without an account does not get one from it.
    const nobody = uid("payer-new");
    expect(
      (await call("POST", `/billing/users/${nobody}/top-ups?create=true`, { token: adminToken, body: { amountMinor: 500, paymentId } }))
        .status,
    ).toBe(409);
    expect((await accountsOf([nobody])).size).toBe(0);
  });

  it(
    "expiry, force-release, maintenance and removal are billed like a release: " +
      "one usage row with their reason and the right duration, one charge",
    async ({ expect }) => {
      const pool = uid("inv3-ends");
      for (let i = 0; i < 5; i++) await registerDevice(pool, specOf(i + 5));
      const [u1, u2, u3] = [await dearUser("ends"), await dearUser("ends"), await dearUser("ends")];
      const exp = await allocate(u1!, pool, 2);
      const force = await allocate(u1!, pool, 30);
      const maint = await allocate(u2!, pool, 30);
      const rem = await allocate(u2!, pool, 30);
      const rel = await allocate(u3!, pool, 30);
      await sleep(2200);
      const adminToken = await admin();
      const f = await call("POST", `/admin/devices/${force.deviceId}/force-release`, { token: adminToken });
      expect(f.status).toBe(200);
      expect(f.body).toMatchObject({ allocationId: force.allocationId, reason: "force_released" });
      expect((await call("POST", `/admin/devices/${maint.deviceId}/maintenance`, { token: adminToken })).status).toBe(200);
      expect((await call("DELETE", `/admin/devices/${rem.deviceId}`, { token: adminToken })).status).toBe(200);
      const r = await call("POST", "/scheduler/devices/release", {
        token: await tokenFor(u3!),
        body: { deviceId: rel.deviceId },
      });
      expect(r.status).toBe(200);
      const all = [exp, force, maint, rem, rel];
      const ids = all.map((a) => a.allocationId);
      await until(() => allBooked(ids), 20_000, 100);
      await until(async () => (await Promise.all([u1!, u2!, u3!].map(activeCount))).every((n) => n === 0), 10_000, 100);
      await sleep(QUEUE_QUIET_MS);
      const bk = await expectExactlyOnce(expect, ids);
      const endedAll = new Map((await Promise.all([u1!, u2!, u3!].map(ended))).flat().map((e) => [e.allocationId, e]));
      const expect_ = [
        [exp, "expired"],
        [force, "force_released"],
        [maint, "maintenance"],
        [rem, "removed"],
        [rel, "released"],
      ] as const;
      for (const [al, reason] of expect_) {
        const e = endedAll.get(al.allocationId)!;
        const x = bk.get(al.allocationId)!;
        expect([e.reason, x.reason], al.allocationId).toEqual([reason, reason]);
        expect(x.duration).toBe(e.durationSeconds);
        expect(x.amount).toBe(charge(price(FAST, al, e.durationSeconds)));
        expect(x.amount!).toBeLessThan(0);
      }
      // Expiry bills exactly the allocated time (up to expiresAt, not the alarm's lag); the others what was held.
      expect(endedAll.get(exp.allocationId)!.durationSeconds).toBe(2);
      expect(Date.parse(endedAll.get(exp.allocationId)!.releasedAt)).toBe(Date.parse(exp.expiresAt));
      expect(f.body.durationSeconds).toBe(endedAll.get(force.allocationId)!.durationSeconds);
      for (const al of [force, maint, rem, rel]) expect(endedAll.get(al.allocationId)!.durationSeconds).toBeGreaterThanOrEqual(2);
      expect(r.body.durationSeconds).toBe(endedAll.get(rel.allocationId)!.durationSeconds);
      const acc = await accountsOf([u1!, u2!, u3!]);
      for (const [u, mine] of [
        [u1!, [exp, force]],
        [u2!, [maint, rem]],
        [u3!, [rel]],
      ] as const) {
        const sum = mine.reduce((n, al) => n + price(FAST, al, endedAll.get(al.allocationId)!.durationSeconds), 0);
        expect(acc.get(u)).toMatchObject({ balance: 21_000 - sum, ledgerSum: 21_000 - sum, charges: mine.length });
      }
    },
  );
});
