/**
 * Allocation lifecycle through the public API: idempotency, device lifecycle, strategies,
 * quota administration, paging and the documents a client reads.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, tokenFor, uid, until, withoutGrant } from "./helpers";

const allocate = async (token: string, body: Record<string, unknown>) => call("POST", "/scheduler/devices/allocate", { token, body });

describe("idempotency", () => {
  it("repeating a key returns the first result, never a second device — also concurrently", async () => {
    const pool = uid("idem");
    await Promise.all([0, 1, 2].map(() => registerDevice(pool)));
    const user = uid("idem-user");
    const token = await tokenFor(user);
    const body = { pool, durationMinutes: 5, idempotencyKey: "order-42" };
    const results = await Promise.all(Array.from({ length: 10 }, () => allocate(token, body)));
    for (const r of results) expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(new Set(results.map((r) => r.body.allocationId)).size).toBe(1);
    expect(new Set(results.map((r) => r.body.deviceId)).size).toBe(1);
    const later = await allocate(token, body);
    // The same result, node and times included (each answer signs its own access grant).
    expect(withoutGrant(later.body)).toEqual(withoutGrant(results[0]!.body));
    const q = await call("GET", `/quotas/user/${user}`, { token });
    expect(q.body.usage.devices).toBe(1);
    // The same key with other parameters is refused, and changes nothing.
    const other = await allocate(token, { ...body, durationMinutes: 6 });
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe("IDEMPOTENCY_KEY_REUSED");
    // After release the key still answers with the first result.
    await call("POST", "/scheduler/devices/release", { token, body: { deviceId: later.body.deviceId } });
    const after = await allocate(token, body);
    expect(after.body.allocationId).toBe(results[0]!.body.allocationId);
    expect((await call("GET", `/quotas/user/${user}`, { token })).body.usage.devices).toBe(0);
  });

  it("a key whose first attempt failed can be retried", async () => {
    const pool = uid("idem-fail");
    const user = uid("idem-retry");
    const token = await tokenFor(user);
    const first = await allocate(token, { pool, idempotencyKey: "k1" });
    expect(first.status).toBe(404);
    expect(first.body.error.code).toBe("POOL_NOT_FOUND");
    await registerDevice(pool);
    const second = await allocate(token, { pool, idempotencyKey: "k1" });
    expect(second.status).toBe(201);
  });
});

describe("a user appears by their token", () => {
  it("gets the default plan's quota and can allocate within it", async () => {
    const user = uid("newcomer");
    const token = await tokenFor(user);
    const q = await call("GET", `/quotas/user/${user}`, { token });
    expect(q.status).toBe(200);
    expect(q.body.tier).toBe("free");
    expect(q.body.status).toBe("active");
    expect(q.body.limits.maxDevices).toBe(2);
    expect(q.body.usage).toEqual({ devices: 0, cpuCores: 0, memoryMB: 0, storageMB: 0, deviceHours: 0 });
    expect(Date.parse(q.body.validUntil)).toBeGreaterThan(Date.now());
  });
});

describe("device lifecycle", () => {
  it("maintenance, offline and removal end the active allocation cleanly and bill it", async () => {
    const adminToken = await admin();
    for (const action of ["maintenance", "offline", "remove"] as const) {
      const pool = uid(`life-${action}`);
      const dev = await registerDevice(pool);
      const user = uid("holder");
      const token = await tokenFor(user);
      const a = await allocate(token, { pool, durationMinutes: 30 });
      expect(a.status).toBe(201);
      const r =
        action === "remove"
          ? await call("DELETE", `/admin/devices/${dev.deviceId}`, { token: adminToken })
          : await call("POST", `/admin/devices/${dev.deviceId}/${action}`, { token: adminToken });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      const reason = action === "remove" ? "removed" : action;
      const one = await call("GET", `/scheduler/allocations/${a.body.allocationId}`, { token });
      expect(one.body.status).toBe("released");
      expect(one.body.reason).toBe(reason);
      expect((await call("GET", `/quotas/user/${user}`, { token })).body.usage.devices).toBe(0);
      // No new allocation lands on it.
      const b = await allocate(await tokenFor(uid("late")), { pool, durationMinutes: 5 });
      expect(b.status).toBe(action === "remove" ? 404 : 409);
      const row = await until(() =>
        env.DB.prepare("SELECT reason FROM usage_records WHERE allocation_id = ?").bind(a.body.allocationId).first<{ reason: string }>(),
      );
      expect(row.reason).toBe(reason);
    }
  });

  it("a device back online is allocatable; update refuses spec changes while allocated", async () => {
    const adminToken = await admin();
    const pool = uid("online");
    const dev = await registerDevice(pool);
    expect((await call("POST", `/admin/devices/${dev.deviceId}/maintenance`, { token: adminToken })).body.status).toBe("maintenance");
    const user = uid("waiter");
    const token = await tokenFor(user);
    expect((await allocate(token, { pool })).status).toBe(409);
    expect((await call("POST", `/admin/devices/${dev.deviceId}/online`, { token: adminToken })).body.status).toBe("available");
    const a = await allocate(token, { pool, durationMinutes: 5 });
    expect(a.status).toBe(201);
    const upd = await call("PATCH", `/admin/devices/${dev.deviceId}`, { token: adminToken, body: { cpuCores: 16 } });
    expect(upd.status).toBe(409);
    expect(upd.body.error.code).toBe("DEVICE_BUSY");
    const node = await call("PATCH", `/admin/devices/${dev.deviceId}`, { token: adminToken, body: { node: "rack-9" } });
    expect(node.status).toBe(200);
    expect(node.body.node).toBe("rack-9");
    const dup = await call("POST", "/admin/devices", {
      token: adminToken,
      body: { deviceId: dev.deviceId, pool, cpuCores: 1, memoryMB: 1, storageMB: 1 },
    });
    expect(dup.status).toBe(409);
    expect(dup.body.error.code).toBe("DEVICE_EXISTS");
    const hist = await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } });
    expect(hist.status).toBe(200);
    const h = await call("GET", `/admin/devices/${dev.deviceId}/history`, { token: adminToken });
    expect(h.body.items.map((i: { allocationId: string }) => i.allocationId)).toEqual([a.body.allocationId]);
  });

  it("moving a device to another pool moves it in both indexes", async () => {
    const adminToken = await admin();
    const from = uid("from");
    const to = uid("to");
    const dev = await registerDevice(from);
    await registerDevice(to);
    const m = await call("PATCH", `/admin/devices/${dev.deviceId}`, { token: adminToken, body: { pool: to } });
    expect(m.status).toBe(200);
    await until(async () => (await call("GET", `/admin/pools/${to}`, { token: adminToken })).body.devices === 2);
    const fromView = await call("GET", `/admin/pools/${from}/devices`, { token: adminToken });
    expect(fromView.status === 404 || fromView.body.items.length === 0).toBe(true);
    const pools = await call("GET", "/admin/pools", { token: adminToken });
    expect(pools.body.items.map((p: { pool: string }) => p.pool)).toContain(to);
  });
});

describe("scheduling strategies", () => {
  it("spec match picks the smallest device that fits, within the user's per-device limit", async () => {
    const pool = uid("spec");
    await registerDevice(pool, { deviceId: uid("small"), cpuCores: 2, memoryMB: 2048 });
    const mid = await registerDevice(pool, { deviceId: uid("mid"), cpuCores: 4, memoryMB: 8192 });
    await registerDevice(pool, { deviceId: uid("big"), cpuCores: 16, memoryMB: 65536 });
    const token = await tokenFor(uid("spec-user"));
    const a = await allocate(token, { pool, spec: { cpuCores: 3, memoryMB: 4096 } });
    expect(a.status).toBe(201);
    expect(a.body.deviceId).toBe(mid.deviceId);
    // Free plan: at most 4 cores per device, so the 16-core device is never handed out.
    const b = await allocate(token, { pool, spec: { cpuCores: 5 } });
    expect(b.status).toBe(409);
    expect(b.body.error.code).toBe("QUOTA_PER_DEVICE_EXCEEDED");
  });

  it("least-loaded spreads over nodes; bin-pack fills one node first", async () => {
    const adminToken = await admin();
    const mk = async (strategy: string) => {
      const pool = uid(strategy);
      for (const node of ["a", "b"]) for (let i = 0; i < 3; i++) await registerDevice(pool, { node: `${node}` });
      expect((await call("PUT", `/admin/pools/${pool}`, { token: adminToken, body: { strategy } })).status).toBe(200);
      const nodes: string[] = [];
      for (let i = 0; i < 4; i++) {
        const r = await allocate(await tokenFor(uid("s")), { pool, durationMinutes: 5 });
        expect(r.status).toBe(201);
        nodes.push(r.body.node);
      }
      return nodes;
    };
    const ll = await mk("least-loaded");
    expect(ll.filter((n) => n === "a").length).toBe(2);
    expect(ll.filter((n) => n === "b").length).toBe(2);
    const bp = await mk("bin-pack");
    expect(bp.slice(0, 3).every((n) => n === bp[0])).toBe(true);
    const sp = await mk("spread");
    expect(sp[0]).not.toBe(sp[1]);
  });
});

describe("quota administration and events", () => {
  it("update, suspend, renew: each with its event, and checks in order", async () => {
    const adminToken = await admin();
    const pool = uid("qa");
    await registerDevice(pool);
    const user = uid("managed");
    const token = await tokenFor(user);
    const up = await call("PUT", `/quotas/user/${user}?create=true`, {
      token: adminToken,
      body: { tier: "basic", suspended: true },
    });
    expect(up.status).toBe(200);
    expect(up.body.tier).toBe("basic");
    expect(up.body.status).toBe("suspended");
    expect(up.body.limits.maxDevices).toBe(5);
    const refused = await allocate(token, { pool });
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe("QUOTA_SUSPENDED");
    await call("PUT", `/quotas/user/${user}?create=true`, {
      token: adminToken,
      body: { suspended: false, validUntil: new Date(Date.now() - 1000).toISOString() },
    });
    const expired = await allocate(token, { pool });
    expect(expired.body.error.code).toBe("QUOTA_EXPIRED");
    expect((await call("GET", `/quotas/user/${user}`, { token })).body.status).toBe("expired");
    const renew = await call("POST", `/quotas/renew/${user}?create=true`, { token: adminToken, body: {} });
    expect(renew.status).toBe(200);
    expect(renew.body.status).toBe("active");
    expect(Date.parse(renew.body.validUntil)).toBeGreaterThan(Date.now() + 29 * 86_400_000);
    expect((await allocate(token, { pool })).status).toBe(201);
    const ev = (await call("GET", "/scheduler/events", { token })).body;
    const types = ev.events.map((e: { type: string }) => e.type);
    expect(types).toEqual(["quota.updated", "quota.updated", "quota.renewed", "device.allocated"]);
    expect(ev.events.every((e: { userId: string }) => e.userId === user)).toBe(true);
    const seqs = ev.events.map((e: { seq: number }) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a: number, b: number) => a - b));
    const since = (await call("GET", `/scheduler/events?since=${seqs[2]}`, { token })).body.events;
    expect(since.map((e: { type: string }) => e.type)).toEqual(["device.allocated"]);
  });

  it("lists allocations newest first in pages, filtered by status", async () => {
    const pool = uid("page");
    await Promise.all(Array.from({ length: 5 }, () => registerDevice(pool)));
    const user = uid("pager");
    const adminToken = await admin();
    await call("PUT", `/quotas/user/${user}?create=true`, { token: adminToken, body: { tier: "pro" } });
    const token = await tokenFor(user);
    const made: string[] = [];
    for (let i = 0; i < 5; i++) made.push((await allocate(token, { pool, durationMinutes: 5 })).body.allocationId);
    const dev = (await call("GET", `/scheduler/allocations/${made[0]}`, { token })).body.deviceId;
    await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev } });
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { body: { items: { allocationId: string }[]; nextCursor: string | null } } = await call(
        "GET",
        `/scheduler/allocations?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
        { token },
      );
      expect(page.body.items.length).toBeLessThanOrEqual(2);
      seen.push(...page.body.items.map((i) => i.allocationId));
      cursor = page.body.nextCursor;
    } while (cursor);
    expect(seen).toEqual([...made].reverse());
    const active = await call("GET", "/scheduler/allocations?status=active", { token });
    expect(active.body.items).toHaveLength(4);
    const released = await call("GET", "/scheduler/allocations?status=released", { token });
    expect(released.body.items.map((i: { allocationId: string }) => i.allocationId)).toEqual([made[0]]);
  });

  it("lists a pool's free devices and serves the OpenAPI document", async () => {
    const pool = uid("avail");
    await Promise.all([0, 1, 2].map(() => registerDevice(pool)));
    const token = await tokenFor(uid("looker"));
    await allocate(token, { pool, durationMinutes: 5 });
    const free = await call("GET", `/scheduler/devices/available?pool=${pool}`, { token });
    expect(free.status).toBe(200);
    expect(free.body.items).toHaveLength(2);
    expect(free.body.items.every((d: { status: string }) => d.status === "available")).toBe(true);
    const doc = await call("GET", "/openapi.json");
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toBe("3.1.0");
    for (const p of [
      "/scheduler/devices/allocate",
      "/scheduler/devices/release",
      "/scheduler/allocations/{id}/extend",
      "/quotas/user/{userId}",
      "/admin/devices",
    ])
      expect(Object.keys(doc.body.paths)).toContain(p);
  });

  it("refuses the test-only short duration switch where it is off", async () => {
    // Tests run with ALLOW_SHORT_DURATIONS=true; production's wrangler.toml sets "false".
    const { shortDurationsAllowed } = await import("../src/config");
    expect(shortDurationsAllowed({ ALLOW_SHORT_DURATIONS: "false" })).toBe(false);
    expect(shortDurationsAllowed({})).toBe(false);
  });
});
