/**
 * Reconciliation: every allocation a user's object knows as ended (and billable) must have
 * exactly one usage record and one charge in D1. The user objects are the independent
 * record of what ended, so this catches anything the queue path lost (a dead letter that
 * could not be stored, a message dropped after its retries) and heals it through the same
 * booking path; a booked record that differs from the device's is rewritten to it, its charge
 * corrected (src/billing/heal.ts). The balance is also checked against the sum of the ledger. Differences are
 * summed up on the operators' feed (best effort: the run's report is the full answer).
 */
import { asc, eq, gt, inArray, sql } from "drizzle-orm";
import { BILLING } from "../config";
import type { Env } from "../env";
import { accounts, ledger, usageRecords } from "../db/schema";
import type { UsageRecord } from "../domain/types";
import { dbOf } from "../db/client";
import { applyUsage } from "./usage";
import { COMPARED, healRecord, type Healed } from "./heal";
import { log } from "../log";
import { notifyOperators } from "./notify";
import { take } from "../rpc";
import { addCounters } from "../counters";

export interface Mismatch {
  allocationId: string;
  field: string;
  expected: number | string;
  recorded: number | string;
}

export interface UserReconciliation {
  userId: string;
  from: number;
  to: number;
  checked: number;
  missingUsage: string[];
  missingCharges: string[];
  mismatched: Mismatch[];
  healed: number;
  /** Booked records rewritten to the device's, with the charge corrected by `correction` (minor units, + credited). */
  corrected: Healed[];
  stillMissing: string[];
  /** Set when the stored balance is not the sum of the ledger (reported, never changed here). */
  balanceDrift: { balance: number; ledgerSum: number } | null;
}

/** Who heals, in the audit log: a missing record booked, or a differing one rewritten. */
const HEALER = { actor: "reconcile", action: "usage.heal" };

export async function reconcileUser(env: Env, userId: string, from: number, to: number, heal: boolean): Promise<UserReconciliation> {
  const db = dbOf(env);
  const stub = env.USER_QUOTA.getByName(userId);
  const report: UserReconciliation = {
    userId,
    from,
    to,
    checked: 0,
    missingUsage: [],
    missingCharges: [],
    mismatched: [],
    healed: 0,
    corrected: [],
    stillMissing: [],
    balanceDrift: null,
  };
  const toHeal: UsageRecord[] = [];
  const toCorrect: UsageRecord[] = [];
  let after: string | undefined;
  do {
    const page = await take(stub.endedAllocations(userId, from, to, after, 90));
    after = page.next ?? undefined;
    const ids = page.records.map((r) => r.allocationId);
    if (!ids.length) break;
    report.checked += ids.length;
    const stored = new Map(
      (await db.select().from(usageRecords).where(inArray(usageRecords.allocationId, ids))).map((u) => [u.allocationId, u]),
    );
    const charged = new Set(
      (await db.select({ id: ledger.allocationId }).from(ledger).where(inArray(ledger.allocationId, ids))).map((c) => c.id),
    );
    for (const r of page.records) {
      const u = stored.get(r.allocationId);
      if (!u) {
        report.missingUsage.push(r.allocationId);
        toHeal.push(r);
        continue;
      }
      const differs = COMPARED.filter((f) => u[f] !== r[f]);
      for (const f of differs) report.mismatched.push({ allocationId: r.allocationId, field: f, expected: r[f], recorded: u[f] });
      // The device's record wins: the booked row is rewritten (and its charge corrected) to it.
      if (differs.length) toCorrect.push(r);
      if (!charged.has(r.allocationId)) {
        report.missingCharges.push(r.allocationId);
        // Charge what was recorded (the usage row is what the user sees in reports), corrected first if it differed.
        toHeal.push(differs.length ? r : { ...u, tenantId: u.tenantId ?? undefined, reason: u.reason as UsageRecord["reason"] });
      }
    }
  } while (after);
  if (heal)
    for (const r of toCorrect) {
      try {
        const healed = await healRecord(env, r, HEALER);
        if (healed) report.corrected.push(healed);
      } catch (err) {
        log("warn", "a differing usage record was not healed", { userId, allocationId: r.allocationId, error: String(err) });
      }
    }
  if (heal && toHeal.length) {
    for (let i = 0; i < toHeal.length; i += 100) {
      const outcomes = await applyUsage(env, toHeal.slice(i, i + 100), "reconcile", { audit: HEALER });
      for (const o of outcomes) if (o.status === "failed") report.stillMissing.push(o.allocationId);
    }
    report.healed = toHeal.length - report.stillMissing.length;
  } else {
    report.stillMissing = toHeal.map((r) => r.allocationId);
  }
  const sums = await db.get<{ balance: number | null; total: number | null }>(sql`
    SELECT (SELECT balance FROM accounts WHERE user_id = ${userId}) AS balance, (SELECT SUM(amount) FROM ledger
      WHERE user_id = ${userId}) AS total`);
  if (sums && sums.balance !== null && sums.balance !== (sums.total ?? 0))
    report.balanceDrift = { balance: sums.balance, ledgerSum: sums.total ?? 0 };
  return report;
}

export interface ReconcileRun {
  from: number | null;
  to: number;
  users: number;
  checked: number;
  missingUsage: number;
  missingCharges: number;
  mismatched: number;
  healed: number;
  /** Booked records rewritten to their device's record. */
  corrected: number;
  stillMissing: number;
  balanceDrift: number;
  /** Dead letters whose usage is now recorded (marked resolved). */
  resolvedDeadLetters: number;
  /** Users with any difference, in full. */
  differences: UserReconciliation[];
  remaining: boolean;
}

/**
 * One pass. With `userId`: that user over [from, to). With `from` and no `userId` (an
 * operator's window): every account over [from, to), in user id order; watermarks untouched.
 * Otherwise (the cron): the accounts checked longest ago, each from its watermark (minus an
 * overlap) to `to` (default `now − grace`), advancing the watermark, never past `now − grace`.
 */
export async function reconcile(
  env: Env,
  opts: { userId?: string; from?: number; to?: number; heal?: boolean; now?: number; limit?: number } = {},
): Promise<ReconcileRun> {
  const db = dbOf(env);
  const now = opts.now ?? Date.now();
  const to = opts.to ?? now - BILLING.reconcileGraceMs;
  const heal = opts.heal ?? true;
  const reports: UserReconciliation[] = [];
  let remaining = false;
  if (opts.userId) {
    reports.push(await reconcileUser(env, opts.userId, opts.from ?? 0, to, heal));
  } else if (opts.from !== undefined) {
    // Not by watermark: those do not move for an explicit window, so the same oldest accounts
    // would come first every time and the rest would never be checked.
    let after = "";
    for (;;) {
      const page = await db
        .select({ userId: accounts.userId })
        .from(accounts)
        .where(gt(accounts.userId, after))
        .orderBy(asc(accounts.userId))
        .limit(100);
      for (const a of page) reports.push(await reconcileUser(env, a.userId, opts.from, to, heal));
      if (page.length < 100) break;
      after = page[page.length - 1]!.userId;
    }
  } else {
    const limit = opts.limit ?? BILLING.reconcileAccountsPerRun;
    const due = await db
      .select({ userId: accounts.userId, through: accounts.reconciledThrough })
      .from(accounts)
      .orderBy(asc(accounts.reconciledThrough), asc(accounts.userId))
      .limit(limit + 1);
    remaining = due.length > limit;
    // A watermark says "everything that ended before it is booked"; allocations that end within
    // the grace may not be known to their user's object yet, so an explicit later `to` is checked
    // but does not move the watermark past `now − grace`.
    const through = Math.min(to, now - BILLING.reconcileGraceMs);
    for (const a of due.slice(0, limit)) {
      const from = Math.max(0, a.through - BILLING.reconcileOverlapMs);
      const r = await reconcileUser(env, a.userId, from, to, heal);
      reports.push(r);
      // The watermark moves only when nothing is left unbooked, so a failed heal is retried next run.
      if (r.stillMissing.length === 0)
        await db
          .update(accounts)
          .set({ reconciledThrough: Math.max(a.through, through) })
          .where(eq(accounts.userId, a.userId));
    }
  }
  const resolved = await db.run(sql`UPDATE failed_usage SET status = 'resolved', resolved_at = ${now}
    WHERE status IN ('failed', 'invalid') AND allocation_id IN (SELECT allocation_id FROM usage_records)`);
  const sum = (f: (r: UserReconciliation) => number) => reports.reduce((n, r) => n + f(r), 0);
  const run: ReconcileRun = {
    from: opts.from ?? null,
    to,
    users: reports.length,
    checked: sum((r) => r.checked),
    missingUsage: sum((r) => r.missingUsage.length),
    missingCharges: sum((r) => r.missingCharges.length),
    mismatched: sum((r) => r.mismatched.length),
    healed: sum((r) => r.healed),
    corrected: sum((r) => r.corrected.length),
    stillMissing: sum((r) => r.stillMissing.length),
    balanceDrift: sum((r) => (r.balanceDrift ? 1 : 0)),
    resolvedDeadLetters: resolved.meta.changes ?? 0,
    differences: reports.filter((r) => r.missingUsage.length || r.missingCharges.length || r.mismatched.length || r.balanceDrift),
    remaining,
  };
  if (run.differences.length) await tellOperators(env, run);
  // Differences found per run (before healing), for the operators' alert on /admin/metrics.
  await addCounters(env, {
    reconcile_runs: 1,
    reconcile_differences: run.missingUsage + run.missingCharges + run.mismatched + run.balanceDrift,
    reconcile_healed: run.healed,
  });
  return run;
}

const SAMPLE_USERS = 5;
const SAMPLE_IDS = 5;

/**
 * A summary on the operators' feed, keyed by what was found: the same unhealed differences met
 * again (a drift is reported on every pass until someone fixes it) show once, not every run.
 */
async function tellOperators(env: Env, run: ReconcileRun): Promise<void> {
  const fingerprint = run.differences.map((d) => [
    d.userId,
    d.missingUsage,
    d.missingCharges,
    d.mismatched.map((m) => `${m.allocationId}.${m.field}`),
    d.balanceDrift && [d.balanceDrift.balance, d.balanceDrift.ledgerSum],
    d.stillMissing, // a dry run and the run that heals the same records are two pieces of news
  ]);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(JSON.stringify(fingerprint))));
  const key = `reconcile:${[...digest.slice(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
  const from = run.from ?? Math.min(...run.differences.map((d) => d.from));
  await notifyOperators(env, key, "billing.reconcile_differences", "", {
    from: new Date(from).toISOString(),
    to: new Date(run.to).toISOString(),
    differences: run.missingUsage + run.missingCharges + run.mismatched + run.balanceDrift,
    healed: run.healed,
    sample: run.differences.slice(0, SAMPLE_USERS).map((d) => ({
      userId: d.userId,
      missingUsage: d.missingUsage.slice(0, SAMPLE_IDS),
      missingCharges: d.missingCharges.slice(0, SAMPLE_IDS),
      mismatched: d.mismatched.slice(0, SAMPLE_IDS),
      healed: d.healed,
      stillMissing: d.stillMissing.length,
      balanceDrift: d.balanceDrift,
    })),
  });
}
