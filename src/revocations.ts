/**
 * Per-user token revocation. D1 `token_revocations` holds, per user, a "not before" time: the
 * user's bearer tokens issued before it are refused (the check is in src/auth.ts). Every
 * authenticated request needs the value, so an isolate keeps what it read for
 * TOKENS.revocationCacheMs: a user costs one D1 read per isolate per that time, not one per
 * request, and a revocation made in another isolate reaches this one within that time. The
 * isolate that writes a revocation knows the new value at once.
 */
import { TOKENS } from "./config";
import type { Env } from "./env";
import { log } from "./log";

/** `notBefore` (epoch ms) or null (never revoked), and when this isolate read it. */
const known = new Map<string, { notBefore: number | null; readAt: number }>();

function remember(userId: string, notBefore: number | null, now: number): void {
  known.delete(userId);
  if (known.size >= TOKENS.revocationCacheMax) known.delete(known.keys().next().value!);
  known.set(userId, { notBefore, readAt: now });
}

/**
 * The user's not-before time, or null. When D1 cannot be read, the value this isolate read last
 * stands (none: not revoked) and is kept for another TOKENS.revocationCacheMs: an outage of D1 does
 * not turn every request away (releasing a device, say, needs no D1), at the price that a
 * revocation this isolate has not seen yet waits for D1 to answer again. Logged as an error.
 */
export async function notBeforeOf(env: Pick<Env, "DB">, userId: string, now = Date.now()): Promise<number | null> {
  const hit = known.get(userId);
  if (hit && now - hit.readAt < TOKENS.revocationCacheMs) return hit.notBefore;
  let notBefore: number | null;
  try {
    const row = await env.DB.prepare("SELECT not_before FROM token_revocations WHERE user_id = ?")
      .bind(userId)
      .first<{ not_before: number }>();
    notBefore = row?.not_before ?? null;
  } catch (err) {
    notBefore = hit?.notBefore ?? null;
    log("error", "token revocations could not be read; using the last value this isolate read", {
      userId,
      notBefore,
      error: String(err),
    });
  }
  remember(userId, notBefore, now);
  return notBefore;
}

/**
 * Revoked: a token issued (`iat`, whole seconds) before `notBefore`. `iat` drops the milliseconds, so
 * a token issued in the same second as the revocation counts as before it (unless the revocation
 * falls on the second exactly); a token without `iat` cannot show when it was issued and is revoked.
 */
export function isRevoked(iat: unknown, notBefore: number | null): boolean {
  if (notBefore === null) return false;
  return typeof iat !== "number" || iat * 1000 < Math.ceil(notBefore / 1000) * 1000;
}

/**
 * The statement that moves a user's not-before to `notBefore` (never back: a later revocation
 * with an earlier time changes nothing), and returns the value that stands. For a D1 batch.
 */
export function revocationStatement(d1: D1Database, userId: string, notBefore: number, actor: string, now: number): D1PreparedStatement {
  return d1
    .prepare(
      `INSERT INTO token_revocations (user_id, not_before, actor, updated_at) VALUES (?1, ?2, ?3, ?4)
      ON CONFLICT (user_id) DO UPDATE SET
        actor = CASE WHEN excluded.not_before > not_before THEN excluded.actor ELSE actor END,
        updated_at = CASE WHEN excluded.not_before > not_before THEN excluded.updated_at ELSE updated_at END,
        not_before = MAX(not_before, excluded.not_before)
      RETURNING not_before`,
    )
    .bind(userId, notBefore, actor, now);
}

/** This isolate wrote `notBefore` for the user: it applies here from now on, without a read. */
export function revocationWritten(userId: string, notBefore: number, now = Date.now()): void {
  remember(userId, notBefore, now);
}
