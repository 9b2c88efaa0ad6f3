/**
 * Hardening, secrets: a Worker whose JWT_SECRET or SERVICE_TOKEN is missing, empty, shorter
 * than 32 bytes or a committed example value (outside local development) serves nothing: every
 * route answers 503 SERVICE_MISCONFIGURED in the one error shape, and a feed ticket forged with
 * the key an empty secret would give opens nothing. The app runs here with the test bindings
 * changed one at a time; nothing of the store is touched by a refused call.
 */
import { env } from "cloudflare:workers";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { sign } from "hono/jwt";
import { describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { ACCESS, SECRETS, secretProblems } from "../src/config";
import { readTicket } from "../src/feed/tickets";
import { SERVICE_TOKEN, call, registerDevice, tokenFor, uid } from "./helpers";

const app = createApp();
const JWT_EXAMPLE = SECRETS.examples[0]!;
const SERVICE_EXAMPLE = SECRETS.examples[1]!;
const { d: _private, ...publicOnly } = JSON.parse(env.ACCESS_SIGNING_KEY!) as Record<string, string>;
const EXAMPLE_ACCESS_KEY = JSON.stringify({ kty: "EC", crv: "P-256", x: ACCESS.exampleKeyX, y: "y", d: "d" });

async function callWith(overrides: Record<string, string | undefined>, method: string, path: string, init: RequestInit = {}) {
  const ctx = createExecutionContext();
  const res = await app.fetch(new Request(`https://test.local${path}`, { method, ...init }), { ...env, ...overrides }, ctx);
  await waitOnExecutionContext(ctx);
  return { status: res.status, body: (await res.json().catch(() => null)) as any, res };
}

const BAD: [string, Record<string, string | undefined>, RegExp][] = [
  ["JWT_SECRET missing", { JWT_SECRET: undefined }, /JWT_SECRET is not set/],
  ["JWT_SECRET empty", { JWT_SECRET: "" }, /JWT_SECRET is not set/],
  ["JWT_SECRET 31 bytes", { JWT_SECRET: "x".repeat(31) }, /JWT_SECRET is shorter than 32 bytes/],
  ["JWT_SECRET the committed example", { JWT_SECRET: JWT_EXAMPLE }, /JWT_SECRET is the committed example/],
  ["SERVICE_TOKEN missing", { SERVICE_TOKEN: undefined }, /SERVICE_TOKEN is not set/],
  ["SERVICE_TOKEN empty", { SERVICE_TOKEN: "" }, /SERVICE_TOKEN is not set/],
  ["SERVICE_TOKEN 31 bytes", { SERVICE_TOKEN: "y".repeat(31) }, /SERVICE_TOKEN is shorter than 32 bytes/],
  ["SERVICE_TOKEN the committed example", { SERVICE_TOKEN: SERVICE_EXAMPLE }, /SERVICE_TOKEN is the committed example/],
  // Bytes, not characters: 16 two-byte characters are 32 bytes (allowed), 15 are 30 (refused).
  ["JWT_SECRET 15 two-byte characters", { JWT_SECRET: "é".repeat(15) }, /JWT_SECRET is shorter than 32 bytes/],
  // The access grant key is optional, but one that is set must be a P-256 private JWK, and not the example.
  ["ACCESS_SIGNING_KEY not JSON", { ACCESS_SIGNING_KEY: "secret" }, /ACCESS_SIGNING_KEY is not JSON/],
  ["ACCESS_SIGNING_KEY a public key", { ACCESS_SIGNING_KEY: JSON.stringify(publicOnly) }, /ACCESS_SIGNING_KEY must be a P-256 private key/],
  ["ACCESS_SIGNING_KEY_PREVIOUS not a JWK", { ACCESS_SIGNING_KEY_PREVIOUS: "null" }, /ACCESS_SIGNING_KEY_PREVIOUS must be a P-256/],
  [
    "ACCESS_SIGNING_KEY the committed example",
    { ACCESS_SIGNING_KEY: EXAMPLE_ACCESS_KEY },
    /ACCESS_SIGNING_KEY is the committed example key/,
  ],
];

describe("the service refuses to serve without sound secrets", () => {
  for (const [label, overrides, problem] of BAD) {
    it(`${label}: every route is 503 SERVICE_MISCONFIGURED, naming the problem`, async () => {
      const token = await tokenFor(uid("sec"));
      const tries = [
        await callWith(overrides, "GET", "/"),
        await callWith(overrides, "GET", "/scheduler/allocations", { headers: { authorization: `Bearer ${token}` } }),
        await callWith(overrides, "POST", "/scheduler/devices/allocate", {
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify({ durationMinutes: 5 }),
        }),
        await callWith(overrides, "POST", "/ws/ticket", {
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify({}),
        }),
        await callWith(overrides, "POST", "/api/internal/events", {
          headers: { "x-service-token": SERVICE_TOKEN, "content-type": "application/json" },
          body: JSON.stringify({ events: [] }),
        }),
      ];
      for (const r of tries) {
        expect(r.status).toBe(503);
        expect(r.body.error.code).toBe("SERVICE_MISCONFIGURED");
        expect(r.body.error.details.problems.join(" ")).toMatch(problem);
      }
    });
  }

  it("the committed examples are allowed where LOCAL_DEV is true (npm run dev), and only there", async () => {
    const local = { JWT_SECRET: JWT_EXAMPLE, SERVICE_TOKEN: SERVICE_EXAMPLE, LOCAL_DEV: "true" };
    expect(secretProblems(local)).toEqual([]);
    expect((await callWith(local, "GET", "/")).status).toBe(200);
    expect(secretProblems({ ...local, LOCAL_DEV: "1" })).toHaveLength(2);
    expect(secretProblems({ ...local, LOCAL_DEV: undefined })).toHaveLength(2);
    expect(secretProblems({ JWT_SECRET: "é".repeat(16), SERVICE_TOKEN: "z".repeat(32) })).toEqual([]);
    expect(secretProblems({ ...local, ACCESS_SIGNING_KEY: EXAMPLE_ACCESS_KEY })).toEqual([]);
  });

  it("without an access signing key the service serves with grants off: access but a null grant, an empty key set", async () => {
    const off = { ACCESS_SIGNING_KEY: undefined };
    expect(secretProblems({ ...env, ...off })).toEqual([]);
    const keys = await callWith(off, "GET", "/.well-known/jwks.json");
    expect(keys.status).toBe(200);
    expect(keys.body).toEqual({ keys: [] });
    const pool = uid("sec-pool");
    await registerDevice(pool);
    const a = await callWith(off, "POST", "/scheduler/devices/allocate", {
      headers: { authorization: `Bearer ${await tokenFor(uid("sec"))}`, "content-type": "application/json" },
      body: JSON.stringify({ pool }),
    });
    expect(a.status).toBe(201);
    expect(a.body).toMatchObject({ access: {}, accessGrant: null, accessGrantExpiresAt: null });
  });

  it("a feed ticket forged with the key an empty secret would give opens nothing", async () => {
    const victim = uid("victim");
    const now = Math.floor(Date.now() / 1000);
    const forged = await sign(
      { sub: victim, role: "admin", scope: "user", jti: crypto.randomUUID(), exp: now + 60, typ: "ws-ticket" },
      "\u0000ws-ticket",
      "HS256",
    );
    // The Worker refuses before any ticket is read, and the ticket check itself refuses a key from an empty secret.
    const upgrade = await callWith({ JWT_SECRET: "" }, "GET", `/ws?ticket=${encodeURIComponent(forged)}`, {
      headers: { upgrade: "websocket" },
    });
    expect(upgrade.status).toBe(503);
    expect(await readTicket({ JWT_SECRET: "" }, forged, "user")).toBeNull();
    expect(await readTicket({ JWT_SECRET: undefined as unknown as string }, forged, "user")).toBeNull();
    // Nothing was opened or created for the victim: their feed has no events.
    const r = await call("GET", `/scheduler/events?since=0`, { token: await tokenFor(victim) });
    expect(r.status).toBe(200);
    expect(r.body.events).toEqual([]);
  });

  it("API answers carry X-Content-Type-Options: nosniff (successes and errors alike)", async () => {
    const ok = await call("GET", "/");
    expect(ok.res.headers.get("x-content-type-options")).toBe("nosniff");
    const missing = await call("GET", "/no/such/route");
    expect(missing.status).toBe(404);
    expect(missing.res.headers.get("x-content-type-options")).toBe("nosniff");
    const refused = await call("GET", "/scheduler/allocations");
    expect(refused.status).toBe(401);
    expect(refused.res.headers.get("x-content-type-options")).toBe("nosniff");
    const misconfigured = await callWith({ JWT_SECRET: "" }, "GET", "/");
    expect(misconfigured.res.headers.get("x-content-type-options")).toBe("nosniff");
  });
});
