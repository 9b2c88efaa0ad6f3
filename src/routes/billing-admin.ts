/**
 * The operators' billing routes (/admin/billing/*, admins only: gated in app.ts): pricing
 * plans, a user's plan, adjustments, dead letters, reconciliation and invoice runs.
 */
import { eq } from "drizzle-orm";
import type { z } from "@hono/zod-openapi";
import { fail, ok, type Failure, type Result } from "../errors";
import { newApp } from "../app-factory";
import { jsonBody, route } from "../openapi";
import { BILLING } from "../config";
import { accounts, pricingPlans } from "../db/schema";
import { previousPeriod } from "../domain/pricing";
import { reconcileWindow } from "../domain/reconcile-window";
import { bookEntry, fundsChanged, fundsFor, stmt, type Funds } from "../billing/ledger";
import { auditBy, auditEntry, auditFrom, auditStatement } from "../audit";
import { dbOf } from "../db/client";
import { generateInvoices } from "../billing/invoices";
import { reconcile } from "../billing/reconcile";
import { listFailedUsage, replayFailedUsage } from "../billing/reports";
import {
  AdjustmentBody,
  AdjustmentResult,
  BalanceView,
  CreateQuery,
  FailedUsagePage,
  FailedUsageQuery,
  InvoiceRunBody,
  InvoiceRunResult,
  PricingPlanBody,
  PricingPlanIdParam,
  PricingPlanPatch,
  PricingPlanView,
  ReconcileBody,
  ReconcileResult,
  ReplayBody,
  ReplayResult,
  UserParam,
  UserPricingPlanBody,
} from "../schemas";
import { bearer, billing, checkedRange, time } from "./billing-shared";
import { balanceView, pricingPlanView, reconcileView } from "../views";
import { reply } from "./helpers";
import { addressedUser, created } from "./addressed-user";

export function billingAdminRoutes() {
  const app = newApp();

  app.openapi(
    route({
      method: "put",
      operationId: "setPricingPlan",
      path: "/admin/billing/pricing-plans/{pricingPlanId}",
      tags: ["billing admin"],
      security: bearer,
      summary: "Create or change a pricing plan (applies to charges booked from now on)",
      request: { params: PricingPlanIdParam, ...jsonBody(PricingPlanBody) },
      ok: { status: 200, schema: PricingPlanView, description: "The plan" },
    }),
    async (c) => {
      const { pricingPlanId: planId } = c.req.valid("param");
      const body = c.req.valid("json");
      const b = planColumns(body);
      const refused = currencyRefusal(body.currency);
      if (refused) return reply(c, refused);
      const now = Date.now();
      const db = dbOf(c.env);
      const plan = await billing(async () => {
        const [before] = await db.select().from(pricingPlans).where(eq(pricingPlans.planId, planId));
        // The plan and its audit row commit together.
        await c.env.DB.batch([
          stmt(
            c.env.DB,
            db
              .insert(pricingPlans)
              .values({ planId, ...b, createdAt: now, updatedAt: now })
              .onConflictDoUpdate({ target: pricingPlans.planId, set: { ...b, updatedAt: now } }),
          ),
          auditStatement(
            c.env.DB,
            auditEntry(c, "pricing_plan.set", `plan:${planId}`, { ...body, before: before ? settingsOf(before) : null }),
          ),
        ]);
        const [after] = await db.select().from(pricingPlans).where(eq(pricingPlans.planId, planId));
        return after!;
      });
      return reply(c, ok(pricingPlanView(plan)));
    },
  );

  app.openapi(
    route({
      method: "patch",
      operationId: "updatePricingPlan",
      path: "/admin/billing/pricing-plans/{pricingPlanId}",
      tags: ["billing admin"],
      security: bearer,
      summary: "Change some of a pricing plan's settings (the rest stay; applies to charges booked from now on)",
      request: { params: PricingPlanIdParam, ...jsonBody(PricingPlanPatch) },
      ok: { status: 200, schema: PricingPlanView, description: "The plan as it now is" },
    }),
    async (c) => {
      const { pricingPlanId: planId } = c.req.valid("param");
      const body = c.req.valid("json");
      const refused = currencyRefusal(body.currency);
      if (refused) return reply(c, refused);
      const db = dbOf(c.env);
      const r = await billing(async (): Promise<Result<typeof pricingPlans.$inferSelect>> => {
        const [before] = await db.select().from(pricingPlans).where(eq(pricingPlans.planId, planId));
        if (!before) return fail(404, "PLAN_NOT_FOUND", "No such pricing plan.", { pricingPlanId: planId });
        // Only the fields sent change, column by column, so two patches of different fields both stand.
        await c.env.DB.batch([
          stmt(
            c.env.DB,
            db
              .update(pricingPlans)
              .set({ ...planColumns(body), updatedAt: Date.now() })
              .where(eq(pricingPlans.planId, planId)),
          ),
          auditStatement(c.env.DB, auditEntry(c, "pricing_plan.set", `plan:${planId}`, { ...body, before: settingsOf(before) })),
        ]);
        const [after] = await db.select().from(pricingPlans).where(eq(pricingPlans.planId, planId));
        return ok(after!);
      });
      return reply(c, r.ok ? ok(pricingPlanView(r.value)) : r);
    },
  );

  app.openapi(
    route({
      method: "put",
      operationId: "setUserPricingPlan",
      path: "/admin/billing/users/{userId}/plan",
      tags: ["billing admin"],
      security: bearer,
      summary: "Set a user's pricing plan (their next charges are priced by it; an unknown user is 404 unless ?create=true)",
      request: { params: UserParam, query: CreateQuery, ...jsonBody(UserPricingPlanBody) },
      ok: { status: 200, schema: BalanceView, description: "Balance" },
    }),
    async (c) => {
      const { userId } = c.req.valid("param");
      const { pricingPlanId: planId } = c.req.valid("json");
      const db = dbOf(c.env);
      const r = await billing(async (): Promise<Result<Funds>> => {
        const [plan] = await db.select().from(pricingPlans).where(eq(pricingPlans.planId, planId));
        if (!plan) return fail(404, "PLAN_NOT_FOUND", "No such pricing plan.", { pricingPlanId: planId });
        const user = await addressedUser(c.env, userId, c.req.valid("query").create);
        if (!user.ok) return user;
        // Opens the account of a user being created (on the default plan, with its starting credit).
        const before = await fundsFor(db, c.env, userId);
        const change = { pricingPlanId: planId, before: before.planId, ...created(user.value) };
        await c.env.DB.batch([
          stmt(c.env.DB, db.update(accounts).set({ planId, updatedAt: Date.now() }).where(eq(accounts.userId, userId))),
          auditStatement(c.env.DB, auditEntry(c, "account.set_plan", `user:${userId}`, change)),
        ]);
        await fundsChanged(c.env, userId);
        return ok(await fundsFor(db, c.env, userId));
      });
      return reply(c, r.ok ? ok(balanceView(r.value)) : r);
    },
  );

  app.openapi(
    route({
      method: "post",
      operationId: "adjustBalance",
      path: "/admin/billing/users/{userId}/adjustments",
      tags: ["billing admin"],
      security: bearer,
      summary: "Correct a balance (signed amountMinor; once per adjustmentId; an unknown user is 404 unless ?create=true)",
      request: { params: UserParam, query: CreateQuery, ...jsonBody(AdjustmentBody) },
      ok: {
        status: 201,
        schema: AdjustmentResult,
        description: "The adjustment and the new balance",
        repeat: "This adjustmentId was booked before: that adjustment, nothing new",
      },
    }),
    async (c) => {
      const { userId } = c.req.valid("param");
      const b = c.req.valid("json");
      const user = await addressedUser(c.env, userId, c.req.valid("query").create);
      if (!user.ok) return reply(c, user);
      const audit = auditEntry(c, "account.adjust", `user:${userId}`, {
        adjustmentId: b.adjustmentId,
        amountMinor: b.amountMinor,
        memo: b.memo,
        ...created(user.value),
      });
      const r = await billing(() =>
        bookEntry(
          c.env,
          {
            entryId: `adjustment:${b.adjustmentId}`,
            userId,
            kind: "adjustment",
            amount: b.amountMinor,
            reference: b.adjustmentId,
            memo: b.memo,
            actor: audit.actor,
          },
          { audit },
        ),
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
          amountMinor: r.amount,
          balanceMinor: r.balanceAfter,
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
      operationId: "listFailedUsage",
      path: "/admin/billing/failed-usage",
      tags: ["billing admin"],
      security: bearer,
      summary: "Usage records the dead-letter queue kept",
      request: { query: FailedUsageQuery },
      ok: { status: 200, schema: FailedUsagePage, description: "A page" },
    }),
    async (c) => reply(c, ok(await billing(() => listFailedUsage(c.env, c.req.valid("query"))))),
  );

  app.openapi(
    route({
      method: "post",
      operationId: "replayFailedUsage",
      path: "/admin/billing/failed-usage/replay",
      tags: ["billing admin"],
      security: bearer,
      summary: "Book kept records again (idempotent)",
      request: jsonBody(ReplayBody),
      ok: { status: 200, schema: ReplayResult, description: "Per record outcome" },
    }),
    async (c) => reply(c, ok(await billing(() => replayFailedUsage(c.env, c.req.valid("json"), auditBy(c, "usage.replay"))))),
  );

  app.openapi(
    route({
      method: "post",
      operationId: "reconcile",
      path: "/admin/billing/reconcile",
      tags: ["billing admin"],
      security: bearer,
      summary:
        "Compare ended allocations with usage and charges over a window (default: the 31 days up to 10 minutes ago); " +
        "report and (by default) heal",
      request: jsonBody(ReconcileBody, false),
      ok: { status: 200, schema: ReconcileResult, description: "Report" },
    }),
    async (c) => {
      const b = c.req.valid("json") ?? { heal: true };
      // Every account (or the one named) over the window; the cron's watermarks are not moved.
      const window = reconcileWindow({ from: time(b.from), to: time(b.to) }, Date.now(), {
        graceMs: BILLING.reconcileGraceMs,
        lookbackMs: BILLING.reconcileLookbackMs,
      });
      const { from, to } = checkedRange(window.from, window.to, b);
      const r = await billing(() => reconcile(c.env, { userId: b.userId, from, to, heal: b.heal }));
      return reply(c, ok(reconcileView(r, window)));
    },
  );

  app.openapi(
    route({
      method: "post",
      operationId: "runInvoices",
      path: "/admin/billing/invoices/run",
      tags: ["billing admin"],
      security: bearer,
      summary: "Write the missing invoices of an ended month (default: last month, as the cron does)",
      request: jsonBody(InvoiceRunBody, false),
      ok: { status: 200, schema: InvoiceRunResult, description: "Counts" },
    }),
    async (c) => {
      const period = c.req.valid("json")?.period ?? previousPeriod(Date.now());
      const r = await billing(() => generateInvoices(c.env, period));
      // Invoices are written user by user (each in its own batch): audited once the run is done.
      if (r.ok) await auditFrom(c, "invoice.run", `period:${period}`, { ...r.value });
      return reply(c, r);
    },
  );
  return app;
}

type PlanSettings = z.output<typeof PricingPlanBody>;
type PlanColumns = Omit<typeof pricingPlans.$inferInsert, "planId" | "createdAt" | "updatedAt">;

/** A plan's settings, HTTP names → D1's; the fields not given are left out (a PATCH changes only those). */
function planColumns<T extends Partial<PlanSettings>>(s: T): T extends PlanSettings ? PlanColumns : Partial<PlanColumns> {
  const columns: Partial<PlanColumns> = {
    name: s.name,
    currency: s.currency,
    basePerSecond: s.baseMicrosPerSecond,
    cpuCorePerSecond: s.cpuCoreMicrosPerSecond,
    memoryGBPerSecond: s.memoryGBMicrosPerSecond,
    storageGBPerSecond: s.storageGBMicrosPerSecond,
    startingCredit: s.startingCreditMinor,
    lowBalanceThreshold: s.lowBalanceThresholdMinor,
  };
  return Object.fromEntries(Object.entries(columns).filter(([, v]) => v !== undefined)) as never;
}

/** Every pricing plan states the deployment's one currency. */
function currencyRefusal(currency: string | undefined): Failure | null {
  if (currency === undefined || currency === BILLING.currency) return null;
  return fail(400, "CURRENCY_NOT_SUPPORTED", `This deployment bills in ${BILLING.currency}.`, { currency });
}

/** A pricing plan's settable fields as PUT names them, for the audit row's `before`. */
function settingsOf(p: typeof pricingPlans.$inferSelect) {
  const { pricingPlanId: _id, createdAt: _created, updatedAt: _updated, ...settings } = pricingPlanView(p);
  return settings;
}
