/**
 * Device access (issue 19): operators or the device-service register a device's endpoints; the
 * holder, and only while the allocation runs, gets them with an ES256 access grant that verifies
 * offline against /.well-known/jwks.json — in the allocate answer, GET /scheduler/allocations/{id},
 * the renewal and the device feed's hello. Nobody else, nothing after the end, nothing in logs.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { admin, call, registerDevice, tokenFor, uid, until } from "./helpers";
import { rawFeed, ticket } from "./feed-helpers";
import type { DeviceFeedState, HelloData } from "../src/feed/protocol";

const ENDPOINTS = { adb: "10.0.4.17:5555", streamUrl: "wss://node-7.example.net/stream/x" };

const b64 = (s: string) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (ch) => ch.charCodeAt(0));
const json = (s: string) => JSON.parse(new TextDecoder().decode(b64(s)));

/** What a device node does: find the key by `kid` in the published set and check the signature, offline. */
async function verifyGrant(token: string): Promise<Record<string, unknown>> {
  const keys = await call("GET", "/.well-known/jwks.json");
  expect(keys.status).toBe(200);
  const [h, p, sig] = token.split(".") as [string, string, string];
  const header = json(h);
  expect(header).toMatchObject({ alg: "ES256", typ: "JWT" });
  const jwk = keys.body.keys.find((k: { kid: string }) => k.kid === header.kid);
  expect(jwk, "the grant's kid is published").toBeDefined();
  const key = await crypto.subtle.importKey("jwk", jwk, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  const good = await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, b64(sig), new TextEncoder().encode(`${h}.${p}`));
  expect(good).toBe(true);
  return json(p);
}

async function rented() {
  const pool = uid("acc");
  const dev = await registerDevice(pool);
  const put = await call("PUT", `/admin/devices/${dev.deviceId}/access`, { token: await admin(), body: { access: ENDPOINTS } });
  expect(put.status, JSON.stringify(put.body)).toBe(200);
  expect(put.body).toEqual({ deviceId: dev.deviceId, endpoints: ["adb", "streamUrl"] });
  const user = uid("holder");
  const token = await tokenFor(user);
  const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 90, idempotencyKey: uid("k") } });
  expect(a.status, JSON.stringify(a.body)).toBe(201);
  return { pool, dev, user, token, a };
}

describe("device access", () => {
  it("the allocate answer carries the endpoints and a grant a node verifies offline", async () => {
    const { dev, user, a } = await rented();
    expect(a.body.access).toEqual(ENDPOINTS);
    const claims = await verifyGrant(a.body.accessGrant);
    expect(claims).toMatchObject({ iss: "edge-device-allocator", sub: user, aud: dev.deviceId, allocationId: a.body.allocationId });
    const exp = (claims.exp as number) * 1000;
    // At most an hour (the allocation runs 90 minutes), and never past its end.
    expect(exp).toBeLessThanOrEqual(Date.now() + 3600_000);
    expect(exp).toBeGreaterThan(Date.now() + 3500_000);
    expect(exp).toBeLessThanOrEqual(Date.parse(a.body.expiresAt));
    expect(a.body.accessGrantExpiresAt).toBe(new Date(exp).toISOString());
  });

  it("a grant never outlives a short allocation", async () => {
    const pool = uid("acc");
    await registerDevice(pool);
    const a = await call("POST", "/scheduler/devices/allocate", { token: await tokenFor(uid("u")), body: { pool, durationMinutes: 5 } });
    expect(a.status).toBe(201);
    const claims = await verifyGrant(a.body.accessGrant);
    expect((claims.exp as number) * 1000).toBeLessThanOrEqual(Date.parse(a.body.expiresAt));
    // Nothing registered: the grant still proves the holding; the map is empty, not null.
    expect(a.body.access).toEqual({});
  });

  it("GET one allocation: the holder gets access, an admin reading it does not, a stranger gets 404", async () => {
    const { token, a } = await rented();
    const mine = await call("GET", `/scheduler/allocations/${a.body.allocationId}`, { token });
    expect(mine.status).toBe(200);
    expect(mine.body.access).toEqual(ENDPOINTS);
    expect(await verifyGrant(mine.body.accessGrant)).toMatchObject({ allocationId: a.body.allocationId });
    const theirs = await call("GET", `/scheduler/allocations/${a.body.allocationId}`, { token: await admin() });
    expect(theirs.status).toBe(200);
    expect(theirs.body).toMatchObject({ access: null, accessGrant: null, accessGrantExpiresAt: null });
    expect((await call("GET", `/scheduler/allocations/${a.body.allocationId}`, { token: await tokenFor(uid("x")) })).status).toBe(404);
    // Lists carry no access at all.
    const list = await call("GET", "/scheduler/allocations", { token });
    expect(list.body.items[0]).not.toHaveProperty("access");
  });

  it("renewal: a fresh grant for the holder; 403 for an admin, 404 for a stranger", async () => {
    const { token, a } = await rented();
    const r = await call("POST", `/scheduler/allocations/${a.body.allocationId}/access`, { token });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ allocationId: a.body.allocationId, deviceId: a.body.deviceId, access: ENDPOINTS });
    const fresh = await verifyGrant(r.body.accessGrant);
    const first = await verifyGrant(a.body.accessGrant);
    expect(fresh.jti).not.toBe(first.jti);
    const byAdmin = await call("POST", `/scheduler/allocations/${a.body.allocationId}/access`, { token: await admin() });
    expect(byAdmin.status).toBe(403);
    const byStranger = await call("POST", `/scheduler/allocations/${a.body.allocationId}/access`, { token: await tokenFor(uid("x")) });
    expect(byStranger.status).toBe(404);
  });

  it("after the end: nothing, in every place — GET, renewal, a repeated allocate key", async () => {
    const { dev, token, a, pool } = await rented();
    expect((await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } })).status).toBe(200);
    const got = await call("GET", `/scheduler/allocations/${a.body.allocationId}`, { token });
    expect(got.body).toMatchObject({ status: "released", access: null, accessGrant: null });
    const renew = await call("POST", `/scheduler/allocations/${a.body.allocationId}/access`, { token });
    expect(renew.status).toBe(409);
    expect(renew.body.error.code).toBe("ALLOCATION_ENDED");
    // The next holder of the device gets it; the first still gets nothing.
    const next = await call("POST", "/scheduler/devices/allocate", { token: await tokenFor(uid("next")), body: { pool } });
    expect(next.status).toBe(201);
    expect(next.body).toMatchObject({ deviceId: dev.deviceId, access: ENDPOINTS });
    expect((await call("GET", `/scheduler/allocations/${a.body.allocationId}`, { token })).body.access).toBeNull();
  });

  it("a repeated key while the allocation runs answers with its access too", async () => {
    const pool = uid("acc");
    const dev = await registerDevice(pool);
    await call("PUT", `/admin/devices/${dev.deviceId}/access`, { token: await admin(), body: { access: ENDPOINTS } });
    const token = await tokenFor(uid("u"));
    const body = { pool, idempotencyKey: uid("k") };
    const first = await call("POST", "/scheduler/devices/allocate", { token, body });
    const repeat = await call("POST", "/scheduler/devices/allocate", { token, body });
    expect(repeat.body.allocationId).toBe(first.body.allocationId);
    expect(repeat.body.access).toEqual(ENDPOINTS);
    await verifyGrant(repeat.body.accessGrant);
    await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } });
    const late = await call("POST", "/scheduler/devices/allocate", { token, body });
    expect(late.body).toMatchObject({ allocationId: first.body.allocationId, access: null, accessGrant: null });
  });

  it("the device feed's hello: the holder's has access and a grant, an admin's has neither", async () => {
    const { dev, token, a } = await rented();
    const open = async (t: string) => {
      const f = await rawFeed(
        `/ws/devices/${dev.deviceId}?ticket=${encodeURIComponent(await ticket(t, { feed: "device", deviceId: dev.deviceId }))}`,
      );
      await until(async () => f.frames.length > 0);
      const h = f.frames[0]!.data as HelloData & { state: DeviceFeedState };
      f.ws.close();
      return h.state;
    };
    const holder = await open(token);
    expect(holder.access).toEqual(ENDPOINTS);
    expect(await verifyGrant(holder.accessGrant!)).toMatchObject({ allocationId: a.body.allocationId, aud: dev.deviceId });
    const operator = await open(await admin());
    expect(operator.access).toBeUndefined();
    expect(operator.accessGrant).toBeUndefined();
  });

  it("the device-service registers with the service token; bad maps are refused; unknown devices 404", async () => {
    const pool = uid("acc");
    const dev = await registerDevice(pool);
    const ok = await call("PUT", `/api/internal/devices/${dev.deviceId}/access`, {
      service: env.SERVICE_TOKEN,
      body: { access: { adb: "h:1" } },
    });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.endpoints).toEqual(["adb"]);
    // The map is replaced whole: {} clears it.
    expect(
      (await call("PUT", `/admin/devices/${dev.deviceId}/access`, { token: await admin(), body: { access: {} } })).body.endpoints,
    ).toEqual([]);
    const token = await admin();
    const bad = async (access: unknown) => (await call("PUT", `/admin/devices/${dev.deviceId}/access`, { token, body: { access } })).status;
    expect(await bad({ "1adb": "x" })).toBe(400);
    expect(await bad({ adb: "" })).toBe(400);
    expect(await bad({ adb: 5 })).toBe(400);
    expect(await bad(Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`e${i}`, "x"])))).toBe(400);
    expect(await bad({ adb: "x".repeat(513) })).toBe(400);
    expect((await call("PUT", `/admin/devices/${uid("none")}/access`, { token, body: { access: {} } })).status).toBe(404);
    // A user may not register access.
    expect(
      (await call("PUT", `/admin/devices/${dev.deviceId}/access`, { token: await tokenFor(uid("u")), body: { access: {} } })).status,
    ).toBe(403);
  });

  it("no endpoint value and no grant reaches the logs", async () => {
    const spies = (["log", "info", "warn", "error"] as const).map((m) => vi.spyOn(console, m));
    try {
      const { token, a, dev } = await rented();
      await call("GET", `/scheduler/allocations/${a.body.allocationId}`, { token });
      await call("POST", `/scheduler/allocations/${a.body.allocationId}/access`, { token });
      await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } });
      const written = spies.flatMap((s) => s.mock.calls.map((args) => args.map(String).join(" "))).join("\n");
      expect(written.length).toBeGreaterThan(0);
      for (const value of Object.values(ENDPOINTS)) expect(written).not.toContain(value);
      expect(written).not.toContain(a.body.accessGrant.split(".")[2]);
    } finally {
      for (const s of spies) s.mockRestore();
    }
  });
});
