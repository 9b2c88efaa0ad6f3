/**
 * Who is calling. Users and admins carry a bearer JWT (HS256, `sub` = user id, `role`);
 * other services carry `X-Service-Token`, compared in constant time. A user only ever
 * acts on themself; naming another user needs the admin role. A user's tokens issued before
 * their revocation time are refused (src/revocations.ts).
 */
import { createMiddleware } from "hono/factory";
import { verify } from "hono/jwt";
import { IDS, tokenMaxLifetimeSeconds } from "./config";
import type { Env } from "./env";
import { HttpError, fail } from "./errors";
import { isRevoked, notBeforeOf } from "./revocations";
import { b64url } from "./encoding";

export type Principal = { kind: "user"; userId: string; role: "user" | "admin" } | { kind: "service" };
/** `allocationId`: the allocation a request acted on, once known (for its log line). */
export type AppEnv = {
  Bindings: Env;
  Variables: { principal: Principal | null; requestId: string; allocationId?: string };
};

const encoder = new TextEncoder();

/** Constant-time string comparison (length is not secret: tokens are fixed-length). */
export function safeEqual(a: string, b: string): boolean {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  if (x.byteLength !== y.byteLength) {
    crypto.subtle.timingSafeEqual(x, x);
    return false;
  }
  return crypto.subtle.timingSafeEqual(x, y);
}

/**
 * Tokens this isolate has verified, until they expire. A client sends the same token on every
 * request; checking its signature and decoding it again cost as much as a small request's own
 * work. Keyed by the token itself (any change to it misses); bounded, oldest out first.
 */
const verified = new Map<string, { secret: string; payload: Record<string, unknown> }>();
const VERIFIED_MAX = 10_000;

function recall(token: string, secret: string): Record<string, unknown> | null {
  const hit = verified.get(token);
  if (!hit) return null;
  const now = Date.now() / 1000;
  const { exp, nbf } = hit.payload;
  if (hit.secret !== secret || typeof exp !== "number" || exp <= now || (typeof nbf === "number" && nbf > now)) {
    verified.delete(token);
    return null;
  }
  return hit.payload;
}

function remember(token: string, secret: string, payload: Record<string, unknown>): void {
  // Only tokens that will be accepted below are worth keeping (they expire).
  if (typeof payload.exp !== "number") return;
  if (verified.size >= VERIFIED_MAX) verified.delete(verified.keys().next().value!);
  verified.set(token, { secret, payload });
}

export async function principalOf(req: { header(name: string): string | undefined }, env: Env): Promise<Principal | null> {
  const service = req.header("X-Service-Token");
  if (service !== undefined) {
    if (env.SERVICE_TOKEN && safeEqual(service, env.SERVICE_TOKEN)) return { kind: "service" };
    throw new HttpError(fail(401, "UNAUTHORIZED", "The service token is not valid."));
  }
  const auth = req.header("Authorization");
  if (auth === undefined) return null;
  const m = /^Bearer\s+(\S+)$/i.exec(auth);
  if (!m) throw new HttpError(fail(401, "UNAUTHORIZED", "Authorization must be `Bearer <token>`."));
  // One token, one spelling: padding or altered unused bits would make another string pass.
  if (!canonicalJwt(m[1]!)) throw new HttpError(fail(401, "UNAUTHORIZED", "The bearer token is not in its canonical form."));
  const secret = await verifyingKey(m[1]!, env);
  let payload: Record<string, unknown> | null = recall(m[1]!, secret);
  if (!payload) {
    try {
      payload = await verify(m[1]!, secret, "HS256");
    } catch {
      throw new HttpError(fail(401, "UNAUTHORIZED", "The bearer token is invalid or expired."));
    }
    remember(m[1]!, secret, payload);
  }
  // A token that never expires cannot be taken back: refuse it.
  if (typeof payload.exp !== "number") throw new HttpError(fail(401, "UNAUTHORIZED", "The bearer token has no expiry (`exp`)."));
  // Nor can one that lives for ever in practice: at most the configured lifetime, from its issue and from now.
  const max = tokenMaxLifetimeSeconds(env);
  const nowS = Date.now() / 1000;
  const issued = typeof payload.iat === "number" ? payload.iat : nowS;
  if (payload.exp - issued > max || payload.exp - nowS > max)
    throw new HttpError(fail(401, "UNAUTHORIZED", `The bearer token lives longer than ${max / 86_400} days; ask for a new one.`));
  const sub = payload.sub;
  if (typeof sub !== "string" || !IDS.pattern.test(sub))
    throw new HttpError(fail(401, "UNAUTHORIZED", "The token's subject is not a valid user id."));
  // An admin took this user's tokens back (POST /admin/users/{userId}/tokens/revoke); D1 is read per isolate at most
  // once per TOKENS.revocationCacheMs.
  const notBefore = await notBeforeOf(env, sub);
  if (isRevoked(payload.iat, notBefore))
    throw new HttpError(
      fail(401, "TOKEN_REVOKED", "This token was issued before its user's tokens were revoked; ask for a new one.", {
        notBefore: new Date(notBefore!).toISOString(),
      }),
    );
  return { kind: "user", userId: sub, role: payload.role === "admin" ? "admin" : "user" };
}

export const authenticate = createMiddleware<AppEnv>(async (c, next) => {
  c.set("principal", await principalOf(c.req, c.env));
  await next();
});

type Ctx = { get(key: "principal"): Principal | null };

/** A signed-in user or admin (services act through the internal endpoints). */
export function requireUser(c: Ctx): Extract<Principal, { kind: "user" }> {
  const p = c.get("principal");
  if (!p) throw new HttpError(fail(401, "UNAUTHORIZED", "Sign in: send `Authorization: Bearer <token>`."));
  if (p.kind !== "user") throw new HttpError(fail(403, "FORBIDDEN", "This route is for users, not services."));
  return p;
}

export function requireAdmin(c: Ctx): Extract<Principal, { kind: "user" }> {
  const p = requireUser(c);
  if (p.role !== "admin") throw new HttpError(fail(403, "FORBIDDEN", "This route needs the admin role."));
  return p;
}

export function requireService(c: Ctx): void {
  const p = c.get("principal");
  if (!p) throw new HttpError(fail(401, "UNAUTHORIZED", "Send `X-Service-Token`."));
  if (p.kind !== "service") throw new HttpError(fail(403, "FORBIDDEN", "This route is for services."));
}

/** Money in: an operator or another service (payments arrive from a payment service). */
export function requireAdminOrService(c: Ctx): void {
  const p = c.get("principal");
  if (p?.kind === "service") return;
  if (p?.kind === "user" && p.role !== "admin")
    throw new HttpError(fail(403, "FORBIDDEN", "This route needs the admin role or a service token."));
  if (!p) throw new HttpError(fail(401, "UNAUTHORIZED", "Send `Authorization: Bearer <token>` (admin) or `X-Service-Token`."));
}

/** The user a request acts for: the caller, or (admins only) the one it names. */
export function actingUser(c: Ctx, named?: string): string {
  const p = requireUser(c);
  if (named === undefined || named === p.userId) return p.userId;
  if (p.role !== "admin") throw new HttpError(fail(403, "FORBIDDEN", "You may only act on your own account."));
  return named;
}

/** Reading another user's data: same rule as acting. */
export const readableUser = actingUser;

export async function issueToken(
  secret: string,
  userId: string,
  role: "user" | "admin" = "user",
  ttlSeconds = 7 * 86_400,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return signHs256({ sub: userId, role, iat: now, exp: now + ttlSeconds }, secret);
}

/**
 * Key rotation: tokens name their key in a `kid` header (a fingerprint of the secret, never the
 * secret). A token whose `kid` is the fingerprint of `JWT_SECRET_PREVIOUS` is verified with that
 * key (which never signs); every other token, with or without a `kid`, with `JWT_SECRET`.
 */
async function verifyingKey(token: string, env: Env): Promise<string> {
  const previous = env.JWT_SECRET_PREVIOUS;
  if (!previous) return env.JWT_SECRET;
  let kid: unknown;
  try {
    kid = (JSON.parse(atob(token.split(".")[0]!.replace(/-/g, "+").replace(/_/g, "/"))) as { kid?: unknown }).kid;
  } catch {
    return env.JWT_SECRET;
  }
  return typeof kid === "string" && kid === (await keyId(previous)) ? previous : env.JWT_SECRET;
}

/** A key's fingerprint for the `kid` header: the first 8 bytes of its SHA-256, in hex. */
export async function keyId(secret: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(secret)));
  return [...digest.slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** An HS256 JWT with the key's `kid` in its header. */
async function signHs256(payload: Record<string, unknown>, secret: string): Promise<string> {
  const part = (v: unknown) => b64url(encoder.encode(JSON.stringify(v)));
  const data = `${part({ alg: "HS256", typ: "JWT", kid: await keyId(secret) })}.${part(payload)}`;
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return `${data}.${b64url(new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(data))))}`;
}

/**
 * A JWT in its one canonical spelling: three base64url parts without padding, each the exact
 * encoding of its bytes (a changed unused bit in the last character decodes the same but is
 * another string).
 */
function canonicalJwt(token: string): boolean {
  const parts = token.split(".");
  if (parts.length !== 3) return true; // not a JWT at all: the signature check refuses it
  return parts.every((p) => /^[A-Za-z0-9_-]+$/.test(p) && reencoded(p) === p);
}

function reencoded(part: string): string | null {
  try {
    const bin = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  } catch {
    return null;
  }
}
