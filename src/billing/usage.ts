/**
 * Usage → D1: one usage row and one charge per allocation, in one atomic D1 batch, both
 * idempotent on `allocationId`. Used by the queue consumer, the internal endpoint, replay
 * of dead letters and reconciliation, so every path books usage the same way.
 */
import { BILLING } from "../config";
import { priceOf } from "../domain/pricing";
import type { UsageRecord } from "../domain/types";
import type { Env } from "../env";
import { usageRecords } from "../db/schema";
import { entryStatements, fundsOf, stmt } from "./ledger";
import { dbOf, type Db } from "../db/client";
import { deliverNotifications } from "./notify";
import type { AuditBy } from "../audit";

export type UsageSource = "device" | "external" | "reconcile" | "replay";

export type UsageOutcome =
  | { allocationId: string; status: "recorded"; amount: number }
  | { allocationId: string; status: "duplicate" }
  | { allocationId: string; status: "failed"; error: string };

/** An outcome as the API answers it: a recorded charge says its amount in minor units and its currency. */
export function usageOutcomeView<S extends string>(
  o: UsageOutcome | { allocationId: string; status: S; error?: string },
): { allocationId: string; status: S | UsageOutcome["status"]; amountMinor?: number; currency?: string; error?: string } {
  if ("amount" in o) return { allocationId: o.allocationId, status: o.status, amountMinor: o.amount, currency: BILLING.currency };
  return { allocationId: o.allocationId, status: o.status, ...("error" in o && o.error !== undefined ? { error: o.error } : {}) };
}

function statementsFor(
  db: Db,
  d1: D1Database,
  r: UsageRecord,
  amount: number,
  planId: string,
  source: UsageSource,
  now: number,
): D1PreparedStatement[] {
  return [
    stmt(
      d1,
      db
        .insert(usageRecords)
        .values({
          allocationId: r.allocationId,
          deviceId: r.deviceId,
          userId: r.userId,
          tenantId: r.tenantId ?? null,
          durationSeconds: r.durationSeconds,
          cpuCores: r.cpuCores,
          memoryMB: r.memoryMB,
          storageMB: r.storageMB,
          allocatedAt: r.allocatedAt,
          releasedAt: r.releasedAt,
          reason: r.reason,
          receivedAt: now,
          source,
        })
        .onConflictDoNothing(),
    ),
    ...entryStatements(d1, {
      entryId: `charge:${r.allocationId}`,
      userId: r.userId,
      kind: "charge",
      amount: -amount,
      allocationId: r.allocationId,
      planId,
      memo: memoOf(r),
      at: now,
    }),
    chargedEvents(d1, [r], now),
  ];
}

/**
 * `billing.charged` for each charge of `records` that this batch booked (its ledger row carries
 * the batch's time), in the same batch, so a rolled-back booking sends nothing and a repeat,
 * which books no charge, sends no second event (the key is the charge's too). Data keep the old
 * notification service's names: `amount` (what was charged, positive) and `newBalance` (the
 * running balance right after this charge), in minor units.
 */
function chargedEvents(d1: D1Database, records: UsageRecord[], now: number): D1PreparedStatement {
  const json = JSON.stringify(records.map((r) => ({ a: r.allocationId, d: r.deviceId, u: r.userId, s: r.durationSeconds })));
  return d1
    .prepare(
      `INSERT INTO notifications (key, user_id, type, data, created_at)
       SELECT 'billing.charged:' || l.entry_id, l.user_id, 'billing.charged',
              json_object('allocationId', l.allocation_id, 'deviceId', j.value->>'d', 'amount', -l.amount, 'newBalance', l.balance_after,
                'currency', p.currency, 'durationSeconds', j.value->>'s'), ?2
       FROM json_each(?1) j JOIN ledger l ON l.entry_id = 'charge:' || (j.value->>'a') JOIN pricing_plans p ON p.plan_id = l.plan_id
       WHERE l.user_id = j.value->>'u' AND l.kind = 'charge' AND l.created_at = ?2
       ON CONFLICT (key) DO NOTHING`,
    )
    .bind(json, now);
}

/**
 * Books `records`. The whole set goes in one batch of five set-based statements when it can
 * (the records travel as one JSON parameter); if that batch fails, each record is tried alone
 * in its own batch, so one bad record never holds the others back. Throws only when the
 * accounts cannot be read at all (the caller retries everything). With `audit` (an admin's
 * replay, a service's report), each batch also writes its audit rows (see auditRows).
 */
export async function applyUsage(
  env: Env,
  all: UsageRecord[],
  source: UsageSource,
  opts: { notify?: boolean; audit?: AuditBy } = {},
): Promise<UsageOutcome[]> {
  if (all.length === 0) return [];
  const db = dbOf(env);
  const now = Date.now();
  // Records already booked (usage and charge) are duplicates: answered without touching
  // anything, so a redelivery neither opens an account nor costs a write. So is a second
  // copy of a record within the same call.
  const booked = await bookedOf(
    env.DB,
    all.map((r) => r.allocationId),
  );
  const seen = new Set<string>();
  const records = all.filter((r) => !booked.has(r.allocationId) && !seen.has(r.allocationId) && seen.add(r.allocationId));
  if (records.length === 0) return all.map((r) => ({ allocationId: r.allocationId, status: "duplicate" }));
  const funds = await fundsOf(
    db,
    env,
    records.map((r) => r.userId),
    now,
  );
  const prepared = records.map((r) => {
    const f = funds.get(r.userId)!;
    return { r, amount: priceOf(f, r, r.durationSeconds), planId: f.planId };
  });
  const outcomes = new Map<string, UsageOutcome>();
  const audited = (statements: D1PreparedStatement[], ids: string[]) =>
    opts.audit ? [...statements, auditRows(env.DB, ids, opts.audit, source, now)] : statements;
  try {
    const results = await env.DB.batch(
      audited(
        setStatements(env.DB, prepared, source, now),
        prepared.map((p) => p.r.allocationId),
      ),
    );
    const inserted = new Set(((results[0]?.results as { allocation_id: string }[] | undefined) ?? []).map((x) => x.allocation_id));
    for (const p of prepared) outcomes.set(p.r.allocationId, outcome(p, inserted.has(p.r.allocationId)));
  } catch {
    for (const p of prepared) {
      try {
        const results = await env.DB.batch(audited(statementsFor(db, env.DB, p.r, p.amount, p.planId, source, now), [p.r.allocationId]));
        outcomes.set(p.r.allocationId, outcome(p, changesOf(results[0]) > 0));
      } catch (err) {
        outcomes.set(p.r.allocationId, {
          allocationId: p.r.allocationId,
          status: "failed",
          error: String(err).slice(0, 500),
        });
      }
    }
  }
  if (opts.notify !== false) await deliverNotifications(env, [...new Set(records.map((r) => r.userId))]);
  // In the caller's order; anything not booked now (already booked, or a repeat in this call) is a duplicate.
  const first = new Set<string>();
  return all.map((r) => {
    const o = outcomes.get(r.allocationId);
    if (!o || first.has(r.allocationId)) return { allocationId: r.allocationId, status: "duplicate" as const };
    first.add(r.allocationId);
    return o;
  });
}

function outcome(p: { r: UsageRecord; amount: number }, inserted: boolean): UsageOutcome {
  return inserted
    ? { allocationId: p.r.allocationId, status: "recorded", amount: p.amount }
    : { allocationId: p.r.allocationId, status: "duplicate" };
}

const memoOf = (r: UsageRecord) => `${r.durationSeconds}s on ${r.deviceId} (${r.reason})`;

/**
 * The same booking as `statementsFor`, for many records at once: the usage rows, the charges
 * (each with the running balance of its account, in the records' order, skipping charges that
 * exist), each account's balance moved to its last new entry, `billing.low_balance` for every
 * entry that crossed its plan's threshold downwards, and `billing.charged` for every new charge.
 * Atomic as one D1 batch. The first statement returns the usage rows it inserted (the rest were
 * booked before).
 */
function setStatements(
  d1: D1Database,
  rows: { r: UsageRecord; amount: number; planId: string }[],
  source: UsageSource,
  now: number,
): D1PreparedStatement[] {
  const json = JSON.stringify(
    rows.map(({ r, amount, planId }, i) => ({
      i,
      a: r.allocationId,
      d: r.deviceId,
      u: r.userId,
      t: r.tenantId ?? null,
      s: r.durationSeconds,
      c: r.cpuCores,
      m: r.memoryMB,
      g: r.storageMB,
      aa: r.allocatedAt,
      ra: r.releasedAt,
      re: r.reason,
      amt: amount,
      p: planId,
      memo: memoOf(r),
    })),
  );
  const ids = "SELECT 'charge:' || (value->>'a') FROM json_each(?1)";
  return [
    d1
      .prepare(
        `INSERT INTO usage_records (allocation_id, device_id, user_id, tenant_id, duration_seconds, cpu_cores, memory_mb, storage_mb,
          allocated_at, released_at, reason, received_at, source)
       SELECT value->>'a', value->>'d', value->>'u', value->>'t', value->>'s', value->>'c', value->>'m', value->>'g', value->>'aa',
         value->>'ra', value->>'re', ?2, ?3
       FROM json_each(?1) WHERE true ON CONFLICT DO NOTHING RETURNING allocation_id`,
      )
      .bind(json, now, source),
    d1
      .prepare(
        `INSERT INTO ledger (entry_id, user_id, kind, amount, balance_after, allocation_id, plan_id, reference, memo, created_at)
       SELECT 'charge:' || (j.value->>'a'), a.user_id, 'charge', -(j.value->>'amt'),
              a.balance - SUM(j.value->>'amt') OVER (PARTITION BY a.user_id ORDER BY j.value->>'i' ROWS UNBOUNDED PRECEDING),
              j.value->>'a', j.value->>'p', NULL, j.value->>'memo', ?2
       FROM json_each(?1) j JOIN accounts a ON a.user_id = j.value->>'u'
       WHERE NOT EXISTS (SELECT 1 FROM ledger x WHERE x.entry_id = 'charge:' || (j.value->>'a'))
       ORDER BY j.value->>'i'
       ON CONFLICT (entry_id) DO NOTHING`,
      )
      .bind(json, now),
    // Only entries of the account's own user move it, and only newer ones (see entryStatements).
    d1
      .prepare(
        `UPDATE accounts SET balance = l.balance_after, last_seq = l.seq, updated_at = ?2
       FROM (SELECT user_id, MAX(seq) AS seq, balance_after FROM ledger WHERE entry_id IN (${ids}) GROUP BY user_id) AS l
       WHERE accounts.user_id = l.user_id AND l.seq > accounts.last_seq`,
      )
      .bind(json, now),
    d1
      .prepare(
        `INSERT INTO notifications (key, user_id, type, data, created_at)
       SELECT 'low_balance:' || l.seq, l.user_id, 'billing.low_balance',
              json_object('balance', l.balance_after, 'threshold', p.low_balance_threshold, 'currency', p.currency, 'entryId',
                l.entry_id), ?2
       FROM ledger l JOIN accounts a ON a.user_id = l.user_id JOIN pricing_plans p ON p.plan_id = a.plan_id
       WHERE l.entry_id IN (${ids}) AND l.seq <= a.last_seq AND l.amount < 0
         AND l.balance_after < p.low_balance_threshold AND l.balance_after - l.amount >= p.low_balance_threshold
       ON CONFLICT (key) DO NOTHING`,
      )
      .bind(json, now),
    chargedEvents(
      d1,
      rows.map((x) => x.r),
      now,
    ),
  ];
}

/**
 * The audit rows of a booking, one per user, in the batch that books it: the records of `ids`
 * this batch wrote (their usage rows carry its time and source), how many, and what they were
 * charged. A batch that wrote nothing for a user writes no row for them; when the set batch
 * fails and each record is booked alone, each record gets its own row.
 */
function auditRows(d1: D1Database, ids: string[], by: AuditBy, source: UsageSource, now: number): D1PreparedStatement {
  return d1
    .prepare(
      `INSERT INTO audit_log (at, actor, action, target, change, request_id)
       SELECT ?2, ?3, ?4, 'user:' || u.user_id,
              json_object('source', ?5, 'records', COUNT(*), 'allocationIds', json_group_array(u.allocation_id),
                'charged', COALESCE(SUM(-l.amount), 0)),
              ?6
       FROM usage_records u LEFT JOIN ledger l ON l.entry_id = 'charge:' || u.allocation_id AND l.created_at = ?2
       WHERE u.allocation_id IN (SELECT value FROM json_each(?1)) AND u.received_at = ?2 AND u.source = ?5
       GROUP BY u.user_id`,
    )
    .bind(JSON.stringify(ids), now, by.actor, by.action, source, by.requestId ?? null);
}

/** Allocation ids that have both their usage row and their charge. */
async function bookedOf(d1: D1Database, ids: string[]): Promise<Set<string>> {
  const out = new Set<string>();
  if (ids.length === 0) return out;
  const { results } = await d1
    .prepare(
      `SELECT u.allocation_id AS id FROM json_each(?1) j JOIN usage_records u ON u.allocation_id = j.value
     WHERE EXISTS (SELECT 1 FROM ledger l WHERE l.allocation_id = u.allocation_id)`,
    )
    .bind(JSON.stringify(ids))
    .all<{ id: string }>();
  for (const r of results) out.add(r.id);
  return out;
}

function changesOf(result: D1Result | undefined): number {
  return result?.meta?.changes ?? 0;
}
