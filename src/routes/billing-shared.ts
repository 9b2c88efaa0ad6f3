/**
 * What the billing routes (src/routes/billing*.ts) share: their security entries, D1 failing
 * as one 503, and report periods. Their answers' views are in src/views.ts.
 */
import { z } from "@hono/zod-openapi";
import { HttpError, fail } from "../errors";

export const bearer = [{ bearer: [] }];
export const service = [{ service: [] }];

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
