/**
 * Usage → D1: one usage row and one charge per allocation, in one atomic D1 batch, both
 * idempotent on `allocationId`. Used by the queue consumer, the internal endpoint, replay
 * of dead letters and reconciliation, so every path books usage the same way.
 */
import { priceOf } from "../domain/pricing";
import type { UsageRecord } from "../domain/types";
import type { Env } from "../config";
import { inArray, sql } from "drizzle-orm";
import { ledger, usageRecords } from "../db/schema";
import { dbOf, entryStatements, fundsOf, stmt, type Db } from "./ledger";
import { deliverNotifications } from "./notify";

export type UsageSource = "device" | "external" | "reconcile" | "replay";

export type UsageOutcome =
  | { allocationId: string; status: "recorded"; amount: number }
  | { allocationId: string; status: "duplicate" }
  | { allocationId: string; status: "failed"; error: string };

function statementsFor(db: Db, d1: D1Database, r: UsageRecord, amount: number, planId: string, source: UsageSource, now: number): D1PreparedStatement[] {
  return [
    stmt(d1, db.insert(usageRecords).values({
      allocationId: r.allocationId, deviceId: r.deviceId, userId: r.userId, tenantId: r.tenantId ?? null,
      durationSeconds: r.durationSeconds, cpuCores: r.cpuCores, memoryMB: r.memoryMB, storageMB: r.storageMB,
      allocatedAt: r.allocatedAt, releasedAt: r.releasedAt, reason: r.reason, receivedAt: now, source,
    }).onConflictDoNothing()),
    ...entryStatements(d1, {
      entryId: `charge:${r.allocationId}`, userId: r.userId, kind: "charge", amount: -amount, allocationId: r.allocationId, planId,
      memo: `${r.durationSeconds}s on ${r.deviceId} (${r.reason})`, at: now,
    }),
  ];
}

const STATEMENTS_PER_RECORD = 4;

/**
 * Books `records`. The whole set goes in one batch when it can; if that batch fails, each
 * record is tried alone so one bad record never holds the others back. Throws only when
 * the accounts cannot be read at all (the caller retries everything).
 */
export async function applyUsage(env: Env, all: UsageRecord[], source: UsageSource, opts: { notify?: boolean } = {}): Promise<UsageOutcome[]> {
  if (all.length === 0) return [];
  const db = dbOf(env);
  const now = Date.now();
  // Records already booked (usage and charge) are duplicates: answered without touching
  // anything, so a redelivery neither opens an account nor costs a write.
  const booked = await bookedOf(db, all.map((r) => r.allocationId));
  const records = all.filter((r) => !booked.has(r.allocationId));
  const outcomes: UsageOutcome[] = [];
  if (records.length === 0) return all.map((r) => ({ allocationId: r.allocationId, status: "duplicate" }));
  const funds = await fundsOf(db, env, records.map((r) => r.userId), now);
  const prepared = records.map((r) => {
    const f = funds.get(r.userId)!;
    const amount = priceOf(f, r, r.durationSeconds);
    return { r, amount, statements: statementsFor(db, env.DB, r, amount, f.planId, source, now) };
  });
  const outcome = (p: (typeof prepared)[number], changes: number): UsageOutcome =>
    changes > 0 ? { allocationId: p.r.allocationId, status: "recorded", amount: p.amount } : { allocationId: p.r.allocationId, status: "duplicate" };
  try {
    const results = await env.DB.batch(prepared.flatMap((p) => p.statements));
    prepared.forEach((p, i) => outcomes.push(outcome(p, changesOf(results[i * STATEMENTS_PER_RECORD]))));
  } catch {
    for (const p of prepared) {
      try {
        const results = await env.DB.batch(p.statements);
        outcomes.push(outcome(p, changesOf(results[0])));
      } catch (err) {
        outcomes.push({ allocationId: p.r.allocationId, status: "failed", error: String(err).slice(0, 500) });
      }
    }
  }
  if (opts.notify !== false) await deliverNotifications(env, [...new Set(records.map((r) => r.userId))]);
  // In the caller's order: `outcomes` follows `records`, which is `all` without the booked ones.
  let next = 0;
  return all.map((r) => (booked.has(r.allocationId) ? { allocationId: r.allocationId, status: "duplicate" as const } : outcomes[next++]!));
}

/** Allocation ids that have both their usage row and their charge. */
async function bookedOf(db: Db, ids: string[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (let i = 0; i < ids.length; i += 90) {
    const chunk = ids.slice(i, i + 90);
    const rows = await db.select({ id: usageRecords.allocationId }).from(usageRecords)
      .where(sql`${inArray(usageRecords.allocationId, chunk)} AND EXISTS (SELECT 1 FROM ${ledger} WHERE ${ledger.allocationId} = ${usageRecords.allocationId})`);
    for (const r of rows) out.add(r.id);
  }
  return out;
}

function changesOf(result: D1Result | undefined): number {
  return result?.meta?.changes ?? 0;
}
