/**
 * Billing unavailable, failing open: this file runs in its own vitest project
 * (`billing-fail-open`, see vitest.config.ts) with BILLING_ALLOW_ON_ERROR = "true". An
 * unreadable balance lets allocate and extend through (logged), and the usage of such an
 * allocation is still booked exactly once when D1 is back: the consumer retries, opens the
 * account with its starting credit and charges it. D1 really fails (table renamed), no mocks.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import type { UsageRecord } from "../src/domain/types";
import { call, deliverBatch, registerDevice, tokenFor, uid, until, withBillingDown } from "./helpers";

const count = async (q: string, ...args: unknown[]) =>
  (await env.DB.prepare(q)
    .bind(...args)
    .first<{ n: number }>())!.n;

describe("BILLING_ALLOW_ON_ERROR=true: an unreadable balance lets allocations through", () => {
  it("the switch of this project is on", () => {
    expect(env.BILLING_ALLOW_ON_ERROR).toBe("true");
  });

  it("allocate and extend succeed while D1 is down; after recovery the usage is booked once, on a newly opened account", async () => {
    const pool = uid("open");
    const dev = await registerDevice(pool, { cpuCores: 2, memoryMB: 4096, storageMB: 32768 });
    const user = uid("open-user");
    const token = await tokenFor(user);

    const warn = vi.spyOn(console, "warn");
    const { a, e } = await withBillingDown(async () => {
      const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 30 } });
      expect(a.status, JSON.stringify(a.body)).toBe(201);
      const e = await call("PUT", `/scheduler/allocations/${a.body.allocationId}/extend`, {
        token,
        body: { additionalMinutes: 10 },
      });
      expect(e.status, JSON.stringify(e.body)).toBe(200);
      return { a, e };
    });
    // Each pass is logged (allocate and extend: two).
    const logged = warn.mock.calls
      .map((c) => String(c[0]))
      .filter((m) => m.includes("allowed by BILLING_ALLOW_ON_ERROR") && m.includes(user));
    warn.mockRestore();
    expect(logged).toHaveLength(2);
    expect(a.body).toMatchObject({ deviceId: dev.deviceId, userId: user, durationMinutes: 30 });
    expect(e.body).toMatchObject({ extendCount: 1, extendedMinutes: 10, durationMinutes: 40 });
    // The balance was never read, so no account was opened during the outage.
    expect(await count("SELECT COUNT(*) AS n FROM accounts WHERE user_id = ?", user)).toBe(0);

    const r = await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const id = a.body.allocationId as string;
    const charge = await until(
      () =>
        env.DB.prepare(
          "SELECT l.amount, u.duration_seconds FROM ledger l JOIN usage_records u ON u.allocation_id = l.allocation_id " +
            "WHERE l.allocation_id = ?",
        )
          .bind(id)
          .first<{ amount: number; duration_seconds: number }>(),
      15_000,
    );
    expect(charge.duration_seconds).toBe(r.body.durationSeconds);
    // 6820 micro-cents per second for this device, rounded up to whole cents (a cent for a hold of a few seconds).
    expect(charge.amount + Math.ceil((6820 * charge.duration_seconds) / 1_000_000)).toBe(0);
    expect(await count("SELECT COUNT(*) AS n FROM usage_records WHERE allocation_id = ?", id)).toBe(1);
    expect(await count("SELECT COUNT(*) AS n FROM ledger WHERE allocation_id = ?", id)).toBe(1);
    const ledger = await env.DB.prepare("SELECT kind, amount FROM ledger WHERE user_id = ? ORDER BY seq")
      .bind(user)
      .all<{ kind: string; amount: number }>();
    expect(ledger.results).toEqual([
      { kind: "starting_credit", amount: 1000 },
      { kind: "charge", amount: charge.amount },
    ]);
    const bal = await call("GET", `/billing/users/${user}/balance`, { token });
    expect(bal.body.balanceMinor).toBe(1000 + charge.amount);
  });

  it("the consumer retries a record while D1 is down and books it once when D1 is back (redelivery changes nothing)", async () => {
    const user = uid("open-q");
    const rec: UsageRecord = {
      allocationId: uid("alc-open"),
      deviceId: "dev-open",
      userId: user,
      durationSeconds: 3600,
      cpuCores: 2,
      memoryMB: 4096,
      storageMB: 32768,
      allocatedAt: 1_000,
      releasedAt: 3_601_000,
      reason: "released",
    };
    const deliver = (attempts: number) => deliverBatch("device-usage", [rec], attempts);
    const down = await withBillingDown(() => deliver(1));
    expect(down.explicitAcks).toEqual([]);
    expect(down.retryMessages.map((m) => m.msgId)).toEqual(["m0"]);
    expect(await count("SELECT COUNT(*) AS n FROM usage_records WHERE allocation_id = ?", rec.allocationId)).toBe(0);

    const back = await deliver(2);
    expect(back.explicitAcks).toEqual(["m0"]);
    const again = await deliver(3);
    expect(again.explicitAcks).toEqual(["m0"]);
    expect(await count("SELECT COUNT(*) AS n FROM usage_records WHERE allocation_id = ?", rec.allocationId)).toBe(1);
    expect(await count("SELECT COUNT(*) AS n FROM ledger WHERE allocation_id = ?", rec.allocationId)).toBe(1);
    // One hour of 2 cores, 4 GB, 32 GB: 24.552 cents → 25, from the 1000 starting credit.
    const acct = await env.DB.prepare("SELECT balance FROM accounts WHERE user_id = ?").bind(user).first<{ balance: number }>();
    expect(acct!.balance).toBe(975);
  });
});
