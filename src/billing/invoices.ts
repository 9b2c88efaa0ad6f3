/**
 * Monthly invoices: one per user and month (UTC), written once and never changed. A charge
 * belongs to the month it was booked in the ledger, so a usage record that arrives after the
 * month closed is on the next invoice, and all invoices together add up to the whole ledger.
 */
import { eq, sql } from "drizzle-orm";
import { BILLING } from "../config";
import type { Env } from "../env";
import { invoices } from "../db/schema";
import { invoiceTotals, periodBounds, type LedgerLine } from "../domain/pricing";
import { fail, ok, type Result } from "../errors";
import { stmt } from "./ledger";
import { dbOf } from "../db/client";
import { deliverNotifications } from "./notify";
import type { InvoiceGeneratedEventData } from "../feed/protocol";

export type Invoice = typeof invoices.$inferSelect;

export const invoiceIdOf = (userId: string, period: string) => `inv_${period}_${userId}`;

/**
 * A month closes this long after it ends. A booking reads the clock before its D1 batch
 * commits (accounts may be opened, a failed batch is retried record by record), so a charge
 * stamped 23:59:59 can commit after midnight. An invoice written in between would miss it, and
 * the next month's would not take it either (its row says the old month): the invoices would no
 * longer add up to the ledger. No booking runs this long (a queue consumer's wall time is at
 * most 15 minutes; a D1 query at most 30 s), and the cron (every 5 minutes) catches up after.
 */
export const INVOICE_CLOSE_DELAY_MS = BILLING.invoiceCloseDelayMs;

/** Writes the missing invoices of `period` (a month that has ended), at most `limit` per call. */
export async function generateInvoices(
  env: Env,
  period: string,
  opts: { now?: number; limit?: number } = {},
): Promise<Result<{ period: string; created: number; remaining: boolean }>> {
  const bounds = periodBounds(period);
  const now = opts.now ?? Date.now();
  if (!bounds) return fail(400, "VALIDATION_FAILED", "period must be YYYY-MM.", { period });
  const closesAt = bounds.end + INVOICE_CLOSE_DELAY_MS;
  if (closesAt > now)
    return fail(
      409,
      "PERIOD_NOT_ENDED",
      `The month ${period} has not closed yet; its invoices are written from ${new Date(closesAt).toISOString()} ` +
        `(${INVOICE_CLOSE_DELAY_MS / 60_000} minutes after it ends).`,
      { period, closesAt: new Date(closesAt).toISOString() },
    );
  const limit = opts.limit ?? BILLING.invoiceAccountsPerRun;
  const db = dbOf(env);
  // Users with ledger activity in the month and no invoice for it yet.
  const due = await db.all<{ user_id: string; currency: string }>(sql`
    SELECT a.user_id, p.currency FROM accounts a JOIN pricing_plans p ON p.plan_id = a.plan_id
    WHERE NOT EXISTS (SELECT 1 FROM invoices i WHERE i.user_id = a.user_id AND i.period = ${period})
      AND EXISTS (SELECT 1 FROM ledger l WHERE l.user_id = a.user_id AND l.created_at >= ${bounds.start} AND l.created_at < ${bounds.end})
    ORDER BY a.user_id LIMIT ${limit + 1}`);
  const users = due.slice(0, limit);
  // Counted from what was written: a concurrent run may have written some of them first.
  let created = 0;
  for (const u of users) {
    const opening = await db.get<{ total: number | null }>(
      sql`SELECT SUM(amount) AS total FROM ledger WHERE user_id = ${u.user_id} AND created_at < ${bounds.start}`,
    );
    const lines = await db.all<LedgerLine>(sql`
      SELECT kind, SUM(amount) AS amount FROM ledger WHERE user_id = ${u.user_id} AND created_at >= ${bounds.start}
        AND created_at < ${bounds.end}
      GROUP BY kind, amount >= 0`);
    const usage = await db.get<{ n: number; seconds: number | null }>(sql`
      SELECT COUNT(*) AS n, SUM(r.duration_seconds) AS seconds FROM ledger l JOIN usage_records r ON r.allocation_id = l.allocation_id
      WHERE l.user_id = ${u.user_id} AND l.kind = 'charge' AND l.created_at >= ${bounds.start} AND l.created_at < ${bounds.end}`);
    const totals = invoiceTotals(opening?.total ?? 0, lines);
    const invoiceId = invoiceIdOf(u.user_id, period);
    const row: Invoice = {
      invoiceId,
      userId: u.user_id,
      period,
      periodStart: bounds.start,
      periodEnd: bounds.end,
      currency: u.currency,
      ...totals,
      usageCount: usage?.n ?? 0,
      usageSeconds: usage?.seconds ?? 0,
      createdAt: Date.now(),
    };
    const data = {
      invoiceId,
      period,
      currency: row.currency,
      charges: row.charges,
      credits: row.credits,
      debits: row.debits,
      openingBalance: row.openingBalance,
      closingBalance: row.closingBalance,
      usageCount: row.usageCount,
      usageSeconds: row.usageSeconds,
    } satisfies InvoiceGeneratedEventData;
    const [inserted] = await env.DB.batch([
      stmt(env.DB, db.insert(invoices).values(row).onConflictDoNothing()),
      stmt(
        env.DB,
        sql`INSERT INTO notifications (key, user_id, type, data, created_at)
        VALUES (${`billing.invoice_generated:${invoiceId}`}, ${u.user_id}, 'billing.invoice_generated', ${JSON.stringify(data)},
          ${row.createdAt})
        ON CONFLICT (key) DO NOTHING`,
      ),
    ]);
    if ((inserted?.meta.changes ?? 0) > 0) created++;
  }
  if (users.length)
    await deliverNotifications(
      env,
      users.map((u) => u.user_id),
    );
  return ok({ period, created, remaining: due.length > limit });
}

export async function invoicesOf(env: Env, userId: string): Promise<Invoice[]> {
  return dbOf(env)
    .select()
    .from(invoices)
    .where(eq(invoices.userId, userId))
    .orderBy(sql`${invoices.period} DESC`)
    .limit(120);
}

export async function invoiceById(env: Env, invoiceId: string): Promise<Invoice | null> {
  const [row] = await dbOf(env).select().from(invoices).where(eq(invoices.invoiceId, invoiceId));
  return row ?? null;
}
