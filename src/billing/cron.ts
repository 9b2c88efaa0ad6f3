/**
 * What the cron trigger does for billing, each part on its own so one failing does not stop
 * the others: deliver billing events still waiting, write last month's invoices, reconcile,
 * and forget delivered events after a while (the user's object keeps the feed).
 */
import { sql } from "drizzle-orm";
import { BILLING } from "../config";
import type { Env } from "../env";
import { dbOf } from "../db/client";
import { previousPeriod } from "../domain/pricing";
import { generateInvoices } from "./invoices";
import { deliverNotifications } from "./notify";
import { reconcile } from "./reconcile";
import { log } from "../log";

export async function runBillingCron(env: Env, now: number) {
  const out: Record<string, unknown> = {};
  const step = async (name: string, fn: () => Promise<unknown>) => {
    try {
      out[name] = await fn();
    } catch (err) {
      out[name] = { error: String(err) };
      log("error", `cron ${name} failed`, { error: String(err) });
    }
  };
  await step("notifications", () => deliverNotifications(env));
  await step("prune", async () => {
    const r = await dbOf(env).run(
      sql`DELETE FROM notifications WHERE delivered_at IS NOT NULL AND delivered_at < ${now - BILLING.deliveredEventRetentionMs}`,
    );
    return { deleted: r.meta.changes ?? 0 };
  });
  await step("invoices", () => generateInvoices(env, previousPeriod(now), { now }));
  await step("reconcile", async () => {
    const r = await reconcile(env, { now });
    if (r.missingUsage || r.missingCharges || r.mismatched || r.balanceDrift)
      log("warn", "reconciliation found differences", { ...r, differences: r.differences.slice(0, 20) });
    return { ...r, differences: r.differences.length };
  });
  return out;
}
