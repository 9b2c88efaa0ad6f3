/** The other services' billing routes (/api/internal/*, X-Service-Token: gated in app.ts): usage reports and balances. */
import type { Context } from "hono";
import type { AppEnv } from "../auth";
import { errorBody, fail, ok } from "../errors";
import { newApp, validationFailure } from "../app-factory";
import { jsonBody, route } from "../openapi";
import { fundsFor } from "../billing/ledger";
import { dbOf } from "../db/client";
import { applyUsage, usageOutcomeView } from "../billing/usage";
import { auditBy } from "../audit";
import { BalanceView, ReportUsageResult, UsageReport, UsageReportArray, UsageReportBatch, UsageReportBody, UserParam } from "../schemas";
import { billing, service } from "./billing-shared";
import { balanceView } from "../views";
import { reply } from "./helpers";
import { userOfAllocationId } from "../ids";

export function billingInternalRoutes() {
  const app = newApp();

  app.openapi(
    route({
      method: "post",
      operationId: "reportUsage",
      path: "/api/internal/metering/device-usage",
      tags: ["internal"],
      security: service,
      summary: "Report usage: one record, or up to 100 (idempotent on allocationId)",
      request: jsonBody(UsageReportBody),
      ok: { status: 200, schema: ReportUsageResult, description: "Per record outcome" },
    }),
    async (c) => {
      const b = c.req.valid("json");
      // What the old system sends as `null` is absent.
      const records = (Array.isArray(b) ? b : "records" in b ? b.records : [b]).map((r) => ({
        ...r,
        tenantId: r.tenantId ?? undefined,
        reason: r.reason ?? ("released" as const),
      }));
      const ids = new Set<string>();
      for (const r of records) {
        if (ids.has(r.allocationId))
          return reply(
            c,
            fail(400, "VALIDATION_FAILED", "An allocationId appears twice in this batch.", {
              allocationId: r.allocationId,
            }),
          );
        ids.add(r.allocationId);
        // This service's own allocations are booked only from their device's record, never from a report.
        if (userOfAllocationId(r.allocationId) !== null) {
          const message =
            "This allocation was made by this service; its usage is booked from its device's record, not from reports. " +
            "Nothing in this batch was recorded.";
          return reply(c, fail(409, "OWN_ALLOCATION", message, { allocationId: r.allocationId }));
        }
      }
      const results = await billing(() => applyUsage(c.env, records, "external", { audit: auditBy(c, "usage.report") }));
      const count = (s: string) => results.filter((r) => r.status === s).length;
      const body = {
        recorded: count("recorded"),
        duplicates: count("duplicate"),
        failed: count("failed"),
        results: results.map(usageOutcomeView),
      };
      if (body.failed)
        return c.json(
          {
            error: {
              code: "BILLING_UNAVAILABLE",
              message: "Some records could not be written; send the same batch again (recorded ones come back as duplicates).",
              details: body,
            },
          },
          503,
        );
      return c.json(body, 200);
    },
    usageReportHook,
  );

  app.openapi(
    route({
      method: "get",
      operationId: "getServiceBalance",
      path: "/api/internal/balance/user/{userId}",
      tags: ["internal"],
      security: service,
      summary: "A user's balance (opens the account with its starting credit)",
      request: { params: UserParam },
      ok: { status: 200, schema: BalanceView, description: "Balance" },
    }),
    async (c) => reply(c, ok(balanceView(await billing(() => fundsFor(dbOf(c.env), c.env, c.req.valid("param").userId))))),
  );

  return app;
}

/**
 * A union's issues only say "Invalid input" at the top. The body's form is decided first (an
 * array, an object with `records`, else one record), then it is checked as that form alone, so
 * every failing field is named with its path, in every record of a batch (`records.2.tenantId`).
 */
function usageReportHook(result: { success: boolean }, c: Context<AppEnv>) {
  if (result.success) return;
  // On failure the validator passes the body as received in `data`.
  const raw = (result as { data?: unknown }).data;
  const form = Array.isArray(raw)
    ? UsageReportArray
    : typeof raw === "object" && raw !== null && "records" in raw
      ? UsageReportBatch
      : UsageReport;
  const again = form.safeParse(raw);
  const issues = again.success
    ? [{ path: [], message: "Send one usage record, an array of them, or {records: [...]}" }]
    : again.error.issues;
  return c.json(errorBody(validationFailure(issues)), 400);
}
