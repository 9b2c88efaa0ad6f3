/**
 * What the cron trigger does for billing, each part on its own so one failing does not stop
 * the others: deliver billing events still waiting, write last month's invoices, reconcile.
 */
import type { Env } from "../config";
import { previousPeriod } from "../domain/pricing";
import { generateInvoices } from "./invoices";
import { deliverNotifications } from "./notify";
import { reconcile } from "./reconcile";

export async function runBillingCron(env: Env, now: number) {
  const out: Record<string, unknown> = {};
  const step = async (name: string, fn: () => Promise<unknown>) => {
    try {
      out[name] = await fn();
    } catch (err) {
      out[name] = { error: String(err) };
      console.error(JSON.stringify({ level: "error", msg: `cron ${name} failed`, error: String(err) }));
    }
  };
  await step("notifications", () => deliverNotifications(env));
  await step("invoices", () => generateInvoices(env, previousPeriod(now), { now }));
  await step("reconcile", async () => {
    const r = await reconcile(env, { now });
    if (r.missingUsage || r.missingCharges || r.mismatched || r.balanceDrift)
      console.warn(JSON.stringify({ level: "warn", msg: "reconciliation found differences", ...r, differences: r.differences.slice(0, 20) }));
    return { ...r, differences: r.differences.length };
  });
  return out;
}
