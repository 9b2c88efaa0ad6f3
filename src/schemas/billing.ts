/** Metering and billing (src/routes/billing*.ts, the usage queue): usage records, balances, the ledger, pricing, reports. */
import { z } from "@hono/zod-openapi";
import { BILLING } from "../config";
import { END_REASONS } from "../domain/types";
import { Id, Limit, Minor, Time } from "./common";
import { Instant, withDefault } from "./parts";

/** Allocation ids are ours (`alc_…`) or another service's; ids are opaque but bounded. */
export const AllocationId = z
  .string()
  .min(1)
  .max(300)
  .regex(/^[A-Za-z0-9._:@-]+$/, "letters, digits and . _ : @ - only");

export const EndReason = z.enum(END_REASONS).openapi("EndReason", { description: "Why the allocation ended" });

/** The fields every usage record has, however it arrives. */
const usageFields = {
  allocationId: AllocationId,
  deviceId: Id,
  userId: Id,
  durationSeconds: z
    .number()
    .int()
    .min(0)
    .max(10 * 365 * 86_400),
  cpuCores: z.number().int().min(0).max(1024),
  memoryMB: z.number().int().min(0).max(16_777_216),
  storageMB: z.number().int().min(0).max(1_073_741_824),
};

/** A usage record as the queue carries it (epoch ms), validated before anything is written. */
export const UsageRecordMessage = z.object({
  ...usageFields,
  tenantId: Id.optional(),
  allocatedAt: z.number().int().min(0),
  releasedAt: z.number().int().min(0),
  reason: EndReason,
});

/**
 * A usage record reported by another service, as the old system's device service sends it:
 * times as ISO strings (its `Date`s serialized), optional fields absent or `null`.
 */
export const UsageReport = z
  .object({
    ...usageFields,
    tenantId: Id.nullish().openapi({ description: "Absent or `null`: none" }),
    allocatedAt: Instant,
    releasedAt: Instant,
    reason: EndReason.nullish().openapi({ description: "Absent or `null`: `released`" }),
  })
  .strict()
  .refine((r) => r.releasedAt >= r.allocatedAt, {
    message: "releasedAt must not be before allocatedAt",
    path: ["releasedAt"],
  })
  .refine((r) => r.durationSeconds <= Math.ceil((r.releasedAt - r.allocatedAt) / 1000) + 1, {
    message: "durationSeconds is longer than releasedAt − allocatedAt",
    path: ["durationSeconds"],
  })
  .openapi("UsageReport");

export const UsageReportArray = z.array(UsageReport).min(1).max(BILLING.maxUsageBatch);
export const UsageReportBatch = z.object({ records: UsageReportArray }).strict();

export const UsageReportBody = z
  .union([UsageReport, UsageReportArray, UsageReportBatch])
  .openapi("UsageReportBody", { description: "One record, an array of up to 100, or `{records: [...]}`" });

// ---- answers --------------------------------------------------------------------------------------

const Currency = z.string().openapi({ description: "ISO 4217 code of the minor units beside it", example: "USD" });

export const BalanceView = z
  .object({
    userId: z.string(),
    balanceMinor: Minor,
    currency: Currency,
    pricingPlanId: z.string(),
    lowBalanceThresholdMinor: Minor,
    lowBalance: z.boolean(),
    hasBalance: z.boolean(),
    formatted: z.string().openapi({ description: "The balance for people, e.g. `12.34 USD`" }),
  })
  .openapi("Balance");

export const UsageOutcomeView = z
  .object({
    allocationId: z.string(),
    status: z.enum(["recorded", "duplicate", "failed"]),
    amountMinor: Minor.optional().openapi({ description: "The charge booked (`recorded` only)" }),
    currency: Currency.optional(),
    error: z.string().optional(),
  })
  .openapi("UsageOutcome");

export const ReportUsageResult = z
  .object({ recorded: z.number().int(), duplicates: z.number().int(), failed: z.number().int(), results: z.array(UsageOutcomeView) })
  .openapi("ReportUsageResult");

export const LedgerKind = z.enum(["starting_credit", "top_up", "charge", "adjustment"]).openapi("LedgerKind");

export const LedgerEntryView = z
  .object({
    seq: z.number().int(),
    entryId: z.string(),
    userId: z.string(),
    kind: LedgerKind,
    amountMinor: Minor.openapi({ description: "Signed: credits positive, charges negative" }),
    balanceAfterMinor: Minor,
    currency: Currency,
    allocationId: z.string().nullable(),
    pricingPlanId: z.string().nullable(),
    reference: z.string().nullable(),
    memo: z.string().nullable(),
    actor: z.string().nullable().openapi({ description: "Who moved the money by hand (an admin's id, or `service`)" }),
    createdAt: Time,
  })
  .openapi("LedgerEntry");

export const LedgerPage = z.object({ items: z.array(LedgerEntryView), nextCursor: z.string().nullable() }).openapi("LedgerPage");

export const InvoiceView = z
  .object({
    invoiceId: z.string(),
    userId: z.string(),
    period: z.string().openapi({ description: "`YYYY-MM` (UTC)" }),
    periodStart: Time,
    periodEnd: Time,
    currency: Currency,
    openingBalanceMinor: Minor,
    chargesMinor: Minor.openapi({ description: "Charges booked in the period, as a positive number" }),
    creditsMinor: Minor.openapi({ description: "Top-ups, starting credit and positive adjustments" }),
    debitsMinor: Minor.openapi({ description: "Negative adjustments, as a positive number" }),
    closingBalanceMinor: Minor,
    usageCount: z.number().int(),
    usageSeconds: z.number().int(),
    createdAt: Time,
  })
  .openapi("Invoice");

export const InvoiceList = z.object({ items: z.array(InvoiceView) }).openapi("InvoiceList");

const Micros = (what: string) =>
  z
    .number()
    .int()
    .min(0)
    .max(1e9)
    .openapi({ description: `${what}: millionths of a minor unit per second` });
const pricingFields = {
  name: z.string().min(1).max(100),
  currency: z.string().regex(/^[A-Z]{3}$/),
  baseMicrosPerSecond: Micros("Per device"),
  cpuCoreMicrosPerSecond: Micros("Per CPU core"),
  memoryGBMicrosPerSecond: Micros("Per GB of memory"),
  storageGBMicrosPerSecond: Micros("Per GB of storage"),
  startingCreditMinor: z.number().int().min(0).max(BILLING.maxTransfer),
  lowBalanceThresholdMinor: z.number().int().min(0).max(BILLING.maxTransfer),
};

export const PricingPlanBody = z
  .object(pricingFields)
  .strict()
  .openapi("PricingPlanSettings", { description: "Rates in millionths of a minor unit per second (1 cent = 1,000,000)" });

export const PricingPlanPatch = z
  .object(pricingFields)
  .partial()
  .strict()
  .refine((b) => Object.keys(b).length > 0, "name at least one field to change")
  .openapi("PricingPlanPatch", {
    description:
      "Any of a pricing plan's settings, each checked as in PricingPlanSettings; the others stay as they are. " +
      "Rates in millionths of a minor unit per second (1 cent = 1,000,000)",
  });

export const PricingPlanView = z
  .object({ pricingPlanId: z.string(), ...pricingFields, createdAt: Time, updatedAt: Time })
  .openapi("PricingPlan", { description: "Rates in millionths of a minor unit per second (1 cent = 1,000,000)" });

export const PricingPlanList = z.object({ items: z.array(PricingPlanView) }).openapi("PricingPlanList");

/** A transfer's amount: an integer number of minor units; a decimal amount is refused with its value in minor units. */
const transferAmount = (min: number) =>
  z
    .number({ error: (iss) => (iss.code === "invalid_type" ? minorMessage(iss.input) : undefined) })
    .int()
    .min(min)
    .max(BILLING.maxTransfer);

function minorMessage(input: unknown): string {
  const n = typeof input === "number" ? input : typeof input === "string" && /^-?\d+(\.\d+)?$/.test(input.trim()) ? Number(input) : NaN;
  const hint = Number.isFinite(n) ? `: ${String(input).trim()} is ${Math.round(n * 100)}` : "";
  return `amountMinor is an integer number of minor units (cents)${hint}`;
}

export const TopUpBody = z
  .object({
    amountMinor: transferAmount(1).openapi({ description: "Integer minor units (cents), at most 1,000,000.00" }),
    paymentId: z
      .string()
      .min(1)
      .max(200)
      .regex(/^[A-Za-z0-9._:@-]+$/)
      .openapi({ description: "Idempotency: the same payment is credited once" }),
    paymentMethod: z.string().min(1).max(50).optional(),
  })
  .strict()
  .openapi("TopUp");

export const TopUpResult = z
  .object({
    userId: z.string(),
    paymentId: z.string(),
    amountMinor: Minor,
    balanceMinor: Minor,
    currency: Currency,
    duplicate: z.boolean(),
  })
  .openapi("TopUpResult");

export const AdjustmentBody = z
  .object({
    amountMinor: transferAmount(-BILLING.maxTransfer)
      .refine((n) => n !== 0, "must not be 0")
      .openapi({ description: "Signed integer minor units (cents)" }),
    adjustmentId: z
      .string()
      .min(1)
      .max(200)
      .regex(/^[A-Za-z0-9._:@-]+$/),
    memo: z.string().min(1).max(500),
  })
  .strict()
  .openapi("Adjustment");

export const AdjustmentResult = z
  .object({
    userId: z.string(),
    adjustmentId: z.string(),
    amountMinor: Minor,
    balanceMinor: Minor,
    currency: Currency,
    duplicate: z.boolean(),
  })
  .openapi("AdjustmentResult");

export const PricingPlanIdParam = z.object({ pricingPlanId: Id });
export const UserPricingPlanBody = z.object({ pricingPlanId: Id }).strict().openapi("UserPricingPlan");

// ---- usage reports, dead letters, reconciliation, invoice runs --------------------------------------

export const UsageSourceEnum = z.enum(["device", "external", "reconcile", "replay"]).openapi("UsageSource");

export const UsageItemView = z
  .object({
    allocationId: z.string(),
    deviceId: z.string(),
    userId: z.string(),
    tenantId: z.string().nullable(),
    durationSeconds: z.number().int(),
    cpuCores: z.number().int(),
    memoryMB: z.number().int(),
    storageMB: z.number().int(),
    allocatedAt: Time,
    releasedAt: Time,
    reason: EndReason,
    source: UsageSourceEnum,
    chargeMinor: Minor.nullable().openapi({ description: "What the record was charged (`null`: no charge booked yet)" }),
    currency: Currency,
  })
  .openapi("UsageItem");

const usageReportFields = {
  from: Time,
  to: Time,
  currency: Currency,
  totals: z
    .object({
      records: z.number().int(),
      durationSeconds: z.number().int(),
      deviceHours: z.number(),
      chargesMinor: Minor,
      currency: Currency,
    })
    .openapi("UsageTotals"),
  items: z.array(UsageItemView),
  nextCursor: z.string().nullable(),
};
export const UserUsageReport = z.object({ userId: z.string(), ...usageReportFields }).openapi("UserUsageReport");
export const DeviceUsageReport = z.object({ deviceId: z.string(), ...usageReportFields }).openapi("DeviceUsageReport");

export const FailedUsageStatus = z.enum(["failed", "replayed", "resolved", "invalid"]).openapi("FailedUsageStatus");

export const FailedUsageView = z
  .object({
    allocationId: z.string(),
    userId: z.string().nullable(),
    record: z.unknown().openapi({ description: "The queue message as received (any JSON: an `invalid` one fits no schema)" }),
    error: z.string(),
    attempts: z.number().int(),
    status: FailedUsageStatus,
    firstFailedAt: Time,
    lastFailedAt: Time,
    resolvedAt: Time.nullable(),
  })
  .openapi("FailedUsage");

export const FailedUsagePage = z.object({ items: z.array(FailedUsageView), nextCursor: z.string().nullable() }).openapi("FailedUsagePage");

export const ReplayOutcomeView = z
  .object({
    allocationId: z.string(),
    status: z.enum(["recorded", "duplicate", "failed", "not_found", "invalid", "already_done"]),
    amountMinor: Minor.optional().openapi({ description: "The charge booked (`recorded` only)" }),
    currency: Currency.optional(),
    error: z.string().optional(),
  })
  .openapi("ReplayOutcome");

export const ReplayResult = z
  .object({ replayed: z.number().int(), failed: z.number().int(), results: z.array(ReplayOutcomeView), remaining: z.number().int() })
  .openapi("ReplayResult");

export const ComparedField = z
  .enum(["deviceId", "durationSeconds", "cpuCores", "memoryMB", "storageMB", "allocatedAt", "releasedAt"])
  .openapi("ComparedField");

const Compared = z.union([z.number(), z.string()]).openapi({ description: "The field's value (times as ISO 8601 UTC)" });

export const UserReconciliationView = z
  .object({
    userId: z.string(),
    from: Time,
    to: Time,
    checked: z.number().int(),
    missingUsage: z.array(z.string()),
    missingCharges: z.array(z.string()),
    mismatched: z.array(z.object({ allocationId: z.string(), field: ComparedField, expected: Compared, recorded: Compared })),
    healed: z.number().int(),
    corrected: z.array(
      z.object({
        allocationId: z.string(),
        correctionMinor: Minor.openapi({ description: "Added to the balance (negative: charged more)" }),
        currency: Currency,
      }),
    ),
    stillMissing: z.array(z.string()),
    balanceDrift: z
      .object({ balanceMinor: Minor, ledgerSumMinor: Minor, currency: Currency })
      .nullable()
      .openapi({ description: "Set when the stored balance is not the sum of the ledger (reported, never changed here)" }),
  })
  .openapi("UserReconciliation");

export const ReconcileResult = z
  .object({
    from: Time.openapi({ description: "The window checked: allocations that ended at or after `from`…" }),
    to: Time.openapi({ description: "…and before `to`" }),
    defaulted: z.array(z.enum(["from", "to"])).openapi({
      description:
        "The ends of the window the service filled in (empty: both were given): `to` is now less the grace " +
        "(10 minutes: what ended since may still be on its way through the queue), `from` 31 days before `to`.",
    }),
    users: z.number().int(),
    checked: z.number().int(),
    missingUsage: z.number().int(),
    missingCharges: z.number().int(),
    mismatched: z.number().int(),
    healed: z.number().int(),
    corrected: z.number().int(),
    stillMissing: z.number().int(),
    balanceDrift: z.number().int(),
    resolvedDeadLetters: z.number().int(),
    differences: z.array(UserReconciliationView).openapi({ description: "At most 100 users with a difference" }),
    differencesShown: z.number().int(),
    differencesTotal: z.number().int(),
    remaining: z.boolean(),
  })
  .openapi("ReconcileResult");

export const InvoiceRunResult = z
  .object({ period: z.string(), created: z.number().int(), remaining: z.boolean() })
  .openapi("InvoiceRunResult");

// ---- queries and other requests ----------------------------------------------------------------------

export const PeriodQuery = z
  .object({
    from: z.iso.datetime({ offset: true }).optional(),
    to: z.iso.datetime({ offset: true }).optional(),
    cursor: z
      .string()
      .max(400)
      .regex(/^\d+\..+$/, "a cursor from a previous page")
      .optional(),
    limit: Limit,
  })
  .strict();

export const PageQuery = z.object({ cursor: z.coerce.number().int().min(0).optional(), limit: Limit }).strict();
export const FailedUsageQuery = z
  .object({
    status: FailedUsageStatus.optional(),
    cursor: z.string().max(400).optional(),
    limit: Limit,
  })
  .strict();
export const ReplayBody = z
  .object({ allocationIds: z.array(AllocationId).min(1).max(100).optional(), all: z.boolean().optional() })
  .strict()
  .refine((b) => (b.allocationIds ? !b.all : b.all === true), "name `allocationIds`, or set `all: true`")
  .openapi("Replay");
export const ReconcileBody = z
  .object({
    userId: Id.optional().openapi({ description: "Only this user; absent: every account." }),
    from: z.iso.datetime({ offset: true }).optional().openapi({ description: "Default: 31 days before `to`." }),
    to: z.iso.datetime({ offset: true }).optional().openapi({
      description: "Default: now less the grace (10 minutes; what ended since may still be on its way through the queue).",
    }),
    heal: withDefault(z.boolean(), true, "false: report the differences without healing them."),
  })
  .strict()
  .openapi("Reconcile");
export const InvoiceRunBody = z
  .object({
    period: z
      .string()
      .regex(/^\d{4}-(0[1-9]|1[0-2])$/, "YYYY-MM")
      .optional()
      .openapi({ description: "`YYYY-MM`; absent: the last month that has ended (what the cron writes)" }),
  })
  .strict()
  .openapi("InvoiceRun");
export const InvoiceIdParam = z.object({ invoiceId: z.string().min(1).max(300) });
