/**
 * Reconciliation's cure for a booked usage record that differs from its device's (the user's
 * object holds the device's record of every allocation it ended): the row is rewritten to the
 * device's record and the charge corrected by the difference, in one D1 batch. The correction is
 * its own ledger row (`heal:<allocationId>`, kind adjustment, reference = the allocation), so the
 * first charge stays as it was booked and the invoice still sums the ledger.
 */
import { eq } from "drizzle-orm";
import { dbOf } from "../db/client";
import { ledger, pricingPlans, usageRecords } from "../db/schema";
import { priceOf } from "../domain/pricing";
import type { UsageRecord } from "../domain/types";
import type { Env } from "../env";
import { entryStatements, fundsChanged, stmt } from "./ledger";
import { auditStatement, type AuditBy } from "../audit";
import { ComparedField } from "../schemas";

/** The fields of a usage record that must equal the device's record. */
export const COMPARED = ComparedField.options;

const compared = (r: Pick<UsageRecord, (typeof COMPARED)[number]>) =>
  Object.fromEntries(COMPARED.map((f) => [f, r[f]])) as Pick<UsageRecord, (typeof COMPARED)[number]>;

export interface Healed {
  allocationId: string;
  /** Minor units added to the balance (negative: charged more). */
  correction: number;
}

/** Rewrites the booked record of `expected.allocationId` to `expected`; null when it has no charge yet (the caller books one). */
export async function healRecord(env: Env, expected: UsageRecord, by: AuditBy, at = Date.now()): Promise<Healed | null> {
  const db = dbOf(env);
  const [recorded] = await db.select().from(usageRecords).where(eq(usageRecords.allocationId, expected.allocationId));
  const [charge] = await db
    .select({ amount: ledger.amount, planId: ledger.planId })
    .from(ledger)
    .where(eq(ledger.allocationId, expected.allocationId));
  const rewrite = stmt(
    env.DB,
    db
      .update(usageRecords)
      .set({ ...compared(expected), source: "reconcile" })
      .where(eq(usageRecords.allocationId, expected.allocationId)),
  );
  // The audit row says what the record was and what it is now, in the same batch as the change.
  const audit = (correction: number | null) =>
    auditStatement(env.DB, {
      ...by,
      at,
      target: `user:${expected.userId}`,
      change: {
        allocationId: expected.allocationId,
        recorded: recorded ? compared(recorded) : null,
        expected: compared(expected),
        correction,
      },
    });
  if (!charge) {
    await env.DB.batch([rewrite, audit(null)]);
    return null;
  }
  const [rates] = await db
    .select()
    .from(pricingPlans)
    .where(eq(pricingPlans.planId, charge.planId ?? ""));
  const due = rates ? -priceOf(rates, expected, expected.durationSeconds) : charge.amount;
  const correction = due - charge.amount;
  const statements = [rewrite, audit(correction)];
  if (correction !== 0)
    statements.push(
      ...entryStatements(env.DB, {
        entryId: `heal:${expected.allocationId}`,
        userId: expected.userId,
        kind: "adjustment",
        amount: correction,
        reference: expected.allocationId,
        planId: charge.planId,
        memo: `Reconciliation: the booked usage differed from the device's record (${expected.durationSeconds} s)`,
        at,
      }),
    );
  await env.DB.batch(statements);
  if (correction !== 0) await fundsChanged(env, expected.userId);
  return { allocationId: expected.allocationId, correction };
}
