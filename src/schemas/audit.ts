/** The audit log (GET /admin/audit, src/routes/audit.ts) and token revocation (src/routes/tokens.ts). */
import { z } from "@hono/zod-openapi";
import { IDS } from "../config";
import { Id, Limit } from "./common";

/** `<kind>:<id>`: user:alice, device:dev-1, pool:default, plan:standard, period:2025-01. */
const AuditTarget = z
  .string()
  .max(IDS.maxLength + 32)
  .regex(/^[a-z][a-z_]{0,30}:[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/, "`<kind>:<id>`, e.g. user:alice")
  .openapi({ description: "Exact target, `<kind>:<id>` (user:alice, device:dev-1, pool:default, plan:standard)" });

export const AuditQuery = z
  .object({
    target: AuditTarget.optional(),
    actor: Id.optional().openapi({ description: "An admin's user id, `service`, or `reconcile`" }),
    action: z
      .string()
      .max(100)
      .regex(/^[a-z][a-z_]*\.[a-z][a-z_]*$/, "`<thing>.<verb>`, e.g. quota.update")
      .optional(),
    cursor: z.coerce.number().int().min(0).optional().openapi({ description: "The last `seq` of the previous page" }),
    limit: Limit,
  })
  .strict();

export const AuditItem = z
  .object({
    seq: z.number().int(),
    at: z.string().openapi({ description: "ISO 8601" }),
    actor: z.string(),
    action: z.string(),
    target: z.string(),
    change: z.record(z.string(), z.unknown()).openapi({
      description:
        "Free-form per `action`: what the request changed (for money, the ledger entry and the amounts; for a quota, " +
        "before and after). Rows keep the names of the day they were written. The document leaves it open on purpose.",
    }),
    requestId: z.string().nullable(),
  })
  .openapi("AuditItem");

export const AuditPage = z.object({ items: z.array(AuditItem), nextCursor: z.string().nullable() }).openapi("AuditPage");

export const RevokeTokensBody = z
  .object({
    before: z.iso
      .datetime({ offset: true })
      .optional()
      .openapi({ description: "Tokens issued before this time are refused (default now; not in the future)" }),
  })
  .strict()
  .openapi("RevokeTokens");

export const RevokeTokensView = z
  .object({
    userId: z.string(),
    notBefore: z.string().openapi({ description: "The time that stands (a revocation never moves it back)" }),
    previous: z.string().nullable(),
  })
  .openapi("TokensRevoked");
