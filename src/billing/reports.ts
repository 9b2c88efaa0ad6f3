/** Usage reports: totals for a period and the records, newest first (paged). */
import { and, desc, eq, inArray, lt, or, sql, type SQL } from "drizzle-orm";
import { BILLING, PAGING } from "../config";
import type { Env } from "../env";
import { failedUsage } from "../db/schema";
import { UsageRecordMessage } from "../schemas";
import type { EndReason, UsageRecord } from "../domain/types";
import { dbOf } from "../db/client";
import { decodeCursor, encodeCursor } from "../cursor";
import { applyUsage, usageOutcomeView, type UsageOutcome, type UsageSource } from "./usage";
import type { AuditBy } from "../audit";
import { iso, isoOrNull } from "../domain/time";

type FailedUsageStatus = "failed" | "replayed" | "resolved" | "invalid";

export interface UsageReportOptions {
  /** [from, to) in epoch ms on `releasedAt`; the route fills in its defaults. */
  from: number;
  to: number;
  cursor?: string;
  limit?: number;
}

export async function usageReport(env: Env, by: { userId: string } | { deviceId: string }, o: UsageReportOptions) {
  const db = dbOf(env);
  const { from, to } = o;
  const who: SQL = "userId" in by ? sql`u.user_id = ${by.userId}` : sql`u.device_id = ${by.deviceId}`;
  const totals = await db.get<{ records: number; seconds: number | null; charges: number | null }>(sql`
    SELECT COUNT(*) AS records, SUM(u.duration_seconds) AS seconds, -SUM(l.amount) AS charges
    FROM usage_records u LEFT JOIN ledger l ON l.allocation_id = u.allocation_id
    WHERE ${who} AND u.released_at >= ${from} AND u.released_at < ${to}`);
  const limit = Math.min(o.limit ?? PAGING.defaultLimit, PAGING.maxLimit);
  const [cAt, cId] = decodeCursor(o.cursor);
  const rows = await db.all<{
    allocation_id: string;
    device_id: string;
    user_id: string;
    tenant_id: string | null;
    duration_seconds: number;
    cpu_cores: number;
    memory_mb: number;
    storage_mb: number;
    allocated_at: number;
    released_at: number;
    reason: string;
    source: string;
    amount: number | null;
  }>(sql`
    SELECT u.*, l.amount FROM usage_records u LEFT JOIN ledger l ON l.allocation_id = u.allocation_id
    WHERE ${who} AND u.released_at >= ${from} AND u.released_at < ${to}
      AND (u.released_at < ${cAt} OR (u.released_at = ${cAt} AND u.allocation_id < ${cId}))
    ORDER BY u.released_at DESC, u.allocation_id DESC LIMIT ${limit + 1}`);
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  const seconds = totals?.seconds ?? 0;
  return {
    ...by,
    from: iso(from),
    to: iso(to),
    currency: BILLING.currency,
    totals: {
      records: totals?.records ?? 0,
      durationSeconds: seconds,
      deviceHours: Math.round((seconds / 3600) * 1000) / 1000,
      chargesMinor: totals?.charges ?? 0,
      currency: BILLING.currency,
    },
    items: page.map((r) => ({
      allocationId: r.allocation_id,
      deviceId: r.device_id,
      userId: r.user_id,
      tenantId: r.tenant_id,
      durationSeconds: r.duration_seconds,
      cpuCores: r.cpu_cores,
      memoryMB: r.memory_mb,
      storageMB: r.storage_mb,
      allocatedAt: iso(r.allocated_at),
      releasedAt: iso(r.released_at),
      reason: r.reason as EndReason,
      source: r.source as UsageSource,
      chargeMinor: r.amount === null ? null : -r.amount,
      currency: BILLING.currency,
    })),
    nextCursor: rows.length > limit && last ? encodeCursor(last.released_at, last.allocation_id) : null,
  };
}

// ---- dead letters ---------------------------------------------------------------------------------

export async function listFailedUsage(env: Env, o: { status?: string; cursor?: string; limit?: number }) {
  const limit = Math.min(o.limit ?? PAGING.defaultLimit, PAGING.maxLimit);
  const [cAt, cId] = decodeCursor(o.cursor);
  const rows = await dbOf(env)
    .select()
    .from(failedUsage)
    .where(
      and(
        o.status ? eq(failedUsage.status, o.status) : undefined,
        or(lt(failedUsage.lastFailedAt, cAt), and(eq(failedUsage.lastFailedAt, cAt), lt(failedUsage.allocationId, cId))),
      ),
    )
    .orderBy(desc(failedUsage.lastFailedAt), desc(failedUsage.allocationId))
    .limit(limit + 1);
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  return {
    items: page.map((r) => ({
      allocationId: r.allocationId,
      userId: r.userId,
      record: safeJson(r.record),
      error: r.error,
      attempts: r.attempts,
      status: r.status as FailedUsageStatus,
      firstFailedAt: iso(r.firstFailedAt),
      lastFailedAt: iso(r.lastFailedAt),
      resolvedAt: isoOrNull(r.resolvedAt),
    })),
    nextCursor: rows.length > limit && last ? encodeCursor(last.lastFailedAt, last.allocationId) : null,
  };
}

/**
 * Books dead letters again through the normal path (idempotent: one already booked meanwhile
 * counts as done). `all` takes the oldest open ones, up to the batch size. `by`: who asked, for
 * the audit rows of what this books (see applyUsage).
 */
export async function replayFailedUsage(env: Env, sel: { allocationIds?: string[]; all?: boolean }, by?: AuditBy) {
  const db = dbOf(env);
  const rows = sel.allocationIds
    ? await db.select().from(failedUsage).where(inArray(failedUsage.allocationId, sel.allocationIds))
    : // Failed ones first: invalid ones cannot succeed unchanged, and more than a batch of them
      // must not hide a bookable record from `all` for ever.
      await db
        .select()
        .from(failedUsage)
        .where(inArray(failedUsage.status, ["failed", "invalid"]))
        .orderBy(sql`CASE ${failedUsage.status} WHEN 'failed' THEN 0 ELSE 1 END`, failedUsage.firstFailedAt)
        .limit(BILLING.maxUsageBatch);
  const found = new Set(rows.map((r) => r.allocationId));
  const results: (UsageOutcome | { allocationId: string; status: "not_found" | "invalid" | "already_done"; error?: string })[] = (
    sel.allocationIds ?? []
  )
    .filter((id) => !found.has(id))
    .map((allocationId) => ({ allocationId, status: "not_found" as const }));
  const records: UsageRecord[] = [];
  for (const r of rows) {
    if (r.status === "replayed" || r.status === "resolved") {
      results.push({ allocationId: r.allocationId, status: "already_done" });
      continue;
    }
    const parsed = UsageRecordMessage.safeParse(safeJson(r.record));
    if (parsed.success) records.push(parsed.data);
    else
      results.push({
        allocationId: r.allocationId,
        status: "invalid",
        error: parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "),
      });
  }
  const outcomes = await applyUsage(env, records, "replay", { audit: by });
  const now = Date.now();
  const done = outcomes.filter((o) => o.status !== "failed").map((o) => o.allocationId);
  if (done.length) await db.update(failedUsage).set({ status: "replayed", resolvedAt: now }).where(inArray(failedUsage.allocationId, done));
  for (const o of outcomes)
    if (o.status === "failed")
      await db
        .update(failedUsage)
        .set({ error: o.error, lastFailedAt: now, attempts: sql`${failedUsage.attempts} + 1` })
        .where(eq(failedUsage.allocationId, o.allocationId));
  results.push(...outcomes);
  const remaining = await db.get<{ n: number }>(sql`SELECT COUNT(*) AS n FROM failed_usage WHERE status IN ('failed', 'invalid')`);
  return {
    replayed: outcomes.filter((o) => o.status !== "failed").length,
    failed: results.filter((o) => o.status === "failed" || o.status === "invalid").length,
    results: results.map(usageOutcomeView),
    remaining: remaining?.n ?? 0,
  };
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
}
