/**
 * A user's object reuses the balance it read from D1 within BILLING.balanceReuseMs, less the
 * price of every allocation that ended since (those charges cannot be in it yet). These tests
 * pin that the reused balance is never more than the truth: what ended since is counted, a
 * refusal reads D1 again, and top-ups, adjustments and plan changes are seen at once.
 * D1 outages are real (the accounts table renamed away), as in billing-unavailable.test.ts.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { BILLING } from "../src/config";
import { admin, call, registerDevice, tokenFor, uid, until, withBillingDown } from "./helpers";

/** A plan that costs 3.00 per second of a device, nothing else; starting credit 10.00 (the default plan's). */
async function pricey(user: string, centsPerSecond = 300): Promise<string> {
  const token = await admin();
  const planId = uid("per-second");
  const body = {
    name: "per second",
    currency: "USD",
    baseMicrosPerSecond: centsPerSecond * 1_000_000,
    cpuCoreMicrosPerSecond: 0,
    memoryGBMicrosPerSecond: 0,
    storageGBMicrosPerSecond: 0,
    startingCreditMinor: 1000,
    lowBalanceThresholdMinor: 0,
  };
  expect((await call("PUT", `/admin/billing/pricing-plans/${planId}`, { token, body })).status).toBe(200);
  const moved = await call("PUT", `/admin/billing/users/${user}/plan?create=true`, { token, body: { pricingPlanId: planId } });
  expect(moved.status, JSON.stringify(moved.body)).toBe(200);
  return planId;
}

/** A new pool of `devices` devices and a new user with a token. */
async function poolAndUser(name: string, devices = 2): Promise<{ pool: string; user: string; token: string }> {
  const pool = uid(name);
  for (let i = 0; i < devices; i++) await registerDevice(pool);
  const user = uid(`${name}-user`);
  return { pool, user, token: await tokenFor(user) };
}

const allocate = (token: string, pool: string, durationSeconds: number) =>
  call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationSeconds } });

describe("a balance read moments ago is reused, never above the truth", () => {
  it("the reuse window is short", () => {
    expect(BILLING.balanceReuseMs).toBeLessThanOrEqual(60_000);
  });

  it(
    "what ended since the read is counted: during an outage it allows what the rest covers and refuses (503: D1 must be asked) " +
      "what it does not",
    async () => {
      const { pool, user, token } = await poolAndUser("reuse");
      await pricey(user);
      // Reads D1 (1000), holds 2 s: the charge will be 600.
      const a = await allocate(token, pool, 2);
      expect(a.status, JSON.stringify(a.body)).toBe(201);
      await until(
        async () => (await call("GET", `/scheduler/allocations/${a.body.allocationId}`, { token })).body.status === "released",
        10_000,
        100,
      );
      const ended = (await call("GET", `/scheduler/allocations/${a.body.allocationId}`, { token })).body;
      expect(ended).toMatchObject({ reason: "expired", durationSeconds: 2 });

      await withBillingDown(async () => {
        // Known: 1000 − 600 = 400. Two seconds (600) need D1, which is down.
        const tooMuch = await allocate(token, pool, 2);
        expect(tooMuch.status, JSON.stringify(tooMuch.body)).toBe(503);
        expect(tooMuch.body.error.code).toBe("BILLING_UNAVAILABLE");
        // One second (300) fits in what is known without D1.
        const fits = await allocate(token, pool, 1);
        expect(fits.status, JSON.stringify(fits.body)).toBe(201);
      });
      // After recovery every charge is booked, and the balance went where the object expected it to.
      await until(
        async () => {
          const r = await env.DB.prepare("SELECT balance FROM accounts WHERE user_id = ?").bind(user).first<{ balance: number }>();
          return r?.balance === 100;
        },
        15_000,
        100,
      );
    },
  );

  it("an adjustment is seen by the very next allocation (no reuse of the older balance)", async () => {
    const { pool, user, token } = await poolAndUser("reuse-adj");
    const first = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 60 } });
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    // 60 minutes of this device may cost 25; leave 25 + 24 = 49.
    const adj = await call("POST", `/admin/billing/users/${user}/adjustments?create=true`, {
      token: await admin(),
      body: { amountMinor: -951, adjustmentId: uid("adj"), memo: "test" },
    });
    expect(adj.body.balanceMinor).toBe(49);
    const second = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 60 } });
    expect(second.status, JSON.stringify(second.body)).toBe(402);
    expect(second.body.error.details).toMatchObject({ balance: 49, committed: 25, available: 24, required: 25 });
  });

  it("a plan change is seen by the very next allocation", async () => {
    const { pool, user, token } = await poolAndUser("reuse-plan");
    const cheap = await allocate(token, pool, 60);
    expect(cheap.status, JSON.stringify(cheap.body)).toBe(201);
    // Now a second costs 1.00: 60 s are 6000, far beyond 1000.
    await pricey(user, 100);
    const dear = await allocate(token, pool, 60);
    expect(dear.status, JSON.stringify(dear.body)).toBe(402);
    expect(dear.body.error.details).toMatchObject({ required: 6000 });
  });

  it("a top-up is seen at once: refused, topped up, allowed", async () => {
    const { pool, user, token } = await poolAndUser("reuse-top", 1);
    await pricey(user);
    const refused = await allocate(token, pool, 4); // 1200 > 1000
    expect(refused.status).toBe(402);
    const top = await call("POST", `/billing/users/${user}/top-ups?create=true`, {
      token: await admin(),
      body: { amountMinor: 500, paymentId: uid("pay") },
    });
    expect(top.status).toBe(201);
    // The refusal read D1; the top-up told the object; the next check sees the new balance.
    const allowed = await allocate(token, pool, 4);
    expect(allowed.status, JSON.stringify(allowed.body)).toBe(201);
  });
});
