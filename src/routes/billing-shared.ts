/**
 * What the billing routes (src/routes/billing*.ts) share: their security entries, the balance
 * as they answer it, D1 failing as one 503, and report periods.
 */
import { z } from "@hono/zod-openapi";
import { HttpError, fail } from "../errors";
import { formatMoney } from "../domain/pricing";
import type { Funds } from "../billing/ledger";

export const bearer = [{ bearer: [] }];
export const service = [{ service: [] }];
export const Any = z.object({}).passthrough();

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
export const isoOf = (t: number | null) => (t === null ? null : new Date(t).toISOString());
