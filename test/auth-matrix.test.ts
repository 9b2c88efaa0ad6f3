/**
 * Auth matrix: every route × every kind of caller. Each cell makes one call against real state
 * (a unique pool with two devices, the owner holding one) and checks the status, the error shape
 * and, on a success, what the call did. The cells of one route that must change nothing (every
 * refusal, and another user's batch) share one such state, and the route's closing test checks
 * that all of them together changed nothing; every success gets a state of its own.
 *
 *   no / bad token, wrong service token → 401 UNAUTHORIZED
 *   service token                       → 403 (services use the internal endpoints), 2xx on those and on top-ups
 *   other user                          → 403 on owner-scoped routes, 404 on allocation- and invoice-id routes (ids do not leak);
 *                                         on batch routes 200 with that 403 / 404 on each item, and nothing changed
 *   owner                               → 2xx on user routes, 403 on admin routes, quota writes, top-ups and internal routes
 *   admin                               → 2xx everywhere but the internal routes (403), acting on behalf of the owner
 *
 * "Nothing changed" covers the Durable Objects (read through the API) and the owner's and
 * the other user's rows in D1 (accounts, ledger, usage, invoices, notifications, dead letters)
 * plus the pricing plans, read straight from the database.
 */
import { env } from "cloudflare:workers";
import { decode, sign } from "hono/jwt";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  AllocationResult,
  AllocationView,
  BalanceView,
  DeviceView,
  QueueEntryView,
  QuotaView,
  ReleaseResult,
  ReservationView,
} from "../src/schemas";
import { SERVICE_TOKEN, call, deliverBatch, pricingPlanBody, registerDevice, tokenFor, uid, until } from "./helpers";
import { Unchanged } from "./unchanged";
import { iso } from "../src/domain/time";

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
  {
    name: "not a Bearer header",
    kind: "bad",
    headers: async (fx) => ({ Authorization: `Basic ${btoa(`${fx.owner}:x`)}` }),
  },
  {
    name: "admin token with a wrong signature",
    kind: "bad",
    headers: async (fx) =>
      bearer(await sign({ sub: fx.admin, role: "admin", exp: nowS() + 3600 }, "not-the-secret-0123456789abcdef", "HS256")),
  },
  {
    name: "expired owner token",
    kind: "bad",
    headers: async (fx) =>
      bearer(await sign({ sub: fx.owner, role: "user", iat: nowS() - 7200, exp: nowS() - 60 }, env.JWT_SECRET, "HS256")),
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
      bearer(
        `${b64url(JSON.stringify({ alg: "none", typ: "JWT" }))}.` +
          `${b64url(JSON.stringify({ sub: fx.admin, role: "admin", exp: nowS() + 3600 }))}.`,
      ),
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
  {
    name: "wrong service token",
    kind: "bad",
    headers: async () => ({ "X-Service-Token": `${SERVICE_TOKEN.slice(0, -1)}X` }),
  },
  {
    name: "wrong service token beside a valid admin token",
    kind: "bad",
    headers: async (fx) => ({ "X-Service-Token": "nope", ...bearer(fx.adminToken) }),
  },
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
  /** Fresh ids for billing routes (nothing exists under them until a route's `prepare` or a call makes it). */
  planId: string;
  paymentId: string;
  adjustmentId: string;
  usageId: string;
  deadLetter: string;
  /** The owner's invoice for INVOICE_PERIOD (written by `withInvoice`). */
  invoiceId: string;
  /** The owner's waiting queue entry and reservation (made by `withQueueEntry`, `withReservation`). */
  entryId?: string;
  reservationId?: string;
}

async function fixture(): Promise<Fixture> {
  const pool = uid("am-pool");
  const [a, b] = await Promise.all([registerDevice(pool, { deviceId: uid("am-dev") }), registerDevice(pool, { deviceId: uid("am-dev") })]);
  const owner = uid("am-owner");
  const other = uid("am-other");
  const adminId = uid("am-admin");
  const fx = {
    pool,
    owner,
    other,
    admin: adminId,
    ownerToken: await tokenFor(owner),
    otherToken: await tokenFor(other),
    adminToken: await tokenFor(adminId, "admin"),
    planId: uid("am-plan"),
    paymentId: uid("am-pay"),
    adjustmentId: uid("am-adj"),
    usageId: uid("am-usage"),
    deadLetter: uid("am-dead"),
    invoiceId: `inv_${INVOICE_PERIOD}_${owner}`,
  };
  const r = await call("POST", "/scheduler/devices/allocate", {
    token: fx.ownerToken,
    body: { pool, durationMinutes: 30 },
  });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const held = r.body.deviceId as string;
  const free = held === a.deviceId ? b.deviceId : a.deviceId;
  // The other user has some state of their own too (an event log, a quota row, an account).
  expect((await call("GET", `/quotas/user/${other}`, { token: fx.otherToken })).status).toBe(200);
  expect((await call("GET", `/billing/users/${other}/balance`, { token: fx.otherToken })).body.balanceMinor).toBe(STARTING_CREDIT);
  // Allocating opened the owner's account (the balance is checked first).
  expect((await account(owner))?.balance).toBe(STARTING_CREDIT);
  // Wait until the pool's index has heard from both devices, so later snapshots are stable.
  await until(async () => {
    const s = await call("GET", `/admin/pools/${pool}`, { token: fx.adminToken });
    return s.status === 200 && s.body.allocated === 1 && s.body.available === 1;
  });
  return { ...fx, held, free, allocationId: r.body.allocationId };
}

// ---- billing state ------------------------------------------------------------------------------

/** The seeded `standard` plan: 1000 cents to start, 25 cents for an hour of a 2-core, 4 GB, 32 GB device. */
const STARTING_CREDIT = 1000;
const HOUR_PRICE = 25;
const INVOICE_PERIOD = "2001-01";
const RUN_PERIOD = "2001-02";
const JAN = { from: "2026-01-01T00:00:00Z", to: "2026-02-01T00:00:00Z" };

const rows = async (q: string, ...args: unknown[]) =>
  (
    await env.DB.prepare(q)
      .bind(...args)
      .all()
  ).results;
const account = (userId: string) =>
  env.DB.prepare("SELECT plan_id, balance, last_seq FROM accounts WHERE user_id = ?")
    .bind(userId)
    .first<{ plan_id: string; balance: number; last_seq: number }>();

/** One hour on the held device in January 2026 (price: HOUR_PRICE). */
const usageRecord = (fx: Fixture) => ({
  allocationId: fx.usageId,
  deviceId: fx.held,
  userId: fx.owner,
  durationSeconds: 3600,
  cpuCores: 2,
  memoryMB: 4096,
  storageMB: 32768,
  allocatedAt: "2026-01-10T10:00:00Z",
  releasedAt: "2026-01-10T11:00:00Z",
});
const planBody = () => pricingPlanBody("Matrix plan");

/** The owner's starting credit is booked in `period` (a month long past), so an invoice run for it has something to bill. */
async function backdate(fx: Fixture, period: string) {
  const at = Date.parse(`${period}-15T00:00:00Z`);
  const r = await env.DB.prepare("UPDATE ledger SET created_at = ? WHERE entry_id = ?").bind(at, `starting_credit:${fx.owner}`).run();
  expect(r.meta.changes).toBe(1);
}

/** A real invoice of the owner, written by the invoice run. */
async function withInvoice(fx: Fixture) {
  await backdate(fx, INVOICE_PERIOD);
  const r = await call("POST", "/admin/billing/invoices/run", {
    token: fx.adminToken,
    body: { period: INVOICE_PERIOD },
  });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect((await rows("SELECT invoice_id FROM invoices WHERE invoice_id = ?", fx.invoiceId)).length).toBe(1);
}

/** The owner waits in the pool's queue (a third user took the free device first). */
async function withQueueEntry(fx: Fixture) {
  const third = await call("POST", "/scheduler/devices/allocate", {
    token: fx.adminToken,
    body: { userId: uid("am-third"), pool: fx.pool, durationMinutes: 30 },
  });
  expect(third.body.deviceId).toBe(fx.free);
  const r = await call("POST", "/scheduler/queue/join", {
    token: fx.ownerToken,
    body: { pool: fx.pool, durationMinutes: 5 },
  });
  expect(r.body.status, JSON.stringify(r.body)).toBe("waiting");
  fx.entryId = r.body.entryId;
}

/** The owner has a reservation in an hour's time. */
async function withReservation(fx: Fixture) {
  const r = await call("POST", "/scheduler/reservations", {
    token: fx.ownerToken,
    body: { pool: fx.pool, startAt: iso(Date.now() + 3_600_000), durationMinutes: 30 },
  });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  fx.reservationId = r.body.reservationId;
}

/** One usage record of the owner on the held device, booked through the internal endpoint. */
async function withUsage(fx: Fixture) {
  const r = await call("POST", "/api/internal/metering/device-usage", {
    service: SERVICE_TOKEN,
    body: usageRecord(fx),
  });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect(r.body.recorded).toBe(1);
}

/** A dead letter of the owner's, kept by the real dead-letter consumer. */
async function withDeadLetter(fx: Fixture) {
  const body = {
    ...usageRecord(fx),
    allocationId: fx.deadLetter,
    allocatedAt: Date.parse(usageRecord(fx).allocatedAt),
    releasedAt: Date.parse(usageRecord(fx).releasedAt),
    reason: "released",
  };
  expect((await deliverBatch("device-usage-dlq", [body], 11)).explicitAcks).toEqual(["m0"]);
  expect(await rows("SELECT status FROM failed_usage WHERE allocation_id = ?", fx.deadLetter)).toEqual([{ status: "failed" }]);
}

async function withPlan(fx: Fixture) {
  const r = await call("PUT", `/admin/billing/pricing-plans/${fx.planId}`, { token: fx.adminToken, body: planBody() });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
}

/** The fixture's users' rows in D1, and the pricing plans. */
async function billingSnapshot(fx: Fixture) {
  const users = [fx.owner, fx.other];
  return {
    accounts: await rows("SELECT * FROM accounts WHERE user_id IN (?, ?) ORDER BY user_id", ...users),
    ledger: await rows("SELECT * FROM ledger WHERE user_id IN (?, ?) ORDER BY seq", ...users),
    usage: await rows(
      "SELECT * FROM usage_records WHERE user_id IN (?, ?) OR device_id IN (?, ?) OR allocation_id IN (?, ?) ORDER BY allocation_id",
      ...users,
      fx.held,
      fx.free,
      fx.usageId,
      fx.deadLetter,
    ),
    invoices: await rows("SELECT * FROM invoices WHERE user_id IN (?, ?) ORDER BY invoice_id", ...users),
    notifications: await rows("SELECT key, user_id, type, data FROM notifications WHERE user_id IN (?, ?) ORDER BY key", ...users),
    failedUsage: await rows(
      "SELECT * FROM failed_usage WHERE user_id IN (?, ?) OR allocation_id = ? ORDER BY allocation_id",
      ...users,
      fx.deadLetter,
    ),
    failedByStatus: await rows("SELECT status, COUNT(*) AS n FROM failed_usage GROUP BY status ORDER BY status"),
    plans: await rows("SELECT * FROM pricing_plans ORDER BY plan_id"),
    // A refused call leaves no audit row and revokes nothing.
    audit: await rows(
      "SELECT seq, actor, action, target, change FROM audit_log WHERE target IN (?, ?, ?, ?, ?, ?) ORDER BY seq",
      ...users.map((u) => `user:${u}`),
      `device:${fx.held}`,
      `device:${fx.free}`,
      `pool:${fx.pool}`,
      `plan:${fx.planId}`,
    ),
    revocations: await rows("SELECT * FROM token_revocations WHERE user_id IN (?, ?) ORDER BY user_id", ...users),
  };
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
    // The estimate's "seconds from now" moves with the clock; everything else must not.
    queue: await get(`/scheduler/queue?pool=${fx.pool}`).then((r) => ({ ...r, body: stripWait(r.body) })),
    reservations: await get(`/scheduler/reservations?pool=${fx.pool}`),
    billing: await billingSnapshot(fx),
  };
}

const stripWait = (body: { items?: Record<string, unknown>[] }) => ({
  ...body,
  items: body.items?.map(({ estimatedWaitSeconds: _, ...rest }) => rest),
});

function expectErrorShape(body: unknown, code?: string) {
  expect(body, JSON.stringify(body)).toMatchObject({
    error: { code: expect.any(String), message: expect.any(String) },
  });
  expect(Object.keys(body as object)).toEqual(["error"]);
  const keys = Object.keys((body as { error: object }).error).sort();
  expect(["code,message", "code,details,message"]).toContain(keys.join(","));
  if (code) expect((body as { error: { code: string } }).error.code).toBe(code);
}

// ---- routes ------------------------------------------------------------------------------------

type Scope =
  /** Names the owner's data: other users are refused (403), or told "not found" on allocation- and invoice-id routes. */
  | "owner"
  | "owner-by-id"
  /** Any signed-in user may call it. */
  | "any-user"
  /** Batch routes on the owner's data: another user gets 200 with each item refused (403, or 404 by id) and nothing changes. */
  | "owner-batch"
  /** Admin only (quota writes and the whole /admin tree, /metering/devices). */
  | "admin"
  /** Money in: an admin or another service (top-ups). */
  | "admin-or-service"
  /** Other services only (X-Service-Token): /api/internal. */
  | "service"
  /** Like owner-by-id, but only the holder: an admin acting on the owner's allocation is refused (403). */
  | "holder-by-id"
  /** No credential needed (a bad one is still 401): the device nodes' key set. */
  | "public";

interface RouteCase {
  method: string;
  path: (fx: Fixture) => string;
  body?: (fx: Fixture) => unknown;
  scope: Scope;
  okStatus: 200 | 201 | 202;
  /** On "owner-by-id" routes: the code another user gets (the same as for an id that does not exist). */
  notFoundCode?: string;
  /** State this route needs beyond the common fixture, made before the snapshot. */
  prepare?: (fx: Fixture) => Promise<void>;
  /** The content type of a success, when not JSON. */
  contentType?: RegExp;
  /** Checks a successful call did what it says. */
  verify: (fx: Fixture, body: any, by: "owner" | "admin" | "other" | "service") => Promise<void> | void;
}

const admin = (fx: Fixture) => ({ token: fx.adminToken });

const ROUTES: RouteCase[] = [
  {
    method: "POST",
    path: () => "/scheduler/devices/allocate",
    body: (fx) => ({ userId: fx.owner, pool: fx.pool, durationMinutes: 5 }),
    scope: "owner",
    okStatus: 201,
    verify: async (fx, body) => {
      AllocationResult.parse(body);
      expect(body.userId).toBe(fx.owner);
      expect(body.deviceId).toBe(fx.free);
      const q = await call("GET", `/quotas/user/${fx.owner}`, admin(fx));
      expect(q.body.usage.devices).toBe(2);
    },
  },
  {
    method: "POST",
    path: () => "/scheduler/devices/release",
    body: (fx) => ({ userId: fx.owner, deviceId: fx.held }),
    scope: "owner",
    okStatus: 200,
    verify: async (fx, body) => {
      ReleaseResult.parse(body);
      expect(body.allocationId).toBe(fx.allocationId);
      expect(body.userId).toBe(fx.owner);
      const d = await call("GET", `/admin/devices/${fx.held}`, admin(fx));
      expect(d.body.allocation).toBeNull();
    },
  },
  {
    method: "PUT",
    path: (fx) => `/scheduler/allocations/${fx.allocationId}/extend`,
    body: () => ({ additionalMinutes: 10 }),
    scope: "owner-by-id",
    notFoundCode: "ALLOCATION_NOT_FOUND",
    okStatus: 200,
    verify: async (fx, body) => {
      AllocationResult.parse(body);
      expect(body.allocationId).toBe(fx.allocationId);
      expect(body.durationMinutes).toBe(40);
      expect(body.extendCount).toBe(1);
    },
  },
  {
    method: "GET",
    path: (fx) => `/scheduler/allocations?userId=${fx.owner}`,
    scope: "owner",
    okStatus: 200,
    verify: (fx, body) => {
      z.object({ items: z.array(AllocationView), nextCursor: z.string().nullable() }).parse(body);
      expect(body.items.map((i: { allocationId: string }) => i.allocationId)).toEqual([fx.allocationId]);
    },
  },
  {
    method: "GET",
    path: (fx) => `/scheduler/allocations/${fx.allocationId}`,
    scope: "owner-by-id",
    notFoundCode: "ALLOCATION_NOT_FOUND",
    okStatus: 200,
    verify: (fx, body) => {
      AllocationView.parse(body);
      expect(body).toMatchObject({
        allocationId: fx.allocationId,
        userId: fx.owner,
        deviceId: fx.held,
        status: "active",
      });
    },
  },
  {
    method: "GET",
    path: (fx) => `/scheduler/devices/available?pool=${fx.pool}`,
    scope: "any-user",
    okStatus: 200,
    verify: (fx, body) => {
      expect(body.pool).toBe(fx.pool);
      expect(body.items.map((i: { deviceId: string }) => i.deviceId)).toEqual([fx.free]);
      // Free devices carry no holder: users never learn who holds what.
      expect(body.items[0].userId).toBeUndefined();
    },
  },
  {
    method: "POST",
    path: (fx) => `/scheduler/allocations/${fx.allocationId}/access`,
    scope: "holder-by-id",
    notFoundCode: "ALLOCATION_NOT_FOUND",
    okStatus: 200,
    verify: (fx, body) => {
      expect(body).toMatchObject({ allocationId: fx.allocationId, deviceId: fx.held, access: {} });
      expect(body.accessGrant).toMatch(/^ey[\w-]+\.[\w-]+\.[\w-]+$/);
    },
  },
  {
    method: "GET",
    path: () => "/.well-known/jwks.json",
    scope: "public",
    okStatus: 200,
    verify: (_fx, body) => {
      expect(body.keys).toEqual([expect.objectContaining({ kty: "EC", crv: "P-256", alg: "ES256", use: "sig" })]);
    },
  },
  ...(
    [
      ["/admin/devices", "admin"],
      ["/api/internal/devices", "service"],
    ] as const
  ).map(([prefix, scope]): RouteCase => ({
    method: "PUT",
    path: (fx) => `${prefix}/${fx.held}/access`,
    body: () => ({ access: { adb: "10.0.0.9:5555" } }),
    scope,
    okStatus: 200,
    verify: async (fx, body) => {
      expect(body).toEqual({ deviceId: fx.held, endpoints: ["adb"] });
      const a = await call("GET", `/scheduler/allocations/${fx.allocationId}`, { token: fx.ownerToken });
      expect(a.body.access).toEqual({ adb: "10.0.0.9:5555" });
    },
  })),
  {
    method: "GET",
    path: () => "/scheduler/pools",
    scope: "any-user",
    okStatus: 200,
    verify: (fx, body) => {
      const p = body.items.find((i: { pool: string }) => i.pool === fx.pool);
      expect(p.classes.length).toBeGreaterThan(0);
      // The catalogue counts devices; it names neither devices nor holders.
      expect(JSON.stringify(p)).not.toContain(fx.owner);
    },
  },
  {
    method: "GET",
    path: (fx) => `/scheduler/events?userId=${fx.owner}`,
    scope: "owner",
    okStatus: 200,
    verify: (fx, body) => {
      expect(body.events.length).toBeGreaterThan(0);
      for (const e of body.events) expect(e.userId).toBe(fx.owner);
      expect(body.events.map((e: { type: string }) => e.type)).toContain("device.allocated");
      expect(body.events.find((e: { type: string }) => e.type === "device.allocated").data.allocationId).toBe(fx.allocationId);
    },
  },
  // waiting queue and reservations (on the pool object; ids name their pool, not their user)
  {
    method: "POST",
    path: () => "/scheduler/queue/join",
    body: (fx) => ({ userId: fx.owner, pool: fx.pool, durationMinutes: 5 }),
    scope: "owner",
    okStatus: 201,
    verify: async (fx, body) => {
      QueueEntryView.parse(body);
      // A free device: served before the answer.
      expect(body).toMatchObject({ userId: fx.owner, status: "fulfilled", deviceId: fx.free });
      expect((await call("GET", `/quotas/user/${fx.owner}`, admin(fx))).body.usage.devices).toBe(2);
    },
  },
  {
    method: "GET",
    path: (fx) => `/scheduler/queue?pool=${fx.pool}&userId=${fx.owner}`,
    scope: "owner",
    okStatus: 200,
    prepare: withQueueEntry,
    verify: (fx, body) => {
      expect(body.items.map((e: { entryId: string; position: number }) => [e.entryId, e.position])).toEqual([[fx.entryId, 1]]);
    },
  },
  ...(["", "/position"] as const).map((suffix): RouteCase => ({
    method: "GET",
    path: (fx) => `/scheduler/queue/${fx.entryId}${suffix}`,
    scope: "owner-by-id",
    notFoundCode: "QUEUE_ENTRY_NOT_FOUND",
    okStatus: 200,
    prepare: withQueueEntry,
    verify: (fx, body) => {
      QueueEntryView.parse(body);
      expect(body).toMatchObject({ entryId: fx.entryId, userId: fx.owner, status: "waiting", position: 1 });
      // The busy devices' real expiry times: both end in about 30 minutes.
      expect(body.estimatedWaitSeconds).toBeGreaterThan(25 * 60);
      expect(body.estimatedWaitSeconds).toBeLessThanOrEqual(30 * 60);
    },
  })),
  {
    method: "DELETE",
    path: (fx) => `/scheduler/queue/${fx.entryId}`,
    scope: "owner-by-id",
    notFoundCode: "QUEUE_ENTRY_NOT_FOUND",
    okStatus: 200,
    prepare: withQueueEntry,
    verify: async (fx, body) => {
      expect(body).toMatchObject({ entryId: fx.entryId, status: "cancelled", position: null });
      expect((await call("GET", `/scheduler/queue/${fx.entryId}`, admin(fx))).body.status).toBe("cancelled");
    },
  },
  {
    method: "POST",
    path: () => "/scheduler/reservations",
    body: (fx) => ({ userId: fx.owner, pool: fx.pool, startAt: iso(Date.now() + 3_600_000), durationMinutes: 30 }),
    scope: "owner",
    okStatus: 201,
    verify: async (fx, body) => {
      ReservationView.parse(body);
      expect(body).toMatchObject({ userId: fx.owner, status: "confirmed" });
      // Either device: the held one's allocation ends 30 minutes before the window.
      expect([fx.held, fx.free]).toContain(body.deviceId);
    },
  },
  {
    method: "POST",
    path: () => "/scheduler/reservations/check",
    body: (fx) => ({ userId: fx.owner, pool: fx.pool, startAt: iso(Date.now() + 3_600_000), durationMinutes: 30 }),
    scope: "owner",
    okStatus: 200,
    prepare: withReservation,
    verify: (fx, body) => {
      // The held device frees in 30 minutes, the free one is reserved: one device left for the window.
      expect(body).toMatchObject({ available: true, matchingDevices: 2, freeDevices: 1 });
      expect(body.overlapping.map((r: { reservationId: string }) => r.reservationId)).toEqual([fx.reservationId]);
    },
  },
  {
    method: "GET",
    path: (fx) => `/scheduler/reservations?pool=${fx.pool}&userId=${fx.owner}`,
    scope: "owner",
    okStatus: 200,
    prepare: withReservation,
    verify: (fx, body) => {
      expect(body.items.map((r: { reservationId: string }) => r.reservationId)).toEqual([fx.reservationId]);
    },
  },
  {
    method: "GET",
    path: (fx) => `/scheduler/reservations/${fx.reservationId}`,
    scope: "owner-by-id",
    notFoundCode: "RESERVATION_NOT_FOUND",
    okStatus: 200,
    prepare: withReservation,
    verify: (fx, body) => {
      ReservationView.parse(body);
      expect(body).toMatchObject({ reservationId: fx.reservationId, userId: fx.owner, status: "confirmed" });
    },
  },
  {
    method: "DELETE",
    path: (fx) => `/scheduler/reservations/${fx.reservationId}`,
    scope: "owner-by-id",
    notFoundCode: "RESERVATION_NOT_FOUND",
    okStatus: 200,
    prepare: withReservation,
    verify: async (fx, body) => {
      expect(body).toMatchObject({ reservationId: fx.reservationId, status: "cancelled" });
      const check = await call("POST", "/scheduler/reservations/check", {
        token: fx.ownerToken,
        body: { pool: fx.pool, startAt: iso(Date.now() + 3_600_000), durationMinutes: 30 },
      });
      expect(check.body.freeDevices).toBe(2);
    },
  },
  // batch: each item is the single route's; another user's items are refused one by one.
  {
    method: "POST",
    path: () => "/scheduler/batch/allocate",
    body: (fx) => ({ userId: fx.owner, requests: [{ pool: fx.pool, durationMinutes: 5 }] }),
    scope: "owner-batch",
    okStatus: 200,
    verify: async (fx, body, by) => {
      if (by === "other")
        return expect(body).toMatchObject({
          succeeded: 0,
          failed: 1,
          results: [{ index: 0, ok: false, status: 403, error: { code: "FORBIDDEN" } }],
        });
      expect(body).toMatchObject({
        succeeded: 1,
        failed: 0,
        skipped: 0,
        results: [{ index: 0, ok: true, status: 201 }],
      });
      AllocationResult.parse(body.results[0].value);
      expect(body.results[0].value).toMatchObject({ userId: fx.owner, deviceId: fx.free });
      expect((await call("GET", `/quotas/user/${fx.owner}`, admin(fx))).body.usage.devices).toBe(2);
    },
  },
  {
    method: "POST",
    path: () => "/scheduler/batch/release",
    body: (fx) => ({ userId: fx.owner, requests: [{ deviceId: fx.held }] }),
    scope: "owner-batch",
    okStatus: 200,
    verify: async (fx, body, by) => {
      if (by === "other")
        return expect(body).toMatchObject({
          succeeded: 0,
          failed: 1,
          results: [{ index: 0, ok: false, status: 403, error: { code: "FORBIDDEN" } }],
        });
      expect(body).toMatchObject({
        succeeded: 1,
        results: [{ index: 0, ok: true, status: 200, value: { allocationId: fx.allocationId, userId: fx.owner } }],
      });
      ReleaseResult.parse(body.results[0].value);
      expect((await call("GET", `/admin/devices/${fx.held}`, admin(fx))).body.allocation).toBeNull();
    },
  },
  {
    method: "POST",
    path: () => "/scheduler/batch/extend",
    body: (fx) => ({ requests: [{ allocationId: fx.allocationId, additionalMinutes: 10 }] }),
    scope: "owner-batch",
    okStatus: 200,
    verify: (fx, body, by) => {
      if (by === "other")
        return expect(body).toMatchObject({
          succeeded: 0,
          failed: 1,
          results: [
            {
              index: 0,
              ok: false,
              status: 404,
              error: { code: "ALLOCATION_NOT_FOUND", details: { allocationId: fx.allocationId } },
            },
          ],
        });
      expect(body).toMatchObject({
        succeeded: 1,
        results: [
          {
            index: 0,
            ok: true,
            status: 200,
            value: { allocationId: fx.allocationId, durationMinutes: 40, extendCount: 1 },
          },
        ],
      });
      AllocationResult.parse(body.results[0].value);
    },
  },
  {
    method: "POST",
    path: () => "/scheduler/batch/query",
    body: (fx) => ({ allocationIds: [fx.allocationId] }),
    scope: "owner-batch",
    okStatus: 200,
    verify: (fx, body, by) => {
      if (by === "other")
        return expect(body).toMatchObject({
          succeeded: 0,
          failed: 1,
          results: [
            {
              index: 0,
              ok: false,
              status: 404,
              error: { code: "ALLOCATION_NOT_FOUND", details: { allocationId: fx.allocationId } },
            },
          ],
        });
      AllocationView.parse(body.results[0].value);
      expect(body).toMatchObject({
        succeeded: 1,
        results: [
          {
            index: 0,
            ok: true,
            status: 200,
            value: { allocationId: fx.allocationId, userId: fx.owner, deviceId: fx.held, status: "active" },
          },
        ],
      });
    },
  },
  {
    method: "POST",
    path: () => "/ws/ticket",
    body: () => ({ feed: "user" }),
    scope: "any-user",
    okStatus: 201,
    verify: (fx, body, by) => {
      // A ticket always opens the caller's own feed: its subject is the caller, whoever asks.
      expect(body).toMatchObject({ feed: "user", url: expect.stringMatching(/^\/ws\?ticket=/) });
      expect(decode(body.ticket).payload).toMatchObject({
        sub: by === "owner" ? fx.owner : by === "other" ? fx.other : fx.admin,
        scope: "user",
        typ: "ws-ticket",
      });
    },
  },
  {
    method: "GET",
    path: (fx) => `/quotas/user/${fx.owner}`,
    scope: "owner",
    okStatus: 200,
    verify: (fx, body) => {
      QuotaView.parse(body);
      expect(body.userId).toBe(fx.owner);
      expect(body.usage.devices).toBe(1);
    },
  },
  {
    method: "PUT",
    path: (fx) => `/quotas/user/${fx.owner}`,
    body: () => ({ tier: "pro" }),
    scope: "admin",
    okStatus: 200,
    verify: async (fx, body) => {
      QuotaView.parse(body);
      expect(body).toMatchObject({ userId: fx.owner, tier: "pro" });
      expect((await call("GET", `/quotas/user/${fx.owner}`, admin(fx))).body.tier).toBe("pro");
    },
  },
  {
    method: "POST",
    path: (fx) => `/quotas/renew/${fx.owner}`,
    body: () => ({ extensionDays: 7 }),
    scope: "admin",
    okStatus: 200,
    verify: async (fx, body) => {
      QuotaView.parse(body);
      expect(body.userId).toBe(fx.owner);
      const ev = await call("GET", `/scheduler/events?userId=${fx.owner}`, admin(fx));
      expect(ev.body.events.map((e: { type: string }) => e.type)).toContain("quota.renewed");
    },
  },
  {
    method: "POST",
    path: () => "/admin/devices",
    body: (fx) => ({ deviceId: `${fx.pool}-new`, pool: fx.pool, cpuCores: 1, memoryMB: 1024, storageMB: 1024 }),
    scope: "admin",
    okStatus: 201,
    verify: async (fx, body) => {
      DeviceView.parse(body);
      expect(body).toMatchObject({ deviceId: `${fx.pool}-new`, pool: fx.pool, status: "available" });
      expect((await call("GET", `/admin/devices/${fx.pool}-new`, admin(fx))).status).toBe(200);
    },
  },
  {
    method: "GET",
    path: (fx) => `/admin/devices?pool=${fx.pool}`,
    scope: "admin",
    okStatus: 200,
    verify: (fx, body) => {
      expect(body.items.map((d: { deviceId: string }) => d.deviceId).sort()).toEqual([fx.held, fx.free].sort());
      expect(body.items.find((d: { deviceId: string }) => d.deviceId === fx.held)).toMatchObject({ pool: fx.pool, userId: fx.owner });
    },
  },
  {
    method: "POST",
    path: () => "/admin/devices/bulk",
    body: (fx) => ({ devices: [{ deviceId: `${fx.pool}-bulk`, pool: fx.pool, cpuCores: 1, memoryMB: 1024, storageMB: 1024 }] }),
    scope: "admin",
    okStatus: 200,
    verify: async (fx, body) => {
      expect(body).toMatchObject({ created: 1, failed: 0, results: [{ deviceId: `${fx.pool}-bulk`, ok: true, outcome: "created" }] });
      expect((await call("GET", `/admin/devices/${fx.pool}-bulk`, admin(fx))).status).toBe(200);
    },
  },
  {
    method: "GET",
    path: (fx) => `/admin/devices/${fx.held}`,
    scope: "admin",
    okStatus: 200,
    verify: (fx, body) => {
      DeviceView.parse(body);
      expect(body.allocation).toMatchObject({ allocationId: fx.allocationId, userId: fx.owner });
    },
  },
  {
    method: "PATCH",
    path: (fx) => `/admin/devices/${fx.free}`,
    body: () => ({ cpuCores: 3, node: "node-9" }),
    scope: "admin",
    okStatus: 200,
    verify: (fx, body) => {
      DeviceView.parse(body);
      expect(body).toMatchObject({ deviceId: fx.free, cpuCores: 3, node: "node-9" });
    },
  },
  {
    method: "DELETE",
    path: (fx) => `/admin/devices/${fx.held}`,
    scope: "admin",
    okStatus: 200,
    verify: async (fx) => {
      expect((await call("GET", `/admin/devices/${fx.held}`, admin(fx))).status).toBe(404);
      const a = await call("GET", `/scheduler/allocations/${fx.allocationId}`, admin(fx));
      expect(a.body).toMatchObject({ status: "released", reason: "removed" });
    },
  },
  ...(["maintenance", "offline"] as const).map((status): RouteCase => ({
    method: "POST",
    path: (fx) => `/admin/devices/${fx.held}/${status}`,
    scope: "admin",
    okStatus: 200,
    verify: async (fx, body) => {
      DeviceView.parse(body);
      expect(body.status).toBe(status);
      const a = await call("GET", `/scheduler/allocations/${fx.allocationId}`, admin(fx));
      expect(a.body).toMatchObject({ status: "released", reason: status });
    },
  })),
  {
    method: "POST",
    path: (fx) => `/admin/devices/${fx.free}/online`,
    scope: "admin",
    okStatus: 200,
    verify: (fx, body) => {
      DeviceView.parse(body);
      expect(body).toMatchObject({ deviceId: fx.free, status: "available" });
    },
  },
  {
    method: "POST",
    path: (fx) => `/admin/devices/${fx.held}/force-release`,
    scope: "admin",
    okStatus: 200,
    verify: async (fx, body) => {
      ReleaseResult.parse(body);
      expect(body).toMatchObject({ allocationId: fx.allocationId, userId: fx.owner, deviceId: fx.held });
      const q = await call("GET", `/quotas/user/${fx.owner}`, admin(fx));
      expect(q.body.usage.devices).toBe(0);
    },
  },
  {
    method: "GET",
    path: (fx) => `/admin/devices/${fx.held}/history`,
    scope: "admin",
    okStatus: 200,
    verify: (_fx, body) => {
      expect(body).toEqual({ items: [], nextCursor: null });
    },
  },
  {
    method: "GET",
    path: () => "/admin/users?limit=200",
    scope: "admin",
    okStatus: 200,
    verify: (_fx, body) => {
      expect(Array.isArray(body.items)).toBe(true);
      expect(body.items.length).toBeGreaterThan(0);
      for (const u of body.items) expect(u.quota.userId).toBe(u.userId);
    },
  },
  {
    method: "GET",
    path: () => "/admin/metrics",
    scope: "admin",
    okStatus: 200,
    contentType: /^text\/plain; version=0\.0\.4; charset=utf-8$/,
    verify: (fx, body) => {
      expect(typeof body).toBe("string");
      expect(body).toContain(`eda_allocations_total{pool="${fx.pool}"}`);
      expect(body).toContain(`eda_devices{pool="${fx.pool}",status="allocated"} 1`);
    },
  },
  {
    method: "GET",
    path: () => "/admin/pools",
    scope: "admin",
    okStatus: 200,
    verify: (fx, body) => {
      expect(body.items.find((p: { pool: string }) => p.pool === fx.pool)).toMatchObject({
        devices: 2,
        allocated: 1,
        available: 1,
      });
    },
  },
  {
    method: "GET",
    path: (fx) => `/admin/pools/${fx.pool}`,
    scope: "admin",
    okStatus: 200,
    verify: (fx, body) => {
      expect(body).toMatchObject({ pool: fx.pool, devices: 2, allocated: 1, available: 1 });
    },
  },
  {
    method: "PUT",
    path: (fx) => `/admin/pools/${fx.pool}`,
    body: () => ({ strategy: "spread" }),
    scope: "admin",
    okStatus: 200,
    verify: async (fx, body) => {
      expect(body).toMatchObject({ pool: fx.pool, strategy: "spread" });
      expect((await call("GET", `/admin/pools/${fx.pool}`, admin(fx))).body.strategy).toBe("spread");
    },
  },
  {
    method: "GET",
    path: (fx) => `/admin/pools/${fx.pool}/devices`,
    scope: "admin",
    okStatus: 200,
    verify: (fx, body) => {
      const held = body.items.find((d: { deviceId: string }) => d.deviceId === fx.held);
      expect(held).toMatchObject({ userId: fx.owner, allocationId: fx.allocationId, status: "allocated" });
    },
  },

  // ---- billing and metering ----
  {
    method: "GET",
    path: (fx) => `/billing/users/${fx.owner}/balance`,
    scope: "owner",
    okStatus: 200,
    verify: (fx, body) => {
      BalanceView.strict().parse(body);
      expect(body).toMatchObject({
        userId: fx.owner,
        balanceMinor: STARTING_CREDIT,
        currency: "USD",
        pricingPlanId: "standard",
        lowBalance: false,
        hasBalance: true,
      });
    },
  },
  {
    method: "GET",
    path: (fx) => `/billing/users/${fx.owner}/ledger`,
    scope: "owner",
    okStatus: 200,
    verify: (fx, body) => {
      expect(body.nextCursor).toBeNull();
      expect(body.items).toEqual([
        expect.objectContaining({
          userId: fx.owner,
          kind: "starting_credit",
          amountMinor: STARTING_CREDIT,
          balanceAfterMinor: STARTING_CREDIT,
          currency: "USD",
        }),
      ]);
    },
  },
  {
    method: "GET",
    path: (fx) => `/billing/users/${fx.owner}/invoices`,
    scope: "owner",
    okStatus: 200,
    prepare: withInvoice,
    verify: (fx, body) => {
      expect(body.items).toEqual([expect.objectContaining({ invoiceId: fx.invoiceId, userId: fx.owner, period: INVOICE_PERIOD })]);
    },
  },
  {
    method: "GET",
    path: (fx) => `/billing/invoices/${fx.invoiceId}`,
    scope: "owner-by-id",
    notFoundCode: "INVOICE_NOT_FOUND",
    okStatus: 200,
    prepare: withInvoice,
    verify: (fx, body) => {
      expect(body).toMatchObject({
        invoiceId: fx.invoiceId,
        userId: fx.owner,
        period: INVOICE_PERIOD,
        currency: "USD",
        openingBalanceMinor: 0,
        chargesMinor: 0,
        creditsMinor: STARTING_CREDIT,
        debitsMinor: 0,
        closingBalanceMinor: STARTING_CREDIT,
        usageCount: 0,
      });
    },
  },
  {
    method: "GET",
    path: () => "/billing/pricing-plans",
    scope: "any-user",
    okStatus: 200,
    verify: (_fx, body) => {
      expect(body.items.find((p: { pricingPlanId: string }) => p.pricingPlanId === "standard")).toMatchObject({
        currency: "USD",
        startingCreditMinor: STARTING_CREDIT,
      });
    },
  },
  {
    method: "POST",
    path: (fx) => `/billing/users/${fx.owner}/top-ups`,
    body: (fx) => ({ amountMinor: 250, paymentId: fx.paymentId, paymentMethod: "card" }),
    scope: "admin-or-service",
    okStatus: 201,
    verify: async (fx, body) => {
      expect(body).toEqual({
        userId: fx.owner,
        paymentId: fx.paymentId,
        amountMinor: 250,
        balanceMinor: STARTING_CREDIT + 250,
        currency: "USD",
        duplicate: false,
      });
      expect((await account(fx.owner))?.balance).toBe(STARTING_CREDIT + 250);
      const ev = await call("GET", `/scheduler/events?userId=${fx.owner}`, admin(fx));
      expect(ev.body.events.find((e: { type: string }) => e.type === "billing.payment_success")?.data).toMatchObject({
        amount: 250,
        paymentId: fx.paymentId,
        newBalance: STARTING_CREDIT + 250,
      });
    },
  },
  {
    method: "GET",
    path: (fx) => `/metering/users/${fx.owner}?from=${JAN.from}&to=${JAN.to}`,
    scope: "owner",
    okStatus: 200,
    prepare: withUsage,
    verify: (fx, body) => {
      expect(body).toMatchObject({
        userId: fx.owner,
        totals: { records: 1, durationSeconds: 3600, deviceHours: 1, chargesMinor: HOUR_PRICE, currency: "USD" },
        nextCursor: null,
      });
      expect(body.items).toEqual([
        expect.objectContaining({
          allocationId: fx.usageId,
          deviceId: fx.held,
          chargeMinor: HOUR_PRICE,
          currency: "USD",
          source: "external",
          allocatedAt: "2026-01-10T10:00:00.000Z",
        }),
      ]);
    },
  },
  {
    method: "GET",
    path: (fx) => `/metering/devices/${fx.held}?from=${JAN.from}&to=${JAN.to}`,
    scope: "admin",
    okStatus: 200,
    prepare: withUsage,
    verify: (fx, body) => {
      expect(body).toMatchObject({
        deviceId: fx.held,
        totals: { records: 1, durationSeconds: 3600, chargesMinor: HOUR_PRICE },
      });
      expect(body.items).toEqual([expect.objectContaining({ allocationId: fx.usageId, userId: fx.owner })]);
    },
  },
  {
    method: "PUT",
    path: (fx) => `/admin/billing/pricing-plans/${fx.planId}`,
    body: planBody,
    scope: "admin",
    okStatus: 200,
    verify: async (fx, body) => {
      expect(body).toMatchObject({ pricingPlanId: fx.planId, ...planBody() });
      expect(await rows("SELECT name FROM pricing_plans WHERE plan_id = ?", fx.planId)).toEqual([{ name: planBody().name }]);
    },
  },
  {
    method: "PATCH",
    path: (fx) => `/admin/billing/pricing-plans/${fx.planId}`,
    body: () => ({ cpuCoreMicrosPerSecond: 77 }),
    scope: "admin",
    okStatus: 200,
    prepare: withPlan,
    verify: async (fx, body) => {
      expect(body).toMatchObject({ pricingPlanId: fx.planId, ...planBody(), cpuCoreMicrosPerSecond: 77 });
      expect(await rows("SELECT cpu_core_per_second FROM pricing_plans WHERE plan_id = ?", fx.planId)).toEqual([
        { cpu_core_per_second: 77 },
      ]);
    },
  },
  {
    method: "PUT",
    path: (fx) => `/admin/billing/users/${fx.owner}/plan`,
    body: (fx) => ({ pricingPlanId: fx.planId }),
    scope: "admin",
    okStatus: 200,
    prepare: withPlan,
    verify: async (fx, body) => {
      BalanceView.strict().parse(body);
      expect(body).toMatchObject({
        userId: fx.owner,
        pricingPlanId: fx.planId,
        balanceMinor: STARTING_CREDIT,
        lowBalanceThresholdMinor: planBody().lowBalanceThresholdMinor,
      });
      expect((await account(fx.owner))?.plan_id).toBe(fx.planId);
    },
  },
  {
    method: "POST",
    path: (fx) => `/admin/billing/users/${fx.owner}/adjustments`,
    body: (fx) => ({ amountMinor: -100, adjustmentId: fx.adjustmentId, memo: "correction" }),
    scope: "admin",
    okStatus: 201,
    verify: async (fx, body) => {
      expect(body).toEqual({
        userId: fx.owner,
        adjustmentId: fx.adjustmentId,
        amountMinor: -100,
        balanceMinor: STARTING_CREDIT - 100,
        currency: "USD",
        duplicate: false,
      });
      expect((await account(fx.owner))?.balance).toBe(STARTING_CREDIT - 100);
    },
  },
  {
    method: "GET",
    path: () => "/admin/billing/failed-usage?status=failed&limit=200",
    scope: "admin",
    okStatus: 200,
    prepare: withDeadLetter,
    verify: (fx, body) => {
      const mine = body.items.find((i: { allocationId: string }) => i.allocationId === fx.deadLetter);
      expect(mine).toMatchObject({
        userId: fx.owner,
        status: "failed",
        attempts: 11,
        record: { allocationId: fx.deadLetter, userId: fx.owner },
      });
    },
  },
  {
    method: "POST",
    path: () => "/admin/billing/failed-usage/replay",
    body: (fx) => ({ allocationIds: [fx.deadLetter] }),
    scope: "admin",
    okStatus: 200,
    prepare: withDeadLetter,
    verify: async (fx, body) => {
      expect(body).toMatchObject({
        replayed: 1,
        failed: 0,
        results: [{ allocationId: fx.deadLetter, status: "recorded", amountMinor: HOUR_PRICE, currency: "USD" }],
      });
      expect(await rows("SELECT status FROM failed_usage WHERE allocation_id = ?", fx.deadLetter)).toEqual([{ status: "replayed" }]);
      expect(await rows("SELECT source FROM usage_records WHERE allocation_id = ?", fx.deadLetter)).toEqual([{ source: "replay" }]);
      expect((await account(fx.owner))?.balance).toBe(STARTING_CREDIT - HOUR_PRICE);
    },
  },
  {
    method: "POST",
    path: () => "/admin/billing/reconcile",
    body: (fx) => ({ userId: fx.owner }),
    scope: "admin",
    okStatus: 200,
    verify: (_fx, body) => {
      // The owner's one allocation is still active: nothing ended, nothing to heal, and the balance is the ledger's sum.
      expect(body).toMatchObject({
        users: 1,
        checked: 0,
        missingUsage: 0,
        missingCharges: 0,
        healed: 0,
        stillMissing: 0,
        balanceDrift: 0,
        differences: [],
      });
    },
  },
  {
    method: "POST",
    path: () => "/admin/billing/invoices/run",
    body: () => ({ period: RUN_PERIOD }),
    scope: "admin",
    okStatus: 200,
    prepare: (fx) => backdate(fx, RUN_PERIOD),
    verify: async (fx, body) => {
      expect(body).toMatchObject({ period: RUN_PERIOD, remaining: false });
      expect(body.created).toBeGreaterThanOrEqual(1);
      expect(await rows("SELECT credits, closing_balance FROM invoices WHERE invoice_id = ?", `inv_${RUN_PERIOD}_${fx.owner}`)).toEqual([
        { credits: STARTING_CREDIT, closing_balance: STARTING_CREDIT },
      ]);
    },
  },
  {
    method: "POST",
    path: () => "/api/internal/metering/device-usage",
    body: usageRecord,
    scope: "service",
    okStatus: 200,
    verify: async (fx, body) => {
      expect(body).toEqual({
        recorded: 1,
        duplicates: 0,
        failed: 0,
        results: [{ allocationId: fx.usageId, status: "recorded", amountMinor: HOUR_PRICE, currency: "USD" }],
      });
      expect(await rows("SELECT user_id, device_id, source FROM usage_records WHERE allocation_id = ?", fx.usageId)).toEqual([
        { user_id: fx.owner, device_id: fx.held, source: "external" },
      ]);
      expect((await account(fx.owner))?.balance).toBe(STARTING_CREDIT - HOUR_PRICE);
    },
  },
  {
    method: "POST",
    path: () => "/api/internal/events",
    scope: "service",
    okStatus: 202,
    body: (fx) => ({
      type: "app.installed",
      eventId: fx.usageId,
      data: { userId: fx.owner, appId: "com.example.chat", appName: "Chat", deviceId: fx.held, version: "1.0.0" },
    }),
    verify: async (fx, body) => {
      expect(body).toMatchObject({
        accepted: 1,
        duplicates: 0,
        failed: 0,
        results: [{ eventId: fx.usageId, userId: fx.owner, duplicate: false }],
      });
      const ev = await call("GET", `/scheduler/events?userId=${fx.owner}`, admin(fx));
      expect(
        ev.body.events
          .filter((e: { type: string }) => e.type === "app.installed")
          .map((e: { data: { deviceId: string } }) => e.data.deviceId),
      ).toEqual([fx.held]);
    },
  },
  {
    method: "GET",
    path: (fx) => `/admin/audit?target=device:${fx.held}&limit=5`,
    scope: "admin",
    okStatus: 200,
    verify: (fx, body) => {
      // The fixture's admin registered the device.
      expect(body.items.map((i: { action: string; actor: string }) => [i.action, i.actor])).toEqual([["device.register", "root-admin"]]);
      expect(body.nextCursor).toBeNull();
    },
  },
  {
    method: "POST",
    path: (fx) => `/admin/users/${fx.owner}/tokens/revoke`,
    body: () => ({}),
    scope: "admin",
    okStatus: 200,
    verify: async (fx, body) => {
      expect(body).toMatchObject({ userId: fx.owner, previous: null });
      const r = await call("GET", "/scheduler/allocations", { token: fx.ownerToken });
      expect(r.status).toBe(401);
      expect(r.body.error.code).toBe("TOKEN_REVOKED");
      expect((await call("GET", "/scheduler/allocations", { token: fx.otherToken })).status).toBe(200);
    },
  },
  {
    method: "GET",
    path: () => "/admin/events?since=0&limit=5",
    scope: "admin",
    okStatus: 200,
    verify: (_fx, body) => {
      expect(body).toMatchObject({ events: expect.any(Array), lastSeq: expect.any(Number) });
      expect(body.events.length).toBeLessThanOrEqual(5);
    },
  },
  {
    method: "GET",
    path: (fx) => `/api/internal/balance/user/${fx.owner}`,
    scope: "service",
    okStatus: 200,
    verify: (fx, body) => {
      BalanceView.strict().parse(body);
      expect(body).toMatchObject({ userId: fx.owner, balanceMinor: STARTING_CREDIT, pricingPlanId: "standard" });
    },
  },
];

/** What each caller should get on each kind of route (`unchanged`: a 2xx that must leave the state alone). */
function expected(route: RouteCase, kind: CallerKind): { status: number; code?: string; unchanged?: true } {
  switch (kind) {
    case "none":
      return route.scope === "public" ? { status: route.okStatus } : { status: 401, code: "UNAUTHORIZED" };
    case "bad":
      return { status: 401, code: "UNAUTHORIZED" };
    case "service":
      return route.scope === "service" || route.scope === "admin-or-service" || route.scope === "public"
        ? { status: route.okStatus }
        : { status: 403, code: "FORBIDDEN" };
    case "admin":
      return route.scope === "service" || route.scope === "holder-by-id" ? { status: 403, code: "FORBIDDEN" } : { status: route.okStatus };
    case "owner":
      return route.scope === "admin" || route.scope === "admin-or-service" || route.scope === "service"
        ? { status: 403, code: "FORBIDDEN" }
        : { status: route.okStatus };
    case "other":
      if (route.scope === "any-user") return { status: route.okStatus };
      if (route.scope === "owner-batch") return { status: route.okStatus, unchanged: true };
      if (route.scope === "owner-by-id" || route.scope === "holder-by-id") return { status: 404, code: route.notFoundCode };
      if (route.scope === "public") return { status: route.okStatus };
      return { status: 403, code: "FORBIDDEN" };
  }
}

const label = (r: RouteCase) =>
  `${r.method} ${r.path({
    pool: ":pool",
    owner: ":userId",
    held: ":id",
    free: ":id",
    allocationId: ":id",
    planId: ":planId",
    invoiceId: ":invoiceId",
    entryId: ":id",
    reservationId: ":id",
  } as Fixture)}`;

describe("auth matrix", () => {
  it("covers every route the app declares", async () => {
    const doc = (await call("GET", "/openapi.json")).body as { paths: Record<string, Record<string, unknown>> };
    // WebSocket upgrades (x-websocket) answer every plain HTTP caller 426; their tickets are tested in test/feed*.test.ts.
    const declared = Object.entries(doc.paths)
      .flatMap(([p, ops]) =>
        Object.entries(ops)
          .filter(([, op]) => !(op as Record<string, unknown>)["x-websocket"])
          .map(([m]) => `${m.toUpperCase()} ${p}`),
      )
      .sort();
    const norm = (s: string) => s.replace(/\?.*$/, "").replace(/\{[^}]+\}|:[A-Za-z]+/g, "{}");
    expect([...new Set(ROUTES.map((r) => norm(label(r))))].sort()).toEqual([...new Set(declared.map(norm))].sort());
  });

  for (const route of ROUTES) {
    describe(label(route), () => {
      const cells = CALLERS.map((caller) => ({ caller, want: expected(route, caller.kind) }));
      const title = ({ caller, want }: (typeof cells)[number]) => `${caller.name} → ${want.status}${want.code ? ` ${want.code}` : ""}`;
      const ask = async (fx: Fixture, { caller, want }: (typeof cells)[number]) => {
        const r = await call(route.method, route.path(fx), {
          headers: await caller.headers(fx),
          body: route.body?.(fx),
        });
        expect(r.status, JSON.stringify(r.body)).toBe(want.status);
        // Errors are always the JSON shape; a success may be another format (metrics: Prometheus text).
        expect(r.res.headers.get("content-type")).toMatch(
          want.status < 400 && route.contentType ? route.contentType : /^application\/json/,
        );
        if (want.status >= 400) expectErrorShape(r.body, want.code);
        else await route.verify(fx, r.body, caller.kind as "owner" | "admin" | "other" | "service");
      };

      // The refusals (and the 2xx that must leave the state alone) share one fixture: each changes
      // nothing, so together they change nothing, which the group's closing test checks.
      let shared: Fixture;
      const group = new Unchanged(
        () => snapshot(shared),
        async () => {
          shared = await fixture();
          await route.prepare?.(shared);
        },
      );
      const still = cells.filter(({ want }) => want.status >= 400 || want.unchanged);
      for (const cell of still) group.it(title(cell), () => ask(shared, cell));
      group.check(`the ${still.length} callers above changed nothing`);

      // Each success changes the state its own way: a fixture of its own.
      for (const cell of cells.filter((c) => !still.includes(c))) {
        it(title(cell), async () => {
          const fx = await fixture();
          await route.prepare?.(fx);
          await ask(fx, cell);
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
    const named = await call("POST", "/scheduler/devices/release", {
      token: fx.otherToken,
      body: { deviceId: fx.held, userId: fx.owner },
    });
    expect(named.status).toBe(403);
    expectErrorShape(named.body, "FORBIDDEN");
    const bare = await call("POST", "/scheduler/devices/release", {
      token: fx.otherToken,
      body: { deviceId: fx.held },
    });
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
      const e = await call("PUT", `/scheduler/allocations/${id}/extend`, {
        token: fx.otherToken,
        body: { additionalMinutes: 5 },
      });
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
    const r = await call("POST", "/scheduler/devices/allocate", {
      token: fx.otherToken,
      body: { userId: fx.owner, pool: fx.pool },
    });
    expect(r.status).toBe(403);
    expectErrorShape(r.body, "FORBIDDEN");
    expect(await snapshot(fx)).toEqual(before);
  });

  it("admin role checks come before body validation on quota writes (an owner learns nothing from a 400)", async () => {
    const fx = await fixture();
    const before = await snapshot(fx);
    for (const [method, path] of [
      ["PUT", `/quotas/user/${fx.owner}`],
      ["POST", `/quotas/renew/${fx.owner}`],
    ] as const) {
      for (const body of [{ bogus: true }, { tier: "enterprise" }, { extensionDays: -1 }, {}]) {
        const r = await call(method, path, { token: fx.ownerToken, body });
        expect(r.status, `${method} ${path} ${JSON.stringify(body)} → ${JSON.stringify(r.body)}`).toBe(403);
        expectErrorShape(r.body, "FORBIDDEN");
      }
    }
    expect(await snapshot(fx)).toEqual(before);
  });
  it("a user cannot read another user's invoice, and the answer is the same as for an invoice that does not exist", async () => {
    const fx = await fixture();
    await withInvoice(fx);
    const before = await snapshot(fx);
    for (const id of [fx.invoiceId, `inv_${INVOICE_PERIOD}_${fx.other}`, `inv_${INVOICE_PERIOD}_nobody-at-all`]) {
      const r = await call("GET", `/billing/invoices/${id}`, { token: fx.otherToken });
      expect(r.status, id).toBe(404);
      expectErrorShape(r.body, "INVOICE_NOT_FOUND");
      expect(r.body.error.message).toBe("No such invoice.");
    }
    expect(await snapshot(fx)).toEqual(before);
  });

  it("role checks come before body validation on billing writes (a refused caller learns nothing from a 400)", async () => {
    const fx = await fixture();
    const before = await snapshot(fx);
    const junk = [{ bogus: true }, {}, { amountMinor: -1, paymentId: "" }, { allocationIds: [], all: true }, { period: "2026-13" }];
    const probes: [string, string, Record<string, string>, number][] = [
      ["POST", `/billing/users/${fx.owner}/top-ups`, bearer(fx.ownerToken), 403],
      ["POST", `/billing/users/${fx.other}/top-ups`, bearer(fx.ownerToken), 403],
      ["POST", `/billing/users/${fx.owner}/top-ups`, {}, 401],
      ["PUT", `/admin/billing/pricing-plans/${fx.planId}`, bearer(fx.ownerToken), 403],
      ["PATCH", `/admin/billing/pricing-plans/${fx.planId}`, bearer(fx.ownerToken), 403],
      ["PUT", `/admin/billing/users/${fx.owner}/plan`, bearer(fx.ownerToken), 403],
      ["POST", `/admin/billing/users/${fx.owner}/adjustments`, bearer(fx.ownerToken), 403],
      ["POST", "/admin/billing/failed-usage/replay", { "X-Service-Token": SERVICE_TOKEN }, 403],
      ["POST", "/admin/billing/reconcile", { "X-Service-Token": SERVICE_TOKEN }, 403],
      ["POST", "/admin/billing/invoices/run", bearer(fx.ownerToken), 403],
      ["POST", "/api/internal/metering/device-usage", bearer(fx.adminToken), 403],
      ["POST", "/api/internal/metering/device-usage", bearer(fx.ownerToken), 403],
      ["POST", "/api/internal/metering/device-usage", {}, 401],
    ];
    for (const [method, path, headers, status] of probes) {
      for (const body of junk) {
        const r = await call(method, path, { headers, body });
        expect(r.status, `${method} ${path} ${JSON.stringify(body)} → ${JSON.stringify(r.body)}`).toBe(status);
        expectErrorShape(r.body, status === 401 ? "UNAUTHORIZED" : "FORBIDDEN");
      }
    }
    expect(await snapshot(fx)).toEqual(before);
  });

  it("the top-up gate cannot be dodged by spelling the path another way", async () => {
    const fx = await fixture();
    const before = await snapshot(fx);
    const body = { amountMinor: 100_000, paymentId: fx.paymentId };
    for (const path of [
      `/billing/users/${fx.owner}/top-ups/`,
      `/billing/users/${fx.owner}/top%2Dups`,
      `/billing/users/${fx.owner}/%74op-ups`,
      `/billing/users/${fx.owner}/TOP-UPS`,
      `/billing/users/${fx.owner}/./top-ups`,
      `/billing/users/x/../${fx.owner}/top-ups`,
      `/billing//users/${fx.owner}/top-ups`,
      `/billing/users/${fx.owner}/top-ups?x=1`,
    ]) {
      const r = await call("POST", path, { token: fx.ownerToken, body });
      expect(r.status, `${path} → ${r.status} ${JSON.stringify(r.body)}`).toBeGreaterThanOrEqual(400);
      expect(r.status, path).toBeLessThan(500);
      expectErrorShape(r.body);
    }
    expect(await snapshot(fx)).toEqual(before);
    expect((await account(fx.owner))?.balance).toBe(STARTING_CREDIT);
  });
});
