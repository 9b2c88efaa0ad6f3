/**
 * The audit log: one D1 row (`audit_log`) per state-changing action of an admin or a service,
 * read with GET /admin/audit. Actions are `<thing>.<verb>` (quota.update, account.adjust,
 * device.remove...), targets `<kind>:<id>` (user:alice, device:dev-1, pool:default, plan:standard);
 * `change` says what changed (the request's fields and, where known, the outcome), never a secret.
 *
 * Two ways to write a row, by where the change lives:
 * - a change written to D1 puts `auditStatement` in its own D1 batch, so the row commits with the
 *   change or not at all (top-ups, adjustments, pricing, replay, revocations);
 * - a change made by a Durable Object is audited with `recordAudit` after the object said it was
 *   made. If that write fails the change stands (the object cannot be rolled back from here) and
 *   the request is answered as usual: the whole entry goes to an error log line instead, so it is
 *   never lost silently.
 */
import type { Env } from "./env";
import { log } from "./log";

/** Who is calling, as src/auth.ts's Principal says (the shape only: this module sits below the routes). */
type Caller = { kind: "service" } | { kind: "user"; userId: string } | null;

/** What the audit log needs of a request: a route's Hono context. */
export interface AuditContext {
  env: Env;
  get(key: "principal"): Caller;
  get(key: "requestId"): string;
}

export interface AuditEntry {
  /** An admin's user id, `service` (the service token), or a process such as `reconcile`. */
  actor: string;
  action: string;
  target: string;
  change: Record<string, unknown>;
  requestId?: string;
  /** Epoch ms; default now. */
  at?: number;
}

/** A condition (SQL with `?` parameters) the row is written under, checked in the same statement. */
export interface AuditGuard {
  sql: string;
  params: unknown[];
}

/** Who acted: an admin (or user) by their id, a service as `service`. */
export function actorOf(p: Caller): string {
  if (!p) return "anonymous";
  return p.kind === "service" ? "service" : p.userId;
}

/** Who did an action, in which request: for rows whose targets and changes are known later (see billing/usage.ts). */
export type AuditBy = Pick<AuditEntry, "actor" | "action" | "requestId">;

export function auditBy(c: AuditContext, action: string): AuditBy {
  return { actor: actorOf(c.get("principal")), action, requestId: c.get("requestId") };
}

/** The entry for an action of this request's caller. */
export function auditEntry(c: AuditContext, action: string, target: string, change: Record<string, unknown>): AuditEntry {
  return { ...auditBy(c, action), target, change };
}

/** The statement that writes `e` (only when `when` holds, if given): for the D1 batch of the change it records. */
export function auditStatement(d1: D1Database, e: AuditEntry, when?: AuditGuard): D1PreparedStatement {
  const insert = "INSERT INTO audit_log (at, actor, action, target, change, request_id) SELECT ?, ?, ?, ?, ?, ?";
  return d1
    .prepare(when ? `${insert} WHERE ${when.sql}` : insert)
    .bind(e.at ?? Date.now(), e.actor, e.action, e.target, JSON.stringify(e.change), e.requestId ?? null, ...(when?.params ?? []));
}

/** Writes `entry` on its own, after the change it records was made; never throws (see above). */
export async function recordAudit(env: Env, entry: AuditEntry): Promise<void> {
  const at = entry.at ?? Date.now();
  try {
    await auditStatement(env.DB, { ...entry, at }).run();
  } catch (err) {
    log("error", "audit row not written; the change it records was made", {
      requestId: entry.requestId,
      audit: { ...entry, at: new Date(at).toISOString() },
      error: String(err),
    });
  }
}

/** `recordAudit` for an action of this request's caller. */
export function auditFrom(c: AuditContext, action: string, target: string, change: Record<string, unknown>): Promise<void> {
  return recordAudit(c.env, auditEntry(c, action, target, change));
}

/** `recordAudit` for many entries in one D1 batch (a bulk import's rows); never throws. */
export async function recordAudits(env: Env, entries: readonly AuditEntry[]): Promise<void> {
  if (entries.length === 0) return;
  const at = Date.now();
  try {
    await env.DB.batch(entries.map((e) => auditStatement(env.DB, { ...e, at: e.at ?? at })));
  } catch (err) {
    log("error", "audit rows not written; the changes they record were made", {
      requestId: entries[0]!.requestId,
      audit: entries.map((e) => ({ ...e, at: new Date(e.at ?? at).toISOString() })),
      error: String(err),
    });
  }
}
