/**
 * Hardening, tokens: a bearer token is accepted in its one canonical spelling only (no padding,
 * no altered unused bits), and lives at most TOKENS.maxLifetimeDays (30 days, from its `iat` and
 * from now; TOKEN_MAX_DAYS overrides). Every refusal is 401 in the one error shape.
 */
import { env } from "cloudflare:workers";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { sign } from "hono/jwt";
import { describe, expect, it } from "vitest";
import { createApp } from "../src/app";
import { call, tokenFor, uid } from "./helpers";

const nowS = () => Math.floor(Date.now() / 1000);
const DAY = 86_400;
const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
const app = createApp();

async function get(token: string, overrides: Record<string, string> = {}) {
  const ctx = createExecutionContext();
  const res = await app.fetch(
    new Request("https://test.local/scheduler/allocations", { headers: bearer(token) }),
    { ...env, ...overrides },
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return { status: res.status, body: (await res.json()) as any };
}

/** The same signature bytes, another string: the last character's unused low bits flipped. */
function flipUnusedBits(token: string): string {
  const [h, p, s] = token.split(".") as [string, string, string];
  const last = B64.indexOf(s[s.length - 1]!);
  // A 32-byte HMAC is 43 characters: 258 bits for 256, so the last character's two low bits are unused.
  return `${h}.${p}.${s.slice(0, -1)}${B64[last ^ 1]}`;
}

describe("bearer tokens: one spelling", () => {
  it("the canonical token works; padding or altered unused bits are refused with 401", async () => {
    const token = await tokenFor(uid("canon"));
    expect((await get(token)).status).toBe(200);
    const [h, p, s] = token.split(".") as [string, string, string];
    const variants = [`${token}=`, `${h}.${p}=.${s}`, `${h}=.${p}.${s}`, flipUnusedBits(token), `${h}.${p}.${s}==`];
    for (const v of variants) {
      expect(v).not.toBe(token);
      const r = await get(v);
      expect(r.status, v).toBe(401);
      expect(r.body.error.code).toBe("UNAUTHORIZED");
    }
  });
});

describe("bearer tokens: a bounded lifetime", () => {
  const signed = (claims: Record<string, unknown>) => sign({ sub: uid("life"), role: "user", ...claims }, env.JWT_SECRET, "HS256");

  it("an exp a century ahead, or more than 30 days after iat, is refused; 29 days is accepted", async () => {
    const refused = [
      await signed({ iat: nowS(), exp: nowS() + 100 * 365 * DAY }),
      await signed({ exp: nowS() + 100 * 365 * DAY }),
      await signed({ iat: nowS(), exp: nowS() + 31 * DAY }),
      // Issued 60 days ago for 61 days: still valid by exp, but it lived longer than allowed.
      await signed({ iat: nowS() - 60 * DAY, exp: nowS() + DAY }),
    ];
    for (const t of refused) {
      const r = await get(t);
      expect(r.status).toBe(401);
      expect(r.body.error.message).toMatch(/longer than 30 days/);
    }
    expect((await get(await signed({ iat: nowS(), exp: nowS() + 29 * DAY }))).status).toBe(200);
  });

  it("TOKEN_MAX_DAYS sets the bound (and a nonsense value keeps the default)", async () => {
    const t45 = await signed({ iat: nowS(), exp: nowS() + 45 * DAY });
    expect((await get(t45)).status).toBe(401);
    expect((await get(t45, { TOKEN_MAX_DAYS: "60" })).status).toBe(200);
    expect((await get(t45, { TOKEN_MAX_DAYS: "-5" })).status).toBe(401);
    expect((await get(await signed({ iat: nowS(), exp: nowS() + 2 * DAY }), { TOKEN_MAX_DAYS: "1" })).status).toBe(401);
  });

  it("the demo and test tokens (7 days) stay valid", async () => {
    const r = await call("GET", "/scheduler/allocations", { token: await tokenFor(uid("week")) });
    expect(r.status).toBe(200);
  });
});

describe("bearer tokens: key rotation", () => {
  const OLD = "the-key-before-rotation-0123456789abcdef";

  it("issued tokens name their key (kid); after a rotation the previous key still verifies its own tokens, never others", async () => {
    const { issueToken, keyId } = await import("../src/auth");
    const user = uid("rot");
    const oldToken = await issueToken(OLD, user);
    const header = JSON.parse(atob(oldToken.split(".")[0]!.replace(/-/g, "+").replace(/_/g, "/")));
    expect(header).toEqual({ alg: "HS256", typ: "JWT", kid: await keyId(OLD) });
    // Not rotated: the old key means nothing.
    expect((await get(oldToken)).status).toBe(401);
    // Rotated: JWT_SECRET is new, the old one is JWT_SECRET_PREVIOUS.
    const rotated = { JWT_SECRET_PREVIOUS: OLD };
    expect((await get(oldToken, rotated)).status).toBe(200);
    expect((await get(await tokenFor(uid("new")), rotated)).status).toBe(200);
    // A token signed with the old key but naming no kid, or the new key's kid, is checked with the new key: refused.
    const noKid = await sign({ sub: user, role: "user", iat: nowS(), exp: nowS() + 3600 }, OLD, "HS256");
    expect((await get(noKid, rotated)).status).toBe(401);
    const [, p, s] = oldToken.split(".") as [string, string, string];
    const newKid = btoa(JSON.stringify({ alg: "HS256", typ: "JWT", kid: await keyId(env.JWT_SECRET) }))
      .replace(/\+/g, "-")
      .replace(/\//g, "_")
      .replace(/=+$/, "");
    expect((await get(`${newKid}.${p}.${s}`, rotated)).status).toBe(401);
    // A previous key too short to be safe stops the service like any other bad secret.
    const weak = await get(oldToken, { JWT_SECRET_PREVIOUS: "short" });
    expect(weak.status).toBe(503);
    expect(weak.body.error.code).toBe("SERVICE_MISCONFIGURED");
  });
});
