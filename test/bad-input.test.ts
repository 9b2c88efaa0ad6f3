/**
 * Invariant 7: bad input gets a 4xx with `{error: {code, message, details?}}`, never a 5xx,
 * and changes nothing.
 *
 * Table-driven hostile requests against every route with a body, params or query, each
 * followed by a full state comparison (the user's quota, allocations and event log, the
 * devices, the pool, and which Durable Objects exist), then property-based runs
 * (fast-check) with arbitrary bodies, path ids and query strings.
 */
import { listDurableObjectIds } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { AllocationResult, AllocationView, DeviceView, QuotaView, ReleaseResult } from "../src/schemas";
import { call, registerDevice, tokenFor, uid, until } from "./helpers";

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
}
let W: World;

const b64url = (s: string) => {
  const bytes = new TextEncoder().encode(s);
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
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
  const a = await call("POST", "/scheduler/devices/allocate", { token: userToken, body: { pool, durationMinutes: 240, idempotencyKey: "bi-key-1" } });
  expect(a.status, JSON.stringify(a.body)).toBe(201);
  expect((await call("GET", `/quotas/user/${other}`, { token: otherToken })).status).toBe(200);
  const free = devs.map((d) => d.deviceId).filter((d) => d !== a.body.deviceId);
  W = { pool, user, other, userToken, otherToken, adminToken, held: a.body.deviceId, free1: free[0]!, free2: free[1]!, allocationId: a.body.allocationId };
  await until(async () => {
    const s = await call("GET", `/admin/pools/${pool}`, { token: adminToken });
    return s.status === 200 && s.body.allocated === 1 && s.body.available === 2;
  });
});

async function objectIds() {
  const ids = (list: DurableObjectId[]) => list.map((i) => i.toString()).sort();
  const [userQuota, device, pool] = await Promise.all([listDurableObjectIds(env.USER_QUOTA), listDurableObjectIds(env.DEVICE), listDurableObjectIds(env.DEVICE_POOL)]);
  return { userQuota: ids(userQuota), device: ids(device), pool: ids(pool) };
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
  };
  const entries = await Promise.all(Object.entries(reads).map(async ([k, path]) => [k, await get(path)] as const));
  return Object.fromEntries(entries);
}

function expectErrorShape(body: unknown, ctx = "") {
  expect(body, ctx).toMatchObject({ error: { code: expect.any(String), message: expect.any(String) } });
  expect(Object.keys(body as object), ctx).toEqual(["error"]);
  const keys = Object.keys((body as { error: object }).error).sort().join(",");
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

type As = "user" | "other" | "admin" | "none";
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

const tokenOf = (as: As) => ({ user: W.userToken, other: W.otherToken, admin: W.adminToken, none: null })[as];
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
function fieldCases(route: Omit<Case, "name" | "body">, base: () => Record<string, unknown>, field: string, values: unknown[], code = "VALIDATION_FAILED"): Case[] {
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
}
const BODY_ROUTES: BodyRoute[] = [
  { label: "allocate", method: "POST", path: () => "/scheduler/devices/allocate", as: "user", base: () => ({ pool: W.pool, durationMinutes: 5 }) },
  { label: "release", method: "POST", path: () => "/scheduler/devices/release", as: "user", base: () => ({ deviceId: W.held }) },
  { label: "extend", method: "PUT", path: () => `/scheduler/allocations/${W.allocationId}/extend`, as: "user", base: () => ({ additionalMinutes: 5 }) },
  { label: "quota update", method: "PUT", path: () => `/quotas/user/${W.user}`, as: "admin", base: () => ({ plan: "pro" }) },
  { label: "quota renew", method: "POST", path: () => `/quotas/renew/${W.user}`, as: "admin", base: () => ({ extensionDays: 5 }) },
  { label: "register device", method: "POST", path: () => "/admin/devices", as: "admin", base: () => ({ deviceId: "bi-never-registered", pool: W.pool, cpuCores: 1, memoryMB: 1, storageMB: 1 }) },
  { label: "update device", method: "PATCH", path: () => `/admin/devices/${W.free1}`, as: "admin", base: () => ({ node: "bi-node-x" }) },
  { label: "pool strategy", method: "PUT", path: () => `/admin/pools/${W.pool}`, as: "admin", base: () => ({ strategy: "spread" }) },
];

const JUNK_JSON = ["{", "nul", "[]", '"str"', "null", "1", "true", "", " ", '{"a":}', "{}}", "{'a':1}", "\u0000", "[".repeat(5000), '{"a":1,}', "undefined", "{\"a\":1}{\"b\":2}"];

function genericBodyCases(r: BodyRoute): Case[] {
  const route = { method: r.method, path: r.path, as: r.as };
  const out: Case[] = [];
  for (const j of JUNK_JSON)
    out.push({ ...route, name: `junk JSON ${JSON.stringify(j.slice(0, 12))}`, raw: () => j, headers: JSON_CT, status: 400, code: ["INVALID_JSON", "VALIDATION_FAILED"], objects: true });
  out.push({ ...route, name: "unknown extra field", body: () => ({ ...r.base(), extra: 1 }), status: 400, code: "VALIDATION_FAILED", objects: true });
  out.push({ ...route, name: "__proto__ key", raw: () => JSON.stringify(r.base()).replace(/^\{/, '{"__proto__":{"admin":true},'), headers: JSON_CT, status: 400, code: "VALIDATION_FAILED", objects: true });
  out.push({ ...route, name: "constructor key", body: () => ({ ...r.base(), constructor: { prototype: 1 } }), status: 400, code: "VALIDATION_FAILED", objects: true });
  for (const [ct, name] of [["text/plain", "text/plain"], ["application/x-www-form-urlencoded", "form"], ["multipart/form-data; boundary=x", "multipart"], ["application/xml", "xml"], ["json", "bare json"]] as const)
    out.push({ ...route, name: `Content-Type ${name} with a JSON body`, raw: () => JSON.stringify(r.base()), headers: { "Content-Type": ct }, status: 415, code: "UNSUPPORTED_MEDIA_TYPE", objects: true });
  out.push({ ...route, name: "no Content-Type with a JSON body", raw: () => JSON.stringify(r.base()), status: 415, code: "UNSUPPORTED_MEDIA_TYPE", objects: true });
  out.push({ ...route, name: "body > 64 KiB", body: () => ({ ...r.base(), pad: "a".repeat(64 * 1024) }), status: 413, code: "PAYLOAD_TOO_LARGE", objects: true });
  out.push({ ...route, name: "1 MiB body", raw: () => `{"pad":"${"b".repeat(1024 * 1024)}"}`, headers: JSON_CT, status: 413, code: "PAYLOAD_TOO_LARGE", objects: true });
  out.push({
    ...route, name: "streamed body > 64 KiB (no Content-Length)",
    raw: () => {
      const chunk = new TextEncoder().encode(`{"pad":"${"c".repeat(80 * 1024)}"}`);
      return new ReadableStream({ start(c) { c.enqueue(chunk); c.close(); } });
    },
    headers: JSON_CT, status: 413, code: "PAYLOAD_TOO_LARGE", objects: true,
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
      ...fieldCases(alloc, allocBase, "spec", ["big", [], null, 5, { cpuCores: -1 }, { cpuCores: 1.5 }, { cpuCores: 1025 }, { cpuCores: "2" }, { gpu: 1 }, { memoryMB: 1e308 }, { storageMB: -0.5 }]),
      ...fieldCases(alloc, allocBase, "idempotencyKey", ["", "k".repeat(201), 5, null, [], {}]),
      // Valid by schema, refused by the service: still nothing changes.
      { ...alloc, name: "pool that does not exist", body: () => ({ pool: uid("bi-nopool"), durationMinutes: 5 }), status: 404, code: "POOL_NOT_FOUND" },
      { ...alloc, name: "spec above the plan's per-device limit", body: () => ({ pool: W.pool, spec: { cpuCores: 1024 } }), status: 409, code: "QUOTA_PER_DEVICE_EXCEEDED" },
      { ...alloc, name: "spec no device of the pool has", body: () => ({ pool: W.pool, spec: { cpuCores: 3 } }), status: 409, code: "NO_DEVICE_AVAILABLE" },
      { ...alloc, name: "idempotency key reused with other parameters", body: () => ({ pool: W.pool, durationMinutes: 7, idempotencyKey: "bi-key-1" }), status: 409, code: "IDEMPOTENCY_KEY_REUSED" },
      { ...alloc, name: "admin-only userId naming another user", body: () => ({ ...allocBase(), userId: W.other }), status: 403, code: "FORBIDDEN", objects: true },
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
      { ...rel, name: "a device that does not exist", body: () => ({ deviceId: "bi-no-such-device" }), status: 404, code: "ALLOCATION_NOT_FOUND" },
      // Not the holder: told "not found", and the holder keeps the device.
      { ...rel, as: "other", name: "the holder's device, by another user", body: () => ({ deviceId: W.held }), status: 404, code: "ALLOCATION_NOT_FOUND" },
      { ...rel, as: "other", name: "the holder's device, by another user naming the holder", body: () => ({ deviceId: W.held, userId: W.user }), status: 403, code: "FORBIDDEN", objects: true },
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
      { ...ext, name: "more minutes than the free plan allows per extend", body: () => ({ additionalMinutes: 31 }), status: 409, code: "EXTEND_TOO_LONG" },
      { ...ext, as: "other", name: "the holder's allocation, by another user", body: extBase, status: 404, code: "ALLOCATION_NOT_FOUND", objects: true },
      ...allocationIdCases().map(([name, id, status]): Case => ({
        method: "PUT", path: () => `/scheduler/allocations/${id()}/extend`, as: "user", name: `allocation id: ${name}`, body: extBase,
        status, code: status === 404 ? "ALLOCATION_NOT_FOUND" : "VALIDATION_FAILED", objects: true,
      })),
    ],
  ]);

  groups.push([
    "get allocation: ids",
    [
      ...allocationIdCases().map(([name, id, status]): Case => ({
        method: "GET", path: () => `/scheduler/allocations/${id()}`, as: "user", name: `as user: ${name}`,
        status, code: status === 404 ? "ALLOCATION_NOT_FOUND" : "VALIDATION_FAILED", objects: true,
      })),
      // Admins may read anyone's allocation, so a forged id naming a user that cannot exist must still not reach an object.
      ...[["invalid UTF-8", INVALID_UTF8], ["slash path", b64url("../x/y")], ["NUL", b64url("\u0000")], ["unicode", b64url("é/x")], ["129 chars", b64url("u".repeat(129))]].map(
        ([name, part]): Case => ({
          method: "GET", path: () => `/scheduler/allocations/alc_${part}_${HEX24}`, as: "admin", name: `as admin, forged for a user id that cannot exist: ${name}`,
          status: 404, code: "ALLOCATION_NOT_FOUND", objects: true,
        }),
      ),
    ],
  ]);

  const q = (method: string, path: () => string, as: As, name: string, status = 400, code: string | string[] = "VALIDATION_FAILED", objects = true): Case => ({ method, path, as, name, status, code, objects });
  const qs = (base: () => string, as: As, params: string[]) => params.map((p) => q("GET", () => `${base()}${base().includes("?") ? "&" : "?"}${p}`, as, p));
  const base = (s: string) => () => s;
  groups.push([
    "list allocations: query",
    qs(base("/scheduler/allocations"), "user", [
      "limit=0", "limit=201", "limit=10000", "limit=-1", "limit=1.5", "limit=abc", "limit=", "limit=1e3", "limit=1&limit=2", "limit=Infinity",
      "status=bogus", "status=ACTIVE", "status=", "status=aborted",
      "cursor=garbage", "cursor=1.", "cursor=.5", "cursor=", `cursor=${"1".repeat(290)}.${"x".repeat(20)}`, "cursor=-1.x", "cursor=abc.def",
      `userId=${pct("a/b")}`, "userId=", `userId=${"u".repeat(129)}`, `userId=${pct("é")}`, "userId=%E0%A4%A",
      "extra=1", "userid=x", "limit=10&foo=bar",
    ]),
  ]);
  groups.push([
    "available devices: query",
    [
      ...qs(base("/scheduler/devices/available"), "user", [`pool=${pct("a/b")}`, "pool=", `pool=${"p".repeat(129)}`, `cursor=${pct("a/b")}`, "limit=0", "limit=201", "limit=x", "extra=1", "status=allocated"]),
      q("GET", () => `/scheduler/devices/available?pool=${uid("bi-nopool")}`, "user", "pool that does not exist", 404, "POOL_NOT_FOUND", false),
    ],
  ]);
  groups.push([
    "events: query",
    qs(base("/scheduler/events"), "user", [
      "since=-1", "since=abc", "since=1.5", "since=1e20", "since=99999999999999999999", "limit=0", "limit=10000", "limit=-5",
      `userId=${pct("a/b")}`, `userId=${pct("\u0000")}`, "extra=1", "since=1&since=2",
    ]),
  ]);
  groups.push(["events: another user's log", [q("GET", () => `/scheduler/events?userId=${W.other}`, "user", "userId=other", 403, "FORBIDDEN")]]);

  // Path ids of every id route.
  const idRoutes: [string, string, (id: string) => string, As, (() => unknown) | undefined][] = [
    ["GET", "quota", (id) => `/quotas/user/${id}`, "admin", undefined],
    ["PUT", "quota update", (id) => `/quotas/user/${id}`, "admin", () => ({ plan: "pro" })],
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
      method, path: () => path(pct(v)), as, body, name: `id ${n}`, status: 400, code: "VALIDATION_FAILED", objects: true,
    }));
    cases.push({ method, path: () => path("%E0%A4%A"), as, body, name: "id with a malformed percent escape", status: 400, code: "VALIDATION_FAILED", objects: true });
    cases.push({ method, path: () => path("bi-unknown-id"), as, body, name: "a valid id that names nothing", objects: false,
      status: label.startsWith("quota") ? 200 : 404 });
    groups.push([`${label}: path id`, label.startsWith("quota") ? cases.filter((c) => c.status !== 200) : cases]);
  }

  const adm = (method: string, path: () => string, name: string, body: () => unknown, status?: number, code?: string | string[]): Case => ({ method, path, as: "admin", name, body, status, code });
  const quotaBase = () => ({ plan: "pro" });
  const qu = { method: "PUT", path: () => `/quotas/user/${W.user}`, as: "admin" as As };
  groups.push([
    "quota update: fields",
    [
      { ...qu, name: "empty object", body: () => ({}), status: 400, code: "VALIDATION_FAILED", objects: true },
      ...fieldCases(qu, quotaBase, "plan", ["platinum", "", "PRO", 1, null, []]),
      ...fieldCases(qu, quotaBase, "limits", ["x", [], null, 5, { maxDevices: -1 }, { maxDevices: 1.5 }, { maxDevices: 100_001 }, { maxDevices: "2" }, { bogus: 1 }, { maxCpuCores: 1e308 }, { maxDevices: null }]),
      ...fieldCases(qu, quotaBase, "suspended", ["yes", 1, 0, null, "true"]),
      ...fieldCases(qu, quotaBase, "validUntil", ["tomorrow", 123, "", "2021-02-30T00:00:00Z", "2021-01-01", "2021-01-01T00:00:00", "2021-13-01T00:00:00Z", "2021-01-01T25:00:00Z", null]),
    ],
  ]);
  const rn = { method: "POST", path: () => `/quotas/renew/${W.user}`, as: "admin" as As };
  groups.push(["quota renew: fields", [...fieldCases(rn, () => ({}), "extensionDays", [0, 3651, -1, 1.5, "30", null, 1e308, true]), ...rawFieldCases(rn, () => ({}), "extensionDays", BAD_RAW_NUMBERS)]]);

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
      adm("POST", () => "/admin/devices", "a device id already registered", () => ({ ...regBase(), deviceId: W.free1 }), 409, "DEVICE_EXISTS"),
      adm("POST", () => "/admin/devices", "the held device's id", () => ({ ...regBase(), deviceId: W.held, pool: uid("bi-steal") }), 409, "DEVICE_EXISTS"),
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
      adm("PATCH", () => `/admin/devices/${W.held}`, "spec of an allocated device", () => ({ cpuCores: 4 }), 409, "DEVICE_BUSY"),
      adm("PATCH", () => `/admin/devices/${W.held}`, "pool of an allocated device", () => ({ pool: uid("bi-move") }), 409, "DEVICE_BUSY"),
    ],
  ]);
  groups.push([
    "device actions refused by state",
    [adm("POST", () => `/admin/devices/${W.free1}/force-release`, "force-release a free device", () => undefined, 409)],
  ]);
  const ps = { method: "PUT", path: () => `/admin/pools/${W.pool}`, as: "admin" as As };
  groups.push([
    "pool strategy: fields",
    [
      { ...ps, name: "empty object", body: () => ({}), status: 400, code: "VALIDATION_FAILED", objects: true },
      ...fieldCases(ps, () => ({ strategy: "spread" }), "strategy", ["random", "", "SPREAD", 1, null, ["spread"]]),
      adm("PUT", () => `/admin/pools/${uid("bi-nopool")}`, "a pool that does not exist", () => ({ strategy: "spread" }), 404, "POOL_NOT_FOUND"),
    ],
  ]);
  groups.push([
    "device history: query",
    qs(() => `/admin/devices/${W.held}/history`, "admin", ["cursor=-1", "cursor=abc", "cursor=1.5", "cursor=1e300", "cursor=99999999999999999999", "limit=0", "limit=201", "extra=1"]),
  ]);
  groups.push([
    "pool devices: query",
    qs(() => `/admin/pools/${W.pool}/devices`, "admin", ["status=bogus", "status=removed", "limit=0", "limit=10000", `cursor=${pct("a/b")}`, `cursor=${"c".repeat(129)}`, "extra=1"]),
  ]);

  // Bad input from someone not signed in is refused for sign-in first (or for size), never validated into a 400 leak.
  groups.push([
    "bad input without a token",
    [
      { method: "POST", path: () => "/scheduler/devices/allocate", as: "none", name: "junk JSON", raw: () => "{", headers: JSON_CT, status: 401, code: "UNAUTHORIZED", objects: true },
      { method: "POST", path: () => "/admin/devices", as: "none", name: "invalid register body", body: () => ({ pool: "a/b" }), status: 401, code: "UNAUTHORIZED", objects: true },
      { method: "GET", path: () => "/scheduler/allocations?limit=0", as: "none", name: "invalid query", status: 401, code: "UNAUTHORIZED", objects: true },
      { method: "POST", path: () => "/scheduler/devices/allocate", as: "none", name: "huge body", raw: () => "x".repeat(70_000), headers: JSON_CT, status: 413, code: "PAYLOAD_TOO_LARGE", objects: true },
    ],
  ]);

  groups.push([
    "unknown routes",
    [
      ...[["GET", "/nope"], ["POST", "/"], ["GET", "/scheduler"], ["POST", "/scheduler/devices"], ["DELETE", "/scheduler/allocations/x"], ["GET", "/scheduler/devices/allocate"],
        ["PATCH", "/scheduler/devices/release"], ["GET", "/admin/devices"], ["POST", "/admin/devices/x/reboot"], ["PATCH", "/admin/pools"], ["GET", "/quotas/user"],
        ["POST", "/quotas/renew"], ["GET", "/quotas/user/x/y"], ["GET", "/scheduler/devices/available/extra"], ["OPTIONS", "/scheduler/allocations"], ["GET", `/${pct("é")}`]].map(
        ([method, path]): Case => ({ method: method!, path: () => path!, as: "admin", name: `${method} ${path}`, status: 404, code: "ROUTE_NOT_FOUND", objects: true }),
      ),
      { method: "GET", path: () => "/nope", as: "none", name: "GET /nope without a token", status: 404, code: "ROUTE_NOT_FOUND", objects: true },
    ],
  ]);
  return groups;
}

async function send(c: Case, path: string) {
  const token = tokenOf(c.as);
  if (c.raw) {
    const headers: Record<string, string> = { ...c.headers };
    if (token) headers.Authorization = `Bearer ${token}`;
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
  return call(c.method, path, { token, body: c.body?.(), headers: c.headers });
}

describe("table: hostile input is refused with a 4xx and changes nothing", () => {
  // The table needs W, which beforeAll fills: build lazily, but with stable names.
  for (const [group, cases] of buildCases()) {
    describe(group, () => {
      for (const c of cases) {
        it(c.name, async () => {
          const before = await snapshot();
          const ids = c.objects ? await objectIds() : null;
          const path = c.path();
          const r = await send(c, path);
          const ctx = `${c.method} ${path.slice(0, 120)} → ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`;
          expect(r.status, ctx).toBeGreaterThanOrEqual(400);
          expect(r.status, ctx).toBeLessThan(500);
          if (c.status !== undefined) expect(r.status, ctx).toBe(c.status);
          expectErrorShape(r.body, ctx);
          if (c.code !== undefined) expect([c.code].flat(), ctx).toContain((r.body as { error: { code: string } }).error.code);
          expect(await snapshot(), ctx).toEqual(before);
          if (ids) expect(await objectIds(), `${ctx}: no Durable Object may be created`).toEqual(ids);
        });
      }
    });
  }
});

// ---- properties -------------------------------------------------------------------------------------

const RUNS = 120;
const junk: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom<unknown>(0, -1, 1.5, 1441, 1e308, -1e308, 2 ** 53, "", "60", "a/b", "x".repeat(129), "dév", "\u0000", null, true, false, [], {}, { a: 1 }),
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
  b && typeof b === "object" && !Array.isArray(b) ? Object.fromEntries(Object.entries(b).map(([k, v]) => [k, v === "$self" ? self : v])) : b;

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
        bodies({
          userId: fc.constantFrom("$self", "$self", "someone-else"),
          durationMinutes: fc.integer({ min: 1, max: 1440 }),
          durationSeconds: fc.integer({ min: 30, max: 3600 }),
          pool: fc.constantFrom(P2, P2, P2, "bi-prop-absent"),
          // Devices have 2 cores, 4096 MB, 32768 MB storage; larger specs are refused (also fine).
          spec: fc.record({ cpuCores: fc.integer({ min: 0, max: 3 }), memoryMB: fc.integer({ min: 0, max: 5000 }), storageMB: fc.integer({ min: 0, max: 40000 }) }, { requiredKeys: [] }),
          idempotencyKey: fc.string({ minLength: 1, maxLength: 30 }),
        }, ["pool"]),
        async (raw) => {
          const me = uid("bi-pa");
          const token = await tokenFor(me);
          const body = fill(raw, me);
          const r = await call("POST", "/scheduler/devices/allocate", { token, body });
          expectNo5xx(r, `allocate ${JSON.stringify(body)}`);
          if (r.status < 400) {
            expect(r.status).toBe(201);
            AllocationResult.strict().parse(r.body);
            expect(r.body.userId).toBe(me);
            successes++;
            const rel = await call("POST", "/scheduler/devices/release", { token, body: { deviceId: r.body.deviceId } });
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
        bodies({ deviceId: fc.constantFrom(W.held, W.free1, "bi-nothing", ...p2Devices), userId: fc.constantFrom("$self", W.user) }),
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
        if (r.status >= 400) expect(after.body, `refused extend ${JSON.stringify(body)}`).toEqual(before.body);
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
          const body = raw && typeof raw === "object" && !Array.isArray(raw)
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
    expect(await snapshot()).toMatchObject({ held: { status: 200, body: { allocation: { allocationId: W.allocationId } } }, free1: { status: 200, body: { status: "available" } } });
  });

  it("quota update: arbitrary bodies → a valid quota, or a 4xx that changed nothing", async () => {
    let successes = 0;
    await fc.assert(
      fc.asyncProperty(
        bodies({
          plan: fc.constantFrom("free", "basic", "pro", "enterprise"),
          limits: fc.record({ maxDevices: fc.integer({ min: 0, max: 100 }), maxCpuCores: fc.integer({ min: 0, max: 1000 }) }, { requiredKeys: [] }),
          suspended: fc.boolean(),
          validUntil: fc.date({ min: new Date("2000-01-01T00:00:00Z"), max: new Date("2200-01-01T00:00:00Z"), noInvalidDate: true }).map((d) => d.toISOString()),
        }),
        async (body) => {
          const who = uid("bi-pq");
          const before = await call("GET", `/quotas/user/${who}`, { token: W.adminToken });
          const r = await call("PUT", `/quotas/user/${who}`, { token: W.adminToken, body });
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
      fc.asyncProperty(bodies({ extensionDays: fc.integer({ min: 1, max: 3650 }) }), bodies({ strategy: fc.constantFrom("least-loaded", "spread", "bin-pack") }), async (renew, strategy) => {
        const who = uid("bi-prn");
        const r1 = await call("POST", `/quotas/renew/${who}`, { token: W.adminToken, body: renew });
        expectNo5xx(r1, `renew ${JSON.stringify(renew)}`);
        if (r1.status < 400) QuotaView.parse(r1.body);
        const r2 = await call("PUT", `/admin/pools/${P2}`, { token: W.adminToken, body: strategy });
        expectNo5xx(r2, `strategy ${JSON.stringify(strategy)}`);
        if (r2.status < 400) expect(r2.body).toMatchObject({ pool: P2, strategy: (strategy as { strategy: string }).strategy });
      }),
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
      fc.constantFrom("0", "1", "200", "201", "active", "released", "pending", "available", W.user, W.other, W.pool, "1.x", `${Date.now()}.alc_x`),
    );
    const pairs = fc.array(fc.tuple(key, value), { maxLength: 4 });
    const before = await snapshot();
    await fc.assert(
      fc.asyncProperty(pairs, async (kv) => {
        const query = new URLSearchParams(kv).toString();
        const probes: [string, string, z.ZodType | null][] = [
          [`/scheduler/allocations?${query}`, W.userToken, AllocationPage],
          [`/scheduler/events?${query}`, W.userToken, z.object({ events: z.array(z.object({ seq: z.number(), type: z.string(), userId: z.literal(W.user), data: z.unknown(), timestamp: z.number() }).strict()), oldestSeq: z.number().nullable(), lastSeq: z.number() }).strict()],
          [`/scheduler/devices/available?${query}`, W.userToken, z.object({ pool: z.string(), items: z.array(z.object({ deviceId: z.string() }).passthrough()), nextCursor: z.string().nullable() }).strict()],
          [`/admin/devices/${W.held}/history?${query}`, W.adminToken, z.object({ items: z.array(z.unknown()), nextCursor: z.number().nullable() }).strict()],
          [`/admin/pools/${W.pool}/devices?${query}`, W.adminToken, z.object({ items: z.array(z.object({ deviceId: z.string() }).passthrough()), nextCursor: z.string().nullable() }).strict()],
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
