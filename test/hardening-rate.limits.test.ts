/**
 * Hardening, rate limits (project `limits`: wrangler.toml's own limits, which the other projects
 * raise out of reach). Each caller floods its limit: past it every call is 429 RATE_LIMITED in
 * the one error shape with Retry-After, nothing it asked for happens, and other callers are
 * served as before. Windows are fixed (aligned to the clock), so a flood that straddles a window
 * gets between one and two limits' worth through before its first 429.
 */
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { RATE_LIMITS, type RateLimitName } from "../src/config";
import { admin, call, registerDevice, SERVICE_TOKEN, tokenFor, uid } from "./helpers";

// wrangler.toml's limits, by binding name (vitest.config.ts reads them there and passes them in).
const configured = JSON.parse((env as unknown as { TEST_RATE_LIMITS: string }).TEST_RATE_LIMITS) as Record<string, number>;
const LIMIT = Object.fromEntries(Object.entries(RATE_LIMITS).map(([name, l]) => [name, configured[l.binding]!])) as Record<
  RateLimitName,
  number
>;

type Reply = { status: number; body: any; res: Response };

/** Calls `send` until the first 429 (at most three limits' worth): how many got through, and the 429. */
async function flood(name: RateLimitName, send: () => Promise<Reply>) {
  let passed = 0;
  for (let i = 0; i < LIMIT[name] * 3; i++) {
    const r = await send();
    if (r.status === 429) return { passed, refused: r };
    passed++;
  }
  throw new Error(`${name}: no 429 after ${passed} calls`);
}

function expectRateLimited(r: Reply, name: RateLimitName) {
  expect(r.status).toBe(429);
  expect(r.res.headers.get("Retry-After")).toBe(String(RATE_LIMITS[name].periodSeconds));
  expect(r.body).toEqual({
    error: {
      code: "RATE_LIMITED",
      message: expect.stringContaining(`${name} limit`),
      details: { limit: name, retryAfterSeconds: RATE_LIMITS[name].periodSeconds },
    },
  });
}

const anonymous = (address: string, token?: string) =>
  exports.default
    .fetch(
      new Request("https://test.local/scheduler/allocations", {
        headers: { "cf-connecting-ip": address, ...(token ? { authorization: `Bearer ${token}` } : {}) },
      }),
    )
    .then(async (res) => ({ status: res.status, body: await res.json(), res }) as Reply);

describe("rate limits", () => {
  it("the limits tried here are wrangler.toml's, one per RATE_LIMITS entry", () => {
    for (const n of Object.values(LIMIT)) expect(n).toBeGreaterThan(0);
  });

  it("a user past their limit gets 429 with Retry-After; another user is served; a refused allocate allocates nothing", async () => {
    const pool = uid("rl-user");
    await registerDevice(pool);
    const noisy = await tokenFor(uid("rl-noisy"));
    const quiet = await tokenFor(uid("rl-quiet"));
    const { passed, refused } = await flood("user", () => call("GET", "/scheduler/allocations", { token: noisy }));
    expect(passed).toBeGreaterThanOrEqual(LIMIT.user);
    expect(passed).toBeLessThanOrEqual(2 * LIMIT.user);
    expectRateLimited(refused, "user");
    const blocked = await call("POST", "/scheduler/devices/allocate", { token: noisy, body: { pool, durationMinutes: 5 } });
    expectRateLimited(blocked, "user");
    const free = await call("GET", `/scheduler/devices/available?pool=${pool}`, { token: quiet });
    expect(free.status).toBe(200);
    expect(free.body.items).toHaveLength(1);
    expect((await call("POST", "/scheduler/devices/allocate", { token: quiet, body: { pool, durationMinutes: 5 } })).status).toBe(201);
  });

  it("calls that reach a pool (device lists, queue, bookings, tickets) stop at the tighter shared limit; other calls go on", async () => {
    const pool = uid("rl-shared");
    await registerDevice(pool);
    const shapes: Array<(t: string) => Promise<Reply>> = [
      (t) => call("GET", `/scheduler/devices/available?pool=${pool}`, { token: t }),
      (t) => call("GET", `/scheduler/queue?pool=${pool}`, { token: t }),
      (t) => call("GET", `/scheduler/reservations?pool=${pool}`, { token: t }),
      (t) => call("POST", "/ws/ticket", { token: t }),
    ];
    for (const shape of shapes) {
      const token = await tokenFor(uid("rl-sharer"));
      const { passed, refused } = await flood("shared", () => shape(token));
      expect(passed).toBeGreaterThanOrEqual(LIMIT.shared);
      expect(passed).toBeLessThanOrEqual(2 * LIMIT.shared);
      expectRateLimited(refused, "shared");
      // A join past the shared limit waits for nothing: no entry is made.
      const join = await call("POST", "/scheduler/queue/join", { token, body: { pool, durationMinutes: 5 } });
      expectRateLimited(join, "shared");
      expect((await call("GET", "/scheduler/allocations", { token })).status).toBe(200);
    }
  });

  it("calls without a valid token are counted by client address; another address is served", async () => {
    const { passed, refused } = await flood("address", () => anonymous("198.51.100.7"));
    expect(passed).toBeGreaterThanOrEqual(LIMIT.address);
    expectRateLimited(refused, "address");
    // A forged token counts as no token: guessing is limited the same way.
    expectRateLimited(await anonymous("198.51.100.7", "eyJhbGciOiJIUzI1NiJ9.e30.forged"), "address");
    expect((await anonymous("198.51.100.8")).status).toBe(401);
  });

  it("app events are limited per user they are sent to: the rest of a batch is written, the over-limit items write nothing", async () => {
    const target = uid("rl-target");
    const other = uid("rl-other");
    const event = (userId: string, n: number) => ({
      type: "app.installed",
      eventId: `${userId}-${n}`,
      data: { userId, appId: "com.example.notes", appName: "Notes", deviceId: "dev-app-1", version: "1.0.0" },
    });
    const events = [...Array.from({ length: LIMIT.target + 5 }, (_, n) => event(target, n)), event(other, 0)];
    const r = await call("POST", "/api/internal/events", { service: SERVICE_TOKEN, body: { events } });
    expect(r.status).toBe(202);
    const limited = r.body.results.filter((o: any) => o.error?.code === "RATE_LIMITED");
    expect(limited.length).toBeGreaterThanOrEqual(5);
    expect(limited.every((o: any) => o.userId === target)).toBe(true);
    expect(r.res.headers.get("Retry-After")).toBe(String(RATE_LIMITS.target.periodSeconds));
    expect(r.body.results.at(-1)).toMatchObject({ userId: other, duplicate: false });
    // The target's feed holds exactly the accepted ones.
    const history = await call("GET", `/scheduler/events?userId=${target}&limit=200`, { token: await admin() });
    const apps = history.body.events.filter((e: any) => e.type === "app.installed");
    expect(apps).toHaveLength(events.length - 1 - limited.length);
    // One event over the limit is a 429.
    const single = await call("POST", "/api/internal/events", { service: SERVICE_TOKEN, body: event(target, 999) });
    expectRateLimited(single, "target");
  });

  it("each admin and the service token have their own operator limit", async () => {
    // A fresh admin floods: the full limit, then 429; the service (another key) is still served.
    const root = await tokenFor(uid("rl-admin"), "admin");
    const { passed, refused } = await flood("operator", () => call("GET", "/admin/pools/none/devices?limit=x", { token: root }));
    expect(passed).toBeGreaterThanOrEqual(LIMIT.operator);
    expect(passed).toBeLessThanOrEqual(2 * LIMIT.operator);
    expectRateLimited(refused, "operator");
    // Last in this file: the service stays limited for the rest of the window. (An empty body is a quick 400.)
    const service = () => call("POST", "/api/internal/events", { service: SERVICE_TOKEN, body: {} });
    expect((await service()).status).toBe(400);
    expectRateLimited((await flood("operator", service)).refused, "operator");
  });
});
