/**
 * Monthly invoices (src/billing/invoices.ts), through the admin endpoint, the cron and the
 * user's reads. Bookings always carry the time they happen, so past months are set up as
 * fixtures written straight into D1 (accounts, ledger with running balances, usage rows),
 * consistent with each other; current bookings go through the real API. Every test uses its
 * own months, so invoice runs of one test never meet another test's fixtures.
 */
import { createScheduledController } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../src/index";
import { INVOICE_CLOSE_DELAY_MS, generateInvoices, invoiceIdOf } from "../src/billing/invoices";
import { runBillingCron } from "../src/billing/cron";
import { periodBounds, periodOf } from "../src/domain/pricing";
import { admin, call, SERVICE_TOKEN, tokenFor, uid, until } from "./helpers";

type Kind = "starting_credit" | "top_up" | "charge" | "adjustment";
interface Fixture {
  kind: Kind;
  amount: number;
  at: string;
  seconds?: number;
}

/**
 * Writes a user's history as the booking code would have: one ledger row per line with its
 * running balance, a usage row for each charge, and the account at the sum of the ledger.
 */
async function seed(userId: string, lines: Fixture[]): Promise<number> {
  let balance = 0;
  const statements: D1PreparedStatement[] = [];
  lines.forEach((l, i) => {
    balance += l.amount;
    const at = Date.parse(l.at);
    const allocationId = l.kind === "charge" ? `alc-fx-${userId}-${i}` : null;
    const entryId = l.kind === "starting_credit" ? `starting_credit:${userId}` : `${l.kind}:fx-${userId}-${i}`;
    statements.push(
      env.DB.prepare(
        `INSERT INTO ledger (entry_id, user_id, kind, amount, balance_after, allocation_id, plan_id, reference, memo, created_at)
       VALUES (?, ?, ?, ?, ?, ?, 'standard', NULL, 'fixture', ?)`,
      ).bind(entryId, userId, l.kind, l.amount, balance, allocationId, at),
    );
    if (allocationId) {
      statements.push(
        env.DB.prepare(
          `INSERT INTO usage_records (allocation_id, device_id, user_id, tenant_id, duration_seconds, cpu_cores, memory_mb, storage_mb,
           allocated_at, released_at, reason, received_at, source)
         VALUES (?, 'fx-dev', ?, NULL, ?, 2, 4096, 32768, ?, ?, 'released', ?, 'device')`,
        ).bind(allocationId, userId, l.seconds ?? 0, at - (l.seconds ?? 0) * 1000, at, at),
      );
    }
  });
  const first = Date.parse(lines[0]!.at);
  statements.push(
    env.DB.prepare(
      `INSERT INTO accounts (user_id, plan_id, balance, last_seq, reconciled_through, created_at, updated_at)
     VALUES (?, 'standard', ?, (SELECT MAX(seq) FROM ledger WHERE user_id = ?), ?, ?, ?)`,
    ).bind(userId, balance, userId, first, first, first),
  );
  await env.DB.batch(statements);
  return balance;
}

const runInvoices = async (period: string) => call("POST", "/admin/billing/invoices/run", { token: await admin(), body: { period } });
const invoicesOf = async (userId: string) =>
  (await call("GET", `/billing/users/${userId}/invoices`, { token: await tokenFor(userId) })).body.items as any[];
const invoiceRows = async (userId: string) =>
  (await env.DB.prepare("SELECT * FROM invoices WHERE user_id = ? ORDER BY period").bind(userId).all<Record<string, any>>()).results;
const invoiceEvents = async (userId: string) =>
  ((await call("GET", "/scheduler/events?limit=200", { token: await tokenFor(userId) })).body.events as any[]).filter(
    (e) => e.type === "billing.invoice_generated",
  );
const ledgerSum = async (userId: string) =>
  (await env.DB.prepare("SELECT SUM(amount) AS total FROM ledger WHERE user_id = ?").bind(userId).first<{ total: number }>())!.total;

/** Sums from the invoices a user can read: each opens where the one before closed, and together they are the ledger. */
function chain(items: any[]) {
  const byPeriod = [...items].sort((a, b) => (a.period < b.period ? -1 : 1));
  for (let i = 1; i < byPeriod.length; i++)
    expect(byPeriod[i].openingBalanceMinor, byPeriod[i].period).toBe(byPeriod[i - 1].closingBalanceMinor);
  return byPeriod.reduce((s, inv) => s + inv.closingBalanceMinor - inv.openingBalanceMinor, 0);
}

describe("invoice totals", () => {
  it("add up a month exactly: opening, charges, credits, debits, closing and usage, month edges included", async () => {
    const user = uid("inv-a");
    const other = uid("inv-b");
    await seed(user, [
      { kind: "starting_credit", amount: 1000, at: "2026-08-20T10:00:00.000Z" },
      { kind: "charge", amount: -25, at: "2026-09-01T00:00:00.000Z", seconds: 3600 }, // first instant of September
      { kind: "top_up", amount: 500, at: "2026-09-15T12:00:00.000Z" },
      { kind: "charge", amount: -7, at: "2026-09-20T08:00:00.000Z", seconds: 1000 },
      { kind: "adjustment", amount: -100, at: "2026-09-25T09:00:00.000Z" },
      { kind: "adjustment", amount: 40, at: "2026-09-28T09:00:00.000Z" },
      { kind: "charge", amount: -3, at: "2026-09-30T23:59:59.999Z", seconds: 400 }, // last instant of September
      { kind: "charge", amount: -12, at: "2026-10-01T00:00:00.000Z", seconds: 1800 }, // first instant of October
      { kind: "top_up", amount: 200, at: "2026-10-10T10:00:00.000Z" },
    ]);
    await seed(other, [
      { kind: "starting_credit", amount: 1000, at: "2026-09-05T10:00:00.000Z" },
      { kind: "charge", amount: -60, at: "2026-09-06T10:00:00.000Z", seconds: 8800 },
    ]);

    const sep = await runInvoices("2026-09");
    expect(sep.status, JSON.stringify(sep.body)).toBe(200);
    expect(sep.body).toEqual({ period: "2026-09", created: 2, remaining: false });
    const [a] = await invoiceRows(user);
    // opening 1000; charges 25 + 7 + 3; credits 500 + 40; debits 100; closing 1000 − 35 + 540 − 100.
    expect(a).toMatchObject({
      invoice_id: invoiceIdOf(user, "2026-09"),
      user_id: user,
      period: "2026-09",
      currency: "USD",
      period_start: Date.UTC(2026, 8, 1),
      period_end: Date.UTC(2026, 9, 1),
      opening_balance: 1000,
      charges: 35,
      credits: 540,
      debits: 100,
      closing_balance: 1405,
      usage_count: 3,
      usage_seconds: 5000,
    });
    const [b] = await invoiceRows(other);
    // Opened in September: its starting credit is a credit of the month, the opening is 0.
    expect(b).toMatchObject({
      period: "2026-09",
      opening_balance: 0,
      charges: 60,
      credits: 1000,
      debits: 0,
      closing_balance: 940,
      usage_count: 1,
      usage_seconds: 8800,
    });

    const oct = await runInvoices("2026-10");
    expect(oct.body).toEqual({ period: "2026-10", created: 1, remaining: false }); // `other` did nothing in October
    const items = await invoicesOf(user);
    expect(items.map((i) => i.period)).toEqual(["2026-10", "2026-09"]); // newest first
    expect(items[0]).toMatchObject({
      currency: "USD",
      periodStart: "2026-10-01T00:00:00.000Z",
      periodEnd: "2026-11-01T00:00:00.000Z",
      openingBalanceMinor: 1405,
      chargesMinor: 12,
      creditsMinor: 200,
      debitsMinor: 0,
      closingBalanceMinor: 1593,
      usageCount: 1,
      usageSeconds: 1800,
    });
    expect(await invoicesOf(other)).toHaveLength(1);

    // August (the starting credit alone) completes the history: the invoices add up to the ledger.
    expect((await runInvoices("2026-08")).body.created).toBe(1);
    const all = await invoicesOf(user);
    expect(all.find((i) => i.period === "2026-08")).toMatchObject({
      openingBalanceMinor: 0,
      chargesMinor: 0,
      creditsMinor: 1000,
      debitsMinor: 0,
      closingBalanceMinor: 1000,
      usageCount: 0,
      usageSeconds: 0,
    });
    expect(chain(all)).toBe(1593);
    expect(await ledgerSum(user)).toBe(1593);
  });

  it(
    "a charge booked after the month ended is on the next invoice, " + "and the invoices still add up to the ledger and the balance",
    async () => {
      const user = uid("inv-late");
      await seed(user, [
        { kind: "starting_credit", amount: 1000, at: "2026-10-03T10:00:00.000Z" },
        { kind: "charge", amount: -50, at: "2026-10-04T10:00:00.000Z", seconds: 7000 },
      ]);
      const oct = await generateInvoices(env, "2026-10");
      expect(oct.ok).toBe(true);
      const octBefore = await invoiceRows(user);
      expect(octBefore).toHaveLength(1);
      expect(octBefore[0]).toMatchObject({ opening_balance: 0, charges: 50, credits: 1000, closing_balance: 950 });

      // Usage of an hour in late October arrives only now (this month): booked now, at the standard price (25 ¢).
      const body = {
        allocationId: uid("alc-late"),
        deviceId: "late-dev",
        userId: user,
        durationSeconds: 3600,
        cpuCores: 2,
        memoryMB: 4096,
        storageMB: 32768,
        allocatedAt: "2026-10-31T22:00:00.000Z",
        releasedAt: "2026-10-31T23:00:00.000Z",
      };
      const booked = await call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body });
      expect(booked.body).toMatchObject({ recorded: 1, results: [{ status: "recorded", amountMinor: 25, currency: "USD" }] });

      // October's invoice is written once and stays as it was, also when run again.
      expect((await runInvoices("2026-10")).body).toMatchObject({ created: 0 });
      expect(await invoiceRows(user)).toEqual(octBefore);

      // The invoice of the month it was booked in (this one, written as if it had closed) carries it.
      const current = periodOf(Date.now());
      const next = await generateInvoices(env, current, { now: periodBounds(current)!.end + INVOICE_CLOSE_DELAY_MS });
      expect(next.ok).toBe(true);
      const rows = await invoiceRows(user);
      expect(rows.map((r) => r.period)).toEqual(["2026-10", current]);
      expect(rows[1]).toMatchObject({
        opening_balance: 950,
        charges: 25,
        credits: 0,
        debits: 0,
        closing_balance: 925,
        usage_count: 1,
        usage_seconds: 3600,
      });

      const items = await invoicesOf(user);
      expect(chain(items)).toBe(await ledgerSum(user));
      const balance = await call("GET", `/billing/users/${user}/balance`, { token: await tokenFor(user) });
      expect(balance.body.balanceMinor).toBe(925);
      expect(rows[1]!.closing_balance).toBe(balance.body.balanceMinor);
    },
  );

  it("a month with no ledger activity gets no invoice; the next active month opens at the carried balance", async () => {
    const user = uid("inv-quiet");
    await seed(user, [
      { kind: "starting_credit", amount: 1000, at: "2026-01-10T10:00:00.000Z" },
      { kind: "charge", amount: -9, at: "2026-01-11T10:00:00.000Z", seconds: 1320 },
      // nothing in February
      { kind: "top_up", amount: 300, at: "2026-03-31T23:59:59.999Z" },
    ]);
    for (const p of ["2026-01", "2026-02", "2026-03"]) expect((await runInvoices(p)).status).toBe(200);
    const rows = await invoiceRows(user);
    expect(rows.map((r) => r.period)).toEqual(["2026-01", "2026-03"]);
    expect(rows[1]).toMatchObject({
      opening_balance: 991,
      charges: 0,
      credits: 300,
      debits: 0,
      closing_balance: 1291,
      usage_count: 0,
      usage_seconds: 0,
    });
    expect(chain(await invoicesOf(user))).toBe(1291);
  });
});

describe("one invoice per user and month", () => {
  it("running twice, and three times at once, writes each invoice once and tells the user once", async () => {
    const users = [uid("inv-once"), uid("inv-once"), uid("inv-once")];
    for (const [i, u] of users.entries()) {
      await seed(u, [
        { kind: "starting_credit", amount: 1000, at: "2026-04-02T10:00:00.000Z" },
        { kind: "charge", amount: -(10 + i), at: "2026-04-03T10:00:00.000Z", seconds: 1500 },
      ]);
    }
    const runs = await Promise.all([runInvoices("2026-04"), runInvoices("2026-04"), runInvoices("2026-04")]);
    for (const r of runs) expect(r.status, JSON.stringify(r.body)).toBe(200);
    // Between them the runs created each invoice exactly once.
    expect(runs.reduce((n, r) => n + r.body.created, 0)).toBe(3);
    const first = await Promise.all(users.map(invoiceRows));
    for (const rows of first) expect(rows).toHaveLength(1);
    expect(first.map((r) => r[0]!.charges)).toEqual([10, 11, 12]);

    const again = await runInvoices("2026-04");
    expect(again.body).toEqual({ period: "2026-04", created: 0, remaining: false });
    expect(await Promise.all(users.map(invoiceRows))).toEqual(first);
    const unique = await env.DB.prepare(
      "SELECT COUNT(*) AS n, COUNT(DISTINCT user_id) AS users FROM invoices WHERE period = '2026-04'",
    ).first<{ n: number; users: number }>();
    expect(unique).toEqual({ n: 3, users: 3 });

    // billing.invoice_generated: once per invoice on its user's feed, with the invoice's figures.
    for (const [i, u] of users.entries()) {
      const events = await until(async () => {
        const e = await invoiceEvents(u);
        return e.length > 0 && e;
      });
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({
        type: "billing.invoice_generated",
        userId: u,
        data: {
          invoiceId: invoiceIdOf(u, "2026-04"),
          period: "2026-04",
          currency: "USD",
          charges: 10 + i,
          credits: 1000,
          debits: 0,
          openingBalance: 0,
          closingBalance: 990 - i,
          usageCount: 1,
          usageSeconds: 1500,
        },
      });
    }
    // Runs after delivery do not repeat it.
    await runInvoices("2026-04");
    for (const u of users) expect(await invoiceEvents(u)).toHaveLength(1);
  });

  it("writes at most `limit` per call and says when more remain", async () => {
    const users = [uid("inv-page"), uid("inv-page"), uid("inv-page")];
    for (const u of users) await seed(u, [{ kind: "starting_credit", amount: 1000, at: "2026-05-02T10:00:00.000Z" }]);
    const first = await generateInvoices(env, "2026-05", { limit: 2 });
    expect(first).toEqual({ ok: true, value: { period: "2026-05", created: 2, remaining: true } });
    const second = await generateInvoices(env, "2026-05", { limit: 2 });
    expect(second).toEqual({ ok: true, value: { period: "2026-05", created: 1, remaining: false } });
    for (const u of users) expect(await invoiceRows(u)).toHaveLength(1);
  });
});

describe("which months can be invoiced", () => {
  it("a month that has not ended is refused with 409 PERIOD_NOT_ENDED and nothing is written", async () => {
    const user = uid("inv-now");
    await call("GET", `/billing/users/${user}/balance`, { token: await tokenFor(user) }); // opens the account now
    const current = periodOf(Date.now());
    for (const period of [current, "2099-01"]) {
      const r = await runInvoices(period);
      expect(r.status, period).toBe(409);
      expect(r.body.error).toMatchObject({ code: "PERIOD_NOT_ENDED", details: { period } });
    }
    expect(await invoiceRows(user)).toEqual([]);
    const bad = await runInvoices("2026-13");
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe("VALIDATION_FAILED");
  });

  it("a month closes a short while after it ends, so a booking still in flight at midnight lands on its own month's invoice", async () => {
    const user = uid("inv-close");
    await seed(user, [
      { kind: "starting_credit", amount: 1000, at: "2026-06-10T10:00:00.000Z" },
      { kind: "charge", amount: -20, at: "2026-06-20T10:00:00.000Z", seconds: 2900 },
    ]);
    const end = Date.UTC(2026, 6, 1);
    const early = await generateInvoices(env, "2026-06", { now: end + 60_000 });
    expect(early.ok).toBe(false);
    expect(early).toMatchObject({
      status: 409,
      code: "PERIOD_NOT_ENDED",
      details: { period: "2026-06", closesAt: new Date(end + INVOICE_CLOSE_DELAY_MS).toISOString() },
    });
    // A charge that read the clock at 23:59:59.5 commits after midnight (its row still says June).
    const late = await env.DB.prepare(
      `INSERT INTO ledger (entry_id, user_id, kind, amount, balance_after, allocation_id, plan_id, memo, created_at)
       SELECT 'charge:late-' || ?1, ?1, 'charge', -4, balance - 4, NULL, 'standard', 'late commit', ?2
       FROM accounts WHERE user_id = ?1 RETURNING seq`,
    )
      .bind(user, end - 500)
      .first<{ seq: number }>();
    await env.DB.prepare("UPDATE accounts SET balance = balance - 4, last_seq = ? WHERE user_id = ?").bind(late!.seq, user).run();

    const closed = await generateInvoices(env, "2026-06", { now: end + INVOICE_CLOSE_DELAY_MS });
    expect(closed).toEqual({ ok: true, value: { period: "2026-06", created: 1, remaining: false } });
    expect((await invoiceRows(user))[0]).toMatchObject({ charges: 24, credits: 1000, closing_balance: 976 });
    expect(chain(await invoicesOf(user))).toBe(await ledgerSum(user));
  });
});

describe("the cron", () => {
  it("writes last month's invoices once (scheduled handler), not before the month has closed", async () => {
    const user = uid("inv-cron");
    await seed(user, [
      { kind: "starting_credit", amount: 1000, at: "2026-07-01T00:00:00.000Z" },
      { kind: "charge", amount: -33, at: "2026-07-15T10:00:00.000Z", seconds: 4840 },
      { kind: "adjustment", amount: -17, at: "2026-07-31T23:59:59.999Z" },
    ]);
    const fire = (scheduledTime: number) =>
      worker.scheduled(createScheduledController({ scheduledTime, cron: "*/5 * * * *" }), env as never);
    const end = Date.UTC(2026, 7, 1);
    await fire(end + 5 * 60_000); // first run after midnight: July has not closed yet
    expect(await invoiceRows(user)).toEqual([]);
    await fire(end + INVOICE_CLOSE_DELAY_MS + 5 * 60_000);
    await fire(end + INVOICE_CLOSE_DELAY_MS + 10 * 60_000);
    const rows = await invoiceRows(user);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      period: "2026-07",
      opening_balance: 0,
      charges: 33,
      credits: 1000,
      debits: 17,
      closing_balance: 950,
      usage_count: 1,
      usage_seconds: 4840,
    });
    const events = await until(async () => {
      const e = await invoiceEvents(user);
      return e.length > 0 && e;
    });
    expect(events).toHaveLength(1);
    expect(events[0].data).toMatchObject({ invoiceId: invoiceIdOf(user, "2026-07"), closingBalance: 950 });

    // runBillingCron (what scheduled() calls) reports its invoice step, and a repeat creates nothing.
    const out = await runBillingCron(env as never, end + INVOICE_CLOSE_DELAY_MS + 15 * 60_000);
    expect(out.invoices).toEqual({ ok: true, value: { period: "2026-07", created: 0, remaining: false } });
    expect(await invoiceEvents(user)).toHaveLength(1);
  });
});

describe("who may read an invoice", () => {
  it("its user and admins; anyone else gets 404 for the invoice and 403 for the list", async () => {
    const owner = uid("inv-owner");
    const stranger = uid("inv-stranger");
    await seed(owner, [
      { kind: "starting_credit", amount: 1000, at: "2026-02-03T10:00:00.000Z" },
      { kind: "charge", amount: -5, at: "2026-02-04T10:00:00.000Z", seconds: 700 },
    ]);
    expect((await runInvoices("2026-02")).status).toBe(200);
    const id = invoiceIdOf(owner, "2026-02");
    const mine = await call("GET", `/billing/invoices/${id}`, { token: await tokenFor(owner) });
    expect(mine.status).toBe(200);
    expect(mine.body).toMatchObject({
      invoiceId: id,
      userId: owner,
      period: "2026-02",
      chargesMinor: 5,
      closingBalanceMinor: 995,
      currency: "USD",
    });
    expect(new Date(mine.body.createdAt).toISOString()).toBe(mine.body.createdAt);
    expect((await call("GET", `/billing/invoices/${id}`, { token: await admin() })).body).toEqual(mine.body);

    const theirs = await call("GET", `/billing/invoices/${id}`, { token: await tokenFor(stranger) });
    expect(theirs.status).toBe(404);
    expect(theirs.body.error.code).toBe("INVOICE_NOT_FOUND");
    // Same answer as an id that does not exist: ids do not leak.
    const missing = await call("GET", `/billing/invoices/${invoiceIdOf(stranger, "2026-02")}`, {
      token: await tokenFor(stranger),
    });
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe("INVOICE_NOT_FOUND");

    const list = await call("GET", `/billing/users/${owner}/invoices`, { token: await tokenFor(stranger) });
    expect(list.status).toBe(403);
    expect((await call("GET", `/billing/users/${owner}/invoices`, { token: await admin() })).body.items).toHaveLength(1);
    expect((await call("GET", `/billing/invoices/${id}`, {})).status).toBe(401);
    // Only admins run invoices.
    expect((await call("POST", "/admin/billing/invoices/run", { token: await tokenFor(owner), body: { period: "2026-02" } })).status).toBe(
      403,
    );
  });
});
