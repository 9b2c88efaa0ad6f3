/**
 * Auth matrix: every route × every kind of caller. Each case gets its own real state (a
 * unique pool with two devices, the owner holding one), makes one call, and checks the
 * status, the error shape and, when the call was refused, that nothing changed.
 *
 *   no / bad token, wrong service token → 401 UNAUTHORIZED
 *   service token                       → 403 (services use the internal endpoints)
 *   other user                          → 403 on owner-scoped routes, 404 on allocation-id routes (ids do not leak)
 *   owner                               → 2xx on user routes, 403 on admin routes and on quota writes
 *   admin                               → 2xx everywhere, acting on behalf of the owner
 */
import { env } from "cloudflare:workers";
import { sign } from "hono/jwt";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { AllocationResult, AllocationView, DeviceView, QuotaView, ReleaseResult } from "../src/schemas";
import { SERVICE_TOKEN, call, registerDevice, tokenFor, uid, until } from "./helpers";

// ---- callers -----------------------------------------------------------------------------------

type CallerKind = "none" | "bad" | "service" | "other" | "owner" | "admin";
interface Caller {
  name: string;
  kind: CallerKind;
  headers: (fx: Fixture) => Promise<Record<string, string>>;
}

const b64url = (s: string) => btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const nowS = () => Math.floor(Date.now() / 1000);
const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });

const CALLERS: Caller[] = [
  { name: "no token", kind: "none", headers: async () => ({}) },
  { name: "garbage bearer token", kind: "bad", headers: async () => bearer("garbage") },
  { name: "not a Bearer header", kind: "bad", headers: async (fx) => ({ Authorization: `Basic ${btoa(`${fx.owner}:x`)}` }) },
  {
    name: "admin token with a wrong signature",
    kind: "bad",
    headers: async (fx) => bearer(await sign({ sub: fx.admin, role: "admin", exp: nowS() + 3600 }, "not-the-secret-0123456789abcdef", "HS256")),
  },
  {
    name: "expired owner token",
    kind: "bad",
    headers: async (fx) => bearer(await sign({ sub: fx.owner, role: "user", iat: nowS() - 7200, exp: nowS() - 60 }, env.JWT_SECRET, "HS256")),
  },
  {
    name: "admin token without an expiry",
    kind: "bad",
    headers: async (fx) => bearer(await sign({ sub: fx.admin, role: "admin" }, env.JWT_SECRET, "HS256")),
  },
  {
    name: "alg none admin token",
    kind: "bad",
    headers: async (fx) =>
      bearer(`${b64url(JSON.stringify({ alg: "none", typ: "JWT" }))}.${b64url(JSON.stringify({ sub: fx.admin, role: "admin", exp: nowS() + 3600 }))}.`),
  },
  {
    name: "HS512 token (alg confusion)",
    kind: "bad",
    headers: async (fx) => bearer(await sign({ sub: fx.owner, role: "admin", exp: nowS() + 3600 }, env.JWT_SECRET, "HS512")),
  },
  {
    name: "token whose subject is not a user id",
    kind: "bad",
    headers: async () => bearer(await sign({ sub: "../root-admin", role: "admin", exp: nowS() + 3600 }, env.JWT_SECRET, "HS256")),
  },
  { name: "wrong service token", kind: "bad", headers: async () => ({ "X-Service-Token": `${SERVICE_TOKEN.slice(0, -1)}X` }) },
  { name: "wrong service token beside a valid admin token", kind: "bad", headers: async (fx) => ({ "X-Service-Token": "nope", ...bearer(fx.adminToken) }) },
  { name: "service token", kind: "service", headers: async () => ({ "X-Service-Token": SERVICE_TOKEN }) },
  { name: "other user", kind: "other", headers: async (fx) => bearer(fx.otherToken) },
  { name: "owner", kind: "owner", headers: async (fx) => bearer(fx.ownerToken) },
  { name: "admin", kind: "admin", headers: async (fx) => bearer(fx.adminToken) },
];

// ---- state --------------------------------------------------------------------------------------

interface Fixture {
  pool: string;
  owner: string;
  other: string;
  admin: string;
  ownerToken: string;
  otherToken: string;
  adminToken: string;
  /** Held by the owner. */
  held: string;
  /** Free, same pool. */
  free: string;
  allocationId: string;
}

async function fixture(): Promise<Fixture> {
  const pool = uid("am-pool");
  const [a, b] = [await registerDevice(pool, { deviceId: uid("am-dev") }), await registerDevice(pool, { deviceId: uid("am-dev") })];
  const owner = uid("am-owner");
  const other = uid("am-other");
  const adminId = uid("am-admin");
  const fx = {
    pool, owner, other, admin: adminId,
    ownerToken: await tokenFor(owner), otherToken: await tokenFor(other), adminToken: await tokenFor(adminId, "admin"),
  };
  const r = await call("POST", "/scheduler/devices/allocate", { token: fx.ownerToken, body: { pool, durationMinutes: 30 } });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const held = r.body.deviceId as string;
  const free = held === a.deviceId ? b.deviceId : a.deviceId;
  // The other user has some state of their own too (an event log, a quota row).
  expect((await call("GET", `/quotas/user/${other}`, { token: fx.otherToken })).status).toBe(200);
  // Wait until the pool's index has heard from both devices, so later snapshots are stable.
  await until(async () => {
    const s = await call("GET", `/admin/pools/${pool}`, { token: fx.adminToken });
    return s.status === 200 && s.body.allocated === 1 && s.body.available === 1;
  });
  return { ...fx, held, free, allocationId: r.body.allocationId };
}

/** Everything a refused call must leave untouched, read as an admin. */
async function snapshot(fx: Fixture) {
  const t = fx.adminToken;
  const get = async (path: string) => {
    const r = await call("GET", path, { token: t });
    return { status: r.status, body: r.body };
  };
  return {
    ownerQuota: await get(`/quotas/user/${fx.owner}`),
    ownerAllocations: await get(`/scheduler/allocations?userId=${fx.owner}`),
    ownerEvents: await get(`/scheduler/events?userId=${fx.owner}`),
    otherQuota: await get(`/quotas/user/${fx.other}`),
    otherAllocations: await get(`/scheduler/allocations?userId=${fx.other}`),
    otherEvents: await get(`/scheduler/events?userId=${fx.other}`),
    held: await get(`/admin/devices/${fx.held}`),
    free: await get(`/admin/devices/${fx.free}`),
    heldHistory: await get(`/admin/devices/${fx.held}/history`),
    pool: await get(`/admin/pools/${fx.pool}`),
    poolDevices: await get(`/admin/pools/${fx.pool}/devices`),
  };
}

function expectErrorShape(body: unknown, code?: string) {
  expect(body, JSON.stringify(body)).toMatchObject({ error: { code: expect.any(String), message: expect.any(String) } });
  expect(Object.keys(body as object)).toEqual(["error"]);
  const keys = Object.keys((body as { error: object }).error).sort();
  expect(["code,message", "code,details,message"]).toContain(keys.join(","));
  if (code) expect((body as { error: { code: string } }).error.code).toBe(code);
}

// ---- routes ------------------------------------------------------------------------------------

type Scope =
  /** Names the owner's data: other users are refused (403), or told "not found" on allocation-id routes. */
  | "owner"
  | "owner-by-allocation-id"
  /** Any signed-in user may call it. */
  | "any-user"
  /** Admin only (quota writes and the whole /admin tree). */
  | "admin";

interface RouteCase {
  method: string;
  path: (fx: Fixture) => string;
  body?: (fx: Fixture) => unknown;
  scope: Scope;
  okStatus: 200 | 201;
  /** Checks a successful call did what it says. */
  verify: (fx: Fixture, body: any, by: "owner" | "admin" | "other") => Promise<void> | void;
}

const admin = (fx: Fixture) => ({ token: fx.adminToken });

const ROUTES: RouteCase[] = [
  {
    method: "POST", path: () => "/scheduler/devices/allocate", body: (fx) => ({ userId: fx.owner, pool: fx.pool, durationMinutes: 5 }),
    scope: "owner", okStatus: 201,
    verify: async (fx, body) => {
      AllocationResult.parse(body);
      expect(body.userId).toBe(fx.owner);
      expect(body.deviceId).toBe(fx.free);
      const q = await call("GET", `/quotas/user/${fx.owner}`, admin(fx));
      expect(q.body.usage.devices).toBe(2);
    },
  },
  {
    method: "POST", path: () => "/scheduler/devices/release", body: (fx) => ({ userId: fx.owner, deviceId: fx.held }),
    scope: "owner", okStatus: 200,
    verify: async (fx, body) => {
      ReleaseResult.parse(body);
      expect(body.allocationId).toBe(fx.allocationId);
      expect(body.userId).toBe(fx.owner);
      const d = await call("GET", `/admin/devices/${fx.held}`, admin(fx));
      expect(d.body.allocation).toBeNull();
    },
  },
  {
    method: "PUT", path: (fx) => `/scheduler/allocations/${fx.allocationId}/extend`, body: () => ({ additionalMinutes: 10 }),
    scope: "owner-by-allocation-id", okStatus: 200,
    verify: async (fx, body) => {
      AllocationResult.parse(body);
      expect(body.allocationId).toBe(fx.allocationId);
      expect(body.durationMinutes).toBe(40);
      expect(body.extendCount).toBe(1);
    },
  },
  {
    method: "GET", path: (fx) => `/scheduler/allocations?userId=${fx.owner}`, scope: "owner", okStatus: 200,
    verify: (fx, body) => {
      z.object({ items: z.array(AllocationView), nextCursor: z.string().nullable() }).parse(body);
      expect(body.items.map((i: { allocationId: string }) => i.allocationId)).toEqual([fx.allocationId]);
    },
  },
  {
    method: "GET", path: (fx) => `/scheduler/allocations/${fx.allocationId}`, scope: "owner-by-allocation-id", okStatus: 200,
    verify: (fx, body) => {
      AllocationView.parse(body);
      expect(body).toMatchObject({ allocationId: fx.allocationId, userId: fx.owner, deviceId: fx.held, status: "active" });
    },
  },
  {
    method: "GET", path: (fx) => `/scheduler/devices/available?pool=${fx.pool}`, scope: "any-user", okStatus: 200,
    verify: (fx, body) => {
      expect(body.pool).toBe(fx.pool);
      expect(body.items.map((i: { deviceId: string }) => i.deviceId)).toEqual([fx.free]);
      // Free devices carry no holder: users never learn who holds what.
      expect(body.items[0].userId).toBeUndefined();
    },
  },
  {
    method: "GET", path: (fx) => `/scheduler/events?userId=${fx.owner}`, scope: "owner", okStatus: 200,
    verify: (fx, body) => {
      expect(body.events.length).toBeGreaterThan(0);
      for (const e of body.events) expect(e.userId).toBe(fx.owner);
      expect(body.events.map((e: { type: string }) => e.type)).toContain("device.allocated");
      expect(body.events.find((e: { type: string }) => e.type === "device.allocated").data.allocationId).toBe(fx.allocationId);
    },
  },
  {
    method: "GET", path: (fx) => `/quotas/user/${fx.owner}`, scope: "owner", okStatus: 200,
    verify: (fx, body) => {
      QuotaView.parse(body);
      expect(body.userId).toBe(fx.owner);
      expect(body.usage.devices).toBe(1);
    },
  },
  {
    method: "PUT", path: (fx) => `/quotas/user/${fx.owner}`, body: () => ({ plan: "pro" }), scope: "admin", okStatus: 200,
    verify: async (fx, body) => {
      QuotaView.parse(body);
      expect(body).toMatchObject({ userId: fx.owner, plan: "pro" });
      expect((await call("GET", `/quotas/user/${fx.owner}`, admin(fx))).body.plan).toBe("pro");
    },
  },
  {
    method: "POST", path: (fx) => `/quotas/renew/${fx.owner}`, body: () => ({ extensionDays: 7 }), scope: "admin", okStatus: 200,
    verify: async (fx, body) => {
      QuotaView.parse(body);
      expect(body.userId).toBe(fx.owner);
      const ev = await call("GET", `/scheduler/events?userId=${fx.owner}`, admin(fx));
      expect(ev.body.events.map((e: { type: string }) => e.type)).toContain("quota.renewed");
    },
  },
  {
    method: "POST", path: () => "/admin/devices", body: (fx) => ({ deviceId: `${fx.pool}-new`, pool: fx.pool, cpuCores: 1, memoryMB: 1024, storageMB: 1024 }),
    scope: "admin", okStatus: 201,
    verify: async (fx, body) => {
      DeviceView.parse(body);
      expect(body).toMatchObject({ deviceId: `${fx.pool}-new`, pool: fx.pool, status: "available" });
      expect((await call("GET", `/admin/devices/${fx.pool}-new`, admin(fx))).status).toBe(200);
    },
  },
  {
    method: "GET", path: (fx) => `/admin/devices/${fx.held}`, scope: "admin", okStatus: 200,
    verify: (fx, body) => {
      DeviceView.parse(body);
      expect(body.allocation).toMatchObject({ allocationId: fx.allocationId, userId: fx.owner });
    },
  },
  {
    method: "PATCH", path: (fx) => `/admin/devices/${fx.free}`, body: () => ({ cpuCores: 3, node: "node-9" }), scope: "admin", okStatus: 200,
    verify: (fx, body) => {
      DeviceView.parse(body);
      expect(body).toMatchObject({ deviceId: fx.free, cpuCores: 3, node: "node-9" });
    },
  },
  {
    method: "DELETE", path: (fx) => `/admin/devices/${fx.held}`, scope: "admin", okStatus: 200,
    verify: async (fx) => {
      expect((await call("GET", `/admin/devices/${fx.held}`, admin(fx))).status).toBe(404);
      const a = await call("GET", `/scheduler/allocations/${fx.allocationId}`, admin(fx));
      expect(a.body).toMatchObject({ status: "released", reason: "removed" });
    },
  },
  ...(["maintenance", "offline"] as const).map(
    (status): RouteCase => ({
      method: "POST", path: (fx) => `/admin/devices/${fx.held}/${status}`, scope: "admin", okStatus: 200,
      verify: async (fx, body) => {
        DeviceView.parse(body);
        expect(body.status).toBe(status);
        const a = await call("GET", `/scheduler/allocations/${fx.allocationId}`, admin(fx));
        expect(a.body).toMatchObject({ status: "released", reason: status });
      },
    }),
  ),
  {
    method: "POST", path: (fx) => `/admin/devices/${fx.free}/online`, scope: "admin", okStatus: 200,
    verify: (fx, body) => {
      DeviceView.parse(body);
      expect(body).toMatchObject({ deviceId: fx.free, status: "available" });
    },
  },
  {
    method: "POST", path: (fx) => `/admin/devices/${fx.held}/force-release`, scope: "admin", okStatus: 200,
    verify: async (fx, body) => {
      ReleaseResult.parse(body);
      expect(body).toMatchObject({ allocationId: fx.allocationId, userId: fx.owner, deviceId: fx.held });
      const q = await call("GET", `/quotas/user/${fx.owner}`, admin(fx));
      expect(q.body.usage.devices).toBe(0);
    },
  },
  {
    method: "GET", path: (fx) => `/admin/devices/${fx.held}/history`, scope: "admin", okStatus: 200,
    verify: (_fx, body) => {
      expect(body).toEqual({ items: [], nextCursor: null });
    },
  },
  {
    method: "GET", path: () => "/admin/pools", scope: "admin", okStatus: 200,
    verify: (fx, body) => {
      expect(body.items.find((p: { pool: string }) => p.pool === fx.pool)).toMatchObject({ devices: 2, allocated: 1, available: 1 });
    },
  },
  {
    method: "GET", path: (fx) => `/admin/pools/${fx.pool}`, scope: "admin", okStatus: 200,
    verify: (fx, body) => {
      expect(body).toMatchObject({ pool: fx.pool, devices: 2, allocated: 1, available: 1 });
    },
  },
  {
    method: "PUT", path: (fx) => `/admin/pools/${fx.pool}`, body: () => ({ strategy: "spread" }), scope: "admin", okStatus: 200,
    verify: async (fx, body) => {
      expect(body).toMatchObject({ pool: fx.pool, strategy: "spread" });
      expect((await call("GET", `/admin/pools/${fx.pool}`, admin(fx))).body.strategy).toBe("spread");
    },
  },
  {
    method: "GET", path: (fx) => `/admin/pools/${fx.pool}/devices`, scope: "admin", okStatus: 200,
    verify: (fx, body) => {
      const held = body.items.find((d: { deviceId: string }) => d.deviceId === fx.held);
      expect(held).toMatchObject({ userId: fx.owner, allocationId: fx.allocationId, status: "allocated" });
    },
  },
];

/** What each caller should get on each kind of route. */
function expected(route: RouteCase, kind: CallerKind): { status: number; code?: string } {
  switch (kind) {
    case "none":
    case "bad":
      return { status: 401, code: "UNAUTHORIZED" };
    case "service":
      return { status: 403, code: "FORBIDDEN" };
    case "admin":
      return { status: route.okStatus };
    case "owner":
      return route.scope === "admin" ? { status: 403, code: "FORBIDDEN" } : { status: route.okStatus };
    case "other":
      if (route.scope === "any-user") return { status: route.okStatus };
      if (route.scope === "owner-by-allocation-id") return { status: 404, code: "ALLOCATION_NOT_FOUND" };
      return { status: 403, code: "FORBIDDEN" };
  }
}

const label = (r: RouteCase) => `${r.method} ${r.path({ pool: ":pool", owner: ":userId", held: ":id", free: ":id", allocationId: ":id" } as Fixture)}`;

describe("auth matrix", () => {
  it("covers every route the app declares", async () => {
    const doc = (await call("GET", "/openapi.json")).body as { paths: Record<string, Record<string, unknown>> };
    const declared = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`)).sort();
    const norm = (s: string) => s.replace(/\?.*$/, "").replace(/\{[^}]+\}|:[A-Za-z]+/g, "{}");
    expect([...new Set(ROUTES.map((r) => norm(label(r))))].sort()).toEqual([...new Set(declared.map(norm))].sort());
  });

  for (const route of ROUTES) {
    describe(label(route), () => {
      for (const caller of CALLERS) {
        const want = expected(route, caller.kind);
        it(`${caller.name} → ${want.status}${want.code ? ` ${want.code}` : ""}`, async () => {
          const fx = await fixture();
          const before = await snapshot(fx);
          const r = await call(route.method, route.path(fx), { headers: await caller.headers(fx), body: route.body?.(fx) });
          expect(r.status, JSON.stringify(r.body)).toBe(want.status);
          expect(r.res.headers.get("content-type")).toMatch(/^application\/json/);
          if (want.status >= 400) {
            expectErrorShape(r.body, want.code);
            expect(await snapshot(fx)).toEqual(before);
          } else {
            await route.verify(fx, r.body, caller.kind as "owner" | "admin" | "other");
          }
        });
      }
    });
  }
});

describe("owner-scoped routes in the owner's own words (no userId named)", () => {
  it("allocate, list, events, release without userId act on the caller", async () => {
    const fx = await fixture();
    const t = { token: fx.ownerToken };
    const list = await call("GET", "/scheduler/allocations", t);
    expect(list.status).toBe(200);
    expect(list.body.items.map((i: { allocationId: string }) => i.allocationId)).toEqual([fx.allocationId]);
    const ev = await call("GET", "/scheduler/events", t);
    expect(ev.status).toBe(200);
    expect(ev.body.events.every((e: { userId: string }) => e.userId === fx.owner)).toBe(true);
    const a = await call("POST", "/scheduler/devices/allocate", { ...t, body: { pool: fx.pool, durationMinutes: 5 } });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    expect(a.body).toMatchObject({ userId: fx.owner, deviceId: fx.free });
    const rel = await call("POST", "/scheduler/devices/release", { ...t, body: { deviceId: fx.free } });
    expect(rel.status, JSON.stringify(rel.body)).toBe(200);
    expect(rel.body.allocationId).toBe(a.body.allocationId);
  });

  it("an admin without userId acts on themself, not on whoever holds the device", async () => {
    const fx = await fixture();
    const before = await snapshot(fx);
    const r = await call("POST", "/scheduler/devices/release", { token: fx.adminToken, body: { deviceId: fx.held } });
    expect(r.status).toBe(404);
    expectErrorShape(r.body, "ALLOCATION_NOT_FOUND");
    expect(await snapshot(fx)).toEqual(before);
  });
});

describe("cross-user attempts", () => {
  it("a user cannot read another user's event log", async () => {
    const fx = await fixture();
    const r = await call("GET", `/scheduler/events?userId=${fx.other}`, { token: fx.ownerToken });
    expect(r.status).toBe(403);
    expectErrorShape(r.body, "FORBIDDEN");
    expect(JSON.stringify(r.body)).not.toContain("quota.");
  });

  it("a user cannot release another's device by naming them (403), nor by naming the device alone (404)", async () => {
    const fx = await fixture();
    const before = await snapshot(fx);
    const named = await call("POST", "/scheduler/devices/release", { token: fx.otherToken, body: { deviceId: fx.held, userId: fx.owner } });
    expect(named.status).toBe(403);
    expectErrorShape(named.body, "FORBIDDEN");
    const bare = await call("POST", "/scheduler/devices/release", { token: fx.otherToken, body: { deviceId: fx.held } });
    expect(bare.status).toBe(404);
    expectErrorShape(bare.body, "ALLOCATION_NOT_FOUND");
    expect(await snapshot(fx)).toEqual(before);
    const d = await call("GET", `/admin/devices/${fx.held}`, { token: fx.adminToken });
    expect(d.body.allocation).toMatchObject({ allocationId: fx.allocationId, userId: fx.owner });
    const mine = await call("GET", `/scheduler/allocations/${fx.allocationId}`, { token: fx.ownerToken });
    expect(mine.body.status).toBe("active");
  });

  it("a user cannot extend or read another's allocation, and the answer is the same as for an id that does not exist", async () => {
    const fx = await fixture();
    const before = await snapshot(fx);
    const forged = `alc_${b64url(fx.owner)}_${"0".repeat(24)}`;
    for (const id of [fx.allocationId, forged]) {
      const g = await call("GET", `/scheduler/allocations/${id}`, { token: fx.otherToken });
      const e = await call("PUT", `/scheduler/allocations/${id}/extend`, { token: fx.otherToken, body: { additionalMinutes: 5 } });
      for (const r of [g, e]) {
        expect(r.status).toBe(404);
        expectErrorShape(r.body, "ALLOCATION_NOT_FOUND");
        expect(r.body.error.message).toBe("No such allocation.");
      }
    }
    expect(await snapshot(fx)).toEqual(before);
  });

  it("a user cannot allocate on another's account, nor spend the other's quota", async () => {
    const fx = await fixture();
    const before = await snapshot(fx);
    const r = await call("POST", "/scheduler/devices/allocate", { token: fx.otherToken, body: { userId: fx.owner, pool: fx.pool } });
    expect(r.status).toBe(403);
    expectErrorShape(r.body, "FORBIDDEN");
    expect(await snapshot(fx)).toEqual(before);
  });

  it("admin role checks come before body validation on quota writes (an owner learns nothing from a 400)", async () => {
    const fx = await fixture();
    const before = await snapshot(fx);
    for (const [method, path] of [["PUT", `/quotas/user/${fx.owner}`], ["POST", `/quotas/renew/${fx.owner}`]] as const) {
      for (const body of [{ bogus: true }, { plan: "enterprise" }, { extensionDays: -1 }, {}]) {
        const r = await call(method, path, { token: fx.ownerToken, body });
        expect(r.status, `${method} ${path} ${JSON.stringify(body)} → ${JSON.stringify(r.body)}`).toBe(403);
        expectErrorShape(r.body, "FORBIDDEN");
      }
    }
    expect(await snapshot(fx)).toEqual(before);
  });
});
