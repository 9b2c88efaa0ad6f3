/**
 * Usage booked as a set: a batch of records is written by four statements in one D1 batch
 * (usage rows, charges with their running balances, balances, low-balance events). These tests
 * pin what the per-record booking guaranteed, for many records of one user in one batch:
 * running balances in order, one event per downward crossing, repeats booked once, and a
 * record D1 refuses not holding back the others (the per-record fallback).
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { SERVICE_TOKEN, admin, asReport, call, deliverBatch, uid } from "./helpers";

const q = async <T>(sql: string, ...args: unknown[]): Promise<T[]> =>
  (
    await env.DB.prepare(sql)
      .bind(...args)
      .all<T>()
  ).results;

/** A user on a flat plan: 1 cent per second, nothing else; low balance below 5.00. Starts at 10.00. */
async function flatUser(): Promise<string> {
  const token = await admin();
  const planId = uid("flat");
  const plan = await call("PUT", `/admin/billing/pricing-plans/${planId}`, {
    token,
    body: {
      name: "flat",
      currency: "USD",
      baseMicrosPerSecond: 1_000_000,
      cpuCoreMicrosPerSecond: 0,
      memoryGBMicrosPerSecond: 0,
      storageGBMicrosPerSecond: 0,
      startingCreditMinor: 1000,
      lowBalanceThresholdMinor: 500,
    },
  });
  expect(plan.status, JSON.stringify(plan.body)).toBe(200);
  const user = uid("set-user");
  const moved = await call("PUT", `/admin/billing/users/${user}/plan?create=true`, { token, body: { pricingPlanId: planId } });
  expect(moved.status, JSON.stringify(moved.body)).toBe(200);
  expect(moved.body.balanceMinor).toBe(1000);
  return user;
}

const rec = (userId: string, allocationId: string, durationSeconds: number) => ({
  allocationId,
  deviceId: "dev-set",
  userId,
  durationSeconds,
  cpuCores: 2,
  memoryMB: 4096,
  storageMB: 32768,
  allocatedAt: 1_000,
  releasedAt: 1_000 + durationSeconds * 1000,
  reason: "released" as const,
});

const report = (records: ReturnType<typeof rec>[]) =>
  call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body: asReport({ records }) });

const charges = (userId: string) =>
  q<{ seq: number; entry_id: string; amount: number; balance_after: number }>(
    "SELECT seq, entry_id, amount, balance_after FROM ledger WHERE user_id = ? AND kind = 'charge' ORDER BY seq",
    userId,
  );

async function expectBalanceIsLedgerSum(userId: string, balance: number) {
  const [a] = await q<{ balance: number; sum: number }>(
    "SELECT a.balance AS balance, (SELECT SUM(amount) FROM ledger l WHERE l.user_id = a.user_id) AS sum FROM accounts a " +
      "WHERE a.user_id = ?",
    userId,
  );
  expect(a).toEqual({ balance, sum: balance });
}

describe("usage booked as a set", () => {
  it("one user's charges in one batch carry their running balance in order, with one low-balance event at the crossing", async () => {
    const user = await flatUser();
    const ids = [1, 2, 3, 4, 5].map(() => uid("alc-set"));
    const seconds = [100, 200, 300, 50, 10];
    const r = await report(ids.map((id, i) => rec(user, id, seconds[i]!)));
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ recorded: 5, duplicates: 0, failed: 0 });
    expect(r.body.results.map((x: { amountMinor: number }) => x.amountMinor)).toEqual(seconds);

    const rows = await charges(user);
    expect(rows.map((x) => x.entry_id)).toEqual(ids.map((id) => `charge:${id}`));
    expect(rows.map((x) => x.amount)).toEqual(seconds.map((s) => -s));
    expect(rows.map((x) => x.balance_after)).toEqual([900, 700, 400, 350, 340]);
    await expectBalanceIsLedgerSum(user, 340);

    // 700 → 400 crossed 500 once; 400 → 350 → 340 are below it already.
    const low = await q<{ key: string; data: string }>(
      "SELECT key, data FROM notifications WHERE user_id = ? AND type = 'billing.low_balance'",
      user,
    );
    expect(low.map((n) => n.key)).toEqual([`low_balance:${rows[2]!.seq}`]);
    expect(JSON.parse(low[0]!.data)).toMatchObject({ balance: 400, threshold: 500, entryId: `charge:${ids[2]}` });
  });

  it("repeats change nothing; a batch of old and new records books only the new ones, continuing the balance", async () => {
    const user = await flatUser();
    const [a, b, c, d] = [1, 2, 3, 4].map(() => uid("alc-rep"));
    expect((await report([rec(user, a!, 100), rec(user, b!, 100)])).body).toMatchObject({ recorded: 2, duplicates: 0 });
    const again = await report([rec(user, a!, 100), rec(user, b!, 100)]);
    expect(again.body).toMatchObject({ recorded: 0, duplicates: 2 });
    expect((await charges(user)).length).toBe(2);

    const mixed = await report([rec(user, c!, 10), rec(user, a!, 100), rec(user, d!, 20), rec(user, b!, 100)]);
    expect(mixed.body.results.map((x: { status: string }) => x.status)).toEqual(["recorded", "duplicate", "recorded", "duplicate"]);
    expect((await charges(user)).map((x) => x.balance_after)).toEqual([900, 800, 790, 770]);
    await expectBalanceIsLedgerSum(user, 770);
    const usage = await q<{ n: number }>("SELECT COUNT(*) AS n FROM usage_records WHERE user_id = ?", user);
    expect(usage[0]!.n).toBe(4);
  });

  it("several users in one batch: each balance moves by its own charges only", async () => {
    const users = await Promise.all([1, 2, 3].map(() => flatUser()));
    const records = users.flatMap((u, k) => [1, 2].map((n) => rec(u, uid("alc-multi"), 10 * (k + 1) * n)));
    const r = await report(records);
    expect(r.body).toMatchObject({ recorded: 6, failed: 0 });
    for (const [k, u] of users.entries()) {
      const spent = 10 * (k + 1) * 3;
      expect((await charges(u)).map((x) => x.balance_after)).toEqual([1000 - 10 * (k + 1), 1000 - spent]);
      await expectBalanceIsLedgerSum(u, 1000 - spent);
    }
  });

  it("a record D1 refuses does not hold back the rest of its batch, and is booked once when sent again", async () => {
    const user = await flatUser();
    const [good1, stuck, good2] = [1, 2, 3].map(() => uid("alc-fb"));
    await env.DB.exec(
      `CREATE TRIGGER refuse_set BEFORE INSERT ON usage_records WHEN NEW.allocation_id = '${stuck}' BEGIN SELECT RAISE(ABORT, ` +
        `'injected'); END`,
    );
    let first;
    try {
      first = await report([rec(user, good1!, 100), rec(user, stuck!, 200), rec(user, good2!, 300)]);
    } finally {
      await env.DB.exec("DROP TRIGGER refuse_set");
    }
    expect(first.status).toBe(503);
    expect(first.body.error.details).toMatchObject({ recorded: 2, failed: 1 });
    expect((await charges(user)).map((x) => x.entry_id)).toEqual([`charge:${good1}`, `charge:${good2}`]);
    const again = await report([rec(user, good1!, 100), rec(user, stuck!, 200), rec(user, good2!, 300)]);
    expect(again.body).toMatchObject({ recorded: 1, duplicates: 2, failed: 0 });
    expect((await charges(user)).map((x) => x.balance_after)).toEqual([900, 600, 400]);
    await expectBalanceIsLedgerSum(user, 400);
  });

  it("the same record twice in one queue batch is booked once", async () => {
    const user = await flatUser();
    const r = rec(user, uid("alc-twice"), 42);
    const other = rec(user, uid("alc-other"), 8);
    const result = await deliverBatch("device-usage", [r, other, r]);
    expect(result.explicitAcks.sort()).toEqual(["m0", "m1", "m2"]);
    expect((await charges(user)).map((x) => [x.amount, x.balance_after])).toEqual([
      [-42, 958],
      [-8, 950],
    ]);
    await expectBalanceIsLedgerSum(user, 950);
  });
});
