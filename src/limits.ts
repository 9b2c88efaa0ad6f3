/**
 * Fair use: every call is counted against one Workers rate limiting binding (wrangler.toml,
 * RATE_LIMITS in src/config.ts) by who makes it — a user by their id, an admin or the service
 * token by theirs, anyone else by their client address — and a user's calls that reach a shared
 * pool count once more against a tighter one. Over a limit, the call is answered 429
 * RATE_LIMITED with Retry-After (the limit's period) before it reaches any object, so one
 * caller's flood costs the others nothing but the Worker's answer. App events are counted per
 * user they are sent to (src/routes/events.ts).
 */
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { principalOf, type AppEnv } from "./auth";
import { RATE_LIMIT_MEMORY, RATE_LIMITS, type RateLimitName } from "./config";
import type { Env } from "./env";
import { errorBody, fail, type Failure } from "./errors";

/** The calls that reach a pool object (its lists, queue and bookings) or mint feed tickets. */
const SHARED: ReadonlyArray<readonly [string, RegExp]> = [
  ["GET", /^\/scheduler\/devices\/available\/?$/],
  ["GET", /^\/scheduler\/pools\/?$/],
  ["POST", /^\/scheduler\/queue\/join\/?$/],
  ["GET", /^\/scheduler\/queue(\/[^/]+)?\/?$/],
  ["DELETE", /^\/scheduler\/queue\/[^/]+\/?$/],
  ["POST", /^\/scheduler\/reservations(\/check)?\/?$/],
  ["GET", /^\/scheduler\/reservations(\/[^/]+)?\/?$/],
  ["DELETE", /^\/scheduler\/reservations\/[^/]+\/?$/],
  ["POST", /^\/ws\/ticket\/?$/],
];

export const sharesPool = (method: string, path: string) => SHARED.some(([m, p]) => m === method && p.test(path));

/** The 429 of limit `name`. */
export function rateLimited(name: RateLimitName): Failure {
  const retryAfterSeconds = RATE_LIMITS[name].periodSeconds;
  return fail(429, "RATE_LIMITED", `Too many requests (${name} limit); try again in ${retryAfterSeconds} s.`, {
    limit: name,
    retryAfterSeconds,
  });
}

/**
 * Callers this isolate saw refused, until when: their next calls are refused here without asking
 * the binding again, so a flood costs the Worker a map lookup per call. A caller is refused for
 * one full period from its first refusal (what Retry-After tells it), at most that much longer
 * than the binding's own window would.
 */
const refusedUntil = new Map<string, number>();

/** Counts one call against limit `name` for `key`; the refusal when it is over. */
export async function overLimit(env: Env, name: RateLimitName, key: string): Promise<Failure | null> {
  const k = `${name}\0${key}`;
  const now = Date.now();
  const until = refusedUntil.get(k);
  if (until !== undefined) {
    if (until > now) return rateLimited(name);
    refusedUntil.delete(k);
  }
  const { success } = await env[RATE_LIMITS[name].binding].limit({ key });
  if (success) return null;
  if (refusedUntil.size >= RATE_LIMIT_MEMORY) refusedUntil.delete(refusedUntil.keys().next().value!);
  refusedUntil.set(k, now + RATE_LIMITS[name].periodSeconds * 1000);
  return rateLimited(name);
}

/** The limits a call counts against, in order: who makes it, then (users) the shared one. */
function limitsOf(c: Context<AppEnv>): Array<[RateLimitName, string]> {
  const p = c.get("principal");
  if (!p) return [["address", address(c)]];
  if (p.kind === "service") return [["operator", "service"]];
  if (p.role === "admin") return [["operator", `admin:${p.userId}`]];
  return sharesPool(c.req.method, c.req.path)
    ? [
        ["user", p.userId],
        ["shared", p.userId],
      ]
    : [["user", p.userId]];
}

/** Tells a limited caller when to try again (the limit's period). */
export function retryAfter(c: Context<AppEnv>, name: RateLimitName): void {
  c.header("Retry-After", String(RATE_LIMITS[name].periodSeconds));
}

function refuse(c: Context<AppEnv>, name: RateLimitName, refused: Failure) {
  retryAfter(c, name);
  return c.json(errorBody(refused), 429);
}

const address = (c: Context<AppEnv>) => c.req.header("cf-connecting-ip") ?? "unknown";

/**
 * Who is calling (src/auth.ts), then their limits: a call over one ends here. A credential that
 * is refused (401) counts against the caller's address first, so guessing tokens is limited too.
 */
export const identify = createMiddleware<AppEnv>(async (c, next) => {
  try {
    c.set("principal", await principalOf(c.req, c.env));
  } catch (err) {
    const refused = await overLimit(c.env, "address", address(c));
    if (refused) return refuse(c, "address", refused);
    throw err;
  }
  for (const [name, key] of limitsOf(c)) {
    const refused = await overLimit(c.env, name, key);
    if (refused) return refuse(c, name, refused);
  }
  await next();
});
