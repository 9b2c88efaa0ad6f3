/**
 * Hardening, the audit log: every state-changing action of an admin or a service leaves exactly
 * one row (actor, action, target, change) that GET /admin/audit shows, newest first, paged and
 * filtered; a user's own actions leave none; a money movement's row commits with it (no audit
 * table, no booking), and a Durable Object's change whose row cannot be written is still answered
 * and its whole entry logged. Only admins read the log.
 */
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { UsageRecord } from "../src/domain/types";
import { SERVICE_TOKEN, asReport, call, deliverBatch, registerDevice, seenUser, tokenFor, uid } from "./helpers";
import { usage as record } from "./invariant3";

interface Item {
  seq: number;
  at: string;
  actor: string;
  action: string;
  target: string;
  change: Record<string, any>;
  requestId: string | null;
}

/** A fresh admin per test, so `actor` tells its rows apart from every other test's. */
async function newAdmin() {
  const id = uid("auditor");
  return { id, token: await tokenFor(id, "admin") };
}

async function audit(query: Record<string, string | number>): Promise<Item[]> {
  const r = await call("GET", `/admin/audit?${new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)]))}`, {
    token: await tokenFor("audit-reader", "admin"),
  });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.items;
}

/** The one row of `target`, checked to be the only one. */
async function onlyRow(target: string): Promise<Item> {
  const items = await audit({ target });
  expect(items.map((i) => i.action)).toHaveLength(1);
  return items[0]!;
}

/** An hour's usage record as another service reports it (test/invariant3.ts builds it). */
const usage = (userId: string, allocationId = uid("ext")): UsageRecord => record(userId, { allocationId, deviceId: "dev-ext" });

afterEach(() => vi.restoreAllMocks());

describe("quotas", () => {
  it("a quota update and a renewal each leave one row with the admin, the request and the outcome", async () => {
    const a = await newAdmin();
    const user = uid("q-user");
    const put = await call("PUT", `/quotas/user/${user}?create=true`, { token: a.token, body: { tier: "pro", suspended: true } });
    expect(put.status).toBe(200);
    const row = await onlyRow(`user:${user}`);
    expect(row).toMatchObject({ actor: a.id, action: "quota.update", target: `user:${user}` });
    expect(row.change).toMatchObject({ tier: "pro", suspended: true, after: { tier: "pro", suspended: true } });
    expect(row.change.after.limits.maxDevices).toBe(20);
    expect(row.requestId).toBe(put.res.headers.get("X-Request-Id"));
    expect(Date.parse(row.at)).toBeGreaterThan(Date.now() - 60_000);
    const renew = await call("POST", `/quotas/renew/${user}`, { token: a.token, body: { extensionDays: 7 } });
    expect(renew.status).toBe(200);
    const [latest] = await audit({ target: `user:${user}` });
    expect(latest).toMatchObject({ actor: a.id, action: "quota.renew", change: { extensionDays: 7 } });
    expect(latest!.change.validUntil).toBe(new Date(renew.body.validUntil).toISOString());
  });

  it("a refused update leaves no row", async () => {
    const a = await newAdmin();
    const user = uid("q-bad");
    expect((await call("PUT", `/quotas/user/${user}`, { token: a.token, body: { tier: "platinum" } })).status).toBe(400);
    expect(await audit({ target: `user:${user}` })).toEqual([]);
  });
});

describe("money", () => {
  it("an adjustment: one row, its ledger row names the admin, a repeat adds neither", async () => {
    const a = await newAdmin();
    const user = await seenUser(uid("adj"));
    const body = { amountMinor: -250, adjustmentId: uid("adj-id"), memo: "goodwill reversed" };
    const first = await call("POST", `/admin/billing/users/${user}/adjustments`, { token: a.token, body });
    expect(first.status).toBe(201);
    expect((await call("POST", `/admin/billing/users/${user}/adjustments`, { token: a.token, body })).body.duplicate).toBe(true);
    const row = await onlyRow(`user:${user}`);
    expect(row).toMatchObject({ actor: a.id, action: "account.adjust" });
    expect(row.change).toEqual({ ...body, entryId: `adjustment:${body.adjustmentId}` });
    const ledger = await call("GET", `/billing/users/${user}/ledger`, { token: await tokenFor(user) });
    const entries = ledger.body.items as { kind: string; actor: string | null; amountMinor: number }[];
    expect(entries.find((e) => e.kind === "adjustment")).toMatchObject({ actor: a.id, amountMinor: -250 });
    expect(entries.find((e) => e.kind === "starting_credit")!.actor).toBeNull();
  });

  it("top-ups by an admin and by a service: actor on the row and on the ledger; a reused paymentId with another amount none", async () => {
    const a = await newAdmin();
    const user = await seenUser(uid("topup"));
    const byAdmin = { amountMinor: 500, paymentId: uid("pay"), paymentMethod: "card" };
    const byService = { amountMinor: 700, paymentId: uid("pay") };
    expect((await call("POST", `/billing/users/${user}/top-ups`, { token: a.token, body: byAdmin })).status).toBe(201);
    expect((await call("POST", `/billing/users/${user}/top-ups`, { service: SERVICE_TOKEN, body: byService })).status).toBe(201);
    expect((await call("POST", `/billing/users/${user}/top-ups`, { service: SERVICE_TOKEN, body: byService })).status).toBe(200);
    const reused = await call("POST", `/billing/users/${user}/top-ups`, { token: a.token, body: { ...byAdmin, amountMinor: 1 } });
    expect(reused.status).toBe(409);
    const rows = await audit({ target: `user:${user}` });
    expect(rows.map((r) => [r.actor, r.action, r.change])).toEqual([
      ["service", "account.top_up", { ...byService, paymentMethod: null, entryId: `top_up:${byService.paymentId}` }],
      [a.id, "account.top_up", { ...byAdmin, entryId: `top_up:${byAdmin.paymentId}` }],
    ]);
    const { results } = await env.DB.prepare("SELECT reference, actor FROM ledger WHERE user_id = ? AND kind = 'top_up' ORDER BY seq")
      .bind(user)
      .all();
    expect(results).toEqual([
      { reference: byAdmin.paymentId, actor: a.id },
      { reference: byService.paymentId, actor: "service" },
    ]);
  });

  it("a pricing plan's create and change name what it was before; a user's move names the old plan", async () => {
    const a = await newAdmin();
    const planId = uid("plan");
    const plan = {
      name: "Audited",
      currency: "USD",
      baseMicrosPerSecond: 10,
      cpuCoreMicrosPerSecond: 1,
      memoryGBMicrosPerSecond: 1,
      storageGBMicrosPerSecond: 1,
      startingCreditMinor: 0,
      lowBalanceThresholdMinor: 100,
    };
    expect((await call("PUT", `/admin/billing/pricing-plans/${planId}`, { token: a.token, body: plan })).status).toBe(200);
    const put = await call("PUT", `/admin/billing/pricing-plans/${planId}`, { token: a.token, body: { ...plan, baseMicrosPerSecond: 20 } });
    expect(put.body).toMatchObject({ pricingPlanId: planId, baseMicrosPerSecond: 20 });
    const rows = await audit({ target: `plan:${planId}` });
    expect(rows.map((r) => [r.actor, r.action])).toEqual([
      [a.id, "pricing_plan.set"],
      [a.id, "pricing_plan.set"],
    ]);
    expect(rows[1]!.change).toEqual({ ...plan, before: null });
    expect(rows[0]!.change).toEqual({ ...plan, baseMicrosPerSecond: 20, before: plan });
    const user = uid("mover");
    expect(
      (await call("PUT", `/admin/billing/users/${user}/plan?create=true`, { token: a.token, body: { pricingPlanId: planId } })).status,
    ).toBe(200);
    expect(await onlyRow(`user:${user}`)).toMatchObject({
      actor: a.id,
      action: "account.set_plan",
      change: { pricingPlanId: planId, before: "standard" },
    });
  });

  it("without the audit table an adjustment books nothing: the row and the change commit together", async () => {
    const a = await newAdmin();
    const user = uid("atomic");
    expect((await call("GET", `/billing/users/${user}/balance`, { token: await tokenFor(user) })).body.balanceMinor).toBe(1000);
    await env.DB.exec("ALTER TABLE audit_log RENAME TO audit_log_off");
    let r;
    try {
      r = await call("POST", `/admin/billing/users/${user}/adjustments`, {
        token: a.token,
        body: { amountMinor: 300, adjustmentId: uid("adj-atomic"), memo: "x" },
      });
    } finally {
      await env.DB.exec("ALTER TABLE audit_log_off RENAME TO audit_log");
    }
    expect(r.status).toBe(503);
    expect(r.body.error.code).toBe("BILLING_UNAVAILABLE");
    expect((await call("GET", `/billing/users/${user}/balance`, { token: await tokenFor(user) })).body.balanceMinor).toBe(1000);
  });
});

describe("usage booked by a service or a replay", () => {
  it("a service's usage batch: one row per user with the records it booked; a resend adds none", async () => {
    const [u1, u2] = [uid("ext-a"), uid("ext-b")];
    const records = [usage(u1), usage(u1), usage(u2)];
    const r = await call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body: asReport(records) });
    expect(r.body.recorded).toBe(3);
    expect(
      (await call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body: asReport(records) })).body.duplicates,
    ).toBe(3);
    const one = await onlyRow(`user:${u1}`);
    expect(one).toMatchObject({ actor: "service", action: "usage.report", change: { source: "external", records: 2, charged: 50 } });
    expect([...one.change.allocationIds].sort()).toEqual([records[0]!.allocationId, records[1]!.allocationId].sort());
    expect((await onlyRow(`user:${u2}`)).change).toEqual({
      source: "external",
      records: 1,
      allocationIds: [records[2]!.allocationId],
      charged: 25,
    });
  });

  it("a replay of dead letters: one row per user, the admin as actor", async () => {
    const a = await newAdmin();
    const user = uid("replayed");
    const dead = [usage(user, uid("dead")), usage(user, uid("dead"))];
    expect((await deliverBatch("device-usage-dlq", dead)).explicitAcks).toHaveLength(2);
    const r = await call("POST", "/admin/billing/failed-usage/replay", {
      token: a.token,
      body: { allocationIds: dead.map((d) => d.allocationId) },
    });
    expect(r.body.replayed).toBe(2);
    const row = await onlyRow(`user:${user}`);
    expect(row).toMatchObject({ actor: a.id, action: "usage.replay", change: { source: "replay", records: 2, charged: 50 } });
    // Replayed again: nothing booked, nothing audited.
    await call("POST", "/admin/billing/failed-usage/replay", { token: a.token, body: { allocationIds: dead.map((d) => d.allocationId) } });
    expect(await audit({ target: `user:${user}` })).toHaveLength(1);
  });
});

describe("the fleet", () => {
  it("register, update, status changes, force-release, removal and pool settings: one row each, in order", async () => {
    const a = await newAdmin();
    const pool = uid("apool");
    const reg = await call("POST", "/admin/devices", { token: a.token, body: { pool, cpuCores: 2, memoryMB: 4096, storageMB: 32768 } });
    expect(reg.status).toBe(201);
    const id = reg.body.deviceId as string;
    const ok = async (method: string, path: string, body?: unknown) =>
      expect((await call(method, path, { token: a.token, body })).status, path).toBe(200);
    await ok("PATCH", `/admin/devices/${id}`, { node: "node-9" });
    await ok("POST", `/admin/devices/${id}/maintenance`);
    await ok("POST", `/admin/devices/${id}/online`);
    const user = uid("holder");
    const alloc = await call("POST", "/scheduler/devices/allocate", { token: await tokenFor(user), body: { pool, durationMinutes: 5 } });
    expect(alloc.status).toBe(201);
    await ok("POST", `/admin/devices/${id}/force-release`);
    await ok("POST", `/admin/devices/${id}/offline`);
    await ok("PUT", `/admin/pools/${pool}`, { strategy: "spread", idleReleaseMinutes: 15 });
    await ok("DELETE", `/admin/devices/${id}`);
    const rows = (await audit({ target: `device:${id}` })).reverse();
    expect(rows.every((r) => r.actor === a.id)).toBe(true);
    expect(rows.map((r) => [r.action, r.change])).toEqual([
      ["device.register", { deviceId: id, pool, node: "node-1", cpuCores: 2, memoryMB: 4096, storageMB: 32768 }],
      ["device.update", { node: "node-9" }],
      // Issue 20: a status change also records its reason and a drain (none here).
      ["device.set_status", { status: "maintenance", after: "maintenance", reason: null, drain: null, ended: null }],
      ["device.set_status", { status: "online", after: "available", reason: null, drain: null, ended: null }],
      ["device.force_release", { ended: { allocationId: alloc.body.allocationId, userId: user, durationSeconds: expect.any(Number) } }],
      ["device.set_status", { status: "offline", after: "offline", reason: null, drain: null, ended: null }],
      ["device.remove", { ended: null }],
    ]);
    expect(await onlyRow(`pool:${pool}`)).toMatchObject({
      actor: a.id,
      action: "pool.update",
      change: { strategy: "spread", idleReleaseMinutes: 15 },
    });
  });

  it("a refused change (unknown device, busy device) leaves no row", async () => {
    const a = await newAdmin();
    const ghost = uid("ghost");
    expect((await call("POST", `/admin/devices/${ghost}/maintenance`, { token: a.token })).status).toBe(404);
    expect((await call("POST", `/admin/devices/${ghost}/force-release`, { token: a.token })).status).toBe(404);
    expect(await audit({ target: `device:${ghost}` })).toEqual([]);
  });

  it("a device's change whose audit row cannot be written is still made and answered; the entry is logged whole", async () => {
    const a = await newAdmin();
    const dev = await registerDevice(uid("lostpool"));
    const errors = vi.spyOn(console, "error");
    await env.DB.exec("ALTER TABLE audit_log RENAME TO audit_log_off");
    let r;
    try {
      r = await call("POST", `/admin/devices/${dev.deviceId}/maintenance`, { token: a.token });
    } finally {
      await env.DB.exec("ALTER TABLE audit_log_off RENAME TO audit_log");
    }
    expect(r.status).toBe(200);
    expect(r.body.status).toBe("maintenance");
    const lines = errors.mock.calls.map((c) => JSON.parse(String(c[0]))).filter((l) => l.msg?.startsWith("audit row not written"));
    expect(lines).toHaveLength(1);
    expect(lines[0].audit).toMatchObject({
      actor: a.id,
      action: "device.set_status",
      target: `device:${dev.deviceId}`,
      change: { status: "maintenance" },
    });
    expect(lines[0].requestId).toBe(r.res.headers.get("X-Request-Id"));
  });
});

describe("reading the log", () => {
  it("newest first, paged by the last seq, filtered by target, actor and action", async () => {
    const a = await newAdmin();
    const b = await newAdmin();
    const user = await seenUser(uid("paged"));
    for (let i = 0; i < 5; i++) {
      const who = i % 2 === 0 ? a : b;
      const body = { amountMinor: i + 1, adjustmentId: uid("p"), memo: `n${i}` };
      expect((await call("POST", `/admin/billing/users/${user}/adjustments`, { token: who.token, body })).status).toBe(201);
    }
    const seen: Item[] = [];
    let cursor: string | null = null;
    do {
      const r = await call("GET", `/admin/audit?target=user:${user}&limit=2${cursor ? `&cursor=${cursor}` : ""}`, { token: a.token });
      expect(r.body.items.length).toBeLessThanOrEqual(2);
      seen.push(...r.body.items);
      cursor = r.body.nextCursor;
    } while (cursor);
    expect(seen.map((i) => i.change.memo)).toEqual(["n4", "n3", "n2", "n1", "n0"]);
    expect(seen.map((i) => i.seq)).toEqual([...seen.map((i) => i.seq)].sort((x, y) => y - x));
    expect((await audit({ target: `user:${user}`, actor: b.id })).map((i) => i.change.memo)).toEqual(["n3", "n1"]);
    expect((await audit({ actor: a.id, action: "account.adjust" })).map((i) => i.change.memo)).toEqual(["n4", "n2", "n0"]);
    expect(await audit({ actor: a.id, action: "quota.update" })).toEqual([]);
  });

  it("bad input is 400 in the one error shape; a user 403, no token 401", async () => {
    const a = await newAdmin();
    for (const q of ["limit=0", "limit=201", "cursor=abc", "target=alice", "action=DROP", "actor=a%20b", "since=1"]) {
      const r = await call("GET", `/admin/audit?${q}`, { token: a.token });
      expect(r.status, q).toBe(400);
      expect(r.body.error.code, q).toBe("VALIDATION_FAILED");
    }
    const user = await call("GET", "/admin/audit", { token: await tokenFor(uid("nosy")) });
    expect(user.status).toBe(403);
    expect(user.body.error.code).toBe("FORBIDDEN");
    expect((await call("GET", "/admin/audit")).status).toBe(401);
    expect((await call("GET", "/admin/audit", { service: SERVICE_TOKEN })).status).toBe(403);
  });

  it("is in the OpenAPI document", async () => {
    const doc = (await call("GET", "/openapi.json")).body;
    expect(doc.paths["/admin/audit"].get.responses["200"]).toBeDefined();
    expect(doc.components.schemas.AuditItem).toBeDefined();
  });
});

describe("a user's own actions", () => {
  it("allocate, extend, release and a balance read leave no audit row", async () => {
    const pool = uid("own");
    await registerDevice(pool);
    const user = uid("self");
    const token = await tokenFor(user);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 10 } });
    expect(a.status).toBe(201);
    expect(
      (await call("PUT", `/scheduler/allocations/${a.body.allocationId}/extend`, { token, body: { additionalMinutes: 5 } })).status,
    ).toBe(200);
    expect((await call("POST", "/scheduler/devices/release", { token, body: { deviceId: a.body.deviceId } })).status).toBe(200);
    expect((await call("GET", `/billing/users/${user}/balance`, { token })).status).toBe(200);
    expect(await audit({ target: `user:${user}` })).toEqual([]);
    expect(await audit({ actor: user })).toEqual([]);
  });
});
