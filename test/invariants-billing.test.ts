/**
 * Invariant 3: every ended allocation yields exactly one usage record and one charge —
 * nothing lost when the Queue, the consumer or D1 fails, nothing doubled on redelivery.
 *
 * Everything runs through the real queue (device-usage → consumer → device-usage-dlq →
 * dead-letter consumer), real D1 and the real objects. Failures are injected in D1 itself,
 * without mocks: triggers that RAISE on inserts into usage_records / ledger / failed_usage
 * (the whole D1 batch rolls back), and a renamed pricing_plans table (the consumer cannot
 * read accounts). Triggers are scoped to the users of one test (by user id prefix), so the
 * tests of the concurrent group cannot disturb each other; the one global outage (rename)
 * runs alone first.
 *
 * The consumer's own logs are the count of injected failures: console.error is collected
 * (not printed) for the whole file.
 */
import { abortAllDurableObjects } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterAll, beforeAll, describe, it, vi, type ExpectStatic } from "vitest";
import type { UsageRecord } from "../src/domain/types";
import { admin, call, registerDevice, SERVICE_TOKEN, sleep, tokenFor, uid, until } from "./helpers";

// ---- prices: the rule of src/domain/pricing.ts, written out once more ---------------------------

interface Rates { base: number; cpu: number; memGB: number; storGB: number }
interface Spec { cpuCores: number; memoryMB: number; storageMB: number }

const STANDARD: Rates = { base: 2500, cpu: 1000, memGB: 500, storGB: 10 };
/** A dearer plan with odd rates, so short test allocations cost whole cents and rounding matters. */
const FAST_PLAN = "inv3-fast";
const FAST: Rates = { base: 2_500_123, cpu: 1_000_007, memGB: 500_003, storGB: 10_001 };

/** Micro-cents per second × seconds, rounded up to whole cents; memory and storage per GB of 1024 MB, pro rata (an independent copy of the rule in src/domain/pricing.ts). */
function price(r: Rates, s: Spec, seconds: number): number {
  const perSecondX1024 = BigInt(r.base) * 1024n + BigInt(r.cpu) * BigInt(s.cpuCores) * 1024n + BigInt(r.memGB) * BigInt(s.memoryMB) + BigInt(r.storGB) * BigInt(s.storageMB);
  const den = 1024n * 1_000_000n;
  return Number((perSecondX1024 * BigInt(seconds) + den - 1n) / den);
}

/** The ledger amount of a charge of `price` (a charge of 0 is stored as 0, not -0). */
const charge = (cents: number) => (cents === 0 ? 0 : -cents);

// ---- what the consumer logs ---------------------------------------------------------------------

interface LogLine { msg: string; allocationId?: string; attempts?: number; at: number }
const logs: LogLine[] = [];
let spy: { mockRestore(): void } | undefined;

beforeAll(async () => {
  spy = vi.spyOn(console, "error").mockImplementation((...args: unknown[]) => {
    const first = args[0];
    if (typeof first === "string" && first.startsWith("{")) {
      try {
        const o = JSON.parse(first) as { msg?: string; allocationId?: string; attempts?: number };
        logs.push({ msg: o.msg ?? "", allocationId: o.allocationId, attempts: o.attempts, at: Date.now() });
        return;
      } catch {
        /* not ours */
      }
    }
    logs.push({ msg: String(first), at: Date.now() });
  });
  const r = await call("PUT", `/admin/billing/pricing-plans/${FAST_PLAN}`, {
    token: await admin(),
    body: {
      name: "Invariant 3 (dear)", currency: "USD", basePerSecond: FAST.base, cpuCorePerSecond: FAST.cpu,
      memoryGBPerSecond: FAST.memGB, storageGBPerSecond: FAST.storGB, startingCredit: 1000, lowBalanceThreshold: 200,
    },
  });
  if (r.status !== 200) throw new Error(`pricing plan: ${r.status} ${JSON.stringify(r.body)}`);
});

afterAll(() => spy?.mockRestore());

const logsFor = (msg: string, ids: Iterable<string>) => {
  const set = new Set(ids);
  return logs.filter((l) => l.msg === msg && l.allocationId !== undefined && set.has(l.allocationId));
};

// ---- D1 reads -----------------------------------------------------------------------------------

const q = async <T>(sql: string, ...args: unknown[]): Promise<T[]> => (await env.DB.prepare(sql).bind(...args).all<T>()).results;
const one = async <T>(sql: string, ...args: unknown[]): Promise<T> => (await q<T>(sql, ...args))[0]!;

interface Booked { usage: number; charges: number; amount: number | null; duration: number | null; reason: string | null; source: string | null }

/** Per allocation: how many usage rows and charges D1 holds (any number, not just 0/1), and what they say. */
async function booked(ids: string[]): Promise<Map<string, Booked>> {
  const out = new Map<string, Booked>(ids.map((id) => [id, { usage: 0, charges: 0, amount: null, duration: null, reason: null, source: null }]));
  // D1 binds at most 100 parameters per statement; the charge query binds each id twice.
  for (let i = 0; i < ids.length; i += 45) {
    const chunk = ids.slice(i, i + 45);
    const marks = chunk.map(() => "?").join(",");
    for (const u of await q<{ id: string; n: number; d: number; reason: string; source: string }>(
      `SELECT allocation_id AS id, COUNT(*) AS n, MAX(duration_seconds) AS d, MAX(reason) AS reason, MAX(source) AS source FROM usage_records WHERE allocation_id IN (${marks}) GROUP BY allocation_id`, ...chunk)) {
      Object.assign(out.get(u.id)!, { usage: u.n, duration: u.d, reason: u.reason, source: u.source });
    }
    // Charges found by allocation id and by entry id, so a charge booked under another key would count too.
    for (const c of await q<{ id: string; n: number; amt: number }>(
      `SELECT allocation_id AS id, COUNT(*) AS n, SUM(amount) AS amt FROM ledger WHERE kind = 'charge' AND (allocation_id IN (${marks}) OR entry_id IN (${chunk.map(() => "?").join(",")})) GROUP BY allocation_id`,
      ...chunk, ...chunk.map((id) => `charge:${id}`))) {
      Object.assign(out.get(c.id)!, { charges: c.n, amount: c.amt });
    }
  }
  return out;
}

/** Every id booked exactly once (one usage row, one charge). */
async function expectExactlyOnce(expect: ExpectStatic, ids: string[]): Promise<Map<string, Booked>> {
  const b = await booked(ids);
  const wrong = [...b].filter(([, v]) => v.usage !== 1 || v.charges !== 1).map(([id, v]) => ({ id, usage: v.usage, charges: v.charges }));
  expect(wrong, "allocations not booked exactly once").toEqual([]);
  return b;
}

const allBooked = async (ids: string[]) => [...(await booked(ids)).values()].every((v) => v.usage === 1 && v.charges === 1);

interface Account { userId: string; balance: number; ledgerSum: number; entries: number; charges: number; chargeSum: number }
async function accountsOf(userIds: string[]): Promise<Map<string, Account>> {
  const out = new Map<string, Account>();
  for (let i = 0; i < userIds.length; i += 90) {
    const chunk = userIds.slice(i, i + 90);
    for (const a of await q<Account>(
      `SELECT a.user_id AS userId, a.balance AS balance,
              (SELECT COALESCE(SUM(amount), 0) FROM ledger l WHERE l.user_id = a.user_id) AS ledgerSum,
              (SELECT COUNT(*) FROM ledger l WHERE l.user_id = a.user_id) AS entries,
              (SELECT COUNT(*) FROM ledger l WHERE l.user_id = a.user_id AND l.kind = 'charge') AS charges,
              (SELECT COALESCE(SUM(amount), 0) FROM ledger l WHERE l.user_id = a.user_id AND l.kind = 'charge') AS chargeSum
       FROM accounts a WHERE a.user_id IN (${chunk.map(() => "?").join(",")})`, ...chunk)) out.set(a.userId, a);
  }
  return out;
}

async function exec(...statements: string[]): Promise<void> {
  for (const s of statements) await env.DB.prepare(s).run();
}

// ---- the service, through its API ---------------------------------------------------------------

const usage = (userId: string, over: Partial<UsageRecord> = {}): UsageRecord => ({
  allocationId: uid(`alc-${userId}`), deviceId: "dev-inv3", userId, durationSeconds: 3600, cpuCores: 2, memoryMB: 4096, storageMB: 32768,
  allocatedAt: 1_000, releasedAt: 3_601_000, reason: "released", ...over,
});

interface Alloc { allocationId: string; deviceId: string; userId: string; pool: string; cpuCores: number; memoryMB: number; storageMB: number; allocatedAt: string; expiresAt: string }

/** Allocates, retrying while the pool is momentarily out of free devices (concurrent claims). */
async function allocate(userId: string, pool: string, durationSeconds: number): Promise<Alloc> {
  const token = await tokenFor(userId);
  for (let i = 0; ; i++) {
    const r = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationSeconds } });
    if (r.status === 201) return r.body as Alloc;
    if (i >= 40 || !(r.status === 409 && r.body?.error?.code === "NO_DEVICE_AVAILABLE")) throw new Error(`allocate ${userId}@${pool}: ${r.status} ${JSON.stringify(r.body)}`);
    await sleep(100);
  }
}

/** Moves a user to the dear plan and gives them money to spend. */
async function dearUser(prefix: string, topUp = 20_000): Promise<string> {
  const user = uid(prefix);
  const token = await admin();
  const p = await call("PUT", `/admin/billing/users/${user}/plan`, { token, body: { planId: FAST_PLAN } });
  if (p.status !== 200) throw new Error(`plan: ${p.status} ${JSON.stringify(p.body)}`);
  const t = await call("POST", `/billing/users/${user}/top-ups`, { token, body: { amount: topUp, paymentId: uid("pay") } });
  if (t.status !== 201) throw new Error(`top-up: ${t.status} ${JSON.stringify(t.body)}`);
  return user;
}

async function ended(userId: string): Promise<{ allocationId: string; deviceId: string; durationSeconds: number; reason: string; cpuCores: number; memoryMB: number; storageMB: number; releasedAt: number; expiresAt: number }[]> {
  const items = [];
  let cursor: string | null = null;
  do {
    const r = await call("GET", `/scheduler/allocations?userId=${userId}&status=released&limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`, { token: await admin() });
    if (r.status !== 200) throw new Error(`list: ${r.status} ${JSON.stringify(r.body)}`);
    items.push(...r.body.items);
    cursor = r.body.nextCursor;
  } while (cursor);
  return items;
}

async function activeCount(userId: string): Promise<number> {
  const r = await call("GET", `/scheduler/allocations?userId=${userId}&status=active&limit=200`, { token: await admin() });
  const p = await call("GET", `/scheduler/allocations?userId=${userId}&status=pending&limit=200`, { token: await admin() });
  return r.body.items.length + p.body.items.length;
}

async function reconcileUser(userId: string, from: number, heal = true) {
  const r = await call("POST", "/admin/billing/reconcile", {
    token: await admin(),
    body: { userId, from: new Date(from).toISOString(), to: new Date(Date.now() + 60_000).toISOString(), heal },
  });
  if (r.status !== 200) throw new Error(`reconcile: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as { checked: number; missingUsage: number; missingCharges: number; mismatched: number; healed: number; stillMissing: number; balanceDrift: number; differences: { missingUsage: string[] }[] };
}

async function pmap<T, R>(items: T[], limit: number, fn: (t: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  }));
  return out;
}

const specOf = (i: number): Spec => ({ cpuCores: 1 + (i % 4), memoryMB: [1024, 2048, 3072, 4096, 6144, 8192][i % 6]!, storageMB: [8192, 10_000, 32768, 65536][i % 4]! });

// ---- 1. the one global outage: runs alone ------------------------------------------------------------

describe("invariant 3 — consumer outage (global, runs alone)", () => {
  it("the consumer fails whole batches while pricing_plans is gone; after recovery every record is booked exactly once", async ({ expect }) => {
    const pool = uid("inv3-outage");
    const users = await Promise.all(Array.from({ length: 5 }, () => dearUser("outage")));
    for (let i = 0; i < 10; i++) await registerDevice(pool, specOf(i));
    const allocs = await pmap(users.flatMap((u) => [u, u]), 10, (u) => allocate(u, pool, 30));
    const ids = allocs.map((a) => a.allocationId);
    await sleep(1200);
    await exec("ALTER TABLE pricing_plans RENAME TO pricing_plans_gone");
    const outageStart = Date.now();
    let batchFailures = 0;
    try {
      const rel = await Promise.all(allocs.map(async (a) => call("POST", "/scheduler/devices/release", { token: await tokenFor(a.userId), body: { deviceId: a.deviceId } })));
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
    await sleep(2500); // any late redelivery lands now
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
    expect(await one<{ n: number }>(`SELECT COUNT(*) AS n FROM failed_usage WHERE allocation_id IN (${ids.map(() => "?").join(",")})`, ...ids)).toEqual({ n: 0 });
    expect(batchFailures).toBeGreaterThanOrEqual(3);
  });
});

// ---- 2. `replay {all:true}` touches every open dead letter: runs alone too ------------------------

describe("invariant 3 — dead-letter replay of everything (runs alone)", () => {
  it("replay {all:true} reaches a kept record even behind more than a batch of malformed dead letters", async ({ expect }) => {
    // 101 malformed messages through the real queue: the consumer keeps each as `invalid`.
    const junk = Array.from({ length: 101 }, () => ({ allocationId: uid("junk"), note: "not a usage record" }));
    for (let i = 0; i < junk.length; i += 100) await env.USAGE_QUEUE.sendBatch(junk.slice(i, i + 100).map((body) => ({ body: body as never, contentType: "json" as const })));
    const junkIds = junk.map((j) => j.allocationId);
    const invalidCount = async () => (await one<{ n: number }>(`SELECT COUNT(*) AS n FROM failed_usage WHERE status = 'invalid' AND allocation_id LIKE 'junk-%'`)).n;
    await until(async () => (await invalidCount()) === junkIds.length, 15_000, 100);
    // Then a good record the dead-letter queue kept (its D1 write had failed).
    const user = uid("behind");
    const r = usage(user);
    await env.USAGE_DLQ.send(r, { contentType: "json" });
    await until(async () => (await q(`SELECT 1 FROM failed_usage WHERE allocation_id = ? AND status = 'failed'`, r.allocationId)).length === 1, 15_000, 100);
    const rep = await call("POST", "/admin/billing/failed-usage/replay", { token: await admin(), body: { all: true } });
    expect(rep.status).toBe(200);
    expect(rep.body.results).toContainEqual({ allocationId: r.allocationId, status: "recorded", amount: 25 });
    await expectExactlyOnce(expect, [r.allocationId]);
    expect((await accountsOf([user])).get(user)).toMatchObject({ balance: 975, ledgerSum: 975, charges: 1 });
    // Nothing bookable is left; the malformed ones stay for an operator, and booking is not repeated.
    const again = await call("POST", "/admin/billing/failed-usage/replay", { token: await admin(), body: { all: true } });
    expect(again.body.results.filter((x: { status: string }) => x.status === "recorded")).toEqual([]);
    expect(again.body.remaining).toBeGreaterThanOrEqual(junkIds.length);
    expect(await invalidCount()).toBe(junkIds.length);
    await expectExactlyOnce(expect, [r.allocationId]);
    expect((await accountsOf([user])).get(user)).toMatchObject({ balance: 975, ledgerSum: 975, charges: 1 });
  });
});

// ---- 3. reconciliation over every account: runs alone (it would heal others' records) -----------

describe("invariant 3 — reconciliation over all accounts (runs alone)", () => {
  it("an operator's reconcile over a window, without userId, checks every account — also beyond the first 100 — and finds a missing record", async ({ expect }) => {
    const t0 = Date.now();
    // More than a cron run's worth of accounts, all older than the one with the missing record.
    await pmap(Array.from({ length: 105 }, () => uid("bulk")), 10, async (u) => {
      const r = await call("GET", `/api/internal/balance/user/${u}`, { service: SERVICE_TOKEN });
      if (r.status !== 200) throw new Error(`balance ${r.status}`);
    });
    const total = (await one<{ n: number }>("SELECT COUNT(*) AS n FROM accounts")).n;
    expect(total).toBeGreaterThanOrEqual(105);
    const pool = uid("inv3-recon");
    await registerDevice(pool, specOf(1));
    const user = await dearUser("late");
    await exec(`CREATE TRIGGER late_block BEFORE INSERT ON usage_records WHEN NEW.user_id = '${user}' BEGIN SELECT RAISE(ABORT, 'injected: usage down'); END`);
    let id = "";
    const window = () => ({ from: new Date(t0 - 60_000).toISOString(), to: new Date(Date.now() + 60_000).toISOString() });
    try {
      const a = await allocate(user, pool, 30);
      id = a.allocationId;
      await sleep(1100);
      expect((await call("POST", "/scheduler/devices/release", { token: await tokenFor(user), body: { deviceId: a.deviceId } })).status).toBe(200);
      for (let pass = 0; pass < 2; pass++) {
        const r = await call("POST", "/admin/billing/reconcile", { token: await admin(), body: { ...window(), heal: false } });
        expect(r.status).toBe(200);
        expect(r.body).toMatchObject({ users: total + 1, remaining: false, missingUsage: 1, healed: 0 });
        expect(r.body.differences.map((d: { userId: string; missingUsage: string[] }) => [d.userId, d.missingUsage])).toEqual([[user, [id]]]);
      }
    } finally {
      await exec("DROP TRIGGER IF EXISTS late_block");
    }
    // Healed by whichever comes first, the queue's retry or this pass; either way once.
    const heal = await call("POST", "/admin/billing/reconcile", { token: await admin(), body: window() });
    expect(heal.body).toMatchObject({ stillMissing: 0, balanceDrift: 0, mismatched: 0 });
    await until(() => allBooked([id]), 10_000, 100);
    await sleep(2000);
    await expectExactlyOnce(expect, [id]);
    const again = await call("POST", "/admin/billing/reconcile", { token: await admin(), body: window() });
    expect(again.body).toMatchObject({ missingUsage: 0, missingCharges: 0, mismatched: 0, healed: 0, balanceDrift: 0, differences: [] });
    expect(again.body.checked).toBeGreaterThanOrEqual(1);
    // A `to` in the future is checked, but moves no watermark past `now − grace` (a new account
    // starts at its opening time): the cron must still look at what ends from now on.
    const future = await call("POST", "/admin/billing/reconcile", { token: await admin(), body: { to: new Date(Date.now() + 86_400_000).toISOString() } });
    expect(future.status).toBe(200);
    expect(future.body.users).toBe(100);
    expect(await one<{ n: number }>("SELECT COUNT(*) AS n FROM accounts WHERE reconciled_through > ?", Date.now())).toEqual({ n: 0 });
  });
});

// ---- 4. objects restarted while allocations end: runs alone (it aborts every object) ------------

describe("invariant 3 — restarts while allocations end (runs alone)", () => {
  it("every object is aborted repeatedly while releases and expiry alarms are in flight: each allocation still ends billed once, by the queue alone", async ({ expect }) => {
    const t0 = Date.now();
    const pool = uid("inv3-crash");
    for (let i = 0; i < 12; i++) await registerDevice(pool, specOf(i + 3));
    const users = await Promise.all(Array.from({ length: 6 }, () => dearUser("crash")));
    // Per user one allocation that expires at 2 s (ended by alarm) and one released by hand.
    const allocs = await pmap(users.flatMap((u) => [[u, 2], [u, 30]] as const), 12, ([u, seconds]) => allocate(u, pool, seconds));
    const expiresAt = Math.min(...allocs.map((a) => Date.parse(a.expiresAt)));
    await sleep(Math.max(0, expiresAt - Date.now() - 300));
    // Around the expiry moment: releases spread over ~300 ms, every object aborted every ~25 ms for ~700 ms.
    const releases = allocs.filter((a) => Date.parse(a.expiresAt) - Date.parse(a.allocatedAt) > 5_000).map(async (a, i) => {
      await sleep(i * 50);
      try {
        return (await call("POST", "/scheduler/devices/release", { token: await tokenFor(a.userId), body: { deviceId: a.deviceId } })).status;
      } catch {
        return "thrown";
      }
    });
    for (let i = 0; i < 28; i++) {
      await sleep(5 + (i * 7) % 30);
      await abortAllDurableObjects();
    }
    const statuses = await Promise.all(releases);
    // Whatever the releases answered, every allocation ends (released, by expiry, or at 30 s at worst).
    await until(async () => (await Promise.all(users.map(activeCount))).every((n) => n === 0), 20_000, 200);
    const endedAll = (await Promise.all(users.map(ended))).flat();
    expect(endedAll.map((e) => e.allocationId).sort()).toEqual(allocs.map((a) => a.allocationId).sort());
    const billable = endedAll.filter((e) => e.reason !== "orphaned");
    await until(() => allBooked(billable.map((e) => e.allocationId)), 20_000, 200);
    await sleep(2000);
    const b = await expectExactlyOnce(expect, billable.map((e) => e.allocationId));
    for (const e of billable) {
      const x = b.get(e.allocationId)!;
      expect([x.reason, x.duration, x.amount, x.source]).toEqual([e.reason, e.durationSeconds, charge(price(FAST, e, e.durationSeconds)), "device"]);
    }
    // Nothing billed for what the user was told never happened.
    const orphaned = endedAll.filter((e) => e.reason === "orphaned").map((e) => e.allocationId);
    if (orphaned.length) expect([...(await booked(orphaned)).values()].map((x) => x.usage + x.charges)).toEqual(orphaned.map(() => 0));
    const rec = await Promise.all(users.map((u) => reconcileUser(u, t0 - 60_000)));
    expect(rec.map((r) => [r.missingUsage, r.missingCharges, r.mismatched, r.balanceDrift])).toEqual(users.map(() => [0, 0, 0, 0]));
    const acc = await accountsOf(users);
    for (const u of users) expect(acc.get(u)!.balance).toBe(acc.get(u)!.ledgerSum);
    console.log(`[invariant 3, restarts] release answers: ${JSON.stringify(statuses.reduce<Record<string, number>>((m, s) => ({ ...m, [s]: (m[s] ?? 0) + 1 }), {}))}; reasons: ${JSON.stringify(endedAll.reduce<Record<string, number>>((m, e) => ({ ...m, [e.reason]: (m[e.reason] ?? 0) + 1 }), {}))}`);
  });
});

// ---- 5. everything else, concurrently (failures scoped by user id prefix) -----------------------

describe.concurrent("invariant 3 — under failures", () => {
  it("headline: ≥200 allocations ended every way while ~30% of usage/ledger writes fail at random; a share goes to the DLQ, a share is dropped; after recovery 0 lost, 0 doubled", async ({ expect }) => {
    const t0 = Date.now();
    const POOLS = 5;
    const PER_POOL = 12; // devices per pool = allocations per pool per round (6 users × 2)
    const ROUNDS = 4;
    const adminToken = await admin();
    // Users: even ones on the dear plan, odd ones on standard; all with money to spare.
    const users: string[] = [];
    for (let i = 0; i < POOLS * (PER_POOL / 2); i++) users.push(i % 2 === 0 ? await dearUser("hl") : uid("hl"));
    await pmap(users, 10, async (u) => {
      const t = await call("POST", `/billing/users/${u}/top-ups`, { token: adminToken, body: { amount: 20_000, paymentId: uid("pay") } });
      if (t.status !== 201) throw new Error(`top-up ${t.status}`);
    });
    const ratesOf = (u: string) => (users.indexOf(u) % 2 === 0 ? FAST : STANDARD);
    const pools = Array.from({ length: POOLS }, () => uid("hl-pool"));
    await pmap(pools.flatMap((p, pi) => Array.from({ length: PER_POOL }, (_, i) => [p, pi * PER_POOL + i] as const)), 10, ([p, i]) => registerDevice(p, specOf(i)));

    await exec(
      "CREATE TABLE IF NOT EXISTS chaos_doomed (allocation_id TEXT PRIMARY KEY, lost INTEGER NOT NULL)",
      // ~30% of booking attempts fail: 18% at the usage insert, 15% at the charge (after the usage insert, same batch).
      `CREATE TRIGGER hl_chaos_usage BEFORE INSERT ON usage_records WHEN NEW.user_id LIKE 'hl-%' AND (abs(random()) % 100 < 18 OR NEW.allocation_id IN (SELECT allocation_id FROM chaos_doomed)) BEGIN SELECT RAISE(ABORT, 'injected: usage'); END`,
      `CREATE TRIGGER hl_chaos_ledger BEFORE INSERT ON ledger WHEN NEW.user_id LIKE 'hl-%' AND NEW.kind = 'charge' AND abs(random()) % 100 < 15 BEGIN SELECT RAISE(ABORT, 'injected: ledger'); END`,
      // The dead-letter store refuses the "lost" share: the queue drops those after the DLQ's retries.
      `CREATE TRIGGER hl_chaos_dlq BEFORE INSERT ON failed_usage WHEN NEW.allocation_id IN (SELECT allocation_id FROM chaos_doomed WHERE lost = 1) BEGIN SELECT RAISE(ABORT, 'injected: dead letter'); END`,
    );
    type Method = "release" | "expire" | "force" | "maintenance" | "remove";
    const CYCLE: Method[] = ["release", "release", "expire", "force", "release", "maintenance", "expire", "remove", "release", "force"];
    const created: (Alloc & { method: Method })[] = [];
    const doomed: string[] = [];
    const lost: string[] = [];
    // Racers: another service re-reports released allocations, and reconciliation heals, while the
    // queue is still retrying the same records under the chaos.
    const external = { recorded: 0, duplicate: 0, failed: 0 };
    const midRun = { checked: 0, healed: 0, stillMissing: 0 };
    try {
      for (let round = 0; round < ROUNDS; round++) {
        // Every pool has all its devices free again.
        await until(async () => {
          for (const p of pools) if ((await call("GET", `/scheduler/devices/available?pool=${p}&limit=50`, { token: adminToken })).body.items.length < PER_POOL) return false;
          return true;
        }, 20_000, 100);
        const plan = users.flatMap((u, ui) => [0, 1].map((k) => ({ u, pool: pools[ui % POOLS]!, method: CYCLE[(round * 7 + ui * 2 + k) % CYCLE.length]! })));
        const allocs = await pmap(plan, 20, async (p) => ({ ...(await allocate(p.u, p.pool, p.method === "expire" ? 2 : 30)), method: p.method }));
        created.push(...allocs);
        const manual = allocs.filter((a) => a.method !== "expire");
        if (round === 0) {
          // A fixed share always fails (→ DLQ); part of it cannot even be kept there (→ dropped).
          manual.filter((_, i) => i % 5 === 0).forEach((a, i) => (i % 2 === 0 ? lost : doomed).push(a.allocationId));
          for (const id of [...doomed, ...lost]) await env.DB.prepare("INSERT INTO chaos_doomed VALUES (?, ?)").bind(id, lost.includes(id) ? 1 : 0).run();
        }
        await sleep(1500);
        await pmap(manual, 20, async (a) => {
          let r;
          if (a.method === "release") r = await call("POST", "/scheduler/devices/release", { token: await tokenFor(a.userId), body: { deviceId: a.deviceId } });
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
              body: { allocationId: a.allocationId, deviceId: a.deviceId, userId: a.userId, durationSeconds: e.durationSeconds, cpuCores: a.cpuCores, memoryMB: a.memoryMB, storageMB: a.storageMB, allocatedAt: e.allocatedAt, releasedAt: e.releasedAt, reason: e.reason },
            });
            // 503 when the chaos hit it: the service would send it again; the queue has it anyway.
            if (rep.status !== 200 && rep.status !== 503) throw new Error(`report ${rep.status} ${JSON.stringify(rep.body)}`);
            for (const o of (rep.status === 200 ? rep.body : rep.body.error.details).results as { status: "recorded" | "duplicate" | "failed" }[]) external[o.status]++;
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
      await until(async () => {
        const kept = await q<{ id: string }>(`SELECT allocation_id AS id FROM failed_usage WHERE allocation_id IN (${doomed.map(() => "?").join(",")})`, ...doomed);
        const refused = new Map<string, number>();
        for (const l of logsFor("dead letter could not be stored", lost)) refused.set(l.allocationId!, Math.max(refused.get(l.allocationId!) ?? 0, l.attempts ?? 0));
        return kept.length === doomed.length && lost.every((id) => (refused.get(id) ?? 0) >= 11);
      }, 60_000, 250);
    } finally {
      await exec("DROP TRIGGER IF EXISTS hl_chaos_usage", "DROP TRIGGER IF EXISTS hl_chaos_ledger", "DROP TRIGGER IF EXISTS hl_chaos_dlq", "DROP TABLE IF EXISTS chaos_doomed");
    }
    const ids = created.map((a) => a.allocationId);
    await sleep(2500);
    // The lost share is really gone from the queue path: nothing books it after recovery.
    const gone = await booked(lost);
    expect([...gone.values()].every((b) => b.usage === 0 && b.charges === 0), "dropped records must not be booked by the queue").toBe(true);
    expect(await one<{ n: number }>(`SELECT COUNT(*) AS n FROM failed_usage WHERE allocation_id IN (${lost.map(() => "?").join(",")})`, ...lost)).toEqual({ n: 0 });

    // Recovery 1: replay what the dead-letter store kept.
    const kept = (await q<{ id: string; attempts: number }>(
      "SELECT allocation_id AS id, attempts FROM failed_usage WHERE user_id LIKE 'hl-%' AND status = 'failed'")).map((r) => r.id);
    expect(kept).toEqual(expect.arrayContaining(doomed));
    const replay = await call("POST", "/admin/billing/failed-usage/replay", { token: adminToken, body: { allocationIds: kept } });
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
    expect(secondPass.map((r) => [r.missingUsage, r.missingCharges, r.mismatched, r.healed, r.balanceDrift])).toEqual(users.map(() => [0, 0, 0, 0, 0]));
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
    expect(reasons).toEqual({ released: want("release"), expired: want("expire"), force_released: want("force"), maintenance: want("maintenance"), removed: want("remove") });
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
      `SELECT (SELECT COUNT(*) FROM usage_records WHERE user_id LIKE 'hl-%') AS u, (SELECT COUNT(*) FROM ledger WHERE user_id LIKE 'hl-%' AND kind = 'charge') AS c`);
    expect(extra).toEqual({ u: ids.length, c: ids.length });
    expect(lostCount).toBe(0);
    expect(doubled).toBe(0);

    expect(external.recorded + external.duplicate + external.failed).toBeGreaterThan(0);
    expect(midRun.checked).toBeGreaterThan(0);
    const writeFailures = logsFor("usage write failed", ids).length;
    const randomFailures = logsFor("usage write failed", ids.filter((id) => !doomed.includes(id) && !lost.includes(id))).length;
    const dlqStoreFailures = logsFor("dead letter could not be stored", ids).length;
    const chargedTotal = -[...b.values()].reduce((n, x) => n + (x.amount ?? 0), 0);
    expect(randomFailures, "the random chaos must actually have hit").toBeGreaterThan(ids.length * 0.1);
    console.log(
      `[invariant 3] allocations ended=${ids.length} (released ${reasons.released}, expired ${reasons.expired}, force_released ${reasons.force_released}, ` +
      `maintenance ${reasons.maintenance}, removed ${reasons.removed}) users=${users.length} devices=${POOLS * PER_POOL}+${want("remove")} replaced; ` +
      `injected failures observed: ${writeFailures} failed record writes retried by the queue (${randomFailures} random, ${writeFailures - randomFailures} on the doomed share) + ${dlqStoreFailures} refused dead-letter stores; ` +
      `reached DLQ and kept=${kept.length} → replayed=${replayedRecorded}; dropped by the queue=${lost.length} → healed by reconcile=${healed}; ` +
      `racing the queue: re-reported by a service ${external.recorded + external.duplicate + external.failed} (recorded ${external.recorded}, duplicate ${external.duplicate}, failed ${external.failed}), ` +
      `mid-chaos reconcile checked ${midRun.checked} healed ${midRun.healed} (${midRun.stillMissing} failed, left to the queue); ` +
      `charged ${chargedTotal} cents; lost=${lostCount} doubled=${doubled}; ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
  });

  it("D1 refuses charges long enough to exhaust the queue's retries: kept in failed_usage, nothing half-booked; replay books once, again changes nothing", async ({ expect }) => {
    const pool = uid("inv3-dlq");
    const users = [await dearUser("dlq4"), await dearUser("dlq4")];
    for (let i = 0; i < 4; i++) await registerDevice(pool, specOf(i + 1));
    await exec(`CREATE TRIGGER dlq4_refuse BEFORE INSERT ON ledger WHEN NEW.user_id LIKE 'dlq4-%' AND NEW.kind = 'charge' BEGIN SELECT RAISE(ABORT, 'injected: ledger down'); END`);
    let ids: string[] = [];
    try {
      const allocs = await pmap([users[0]!, users[0]!, users[1]!, users[1]!], 4, (u) => allocate(u, pool, 30));
      ids = allocs.map((a) => a.allocationId);
      await sleep(1200);
      for (const a of allocs.slice(0, 3)) expect((await call("POST", "/scheduler/devices/release", { token: await tokenFor(a.userId), body: { deviceId: a.deviceId } })).status).toBe(200);
      expect((await call("POST", `/admin/devices/${allocs[3]!.deviceId}/force-release`, { token: await admin() })).status).toBe(200);
      await until(async () => (await q(`SELECT 1 FROM failed_usage WHERE status = 'failed' AND allocation_id IN (${ids.map(() => "?").join(",")})`, ...ids)).length === 4, 45_000, 250);
      // Every attempt (1 + max_retries 10) failed, and none left half a booking (the usage insert
      // ran first in the same batch and was rolled back with the charge).
      for (const id of ids) expect(logsFor("usage write failed", [id]).length).toBeGreaterThanOrEqual(11);
      expect([...(await booked(ids)).values()].map((b) => [b.usage, b.charges])).toEqual(ids.map(() => [0, 0]));
      const acc = await accountsOf(users);
      for (const u of users) expect(acc.get(u)).toMatchObject({ balance: 21_000, ledgerSum: 21_000, charges: 0 });
      const list = await call("GET", "/admin/billing/failed-usage?status=failed&limit=200", { token: await admin() });
      expect(list.body.items.filter((i: { allocationId: string }) => ids.includes(i.allocationId)).map((i: { record: UsageRecord }) => i.record.allocationId).sort()).toEqual([...ids].sort());
      // A replay while D1 still refuses loses nothing: the records stay open.
      const early = await call("POST", "/admin/billing/failed-usage/replay", { token: await admin(), body: { allocationIds: ids } });
      expect(early.status).toBe(200);
      expect(early.body.failed).toBe(4);
      expect((await q<{ status: string }>(`SELECT status FROM failed_usage WHERE allocation_id IN (${ids.map(() => "?").join(",")})`, ...ids)).map((r) => r.status)).toEqual(ids.map(() => "failed"));
    } finally {
      await exec("DROP TRIGGER IF EXISTS dlq4_refuse");
    }
    // Two operators replay at once: each record is recorded by exactly one of them.
    const [r1, r2] = await Promise.all([1, 2].map(async () => call("POST", "/admin/billing/failed-usage/replay", { token: await admin(), body: { allocationIds: ids } })));
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
    const again = await call("POST", "/admin/billing/failed-usage/replay", { token: await admin(), body: { allocationIds: ids } });
    expect(again.body.results.map((r: { status: string }) => r.status)).toEqual(ids.map(() => "already_done"));
    expect(await accountsOf(users)).toEqual(snapshot);
    await expectExactlyOnce(expect, ids);
    for (const u of users) {
      const a = snapshot.get(u)!;
      expect(a.balance).toBe(a.ledgerSum);
      expect(a.charges).toBe(2);
    }
    expect((await q<{ status: string }>(`SELECT status FROM failed_usage WHERE allocation_id IN (${ids.map(() => "?").join(",")})`, ...ids)).map((r) => r.status)).toEqual(ids.map(() => "replayed"));
  });

  it("the dead-letter store fails too: the queue drops the records; reconciliation finds them missing and heals them once", async ({ expect }) => {
    const t0 = Date.now();
    const pool = uid("inv3-lost");
    const users = [await dearUser("lost5"), await dearUser("lost5")];
    for (let i = 0; i < 3; i++) await registerDevice(pool, specOf(i + 2));
    await exec(
      `CREATE TRIGGER lost5_usage BEFORE INSERT ON usage_records WHEN NEW.user_id LIKE 'lost5-%' BEGIN SELECT RAISE(ABORT, 'injected: usage down'); END`,
      `CREATE TRIGGER lost5_dlq BEFORE INSERT ON failed_usage WHEN NEW.user_id LIKE 'lost5-%' BEGIN SELECT RAISE(ABORT, 'injected: dead letters down'); END`,
    );
    let ids: string[] = [];
    try {
      const [a, b] = [await allocate(users[0]!, pool, 30), await allocate(users[0]!, pool, 2)];
      const c = await allocate(users[1]!, pool, 30);
      ids = [a.allocationId, b.allocationId, c.allocationId];
      await sleep(1500);
      expect((await call("POST", "/scheduler/devices/release", { token: await tokenFor(a.userId), body: { deviceId: a.deviceId } })).status).toBe(200);
      expect((await call("POST", `/admin/devices/${c.deviceId}/force-release`, { token: await admin() })).status).toBe(200);
      // b expires by alarm. All three exhaust the queue's retries, then the DLQ's.
      await until(async () => ids.every((id) => logsFor("dead letter could not be stored", [id]).some((l) => (l.attempts ?? 0) >= 11)), 60_000, 250);
      expect(ids.map((id) => logsFor("usage write failed", [id]).length >= 11)).toEqual([true, true, true]);
      await sleep(1500);
    } finally {
      await exec("DROP TRIGGER IF EXISTS lost5_usage", "DROP TRIGGER IF EXISTS lost5_dlq");
    }
    await sleep(2500);
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
    expect(heal.map((r) => [r.missingUsage, r.healed, r.stillMissing])).toEqual([[2, 2, 0], [1, 1, 0]]);
    const again = await Promise.all(users.map((u) => reconcileUser(u, t0 - 60_000)));
    expect(again.map((r) => [r.checked, r.missingUsage, r.missingCharges, r.mismatched, r.healed, r.balanceDrift])).toEqual([[2, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]]);
    const bk = await expectExactlyOnce(expect, ids);
    const endedAll = (await Promise.all(users.map(ended))).flat();
    expect(endedAll.map((e) => e.reason).sort()).toEqual(["expired", "force_released", "released"]);
    for (const e of endedAll) {
      const x = bk.get(e.allocationId)!;
      expect([x.source, x.reason, x.duration, x.amount]).toEqual(["reconcile", e.reason, e.durationSeconds, charge(price(FAST, e, e.durationSeconds))]);
    }
    const acc = await accountsOf(users);
    for (const [i, u] of users.entries()) {
      const mine = endedAll.filter((e) => (i === 0 ? [ids[0], ids[1]] : [ids[2]]).includes(e.allocationId));
      expect(acc.get(u)).toMatchObject({ balance: 21_000 - mine.reduce((n, e) => n + price(FAST, e, e.durationSeconds), 0), charges: mine.length });
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
    await env.USAGE_QUEUE.sendBatch([r, { ...r, durationSeconds: 7200, releasedAt: 7_201_000 }, r].map((body) => ({ body, contentType: "json" as const })));
    const sentinel = usage(uid("dupq-sentinel"));
    await env.USAGE_QUEUE.send(sentinel, { contentType: "json" });
    await until(() => allBooked([sentinel.allocationId]), 15_000, 50);
    await sleep(2500);
    const b = await expectExactlyOnce(expect, [r.allocationId]);
    expect(b.get(r.allocationId)).toMatchObject({ amount: -25, duration: 3600, source: "device" });
    expect(price(STANDARD, r, 3600)).toBe(25);
    const acc = (await accountsOf([user])).get(user)!;
    expect(acc).toEqual({ userId: user, balance: 975, ledgerSum: 975, entries: 2, charges: 1, chargeSum: -25 });
  });

  it("the same record reported by another service (single, batch, concurrent) is booked once; a duplicate of a queue-delivered allocation is acknowledged as duplicate", async ({ expect }) => {
    const user = uid("dupext");
    const post = (body: unknown) => call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body });
    // Someone else, with an older account, who must never be touched by this user's duplicates.
    const bystander = uid("dupext-other");
    expect((await call("GET", `/api/internal/balance/user/${bystander}`, { service: SERVICE_TOKEN })).body.balance).toBe(1000);
    const [a, b, c, d, e] = [
      usage(user), usage(user, { durationSeconds: 1800, releasedAt: 1_801_000, cpuCores: 4 }), usage(user, { durationSeconds: 61, releasedAt: 62_000, reason: "expired" }),
      usage(user, { durationSeconds: 7200, releasedAt: 7_201_000, memoryMB: 1536 }), usage(user, { durationSeconds: 5, releasedAt: 6_000, storageMB: 0 }),
    ];
    const p = (x: UsageRecord) => price(STANDARD, x, x.durationSeconds);
    const first = await post(a);
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ recorded: 1, duplicates: 0, failed: 0, results: [{ allocationId: a.allocationId, status: "recorded", amount: p(a) }] });
    expect((await post(a)).body).toMatchObject({ recorded: 0, duplicates: 1, results: [{ allocationId: a.allocationId, status: "duplicate" }] });
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
    const bk = await expectExactlyOnce(expect, all.map((x) => x.allocationId));
    for (const x of all) expect(bk.get(x.allocationId)).toMatchObject({ amount: charge(p(x)), duration: x.durationSeconds, source: "external" });
    const total = all.reduce((n, x) => n + p(x), 0);
    expect((await accountsOf([user])).get(user)).toEqual({ userId: user, balance: 1000 - total, ledgerSum: 1000 - total, entries: 6, charges: 5, chargeSum: charge(total) });
    // A duplicate that names another user (a confused reporter) books nothing and moves no balance.
    const misattributed = await post({ ...a, userId: bystander });
    expect(misattributed.status).toBe(200);
    expect(misattributed.body).toMatchObject({ recorded: 0, duplicates: 1 });
    const accs = await accountsOf([user, bystander]);
    expect(accs.get(bystander)).toEqual({ userId: bystander, balance: 1000, ledgerSum: 1000, entries: 1, charges: 0, chargeSum: 0 });
    expect(accs.get(user)).toMatchObject({ balance: 1000 - total, ledgerSum: 1000 - total });

    // A real allocation booked by the queue, then reported again by another service.
    const pool = uid("inv3-ext");
    await registerDevice(pool, specOf(3));
    await registerDevice(pool, specOf(4));
    const owner = await dearUser("dupext-dev");
    const token = await tokenFor(owner);
    const asRecord = (al: Alloc, rel: { durationSeconds: number; allocatedAt: string; releasedAt: string; reason: string }) => ({
      allocationId: al.allocationId, deviceId: al.deviceId, userId: owner, durationSeconds: rel.durationSeconds, cpuCores: al.cpuCores,
      memoryMB: al.memoryMB, storageMB: al.storageMB, allocatedAt: rel.allocatedAt, releasedAt: rel.releasedAt, reason: rel.reason,
    });
    const x = await allocate(owner, pool, 30);
    await sleep(1100);
    const xr = await call("POST", "/scheduler/devices/release", { token, body: { deviceId: x.deviceId } });
    expect(xr.status).toBe(200);
    await until(() => allBooked([x.allocationId]), 15_000, 50);
    const dup = await post(asRecord(x, xr.body));
    expect(dup.status).toBe(200);
    expect(dup.body).toMatchObject({ recorded: 0, duplicates: 1, results: [{ allocationId: x.allocationId, status: "duplicate" }] });
    // And a race: the service reports while the device's message is still on its way.
    const y = await allocate(owner, pool, 30);
    await sleep(1100);
    const yr = await call("POST", "/scheduler/devices/release", { token, body: { deviceId: y.deviceId } });
    const race = await Promise.all([post(asRecord(y, yr.body)), post(asRecord(y, yr.body))]);
    expect(race.map((r) => r.status)).toEqual([200, 200]);
    await until(() => allBooked([y.allocationId]), 15_000, 50);
    await sleep(2500); // the queue message has been consumed by now
    const bx = await expectExactlyOnce(expect, [x.allocationId, y.allocationId]);
    expect(bx.get(x.allocationId)!.source).toBe("device");
    for (const [al, rel] of [[x, xr.body], [y, yr.body]] as const) expect(bx.get(al.allocationId)!.amount).toBe(charge(price(FAST, al, rel.durationSeconds)));
    const oa = (await accountsOf([owner])).get(owner)!;
    expect(oa).toMatchObject({ charges: 2, balance: oa.ledgerSum, chargeSum: charge(price(FAST, x, xr.body.durationSeconds) + price(FAST, y, yr.body.durationSeconds)) });
  });

  it("an entry id reused for another user (a payment credited twice to different users) is refused and moves nobody's balance", async ({ expect }) => {
    const [first, other] = [uid("payer"), uid("payer-other")];
    const adminToken = await admin();
    // The other account is older, so its last ledger row comes before the reused one.
    expect((await call("GET", `/api/internal/balance/user/${other}`, { service: SERVICE_TOKEN })).status).toBe(200);
    const paymentId = uid("pay");
    const t1 = await call("POST", `/billing/users/${first}/top-ups`, { token: adminToken, body: { amount: 500, paymentId } });
    expect(t1.status).toBe(201);
    const t2 = await call("POST", `/billing/users/${other}/top-ups`, { token: adminToken, body: { amount: 500, paymentId } });
    expect(t2.status).toBe(409);
    expect(t2.body.error.code).toBe("PAYMENT_ID_REUSED");
    const acc = await accountsOf([first, other]);
    expect(acc.get(first)).toMatchObject({ balance: 1500, ledgerSum: 1500, entries: 2 });
    expect(acc.get(other)).toMatchObject({ balance: 1000, ledgerSum: 1000, entries: 1 });
    // Refused before anything is written: a user without an account does not get one from it.
    const nobody = uid("payer-new");
    expect((await call("POST", `/billing/users/${nobody}/top-ups`, { token: adminToken, body: { amount: 500, paymentId } })).status).toBe(409);
    expect((await accountsOf([nobody])).size).toBe(0);
  });

  it("expiry, force-release, maintenance and removal are billed like a release: one usage row with their reason and the right duration, one charge", async ({ expect }) => {
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
    const r = await call("POST", "/scheduler/devices/release", { token: await tokenFor(u3!), body: { deviceId: rel.deviceId } });
    expect(r.status).toBe(200);
    const all = [exp, force, maint, rem, rel];
    const ids = all.map((a) => a.allocationId);
    await until(() => allBooked(ids), 20_000, 100);
    await until(async () => (await Promise.all([u1!, u2!, u3!].map(activeCount))).every((n) => n === 0), 10_000, 100);
    await sleep(1500);
    const bk = await expectExactlyOnce(expect, ids);
    const endedAll = new Map((await Promise.all([u1!, u2!, u3!].map(ended))).flat().map((e) => [e.allocationId, e]));
    const expect_ = [[exp, "expired"], [force, "force_released"], [maint, "maintenance"], [rem, "removed"], [rel, "released"]] as const;
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
    expect(endedAll.get(exp.allocationId)!.releasedAt).toBe(Date.parse(exp.expiresAt));
    expect(f.body.durationSeconds).toBe(endedAll.get(force.allocationId)!.durationSeconds);
    for (const al of [force, maint, rem, rel]) expect(endedAll.get(al.allocationId)!.durationSeconds).toBeGreaterThanOrEqual(2);
    expect(r.body.durationSeconds).toBe(endedAll.get(rel.allocationId)!.durationSeconds);
    const acc = await accountsOf([u1!, u2!, u3!]);
    for (const [u, mine] of [[u1!, [exp, force]], [u2!, [maint, rem]], [u3!, [rel]]] as const) {
      const sum = mine.reduce((n, al) => n + price(FAST, al, endedAll.get(al.allocationId)!.durationSeconds), 0);
      expect(acc.get(u)).toMatchObject({ balance: 21_000 - sum, ledgerSum: 21_000 - sum, charges: mine.length });
    }
  });
});
