/**
 * WebSocket tickets. Browsers cannot set headers on a WebSocket and a bearer token in a URL
 * ends up in logs, so a signed-in caller trades its token for a ticket (POST /ws/ticket):
 * valid for FEED.ticketTtlSeconds, for one feed, used once. A ticket is signed with a key
 * derived from JWT_SECRET for this purpose only, so it can never pass as a bearer token, and
 * the Worker checks it before any object wakes. The object that holds the feed keeps the
 * nonces it has accepted until they expire, which makes each ticket single-use.
 */
import { sign, verify } from "hono/jwt";
import { FEED, IDS, secretProblem } from "../config";
import type { Env } from "../env";
import type { FeedKind } from "./protocol";

export interface Ticket {
  userId: string;
  role: "user" | "admin";
  /** `user`, `user:<userId>` (an admin watching them), `admin`, `device:<deviceId>` or `pool:<pool>`: the one feed it opens. */
  scope: string;
  nonce: string;
  /** Unix ms. */
  expiresAt: number;
}

/** The ticket key; never one derived from a missing, short or example secret (the Worker refuses to serve then too). */
function ticketKey(env: Pick<Env, "JWT_SECRET">): string {
  const problem = secretProblem("JWT_SECRET", env.JWT_SECRET, true);
  if (problem) throw new Error(`feed tickets need a sound JWT_SECRET: ${problem}`);
  return `${env.JWT_SECRET}\u0000ws-ticket`;
}

/** `name` is the device id of a device feed, the pool of a pool feed, the watched user of an admin's user feed. */
export function scopeOf(feed: FeedKind, name?: string): string {
  return name !== undefined && feed !== "admin" ? `${feed}:${name}` : feed;
}

export async function mintTicket(
  env: Pick<Env, "JWT_SECRET">,
  who: { userId: string; role: "user" | "admin" },
  scope: string,
  now = Date.now(),
): Promise<{ ticket: string; expiresAt: number }> {
  const exp = Math.floor(now / 1000) + FEED.ticketTtlSeconds;
  const nonce = [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
  const ticket = await sign({ sub: who.userId, role: who.role, scope, jti: nonce, exp, typ: "ws-ticket" }, ticketKey(env), "HS256");
  return { ticket, expiresAt: exp * 1000 };
}

/** The ticket's claims, or null when it is not one of ours, has expired, or is for another feed. */
export async function readTicket(env: Pick<Env, "JWT_SECRET">, ticket: string | undefined, scope: string): Promise<Ticket | null> {
  if (!ticket || ticket.length > 2048) return null;
  let p: Record<string, unknown>;
  try {
    p = await verify(ticket, ticketKey(env), "HS256");
  } catch {
    return null;
  }
  if (p.typ !== "ws-ticket" || p.scope !== scope || typeof p.exp !== "number" || typeof p.jti !== "string") return null;
  if (typeof p.sub !== "string" || !IDS.pattern.test(p.sub)) return null;
  return { userId: p.sub, role: p.role === "admin" ? "admin" : "user", scope, nonce: p.jti, expiresAt: p.exp * 1000 };
}
