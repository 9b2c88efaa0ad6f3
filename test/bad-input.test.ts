/**
 * Invariant 7: bad input gets a 4xx with `{error: {code, message, details?}}`, never a 5xx,
 * and changes nothing.
 *
 * Table-driven hostile requests against every route with a body, params or query, each
 * followed by a full state comparison (the user's quota, allocations and event log, the
 * devices, the pool, which Durable Objects exist, and the billing tables in D1: usage
 * records, ledger, account balances, pricing plans, dead letters, invoices, notifications),
 * then property-based runs (fast-check) with arbitrary bodies, path ids and query strings.
 */
import { listDurableObjectIds } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { FLEET } from "../src/config";
import { periodOf } from "../src/domain/pricing";
import {
  AdjustmentBody,
  AllocatedResult,
  AllocationResult,
  AllocationView,
  DeviceView,
  InvoiceRunBody,
  PricingPlanBody,
  QuotaView,
  ReconcileBody,
  ReleaseResult,
  ReplayBody,
  TopUpBody,
  UsageOutcomeView,
  UsageReportBody,
  UserPricingPlanBody,
} from "../src/schemas";
import { SERVICE_TOKEN, call, deliverBatch, pricingPlanBody, registerDevice, tokenFor, uid, until, withoutGrant } from "./helpers";
import { Unchanged } from "./unchanged";
import { iso } from "../src/domain/time";

// ---- shared state ------------------------------------------------------------------------------

interface World {
  pool: string;
  user: string;
  other: string;
  userToken: string;
  otherToken: string;
  adminToken: string;
  held: string;
  free1: string;
  free2: string;
  allocationId: string;
  /** Billing state of the user's that bad input must leave alone (made in beforeAll). */
  paymentId: string;
  adjustmentId: string;
  usageId: string;
  deadLetter: string;
  invoiceId: string;
}
let W: World;

/** A month long past, in which the user's starting credit is booked, so it has an invoice. */
const INVOICE_PERIOD = "2002-01";
/** A usage record of the user's: one hour of a 2-core, 4 GB, 32 GB device in January 2026 (25 cents). */
const usage = (o: Record<string, unknown> = {}): Record<string, unknown> => ({
  allocationId: W.usageId,
  deviceId: W.held,
  userId: W.user,
  durationSeconds: 3600,
  cpuCores: 2,
  memoryMB: 4096,
  storageMB: 32768,
  allocatedAt: "2026-01-10T10:00:00Z",
  releasedAt: "2026-01-10T11:00:00Z",
  ...o,
});
const planBody = () => pricingPlanBody("Bad input plan");

const b64url = (s: string) => {
  const bytes = new TextEncoder().encode(s);
  return btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
};
const HEX24 = "0123456789abcdef01234567";
/** base64url of the bytes ff fe: not UTF-8. */
const INVALID_UTF8 = "__4";
const pct = (s: string) => [...new TextEncoder().encode(s)].map((b) => `%${b.toString(16).padStart(2, "0")}`).join("");

beforeAll(async () => {
  const pool = uid("bi-pool");
  const devs = [];
  for (let i = 0; i < 3; i++) devs.push(await registerDevice(pool, { deviceId: uid("bi-dev") }));
  const user = uid("bi-user");
  const other = uid("bi-other");
  const userToken = await tokenFor(user);
  const otherToken = await tokenFor(other);
  const adminToken = await tokenFor(uid("bi-admin"), "admin");
  const a = await call("POST", "/scheduler/devices/allocate", {
    token: userToken,
    body: { pool, durationMinutes: 240, idempotencyKey: "bi-key-1" },
  });
  expect(a.status, JSON.stringify(a.body)).toBe(201);
  expect((await call("GET", `/quotas/user/${other}`, { token: otherToken })).status).toBe(200);
  const free = devs.map((d) => d.deviceId).filter((d) => d !== a.body.deviceId);
  W = {
    pool,
    user,
    other,
    userToken,
    otherToken,
    adminToken,
    held: a.body.deviceId,
    free1: free[0]!,
    free2: free[1]!,
    allocationId: a.body.allocationId,
    paymentId: uid("bi-pay"),
    adjustmentId: uid("bi-adj"),
    usageId: uid("bi-usage"),
    deadLetter: uid("bi-dead"),
    invoiceId: `inv_${INVOICE_PERIOD}_${user}`,
  };
  await until(async () => {
    const s = await call("GET", `/admin/pools/${pool}`, { token: adminToken });
    return s.status === 200 && s.body.allocated === 1 && s.body.available === 2;
  });
  // Billing state. The other user's account is opened first, so the user's later ledger rows are newer than it.
  expect((await call("GET", `/billing/users/${other}/balance`, { token: otherToken })).body.balanceMinor).toBe(1000);
  const top = await call("POST", `/billing/users/${user}/top-ups`, {
    service: SERVICE_TOKEN,
    body: { amountMinor: 300, paymentId: W.paymentId, paymentMethod: "card" },
  });
  expect(top.status, JSON.stringify(top.body)).toBe(201);
  const adj = await call("POST", `/admin/billing/users/${user}/adjustments`, {
    token: adminToken,
    body: { amountMinor: -50, adjustmentId: W.adjustmentId, memo: "bi" },
  });
  expect(adj.status, JSON.stringify(adj.body)).toBe(201);
  const u = await call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body: usage() });
  expect(u.body, JSON.stringify(u.body)).toMatchObject({
    recorded: 1,
    results: [{ status: "recorded", amountMinor: 25, currency: "USD" }],
  });
  await env.DB.prepare("UPDATE ledger SET created_at = ? WHERE entry_id = ?")
    .bind(Date.parse(`${INVOICE_PERIOD}-15T00:00:00Z`), `starting_credit:${user}`)
    .run();
  const inv = await call("POST", "/admin/billing/invoices/run", {
    token: adminToken,
    body: { period: INVOICE_PERIOD },
  });
  expect(inv.body, JSON.stringify(inv.body)).toMatchObject({ created: 1 });
  const dead = {
    ...usage({ allocationId: W.deadLetter }),
    allocatedAt: Date.parse("2026-01-10T10:00:00Z"),
    releasedAt: Date.parse("2026-01-10T11:00:00Z"),
    reason: "released",
  };
  expect((await deliverBatch("device-usage-dlq", [dead], 11)).explicitAcks).toEqual(["m0"]);
  expect((await call("GET", `/billing/users/${user}/balance`, { token: userToken })).body.balanceMinor).toBe(1000 + 300 - 50 - 25);
});

async function objectIds() {
  const ids = (list: DurableObjectId[]) => list.map((i) => i.toString()).sort();
  const [userQuota, device, pool, adminFeed] = await Promise.all([
    listDurableObjectIds(env.USER_QUOTA),
    listDurableObjectIds(env.DEVICE),
    listDurableObjectIds(env.DEVICE_POOL),
    listDurableObjectIds(env.ADMIN_FEED),
  ]);
  return { userQuota: ids(userQuota), device: ids(device), pool: ids(pool), adminFeed: ids(adminFeed) };
}

/** Counts, sums and rows of every billing table in D1 (one batch, so the tables are read at one instant). */
async function d1Snapshot() {
  const queries = {
    usage:
      "SELECT COUNT(*) AS n, COALESCE(SUM(duration_seconds), 0) AS seconds, COALESCE(SUM(cpu_cores + memory_mb + storage_mb), 0) " +
      "AS spec FROM usage_records",
    ledger: "SELECT COUNT(*) AS n, COALESCE(SUM(amount), 0) AS total, COALESCE(MAX(seq), 0) AS last FROM ledger",
    accounts: "SELECT user_id, plan_id, balance, last_seq, reconciled_through, updated_at FROM accounts ORDER BY user_id",
    plans: "SELECT * FROM pricing_plans ORDER BY plan_id",
    failedUsage: "SELECT allocation_id, status, attempts, error, last_failed_at, resolved_at FROM failed_usage ORDER BY allocation_id",
    invoices: "SELECT invoice_id, user_id, period, closing_balance FROM invoices ORDER BY invoice_id",
    notifications: "SELECT COUNT(*) AS n FROM notifications",
    // Bad input leaves no audit row and revokes nobody's tokens.
    audit: "SELECT COUNT(*) AS n, COALESCE(MAX(seq), 0) AS last FROM audit_log",
    revocations: "SELECT * FROM token_revocations ORDER BY user_id",
  };
  const results = await env.DB.batch(Object.values(queries).map((q) => env.DB.prepare(q)));
  return Object.fromEntries(Object.keys(queries).map((k, i) => [k, results[i]!.results]));
}

/** The two users' own billing rows (stable through the whole file: nothing of theirs is booked after beforeAll). */
async function usersBilling() {
  const queries = {
    accounts: "SELECT * FROM accounts WHERE user_id IN (?, ?) ORDER BY user_id",
    ledger: "SELECT * FROM ledger WHERE user_id IN (?, ?) ORDER BY seq",
    usage: "SELECT * FROM usage_records WHERE user_id IN (?, ?) ORDER BY allocation_id",
    invoices: "SELECT * FROM invoices WHERE user_id IN (?, ?) ORDER BY invoice_id",
    failedUsage: "SELECT * FROM failed_usage WHERE user_id IN (?, ?) ORDER BY allocation_id",
    notifications: "SELECT key, type, data FROM notifications WHERE user_id IN (?, ?) ORDER BY key",
  };
  const results = await env.DB.batch(Object.values(queries).map((q) => env.DB.prepare(q).bind(W.user, W.other)));
  return Object.fromEntries(Object.keys(queries).map((k, i) => [k, results[i]!.results]));
}

/** Everything bad input must leave alone, read as an admin. */
async function snapshot() {
  const get = async (path: string) => {
    const r = await call("GET", path, { token: W.adminToken });
    return { status: r.status, body: r.body };
  };
  const reads = {
    quota: `/quotas/user/${W.user}`,
    allocations: `/scheduler/allocations?userId=${W.user}`,
    events: `/scheduler/events?userId=${W.user}`,
    otherQuota: `/quotas/user/${W.other}`,
    otherAllocations: `/scheduler/allocations?userId=${W.other}`,
    held: `/admin/devices/${W.held}`,
    free1: `/admin/devices/${W.free1}`,
    free2: `/admin/devices/${W.free2}`,
    history: `/admin/devices/${W.held}/history`,
    pool: `/admin/pools/${W.pool}`,
    poolDevices: `/admin/pools/${W.pool}/devices`,
    pools: "/admin/pools",
    queue: `/scheduler/queue?pool=${W.pool}`,
    reservations: `/scheduler/reservations?pool=${W.pool}`,
  };
  const entries = await Promise.all(Object.entries(reads).map(async ([k, path]) => [k, await get(path)] as const));
  return { ...Object.fromEntries(entries), billing: await usersBilling() };
}

function expectErrorShape(body: unknown, ctx = "") {
  expect(body, ctx).toMatchObject({ error: { code: expect.any(String), message: expect.any(String) } });
  expect(Object.keys(body as object), ctx).toEqual(["error"]);
  const keys = Object.keys((body as { error: object }).error)
    .sort()
    .join(",");
  expect(["code,message", "code,details,message"], ctx).toContain(keys);
  expect((body as { error: { code: string } }).error.code, ctx).toMatch(/^[A-Z][A-Z_]+$/);
}

/** Not a 5xx; a 4xx has the one error shape. */
function expectNo5xx(r: { status: number; body: unknown; res: Response }, ctx: string) {
  expect(r.status, `${ctx} → ${r.status} ${JSON.stringify(r.body)}`).toBeLessThan(500);
  expect(r.status, ctx).toBeGreaterThanOrEqual(200);
  expect(r.res.headers.get("content-type"), ctx).toMatch(/^application\/json/);
  if (r.status >= 400) expectErrorShape(r.body, `${ctx} → ${JSON.stringify(r.body)}`);
}

// ---- the table -----------------------------------------------------------------------------------

type As = "user" | "other" | "admin" | "none" | "service";
interface Case {
  name: string;
  method: string;
  path: () => string;
  as: As;
  body?: () => unknown;
  raw?: () => BodyInit;
  headers?: Record<string, string>;
  /** Exact status, if the case pins one. */
  status?: number;
  code?: string | string[];
  /** No Durable Object may be created either (true for anything refused before it reaches an object). */
  objects?: boolean;
}

const tokenOf = (as: As) => ({ user: W.userToken, other: W.otherToken, admin: W.adminToken, none: null, service: null })[as];
const JSON_CT = { "Content-Type": "application/json" };

const BAD_IDS: [string, string][] = [
  ["empty", ""],
  ["129 chars", "x".repeat(129)],
  ["1000 chars", "d".repeat(1000)],
  ["slash", "a/b"],
  ["dot-dot", "../etc"],
  ["leading dash", "-x"],
  ["space", "a b"],
  ["unicode", "dév"],
  ["emoji", "📱"],
  ["NUL", "a\u0000b"],
  ["newline", "a\nb"],
  ["RTL override", "a\u202eb"],
];
const BAD_ID_VALUES: unknown[] = [...BAD_IDS.map(([, v]) => v), 5, null, true, [], {}, ["a"]];

const BAD_DURATIONS: unknown[] = [0, 1441, -1, 1.5, "60", "NaN", "Infinity", "", null, true, [], {}, 1e308, 2 ** 53, -(2 ** 53), 0.0001];
const BAD_RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "9007199254740993", "0x10", "01", "+5", ".5", "5."];

/** Bad values for one field, merged into an otherwise valid body. */
function fieldCases(
  route: Omit<Case, "name" | "body">,
  base: () => Record<string, unknown>,
  field: string,
  values: unknown[],
  code = "VALIDATION_FAILED",
): Case[] {
  return values.map((v) => ({
    ...route,
    name: `${field}=${JSON.stringify(v)?.slice(0, 40)}`,
    body: () => ({ ...base(), [field]: v }),
    status: 400,
    code,
    objects: true,
  }));
}
function rawFieldCases(route: Omit<Case, "name" | "body">, base: () => Record<string, unknown>, field: string, raws: string[]): Case[] {
  return raws.map((n) => ({
    ...route,
    name: `${field}: raw ${n}`,
    raw: () => JSON.stringify({ ...base(), [field]: "__N__" }).replace('"__N__"', n),
    headers: JSON_CT,
    status: 400,
    code: ["INVALID_JSON", "VALIDATION_FAILED"],
    objects: true,
  }));
}
function missingCases(route: Omit<Case, "name" | "body">, base: () => Record<string, unknown>, fields: string[]): Case[] {
  return fields.map((f) => ({
    ...route,
    name: `missing ${f}`,
    body: () => {
      const b = { ...base() };
      delete b[f];
      return b;
    },
    status: 400,
    code: "VALIDATION_FAILED",
    objects: true,
  }));
}

/** Every route with a body, with a valid body (never sent as is) to break. */
interface BodyRoute {
  label: string;
  method: string;
  path: () => string;
  as: As;
  base: () => Record<string, unknown>;
  /** The route's body limit when not the 64 KiB of every other (the fleet's bulk import). */
  maxBody?: number;
}
const BODY_ROUTES: BodyRoute[] = [
  {
    label: "allocate",
    method: "POST",
    path: () => "/scheduler/devices/allocate",
    as: "user",
    base: () => ({ pool: W.pool, durationMinutes: 5 }),
  },
  {
    label: "release",
    method: "POST",
    path: () => "/scheduler/devices/release",
    as: "user",
    base: () => ({ deviceId: W.held }),
  },
  {
    label: "extend",
    method: "PUT",
    path: () => `/scheduler/allocations/${W.allocationId}/extend`,
    as: "user",
    base: () => ({ additionalMinutes: 5 }),
  },
  {
    label: "quota update",
    method: "PUT",
    path: () => `/quotas/user/${W.user}`,
    as: "admin",
    base: () => ({ tier: "pro" }),
  },
  {
    label: "quota renew",
    method: "POST",
    path: () => `/quotas/renew/${W.user}`,
    as: "admin",
    base: () => ({ extensionDays: 5 }),
  },
  {
    label: "register device",
    method: "POST",
    path: () => "/admin/devices",
    as: "admin",
    base: () => ({ deviceId: "bi-never-registered", pool: W.pool, cpuCores: 1, memoryMB: 1, storageMB: 1 }),
  },
  {
    label: "update device",
    method: "PATCH",
    path: () => `/admin/devices/${W.free1}`,
    as: "admin",
    base: () => ({ node: "bi-node-x" }),
  },
  {
    label: "bulk devices",
    method: "POST",
    path: () => "/admin/devices/bulk",
    as: "admin",
    base: () => ({ devices: [{ deviceId: "bi-bulk-never", pool: W.pool, cpuCores: 1, memoryMB: 1, storageMB: 1 }] }),
    maxBody: FLEET.bulkMaxBodyBytes,
  },
  {
    label: "pool strategy",
    method: "PUT",
    path: () => `/admin/pools/${W.pool}`,
    as: "admin",
    base: () => ({ strategy: "spread" }),
  },
  {
    label: "top-up",
    method: "POST",
    path: () => `/billing/users/${W.user}/top-ups`,
    as: "admin",
    base: () => ({ amountMinor: 100, paymentId: "bi-never-paid", paymentMethod: "card" }),
  },
  {
    label: "pricing plan",
    method: "PUT",
    path: () => "/admin/billing/pricing-plans/bi-never-plan",
    as: "admin",
    base: planBody,
  },
  {
    label: "account plan",
    method: "PUT",
    path: () => `/admin/billing/users/${W.user}/plan`,
    as: "admin",
    base: () => ({ pricingPlanId: "bi-never-plan" }),
  },
  {
    label: "adjustment",
    method: "POST",
    path: () => `/admin/billing/users/${W.user}/adjustments`,
    as: "admin",
    base: () => ({ amountMinor: -5, adjustmentId: "bi-never-adj", memo: "x" }),
  },
  {
    label: "dead-letter replay",
    method: "POST",
    path: () => "/admin/billing/failed-usage/replay",
    as: "admin",
    base: () => ({ allocationIds: [W.deadLetter] }),
  },
  {
    label: "reconcile",
    method: "POST",
    path: () => "/admin/billing/reconcile",
    as: "admin",
    base: () => ({ userId: W.user, heal: true }),
  },
  {
    label: "invoice run",
    method: "POST",
    path: () => "/admin/billing/invoices/run",
    as: "admin",
    base: () => ({ period: "2002-02" }),
  },
  {
    label: "revoke tokens",
    method: "POST",
    path: () => `/admin/users/${W.user}/tokens/revoke`,
    as: "admin",
    base: () => ({ before: "2002-01-01T00:00:00Z" }),
  },
  {
    label: "internal usage",
    method: "POST",
    path: () => "/api/internal/metering/device-usage",
    as: "service",
    base: () => usage({ allocationId: "bi-never-used" }),
  },
  {
    label: "feed ticket",
    method: "POST",
    path: () => "/ws/ticket",
    as: "user",
    base: () => ({ feed: "device", deviceId: W.held }),
  },
  {
    label: "queue join",
    method: "POST",
    path: () => "/scheduler/queue/join",
    as: "user",
    base: () => ({ pool: W.pool, durationMinutes: 5 }),
  },
  {
    label: "reserve",
    method: "POST",
    path: () => "/scheduler/reservations",
    as: "user",
    base: () => ({ pool: W.pool, startAt: iso(Date.now() + 3_600_000), durationMinutes: 30 }),
  },
  {
    label: "reservation check",
    method: "POST",
    path: () => "/scheduler/reservations/check",
    as: "user",
    base: () => ({ pool: W.pool, startAt: iso(Date.now() + 3_600_000), durationMinutes: 30 }),
  },
  {
    label: "app event",
    method: "POST",
    path: () => "/api/internal/events",
    as: "service",
    base: () => ({
      type: "app.updated",
      eventId: "bi-never-sent",
      data: { userId: W.user, appId: "a", appName: "A", deviceId: W.held, oldVersion: "1", newVersion: "2" },
    }),
  },
];

const JUNK_JSON = [
  "{",
  "nul",
  "[]",
  '"str"',
  "null",
  "1",
  "true",
  "",
  " ",
  '{"a":}',
  "{}}",
  "{'a':1}",
  "\u0000",
  "[".repeat(5000),
  '{"a":1,}',
  "undefined",
  '{"a":1}{"b":2}',
];

function genericBodyCases(r: BodyRoute): Case[] {
  const route = { method: r.method, path: r.path, as: r.as };
  const out: Case[] = [];
  for (const j of JUNK_JSON)
    out.push({
      ...route,
      name: `junk JSON ${JSON.stringify(j.slice(0, 12))}`,
      raw: () => j,
      headers: JSON_CT,
      status: 400,
      code: ["INVALID_JSON", "VALIDATION_FAILED"],
      objects: true,
    });
  out.push({
    ...route,
    name: "unknown extra field",
    body: () => ({ ...r.base(), extra: 1 }),
    status: 400,
    code: "VALIDATION_FAILED",
    objects: true,
  });
  out.push({
    ...route,
    name: "__proto__ key",
    raw: () => JSON.stringify(r.base()).replace(/^\{/, '{"__proto__":{"admin":true},'),
    headers: JSON_CT,
    status: 400,
    code: "VALIDATION_FAILED",
    objects: true,
  });
  out.push({
    ...route,
    name: "constructor key",
    body: () => ({ ...r.base(), constructor: { prototype: 1 } }),
    status: 400,
    code: "VALIDATION_FAILED",
    objects: true,
  });
  for (const [ct, name] of [
    ["text/plain", "text/plain"],
    ["application/x-www-form-urlencoded", "form"],
    ["multipart/form-data; boundary=x", "multipart"],
    ["application/xml", "xml"],
    ["json", "bare json"],
  ] as const)
    out.push({
      ...route,
      name: `Content-Type ${name} with a JSON body`,
      raw: () => JSON.stringify(r.base()),
      headers: { "Content-Type": ct },
      status: 415,
      code: "UNSUPPORTED_MEDIA_TYPE",
      objects: true,
    });
  out.push({
    ...route,
    name: "no Content-Type with a JSON body",
    raw: () => JSON.stringify(r.base()),
    status: 415,
    code: "UNSUPPORTED_MEDIA_TYPE",
    objects: true,
  });
  out.push({
    ...route,
    name: "body > 64 KiB",
    body: () => ({ ...r.base(), pad: "a".repeat(r.maxBody ?? 64 * 1024) }),
    status: 413,
    code: "PAYLOAD_TOO_LARGE",
    objects: true,
  });
  out.push({
    ...route,
    name: "1 MiB body",
    raw: () => `{"pad":"${"b".repeat(1024 * 1024)}"}`,
    headers: JSON_CT,
    status: 413,
    code: "PAYLOAD_TOO_LARGE",
    objects: true,
  });
  out.push({
    ...route,
    name: "streamed body > 64 KiB (no Content-Length)",
    raw: () => {
      const chunk = new TextEncoder().encode(`{"pad":"${"c".repeat((r.maxBody ?? 64 * 1024) + 16 * 1024)}"}`);
      return new ReadableStream({
        start(c) {
          c.enqueue(chunk);
          c.close();
        },
      });
    },
    headers: JSON_CT,
    status: 413,
    code: "PAYLOAD_TOO_LARGE",
    objects: true,
  });
  return out;
}

/** Garbage or forged allocation ids: never anyone's allocation, and the answer does not say whose. */
function allocationIdCases(): [string, () => string, number][] {
  return [
    ["garbage", () => "garbage", 404],
    ["alc_ only", () => "alc_", 404],
    ["empty user part", () => `alc__${HEX24}`, 404],
    ["forged for the other user", () => `alc_${b64url(W.other)}_${HEX24}`, 404],
    ["forged for a user that does not exist", () => `alc_${b64url("nobody-at-all")}_${HEX24}`, 404],
    ["forged for self, unknown", () => `alc_${b64url(W.user)}_${HEX24}`, 404],
    ["real id with upper-case hex", () => W.allocationId.toUpperCase(), 404],
    ["real id + 1 char", () => `${W.allocationId}0`, 404],
    ["real id, wrong user part", () => W.allocationId.replace(/^alc_[^_]+/, `alc_${b64url(W.other)}`), 404],
    ["non-hex tail", () => `alc_${b64url(W.user)}_${"g".repeat(24)}`, 404],
    ["base64 padding", () => `alc_${btoa(W.user)}_${HEX24}`, 404],
    ["user part decodes to invalid UTF-8", () => `alc_${INVALID_UTF8}_${HEX24}`, 404],
    ["user part decodes to a slash path", () => `alc_${b64url("../x/y")}_${HEX24}`, 404],
    ["user part decodes to NUL", () => `alc_${b64url("\u0000")}_${HEX24}`, 404],
    ["encoded slash", () => pct("a/b"), 404],
    ["unicode", () => pct("alc_é"), 404],
    ["control chars", () => pct("\u0001\u0002"), 404],
    ["malformed percent escape", () => "%E0%A4%A", 404],
    ["401 chars", () => "a".repeat(401), 400],
    ["4000 chars", () => "a".repeat(4000), 400],
  ];
}

const BAD_META_TEXT: unknown[] = ["", " lead", "trail ", "x".repeat(101), "tab\there", "\u0007", 5, [], {}];
const BAD_LABELS: unknown[] = [
  "x",
  [],
  5,
  { "bad key": "v" },
  { "-k": "v" },
  { ["k".repeat(64)]: "v" },
  { k: "" },
  { k: "with space" },
  { k: "v".repeat(129) },
  { k: 1 },
  { k: null },
  Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`k${i}`, "v"])),
];

function buildCases(): [string, Case[]][] {
  const groups: [string, Case[]][] = [];
  for (const r of BODY_ROUTES) groups.push([`${r.label}: malformed bodies`, genericBodyCases(r)]);

  const alloc = { method: "POST", path: () => "/scheduler/devices/allocate", as: "user" as As };
  const allocBase = () => ({ pool: W.pool, durationMinutes: 5 });
  groups.push([
    "allocate: fields",
    [
      ...fieldCases(alloc, allocBase, "durationMinutes", BAD_DURATIONS),
      ...rawFieldCases(alloc, allocBase, "durationMinutes", BAD_RAW_NUMBERS),
      ...fieldCases(alloc, allocBase, "durationSeconds", [0, -5, 1.5, "10", 86_401, null, 1e308]),
      ...fieldCases(alloc, allocBase, "pool", BAD_ID_VALUES),
      ...fieldCases(alloc, allocBase, "userId", BAD_ID_VALUES),
      ...fieldCases(alloc, allocBase, "spec", [
        "big",
        [],
        null,
        5,
        { cpuCores: -1 },
        { cpuCores: 1.5 },
        { cpuCores: 1025 },
        { cpuCores: "2" },
        { gpu: 1 },
        { memoryMB: 1e308 },
        { storageMB: -0.5 },
      ]),
      ...fieldCases(alloc, allocBase, "idempotencyKey", ["", "k".repeat(201), 5, null, [], {}]),
      // Valid by schema, refused by the service: still nothing changes.
      {
        ...alloc,
        name: "pool that does not exist",
        body: () => ({ pool: uid("bi-nopool"), durationMinutes: 5 }),
        status: 404,
        code: "POOL_NOT_FOUND",
      },
      {
        ...alloc,
        name: "spec above the plan's per-device limit",
        body: () => ({ pool: W.pool, spec: { cpuCores: 1024 } }),
        status: 409,
        code: "QUOTA_PER_DEVICE_EXCEEDED",
      },
      {
        ...alloc,
        name: "spec no device of the pool has",
        body: () => ({ pool: W.pool, spec: { cpuCores: 3 } }),
        status: 409,
        code: "NO_DEVICE_AVAILABLE",
      },
      {
        ...alloc,
        name: "idempotency key reused with other parameters",
        body: () => ({ pool: W.pool, durationMinutes: 7, idempotencyKey: "bi-key-1" }),
        status: 409,
        code: "IDEMPOTENCY_KEY_REUSED",
      },
      {
        ...alloc,
        name: "admin-only userId naming another user",
        body: () => ({ ...allocBase(), userId: W.other }),
        status: 403,
        code: "FORBIDDEN",
        objects: true,
      },
    ],
  ]);

  const rel = { method: "POST", path: () => "/scheduler/devices/release", as: "user" as As };
  const relBase = () => ({ deviceId: W.held });
  groups.push([
    "release: fields",
    [
      ...missingCases(rel, relBase, ["deviceId"]),
      ...fieldCases(rel, relBase, "deviceId", BAD_ID_VALUES),
      ...fieldCases(rel, relBase, "userId", BAD_ID_VALUES),
      { ...rel, name: "a free device", body: () => ({ deviceId: W.free1 }), status: 404, code: "ALLOCATION_NOT_FOUND" },
      {
        ...rel,
        name: "a device that does not exist",
        body: () => ({ deviceId: "bi-no-such-device" }),
        status: 404,
        code: "ALLOCATION_NOT_FOUND",
      },
      // Not the holder: told "not found", and the holder keeps the device.
      {
        ...rel,
        as: "other",
        name: "the holder's device, by another user",
        body: () => ({ deviceId: W.held }),
        status: 404,
        code: "ALLOCATION_NOT_FOUND",
      },
      {
        ...rel,
        as: "other",
        name: "the holder's device, by another user naming the holder",
        body: () => ({ deviceId: W.held, userId: W.user }),
        status: 403,
        code: "FORBIDDEN",
        objects: true,
      },
    ],
  ]);

  const ext = { method: "PUT", path: () => `/scheduler/allocations/${W.allocationId}/extend`, as: "user" as As };
  const extBase = () => ({ additionalMinutes: 5 });
  groups.push([
    "extend: fields",
    [
      ...missingCases(ext, extBase, ["additionalMinutes"]),
      ...fieldCases(ext, extBase, "additionalMinutes", BAD_DURATIONS),
      ...rawFieldCases(ext, extBase, "additionalMinutes", BAD_RAW_NUMBERS),
      {
        ...ext,
        name: "more minutes than the free plan allows per extend",
        body: () => ({ additionalMinutes: 31 }),
        status: 409,
        code: "EXTEND_TOO_LONG",
      },
      {
        ...ext,
        as: "other",
        name: "the holder's allocation, by another user",
        body: extBase,
        status: 404,
        code: "ALLOCATION_NOT_FOUND",
        objects: true,
      },
      ...allocationIdCases().map(([name, id, status]): Case => ({
        method: "PUT",
        path: () => `/scheduler/allocations/${id()}/extend`,
        as: "user",
        name: `allocation id: ${name}`,
        body: extBase,
        status,
        code: status === 404 ? "ALLOCATION_NOT_FOUND" : "VALIDATION_FAILED",
        objects: true,
      })),
    ],
  ]);

  groups.push([
    "get allocation: ids",
    [
      ...allocationIdCases().map(([name, id, status]): Case => ({
        method: "GET",
        path: () => `/scheduler/allocations/${id()}`,
        as: "user",
        name: `as user: ${name}`,
        status,
        code: status === 404 ? "ALLOCATION_NOT_FOUND" : "VALIDATION_FAILED",
        objects: true,
      })),
      // Admins may read anyone's allocation, so a forged id naming a user that cannot exist must still not reach an object.
      ...[
        ["invalid UTF-8", INVALID_UTF8],
        ["slash path", b64url("../x/y")],
        ["NUL", b64url("\u0000")],
        ["unicode", b64url("é/x")],
        ["129 chars", b64url("u".repeat(129))],
      ].map(([name, part]): Case => ({
        method: "GET",
        path: () => `/scheduler/allocations/alc_${part}_${HEX24}`,
        as: "admin",
        name: `as admin, forged for a user id that cannot exist: ${name}`,
        status: 404,
        code: "ALLOCATION_NOT_FOUND",
        objects: true,
      })),
    ],
  ]);

  const q = (
    method: string,
    path: () => string,
    as: As,
    name: string,
    status = 400,
    code: string | string[] = "VALIDATION_FAILED",
    objects = true,
  ): Case => ({ method, path, as, name, status, code, objects });
  const qs = (base: () => string, as: As, params: string[]) =>
    params.map((p) => q("GET", () => `${base()}${base().includes("?") ? "&" : "?"}${p}`, as, p));
  const base = (s: string) => () => s;
  groups.push([
    "list allocations: query",
    qs(base("/scheduler/allocations"), "user", [
      "limit=0",
      "limit=201",
      "limit=10000",
      "limit=-1",
      "limit=1.5",
      "limit=abc",
      "limit=",
      "limit=1e3",
      "limit=1&limit=2",
      "limit=Infinity",
      "status=bogus",
      "status=ACTIVE",
      "status=",
      "status=aborted",
      "cursor=garbage",
      "cursor=1.",
      "cursor=.5",
      "cursor=",
      `cursor=${"1".repeat(290)}.${"x".repeat(20)}`,
      "cursor=-1.x",
      "cursor=abc.def",
      `userId=${pct("a/b")}`,
      "userId=",
      `userId=${"u".repeat(129)}`,
      `userId=${pct("é")}`,
      "userId=%E0%A4%A",
      "extra=1",
      "userid=x",
      "limit=10&foo=bar",
    ]),
  ]);
  groups.push([
    "available devices: query",
    [
      ...qs(base("/scheduler/devices/available"), "user", [
        `pool=${pct("a/b")}`,
        "pool=",
        `pool=${"p".repeat(129)}`,
        `cursor=${pct("a/b")}`,
        "limit=0",
        "limit=201",
        "limit=x",
        "extra=1",
        "status=allocated",
      ]),
      q(
        "GET",
        () => `/scheduler/devices/available?pool=${uid("bi-nopool")}`,
        "user",
        "pool that does not exist",
        404,
        "POOL_NOT_FOUND",
        false,
      ),
    ],
  ]);
  groups.push([
    "events: query",
    qs(base("/scheduler/events"), "user", [
      "since=-1",
      "since=abc",
      "since=1.5",
      "since=1e20",
      "since=99999999999999999999",
      "limit=0",
      "limit=10000",
      "limit=-5",
      `userId=${pct("a/b")}`,
      `userId=${pct("\u0000")}`,
      "extra=1",
      "since=1&since=2",
    ]),
  ]);
  groups.push([
    "events: another user's log",
    [q("GET", () => `/scheduler/events?userId=${W.other}`, "user", "userId=other", 403, "FORBIDDEN")],
  ]);

  // Path ids of every id route.
  const idRoutes: [string, string, (id: string) => string, As, (() => unknown) | undefined][] = [
    ["GET", "quota", (id) => `/quotas/user/${id}`, "admin", undefined],
    ["PUT", "quota update", (id) => `/quotas/user/${id}`, "admin", () => ({ tier: "pro" })],
    ["POST", "quota renew", (id) => `/quotas/renew/${id}`, "admin", () => ({ extensionDays: 1 })],
    ["GET", "device", (id) => `/admin/devices/${id}`, "admin", undefined],
    ["PATCH", "device update", (id) => `/admin/devices/${id}`, "admin", () => ({ node: "n-9" })],
    ["DELETE", "device remove", (id) => `/admin/devices/${id}`, "admin", undefined],
    ["POST", "maintenance", (id) => `/admin/devices/${id}/maintenance`, "admin", undefined],
    ["POST", "offline", (id) => `/admin/devices/${id}/offline`, "admin", undefined],
    ["POST", "online", (id) => `/admin/devices/${id}/online`, "admin", undefined],
    ["POST", "force-release", (id) => `/admin/devices/${id}/force-release`, "admin", undefined],
    ["GET", "device history", (id) => `/admin/devices/${id}/history`, "admin", undefined],
    ["GET", "pool", (id) => `/admin/pools/${id}`, "admin", undefined],
    ["PUT", "pool strategy", (id) => `/admin/pools/${id}`, "admin", () => ({ strategy: "spread" })],
    ["GET", "pool devices", (id) => `/admin/pools/${id}/devices`, "admin", undefined],
  ];
  for (const [method, label, path, as, body] of idRoutes) {
    const cases: Case[] = BAD_IDS.filter(([n]) => n !== "empty").map(([n, v]) => ({
      method,
      path: () => path(pct(v)),
      as,
      body,
      name: `id ${n}`,
      status: 400,
      code: "VALIDATION_FAILED",
      objects: true,
    }));
    cases.push({
      method,
      path: () => path("%E0%A4%A"),
      as,
      body,
      name: "id with a malformed percent escape",
      status: 400,
      code: "VALIDATION_FAILED",
      objects: true,
    });
    cases.push({
      method,
      path: () => path("bi-unknown-id"),
      as,
      body,
      name: "a valid id that names nothing",
      objects: false,
      status: label.startsWith("quota") ? 200 : 404,
    });
    groups.push([`${label}: path id`, label.startsWith("quota") ? cases.filter((c) => c.status !== 200) : cases]);
  }

  // Queue entry and reservation ids: garbage or forged ones name nothing (ids do not leak).
  const HEX = HEX24;
  for (const [method, label, path, code] of [
    ["GET", "queue entry", (id: string) => `/scheduler/queue/${id}`, "QUEUE_ENTRY_NOT_FOUND"],
    ["GET", "queue position", (id: string) => `/scheduler/queue/${id}/position`, "QUEUE_ENTRY_NOT_FOUND"],
    ["DELETE", "queue cancel", (id: string) => `/scheduler/queue/${id}`, "QUEUE_ENTRY_NOT_FOUND"],
    ["GET", "reservation", (id: string) => `/scheduler/reservations/${id}`, "RESERVATION_NOT_FOUND"],
    ["DELETE", "reservation cancel", (id: string) => `/scheduler/reservations/${id}`, "RESERVATION_NOT_FOUND"],
  ] as const) {
    const prefix = label.startsWith("queue") ? "que" : "rsv";
    const ids: [string, () => string][] = [
      ["garbage", () => "garbage"],
      ["prefix only", () => `${prefix}_`],
      ["forged in the user's pool", () => `${prefix}_${b64url(W.pool)}_${HEX}`],
      ["the other kind's prefix", () => `${prefix === "que" ? "rsv" : "que"}_${b64url(W.pool)}_${HEX}`],
      ["pool part decodes to a slash path", () => `${prefix}_${b64url("../x")}_${HEX}`],
      ["pool part decodes to invalid UTF-8", () => `${prefix}_${INVALID_UTF8}_${HEX}`],
      ["an allocation id", () => W.allocationId],
      ["encoded slash", () => pct("a/b")],
      ["malformed percent escape", () => "%E0%A4%A"],
    ];
    const cases: Case[] = ids.map(([n, id]) => ({
      method,
      path: () => path(id()),
      as: "user",
      name: `id ${n}`,
      status: 404,
      code,
      objects: !n.startsWith("forged"),
    }));
    cases.push({
      method,
      path: () => path("a".repeat(401)),
      as: "user",
      name: "id of 401 chars",
      status: 400,
      code: "VALIDATION_FAILED",
      objects: true,
    });
    groups.push([`${label}: path id`, cases]);
  }
  const qj = { method: "POST", path: () => "/scheduler/queue/join", as: "user" as As };
  const qjBase = () => ({ pool: W.pool, durationMinutes: 5 });
  groups.push([
    "queue join: fields",
    [
      ...fieldCases(qj, qjBase, "durationMinutes", BAD_DURATIONS),
      ...fieldCases(qj, qjBase, "priority", [4, -1, 1.5, "1", null, true, []]),
      ...fieldCases(qj, qjBase, "maxWaitMinutes", [0, 121, -1, 1.5, "30", null]),
      ...fieldCases(qj, qjBase, "maxWaitSeconds", [0, 7201, 1.5, "5", null]),
      ...fieldCases(qj, qjBase, "pool", BAD_ID_VALUES),
      ...fieldCases(qj, qjBase, "userId", BAD_ID_VALUES),
      ...fieldCases(qj, qjBase, "spec", ["big", null, { cpuCores: -1 }, { gpu: 1 }]),
      // Valid by schema, refused by the service: still nothing changes.
      {
        ...qj,
        name: "priority above the plan's",
        body: () => ({ ...qjBase(), priority: 3 }),
        status: 403,
        code: "PRIORITY_NOT_ALLOWED",
      },
      {
        ...qj,
        name: "another user's account",
        body: () => ({ ...qjBase(), userId: W.other }),
        status: 403,
        code: "FORBIDDEN",
      },
      {
        ...qj,
        name: "a spec no device has",
        body: () => ({ ...qjBase(), spec: { cpuCores: 4 } }),
        status: 409,
        code: "NO_MATCHING_DEVICE",
      },
    ],
  ]);
  const rs = { method: "POST", path: () => "/scheduler/reservations", as: "user" as As };
  const rsBase = () => ({ pool: W.pool, startAt: iso(Date.now() + 3_600_000), durationMinutes: 30 });
  const rsc = { ...rs, path: () => "/scheduler/reservations/check" };
  const windowCases = (r: typeof rs, label: string): Case[] => [
    ...fieldCases(r, rsBase, "startAt", [
      "tomorrow",
      "",
      "2021-02-30T00:00:00Z",
      "2021-01-01T00:00:00",
      "2021-13-01T00:00:00Z",
      -1,
      1.5,
      8.64e15 + 1,
      null,
      true,
      [],
      {},
    ]),
    ...fieldCases(r, rsBase, "durationMinutes", BAD_DURATIONS),
    ...fieldCases(r, rsBase, "pool", BAD_ID_VALUES),
    ...fieldCases(r, rsBase, "userId", BAD_ID_VALUES),
    ...missingCases(r, rsBase, ["startAt"]),
    {
      ...r,
      name: `${label}: a start in the past`,
      body: () => ({ ...rsBase(), startAt: iso(Date.now() - 60_000) }),
      status: 400,
      code: "RESERVATION_IN_PAST",
    },
    {
      ...r,
      name: `${label}: a start beyond 30 days`,
      body: () => ({ ...rsBase(), startAt: iso(Date.now() + 31 * 86_400_000) }),
      status: 400,
      code: "RESERVATION_TOO_FAR",
    },
    {
      ...r,
      name: `${label}: another user's account`,
      body: () => ({ ...rsBase(), userId: W.other }),
      status: 403,
      code: "FORBIDDEN",
    },
  ];
  groups.push([
    "reserve: fields",
    [...windowCases(rs, "reserve"), ...fieldCases(rs, rsBase, "reminderMinutes", [-1, 1441, 1.5, "15", null])],
  ]);
  groups.push(["reservation check: fields", [...windowCases(rsc, "check"), ...fieldCases(rsc, rsBase, "reminderMinutes", [15])]]);

  const adm = (method: string, path: () => string, name: string, body: () => unknown, status?: number, code?: string | string[]): Case => ({
    method,
    path,
    as: "admin",
    name,
    body,
    status,
    code,
  });
  const quotaBase = () => ({ tier: "pro" });
  const qu = { method: "PUT", path: () => `/quotas/user/${W.user}`, as: "admin" as As };
  groups.push([
    "quota update: fields",
    [
      { ...qu, name: "empty object", body: () => ({}), status: 400, code: "VALIDATION_FAILED", objects: true },
      ...fieldCases(qu, quotaBase, "tier", ["platinum", "", "PRO", 1, null, []]),
      ...fieldCases(qu, quotaBase, "limits", [
        "x",
        [],
        null,
        5,
        { maxDevices: -1 },
        { maxDevices: 1.5 },
        { maxDevices: 100_001 },
        { maxDevices: "2" },
        { bogus: 1 },
        { maxCpuCores: 1e308 },
        { maxDevices: null },
      ]),
      ...fieldCases(qu, quotaBase, "suspended", ["yes", 1, 0, null, "true"]),
      ...fieldCases(qu, quotaBase, "validUntil", [
        "tomorrow",
        123,
        "",
        "2021-02-30T00:00:00Z",
        "2021-01-01",
        "2021-01-01T00:00:00",
        "2021-13-01T00:00:00Z",
        "2021-01-01T25:00:00Z",
        null,
      ]),
    ],
  ]);
  const rn = { method: "POST", path: () => `/quotas/renew/${W.user}`, as: "admin" as As };
  groups.push([
    "quota renew: fields",
    [
      ...fieldCases(rn, () => ({}), "extensionDays", [0, 3651, -1, 1.5, "30", null, 1e308, true]),
      ...rawFieldCases(rn, () => ({}), "extensionDays", BAD_RAW_NUMBERS),
    ],
  ]);

  const reg = { method: "POST", path: () => "/admin/devices", as: "admin" as As };
  const regBase = () => ({ deviceId: "bi-never-registered", pool: W.pool, cpuCores: 1, memoryMB: 1, storageMB: 1 });
  groups.push([
    "register device: fields",
    [
      ...missingCases(reg, regBase, ["pool", "cpuCores", "memoryMB", "storageMB"]),
      ...fieldCases(reg, regBase, "deviceId", BAD_ID_VALUES),
      ...fieldCases(reg, regBase, "pool", BAD_ID_VALUES),
      ...fieldCases(reg, regBase, "node", BAD_ID_VALUES),
      ...fieldCases(reg, regBase, "cpuCores", [0, 1025, -1, 1.5, "2", null, 1e308]),
      ...fieldCases(reg, regBase, "memoryMB", [0, 16_777_217, -1, 1.5, "1024", null]),
      ...fieldCases(reg, regBase, "storageMB", [0, 1_073_741_825, -1, 2.5, "1", null]),
      ...fieldCases(reg, regBase, "status", ["allocated", "available"]),
      ...fieldCases(reg, regBase, "name", BAD_META_TEXT),
      ...fieldCases(reg, regBase, "model", [...BAD_META_TEXT, null]),
      ...fieldCases(reg, regBase, "osVersion", ["v".repeat(51), "\u0000"]),
      ...fieldCases(reg, regBase, "labels", BAD_LABELS),
      adm(
        "POST",
        () => "/admin/devices",
        "a device id already registered",
        () => ({ ...regBase(), deviceId: W.free1 }),
        409,
        "DEVICE_EXISTS",
      ),
      adm(
        "POST",
        () => "/admin/devices",
        "the held device's id",
        () => ({ ...regBase(), deviceId: W.held, pool: uid("bi-steal") }),
        409,
        "DEVICE_EXISTS",
      ),
    ],
  ]);
  const upd = { method: "PATCH", path: () => `/admin/devices/${W.free1}`, as: "admin" as As };
  const updBase = () => ({ node: "bi-node-x" });
  groups.push([
    "update device: fields",
    [
      { ...upd, name: "empty object", body: () => ({}), status: 400, code: "VALIDATION_FAILED", objects: true },
      ...fieldCases(upd, updBase, "pool", BAD_ID_VALUES),
      ...fieldCases(upd, updBase, "node", BAD_ID_VALUES),
      ...fieldCases(upd, updBase, "cpuCores", [0, 1025, 1.5, "2", null]),
      ...fieldCases(upd, updBase, "status", ["maintenance"]),
      ...fieldCases(upd, updBase, "deviceId", ["renamed"]),
      ...fieldCases(upd, updBase, "name", BAD_META_TEXT),
      ...fieldCases(upd, updBase, "labels", [...BAD_LABELS, null]),
      adm(
        "PATCH",
        () => `/admin/devices/${W.held}`,
        "spec of an allocated device",
        () => ({ cpuCores: 4 }),
        409,
        "DEVICE_BUSY",
      ),
      adm(
        "PATCH",
        () => `/admin/devices/${W.held}`,
        "pool of an allocated device",
        () => ({ pool: uid("bi-move") }),
        409,
        "DEVICE_BUSY",
      ),
    ],
  ]);
  const blk = { method: "POST", path: () => "/admin/devices/bulk", as: "admin" as As };
  // A pool of its own: the cases are built before the world (W) is; no case registers anything.
  const blkItem = (n: number) => ({ deviceId: `bi-bulk-${n}`, pool: "bi-bulk-pool", cpuCores: 1, memoryMB: 1, storageMB: 1 });
  const blkBase = () => ({ devices: [blkItem(1), blkItem(2)] });
  groups.push([
    "bulk devices: fields (one bad item refuses the whole request)",
    [
      ...missingCases(blk, blkBase, ["devices"]),
      ...fieldCases(blk, blkBase, "devices", [
        [],
        {},
        "x",
        null,
        Array.from({ length: 501 }, (_, n) => blkItem(n)),
        [blkItem(1), blkItem(1)],
        [blkItem(1), { ...blkItem(2), labels: { "bad key": "v" } }],
        [blkItem(1), { ...blkItem(2), colour: "red" }],
        [blkItem(1), { ...blkItem(2), deviceId: undefined }],
        [blkItem(1), { ...blkItem(2), cpuCores: 0 }],
        [blkItem(1), 5],
      ]),
      ...fieldCases(blk, blkBase, "extra", [1]),
    ],
  ]);
  groups.push([
    "fleet: query",
    qs(() => "/admin/devices", "admin", [
      "status=removed",
      "status=bogus",
      "limit=0",
      "limit=201",
      "cursor=abc",
      `cursor=${pct("a/b")}`,
      "label=nocolon",
      "label=:v",
      `label=${pct("bad key:v")}`,
      `q=${"q".repeat(101)}`,
      "holder=",
      "node=",
      "extra=1",
    ]),
  ]);
  groups.push([
    "device actions refused by state",
    [
      adm(
        "POST",
        () => `/admin/devices/${W.free1}/force-release`,
        "force-release a free device",
        () => undefined,
        409,
      ),
    ],
  ]);
  const ps = { method: "PUT", path: () => `/admin/pools/${W.pool}`, as: "admin" as As };
  groups.push([
    "pool strategy: fields",
    [
      { ...ps, name: "empty object", body: () => ({}), status: 400, code: "VALIDATION_FAILED", objects: true },
      ...fieldCases(ps, () => ({ strategy: "spread" }), "strategy", ["random", "", "SPREAD", 1, null, ["spread"]]),
      adm(
        "PUT",
        () => `/admin/pools/${uid("bi-nopool")}`,
        "a pool that does not exist",
        () => ({ strategy: "spread" }),
        404,
        "POOL_NOT_FOUND",
      ),
    ],
  ]);
  groups.push([
    "device history: query",
    qs(() => `/admin/devices/${W.held}/history`, "admin", [
      "cursor=-1",
      "cursor=abc",
      "cursor=1.5",
      "cursor=1e300",
      "cursor=99999999999999999999",
      "limit=0",
      "limit=201",
      "extra=1",
    ]),
  ]);
  groups.push([
    "users: query",
    qs(() => "/admin/users", "admin", ["limit=0", "limit=10000", `cursor=${pct("a/b")}`, `cursor=${"c".repeat(129)}`, "extra=1"]),
  ]);
  groups.push([
    "pool devices: query",
    qs(() => `/admin/pools/${W.pool}/devices`, "admin", [
      "status=bogus",
      "status=removed",
      "limit=0",
      "limit=10000",
      `cursor=${pct("a/b")}`,
      `cursor=${"c".repeat(129)}`,
      "extra=1",
    ]),
  ]);

  // ---- billing and metering ----

  const BAD_MONEY: unknown[] = [
    0,
    -1,
    -100,
    1.5,
    0.01,
    99.99,
    -0.5,
    100_000_001,
    1e308,
    2 ** 53,
    -(2 ** 53),
    "100",
    "1e2",
    null,
    true,
    [],
    {},
    [100],
  ];
  const BAD_REF: unknown[] = ["", "a b", "a/b", "../x", "x".repeat(201), "pay\u0000", "pé", "📱", 5, null, true, [], {}];

  const top = { method: "POST", path: () => `/billing/users/${W.user}/top-ups`, as: "admin" as As };
  const topBase = () => ({ amountMinor: 100, paymentId: "bi-never-paid" });
  groups.push([
    "top-up: fields",
    [
      ...missingCases(top, topBase, ["amountMinor", "paymentId"]),
      ...fieldCases(top, topBase, "amountMinor", BAD_MONEY),
      ...rawFieldCases(top, topBase, "amountMinor", BAD_RAW_NUMBERS),
      // The old name is refused (unknown field), as any unknown field is.
      ...fieldCases(top, topBase, "amount", [100]),
      ...fieldCases(top, topBase, "paymentId", BAD_REF),
      ...fieldCases(top, topBase, "paymentMethod", ["", "m".repeat(51), 5, null, [], {}]),
      // The user comes from the path only.
      ...fieldCases(top, topBase, "userId", ["bi-someone"]),
      ...fieldCases(top, topBase, "currency", ["USD", "EUR"]),
      { ...top, name: "empty object", body: () => ({}), status: 400, code: "VALIDATION_FAILED", objects: true },
      // Valid by schema, refused by the ledger: the same paymentId is one payment of one user and one amount.
      {
        ...top,
        name: "paymentId already credited, another amount",
        body: () => ({ amountMinor: 301, paymentId: W.paymentId }),
        status: 409,
        code: "PAYMENT_ID_REUSED",
      },
      {
        ...top,
        as: "service",
        name: "paymentId already credited, another amount (service)",
        body: () => ({ amountMinor: 1, paymentId: W.paymentId }),
        status: 409,
        code: "PAYMENT_ID_REUSED",
      },
      {
        ...top,
        name: "paymentId of the user's payment, credited to the other user",
        path: () => `/billing/users/${W.other}/top-ups`,
        body: () => ({ amountMinor: 300, paymentId: W.paymentId }),
        status: 409,
        code: "PAYMENT_ID_REUSED",
      },
      {
        ...top,
        name: "paymentId of the user's payment, credited to a user with no account yet",
        path: () => `/billing/users/${uid("bi-newpayer")}/top-ups?create=true`,
        body: () => ({ amountMinor: 300, paymentId: W.paymentId }),
        status: 409,
        code: "PAYMENT_ID_REUSED",
      },
      {
        ...top,
        as: "service",
        name: "a float amount from a service",
        body: () => ({ amountMinor: 100.5, paymentId: "bi-never-paid" }),
        status: 400,
        code: "VALIDATION_FAILED",
        objects: true,
      },
      {
        ...top,
        as: "service",
        name: "no paymentId from a service",
        body: () => ({ amountMinor: 100 }),
        status: 400,
        code: "VALIDATION_FAILED",
        objects: true,
      },
      {
        ...top,
        as: "service",
        name: "junk JSON from a service",
        raw: () => '{"amountMinor":',
        headers: JSON_CT,
        status: 400,
        code: "INVALID_JSON",
        objects: true,
      },
    ],
  ]);

  const adj = { method: "POST", path: () => `/admin/billing/users/${W.user}/adjustments`, as: "admin" as As };
  const adjBase = () => ({ amountMinor: -5, adjustmentId: "bi-never-adj", memo: "x" });
  groups.push([
    "adjustment: fields",
    [
      ...missingCases(adj, adjBase, ["amountMinor", "adjustmentId", "memo"]),
      ...fieldCases(adj, adjBase, "amountMinor", [0, -0, 1.5, -0.5, 100_000_001, -100_000_001, 1e308, -1e308, "5", null, true, []]),
      ...rawFieldCases(adj, adjBase, "amountMinor", BAD_RAW_NUMBERS),
      ...fieldCases(adj, adjBase, "amount", [-5]),
      ...fieldCases(adj, adjBase, "adjustmentId", BAD_REF),
      ...fieldCases(adj, adjBase, "memo", ["", "m".repeat(501), 5, null, [], {}]),
      {
        ...adj,
        name: "adjustmentId already used, another amount",
        body: () => ({ amountMinor: -51, adjustmentId: W.adjustmentId, memo: "again" }),
        status: 409,
        code: "ADJUSTMENT_ID_REUSED",
      },
      {
        ...adj,
        name: "adjustmentId of the user's adjustment, booked on the other user",
        path: () => `/admin/billing/users/${W.other}/adjustments`,
        body: () => ({ amountMinor: -50, adjustmentId: W.adjustmentId, memo: "bi" }),
        status: 409,
        code: "ADJUSTMENT_ID_REUSED",
      },
      {
        ...adj,
        name: "adjustmentId of the user's adjustment, booked on a user with no account yet",
        path: () => `/admin/billing/users/${uid("bi-newadj")}/adjustments?create=true`,
        body: () => ({ amountMinor: -50, adjustmentId: W.adjustmentId, memo: "bi" }),
        status: 409,
        code: "ADJUSTMENT_ID_REUSED",
      },
    ],
  ]);

  const plan = { method: "PUT", path: () => "/admin/billing/pricing-plans/bi-never-plan", as: "admin" as As };
  groups.push([
    "pricing plan: fields",
    [
      ...missingCases(plan, planBody, Object.keys(planBody())),
      ...fieldCases(plan, planBody, "name", ["", "n".repeat(101), 5, null]),
      ...fieldCases(plan, planBody, "currency", ["usd", "US", "USDX", "", "$", 840, null]),
      ...["baseMicrosPerSecond", "cpuCoreMicrosPerSecond", "memoryGBMicrosPerSecond", "storageGBMicrosPerSecond"].flatMap((f) =>
        fieldCases(plan, planBody, f, [-1, 1.5, 1e9 + 1, "1", null, 1e308]),
      ),
      ...fieldCases(plan, planBody, "startingCreditMinor", [-1, 0.5, 100_000_001, "1000", null]),
      ...fieldCases(plan, planBody, "lowBalanceThresholdMinor", [-1, 0.5, 100_000_001, null]),
      ...fieldCases(plan, planBody, "pricingPlanId", ["other-plan"]),
      ...fieldCases(plan, planBody, "basePerSecond", [100]),
      {
        ...plan,
        name: "a currency this deployment does not bill in",
        body: () => ({ ...planBody(), currency: "EUR" }),
        status: 400,
        code: "CURRENCY_NOT_SUPPORTED",
        objects: true,
      },
      {
        ...plan,
        name: "the seeded plan in another currency",
        path: () => "/admin/billing/pricing-plans/standard",
        body: () => ({ ...planBody(), currency: "EUR" }),
        status: 400,
        code: "CURRENCY_NOT_SUPPORTED",
        objects: true,
      },
    ],
  ]);

  const acctPlan = { method: "PUT", path: () => `/admin/billing/users/${W.user}/plan`, as: "admin" as As };
  groups.push([
    "account plan: fields",
    [
      { ...acctPlan, name: "empty object", body: () => ({}), status: 400, code: "VALIDATION_FAILED", objects: true },
      ...fieldCases(acctPlan, () => ({ pricingPlanId: "standard" }), "pricingPlanId", BAD_ID_VALUES),
      ...fieldCases(acctPlan, () => ({ pricingPlanId: "standard" }), "planId", ["standard"]),
      ...fieldCases(acctPlan, () => ({ pricingPlanId: "standard" }), "balance", [1_000_000]),
      {
        ...acctPlan,
        name: "a plan that does not exist",
        body: () => ({ pricingPlanId: "bi-no-such-plan" }),
        status: 404,
        code: "PLAN_NOT_FOUND",
      },
      // Refused before the account is opened: no account for a user who had none.
      {
        ...acctPlan,
        name: "a plan that does not exist, for a user with no account",
        path: () => `/admin/billing/users/${uid("bi-noacct")}/plan?create=true`,
        body: () => ({ pricingPlanId: "bi-no-such-plan" }),
        status: 404,
        code: "PLAN_NOT_FOUND",
      },
    ],
  ]);

  const replay = { method: "POST", path: () => "/admin/billing/failed-usage/replay", as: "admin" as As };
  const replayCase = (name: string, body: () => unknown): Case => ({
    ...replay,
    name,
    body,
    status: 400,
    code: "VALIDATION_FAILED",
    objects: true,
  });
  groups.push([
    "dead-letter replay: fields",
    [
      replayCase("neither allocationIds nor all", () => ({})),
      replayCase("all: false alone", () => ({ all: false })),
      replayCase("both allocationIds and all", () => ({ allocationIds: [W.deadLetter], all: true })),
      replayCase("empty allocationIds", () => ({ allocationIds: [] })),
      replayCase("empty allocationIds with all", () => ({ allocationIds: [], all: true })),
      replayCase("101 allocationIds", () => ({
        allocationIds: Array.from({ length: 101 }, (_, i) => `${W.deadLetter}-${i}`),
      })),
      replayCase("101 allocationIds incl. a real one", () => ({
        allocationIds: [W.deadLetter, ...Array.from({ length: 100 }, (_, i) => `bi-x-${i}`)],
      })),
      ...(["", "a b", "a/b", "x".repeat(301), "é", 5, null, [], {}] as unknown[]).map((v) =>
        replayCase(`allocationIds: [${JSON.stringify(v).slice(0, 30)}]`, () => ({ allocationIds: [W.deadLetter, v] })),
      ),
      ...(["x", 5, null, {}, true] as unknown[]).map((v) =>
        replayCase(`allocationIds: ${JSON.stringify(v)}`, () => ({ allocationIds: v })),
      ),
      ...(["true", 1, null, [], {}] as unknown[]).map((v) => replayCase(`all: ${JSON.stringify(v)}`, () => ({ all: v }))),
      replayCase("status filter (unknown field)", () => ({ all: true, status: "failed" })),
    ],
  ]);

  const rec = { method: "POST", path: () => "/admin/billing/reconcile", as: "admin" as As };
  const recBase = () => ({ userId: W.user, heal: true });
  const BAD_TIMES: unknown[] = [
    "yesterday",
    "",
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-01-01",
    "2026-01-01T00:00:00",
    "2026-01-01 00:00:00Z",
    "2026-01-01T24:00:01Z",
    "2026-01-01T00:00:00+25:00",
    "+002026-01-01T00:00:00Z",
    "1767225600000",
    1767225600000,
    -1,
    null,
    true,
    [],
    {},
  ];
  groups.push([
    "reconcile: fields",
    [
      ...fieldCases(rec, recBase, "from", BAD_TIMES),
      ...fieldCases(rec, recBase, "to", BAD_TIMES),
      ...fieldCases(rec, recBase, "userId", BAD_ID_VALUES),
      ...fieldCases(rec, recBase, "heal", ["false", "true", 0, 1, null, []]),
      ...fieldCases(rec, recBase, "all", [true]),
      {
        ...rec,
        name: "from = to",
        body: () => ({ ...recBase(), from: "2026-01-01T00:00:00Z", to: "2026-01-01T00:00:00Z" }),
        status: 400,
        code: "VALIDATION_FAILED",
        objects: true,
      },
      {
        ...rec,
        name: "from after to",
        body: () => ({ ...recBase(), from: "2026-02-01T00:00:00Z", to: "2026-01-01T00:00:00Z" }),
        status: 400,
        code: "VALIDATION_FAILED",
        objects: true,
      },
      {
        ...rec,
        name: "from after to, in other offsets",
        body: () => ({ ...recBase(), from: "2026-01-01T01:00:00+00:00", to: "2026-01-01T02:00:00+02:00" }),
        status: 400,
        code: "VALIDATION_FAILED",
        objects: true,
      },
      {
        ...rec,
        name: "from after to, for every account",
        body: () => ({ from: "2026-02-01T00:00:00Z", to: "2026-01-01T00:00:00Z" }),
        status: 400,
        code: "VALIDATION_FAILED",
        objects: true,
      },
    ],
  ]);

  const revoke = { method: "POST", path: () => `/admin/users/${W.user}/tokens/revoke`, as: "admin" as As };
  groups.push([
    "revoke tokens: fields",
    [
      ...fieldCases(revoke, () => ({ before: "2002-01-01T00:00:00Z" }), "before", [
        "yesterday",
        "2002-01-01",
        "2002-01-01T00:00:00",
        "2002-13-01T00:00:00Z",
        "",
        0,
        Date.now() - 60_000,
        null,
        true,
        [],
        {},
      ]),
      {
        ...revoke,
        name: "before in the future",
        body: () => ({ before: new Date(Date.now() + 3_600_000).toISOString() }),
        status: 400,
        code: "VALIDATION_FAILED",
        objects: true,
      },
      ...BAD_IDS.map(([name, id]) => ({
        ...revoke,
        name: `user id ${name}`,
        path: () => `/admin/users/${encodeURIComponent(id)}/tokens/revoke`,
        body: () => ({}),
        status: name === "empty" ? 404 : 400,
        code: name === "empty" ? "ROUTE_NOT_FOUND" : "VALIDATION_FAILED",
        objects: true,
      })),
    ],
  ]);

  const inv = { method: "POST", path: () => "/admin/billing/invoices/run", as: "admin" as As };
  const nextMonth = () => {
    const d = new Date();
    return periodOf(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1));
  };
  groups.push([
    "invoice run: fields",
    [
      // `{}` is not hostile: it runs the default period (test/billing-one-shape.test.ts).
      ...fieldCases(inv, () => ({ period: "2002-02" }), "period", [
        "2026-13",
        "2026-00",
        "2026-1",
        "26-01",
        "2026/01",
        "2026-01-01",
        "2026-01 ",
        " 2026-01",
        "２０２６-01",
        "",
        "latest",
        202601,
        null,
        true,
        [],
        {},
      ]),
      ...fieldCases(inv, () => ({ period: "2002-02" }), "userId", ["bi-someone"]),
      {
        ...inv,
        name: "this month (has not ended)",
        body: () => ({ period: periodOf(Date.now()) }),
        status: 409,
        code: "PERIOD_NOT_ENDED",
        objects: true,
      },
      {
        ...inv,
        name: "next month",
        body: () => ({ period: nextMonth() }),
        status: 409,
        code: "PERIOD_NOT_ENDED",
        objects: true,
      },
      {
        ...inv,
        name: "9999-12",
        body: () => ({ period: "9999-12" }),
        status: 409,
        code: "PERIOD_NOT_ENDED",
        objects: true,
      },
    ],
  ]);

  const use = { method: "POST", path: () => "/api/internal/metering/device-usage", as: "service" as As };
  const useBase = () => usage({ allocationId: "bi-never-used" });
  const useCase = (name: string, body: () => unknown): Case => ({
    ...use,
    name,
    body,
    status: 400,
    code: "VALIDATION_FAILED",
    objects: true,
  });
  const fresh = (i: number, o: Record<string, unknown> = {}) => usage({ allocationId: `bi-batch-${i}`, ...o });
  groups.push([
    "internal usage: fields",
    [
      ...missingCases(use, useBase, [
        "allocationId",
        "deviceId",
        "userId",
        "durationSeconds",
        "cpuCores",
        "memoryMB",
        "storageMB",
        "allocatedAt",
        "releasedAt",
      ]),
      ...fieldCases(use, useBase, "allocationId", ["", "a b", "a/b", "x".repeat(301), "é", "\u0000", 5, null, true, [], {}]),
      ...fieldCases(use, useBase, "deviceId", BAD_ID_VALUES),
      ...fieldCases(use, useBase, "userId", BAD_ID_VALUES),
      // `null` is accepted as absent (what the old system sends).
      ...fieldCases(
        use,
        useBase,
        "tenantId",
        BAD_ID_VALUES.filter((v) => v !== null),
      ),
      ...fieldCases(use, useBase, "durationSeconds", [-1, 1.5, "3600", null, 315_360_001, 1e308, Infinity, true]),
      ...rawFieldCases(use, useBase, "durationSeconds", BAD_RAW_NUMBERS),
      ...fieldCases(use, useBase, "cpuCores", [-1, 1025, 1.5, "2", null]),
      ...fieldCases(use, useBase, "memoryMB", [-1, 16_777_217, 0.5, "4096", null]),
      ...fieldCases(use, useBase, "storageMB", [-1, 1_073_741_825, 2.5, "1", null]),
      // Epoch milliseconds are refused too: ISO 8601 is the one time format of requests.
      ...fieldCases(use, useBase, "allocatedAt", [...BAD_TIMES, 0]),
      ...fieldCases(use, useBase, "releasedAt", [...BAD_TIMES, 8.64e15 + 1, 1.5, 1767225600000]),
      ...fieldCases(use, useBase, "reason", ["crashed", "", "RELEASED", 5]),
      ...fieldCases(use, useBase, "amount", [0]),
      ...fieldCases(use, useBase, "status", ["active"]),
      useCase("releasedAt before allocatedAt", () =>
        usage({
          allocationId: "bi-never-used",
          allocatedAt: "2026-01-10T11:00:00Z",
          releasedAt: "2026-01-10T10:00:00Z",
          durationSeconds: 0,
        }),
      ),
      useCase("releasedAt before allocatedAt (by a millisecond)", () =>
        usage({
          allocationId: "bi-never-used",
          allocatedAt: "2026-01-10T11:00:00.000Z",
          releasedAt: "2026-01-10T10:59:59.999Z",
          durationSeconds: 0,
        }),
      ),
      useCase("releasedAt before allocatedAt across offsets", () =>
        usage({
          allocationId: "bi-never-used",
          allocatedAt: "2026-01-10T11:00:00+00:00",
          releasedAt: "2026-01-10T12:00:00+02:00",
          durationSeconds: 0,
        }),
      ),
      useCase("durationSeconds longer than the span (3602 s in an hour)", () =>
        usage({ allocationId: "bi-never-used", durationSeconds: 3602 }),
      ),
      useCase("durationSeconds of a day in an hour", () => usage({ allocationId: "bi-never-used", durationSeconds: 86_400 })),
      useCase("durationSeconds > 0 with a zero span", () =>
        usage({
          allocationId: "bi-never-used",
          allocatedAt: "2026-01-10T10:00:05Z",
          releasedAt: "2026-01-10T10:00:05Z",
          durationSeconds: 2,
        }),
      ),
      useCase("an empty array", () => []),
      useCase("records: []", () => ({ records: [] })),
      useCase("101 records", () => Array.from({ length: 101 }, (_, i) => fresh(i))),
      useCase("records: 101", () => ({ records: Array.from({ length: 101 }, (_, i) => fresh(i)) })),
      useCase("the same allocationId twice in one batch", () => [fresh(1), fresh(2), fresh(1, { durationSeconds: 60 })]),
      useCase("the same allocationId twice in records", () => ({ records: [fresh(1), fresh(1)] })),
      useCase("the same allocationId twice, for two users", () => [fresh(1), fresh(1, { userId: W.other })]),
      useCase("an already recorded allocationId twice in one batch", () => [usage(), usage()]),
      useCase("one bad record among good ones (nothing is booked)", () => [fresh(1), fresh(2), fresh(3, { cpuCores: -1 })]),
      useCase("one record with releasedAt before allocatedAt among good ones", () => ({
        records: [fresh(1), fresh(2, { releasedAt: "2026-01-10T09:00:00Z" })],
      })),
      useCase("a non-object in the batch", () => [fresh(1), "x"]),
      useCase("null in the batch", () => [fresh(1), null]),
      useCase("a nested batch", () => [[fresh(1)]]),
      useCase("records with an unknown field beside it", () => ({ records: [fresh(1)], source: "device" })),
      useCase("records that is not an array", () => ({ records: fresh(1) })),
      useCase("a record with an unknown field inside records", () => ({ records: [fresh(1, { source: "device" })] })),
      useCase("a single record wrapped in another key", () => ({ record: fresh(1) })),
    ],
  ]);

  // Queries of the read routes.
  const PERIOD_QUERY = [
    "from=yesterday",
    "from=",
    "from=2026-13-01T00:00:00Z",
    "from=2026-02-30T00:00:00Z",
    "from=2026-01-01",
    "from=2026-01-01T00:00:00",
    "from=1767225600000",
    `from=${pct("2026-01-01 00:00:00Z")}`,
    "to=2026-01-01T25:00:00Z",
    "to=now",
    `to=${pct("\u0000")}`,
    "from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
    "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
    `from=${pct("2026-01-01T01:00:00+00:00")}&to=${pct("2026-01-01T02:00:00+02:00")}`,
    "cursor=abc",
    "cursor=1.",
    "cursor=.x",
    "cursor=-1.x",
    `cursor=${"1".repeat(300)}.${"x".repeat(101)}`,
    "limit=0",
    "limit=201",
    "limit=-1",
    "limit=1.5",
    "limit=abc",
    "extra=1",
    "userId=x",
    "from=2026-01-01T00:00:00Z&from=2026-02-01T00:00:00Z",
  ];
  groups.push(["metering user report: query", qs(() => `/metering/users/${W.user}`, "user", PERIOD_QUERY)]);
  groups.push(["metering device report: query", qs(() => `/metering/devices/${W.held}`, "admin", PERIOD_QUERY)]);
  groups.push([
    "ledger: query",
    qs(() => `/billing/users/${W.user}/ledger`, "user", [
      "cursor=-1",
      "cursor=abc",
      "cursor=1.5",
      "cursor=1e300",
      "cursor=99999999999999999999",
      "limit=0",
      "limit=201",
      "limit=x",
      "extra=1",
      "kind=charge",
    ]),
  ]);
  groups.push([
    "dead letters: query",
    qs(() => "/admin/billing/failed-usage", "admin", [
      "status=bogus",
      "status=FAILED",
      "status=",
      "limit=0",
      "limit=10000",
      `cursor=${"c".repeat(401)}`,
      "extra=1",
      "userId=x",
    ]),
  ]);
  groups.push([
    "billing reads of another user",
    [
      q("GET", () => `/billing/users/${W.other}/balance`, "user", "balance", 403, "FORBIDDEN"),
      q("GET", () => `/billing/users/${W.other}/ledger?limit=1`, "user", "ledger", 403, "FORBIDDEN"),
      q("GET", () => `/billing/users/${W.other}/invoices`, "user", "invoices", 403, "FORBIDDEN"),
      q("GET", () => `/metering/users/${W.other}?from=2026-01-01T00:00:00Z`, "user", "usage report", 403, "FORBIDDEN"),
      q("GET", () => `/billing/invoices/${W.invoiceId}`, "other", "the user's invoice, by the other user", 404, "INVOICE_NOT_FOUND"),
    ],
  ]);

  // Path ids of the billing routes.
  const billingIdRoutes: [string, string, (id: string) => string, As, (() => unknown) | undefined][] = [
    ["GET", "balance", (id) => `/billing/users/${id}/balance`, "admin", undefined],
    ["GET", "ledger", (id) => `/billing/users/${id}/ledger`, "admin", undefined],
    ["GET", "invoices", (id) => `/billing/users/${id}/invoices`, "admin", undefined],
    ["POST", "top-up", (id) => `/billing/users/${id}/top-ups`, "admin", () => ({ amountMinor: 100, paymentId: "bi-never-paid" })],
    [
      "POST",
      "top-up (service)",
      (id) => `/billing/users/${id}/top-ups`,
      "service",
      () => ({ amountMinor: 100, paymentId: "bi-never-paid" }),
    ],
    ["GET", "usage report", (id) => `/metering/users/${id}`, "admin", undefined],
    ["GET", "device usage report", (id) => `/metering/devices/${id}`, "admin", undefined],
    ["PUT", "pricing plan", (id) => `/admin/billing/pricing-plans/${id}`, "admin", planBody],
    ["PUT", "account plan", (id) => `/admin/billing/users/${id}/plan`, "admin", () => ({ pricingPlanId: "standard" })],
    [
      "POST",
      "adjustment",
      (id) => `/admin/billing/users/${id}/adjustments`,
      "admin",
      () => ({ amountMinor: -5, adjustmentId: "bi-never-adj", memo: "x" }),
    ],
    ["GET", "internal balance", (id) => `/api/internal/balance/user/${id}`, "service", undefined],
  ];
  for (const [method, label, path, as, body] of billingIdRoutes) {
    const cases: Case[] = BAD_IDS.filter(([n]) => n !== "empty").map(([n, v]) => ({
      method,
      path: () => path(pct(v)),
      as,
      body,
      name: `id ${n}`,
      status: 400,
      code: "VALIDATION_FAILED",
      objects: true,
    }));
    cases.push({
      method,
      path: () => path("%E0%A4%A"),
      as,
      body,
      name: "id with a malformed percent escape",
      status: 400,
      code: "VALIDATION_FAILED",
      objects: true,
    });
    groups.push([`${label}: path id`, cases]);
  }
  groups.push([
    "invoice: path id",
    [
      ...BAD_IDS.filter(([n]) => n !== "empty" && n !== "1000 chars").map(([n, v]): Case => ({
        method: "GET",
        path: () => `/billing/invoices/${pct(v)}`,
        as: "admin",
        name: `id ${n}`,
        status: 404,
        code: "INVOICE_NOT_FOUND",
        objects: true,
      })),
      ...[
        ["301 chars", "i".repeat(301)],
        ["1000 chars", "d".repeat(1000)],
      ].map(([n, v]): Case => ({
        method: "GET",
        path: () => `/billing/invoices/${v}`,
        as: "admin",
        name: `id ${n}`,
        status: 400,
        code: "VALIDATION_FAILED",
        objects: true,
      })),
      ...[
        ["the user's invoice id with a slash appended", () => `${W.invoiceId}${pct("/")}`],
        ["the user's invoice id in upper case", () => W.invoiceId.toUpperCase()],
        ["SQL in the id", () => pct("' OR 1=1 --")],
        ["a LIKE wildcard", () => pct(`inv_${INVOICE_PERIOD}_%`)],
        ["malformed percent escape", () => "%E0%A4%A"],
      ].map(([n, id]): Case => ({
        method: "GET",
        path: () => `/billing/invoices/${(id as () => string)()}`,
        as: "user",
        name: n as string,
        status: 404,
        code: "INVOICE_NOT_FOUND",
        objects: true,
      })),
    ],
  ]);
  groups.push([
    "billing routes without the right caller (refused before validation)",
    [
      {
        method: "POST",
        path: () => `/billing/users/${W.user}/top-ups`,
        as: "user",
        name: "top-up by the user, junk body",
        raw: () => "{",
        headers: JSON_CT,
        status: 403,
        code: "FORBIDDEN",
        objects: true,
      },
      {
        method: "POST",
        path: () => `/billing/users/${W.user}/top-ups`,
        as: "none",
        name: "top-up without a token, invalid body",
        body: () => ({ amountMinor: -1 }),
        status: 401,
        code: "UNAUTHORIZED",
        objects: true,
      },
      {
        method: "POST",
        path: () => "/api/internal/metering/device-usage",
        as: "admin",
        name: "usage by an admin, invalid body",
        body: () => [],
        status: 403,
        code: "FORBIDDEN",
        objects: true,
      },
      {
        method: "POST",
        path: () => "/api/internal/metering/device-usage",
        as: "user",
        name: "usage by a user, valid body",
        body: () => usage({ allocationId: "bi-never-used" }),
        status: 403,
        code: "FORBIDDEN",
        objects: true,
      },
      {
        method: "POST",
        path: () => "/admin/billing/invoices/run",
        as: "service",
        name: "invoice run by a service",
        body: () => ({ period: "2026-13" }),
        status: 403,
        code: "FORBIDDEN",
        objects: true,
      },
      {
        method: "GET",
        path: () => "/metering/devices/x?limit=0",
        as: "user",
        name: "device report by a user, invalid query",
        status: 403,
        code: "FORBIDDEN",
        objects: true,
      },
      {
        method: "POST",
        path: () => "/api/internal/metering/device-usage",
        as: "none",
        name: "usage without a token, huge body",
        raw: () => "x".repeat(70_000),
        headers: JSON_CT,
        status: 413,
        code: "PAYLOAD_TOO_LARGE",
        objects: true,
      },
    ],
  ]);

  const ticketRoute = { method: "POST", path: () => "/ws/ticket", as: "user" as As };
  const ticketBase = () => ({ feed: "device", deviceId: W.held });
  groups.push([
    "feed ticket: fields",
    [
      ...fieldCases(ticketRoute, ticketBase, "feed", ["users", "ADMIN", "", null, 1, [], {}, "device\u0000"]),
      ...fieldCases(ticketRoute, ticketBase, "deviceId", BAD_ID_VALUES),
      {
        ...ticketRoute,
        name: "deviceId with feed user",
        body: () => ({ feed: "user", deviceId: W.held }),
        status: 400,
        code: "VALIDATION_FAILED",
        objects: true,
      },
      ...missingCases(ticketRoute, ticketBase, ["deviceId"]),
      {
        ...ticketRoute,
        name: "admin feed by a user",
        body: () => ({ feed: "admin" }),
        status: 403,
        code: "FORBIDDEN",
        objects: true,
      },
      {
        ...ticketRoute,
        name: "pool feed by a user",
        body: () => ({ feed: "pool", pool: W.pool }),
        status: 403,
        code: "FORBIDDEN",
        objects: true,
      },
      {
        ...ticketRoute,
        as: "admin",
        name: "pool feed without a pool",
        body: () => ({ feed: "pool" }),
        status: 400,
        code: "VALIDATION_FAILED",
        objects: true,
      },
      {
        ...ticketRoute,
        as: "admin",
        name: "pool with feed user",
        body: () => ({ feed: "user", pool: W.pool }),
        status: 400,
        code: "VALIDATION_FAILED",
        objects: true,
      },
      {
        ...ticketRoute,
        as: "admin",
        name: "pool and deviceId together",
        body: () => ({ feed: "pool", pool: W.pool, deviceId: W.held }),
        status: 400,
        code: "VALIDATION_FAILED",
        objects: true,
      },
      ...fieldCases({ ...ticketRoute, as: "admin" as As }, () => ({ feed: "pool", pool: W.pool }), "pool", BAD_ID_VALUES),
      {
        ...ticketRoute,
        as: "service",
        name: "ticket for a service",
        body: () => ({ feed: "user" }),
        status: 403,
        code: "FORBIDDEN",
        objects: true,
      },
    ],
  ]);
  // A plain GET on an upgrade path is told to upgrade; hostile upgrades are in their own describe below.
  groups.push([
    "feed paths without an upgrade",
    [
      "/ws",
      "/ws?ticket=x&since=abc",
      "/ws/admin",
      "/ws/devices/x",
      `/ws/devices/${pct("../x")}`,
      "/ws?since=1e400",
      "/ws/pools/x",
      `/ws/pools/${pct("../x")}`,
    ].map((path): Case => ({
      method: "GET",
      path: () => path,
      as: "user",
      name: `GET ${path}`,
      status: 426,
      code: "UPGRADE_REQUIRED",
      objects: true,
    })),
  ]);

  // Bad input from someone not signed in is refused for sign-in first (or for size), never validated into a 400 leak.
  groups.push([
    "bad input without a token",
    [
      {
        method: "POST",
        path: () => "/scheduler/devices/allocate",
        as: "none",
        name: "junk JSON",
        raw: () => "{",
        headers: JSON_CT,
        status: 401,
        code: "UNAUTHORIZED",
        objects: true,
      },
      {
        method: "POST",
        path: () => "/admin/devices",
        as: "none",
        name: "invalid register body",
        body: () => ({ pool: "a/b" }),
        status: 401,
        code: "UNAUTHORIZED",
        objects: true,
      },
      {
        method: "GET",
        path: () => "/scheduler/allocations?limit=0",
        as: "none",
        name: "invalid query",
        status: 401,
        code: "UNAUTHORIZED",
        objects: true,
      },
      {
        method: "POST",
        path: () => "/scheduler/devices/allocate",
        as: "none",
        name: "huge body",
        raw: () => "x".repeat(70_000),
        headers: JSON_CT,
        status: 413,
        code: "PAYLOAD_TOO_LARGE",
        objects: true,
      },
    ],
  ]);

  groups.push([
    "unknown routes",
    [
      ...[
        ["GET", "/nope"],
        ["POST", "/"],
        ["GET", "/scheduler"],
        ["POST", "/scheduler/devices"],
        ["DELETE", "/scheduler/allocations/x"],
        ["GET", "/scheduler/devices/allocate"],
        ["PATCH", "/scheduler/devices/release"],
        ["PUT", "/admin/devices"],
        ["POST", "/admin/devices/x/reboot"],
        ["PATCH", "/admin/pools"],
        ["GET", "/quotas/user"],
        ["POST", "/quotas/renew"],
        ["GET", "/quotas/user/x/y"],
        ["GET", "/scheduler/devices/available/extra"],
        ["OPTIONS", "/scheduler/allocations"],
        ["GET", `/${pct("é")}`],
      ].map(([method, path]): Case => ({
        method: method!,
        path: () => path!,
        as: "admin",
        name: `${method} ${path}`,
        status: 404,
        code: "ROUTE_NOT_FOUND",
        objects: true,
      })),
      {
        method: "GET",
        path: () => "/nope",
        as: "none",
        name: "GET /nope without a token",
        status: 404,
        code: "ROUTE_NOT_FOUND",
        objects: true,
      },
    ],
  ]);
  return groups;
}

async function send(c: Case, path: string) {
  const token = tokenOf(c.as);
  const service = c.as === "service" ? SERVICE_TOKEN : undefined;
  if (c.raw) {
    const headers: Record<string, string> = { ...c.headers };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (service) headers["X-Service-Token"] = service;
    const res = await exports.default.fetch(new Request(`https://test.local${path}`, { method: c.method, headers, body: c.raw() }));
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      /* the assertion shows the text */
    }
    return { status: res.status, body, res };
  }
  return call(c.method, path, { token, service, body: c.body?.(), headers: c.headers });
}

describe("the billing table's base bodies", () => {
  it("are valid (so each case is refused for the one thing it breaks), checked against the schemas without sending them", () => {
    const base = (label: string) => BODY_ROUTES.find((r) => r.label === label)!.base();
    const schemas: [string, z.ZodType][] = [
      ["top-up", TopUpBody],
      ["pricing plan", PricingPlanBody],
      ["account plan", UserPricingPlanBody],
      ["adjustment", AdjustmentBody],
      ["dead-letter replay", ReplayBody],
      ["reconcile", ReconcileBody],
      ["invoice run", InvoiceRunBody],
      ["internal usage", UsageReportBody],
    ];
    for (const [label, schema] of schemas) expect(schema.safeParse(base(label)).error, label).toBeUndefined();
    expect(UsageReportBody.safeParse(Array.from({ length: 100 }, (_, i) => usage({ allocationId: `bi-batch-${i}` }))).success).toBe(true);
    expect(UsageReportBody.safeParse(usage({ durationSeconds: 3601 })).success, "the span allows one second of rounding").toBe(true);
  });
});

/**
 * Everything a group of refusals must leave alone: the state read through the API, D1's billing tables and, for refusals
 * that must not reach any object, which objects exist.
 */
const groupState = async (objects: boolean) => ({
  state: await snapshot(),
  d1: await d1Snapshot(),
  objects: objects ? await objectIds() : null,
});
type GroupState = Awaited<ReturnType<typeof groupState>>;
const compareGroup = (what: string) => (now: GroupState, before: GroupState) => {
  expect(now.state, what).toEqual(before.state);
  expect(now.d1, `${what}: D1 billing tables`).toEqual(before.d1);
  expect(now.objects, `${what}: no Durable Object may be created`).toEqual(before.objects);
};

describe("table: hostile input is refused with a 4xx and changes nothing", () => {
  // The table needs W, which beforeAll fills: build lazily, but with stable names.
  for (const [group, cases] of buildCases()) {
    describe(group, () => {
      // Two runs of refusals, each read before its first case and compared after its last: first
      // the cases refused before any object is reached (also checked to wake none), then the rest.
      for (const objects of [true, false]) {
        const run = cases.filter((c) => Boolean(c.objects) === objects);
        if (run.length === 0) continue;
        const check = new Unchanged(() => groupState(objects));
        for (const c of run) {
          check.it(c.name, async () => {
            const path = c.path();
            const r = await send(c, path);
            const ctx = `${c.method} ${path.slice(0, 120)} → ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`;
            expect(r.status, ctx).toBeGreaterThanOrEqual(400);
            expect(r.status, ctx).toBeLessThan(500);
            if (c.status !== undefined) expect(r.status, ctx).toBe(c.status);
            expectErrorShape(r.body, ctx);
            if (c.code !== undefined) expect([c.code].flat(), ctx).toContain((r.body as { error: { code: string } }).error.code);
          });
        }
        const what = `${group}: the ${run.length} cases above`;
        check.check(`${what} changed nothing${objects ? " and woke no object" : ""}`, compareGroup(what));
      }
    });
  }
});

// ---- hostile feed upgrades ---------------------------------------------------------------------------

/** Opens `path` as a WebSocket through the Worker; returns the close code and the first frame. */
async function upgrade(
  path: string,
): Promise<{ status: number; code: number | null; first: { type: string; data: { code: string } } | null }> {
  const res = await exports.default.fetch(new Request(`https://test.local${path}`, { headers: { Upgrade: "websocket" } }));
  const ws = res.webSocket;
  if (!ws) return { status: res.status, code: null, first: null };
  const frames: string[] = [];
  const closed = new Promise<number>((resolve) => ws.addEventListener("close", (ev) => resolve(ev.code)));
  ws.addEventListener("message", (ev) => {
    frames.push(String(ev.data));
  });
  ws.accept();
  const code = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(-1), 5000))]);
  if (code === -1) ws.close(1000);
  return { status: res.status, code, first: frames[0] ? JSON.parse(frames[0]) : null };
}

describe("hostile feed upgrades close with a 4xxx code and a feed.error frame, wake no object, change nothing", () => {
  const forged = async (claims: Record<string, unknown>, key: string) => {
    const { sign } = await import("hono/jwt");
    return sign(
      {
        sub: W.user,
        role: "admin",
        scope: "user",
        jti: "x".repeat(32),
        typ: "ws-ticket",
        exp: Math.floor(Date.now() / 1000) + 60,
        ...claims,
      },
      key,
      "HS256",
    );
  };
  const cases: [string, () => Promise<string>, number][] = [
    ["no ticket", async () => "/ws", 4401],
    ["empty ticket", async () => "/ws?ticket=", 4401],
    ["garbage ticket", async () => "/ws?ticket=garbage", 4401],
    ["8 KiB ticket", async () => `/ws?ticket=${"a".repeat(8192)}`, 4401],
    ["the user's bearer token as a ticket", async () => `/ws?ticket=${W.userToken}`, 4401],
    ["ticket signed with the JWT secret itself", async () => `/ws?ticket=${await forged({}, env.JWT_SECRET)}`, 4401],
    ["ticket signed with another key", async () => `/ws?ticket=${await forged({}, "not-the-secret-0123456789abcdef")}`, 4401],
    [
      "expired ticket",
      async () => `/ws?ticket=${await forged({ exp: Math.floor(Date.now() / 1000) - 5 }, `${env.JWT_SECRET}\u0000ws-ticket`)}`,
      4401,
    ],
    ["ticket without typ", async () => `/ws?ticket=${await forged({ typ: undefined }, `${env.JWT_SECRET}\u0000ws-ticket`)}`, 4401],
    [
      "ticket whose subject is a path",
      async () => `/ws?ticket=${await forged({ sub: "../root" }, `${env.JWT_SECRET}\u0000ws-ticket`)}`,
      4401,
    ],
    [
      "user ticket at the admin feed",
      async () => `/ws/admin?ticket=${(await call("POST", "/ws/ticket", { token: W.adminToken, body: {} })).body.ticket}`,
      4401,
    ],
    [
      "device ticket for another device",
      async () =>
        `/ws/devices/${W.free1}?ticket=` +
        `${(await call("POST", "/ws/ticket", { token: W.userToken, body: { feed: "device", deviceId: W.held } })).body.ticket}`,
      4401,
    ],
    ["since is not a number", async () => "/ws?ticket=x&since=abc", 4400],
    ["since is hex", async () => "/ws?ticket=x&since=0x10", 4400],
    ["since is negative", async () => "/ws?ticket=x&since=-1", 4400],
    ["since is huge", async () => "/ws?ticket=x&since=1e400", 4400],
    ["since has a leading zero", async () => "/ws?ticket=x&since=01", 4400],
    ["unknown query parameter", async () => "/ws?ticket=x&token=abc", 4400],
    ["device id is a path", async () => `/ws/devices/${pct("../x")}?ticket=x`, 4404],
    ["device id has NUL", async () => `/ws/devices/${pct("a\u0000b")}?ticket=x`, 4404],
    [
      "pool ticket for another pool",
      async () =>
        `/ws/pools/${uid("bi-otherpool")}?ticket=` +
        `${(await call("POST", "/ws/ticket", { token: W.adminToken, body: { feed: "pool", pool: W.pool } })).body.ticket}`,
      4401,
    ],
    [
      "pool ticket at the admin feed",
      async () =>
        `/ws/admin?ticket=${(await call("POST", "/ws/ticket", { token: W.adminToken, body: { feed: "pool", pool: W.pool } })).body.ticket}`,
      4401,
    ],
    [
      "user-role ticket forged for a pool feed",
      async () =>
        `/ws/pools/${W.pool}?ticket=${await forged({ role: "user", scope: `pool:${W.pool}` }, `${env.JWT_SECRET}\u0000ws-ticket`)}`,
      4403,
    ],
    ["pool id is a path", async () => `/ws/pools/${pct("../x")}?ticket=x`, 4404],
  ];
  // The paths (some carry tickets, which are issued through the API) are made before the state is read.
  const paths = new Map<string, string>();
  const check = new Unchanged(
    () => groupState(true),
    async () => {
      for (const [name, path] of cases) paths.set(name, await path());
    },
  );
  for (const [name, , want] of cases) {
    check.it(name, async () => {
      const r = await upgrade(paths.get(name)!);
      expect(r.status, name).toBe(101);
      expect(r.code, name).toBe(want);
      expect(r.first, name).toMatchObject({
        type: "feed.error",
        data: { code: expect.stringMatching(/^[A-Z][A-Z_]+$/) },
      });
    });
  }
  const what = `the ${cases.length} hostile upgrades above`;
  check.check(`${what} changed nothing and woke no object`, compareGroup(what));
});

// ---- properties -------------------------------------------------------------------------------------

const RUNS = 120;
const junk: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom<unknown>(
    0,
    -1,
    1.5,
    1441,
    1e308,
    -1e308,
    2 ** 53,
    "",
    "60",
    "a/b",
    "x".repeat(129),
    "dév",
    "\u0000",
    null,
    true,
    false,
    [],
    {},
    { a: 1 },
  ),
);
/** Arbitrary bodies: anything JSON, arbitrary keys, or the route's keys with a mix of good and junk values. */
function bodies(good: Record<string, fc.Arbitrary<unknown>>, required: string[] = []): fc.Arbitrary<unknown> {
  const keys = Object.keys(good);
  return fc.oneof(
    fc.jsonValue({ maxDepth: 4 }),
    fc.dictionary(fc.oneof(fc.constantFrom(...keys), fc.string({ maxLength: 8 })), junk, { maxKeys: 6 }),
    fc.record(Object.fromEntries(keys.map((k) => [k, fc.oneof(good[k]!, good[k]!, junk)])), { requiredKeys: [] }),
    fc.record(Object.fromEntries(keys.map((k) => [k, good[k]!])), { requiredKeys: required }),
  );
}
/** Replaces "$self" placeholders by the caller's id. */
const fill = (b: unknown, self: string): unknown =>
  b && typeof b === "object" && !Array.isArray(b)
    ? Object.fromEntries(Object.entries(b).map(([k, v]) => [k, v === "$self" ? self : v]))
    : b;

const AllocationPage = z.object({ items: z.array(AllocationView), nextCursor: z.string().nullable() }).strict();

describe("properties: arbitrary input never gets a 5xx", () => {
  let P2: string;
  let p2Devices: string[];
  beforeAll(async () => {
    P2 = uid("bi-prop");
    p2Devices = [];
    for (let i = 0; i < 2; i++) p2Devices.push((await registerDevice(P2, { deviceId: uid("bi-pdev") })).deviceId);
  });

  it("allocate: arbitrary bodies → a valid allocation or the error shape; a refusal holds nothing", async () => {
    let successes = 0;
    await fc.assert(
      fc.asyncProperty(
        bodies(
          {
            userId: fc.constantFrom("$self", "$self", "someone-else"),
            durationMinutes: fc.integer({ min: 1, max: 1440 }),
            durationSeconds: fc.integer({ min: 30, max: 3600 }),
            pool: fc.constantFrom(P2, P2, P2, "bi-prop-absent"),
            // Devices have 2 cores, 4096 MB, 32768 MB storage; larger specs are refused (also fine).
            spec: fc.record(
              {
                cpuCores: fc.integer({ min: 0, max: 3 }),
                memoryMB: fc.integer({ min: 0, max: 5000 }),
                storageMB: fc.integer({ min: 0, max: 40000 }),
              },
              { requiredKeys: [] },
            ),
            idempotencyKey: fc.string({ minLength: 1, maxLength: 30 }),
          },
          ["pool"],
        ),
        async (raw) => {
          const me = uid("bi-pa");
          const token = await tokenFor(me);
          const body = fill(raw, me);
          const r = await call("POST", "/scheduler/devices/allocate", { token, body });
          expectNo5xx(r, `allocate ${JSON.stringify(body)}`);
          if (r.status < 400) {
            expect(r.status).toBe(201);
            AllocatedResult.strict().parse(r.body);
            expect(r.body.userId).toBe(me);
            successes++;
            const rel = await call("POST", "/scheduler/devices/release", {
              token,
              body: { deviceId: r.body.deviceId },
            });
            expect([200, 404]).toContain(rel.status);
            return;
          }
          const q = await call("GET", `/quotas/user/${me}`, { token });
          expect(q.body.usage.devices, `refused allocate ${JSON.stringify(body)} still holds quota`).toBe(0);
          const list = await call("GET", "/scheduler/allocations", { token });
          expect(AllocationPage.parse(list.body).items).toEqual([]);
        },
      ),
      { numRuns: RUNS },
    );
    expect(successes, "the generator should also produce some valid bodies").toBeGreaterThan(0);
  });

  it("release: arbitrary bodies from a user who holds nothing → always a 4xx, and the holder keeps the device", async () => {
    await fc.assert(
      fc.asyncProperty(
        bodies({
          deviceId: fc.constantFrom(W.held, W.free1, "bi-nothing", ...p2Devices),
          userId: fc.constantFrom("$self", W.user),
        }),
        async (raw) => {
          const me = uid("bi-pr");
          const body = fill(raw, me);
          const r = await call("POST", "/scheduler/devices/release", { token: await tokenFor(me), body });
          expectNo5xx(r, `release ${JSON.stringify(body)}`);
          expect(r.status, JSON.stringify(body)).toBeGreaterThanOrEqual(400);
        },
      ),
      { numRuns: RUNS },
    );
    const d = await call("GET", `/admin/devices/${W.held}`, { token: W.adminToken });
    expect(d.body.allocation).toMatchObject({ allocationId: W.allocationId, userId: W.user });
  });

  it("extend: arbitrary bodies → a valid extension or a 4xx that leaves the allocation as it was", async () => {
    const holder = uid("bi-pe");
    const token = await tokenFor(holder);
    const P3 = uid("bi-pext");
    await registerDevice(P3);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool: P3, durationMinutes: 30 } });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    const path = `/scheduler/allocations/${a.body.allocationId}`;
    let successes = 0;
    await fc.assert(
      fc.asyncProperty(bodies({ additionalMinutes: fc.integer({ min: 1, max: 30 }) }), async (body) => {
        const before = await call("GET", path, { token });
        const r = await call("PUT", `${path}/extend`, { token, body });
        expectNo5xx(r, `extend ${JSON.stringify(body)}`);
        const after = await call("GET", path, { token });
        // Each read signs a fresh access grant; the allocation itself must be as it was.
        if (r.status >= 400) expect(withoutGrant(after.body), `refused extend ${JSON.stringify(body)}`).toEqual(withoutGrant(before.body));
        else {
          AllocationResult.extend({ extendCount: z.number(), extendedMinutes: z.number() }).strict().parse(r.body);
          expect(after.body.extendCount).toBe(before.body.extendCount + 1);
          expect(after.body.durationMinutes).toBe(before.body.durationMinutes + (body as { additionalMinutes: number }).additionalMinutes);
          successes++;
        }
      }),
      { numRuns: RUNS },
    );
    expect(successes, "some bodies should be valid extensions").toBeGreaterThan(0);
    await call("POST", "/scheduler/devices/release", { token, body: { deviceId: a.body.deviceId } });
  });

  it("register: arbitrary bodies → a device that really exists, or a 4xx that registered nothing", async () => {
    const pool = uid("bi-preg");
    let successes = 0;
    await fc.assert(
      fc.asyncProperty(
        bodies({
          deviceId: fc.constantFrom("$fresh", W.free1, W.held),
          pool: fc.constantFrom(pool, "$fresh"),
          node: fc.constantFrom("n1", "n2"),
          cpuCores: fc.integer({ min: 1, max: 1024 }),
          memoryMB: fc.integer({ min: 1, max: 65536 }),
          storageMB: fc.integer({ min: 1, max: 65536 }),
        }),
        async (raw) => {
          const fresh = uid("bi-pd");
          const body =
            raw && typeof raw === "object" && !Array.isArray(raw)
              ? Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, v === "$fresh" ? fresh : v]))
              : raw;
          const r = await call("POST", "/admin/devices", { token: W.adminToken, body });
          expectNo5xx(r, `register ${JSON.stringify(body)}`);
          const named = (body as { deviceId?: unknown })?.deviceId;
          if (r.status < 400) {
            expect(r.status).toBe(201);
            DeviceView.parse(r.body);
            const got = await call("GET", `/admin/devices/${r.body.deviceId}`, { token: W.adminToken });
            expect(got.status).toBe(200);
            expect(got.body).toMatchObject({ pool: (body as { pool: string }).pool, status: "available" });
            expect((await call("DELETE", `/admin/devices/${r.body.deviceId}`, { token: W.adminToken })).status).toBe(200);
            successes++;
          } else if (named === fresh) {
            expect((await call("GET", `/admin/devices/${fresh}`, { token: W.adminToken })).status).toBe(404);
          }
        },
      ),
      { numRuns: RUNS },
    );
    expect(successes, "some bodies should be valid registrations").toBeGreaterThan(0);
    expect(await snapshot()).toMatchObject({
      held: { status: 200, body: { allocation: { allocationId: W.allocationId } } },
      free1: { status: 200, body: { status: "available" } },
    });
  });

  it("quota update: arbitrary bodies → a valid quota, or a 4xx that changed nothing", async () => {
    let successes = 0;
    await fc.assert(
      fc.asyncProperty(
        bodies({
          tier: fc.constantFrom("free", "basic", "pro", "enterprise"),
          limits: fc.record(
            { maxDevices: fc.integer({ min: 0, max: 100 }), maxCpuCores: fc.integer({ min: 0, max: 1000 }) },
            { requiredKeys: [] },
          ),
          suspended: fc.boolean(),
          validUntil: fc
            .date({ min: new Date("2000-01-01T00:00:00Z"), max: new Date("2200-01-01T00:00:00Z"), noInvalidDate: true })
            .map((d) => d.toISOString()),
        }),
        async (body) => {
          const who = uid("bi-pq");
          const before = await call("GET", `/quotas/user/${who}`, { token: W.adminToken });
          const r = await call("PUT", `/quotas/user/${who}?create=true`, { token: W.adminToken, body });
          expectNo5xx(r, `quota update ${JSON.stringify(body)}`);
          const after = await call("GET", `/quotas/user/${who}`, { token: W.adminToken });
          if (r.status >= 400) expect(after.body).toEqual(before.body);
          else {
            QuotaView.parse(r.body);
            expect(after.body).toEqual(r.body);
            successes++;
          }
        },
      ),
      { numRuns: RUNS },
    );
    expect(successes, "some bodies should be valid updates").toBeGreaterThan(0);
  });

  it("renew and pool strategy: arbitrary bodies never get a 5xx", async () => {
    await fc.assert(
      fc.asyncProperty(
        bodies({ extensionDays: fc.integer({ min: 1, max: 3650 }) }),
        bodies({ strategy: fc.constantFrom("least-loaded", "spread", "bin-pack") }),
        async (renew, strategy) => {
          const who = uid("bi-prn");
          const r1 = await call("POST", `/quotas/renew/${who}?create=true`, { token: W.adminToken, body: renew });
          expectNo5xx(r1, `renew ${JSON.stringify(renew)}`);
          if (r1.status < 400) QuotaView.parse(r1.body);
          const r2 = await call("PUT", `/admin/pools/${P2}`, { token: W.adminToken, body: strategy });
          expectNo5xx(r2, `strategy ${JSON.stringify(strategy)}`);
          if (r2.status < 400) expect(r2.body).toMatchObject({ pool: P2, strategy: (strategy as { strategy: string }).strategy });
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("arbitrary strings as path ids: never a 5xx, never a route into somebody's data", async () => {
    const idArb = fc.oneof(
      fc.string({ unit: "binary", maxLength: 140 }),
      fc.string({ unit: "grapheme-ascii", maxLength: 140 }),
      fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:@-]{0,130}$/),
      fc.constantFrom("..", ".", "%", "%%", "%2e%2e", "alc_", `alc_${b64url("root-admin")}_${HEX24}`, "a".repeat(129), "\u0000"),
      fc.string({ maxLength: 10 }).map((s) => `alc_${b64url(s)}_${HEX24}`),
    );
    const before = await snapshot();
    await fc.assert(
      fc.asyncProperty(idArb, fc.boolean(), async (id, encode) => {
        const seg = encode ? pct(id) : id;
        const probes: [string, string, string | null, unknown][] = [
          ["GET", `/scheduler/allocations/${seg}`, W.userToken, undefined],
          ["PUT", `/scheduler/allocations/${seg}/extend`, W.userToken, { additionalMinutes: 1 }],
          ["GET", `/quotas/user/${seg}`, W.userToken, undefined],
          ["GET", `/admin/devices/${seg}`, W.adminToken, undefined],
          ["POST", `/admin/devices/${seg}/force-release`, W.adminToken, undefined],
          ["GET", `/admin/devices/${seg}/history`, W.adminToken, undefined],
          ["GET", `/admin/pools/${seg}/devices`, W.adminToken, undefined],
        ];
        for (const [method, path, token, body] of probes) {
          let r;
          try {
            r = await call(method, path, { token, body });
          } catch (err) {
            // Only a URL the Request constructor itself refuses may throw; that never reaches the Worker.
            expect(String(err)).toMatch(/URL|Invalid/i);
            continue;
          }
          expectNo5xx(r, `${method} ${JSON.stringify(path)}`);
          // `..` as the pool climbs to GET /admin/devices (the URL is normalized before it is sent): the admin's fleet list.
          if (r.status < 400 && new URL(path, "https://test.local").pathname === "/admin/devices") {
            expect(Array.isArray(r.body.items), JSON.stringify(r.body)).toBe(true);
            continue;
          }
          if (r.status < 400) {
            // Only the caller's own quota can be read with a user token here; nothing else exists under random ids.
            expect(path, JSON.stringify(r.body)).toMatch(/^\/quotas\/user\//);
            expect(r.body.userId).toBe(W.user);
          }
        }
      }),
      { numRuns: RUNS },
    );
    expect(await snapshot()).toEqual(before);
  });

  it("arbitrary query strings on list routes: a valid page or the error shape", async () => {
    const key = fc.oneof(fc.constantFrom("limit", "cursor", "status", "userId", "since", "pool"), fc.string({ maxLength: 6 }));
    const value = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.integer().map(String),
      fc.double().map(String),
      fc.constantFrom(
        "0",
        "1",
        "200",
        "201",
        "active",
        "released",
        "pending",
        "available",
        W.user,
        W.other,
        W.pool,
        "1.x",
        `${Date.now()}.alc_x`,
      ),
    );
    const pairs = fc.array(fc.tuple(key, value), { maxLength: 4 });
    const before = await snapshot();
    await fc.assert(
      fc.asyncProperty(pairs, async (kv) => {
        const query = new URLSearchParams(kv).toString();
        const probes: [string, string, z.ZodType | null][] = [
          [`/scheduler/allocations?${query}`, W.userToken, AllocationPage],
          [
            `/scheduler/events?${query}`,
            W.userToken,
            z
              .object({
                events: z.array(
                  z
                    .object({
                      seq: z.number(),
                      type: z.string(),
                      userId: z.literal(W.user),
                      data: z.unknown(),
                      timestamp: z.iso.datetime(),
                    })
                    .strict(),
                ),
                oldestSeq: z.number().nullable(),
                lastSeq: z.number(),
              })
              .strict(),
          ],
          [
            `/scheduler/devices/available?${query}`,
            W.userToken,
            z
              .object({
                pool: z.string(),
                items: z.array(z.object({ deviceId: z.string() }).passthrough()),
                nextCursor: z.string().nullable(),
              })
              .strict(),
          ],
          [
            `/admin/devices/${W.held}/history?${query}`,
            W.adminToken,
            z.object({ items: z.array(z.unknown()), nextCursor: z.number().nullable() }).strict(),
          ],
          [
            `/admin/pools/${W.pool}/devices?${query}`,
            W.adminToken,
            z
              .object({
                items: z.array(z.object({ deviceId: z.string() }).passthrough()),
                nextCursor: z.string().nullable(),
              })
              .strict(),
          ],
        ];
        for (const [path, token, schema] of probes) {
          const r = await call("GET", path, { token });
          expectNo5xx(r, `GET ${path}`);
          if (r.status < 400 && schema) schema.parse(r.body);
        }
      }),
      { numRuns: RUNS },
    );
    expect(await snapshot()).toEqual(before);
  });
});

// ---- billing properties -------------------------------------------------------------------------------

/** Replaces "$name" strings anywhere in a JSON value by `names[name]`. */
function fillDeep(v: unknown, names: Record<string, string>): unknown {
  if (typeof v === "string" && v.startsWith("$") && v in names) return names[v];
  if (Array.isArray(v)) return v.map((x) => fillDeep(x, names));
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fillDeep(x, names)]));
  return v;
}

/**
 * The billing rows of `users` and `allocationIds`, and counts that only these routes move (the queue writes `device` usage,
 * never these).
 */
async function billingRows(users: string[], allocationIds: string[]) {
  const u = users.map(() => "?").join(", ");
  const a = allocationIds.map(() => "?").join(", ");
  const queries: [string, string, unknown[]][] = [
    ["accounts", `SELECT * FROM accounts WHERE user_id IN (${u}) ORDER BY user_id`, users],
    ["ledger", `SELECT * FROM ledger WHERE user_id IN (${u}) OR allocation_id IN (${a}) ORDER BY seq`, [...users, ...allocationIds]],
    [
      "usage",
      `SELECT * FROM usage_records WHERE user_id IN (${u}) OR allocation_id IN (${a}) ORDER BY allocation_id`,
      [...users, ...allocationIds],
    ],
    ["notifications", `SELECT key, user_id, type, data FROM notifications WHERE user_id IN (${u}) ORDER BY key`, users],
    [
      "counts",
      `SELECT (SELECT COUNT(*) FROM accounts) AS accounts, (SELECT COUNT(*) FROM usage_records WHERE source = 'external') AS externalUsage,
      (SELECT COUNT(*) FROM ledger WHERE kind IN ('top_up', 'adjustment', 'starting_credit')) AS credits`,
      [],
    ],
  ];
  const results = await env.DB.batch(queries.map(([, q, args]) => env.DB.prepare(q).bind(...args)));
  return Object.fromEntries(queries.map(([k], i) => [k, results[i]!.results])) as Record<string, Record<string, any>[]>;
}

/** Every account of `users` holds exactly the sum of its ledger. */
async function expectBalancesFollowLedger(users: string[], ctx: string) {
  for (const user of users) {
    const row = await env.DB.prepare(
      "SELECT a.balance, (SELECT COALESCE(SUM(amount), 0) FROM ledger l WHERE l.user_id = a.user_id) AS total FROM accounts a " +
        "WHERE a.user_id = ?",
    )
      .bind(user)
      .first<{ balance: number; total: number }>();
    if (row) expect(row.balance, `${ctx}: balance of ${user} is not the sum of its ledger`).toBe(row.total);
  }
}

const END_REASONS = ["released", "expired", "force_released", "maintenance", "offline", "removed", "orphaned", "idle"] as const;
const UsageResponse = z
  .object({
    recorded: z.number(),
    duplicates: z.number(),
    failed: z.literal(0),
    results: z.array(UsageOutcomeView.strict()),
  })
  .strict();
const TopUpResponse = z
  .object({
    userId: z.string(),
    paymentId: z.string(),
    amountMinor: z.number().int(),
    balanceMinor: z.number().int(),
    currency: z.literal("USD"),
    duplicate: z.boolean(),
  })
  .strict();

describe("properties: billing input never gets a 5xx, and a refusal books nothing", () => {
  it("internal usage: arbitrary bodies → outcomes that match D1, or a 4xx that booked nothing", async () => {
    // A record that passes the schema: releasedAt ≥ allocatedAt and durationSeconds within the span (+1 s).
    const goodRecord = fc
      .record({
        allocationId: fc.constantFrom("$a1", "$a2", "$a3", "$used"),
        deviceId: fc.constantFrom("bi-pu-dev", W.held),
        userId: fc.constantFrom("$u1", "$u1", "$u2"),
        tenantId: fc.constantFrom(undefined, null, "t1", "tenant.2"),
        cpuCores: fc.oneof(fc.integer({ min: 0, max: 8 }), fc.integer({ min: 0, max: 1024 })),
        memoryMB: fc.oneof(fc.integer({ min: 0, max: 8192 }), fc.integer({ min: 0, max: 16_777_216 })),
        storageMB: fc.oneof(fc.integer({ min: 0, max: 65536 }), fc.integer({ min: 0, max: 1_073_741_824 })),
        start: fc.integer({ min: 0, max: 4_102_444_800_000 }),
        spanMs: fc.oneof(fc.integer({ min: 0, max: 7_200_000 }), fc.integer({ min: 0, max: 315_360_000_000 })),
        durationPick: fc.nat(),
        offset: fc.constantFrom("Z", "+00:00"),
        reason: fc.constantFrom(undefined, null, ...END_REASONS),
      })
      .map((r) => {
        const maxDuration = Math.min(Math.ceil(r.spanMs / 1000) + 1, 315_360_000);
        // ISO 8601 (the one time format of requests), as `Z` or as `+00:00`.
        const at = (t: number, offset: string) => new Date(t).toISOString().replace("Z", offset);
        return {
          allocationId: r.allocationId,
          deviceId: r.deviceId,
          userId: r.userId,
          tenantId: r.tenantId,
          durationSeconds: r.durationPick % (maxDuration + 1),
          cpuCores: r.cpuCores,
          memoryMB: r.memoryMB,
          storageMB: r.storageMB,
          allocatedAt: at(r.start, r.offset),
          releasedAt: at(r.start + r.spanMs, r.offset),
          reason: r.reason,
        } as Record<string, unknown>;
      });
    /** A good record with one field replaced by junk, or dropped. */
    const brokenRecord = fc
      .tuple(
        goodRecord,
        fc.constantFrom(
          "allocationId",
          "deviceId",
          "userId",
          "durationSeconds",
          "cpuCores",
          "allocatedAt",
          "releasedAt",
          "reason",
          "extra",
        ),
        junk,
        fc.boolean(),
      )
      .map(([r, k, v, drop]) => {
        const out: Record<string, unknown> = { ...r, [k]: v };
        if (drop) delete out[k];
        return out;
      });
    const record = fc.oneof({ weight: 3, arbitrary: goodRecord }, { weight: 1, arbitrary: brokenRecord });
    const body = fc.oneof(
      record,
      fc.array(record, { minLength: 1, maxLength: 4 }),
      fc.array(record, { minLength: 1, maxLength: 4 }).map((records) => ({ records })),
      bodies({
        allocationId: fc.constantFrom("$a1", "$a2"),
        deviceId: fc.constantFrom("bi-pu-dev"),
        userId: fc.constantFrom("$u1", "$u2"),
        durationSeconds: fc.integer({ min: 0, max: 3600 }),
        cpuCores: fc.integer({ min: 0, max: 4 }),
        memoryMB: fc.integer({ min: 0, max: 4096 }),
        storageMB: fc.integer({ min: 0, max: 4096 }),
        allocatedAt: fc.constantFrom("1970-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        releasedAt: fc.constantFrom("1970-01-01T01:00:00Z", "2026-01-01T01:00:00Z"),
        reason: fc.constantFrom(...END_REASONS),
      }),
    );
    let recorded = 0;
    let duplicates = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(body, async (raw) => {
        const names = {
          $u1: uid("bi-uu"),
          $u2: uid("bi-uu"),
          $a1: uid("bi-ua"),
          $a2: uid("bi-ua"),
          $a3: uid("bi-ua"),
          $used: W.usageId,
        };
        const users = [names.$u1, names.$u2, W.user];
        const ids = [names.$a1, names.$a2, names.$a3, W.usageId];
        const sent = fillDeep(raw, names);
        const ctx = `usage ${JSON.stringify(sent).slice(0, 600)}`;
        const before = await billingRows(users, ids);
        const r = await call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body: sent });
        expectNo5xx(r, ctx);
        if (r.status >= 400) {
          refused++;
          expect(await billingRows(users, ids), `${ctx} → ${r.status}: a refused report changed D1`).toEqual(before);
          return;
        }
        expect(r.status, ctx).toBe(200);
        const out = UsageResponse.parse(r.body);
        const records = (
          Array.isArray(sent) ? sent : "records" in (sent as object) ? (sent as { records: unknown[] }).records : [sent]
        ) as { allocationId: string; userId: string; durationSeconds: number }[];
        expect(
          out.results.map((x) => x.allocationId),
          ctx,
        ).toEqual(records.map((x) => x.allocationId));
        expect(new Set(records.map((x) => x.allocationId)).size, `${ctx}: a batch with a repeated allocationId was accepted`).toBe(
          records.length,
        );
        expect(out.recorded + out.duplicates, ctx).toBe(records.length);
        const after = await billingRows(users, ids);
        const existed = new Set(before.usage!.map((u) => u.allocation_id));
        for (const [i, res] of out.results.entries()) {
          const rec = records[i]!;
          const row = after.usage!.find((u) => u.allocation_id === rec.allocationId);
          const charge = after.ledger!.filter((l) => l.allocation_id === rec.allocationId);
          expect(row, ctx).toBeDefined();
          expect(charge, `${ctx}: one charge per allocation`).toHaveLength(1);
          if (res.status === "recorded") {
            recorded++;
            expect(existed.has(rec.allocationId), `${ctx}: recorded twice`).toBe(false);
            expect(row).toMatchObject({
              user_id: rec.userId,
              duration_seconds: rec.durationSeconds,
              source: "external",
            });
            expect(charge[0]).toMatchObject({ user_id: rec.userId, kind: "charge", amount: 0 - res.amountMinor! });
          } else {
            duplicates++;
            expect(existed.has(rec.allocationId), `${ctx}: "duplicate" of a record that did not exist`).toBe(true);
            // A duplicate changes nothing about the first record, whoever reports it.
            expect(row).toEqual(before.usage!.find((u) => u.allocation_id === rec.allocationId));
          }
        }
        // Users whose every record was a duplicate are charged nothing more.
        const charged = new Set(records.filter((_, i) => out.results[i]!.status === "recorded").map((x) => x.userId));
        for (const user of users.filter((u) => !charged.has(u))) {
          const was = before.accounts!.find((a) => a.user_id === user);
          const now = after.accounts!.find((a) => a.user_id === user);
          if (was) expect(now?.balance, `${ctx}: ${user} reported nothing new but the balance moved`).toBe(was.balance);
        }
        await expectBalancesFollowLedger(users, ctx);
      }),
      { numRuns: RUNS },
    );
    expect(recorded, "the generator should also produce records that are booked").toBeGreaterThan(0);
    expect(refused, "and some that are refused").toBeGreaterThan(0);
    expect(duplicates, "and some duplicates").toBeGreaterThan(0);
  });

  it("top-ups: arbitrary bodies → a credit that matches D1 (once per paymentId), or a 4xx that changed nothing", async () => {
    let credited = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(
        bodies(
          {
            amountMinor: fc.oneof(fc.integer({ min: 1, max: 100_000_000 }), fc.constantFrom(1, 100_000_000)),
            paymentId: fc.constantFrom("$p1", "$p1", "$p2", "$reused"),
            paymentMethod: fc.constantFrom("card", "wire", "m".repeat(50), "é"),
          },
          ["amountMinor", "paymentId"],
        ),
        fc.constantFrom("admin", "service"),
        fc.boolean(),
        fc.boolean(),
        async (raw, by, hasAccount, again) => {
          const me = uid("bi-pt");
          const names = { $p1: uid("bi-pp"), $p2: uid("bi-pp"), $reused: W.paymentId };
          const users = [me, W.user];
          if (hasAccount) expect((await call("GET", `/api/internal/balance/user/${me}`, { service: SERVICE_TOKEN })).status).toBe(200);
          const sent = fillDeep(raw, names);
          const ctx = `top-up by ${by} (account: ${hasAccount}) ${JSON.stringify(sent).slice(0, 300)}`;
          const send = () =>
            call(
              "POST",
              `/billing/users/${me}/top-ups`,
              by === "admin" ? { token: W.adminToken, body: sent } : { service: SERVICE_TOKEN, body: sent },
            );
          const before = await billingRows(users, []);
          const r = await send();
          expectNo5xx(r, ctx);
          if (r.status >= 400) {
            refused++;
            expect(await billingRows(users, []), `${ctx} → ${r.status} ${JSON.stringify(r.body)}: a refused top-up changed D1`).toEqual(
              before,
            );
            return;
          }
          expect(r.status, ctx).toBe(201);
          credited++;
          const b = sent as { amountMinor: number; paymentId: string };
          const start = before.accounts!.find((a) => a.user_id === me)?.balance ?? 1000;
          expect(TopUpResponse.parse(r.body), ctx).toEqual({
            userId: me,
            paymentId: b.paymentId,
            amountMinor: b.amountMinor,
            balanceMinor: start + b.amountMinor,
            currency: "USD",
            duplicate: false,
          });
          const after = await billingRows(users, []);
          expect(after.ledger!.filter((l) => l.entry_id === `top_up:${b.paymentId}`)).toEqual([
            expect.objectContaining({ user_id: me, kind: "top_up", amount: b.amountMinor, balance_after: start + b.amountMinor }),
          ]);
          expect(after.notifications!.filter((n) => n.user_id === me && n.type === "billing.payment_success")).toHaveLength(1);
          await expectBalancesFollowLedger(users, ctx);
          if (again) {
            const r2 = await send();
            expect(r2.status, `${ctx}: the same payment again`).toBe(200);
            expect(r2.body).toEqual({ ...r.body, duplicate: true });
            expect(await billingRows(users, []), `${ctx}: the same payment again changed D1`).toEqual(after);
          }
        },
      ),
      { numRuns: RUNS },
    );
    expect(credited, "some bodies should be valid top-ups").toBeGreaterThan(0);
    expect(refused, "and some refused").toBeGreaterThan(0);
    const w = await env.DB.prepare("SELECT balance FROM accounts WHERE user_id = ?").bind(W.user).first<{ balance: number }>();
    expect(w?.balance, "the user whose paymentId was reused keeps their balance").toBe(1000 + 300 - 50 - 25);
  });
});

describe("repeats the table cannot express (valid, answered 200, and still nothing changes)", () => {
  const repeats: [string, () => Promise<{ status: number; body: any; res: Response }>, Record<string, unknown>][] = [
    [
      "the user's usage record reported again",
      () => call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body: usage() }),
      { recorded: 0, duplicates: 1 },
    ],
    [
      "the user's allocationId reported for the other user (whose account is older than the charge)",
      () =>
        call("POST", "/api/internal/metering/device-usage", {
          service: SERVICE_TOKEN,
          body: usage({ userId: W.other, durationSeconds: 60 }),
        }),
      { recorded: 0, duplicates: 1 },
    ],
    [
      "the user's payment credited again",
      () =>
        call("POST", `/billing/users/${W.user}/top-ups`, {
          token: W.adminToken,
          body: { amountMinor: 300, paymentId: W.paymentId },
        }),
      { duplicate: true, amountMinor: 300 },
    ],
    [
      "the user's adjustment booked again",
      () =>
        call("POST", `/admin/billing/users/${W.user}/adjustments`, {
          token: W.adminToken,
          body: { amountMinor: -50, adjustmentId: W.adjustmentId, memo: "bi" },
        }),
      { duplicate: true, amountMinor: -50 },
    ],
  ];
  for (const [name, send, want] of repeats) {
    it(name, async () => {
      const before = await snapshot();
      const d1 = await d1Snapshot();
      const r = await send();
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body).toMatchObject(want);
      expect(await snapshot()).toEqual(before);
      expect(await d1Snapshot()).toEqual(d1);
    });
  }
});

describe("a release the table cannot express", () => {
  it("ReleaseResult shape is what a real release returns (the schema the table relies on is live)", async () => {
    const pool = uid("bi-live");
    const dev = await registerDevice(pool);
    const token = await tokenFor(uid("bi-live-user"));
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 5 } });
    expect(a.status).toBe(201);
    const r = await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } });
    expect(r.status).toBe(200);
    ReleaseResult.strict().parse(r.body);
  });
});
