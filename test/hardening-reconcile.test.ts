/**
 * Hardening, reconciliation heals a booked record that differs from the device's: whatever
 * wrote the wrong row (an old external report, a hand edit), the next pass rewrites it to the
 * device's record and corrects the charge by the difference in its own ledger row, once. The
 * balance stays the sum of the ledger; a second pass finds nothing.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, tokenFor, uid, until } from "./helpers";

const reconcile = async (userId: string, heal = true) =>
  call("POST", "/admin/billing/reconcile", {
    token: await admin(),
    body: { userId, from: "2000-01-01T00:00:00Z", to: "2999-01-01T00:00:00Z", heal },
  });

const one = <T>(q: string, ...args: unknown[]) =>
  env.DB.prepare(q)
    .bind(...args)
    .first<T>();

describe("reconciliation heals differing records", () => {
  it("a record booked at 0 s and 0.00 is rewritten to the device's and charged the difference, once", async () => {
    const pool = uid("heal-pool");
    await registerDevice(pool);
    const user = uid("heal-user");
    const token = await tokenFor(user);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationSeconds: 30 } });
    expect(a.status).toBe(201);
    await new Promise((r) => setTimeout(r, 2_100));
    expect((await call("POST", "/scheduler/devices/release", { token, body: { deviceId: a.body.deviceId } })).status).toBe(200);
    const id = a.body.allocationId as string;
    const booked = await until(() =>
      one<{ duration_seconds: number }>("SELECT duration_seconds FROM usage_records WHERE allocation_id = ?", id),
    );
    const truth = booked.duration_seconds;
    expect(truth).toBeGreaterThanOrEqual(2);
    const charge = (await one<{ amount: number }>("SELECT amount FROM ledger WHERE allocation_id = ?", id))!.amount;
    expect(charge).toBeLessThan(0);

    // As a forged report would have booked it: 0 s, 0.00 (the balance kept consistent with the ledger).
    await env.DB.batch([
      env.DB.prepare("UPDATE usage_records SET duration_seconds = 0, released_at = allocated_at WHERE allocation_id = ?").bind(id),
      env.DB.prepare("UPDATE ledger SET amount = 0 WHERE allocation_id = ?").bind(id),
      env.DB.prepare("UPDATE accounts SET balance = balance - ? WHERE user_id = ?").bind(charge, user),
    ]);
    const before = (await one<{ balance: number }>("SELECT balance FROM accounts WHERE user_id = ?", user))!.balance;

    // A dry run reports it and changes nothing but the metrics' counter of differences found.
    const counted = async () => {
      const text = (await call("GET", "/admin/metrics", { token: await admin() })).body as string;
      return Number(/^eda_reconcile_differences_total (\d+)$/m.exec(text)?.[1] ?? NaN);
    };
    const differencesBefore = await counted();
    const dry = await reconcile(user, false);
    expect(dry.body.mismatched).toBeGreaterThanOrEqual(1);
    expect(await counted()).toBe(
      differencesBefore + dry.body.missingUsage + dry.body.missingCharges + dry.body.mismatched + dry.body.balanceDrift,
    );
    expect(dry.body.corrected).toBe(0);
    expect(
      (await one<{ duration_seconds: number }>("SELECT duration_seconds FROM usage_records WHERE allocation_id = ?", id))!.duration_seconds,
    ).toBe(0);

    const healed = await reconcile(user);
    expect(healed.status).toBe(200);
    expect(healed.body.corrected).toBe(1);
    expect(healed.body.differences[0].corrected).toEqual([{ allocationId: id, correctionMinor: charge, currency: "USD" }]);
    const row = await one<{ duration_seconds: number; source: string }>(
      "SELECT duration_seconds, source FROM usage_records WHERE allocation_id = ?",
      id,
    );
    expect(row).toEqual({ duration_seconds: truth, source: "reconcile" });
    const fix = await one<{ amount: number; kind: string; reference: string }>(
      "SELECT amount, kind, reference FROM ledger WHERE entry_id = ?",
      `heal:${id}`,
    );
    expect(fix).toEqual({ amount: charge, kind: "adjustment", reference: id });
    const after = await one<{ balance: number; total: number }>(
      "SELECT (SELECT balance FROM accounts WHERE user_id = ?1) AS balance, (SELECT SUM(amount) FROM ledger WHERE user_id = ?1) AS total",
      user,
    );
    expect(after!.balance).toBe(before + charge);
    expect(after!.balance).toBe(after!.total);

    // The audit log names the healer and what changed.
    const audit = await env.DB.prepare("SELECT actor, action, target, change FROM audit_log WHERE action = 'usage.heal' AND target = ?")
      .bind(`user:${user}`)
      .all<{ actor: string; action: string; target: string; change: string }>();
    expect(audit.results).toHaveLength(1);
    expect(audit.results[0]).toMatchObject({ actor: "reconcile", target: `user:${user}` });
    expect(JSON.parse(audit.results[0]!.change)).toMatchObject({
      allocationId: id,
      recorded: { durationSeconds: 0 },
      expected: { durationSeconds: truth },
      correction: charge,
    });

    // Healed once: the next pass finds the record equal to the device's.
    const again = await reconcile(user);
    expect(again.body).toMatchObject({ mismatched: 0, corrected: 0, balanceDrift: 0 });
    expect((await one<{ n: number }>("SELECT COUNT(*) AS n FROM ledger WHERE entry_id LIKE 'heal:%' AND user_id = ?", user))!.n).toBe(1);
  });
});
