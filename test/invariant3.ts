/**
 * Shared by the invariant 3 files (test/invariants-billing*.test.ts): an independent copy of the
 * pricing rule, what the consumer logs, D1 reads of what was booked, and the service through its API.
 */
import { env } from "cloudflare:workers";
import { afterAll, beforeAll, vi, type ExpectStatic } from "vitest";
import type { UsageRecord } from "../src/domain/types";
import { admin, call, sleep, tokenFor, uid } from "./helpers";

// ---- prices: the rule of src/domain/pricing.ts, written out once more ---------------------------

export interface Rates {
  base: number;
  cpu: number;
  memGB: number;
  storGB: number;
}
export interface Spec {
  cpuCores: number;
  memoryMB: number;
  storageMB: number;
}

export const STANDARD: Rates = { base: 2500, cpu: 1000, memGB: 500, storGB: 10 };
/** A dearer plan with odd rates, so short test allocations cost whole cents and rounding matters. */
export const FAST_PLAN = "inv3-fast";
export const FAST: Rates = { base: 2_500_123, cpu: 1_000_007, memGB: 500_003, storGB: 10_001 };

/**
 * Micro-cents per second × seconds, rounded up to whole cents; memory and storage per GB of 1024 MB, pro rata (an
 * independent copy of the rule in src/domain/pricing.ts).
 */
export function price(r: Rates, s: Spec, seconds: number): number {
  const perSecondX1024 =
    BigInt(r.base) * 1024n +
    BigInt(r.cpu) * BigInt(s.cpuCores) * 1024n +
    BigInt(r.memGB) * BigInt(s.memoryMB) +
    BigInt(r.storGB) * BigInt(s.storageMB);
  const den = 1024n * 1_000_000n;
  return Number((perSecondX1024 * BigInt(seconds) + den - 1n) / den);
}

/** The ledger amount of a charge of `price` (a charge of 0 is stored as 0, not -0). */
export const charge = (cents: number) => (cents === 0 ? 0 : -cents);

// ---- what the consumer logs ---------------------------------------------------------------------

export interface LogLine {
  msg: string;
  allocationId?: string;
  attempts?: number;
  at: number;
}
/** Every line console.error got in this file, parsed when it is one of the service's. */
export const logs: LogLine[] = [];
let spy: { mockRestore(): void } | undefined;

/**
 * A test file's set-up: console.error is collected (not printed) for the whole file, and the dear
 * pricing plan exists. Call it at the top of the file.
 */
export function invariant3Setup(): void {
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
        name: "Invariant 3 (dear)",
        currency: "USD",
        baseMicrosPerSecond: FAST.base,
        cpuCoreMicrosPerSecond: FAST.cpu,
        memoryGBMicrosPerSecond: FAST.memGB,
        storageGBMicrosPerSecond: FAST.storGB,
        startingCreditMinor: 1000,
        lowBalanceThresholdMinor: 200,
      },
    });
    if (r.status !== 200) throw new Error(`pricing plan: ${r.status} ${JSON.stringify(r.body)}`);
  });
  afterAll(() => spy?.mockRestore());
}

export const logsFor = (msg: string, ids: Iterable<string>) => {
  const set = new Set(ids);
  return logs.filter((l) => l.msg === msg && l.allocationId !== undefined && set.has(l.allocationId));
};

// ---- D1 reads -----------------------------------------------------------------------------------

export const q = async <T>(sql: string, ...args: unknown[]): Promise<T[]> =>
  (
    await env.DB.prepare(sql)
      .bind(...args)
      .all<T>()
  ).results;
export const one = async <T>(sql: string, ...args: unknown[]): Promise<T> => (await q<T>(sql, ...args))[0]!;

export interface Booked {
  usage: number;
  charges: number;
  amount: number | null;
  duration: number | null;
  reason: string | null;
  source: string | null;
}

/** Per allocation: how many usage rows and charges D1 holds (any number, not just 0/1), and what they say. */
export async function booked(ids: string[]): Promise<Map<string, Booked>> {
  const out = new Map<string, Booked>(
    ids.map((id) => [id, { usage: 0, charges: 0, amount: null, duration: null, reason: null, source: null }]),
  );
  // D1 binds at most 100 parameters per statement; the charge query binds each id twice.
  for (let i = 0; i < ids.length; i += 45) {
    const chunk = ids.slice(i, i + 45);
    const marks = chunk.map(() => "?").join(",");
    for (const u of await q<{ id: string; n: number; d: number; reason: string; source: string }>(
      `SELECT allocation_id AS id, COUNT(*) AS n, MAX(duration_seconds) AS d, MAX(reason) AS reason, MAX(source) AS source ` +
        `FROM usage_records WHERE allocation_id IN (${marks}) GROUP BY allocation_id`,
      ...chunk,
    )) {
      Object.assign(out.get(u.id)!, { usage: u.n, duration: u.d, reason: u.reason, source: u.source });
    }
    // Charges found by allocation id and by entry id, so a charge booked under another key would count too.
    for (const c of await q<{ id: string; n: number; amt: number }>(
      `SELECT allocation_id AS id, COUNT(*) AS n, SUM(amount) AS amt FROM ledger WHERE kind = 'charge' ` +
        `AND (allocation_id IN (${marks}) OR entry_id IN (${chunk.map(() => "?").join(",")})) GROUP BY allocation_id`,
      ...chunk,
      ...chunk.map((id) => `charge:${id}`),
    )) {
      Object.assign(out.get(c.id)!, { charges: c.n, amount: c.amt });
    }
  }
  return out;
}

/** Every id booked exactly once (one usage row, one charge). */
export async function expectExactlyOnce(expect: ExpectStatic, ids: string[]): Promise<Map<string, Booked>> {
  const b = await booked(ids);
  const wrong = [...b].filter(([, v]) => v.usage !== 1 || v.charges !== 1).map(([id, v]) => ({ id, usage: v.usage, charges: v.charges }));
  expect(wrong, "allocations not booked exactly once").toEqual([]);
  return b;
}

export const allBooked = async (ids: string[]) => [...(await booked(ids)).values()].every((v) => v.usage === 1 && v.charges === 1);

export interface Account {
  userId: string;
  balance: number;
  ledgerSum: number;
  entries: number;
  charges: number;
  chargeSum: number;
}
export async function accountsOf(userIds: string[]): Promise<Map<string, Account>> {
  const out = new Map<string, Account>();
  for (let i = 0; i < userIds.length; i += 90) {
    const chunk = userIds.slice(i, i + 90);
    for (const a of await q<Account>(
      `SELECT a.user_id AS userId, a.balance AS balance,
              (SELECT COALESCE(SUM(amount), 0) FROM ledger l WHERE l.user_id = a.user_id) AS ledgerSum,
              (SELECT COUNT(*) FROM ledger l WHERE l.user_id = a.user_id) AS entries,
              (SELECT COUNT(*) FROM ledger l WHERE l.user_id = a.user_id AND l.kind = 'charge') AS charges,
              (SELECT COALESCE(SUM(amount), 0) FROM ledger l WHERE l.user_id = a.user_id AND l.kind = 'charge') AS chargeSum
       FROM accounts a WHERE a.user_id IN (${chunk.map(() => "?").join(",")})`,
      ...chunk,
    ))
      out.set(a.userId, a);
  }
  return out;
}

export async function exec(...statements: string[]): Promise<void> {
  for (const s of statements) await env.DB.prepare(s).run();
}

// ---- the service, through its API ---------------------------------------------------------------

export const usage = (userId: string, over: Partial<UsageRecord> = {}): UsageRecord => ({
  allocationId: uid(`alc-${userId}`),
  deviceId: "dev-inv3",
  userId,
  durationSeconds: 3600,
  cpuCores: 2,
  memoryMB: 4096,
  storageMB: 32768,
  allocatedAt: 1_000,
  releasedAt: 3_601_000,
  reason: "released",
  ...over,
});

export interface Alloc {
  allocationId: string;
  deviceId: string;
  userId: string;
  pool: string;
  cpuCores: number;
  memoryMB: number;
  storageMB: number;
  allocatedAt: string;
  expiresAt: string;
}

/** Allocates, retrying while the pool is momentarily out of free devices (concurrent claims). */
export async function allocate(userId: string, pool: string, durationSeconds: number): Promise<Alloc> {
  const token = await tokenFor(userId);
  for (let i = 0; ; i++) {
    const r = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationSeconds } });
    if (r.status === 201) return r.body as Alloc;
    if (i >= 40 || !(r.status === 409 && r.body?.error?.code === "NO_DEVICE_AVAILABLE"))
      throw new Error(`allocate ${userId}@${pool}: ${r.status} ${JSON.stringify(r.body)}`);
    await sleep(100);
  }
}

/** Moves a user to the dear plan and gives them money to spend. */
export async function dearUser(prefix: string, topUp = 20_000): Promise<string> {
  const user = uid(prefix);
  const token = await admin();
  const p = await call("PUT", `/admin/billing/users/${user}/plan?create=true`, { token, body: { pricingPlanId: FAST_PLAN } });
  if (p.status !== 200) throw new Error(`plan: ${p.status} ${JSON.stringify(p.body)}`);
  const t = await call("POST", `/billing/users/${user}/top-ups?create=true`, {
    token,
    body: { amountMinor: topUp, paymentId: uid("pay") },
  });
  if (t.status !== 201) throw new Error(`top-up: ${t.status} ${JSON.stringify(t.body)}`);
  return user;
}

export async function ended(userId: string): Promise<
  {
    allocationId: string;
    deviceId: string;
    durationSeconds: number;
    reason: string;
    cpuCores: number;
    memoryMB: number;
    storageMB: number;
    releasedAt: string;
    expiresAt: string;
  }[]
> {
  const items = [];
  let cursor: string | null = null;
  do {
    const r = await call(
      "GET",
      `/scheduler/allocations?userId=${userId}&status=released&limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
      { token: await admin() },
    );
    if (r.status !== 200) throw new Error(`list: ${r.status} ${JSON.stringify(r.body)}`);
    items.push(...r.body.items);
    cursor = r.body.nextCursor;
  } while (cursor);
  return items;
}

export async function activeCount(userId: string): Promise<number> {
  const r = await call("GET", `/scheduler/allocations?userId=${userId}&status=active&limit=200`, {
    token: await admin(),
  });
  const p = await call("GET", `/scheduler/allocations?userId=${userId}&status=pending&limit=200`, {
    token: await admin(),
  });
  return r.body.items.length + p.body.items.length;
}

export async function reconcileUser(userId: string, from: number, heal = true) {
  const r = await call("POST", "/admin/billing/reconcile", {
    token: await admin(),
    body: { userId, from: new Date(from).toISOString(), to: new Date(Date.now() + 60_000).toISOString(), heal },
  });
  if (r.status !== 200) throw new Error(`reconcile: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as {
    checked: number;
    missingUsage: number;
    missingCharges: number;
    mismatched: number;
    healed: number;
    stillMissing: number;
    balanceDrift: number;
    differences: { missingUsage: string[] }[];
  };
}

export async function pmap<T, R>(items: T[], limit: number, fn: (t: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    }),
  );
  return out;
}

export const specOf = (i: number): Spec => ({
  cpuCores: 1 + (i % 4),
  memoryMB: [1024, 2048, 3072, 4096, 6144, 8192][i % 6]!,
  storageMB: [8192, 10_000, 32768, 65536][i % 4]!,
});
