/** GET /admin/audit: the audit log, newest first (admins only: gated in app.ts). Written by src/audit.ts. */
import { and, desc, eq, lt } from "drizzle-orm";
import { newApp } from "../app-factory";
import { PAGING } from "../config";
import { dbOf } from "../db/client";
import { auditLog } from "../db/schema";
import { iso } from "../domain/time";
import { ok } from "../errors";
import { route } from "../openapi";
import { AuditPage, AuditQuery } from "../schemas";
import { reply, stored } from "./helpers";

export function auditRoutes() {
  const app = newApp();

  app.openapi(
    route({
      method: "get",
      operationId: "listAudit",
      path: "/admin/audit",
      tags: ["audit"],
      security: [{ bearer: [] }],
      summary: "Admins' and services' state-changing actions, newest first",
      description:
        "Filter by `target` (exact, `user:alice`), `actor` and `action`; page with `cursor` = the previous page's `nextCursor` " +
        "(the last `seq`). `change` is what the action changed: its request's fields and, where known, the outcome.",
      request: { query: AuditQuery },
      ok: { status: 200, schema: AuditPage, description: "A page" },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const limit = Math.min(q.limit ?? PAGING.defaultLimit, PAGING.maxLimit);
      const rows = await stored(() =>
        dbOf(c.env)
          .select()
          .from(auditLog)
          .where(
            and(
              q.target !== undefined ? eq(auditLog.target, q.target) : undefined,
              q.actor !== undefined ? eq(auditLog.actor, q.actor) : undefined,
              q.action !== undefined ? eq(auditLog.action, q.action) : undefined,
              q.cursor !== undefined ? lt(auditLog.seq, q.cursor) : undefined,
            ),
          )
          .orderBy(desc(auditLog.seq))
          .limit(limit + 1),
      );
      const page = rows.slice(0, limit);
      const items = page.map((r) => ({
        seq: r.seq,
        at: iso(r.at),
        actor: r.actor,
        action: r.action,
        target: r.target,
        change: changeOf(r.change),
        requestId: r.requestId,
      }));
      return reply(c, ok({ items, nextCursor: rows.length > limit ? String(page[page.length - 1]!.seq) : null }));
    },
  );

  return app;
}

/** The stored change as an object (it is always written as one; anything else is shown under `raw`). */
function changeOf(text: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : { raw: v };
  } catch {
    return { raw: text };
  }
}
