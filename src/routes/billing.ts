/**
 * Billing and metering routes: balances, ledger, invoices, top-ups, usage reports, pricing,
 * dead letters and reconciliation. Who may call each is gated in app.ts; handlers still
 * check whose data is read. This file has the users' routes and puts together the rest: the
 * operators' (src/routes/billing-admin.ts) and the other services' (src/routes/billing-internal.ts).
 */
import { desc, eq, and, lt } from "drizzle-orm";
import { fail, ok } from "../errors";
import { readableUser, requireUser } from "../auth";
import { auditEntry } from "../audit";
import { newApp } from "../app-factory";
import { jsonBody, route } from "../openapi";
import { BILLING, PAGING } from "../config";
import { ledger, pricingPlans } from "../db/schema";
import { bookEntry, fundsFor } from "../billing/ledger";
import { dbOf } from "../db/client";
import { invoiceById, invoicesOf } from "../billing/invoices";
import { usageReport } from "../billing/reports";
import {
  BalanceView,
  CreateQuery,
  DeviceIdParam,
  DeviceUsageReport,
  InvoiceIdParam,
  InvoiceList,
  InvoiceView,
  LedgerPage,
  PageQuery,
  PeriodQuery,
  PricingPlanList,
  TopUpBody,
  TopUpResult,
  UserParam,
  UserUsageReport,
} from "../schemas";
import { billingAdminRoutes } from "./billing-admin";
import { billingInternalRoutes } from "./billing-internal";
import { NoQuery, bearer, billing, reportPeriod, service } from "./billing-shared";
import { balanceView, invoiceView, ledgerEntryView, pricingPlanView } from "../views";
import { reply } from "./helpers";
import { addressedUser, created } from "./addressed-user";

export function billingRoutes() {
  const app = newApp();

  // ---- the user's own money --------------------------------------------------------------------

  app.openapi(
    route({
      method: "get",
      operationId: "getBalance",
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
      operationId: "listLedger",
      path: "/billing/users/{userId}/ledger",
      tags: ["billing"],
      security: bearer,
      summary: "Ledger entries, newest first (paged by `seq`)",
      request: { params: UserParam, query: PageQuery },
      ok: { status: 200, schema: LedgerPage, description: "A page" },
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
      return reply(
        c,
        ok({ items: page.map(ledgerEntryView), nextCursor: rows.length > limit ? String(page[page.length - 1]!.seq) : null }),
      );
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "listInvoices",
      path: "/billing/users/{userId}/invoices",
      tags: ["billing"],
      security: bearer,
      summary: "Monthly invoices, newest first",
      request: { params: UserParam, query: NoQuery },
      ok: { status: 200, schema: InvoiceList, description: "Invoices" },
    }),
    async (c) => {
      const userId = readableUser(c, c.req.valid("param").userId);
      return reply(c, ok({ items: (await billing(() => invoicesOf(c.env, userId))).map(invoiceView) }));
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "getInvoice",
      path: "/billing/invoices/{invoiceId}",
      tags: ["billing"],
      security: bearer,
      summary: "One invoice (its user or an admin)",
      request: { params: InvoiceIdParam },
      ok: { status: 200, schema: InvoiceView, description: "Invoice" },
    }),
    async (c) => {
      const p = requireUser(c);
      const inv = await billing(() => invoiceById(c.env, c.req.valid("param").invoiceId));
      // Someone else's invoice reads as missing: ids do not leak.
      if (!inv || (inv.userId !== p.userId && p.role !== "admin")) return reply(c, fail(404, "INVOICE_NOT_FOUND", "No such invoice."));
      return reply(c, ok(invoiceView(inv)));
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "listPricingPlans",
      path: "/billing/pricing-plans",
      tags: ["billing"],
      security: bearer,
      summary: "Pricing plans (rates in millionths of a minor unit per second)",
      request: { query: NoQuery },
      ok: { status: 200, schema: PricingPlanList, description: "Plans" },
    }),
    async (c) => {
      const plans = await billing(() => dbOf(c.env).select().from(pricingPlans).orderBy(pricingPlans.planId));
      return reply(c, ok({ items: plans.map(pricingPlanView) }));
    },
  );

  app.openapi(
    route({
      method: "post",
      operationId: "topUp",
      path: "/billing/users/{userId}/top-ups",
      tags: ["billing"],
      security: [...bearer, ...service],
      summary:
        "Credit a payment (admin or service); the same paymentId is credited once. An admin's top-up for an unknown user is 404 " +
        "unless ?create=true; the service's opens the account (a payment may come before first use)",
      request: { params: UserParam, query: CreateQuery, ...jsonBody(TopUpBody) },
      ok: {
        status: 201,
        schema: TopUpResult,
        description: "The credit and the new balance",
        repeat: "This paymentId was credited before: that credit, nothing new",
      },
    }),
    async (c) => {
      const { userId } = c.req.valid("param");
      const b = c.req.valid("json");
      // The payment service knows its payer (it took the payment); an admin types the id by hand.
      const user =
        c.get("principal")?.kind === "service" ? ok({ created: false }) : await addressedUser(c.env, userId, c.req.valid("query").create);
      if (!user.ok) return reply(c, user);
      const audit = auditEntry(c, "account.top_up", `user:${userId}`, {
        paymentId: b.paymentId,
        amountMinor: b.amountMinor,
        paymentMethod: b.paymentMethod ?? null,
        ...created(user.value),
      });
      const r = await billing(() =>
        bookEntry(
          c.env,
          {
            entryId: `top_up:${b.paymentId}`,
            userId,
            kind: "top_up",
            amount: b.amountMinor,
            reference: b.paymentId,
            memo: b.paymentMethod ?? null,
            actor: audit.actor,
          },
          {
            event: {
              type: "billing.payment_success",
              data: {
                amount: b.amountMinor,
                paymentId: b.paymentId,
                paymentMethod: b.paymentMethod ?? null,
                currency: BILLING.currency,
                actor: audit.actor,
              },
            },
            audit,
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
          amountMinor: r.amount,
          balanceMinor: r.balanceAfter,
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
      operationId: "getUserUsage",
      path: "/metering/users/{userId}",
      tags: ["metering"],
      security: bearer,
      summary: "A user's usage: totals for a period (default: this month) and records, newest first",
      request: { params: UserParam, query: PeriodQuery },
      ok: { status: 200, schema: UserUsageReport, description: "Report" },
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
      operationId: "getDeviceUsage",
      path: "/metering/devices/{id}",
      tags: ["metering"],
      security: bearer,
      summary: "A device's usage across users (admin)",
      request: { params: DeviceIdParam, query: PeriodQuery },
      ok: { status: 200, schema: DeviceUsageReport, description: "Report" },
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

  // The operators', then the other services' (registered in this order, as the OpenAPI document lists them).
  app.route("/", billingAdminRoutes());
  app.route("/", billingInternalRoutes());

  return app;
}
