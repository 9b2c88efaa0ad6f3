/**
 * Billing and metering routes: balances, ledger, invoices, top-ups, usage reports, pricing,
 * dead letters and reconciliation. Who may call each is gated in app.ts; handlers still
 * check whose data is read.
 */
import { z } from "@hono/zod-openapi";
import { desc, eq, and, lt } from "drizzle-orm";
import { HttpError, fail, ok, type Result } from "../errors";
import { readableUser, requireUser } from "../auth";
import { newApp } from "../app-factory";
import { jsonBody, route } from "../openapi";
import { BILLING, PAGING } from "../config";
import { accounts, ledger, pricingPlans } from "../db/schema";
import { formatMoney, previousPeriod } from "../domain/pricing";
import { bookEntry, fundsChanged, fundsFor, type Funds } from "../billing/ledger";
import { dbOf } from "../db/client";
import { generateInvoices, invoiceById, invoicesOf } from "../billing/invoices";
import { reconcile } from "../billing/reconcile";
import { listFailedUsage, replayFailedUsage, usageReport } from "../billing/reports";
import { applyUsage } from "../billing/usage";
import {
  AccountPlanBody,
  AdjustmentBody,
  BalanceView,
  DeviceIdParam,
  FailedUsageQuery,
  InvoiceIdParam,
  InvoiceRunBody,
  PageQuery,
  PeriodQuery,
  PlanIdParam,
  PricingPlanBody,
  ReconcileBody,
  ReplayBody,
  TopUpBody,
  UsageOutcomeView,
  UsageReportBody,
  UserParam,
} from "../schemas";
import { reply } from "./helpers";

const bearer = [{ bearer: [] }];
const service = [{ service: [] }];
const Any = z.object({}).passthrough();

export function balanceView(f: Funds) {
  return {
    userId: f.userId,
    balance: f.balance,
    currency: f.currency,
    planId: f.planId,
    lowBalanceThreshold: f.lowBalanceThreshold,
    lowBalance: f.balance < f.lowBalanceThreshold,
    hasBalance: f.balance > 0,
    formatted: formatMoney(f.balance, f.currency),
  };
}

/** D1 did not answer: say so in the one error shape (nothing was changed). */
async function billing<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof HttpError) throw err;
    throw new HttpError(
      fail(503, "BILLING_UNAVAILABLE", "Billing data could not be read or written; nothing was changed. Try again shortly.", {
        cause: String(err).slice(0, 200),
      }),
    );
  }
}

const time = (s?: string) => (s === undefined ? undefined : Date.parse(s));

/** A report period: `from` defaults to the start of this month (UTC), `to` to now; from < to. */
function reportPeriod(q: { from?: string; to?: string }, now = Date.now()) {
  const d = new Date(now);
  return checkedRange(time(q.from) ?? Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1), time(q.to) ?? now + 1, q);
}

function checkedRange(from: number, to: number, q: { from?: string; to?: string }) {
  if (from >= to)
    throw new HttpError(
      fail(400, "VALIDATION_FAILED", "`from` must be before `to` (defaults filled in).", {
        from: new Date(from).toISOString(),
        to: new Date(to).toISOString(),
        given: { from: q.from ?? null, to: q.to ?? null },
      }),
    );
  return { from, to };
}

const NoQuery = z.object({}).strict();
const isoOf = (t: number | null) => (t === null ? null : new Date(t).toISOString());

export function billingRoutes() {
  const app = newApp();

  // ---- the user's own money --------------------------------------------------------------------

  app.openapi(
    route({
      method: "get",
      path: "/billing/users/{userId}/balance",
      tags: ["billing"],
      security: bearer,
      summary: "Balance (the user or an admin)",
      request: { params: UserParam },
      ok: { status: 200, schema: BalanceView, description: "Balance" },
    }),
    async (c) => {
      const userId = readableUser(c, c.req.valid("param").userId);
      return reply(c, ok(balanceView(await billing(() => fundsFor(dbOf(c.env), c.env, userId)))));
    },
  );

  app.openapi(
    route({
      method: "get",
      path: "/billing/users/{userId}/ledger",
      tags: ["billing"],
      security: bearer,
      summary: "Ledger entries, newest first (paged by `seq`)",
      request: { params: UserParam, query: PageQuery },
      ok: { status: 200, schema: Any, description: "A page" },
    }),
    async (c) => {
      const userId = readableUser(c, c.req.valid("param").userId);
      const q = c.req.valid("query");
      const limit = Math.min(q.limit ?? PAGING.defaultLimit, PAGING.maxLimit);
      const rows = await billing(() =>
        dbOf(c.env)
          .select()
          .from(ledger)
          .where(and(eq(ledger.userId, userId), q.cursor !== undefined ? lt(ledger.seq, q.cursor) : undefined))
          .orderBy(desc(ledger.seq))
          .limit(limit + 1),
      );
      const page = rows.slice(0, limit);
      return reply(c, ok({ items: page, nextCursor: rows.length > limit ? String(page[page.length - 1]!.seq) : null }));
    },
  );

  app.openapi(
    route({
      method: "get",
      path: "/billing/users/{userId}/invoices",
      tags: ["billing"],
      security: bearer,
      summary: "Monthly invoices, newest first",
      request: { params: UserParam, query: NoQuery },
      ok: { status: 200, schema: Any, description: "Invoices" },
    }),
    async (c) => {
      const userId = readableUser(c, c.req.valid("param").userId);
      return reply(c, ok({ items: await billing(() => invoicesOf(c.env, userId)) }));
    },
  );

  app.openapi(
    route({
      method: "get",
      path: "/billing/invoices/{invoiceId}",
      tags: ["billing"],
      security: bearer,
      summary: "One invoice (its user or an admin)",
      request: { params: InvoiceIdParam },
      ok: { status: 200, schema: Any, description: "Invoice" },
    }),
    async (c) => {
      const p = requireUser(c);
      const inv = await billing(() => invoiceById(c.env, c.req.valid("param").invoiceId));
      // Someone else's invoice reads as missing: ids do not leak.
      if (!inv || (inv.userId !== p.userId && p.role !== "admin")) return reply(c, fail(404, "INVOICE_NOT_FOUND", "No such invoice."));
      return reply(c, ok(inv));
    },
  );

  app.openapi(
    route({
      method: "get",
      path: "/billing/pricing-plans",
      tags: ["billing"],
      security: bearer,
      summary: "Pricing plans (rates per second in micro-units of a cent)",
      request: { query: NoQuery },
      ok: { status: 200, schema: Any, description: "Plans" },
    }),
    async (c) => reply(c, ok({ items: await billing(() => dbOf(c.env).select().from(pricingPlans).orderBy(pricingPlans.planId)) })),
  );

  app.openapi(
    route({
      method: "post",
      path: "/billing/users/{userId}/top-ups",
      tags: ["billing"],
      security: [...bearer, ...service],
      summary: "Credit a payment (admin or service); the same paymentId is credited once",
      request: { params: UserParam, ...jsonBody(TopUpBody) },
      ok: { status: 201, schema: Any, description: "The credit and the new balance" },
    }),
    async (c) => {
      const { userId } = c.req.valid("param");
      const b = c.req.valid("json");
      const r = await billing(() =>
        bookEntry(
          c.env,
          {
            entryId: `top_up:${b.paymentId}`,
            userId,
            kind: "top_up",
            amount: b.amount,
            reference: b.paymentId,
            memo: b.paymentMethod ?? null,
          },
          {
            type: "billing.payment_success",
            data: {
              amount: b.amount,
              paymentId: b.paymentId,
              paymentMethod: b.paymentMethod ?? null,
              currency: BILLING.currency,
            },
          },
        ),
      );
      if ("conflict" in r)
        return reply(
          c,
          fail(409, "PAYMENT_ID_REUSED", "This paymentId was already credited with another user or amount.", {
            paymentId: b.paymentId,
          }),
        );
      return c.json(
        {
          userId,
          paymentId: b.paymentId,
          amount: r.amount,
          balance: r.balanceAfter,
          currency: r.currency,
          duplicate: r.duplicate,
        },
        r.duplicate ? 200 : 201,
      );
    },
  );

  // ---- usage reports -------------------------------------------------------------------------------

  app.openapi(
    route({
      method: "get",
      path: "/metering/users/{userId}",
      tags: ["metering"],
      security: bearer,
      summary: "A user's usage: totals for a period (default: this month) and records, newest first",
      request: { params: UserParam, query: PeriodQuery },
      ok: { status: 200, schema: Any, description: "Report" },
    }),
    async (c) => {
      const userId = readableUser(c, c.req.valid("param").userId);
      const q = c.req.valid("query");
      return reply(c, ok(await billing(() => usageReport(c.env, { userId }, { ...reportPeriod(q), cursor: q.cursor, limit: q.limit }))));
    },
  );

  app.openapi(
    route({
      method: "get",
      path: "/metering/devices/{id}",
      tags: ["metering"],
      security: bearer,
      summary: "A device's usage across users (admin)",
      request: { params: DeviceIdParam, query: PeriodQuery },
      ok: { status: 200, schema: Any, description: "Report" },
    }),
    async (c) => {
      const q = c.req.valid("query");
      return reply(
        c,
        ok(
          await billing(() =>
            usageReport(c.env, { deviceId: c.req.valid("param").id }, { ...reportPeriod(q), cursor: q.cursor, limit: q.limit }),
          ),
        ),
      );
    },
  );

  // ---- operators -------------------------------------------------------------------------------------

  app.openapi(
    route({
      method: "put",
      path: "/admin/billing/pricing-plans/{planId}",
      tags: ["billing admin"],
      security: bearer,
      summary: "Create or change a pricing plan (applies to charges booked from now on)",
      request: { params: PlanIdParam, ...jsonBody(PricingPlanBody) },
      ok: { status: 200, schema: Any, description: "The plan" },
    }),
    async (c) => {
      const { planId } = c.req.valid("param");
      const b = c.req.valid("json");
      if (b.currency !== BILLING.currency)
        return reply(
          c,
          fail(400, "CURRENCY_NOT_SUPPORTED", `This deployment bills in ${BILLING.currency}.`, {
            currency: b.currency,
          }),
        );
      const now = Date.now();
      const [plan] = await billing(() =>
        dbOf(c.env)
          .insert(pricingPlans)
          .values({ planId, ...b, createdAt: now, updatedAt: now })
          .onConflictDoUpdate({ target: pricingPlans.planId, set: { ...b, updatedAt: now } })
          .returning(),
      );
      return reply(c, ok(plan));
    },
  );

  app.openapi(
    route({
      method: "put",
      path: "/admin/billing/users/{userId}/plan",
      tags: ["billing admin"],
      security: bearer,
      summary: "Move a user to another pricing plan",
      request: { params: UserParam, ...jsonBody(AccountPlanBody) },
      ok: { status: 200, schema: BalanceView, description: "Balance" },
    }),
    async (c) => {
      const { userId } = c.req.valid("param");
      const { planId } = c.req.valid("json");
      const db = dbOf(c.env);
      const r = await billing(async (): Promise<Result<Funds>> => {
        const [plan] = await db.select().from(pricingPlans).where(eq(pricingPlans.planId, planId));
        if (!plan) return fail(404, "PLAN_NOT_FOUND", "No such pricing plan.", { planId });
        await fundsFor(db, c.env, userId);
        await db.update(accounts).set({ planId, updatedAt: Date.now() }).where(eq(accounts.userId, userId));
        await fundsChanged(c.env, userId);
        return ok(await fundsFor(db, c.env, userId));
      });
      return reply(c, r.ok ? ok(balanceView(r.value)) : r);
    },
  );

  app.openapi(
    route({
      method: "post",
      path: "/admin/billing/users/{userId}/adjustments",
      tags: ["billing admin"],
      security: bearer,
      summary: "Correct a balance (signed amount; once per adjustmentId)",
      request: { params: UserParam, ...jsonBody(AdjustmentBody) },
      ok: { status: 201, schema: Any, description: "The adjustment and the new balance" },
    }),
    async (c) => {
      const { userId } = c.req.valid("param");
      const b = c.req.valid("json");
      const r = await billing(() =>
        bookEntry(c.env, {
          entryId: `adjustment:${b.adjustmentId}`,
          userId,
          kind: "adjustment",
          amount: b.amount,
          reference: b.adjustmentId,
          memo: b.memo,
        }),
      );
      if ("conflict" in r)
        return reply(
          c,
          fail(409, "ADJUSTMENT_ID_REUSED", "This adjustmentId was already used with another user or amount.", {
            adjustmentId: b.adjustmentId,
          }),
        );
      return c.json(
        {
          userId,
          adjustmentId: b.adjustmentId,
          amount: r.amount,
          balance: r.balanceAfter,
          currency: r.currency,
          duplicate: r.duplicate,
        },
        r.duplicate ? 200 : 201,
      );
    },
  );

  app.openapi(
    route({
      method: "get",
      path: "/admin/billing/failed-usage",
      tags: ["billing admin"],
      security: bearer,
      summary: "Usage records the dead-letter queue kept",
      request: { query: FailedUsageQuery },
      ok: { status: 200, schema: Any, description: "A page" },
    }),
    async (c) => reply(c, ok(await billing(() => listFailedUsage(c.env, c.req.valid("query"))))),
  );

  app.openapi(
    route({
      method: "post",
      path: "/admin/billing/failed-usage/replay",
      tags: ["billing admin"],
      security: bearer,
      summary: "Book kept records again (idempotent)",
      request: jsonBody(ReplayBody),
      ok: { status: 200, schema: Any, description: "Per record outcome" },
    }),
    async (c) => reply(c, ok(await billing(() => replayFailedUsage(c.env, c.req.valid("json"))))),
  );

  app.openapi(
    route({
      method: "post",
      path: "/admin/billing/reconcile",
      tags: ["billing admin"],
      security: bearer,
      summary: "Compare ended allocations with usage and charges; report and (by default) heal",
      request: jsonBody(ReconcileBody, false),
      ok: { status: 200, schema: Any, description: "Report" },
    }),
    async (c) => {
      const b = c.req.valid("json") ?? { heal: true };
      const from = time(b.from);
      const to = time(b.to);
      checkedRange(from ?? 0, to ?? Date.now() - BILLING.reconcileGraceMs, b);
      const r = await billing(() => reconcile(c.env, { userId: b.userId, from, to, heal: b.heal }));
      return reply(
        c,
        ok({
          ...r,
          from: isoOf(r.from),
          to: isoOf(r.to),
          differences: r.differences.slice(0, 100).map((d) => ({ ...d, from: isoOf(d.from), to: isoOf(d.to) })),
          differencesShown: Math.min(100, r.differences.length),
          differencesTotal: r.differences.length,
        }),
      );
    },
  );

  app.openapi(
    route({
      method: "post",
      path: "/admin/billing/invoices/run",
      tags: ["billing admin"],
      security: bearer,
      summary: "Write the missing invoices of an ended month (the cron does last month by itself)",
      request: jsonBody(InvoiceRunBody, false),
      ok: { status: 200, schema: Any, description: "Counts" },
    }),
    async (c) => {
      const period = c.req.valid("json")?.period ?? previousPeriod(Date.now());
      return reply(c, await billing(() => generateInvoices(c.env, period)));
    },
  );

  // ---- other services (X-Service-Token) -------------------------------------------------------------

  app.openapi(
    route({
      method: "post",
      path: "/api/internal/metering/device-usage",
      tags: ["internal"],
      security: service,
      summary: "Report usage: one record, or up to 100 (idempotent on allocationId)",
      request: jsonBody(UsageReportBody),
      ok: {
        status: 200,
        schema: z.object({
          recorded: z.number(),
          duplicates: z.number(),
          failed: z.number(),
          results: z.array(UsageOutcomeView),
        }),
        description: "Per record outcome",
      },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const records = Array.isArray(b) ? b : "records" in b ? b.records : [b];
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
      }
      const results = await billing(() => applyUsage(c.env, records, "external"));
      const count = (s: string) => results.filter((r) => r.status === s).length;
      const body = { recorded: count("recorded"), duplicates: count("duplicate"), failed: count("failed"), results };
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
  );

  app.openapi(
    route({
      method: "get",
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
