/**
 * What the billing routes (src/routes/billing*.ts) share: their security entries, the answers'
 * views (times as ISO 8601 UTC, money as `…Minor` with its `currency`, pricing plans as
 * `pricingPlanId`: D1 and the internals keep epoch ms and their own names), D1 failing as one
 * 503, and report periods.
 */
import { z } from "@hono/zod-openapi";
import { HttpError, fail } from "../errors";
import { BILLING } from "../config";
import { formatMoney } from "../domain/pricing";
import { iso, isoOrNull } from "../domain/time";
import type { Funds } from "../billing/ledger";
import type { Invoice } from "../billing/invoices";
import type { ReconcileRun, UserReconciliation } from "../billing/reconcile";
import type { ledger, pricingPlans } from "../db/schema";
import type { BalanceView, InvoiceView, LedgerEntryView, PricingPlanView, ReconcileResult, UserReconciliationView } from "../schemas";

export const bearer = [{ bearer: [] }];
export const service = [{ service: [] }];

export function balanceView(f: Funds): z.infer<typeof BalanceView> {
  return {
    userId: f.userId,
    balanceMinor: f.balance,
    currency: f.currency,
    pricingPlanId: f.planId,
    lowBalanceThresholdMinor: f.lowBalanceThreshold,
    lowBalance: f.balance < f.lowBalanceThreshold,
    hasBalance: f.balance > 0,
    formatted: formatMoney(f.balance, f.currency),
  };
}

export function ledgerEntryView(r: typeof ledger.$inferSelect): z.infer<typeof LedgerEntryView> {
  return {
    seq: r.seq,
    entryId: r.entryId,
    userId: r.userId,
    kind: r.kind as z.infer<typeof LedgerEntryView>["kind"],
    amountMinor: r.amount,
    balanceAfterMinor: r.balanceAfter,
    // A deployment has one currency; every pricing plan states it (see setPricingPlan).
    currency: BILLING.currency,
    allocationId: r.allocationId,
    pricingPlanId: r.planId,
    reference: r.reference,
    memo: r.memo,
    actor: r.actor,
    createdAt: iso(r.createdAt),
  };
}

export function invoiceView(i: Invoice): z.infer<typeof InvoiceView> {
  return {
    invoiceId: i.invoiceId,
    userId: i.userId,
    period: i.period,
    periodStart: iso(i.periodStart),
    periodEnd: iso(i.periodEnd),
    currency: i.currency,
    openingBalanceMinor: i.openingBalance,
    chargesMinor: i.charges,
    creditsMinor: i.credits,
    debitsMinor: i.debits,
    closingBalanceMinor: i.closingBalance,
    usageCount: i.usageCount,
    usageSeconds: i.usageSeconds,
    createdAt: iso(i.createdAt),
  };
}

export function pricingPlanView(p: typeof pricingPlans.$inferSelect): z.infer<typeof PricingPlanView> {
  return {
    pricingPlanId: p.planId,
    name: p.name,
    currency: p.currency,
    baseMicrosPerSecond: p.basePerSecond,
    cpuCoreMicrosPerSecond: p.cpuCorePerSecond,
    memoryGBMicrosPerSecond: p.memoryGBPerSecond,
    storageGBMicrosPerSecond: p.storageGBPerSecond,
    startingCreditMinor: p.startingCredit,
    lowBalanceThresholdMinor: p.lowBalanceThreshold,
    createdAt: iso(p.createdAt),
    updatedAt: iso(p.updatedAt),
  };
}

const timeFields = new Set(["allocatedAt", "releasedAt"]);

function reconciliationView(d: UserReconciliation): z.infer<typeof UserReconciliationView> {
  const value = (field: string, v: number | string) => (timeFields.has(field) && typeof v === "number" ? iso(v) : v);
  return {
    userId: d.userId,
    from: iso(d.from),
    to: iso(d.to),
    checked: d.checked,
    missingUsage: d.missingUsage,
    missingCharges: d.missingCharges,
    mismatched: d.mismatched.map((m) => ({
      allocationId: m.allocationId,
      field: m.field as z.infer<typeof UserReconciliationView>["mismatched"][number]["field"],
      expected: value(m.field, m.expected),
      recorded: value(m.field, m.recorded),
    })),
    healed: d.healed,
    corrected: d.corrected.map((c) => ({ allocationId: c.allocationId, correctionMinor: c.correction, currency: BILLING.currency })),
    stillMissing: d.stillMissing,
    balanceDrift: d.balanceDrift
      ? { balanceMinor: d.balanceDrift.balance, ledgerSumMinor: d.balanceDrift.ledgerSum, currency: BILLING.currency }
      : null,
  };
}

/** A reconciliation run as answered: times ISO, at most 100 differences in full. */
export function reconcileView(r: ReconcileRun): z.infer<typeof ReconcileResult> {
  const { differences, from, to, ...counts } = r;
  return {
    ...counts,
    from: isoOrNull(from),
    to: iso(to),
    differences: differences.slice(0, 100).map(reconciliationView),
    differencesShown: Math.min(100, differences.length),
    differencesTotal: differences.length,
  };
}

/** D1 did not answer: say so in the one error shape (nothing was changed). */
export async function billing<T>(fn: () => Promise<T>): Promise<T> {
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

export const time = (s?: string) => (s === undefined ? undefined : Date.parse(s));

/** A report period: `from` defaults to the start of this month (UTC), `to` to now; from < to. */
export function reportPeriod(q: { from?: string; to?: string }, now = Date.now()) {
  const d = new Date(now);
  return checkedRange(time(q.from) ?? Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1), time(q.to) ?? now + 1, q);
}

export function checkedRange(from: number, to: number, q: { from?: string; to?: string }) {
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

export const NoQuery = z.object({}).strict();
