/**
 * Hardening, free use: an allocation released at once is billed one second, never zero, so a
 * churn of immediate allocate/release cycles costs one charge each (at least one minor unit),
 * and the balance is still the sum of the ledger. Partial seconds round to the nearest second.
 * And a service cannot book an allocation this service made (its usage comes from its device).
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { SERVICE_TOKEN, call, registerDevice, tokenFor, uid, until } from "./helpers";

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
    expect(balance.body.balanceMinor).toBe(sum!.s);
    expect(balance.body.balanceMinor).toBe(1000 + rows.reduce((t, r) => t + r.amount, 0));
  });
});

describe("a service cannot re-book this service's own allocations", () => {
  it("a 0-second report of a live allocation, alone or in a batch, is 409 OWN_ALLOCATION; the real use is booked", async () => {
    const pool = uid("rebook");
    const dev = await registerDevice(pool, { cpuCores: 2, memoryMB: 4096, storageMB: 32768 });
    const user = uid("rebooked");
    const token = await tokenFor(user);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 10 } });
    expect(a.status).toBe(201);
    const forged = {
      allocationId: a.body.allocationId,
      deviceId: dev.deviceId,
      userId: user,
      durationSeconds: 0,
      cpuCores: 2,
      memoryMB: 4096,
      storageMB: 32768,
      allocatedAt: a.body.allocatedAt,
      releasedAt: a.body.allocatedAt,
      reason: "released",
    };
    const foreign = {
      ...forged,
      allocationId: uid("old-system-alloc"),
      durationSeconds: 60,
      releasedAt: new Date(Date.parse(a.body.allocatedAt) + 60_000).toISOString(),
    };
    for (const body of [forged, [foreign, forged], { records: [forged] }]) {
      const r = await call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body });
      expect(r.status, JSON.stringify(r.body)).toBe(409);
      expect(r.body.error).toMatchObject({ code: "OWN_ALLOCATION", details: { allocationId: a.body.allocationId } });
    }
    // Nothing of those batches was written, not even the old system's record beside it.
    const none = await env.DB.prepare("SELECT COUNT(*) AS n FROM usage_records WHERE user_id = ?").bind(user).first<{ n: number }>();
    expect(none!.n).toBe(0);
    await new Promise((res) => setTimeout(res, 1_600));
    const r = await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } });
    expect(r.status).toBe(200);
    const row = await until(
      () =>
        env.DB.prepare("SELECT duration_seconds, source FROM usage_records WHERE allocation_id = ?")
          .bind(a.body.allocationId)
          .first<{ duration_seconds: number; source: string }>(),
      15_000,
    );
    expect(row).toEqual({ duration_seconds: r.body.durationSeconds, source: "device" });
    expect(row.duration_seconds).toBeGreaterThanOrEqual(1);
  });
});
