/**
 * Hardening, free use: an allocation released at once is billed one second, never zero, so a
 * churn of immediate allocate/release cycles costs one charge each (at least one minor unit),
 * and the balance is still the sum of the ledger. Partial seconds round to the nearest second.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, registerDevice, tokenFor, uid, until } from "./helpers";

describe("no use is free", () => {
  it("20 immediate allocate/release cycles: each booked at 1 s and charged, the balance the ledger's sum", async () => {
    const pool = uid("churn");
    const dev = await registerDevice(pool, { cpuCores: 2, memoryMB: 4096, storageMB: 32768 });
    const user = uid("churner");
    const token = await tokenFor(user);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 10 } });
      expect(a.status, JSON.stringify(a.body)).toBe(201);
      const r = await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } });
      expect(r.status).toBe(200);
      expect(r.body.durationSeconds, "the release says what is billed").toBeGreaterThanOrEqual(1);
      ids.push(a.body.allocationId);
    }
    const rows = await until(async () => {
      const { results } = await env.DB.prepare(
        "SELECT u.allocation_id, u.duration_seconds, l.amount FROM usage_records u JOIN ledger l ON l.allocation_id = u.allocation_id " +
          "WHERE u.user_id = ?",
      )
        .bind(user)
        .all<{ allocation_id: string; duration_seconds: number; amount: number }>();
      return results.length === ids.length ? results : null;
    }, 15_000);
    expect(new Set(rows.map((r) => r.allocation_id))).toEqual(new Set(ids));
    for (const r of rows) {
      expect(r.duration_seconds, r.allocation_id).toBe(1);
      expect(r.amount, `${r.allocation_id} is charged`).toBeLessThanOrEqual(-1);
    }
    const balance = await call("GET", `/billing/users/${user}/balance`, { token });
    const sum = await env.DB.prepare("SELECT SUM(amount) AS s FROM ledger WHERE user_id = ?").bind(user).first<{ s: number }>();
    expect(balance.body.balance).toBe(sum!.s);
    expect(balance.body.balance).toBe(1000 + rows.reduce((t, r) => t + r.amount, 0));
  });
});
