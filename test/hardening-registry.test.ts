/**
 * Hardening, the registry: objects are created only for pools and devices that exist. Every
 * route that takes a pool name or device id from its caller is tried with hundreds of names
 * nobody registered; each answers 404 in the one error shape, and afterwards exactly the same
 * Durable Objects exist as before (addressing an object creates it, with its schema).
 */
import { listDurableObjectIds } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { mintTicket, scopeOf } from "../src/feed/tickets";
import { newScopedId } from "../src/ids";
import { rawFeed } from "./feed-helpers";
import { admin, call, registerDevice, tokenFor, uid, until } from "./helpers";

async function objects() {
  const ids = (list: DurableObjectId[]) => list.map((i) => i.toString()).sort();
  return { device: ids(await listDurableObjectIds(env.DEVICE)), pool: ids(await listDurableObjectIds(env.DEVICE_POOL)) };
}

const soon = () => new Date(Date.now() + 3_600_000).toISOString();

describe("unknown pools and devices create nothing", () => {
  it("every user route naming an unknown pool answers 404 POOL_NOT_FOUND and leaves no object behind", async () => {
    const user = await tokenFor(uid("reg-user"));
    await call("GET", "/scheduler/allocations", { token: user });
    const before = await objects();
    for (let i = 0; i < 60; i++) {
      const name = uid("no-pool");
      const probes = [
        await call("GET", `/scheduler/devices/available?pool=${name}`, { token: user }),
        await call("POST", "/scheduler/devices/allocate", { token: user, body: { pool: name, durationMinutes: 5 } }),
        await call("POST", "/scheduler/queue/join", { token: user, body: { pool: name, durationMinutes: 5 } }),
        await call("GET", `/scheduler/queue?pool=${name}`, { token: user }),
        await call("POST", "/scheduler/reservations", { token: user, body: { pool: name, startAt: soon(), durationMinutes: 30 } }),
        await call("POST", "/scheduler/reservations/check", {
          token: user,
          body: { pool: name, startAt: soon(), durationMinutes: 30 },
        }),
        await call("GET", `/scheduler/reservations?pool=${name}`, { token: user }),
      ];
      for (const r of probes) {
        expect(r.status, JSON.stringify(r.body)).toBe(404);
        expect(r.body.error.code, JSON.stringify(r.body)).toBe("POOL_NOT_FOUND");
      }
      // Ids that name an unknown pool (as a forger would write them) are unknown entries, not pools.
      const entry = await call("DELETE", `/scheduler/queue/${newScopedId("que", name)}`, { token: user });
      expect(entry.status).toBe(404);
      expect(entry.body.error.code).toBe("QUEUE_ENTRY_NOT_FOUND");
      const booking = await call("GET", `/scheduler/reservations/${newScopedId("rsv", name)}`, { token: user });
      expect(booking.status).toBe(404);
      expect(booking.body.error.code).toBe("RESERVATION_NOT_FOUND");
    }
    // A batch of allocations in unknown pools: each item is refused the same way.
    const batch = await call("POST", "/scheduler/batch/allocate", {
      token: user,
      body: { requests: Array.from({ length: 20 }, () => ({ pool: uid("no-pool"), durationMinutes: 5 })), continueOnError: true },
    });
    expect(batch.status).toBe(200);
    expect(batch.body.failed).toBe(20);
    expect(new Set(batch.body.results.map((r: any) => r.error.code))).toEqual(new Set(["POOL_NOT_FOUND"]));
    expect(await objects()).toEqual(before);
  });

  it("device and pool feeds for unknown names: no ticket (404), and a forged-scope ticket opens nothing (4404)", async () => {
    const root = await admin();
    const before = await objects();
    for (let i = 0; i < 30; i++) {
      const deviceId = uid("no-device");
      const pool = uid("no-pool");
      const d = await call("POST", "/ws/ticket", { token: root, body: { feed: "device", deviceId } });
      expect(d.status).toBe(404);
      expect(d.body.error.code).toBe("DEVICE_NOT_FOUND");
      const p = await call("POST", "/ws/ticket", { token: root, body: { feed: "pool", pool } });
      expect(p.status).toBe(404);
      expect(p.body.error.code).toBe("POOL_NOT_FOUND");
      // A valid ticket for an unknown name (the route would not mint one): the Worker refuses before any object.
      const who = { userId: "root-admin", role: "admin" as const };
      const dt = await mintTicket(env, who, scopeOf("device", deviceId));
      const df = await rawFeed(`/ws/devices/${deviceId}?ticket=${encodeURIComponent(dt.ticket)}`);
      expect((await df.closed).code).toBe(4404);
      expect(df.frames[0]).toMatchObject({ type: "feed.error", data: { code: "DEVICE_NOT_FOUND" } });
      const pt = await mintTicket(env, who, scopeOf("pool", pool));
      const pf = await rawFeed(`/ws/pools/${pool}?ticket=${encodeURIComponent(pt.ticket)}`);
      expect((await pf.closed).code).toBe(4404);
    }
    expect(await objects()).toEqual(before);
  });

  it("admin routes naming an unknown device or pool answer 404 and create nothing", async () => {
    const root = await admin();
    const before = await objects();
    for (let i = 0; i < 20; i++) {
      const id = uid("no-device");
      const pool = uid("no-pool");
      const deviceProbes = [
        await call("GET", `/admin/devices/${id}`, { token: root }),
        await call("PATCH", `/admin/devices/${id}`, { token: root, body: { node: "n2" } }),
        await call("POST", `/admin/devices/${id}/maintenance`, { token: root }),
        await call("POST", `/admin/devices/${id}/force-release`, { token: root }),
        await call("GET", `/admin/devices/${id}/history`, { token: root }),
        await call("DELETE", `/admin/devices/${id}`, { token: root }),
      ];
      for (const r of deviceProbes) {
        expect(r.status).toBe(404);
        expect(r.body.error.code).toBe("DEVICE_NOT_FOUND");
      }
      const poolProbes = [
        await call("GET", `/admin/pools/${pool}`, { token: root }),
        await call("GET", `/admin/pools/${pool}/devices`, { token: root }),
        await call("PUT", `/admin/pools/${pool}`, { token: root, body: { strategy: "spread" } }),
      ];
      for (const r of poolProbes) {
        expect(r.status).toBe(404);
        expect(r.body.error.code).toBe("POOL_NOT_FOUND");
      }
    }
    expect(await objects()).toEqual(before);
  });
});

describe("the registry follows the fleet", () => {
  it("a registered device and its pool are known; moved, the new pool is; removed, the device is unknown again", async () => {
    const root = await admin();
    const user = await tokenFor(uid("reg-follow"));
    const pool = uid("reg-pool");
    const dev = await registerDevice(pool);
    const rows = await env.DB.prepare("SELECT device_id, pool FROM devices WHERE device_id = ?").bind(dev.deviceId).all();
    expect(rows.results).toEqual([{ device_id: dev.deviceId, pool }]);
    const listed = await call("GET", `/scheduler/devices/available?pool=${pool}`, { token: user });
    expect(listed.status).toBe(200);
    expect(listed.body.items.map((d: any) => d.deviceId)).toEqual([dev.deviceId]);

    const moved = uid("reg-moved");
    expect((await call("PATCH", `/admin/devices/${dev.deviceId}`, { token: root, body: { pool: moved } })).status).toBe(200);
    expect((await env.DB.prepare("SELECT pool FROM devices WHERE device_id = ?").bind(dev.deviceId).first())?.pool).toBe(moved);
    // The registry knows the new pool at once; the pool's own index hears of the device a moment later.
    const movedList = await until(async () => {
      const r = await call("GET", `/scheduler/devices/available?pool=${moved}`, { token: user });
      return r.status === 200 && r;
    });
    expect(movedList.body.items.map((d: any) => d.deviceId)).toEqual([dev.deviceId]);

    expect((await call("DELETE", `/admin/devices/${dev.deviceId}`, { token: root })).status).toBe(200);
    expect(await env.DB.prepare("SELECT 1 FROM devices WHERE device_id = ?").bind(dev.deviceId).first()).toBeNull();
    const gone = await call("GET", `/admin/devices/${dev.deviceId}`, { token: root });
    expect(gone.status).toBe(404);
    expect(gone.body.error.code).toBe("DEVICE_NOT_FOUND");
    // The pool stays registered (its object exists); without devices it answers POOL_NOT_FOUND itself.
    const empty = await until(async () => {
      const r = await call("GET", `/scheduler/devices/available?pool=${moved}`, { token: user });
      return r.status === 404 && r;
    });
    expect(empty.body.error.code).toBe("POOL_NOT_FOUND");
  });
});
