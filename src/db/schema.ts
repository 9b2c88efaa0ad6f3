/**
 * D1 schema (drizzle), the one place it is defined; `npm run db:generate` writes migrations/.
 * Money is integer minor units (cents) everywhere; rates are integer micro-units of a minor
 * unit per second (see src/domain/pricing.ts for the arithmetic and rounding).
 */
import { index, integer, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

/** Pools that exist (a pool comes into being with its first device). Off the allocation path. */
export const pools = sqliteTable("pools", {
  name: text("name").primaryKey(),
  createdAt: integer("created_at").notNull(),
});

/**
 * Devices that exist, with their pool: the registry the Worker consults before it addresses a
 * device or pool object, so an unknown name never creates one (see src/registry.ts).
 */
export const devices = sqliteTable(
  "devices",
  {
    deviceId: text("device_id").primaryKey(),
    pool: text("pool").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [index("devices_pool").on(t.pool)],
);

/** Per-user token revocation: bearer tokens issued (`iat`) before `not_before` are refused. */
export const tokenRevocations = sqliteTable("token_revocations", {
  userId: text("user_id").primaryKey(),
  notBefore: integer("not_before").notNull(),
  actor: text("actor").notNull(),
  updatedAt: integer("updated_at").notNull(),
});

/** Every state-changing action of an admin or a service, append-only (GET /admin/audit). */
export const auditLog = sqliteTable(
  "audit_log",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    at: integer("at").notNull(),
    /** The admin's user id, or `service` for the service token. */
    actor: text("actor").notNull(),
    /** What was done, `<thing>.<verb>` (quota.update, account.adjust, device.remove...). */
    action: text("action").notNull(),
    /** What it was done to, `<kind>:<id>` (user:alice, device:dev-1, pool:default, plan:standard). */
    target: text("target").notNull(),
    /** What changed (JSON): the request's fields and, where known, the outcome. */
    change: text("change").notNull(),
    requestId: text("request_id"),
  },
  (t) => [index("audit_target_seq").on(t.target, t.seq)],
);

/** One row per ended allocation; `allocation_id` unique makes redelivery harmless. */
export const usageRecords = sqliteTable(
  "usage_records",
  {
    allocationId: text("allocation_id").primaryKey(),
    deviceId: text("device_id").notNull(),
    userId: text("user_id").notNull(),
    tenantId: text("tenant_id"),
    durationSeconds: integer("duration_seconds").notNull(),
    cpuCores: integer("cpu_cores").notNull(),
    memoryMB: integer("memory_mb").notNull(),
    storageMB: integer("storage_mb").notNull(),
    allocatedAt: integer("allocated_at").notNull(),
    releasedAt: integer("released_at").notNull(),
    reason: text("reason").notNull(),
    receivedAt: integer("received_at").notNull(),
    /** `device` (our outbox via the queue), `external` (internal endpoint) or `reconcile` (healed). */
    source: text("source").notNull().default("device"),
  },
  (t) => [index("usage_user_released").on(t.userId, t.releasedAt), index("usage_device_released").on(t.deviceId, t.releasedAt)],
);

/** Prices. Rates are micro-units of the minor unit per second (1 cent = 1,000,000). */
export const pricingPlans = sqliteTable("pricing_plans", {
  planId: text("plan_id").primaryKey(),
  name: text("name").notNull(),
  currency: text("currency").notNull(),
  basePerSecond: integer("base_per_second").notNull(),
  cpuCorePerSecond: integer("cpu_core_per_second").notNull(),
  memoryGBPerSecond: integer("memory_gb_per_second").notNull(),
  storageGBPerSecond: integer("storage_gb_per_second").notNull(),
  /** Credit a new account on this plan starts with (minor units). */
  startingCredit: integer("starting_credit").notNull(),
  /** `billing.low_balance` fires when a charge takes the balance from at or above this to below it. */
  lowBalanceThreshold: integer("low_balance_threshold").notNull(),
  createdAt: integer("created_at").notNull(),
  updatedAt: integer("updated_at").notNull(),
});

/**
 * One row per user with money. `balance` is the running sum of the user's ledger, moved only
 * together with a ledger insert (src/billing/ledger.ts); `last_seq` is the ledger row it includes.
 */
export const accounts = sqliteTable("accounts", {
  userId: text("user_id").primaryKey(),
  planId: text("plan_id").notNull(),
  balance: integer("balance").notNull(),
  lastSeq: integer("last_seq").notNull(),
  /** Allocations that ended before this time have been reconciled. */
  reconciledThrough: integer("reconciled_through").notNull(),
  createdAt: integer("created_at").notNull(),
  updatedAt: integer("updated_at").notNull(),
});

/** Every money movement, append-only. `entry_id` makes each one idempotent (`charge:<allocationId>`, `topup:<paymentId>`...). */
export const ledger = sqliteTable(
  "ledger",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    entryId: text("entry_id").notNull().unique(),
    userId: text("user_id").notNull(),
    /** starting_credit | top_up | charge | adjustment */
    kind: text("kind").notNull(),
    /** Signed minor units: credits positive, charges negative. */
    amount: integer("amount").notNull(),
    balanceAfter: integer("balance_after").notNull(),
    allocationId: text("allocation_id"),
    planId: text("plan_id"),
    reference: text("reference"),
    memo: text("memo"),
    /** Who moved the money by hand (an adjustment's or top-up's admin or `service`); null for charges. */
    actor: text("actor"),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [
    index("ledger_user_seq").on(t.userId, t.seq),
    index("ledger_user_created").on(t.userId, t.createdAt),
    uniqueIndex("ledger_allocation").on(t.allocationId),
  ],
);

/** Monthly statements, one per user and month; never changed once written. */
export const invoices = sqliteTable(
  "invoices",
  {
    invoiceId: text("invoice_id").primaryKey(),
    userId: text("user_id").notNull(),
    /** `YYYY-MM` (UTC). */
    period: text("period").notNull(),
    periodStart: integer("period_start").notNull(),
    periodEnd: integer("period_end").notNull(),
    currency: text("currency").notNull(),
    openingBalance: integer("opening_balance").notNull(),
    /** Sum of charges booked in the period, as a positive number. */
    charges: integer("charges").notNull(),
    /** Sum of credits (top-ups, starting credit, positive adjustments). */
    credits: integer("credits").notNull(),
    /** Negative adjustments. */
    debits: integer("debits").notNull(),
    closingBalance: integer("closing_balance").notNull(),
    usageCount: integer("usage_count").notNull(),
    usageSeconds: integer("usage_seconds").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [uniqueIndex("invoices_user_period").on(t.userId, t.period)],
);

/** Usage messages the dead-letter queue gave up on, kept for inspection and replay. */
export const failedUsage = sqliteTable(
  "failed_usage",
  {
    allocationId: text("allocation_id").primaryKey(),
    userId: text("user_id"),
    /** The message body as received (JSON). */
    record: text("record").notNull(),
    error: text("error").notNull(),
    attempts: integer("attempts").notNull(),
    /** failed | replayed | resolved (reconciliation wrote it) | invalid (can never be written) */
    status: text("status").notNull(),
    firstFailedAt: integer("first_failed_at").notNull(),
    lastFailedAt: integer("last_failed_at").notNull(),
    resolvedAt: integer("resolved_at"),
  },
  (t) => [index("failed_usage_status").on(t.status, t.lastFailedAt)],
);

/** Billing events on their way to a user's feed, written with the change they report (outbox). */
export const notifications = sqliteTable(
  "notifications",
  {
    key: text("key").primaryKey(),
    userId: text("user_id").notNull(),
    type: text("type").notNull(),
    data: text("data").notNull(),
    createdAt: integer("created_at").notNull(),
    deliveredAt: integer("delivered_at"),
    attempts: integer("attempts").notNull().default(0),
  },
  (t) => [index("notifications_pending").on(t.deliveredAt, t.createdAt)],
);

/** Operator counters the usage consumers keep (reports sent, failed, dead-lettered); see src/metrics.ts. */
export const metricCounters = sqliteTable("metric_counters", {
  name: text("name").primaryKey(),
  value: integer("value").notNull(),
});
