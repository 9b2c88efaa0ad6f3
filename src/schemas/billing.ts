/** Metering and billing (src/routes/billing*.ts, the usage queue): usage records, balances, the ledger, pricing, reports. */
import { z } from "@hono/zod-openapi";
import { BILLING } from "../config";
import { Id, Limit } from "./common";
import { Instant } from "./parts";

/** Allocation ids are ours (`alc_…`) or another service's; ids are opaque but bounded. */
export const AllocationId = z
  .string()
  .min(1)
  .max(300)
  .regex(/^[A-Za-z0-9._:@-]+$/, "letters, digits and . _ : @ - only");
const END_REASONS = ["released", "expired", "force_released", "maintenance", "offline", "removed", "orphaned", "idle"] as const;

/** The fields every usage record has, however it arrives. */
const usageFields = {
  allocationId: AllocationId,
  deviceId: Id,
  userId: Id,
  tenantId: Id.optional(),
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
  allocatedAt: z.number().int().min(0),
  releasedAt: z.number().int().min(0),
  reason: z.enum(END_REASONS),
});

/** A usage record reported by another service (the old system's shape; times as ISO or epoch ms). */
export const UsageReport = z
  .object({
    ...usageFields,
    allocatedAt: Instant,
    releasedAt: Instant,
    reason: z.enum(END_REASONS).default("released"),
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

export const UsageReportBody = z
  .union([
    UsageReport,
    z.array(UsageReport).min(1).max(BILLING.maxUsageBatch),
    z.object({ records: z.array(UsageReport).min(1).max(BILLING.maxUsageBatch) }).strict(),
  ])
  .openapi("UsageReportBody", { description: "One record, an array of up to 100, or `{records: [...]}`" });

export const UsageOutcomeView = z.object({
  allocationId: z.string(),
  status: z.enum(["recorded", "duplicate", "failed"]),
  amount: z.number().optional(),
  error: z.string().optional(),
});

export const Money = z.number().int().openapi({ description: "Integer minor units (cents)" });

export const BalanceView = z
  .object({
    userId: z.string(),
    balance: Money,
    currency: z.string(),
    planId: z.string(),
    lowBalanceThreshold: Money,
    lowBalance: z.boolean(),
    hasBalance: z.boolean(),
    formatted: z.string(),
  })
  .openapi("Balance");

export const TopUpBody = z
  .object({
    amount: z.number().int().min(1).max(BILLING.maxTransfer).openapi({ description: "Minor units (cents), at most 1,000,000.00" }),
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

export const AdjustmentBody = z
  .object({
    amount: z
      .number()
      .int()
      .min(-BILLING.maxTransfer)
      .max(BILLING.maxTransfer)
      .refine((n) => n !== 0, "must not be 0"),
    adjustmentId: z
      .string()
      .min(1)
      .max(200)
      .regex(/^[A-Za-z0-9._:@-]+$/),
    memo: z.string().min(1).max(500),
  })
  .strict()
  .openapi("Adjustment");

export const PricingPlanBody = z
  .object({
    name: z.string().min(1).max(100),
    currency: z.string().regex(/^[A-Z]{3}$/),
    basePerSecond: z.number().int().min(0).max(1e9),
    cpuCorePerSecond: z.number().int().min(0).max(1e9),
    memoryGBPerSecond: z.number().int().min(0).max(1e9),
    storageGBPerSecond: z.number().int().min(0).max(1e9),
    startingCredit: z.number().int().min(0).max(BILLING.maxTransfer),
    lowBalanceThreshold: z.number().int().min(0).max(BILLING.maxTransfer),
  })
  .strict()
  .openapi("PricingPlan", { description: "Rates in micro-units of a minor unit per second (1 cent = 1,000,000)" });

export const PlanIdParam = z.object({ planId: Id });
export const AccountPlanBody = z.object({ planId: Id }).strict();

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
    status: z.enum(["failed", "replayed", "resolved", "invalid"]).optional(),
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
    userId: Id.optional(),
    from: z.iso.datetime({ offset: true }).optional(),
    to: z.iso.datetime({ offset: true }).optional(),
    heal: z.boolean().default(true),
  })
  .strict()
  .openapi("Reconcile");
export const InvoiceRunBody = z
  .object({ period: z.string().regex(/^\d{4}-(0[1-9]|1[0-2])$/, "YYYY-MM") })
  .strict()
  .openapi("InvoiceRun");
export const InvoiceIdParam = z.object({ invoiceId: z.string().min(1).max(300) });
