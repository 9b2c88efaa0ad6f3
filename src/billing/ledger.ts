/**
 * Accounts and the ledger. Every money movement is one ledger row with a unique `entry_id`
 * (so a retried write is a no-op), and the account's balance moves in the same D1 batch,
 * only when that row is newer than the last one the balance includes. Balance therefore
 * always equals the sum of the user's ledger, which reconciliation also checks.
 */
import { SQL, eq, sql } from "drizzle-orm";
import { SQLiteAsyncDialect } from "drizzle-orm/sqlite-core";
import { defaultPricingPlan } from "../config";
import type { Env } from "../env";
import { accounts, ledger, pricingPlans } from "../db/schema";
import { dbOf, type Db } from "../db/client";
import type { Rates } from "../domain/pricing";
import { deliverNotifications } from "./notify";
import { auditStatement, type AuditEntry } from "../audit";
import { log } from "../log";
import { take } from "../rpc";

const dialect = new SQLiteAsyncDialect();

/**
 * A drizzle query (builder or `sql` template) as a D1 statement. Writes that must commit
 * together go through `env.DB.batch` with these: drizzle's own batch cannot carry raw `sql`
 * with parameters (it looks for a prepared statement raw queries do not have).
 */
export function stmt(d1: D1Database, q: SQL | { toSQL(): { sql: string; params: unknown[] } }): D1PreparedStatement {
  const { sql: text, params } = q instanceof SQL ? dialect.sqlToQuery(q) : q.toSQL();
  return d1.prepare(text).bind(...params);
}

export type EntryKind = "starting_credit" | "top_up" | "charge" | "adjustment";

export interface Entry {
  entryId: string;
  userId: string;
  kind: EntryKind;
  /** Signed minor units: credits positive, charges negative. */
  amount: number;
  allocationId?: string | null;
  planId?: string | null;
  reference?: string | null;
  memo?: string | null;
  /** Who moved the money by hand (an admin's id, or `service`); none for charges and starting credit. */
  actor?: string | null;
  at: number;
}

/** An account with what pricing needs. */
export interface Funds extends Rates {
  userId: string;
  balance: number;
  currency: string;
  planId: string;
  lowBalanceThreshold: number;
}

/**
 * The statements that book one entry (run them inside one `db.batch`, after the account exists):
 * the ledger row with its running balance, the balance itself, and `billing.low_balance` when
 * this entry takes the balance from at or above the plan's threshold to below it (once per crossing).
 */
export function entryStatements(d1: D1Database, e: Entry): D1PreparedStatement[] {
  return [
    stmt(
      d1,
      sql`INSERT INTO ledger (entry_id, user_id, kind, amount, balance_after, allocation_id, plan_id, reference, memo, actor, created_at)
      SELECT ${e.entryId}, a.user_id, ${e.kind}, ${e.amount}, a.balance + ${e.amount}, ${e.allocationId ?? null}, ${e.planId ?? null},
             ${e.reference ?? null}, ${e.memo ?? null}, ${e.actor ?? null}, ${e.at}
      FROM accounts a WHERE a.user_id = ${e.userId}
      ON CONFLICT (entry_id) DO NOTHING`,
    ),
    // Only the user's own row moves their balance: an entry id reused for another user (a
    // duplicate report naming someone else) finds the first user's row and must not copy it.
    stmt(
      d1,
      sql`UPDATE accounts SET balance = l.balance_after, last_seq = l.seq, updated_at = ${e.at}
      FROM (SELECT seq, balance_after, user_id FROM ledger WHERE entry_id = ${e.entryId}) AS l
      WHERE accounts.user_id = ${e.userId} AND l.user_id = accounts.user_id AND l.seq > accounts.last_seq`,
    ),
    stmt(
      d1,
      sql`INSERT INTO notifications (key, user_id, type, data, created_at)
      SELECT 'low_balance:' || l.seq, l.user_id, 'billing.low_balance',
             json_object('balance', l.balance_after, 'threshold', p.low_balance_threshold, 'currency', p.currency, 'entryId', l.entry_id),
             ${e.at}
      FROM ledger l JOIN accounts a ON a.user_id = l.user_id JOIN pricing_plans p ON p.plan_id = a.plan_id
      WHERE l.entry_id = ${e.entryId} AND a.last_seq = l.seq AND l.amount < 0
        AND l.balance_after < p.low_balance_threshold AND l.balance_after - l.amount >= p.low_balance_threshold
      ON CONFLICT (key) DO NOTHING`,
    ),
  ];
}

/** An event about `entryId` for the user's feed, written in the same batch as the entry. */
export function entryNotification(
  d1: D1Database,
  entryId: string,
  type: string,
  data: Record<string, unknown>,
  at: number,
): D1PreparedStatement {
  return stmt(
    d1,
    sql`INSERT INTO notifications (key, user_id, type, data, created_at)
    SELECT ${`${type}:${entryId}`}, l.user_id, ${type}, json_set(${JSON.stringify(data)}, '$.newBalance', l.balance_after), ${at}
    FROM ledger l WHERE l.entry_id = ${entryId}
    ON CONFLICT (key) DO NOTHING`,
  );
}

// Read on every allocate and extend: raw SQL (one prepared statement, no query builder).
const FUNDS_SELECT = `SELECT a.user_id AS userId, a.balance AS balance, a.plan_id AS planId, p.currency AS currency,
    p.base_per_second AS basePerSecond, p.cpu_core_per_second AS cpuCorePerSecond, p.memory_gb_per_second AS memoryGBPerSecond,
    p.storage_gb_per_second AS storageGBPerSecond, p.low_balance_threshold AS lowBalanceThreshold
  FROM accounts a JOIN pricing_plans p ON p.plan_id = a.plan_id WHERE a.user_id IN `;

/** Funds of several users; opens accounts (with starting credit) for those who have none yet. */
export async function fundsOf(
  db: Db,
  env: Pick<Env, "DB" | "DEFAULT_PRICING_PLAN">,
  userIds: string[],
  now = Date.now(),
): Promise<Map<string, Funds>> {
  const out = new Map<string, Funds>();
  const read = async (ids: string[]) => {
    // D1 binds at most 100 parameters per statement.
    for (let i = 0; i < ids.length; i += 90) {
      const chunk = ids.slice(i, i + 90);
      const { results } = await env.DB.prepare(`${FUNDS_SELECT}(${chunk.map(() => "?").join(",")})`)
        .bind(...chunk)
        .all<Funds>();
      for (const r of results) out.set(r.userId, r);
    }
  };
  const unique = [...new Set(userIds)];
  await read(unique);
  const missing = unique.filter((u) => !out.has(u));
  if (missing.length) {
    await openAccounts(db, env, missing, now);
    await read(missing);
  }
  return out;
}

export async function fundsFor(db: Db, env: Pick<Env, "DB" | "DEFAULT_PRICING_PLAN">, userId: string): Promise<Funds> {
  const f = (await fundsOf(db, env, [userId])).get(userId);
  if (!f) throw new Error(`account for ${userId} could not be opened`);
  return f;
}

/** Opens accounts on the default pricing plan with its starting credit (idempotent). */
export async function openAccounts(
  db: Db,
  env: Pick<Env, "DB" | "DEFAULT_PRICING_PLAN">,
  userIds: string[],
  now = Date.now(),
): Promise<void> {
  const planId = defaultPricingPlan(env);
  const [plan] = await db.select().from(pricingPlans).where(eq(pricingPlans.planId, planId));
  if (!plan) throw new Error(`default pricing plan "${planId}" does not exist; apply the D1 migrations or set DEFAULT_PRICING_PLAN`);
  const statements = userIds.flatMap((userId) => [
    stmt(
      env.DB,
      db
        .insert(accounts)
        .values({ userId, planId, balance: 0, lastSeq: 0, reconciledThrough: now, createdAt: now, updatedAt: now })
        .onConflictDoNothing(),
    ),
    ...entryStatements(env.DB, {
      entryId: `starting_credit:${userId}`,
      userId,
      kind: "starting_credit",
      amount: plan.startingCredit,
      planId,
      memo: "Starting credit",
      at: now,
    }),
  ]);
  for (let i = 0; i < statements.length; i += 400) await env.DB.batch(statements.slice(i, i + 400));
}

// ---- credits and adjustments -------------------------------------------------------------------

export interface Booked {
  userId: string;
  entryId: string;
  amount: number;
  /** Balance right after this entry. */
  balanceAfter: number;
  currency: string;
  /** True when this entry id was booked before (nothing changed now). */
  duplicate: boolean;
}

/**
 * Books a credit or adjustment once per `entryId`, optionally with a feed event and an audit row
 * (in the same batch; `change.entryId` is added). A reused id with another user or amount is
 * refused rather than silently ignored; a repeat books nothing and writes no second audit row.
 */
export async function bookEntry(
  env: Env,
  e: Omit<Entry, "at" | "planId">,
  opts: { event?: { type: string; data: Record<string, unknown> }; audit?: AuditEntry } = {},
): Promise<Booked | { conflict: true; entryId: string }> {
  const { event, audit } = opts;
  const db = dbOf(env);
  // A reused id is refused before anything is written: not even an account is opened for it.
  const [prior] = await db.select({ userId: ledger.userId, amount: ledger.amount }).from(ledger).where(eq(ledger.entryId, e.entryId));
  if (prior && (prior.userId !== e.userId || prior.amount !== e.amount)) return { conflict: true, entryId: e.entryId };
  const funds = await fundsFor(db, env, e.userId);
  const now = Date.now();
  const statements = entryStatements(env.DB, { ...e, planId: funds.planId, at: now });
  if (event) statements.push(entryNotification(env.DB, e.entryId, event.type, event.data, now));
  if (audit) statements.push(entryAudit(env.DB, e, { ...audit, at: now }));
  const results = await env.DB.batch(statements);
  await fundsChanged(env, e.userId);
  const [row] = await db.select().from(ledger).where(eq(ledger.entryId, e.entryId));
  // Also when there is no event of its own: a debit may have crossed the low-balance threshold.
  await deliverNotifications(env, [e.userId]);
  if (!row || row.userId !== e.userId || row.amount !== e.amount) return { conflict: true, entryId: e.entryId };
  return {
    userId: e.userId,
    entryId: e.entryId,
    amount: row.amount,
    balanceAfter: row.balanceAfter,
    currency: funds.currency,
    duplicate: (results[0]?.meta.changes ?? 0) === 0,
  };
}

/**
 * The audit row of a booked entry: written only if the ledger row is this entry (its user and
 * amount) and no row for this entry exists yet, so a retried request leaves one row, not two.
 */
function entryAudit(d1: D1Database, e: Pick<Entry, "entryId" | "userId" | "amount">, audit: AuditEntry): D1PreparedStatement {
  return auditStatement(
    d1,
    { ...audit, change: { ...audit.change, entryId: e.entryId } },
    {
      sql: `EXISTS (SELECT 1 FROM ledger WHERE entry_id = ? AND user_id = ? AND amount = ?)
        AND NOT EXISTS (SELECT 1 FROM audit_log WHERE target = ? AND action = ? AND json_extract(change, '$.entryId') = ?)`,
      params: [e.entryId, e.userId, e.amount, audit.target, audit.action, e.entryId],
    },
  );
}

/**
 * Tells the user's object that their balance or plan changed, so its next check reads D1 again
 * instead of reusing the balance it read last (see UserQuota.funds). Best effort: a miss is
 * bounded by BILLING.balanceReuseMs.
 */
export async function fundsChanged(env: Pick<Env, "USER_QUOTA">, userId: string): Promise<void> {
  try {
    await take(env.USER_QUOTA.getByName(userId).fundsChanged());
  } catch (err) {
    log("warn", "balance change not told to the user's object", { userId, error: String(err) });
  }
}
