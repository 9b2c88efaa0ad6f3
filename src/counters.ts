/**
 * Counters in D1 (`metric_counters`) for GET /admin/metrics, for figures that live in no object:
 * the usage pipeline's and reconciliation's. One statement per call, and never failing the work
 * it counts (a lost increment is logged).
 */
import type { Env } from "./env";
import { log } from "./log";

export type CounterName =
  | "usage_reports_sent"
  | "usage_reports_failed"
  | "usage_reports_dead_lettered"
  | "reconcile_runs"
  | "reconcile_differences"
  | "reconcile_healed";

export async function addCounters(env: Env, counts: Partial<Record<CounterName, number>>): Promise<void> {
  const rows = Object.entries(counts).filter(([, n]) => n !== undefined && n > 0);
  if (!rows.length) return;
  try {
    await env.DB.prepare(
      `INSERT INTO metric_counters (name, value) VALUES ${rows.map(() => "(?, ?)").join(", ")}
       ON CONFLICT(name) DO UPDATE SET value = value + excluded.value`,
    )
      .bind(...rows.flat())
      .run();
  } catch (err) {
    log("warn", "metric counters not written", { ...counts, error: String(err) });
  }
}
