/**
 * Hardening, per-user token revocation: after POST /admin/users/{userId}/tokens/revoke the user's
 * tokens issued before its time are refused with 401 TOKEN_REVOKED on every route (feed tickets
 * too), tokens issued after it work, other users are untouched; `before` may not be in the future,
 * never moves the time back, and only an admin may revoke. Each revocation is audited.
 */
import { env } from "cloudflare:workers";
import { sign } from "hono/jwt";
import { afterEach, describe, expect, it, vi } from "vitest";
import { SERVICE_TOKEN, call, sleep, tokenFor, uid } from "./helpers";

const nowS = () => Math.floor(Date.now() / 1000);
const admin = () => tokenFor("revoking-admin", "admin");
const revoke = async (userId: string, body?: unknown, token?: string) =>
  call("POST", `/admin/users/${userId}/tokens/revoke`, { token: token ?? (await admin()), body });
const allocations = (token: string) => call("GET", "/scheduler/allocations", { token });
/** A user token issued at `iat` (seconds), valid an hour from now. */
const issuedAt = (userId: string, iat: number) => sign({ sub: userId, role: "user", iat, exp: nowS() + 3600 }, env.JWT_SECRET, "HS256");
/** Tokens carry whole seconds: one issued in the revocation's second counts as before it. */
const nextSecond = () => sleep(1000 - (Date.now() % 1000) + 5);

afterEach(() => vi.restoreAllMocks());

describe("revoking a user's tokens", () => {
  it("the old token is refused everywhere with TOKEN_REVOKED, a new one works, another user's is untouched", async () => {
    const user = uid("revoked");
    const other = uid("bystander");
    const old = await tokenFor(user);
    const otherToken = await tokenFor(other);
    expect((await allocations(old)).status).toBe(200);
    const r = await revoke(user);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ userId: user, previous: null });
    expect(Date.parse(r.body.notBefore)).toBeLessThanOrEqual(Date.now());
    for (const [method, path] of [
      ["GET", "/scheduler/allocations"],
      ["GET", `/billing/users/${user}/balance`],
      ["POST", "/ws/ticket"],
    ] as const) {
      const refused = await call(method, path, { token: old, body: method === "POST" ? { feed: "user" } : undefined });
      expect(refused.status, path).toBe(401);
      expect(refused.body.error).toMatchObject({ code: "TOKEN_REVOKED", details: { notBefore: r.body.notBefore } });
    }
    expect((await allocations(otherToken)).status).toBe(200);
    await nextSecond();
    expect((await allocations(await tokenFor(user))).status).toBe(200);
  });

  it("`before` in the past refuses only tokens issued before it; a later call never moves the time back", async () => {
    const user = uid("cutoff");
    const hourAgo = nowS() - 3600;
    const tenMinutesAgo = nowS() - 600;
    const before = new Date((nowS() - 1800) * 1000).toISOString();
    const r = await revoke(user, { before });
    expect(r.status).toBe(200);
    expect(r.body.notBefore).toBe(before);
    expect((await allocations(await issuedAt(user, hourAgo))).status).toBe(401);
    expect((await allocations(await issuedAt(user, tenMinutesAgo))).status).toBe(200);
    expect((await allocations(await issuedAt(user, nowS() - 1800))).status, "issued at the second itself").toBe(200);
    // An earlier time changes nothing: the later one stands.
    const back = await revoke(user, { before: new Date(hourAgo * 1000 - 86_400_000).toISOString() });
    expect(back.body).toEqual({ userId: user, notBefore: before, previous: before });
    expect((await allocations(await issuedAt(user, tenMinutesAgo))).status).toBe(200);
    // A later one moves it on.
    const later = await revoke(user, { before: new Date((nowS() - 60) * 1000).toISOString() });
    expect(later.body.previous).toBe(before);
    expect((await allocations(await issuedAt(user, tenMinutesAgo))).status).toBe(401);
  });

  it("a token without iat cannot show it came after, and is refused once the user is revoked", async () => {
    const user = uid("no-iat");
    const bare = await sign({ sub: user, role: "user", exp: nowS() + 3600 }, env.JWT_SECRET, "HS256");
    expect((await allocations(bare)).status).toBe(200);
    expect((await revoke(user, { before: new Date(Date.now() - 86_400_000).toISOString() })).status).toBe(200);
    expect((await allocations(bare)).body.error.code).toBe("TOKEN_REVOKED");
  });

  it("an admin's own tokens can be revoked by another admin: the old admin token loses the admin routes", async () => {
    const target = uid("ex-admin");
    const old = await tokenFor(target, "admin");
    expect((await call("GET", "/admin/pools", { token: old })).status).toBe(200);
    expect((await revoke(target)).status).toBe(200);
    const r = await call("GET", "/admin/pools", { token: old });
    expect(r.status).toBe(401);
    expect(r.body.error.code).toBe("TOKEN_REVOKED");
  });

  it("is audited as tokens.revoke and shown in GET /admin/users", async () => {
    const user = uid("listed");
    expect((await call("GET", `/billing/users/${user}/balance`, { token: await tokenFor(user) })).status).toBe(200);
    const actor = uid("revoker");
    const r = await revoke(user, undefined, await tokenFor(actor, "admin"));
    const log = await call("GET", `/admin/audit?target=user:${user}`, { token: await admin() });
    expect(log.body.items).toEqual([
      {
        seq: expect.any(Number),
        at: expect.any(String),
        actor,
        action: "tokens.revoke",
        target: `user:${user}`,
        change: { before: r.body.notBefore, previous: null, notBefore: r.body.notBefore },
        requestId: r.res.headers.get("X-Request-Id"),
      },
    ]);
    const row = await env.DB.prepare("SELECT actor FROM token_revocations WHERE user_id = ?").bind(user).first();
    expect(row).toEqual({ actor });
    const page = await call("GET", `/admin/users?cursor=${user.slice(0, -1)}&limit=200`, { token: await admin() });
    const listed = page.body.items.find((i: { userId: string }) => i.userId === user);
    expect(listed.tokensNotBefore).toBe(r.body.notBefore);
  });
});

describe("who may revoke, and what", () => {
  it("`before` in the future is 400 and writes nothing; so is a malformed body", async () => {
    const user = uid("future");
    for (const body of [{ before: new Date(Date.now() + 60_000).toISOString() }, { before: "yesterday" }, { before: 5 }, { when: "x" }]) {
      const r = await revoke(user, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.code).toBe("VALIDATION_FAILED");
    }
    expect(await env.DB.prepare("SELECT 1 FROM token_revocations WHERE user_id = ?").bind(user).first()).toBeNull();
    const log = await call("GET", `/admin/audit?target=user:${user}`, { token: await admin() });
    expect(log.body.items).toEqual([]);
    expect((await allocations(await tokenFor(user))).status).toBe(200);
  });

  it("a user cannot revoke anyone (not even themself), a service cannot, nobody without a token can", async () => {
    const user = uid("victim");
    const userToken = await tokenFor(user);
    const self = uid("self");
    for (const [token, who] of [
      [userToken, user],
      [await tokenFor(self), self],
    ]) {
      const r = await revoke(who!, {}, token);
      expect(r.status).toBe(403);
      expect(r.body.error.code).toBe("FORBIDDEN");
    }
    const bySvc = await call("POST", `/admin/users/${user}/tokens/revoke`, { service: SERVICE_TOKEN, body: {} });
    expect(bySvc.status).toBe(403);
    expect((await call("POST", `/admin/users/${user}/tokens/revoke`, { body: {} })).status).toBe(401);
    expect(await env.DB.prepare("SELECT 1 FROM token_revocations WHERE user_id IN (?, ?)").bind(user, self).first()).toBeNull();
    expect((await allocations(userToken)).status).toBe(200);
  });
});

describe("the per-isolate cache", () => {
  it("a revocation written by another isolate is seen here once this isolate's cached read is older than 30 s", async () => {
    const user = uid("lagged");
    const old = await tokenFor(user);
    expect((await allocations(old)).status).toBe(200); // read and cached: not revoked
    // Another isolate revoked the user: only D1 knows.
    await env.DB.prepare("INSERT INTO token_revocations (user_id, not_before, actor, updated_at) VALUES (?, ?, 'elsewhere', ?)")
      .bind(user, Date.now(), Date.now())
      .run();
    expect((await allocations(old)).status, "within the cache time this isolate has not heard").toBe(200);
    vi.useFakeTimers({ now: Date.now() + 31_000, toFake: ["Date"] });
    try {
      expect((await allocations(old)).body.error?.code).toBe("TOKEN_REVOKED");
    } finally {
      vi.useRealTimers();
    }
  });

  it("when D1 cannot be read, a user this isolate has not read is let through and the failure is logged", async () => {
    const user = uid("unread");
    const errors = vi.spyOn(console, "error");
    await env.DB.exec("ALTER TABLE token_revocations RENAME TO token_revocations_off");
    let r;
    try {
      r = await allocations(await tokenFor(user));
    } finally {
      await env.DB.exec("ALTER TABLE token_revocations_off RENAME TO token_revocations");
    }
    expect(r.status).toBe(200);
    const lines = errors.mock.calls.map((c) => String(c[0])).filter((l) => l.includes("token revocations could not be read"));
    expect(lines.length).toBe(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: "error", userId: user });
  });
});
