/**
 * GET /admin/metrics: the operators' metrics in the Prometheus text format (admin bearer token;
 * scrape with `authorization: {credentials: <token>}`). Gathered at scrape time from where each
 * figure lives (see src/metrics.ts): every pool, the usage counters in D1, and the open
 * socket counts. A source that fails or takes longer than METRICS.sourceTimeoutMs is left
 * out and counted in `eda_metrics_source_errors`, so one slow pool never holds up the rest.
 */
import { z } from "@hono/zod-openapi";
import { sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { newApp } from "../app-factory";
import { METRICS } from "../config";
import { adminFeed } from "../objects/operators";
import { failedUsage, metricCounters, pools } from "../db/schema";
import { log } from "../log";
import { PROMETHEUS_CONTENT_TYPE, lagHistogram, render, type Family, type Sample } from "../metrics";
import { route } from "../openapi";
import { pool } from "./helpers";
import { take } from "../rpc";

const Text = z.string().openapi({ description: "Prometheus text exposition format 0.0.4" });

export function metricsRoutes() {
  const app = newApp();
  const doc = route({
    method: "get",
    operationId: "getMetrics",
    path: "/admin/metrics",
    tags: ["operations"],
    security: [{ bearer: [] }],
    summary: "Operator metrics (Prometheus text format, admin only)",
    description:
      "Allocations, releases by reason, expiry lag, usage reports sent/failed/dead-lettered, devices by status, " +
      "queue and reservations, open feed sockets.",
    ok: { status: 200, schema: Text, description: "Metrics" },
  });
  // Documented as text/plain (route() documents JSON by default).
  doc.responses[200] = { description: "Metrics", content: { "text/plain": { schema: Text } } };
  app.openapi(doc, async (c) => {
    const env = c.env;
    const errors = new Map<string, number>();
    /** The source's answer, or null (counted and logged) when it fails or is too slow. */
    const from = async <T>(source: string, work: Promise<T>): Promise<T | null> => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${METRICS.sourceTimeoutMs} ms`)), METRICS.sourceTimeoutMs);
      });
      try {
        return await Promise.race([work, late]);
      } catch (err) {
        errors.set(source, (errors.get(source) ?? 0) + 1);
        log("warn", "metrics source did not answer", { requestId: c.get("requestId"), source, error: String(err) });
        return null;
      } finally {
        if (timer !== undefined) clearTimeout(timer);
      }
    };
    const db = drizzle(env.DB);
    const [poolNames, counters, failedRows, sockets] = await Promise.all([
      from("d1", db.select({ name: pools.name }).from(pools).orderBy(pools.name)),
      from("d1", db.select().from(metricCounters)),
      from(
        "d1",
        db
          .select({ status: failedUsage.status, n: sql<number>`COUNT(*)` })
          .from(failedUsage)
          .groupBy(failedUsage.status),
      ),
      from("sockets", take(adminFeed(env).socketCounts())),
    ]);
    const perPool = await Promise.all(
      (poolNames ?? []).map(async (p) => ({ pool: p.name, m: await from("pool", take(pool(env, p.name).metrics())) })),
    );

    const allocations: Sample[] = [];
    const releases: Sample[] = [];
    const lag: Sample[] = [];
    const devices: Sample[] = [];
    const waiting: Sample[] = [];
    const reservations: Sample[] = [];
    for (const { pool: name, m } of perPool) {
      if (!m) continue;
      const labels = { pool: name };
      const counter = (n: string, label = "") => m.counters.find((r) => r.name === n && r.label === label)?.value ?? 0;
      allocations.push({ labels, value: counter("allocations") });
      for (const r of m.counters.filter((r) => r.name === "releases"))
        releases.push({ labels: { ...labels, reason: r.label }, value: r.value });
      const buckets = new Map(m.counters.filter((r) => r.name === "expiry_lag_bucket").map((r) => [r.label, r.value]));
      lag.push(...lagHistogram(labels, buckets, counter("expiry_lag_sum_ms"), counter("expiry_lag_count")));
      for (const status of ["available", "allocated", "maintenance", "offline"])
        devices.push({ labels: { ...labels, status }, value: m.devices[status] ?? 0 });
      waiting.push({ labels, value: m.queueWaiting });
      reservations.push({ labels, value: m.reservationsOpen });
    }
    const usage = (name: string) => counters?.find((r) => r.name === name)?.value ?? 0;
    const families: Family[] = [
      {
        name: "eda_allocations_total",
        type: "counter",
        help: "Allocations made (a device claimed for a user), by pool.",
        samples: allocations,
      },
      {
        name: "eda_releases_total",
        type: "counter",
        help:
          "Allocations ended, by pool and reason (released, expired, force_released, idle, maintenance, offline, " +
          "removed, orphaned; unknown when the pool missed the change that ended it).",
        samples: releases,
      },
      {
        name: "eda_expiry_lag_seconds",
        type: "histogram",
        help: "How late expiry ended allocations: the alarm's run time minus expiresAt (billing stops at expiresAt regardless).",
        samples: lag,
      },
      { name: "eda_devices", type: "gauge", help: "Devices by pool and status.", samples: devices },
      {
        name: "eda_queue_waiting",
        type: "gauge",
        help: "Queue entries waiting or being handed a device, by pool.",
        samples: waiting,
      },
      {
        name: "eda_reservations_open",
        type: "gauge",
        help: "Reservations pending, confirmed or executing, by pool.",
        samples: reservations,
      },
      {
        name: "eda_usage_reports_sent_total",
        type: "counter",
        help: "Usage reports the billing consumer received from the queue and booked (redeliveries included).",
        samples: counters ? [{ value: usage("usage_reports_sent") }] : [],
      },
      {
        name: "eda_usage_reports_failed_total",
        type: "counter",
        help: "Usage report deliveries that failed to book and were retried.",
        samples: counters ? [{ value: usage("usage_reports_failed") }] : [],
      },
      {
        name: "eda_usage_reports_dead_lettered_total",
        type: "counter",
        help: "Usage reports given up on (retries exhausted, or malformed) and kept in failed_usage for replay.",
        samples: counters ? [{ value: usage("usage_reports_dead_lettered") }] : [],
      },
      {
        name: "eda_reconcile_runs_total",
        type: "counter",
        help: "Reconciliation runs (the cron's and operators').",
        samples: counters ? [{ value: usage("reconcile_runs") }] : [],
      },
      {
        name: "eda_reconcile_differences_total",
        type: "counter",
        help:
          "Differences reconciliation found between the devices' usage and the ledger " +
          "(missing usage or charges, mismatches, balance drift), healed or not.",
        samples: counters ? [{ value: usage("reconcile_differences") }] : [],
      },
      {
        name: "eda_reconcile_healed_total",
        type: "counter",
        help: "Usage records reconciliation booked (healed).",
        samples: counters ? [{ value: usage("reconcile_healed") }] : [],
      },
      {
        name: "eda_usage_failed_records",
        type: "gauge",
        help: "Records in failed_usage, by status (failed and invalid wait for an operator).",
        samples: (failedRows ?? []).map((r) => ({ labels: { status: r.status }, value: Number(r.n) })),
      },
      {
        name: "eda_sockets_open",
        type: "gauge",
        help: "Open feed sockets by feed (user, admin, device, pool), as each object last reported.",
        samples: sockets ? ["user", "admin", "device", "pool"].map((feed) => ({ labels: { feed }, value: sockets[feed] ?? 0 })) : [],
      },
      {
        name: "eda_metrics_source_errors",
        type: "gauge",
        help: "Sources that did not answer this scrape (their figures are missing above).",
        samples: ["d1", "pool", "sockets"].map((source) => ({ labels: { source }, value: errors.get(source) ?? 0 })),
      },
    ];
    return c.body(render(families), 200, { "Content-Type": PROMETHEUS_CONTENT_TYPE, "Cache-Control": "no-store" });
  });
  return app;
}
