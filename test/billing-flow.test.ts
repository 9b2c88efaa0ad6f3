/**
 * Billing through the public API: usage booked with one exact charge, balance, top-up and
 * low-balance events, the internal endpoints, reports, and the balance check on allocate.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, SERVICE_TOKEN, tokenFor, uid, until } from "./helpers";

interface Ev {
  seq: number;
  type: string;
  data: Record<string, any>;
  timestamp: string;
}
const events = async (token: string): Promise<Ev[]> => (await call("GET", "/scheduler/events?limit=200", { token })).body.events;

async function charged(allocationId: string) {
  return until(
    async () =>
      env.DB.prepare(
        "SELECT l.amount, l.balance_after, u.duration_seconds, u.reason FROM ledger l JOIN usage_records u " +
          "ON u.allocation_id = l.allocation_id WHERE l.allocation_id = ?",
      )
        .bind(allocationId)
        .first<{ amount: number; balance_after: number; duration_seconds: number; reason: string }>(),
    10_000,
  );
}

describe("usage → charge", () => {
  it("a release is booked once with the exact price, and the balance follows the ledger", async () => {
    const pool = uid("bill");
    const dev = await registerDevice(pool, { cpuCores: 2, memoryMB: 4096, storageMB: 32768 });
    const user = uid("payer");
    const token = await tokenFor(user);
    const before = await call("GET", `/billing/users/${user}/balance`, { token });
    expect(before.status).toBe(200);
    expect(before.body).toMatchObject({
      balanceMinor: 1000,
      currency: "USD",
      pricingPlanId: "standard",
      lowBalanceThresholdMinor: 200,
      hasBalance: true,
      lowBalance: false,
    });
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationSeconds: 3 } });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    await new Promise((res) => setTimeout(res, 1600));
    const r = await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } });
    expect(r.status).toBe(200);
    const c = await charged(a.body.allocationId);
    // 6820 micro-cents per second (2500 + 2×1000 + 4×500 + 32×10) × s, rounded up: a few seconds cost a cent.
    expect(c.duration_seconds).toBeGreaterThanOrEqual(2);
    expect(c.amount).toBe(-Math.ceil((6820 * c.duration_seconds) / 1_000_000));
    expect(c.amount).toBe(-1);
    const after = await call("GET", `/billing/users/${user}/balance`, { token });
    expect(after.body.balanceMinor).toBe(1000 + c.amount);
    const ledger = await call("GET", `/billing/users/${user}/ledger`, { token });
    expect(ledger.body.items.map((e: any) => e.kind)).toEqual(["charge", "starting_credit"]);
    expect(ledger.body.items[0]).toMatchObject({ amountMinor: c.amount, balanceAfterMinor: 1000 + c.amount, currency: "USD" });
    expect(new Date(ledger.body.items[0].createdAt).toISOString()).toBe(ledger.body.items[0].createdAt);
  });

  it("an hour of a 2-core device costs 25 cents (24.552 rounded up) via the internal endpoint", async () => {
    const user = uid("ext");
    const id = uid("alloc-ext");
    const body = {
      allocationId: id,
      deviceId: "ext-dev-1",
      userId: user,
      durationSeconds: 3600,
      cpuCores: 2,
      memoryMB: 4096,
      storageMB: 32768,
      allocatedAt: "2026-11-01T10:00:00Z",
      releasedAt: "2026-11-01T11:00:00Z",
    };
    const first = await call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body).toMatchObject({
      recorded: 1,
      duplicates: 0,
      failed: 0,
      results: [{ allocationId: id, status: "recorded", amountMinor: 25, currency: "USD" }],
    });
    const again = await call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body: [body] });
    expect(again.body).toMatchObject({ recorded: 0, duplicates: 1 });
    const bal = await call("GET", `/api/internal/balance/user/${user}`, { service: SERVICE_TOKEN });
    expect(bal.body).toMatchObject({ userId: user, balanceMinor: 975, currency: "USD", hasBalance: true });
    const report = await call("GET", `/metering/users/${user}?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z`, {
      token: await tokenFor(user),
    });
    expect(report.status, JSON.stringify(report.body)).toBe(200);
    expect(report.body.totals).toEqual({ records: 1, durationSeconds: 3600, deviceHours: 1, chargesMinor: 25, currency: "USD" });
    expect(report.body.items[0]).toMatchObject({
      allocationId: id,
      chargeMinor: 25,
      currency: "USD",
      source: "external",
      allocatedAt: "2026-11-01T10:00:00.000Z",
      releasedAt: "2026-11-01T11:00:00.000Z",
    });
  });

  it("top-up credits once per paymentId and says so on the feed; low balance fires once per crossing", async () => {
    const user = uid("topup");
    const token = await tokenFor(user);
    const adminToken = await admin();
    const t1 = await call("POST", `/billing/users/${user}/top-ups?create=true`, {
      token: adminToken,
      body: { amountMinor: 500, paymentId: uid("pay"), paymentMethod: "card" },
    });
    expect(t1.status, JSON.stringify(t1.body)).toBe(201);
    expect(t1.body).toMatchObject({ amountMinor: 500, balanceMinor: 1500, currency: "USD", duplicate: false });
    const pid = uid("pay");
    const s1 = await call("POST", `/billing/users/${user}/top-ups?create=true`, {
      service: SERVICE_TOKEN,
      body: { amountMinor: 100, paymentId: pid },
    });
    const s2 = await call("POST", `/billing/users/${user}/top-ups?create=true`, {
      service: SERVICE_TOKEN,
      body: { amountMinor: 100, paymentId: pid },
    });
    expect([s1.status, s2.status]).toEqual([201, 200]);
    expect(s2.body).toMatchObject({ balanceMinor: 1600, duplicate: true });
    const ev = await until(async () => {
      const e = (await events(token)).filter((x) => x.type === "billing.payment_success");
      return e.length === 2 && e;
    });
    expect(ev.map((e) => e.data.newBalance)).toEqual([1500, 1600]);
    // Charges take it below the 200 threshold: one event; further charges below: none.
    const charge = (seconds: number) =>
      call("POST", "/api/internal/metering/device-usage", {
        service: SERVICE_TOKEN,
        body: {
          allocationId: uid("a"),
          deviceId: "d1",
          userId: user,
          durationSeconds: seconds,
          cpuCores: 0,
          memoryMB: 0,
          storageMB: 0,
          allocatedAt: new Date(0).toISOString(),
          releasedAt: new Date(seconds * 1000).toISOString(),
        },
      });
    await charge(400 * 560); // 2500 µ¢/s × 224000 s = 560 cents → 1040
    await charge(400 * 360); // 360 → 680
    await charge(400 * 500); // 500 → 180: crossing
    await charge(400 * 50); // 50 → 130: still below, no event
    const low = await until(async () => {
      const e = (await events(token)).filter((x) => x.type === "billing.low_balance");
      return e.length >= 1 && e;
    });
    expect(low).toHaveLength(1);
    expect(low[0]!.data).toMatchObject({ balance: 180, threshold: 200 });
    // Top up above, charge below again: a second crossing, a second event.
    await call("POST", `/billing/users/${user}/top-ups?create=true`, {
      token: adminToken,
      body: { amountMinor: 200, paymentId: uid("pay") },
    });
    await charge(400 * 150); // 330 → 180
    const low2 = await until(async () => {
      const e = (await events(token)).filter((x) => x.type === "billing.low_balance");
      return e.length >= 2 && e;
    });
    expect(low2).toHaveLength(2);
  });
});

describe("balance check on allocate and extend", () => {
  it("refuses what the balance cannot cover, counting what running allocations may still cost", async () => {
    const pool = uid("funds");
    await registerDevice(pool, { cpuCores: 2, memoryMB: 4096, storageMB: 32768 });
    await registerDevice(pool, { cpuCores: 2, memoryMB: 4096, storageMB: 32768 });
    const user = uid("poor");
    const token = await tokenFor(user);
    // 60 minutes of this device may cost 25 cents. Leave exactly 25 + 24 = 49.
    const adj = await call("POST", `/admin/billing/users/${user}/adjustments?create=true`, {
      token: await admin(),
      body: { amountMinor: -951, adjustmentId: uid("adj"), memo: "test" },
    });
    expect(adj.status, JSON.stringify(adj.body)).toBe(201);
    expect(adj.body.balanceMinor).toBe(49);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 60 } });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    const b = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 60 } });
    expect(b.status, JSON.stringify(b.body)).toBe(402);
    expect(b.body.error).toMatchObject({
      code: "INSUFFICIENT_BALANCE",
      details: { balance: 49, committed: 25, available: 24, required: 25 },
    });
    // Extensions are checked the same way (enterprise: no cooldown, so only money limits them).
    expect((await call("PUT", `/quotas/user/${user}?create=true`, { token: await admin(), body: { tier: "enterprise" } })).status).toBe(
      200,
    );
    const extend = () => call("PUT", `/scheduler/allocations/${a.body.allocationId}/extend`, { token, body: { additionalMinutes: 30 } });
    expect((await extend()).status).toBe(200); // 13 (12.276 rounded up) of 24 available; 90 minutes now committed: 37
    const refused = await extend();
    expect(refused.status).toBe(402);
    expect(refused.body.error.details).toMatchObject({ balance: 49, committed: 37, available: 12, required: 13 });
  });
});

describe("reports and repeats", () => {
  it("a repeated report naming a user without an account changes nothing (no account is opened)", async () => {
    const owner = uid("owner");
    const id = uid("alloc-rep");
    const rec = (userId: string) => ({
      allocationId: id,
      deviceId: "d-rep",
      userId,
      durationSeconds: 60,
      cpuCores: 1,
      memoryMB: 1024,
      storageMB: 1024,
      allocatedAt: "1970-01-01T00:00:00Z",
      releasedAt: "1970-01-01T00:01:00Z",
    });
    expect((await call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body: rec(owner) })).body.recorded).toBe(1);
    const stranger = uid("stranger");
    const again = await call("POST", "/api/internal/metering/device-usage", {
      service: SERVICE_TOKEN,
      body: rec(stranger),
    });
    expect(again.body).toMatchObject({ recorded: 0, duplicates: 1 });
    expect(await env.DB.prepare("SELECT COUNT(*) AS n FROM accounts WHERE user_id = ?").bind(stranger).first("n")).toBe(0);
  });

  it("a report period is checked after its defaults are filled in; lists take no unknown query", async () => {
    const user = uid("period");
    const token = await tokenFor(user);
    const future = await call("GET", `/metering/users/${user}?from=2999-01-01T00:00:00Z`, { token });
    expect(future.status).toBe(400);
    expect(future.body.error.code).toBe("VALIDATION_FAILED");
    const past = await call("GET", `/metering/users/${user}?to=2000-01-01T00:00:00Z`, { token });
    expect(past.status).toBe(400);
    expect((await call("GET", `/metering/users/${user}?from=2000-01-01T00:00:00Z`, { token })).status).toBe(200);
    expect((await call("GET", "/billing/pricing-plans?x=1", { token })).status).toBe(400);
    expect((await call("GET", `/billing/users/${user}/invoices?x=1`, { token })).status).toBe(400);
    const rec = await call("POST", "/admin/billing/reconcile", {
      token: await admin(),
      body: { userId: user, from: "2999-01-01T00:00:00Z" },
    });
    expect(rec.status).toBe(400);
    const ok = await call("POST", "/admin/billing/reconcile", {
      token: await admin(),
      body: { userId: user, from: "2000-01-01T00:00:00Z", to: "2999-01-01T00:00:00Z" },
    });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({
      from: "2000-01-01T00:00:00.000Z",
      to: "2999-01-01T00:00:00.000Z",
      users: 1,
      missingUsage: 0,
    });
  });
});

describe("billing events on the cron", () => {
  it("an event left undelivered is delivered by the cron once; delivered ones are forgotten after 30 days", async () => {
    const { runBillingCron } = await import("../src/billing/cron");
    const user = uid("late-event");
    const token = await tokenFor(user);
    const key = `test.late:${user}`;
    const now = Date.now();
    await env.DB.prepare("INSERT INTO notifications (key, user_id, type, data, created_at) VALUES (?, ?, 'billing.payment_success', ?, ?)")
      .bind(key, user, JSON.stringify({ amount: 1, newBalance: 1 }), now)
      .run();
    const old = `test.old:${user}`;
    await env.DB.prepare("INSERT INTO notifications (key, user_id, type, data, created_at, delivered_at) VALUES (?, ?, 'x', '{}', ?, ?)")
      .bind(old, user, now - 40 * 86_400_000, now - 31 * 86_400_000)
      .run();
    const out = await runBillingCron(env as never, now);
    expect((out.prune as { deleted: number }).deleted).toBeGreaterThanOrEqual(1);
    await runBillingCron(env as never, now);
    const seen = (await events(token)).filter((e) => e.type === "billing.payment_success");
    expect(seen).toHaveLength(1);
    const rows = await env.DB.prepare("SELECT key, delivered_at FROM notifications WHERE user_id = ? ORDER BY key")
      .bind(user)
      .all<{ key: string; delivered_at: number | null }>();
    expect(rows.results.map((r) => r.key)).toEqual([key]);
    expect(rows.results[0]!.delivered_at).not.toBeNull();
  });
});
