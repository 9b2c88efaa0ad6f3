/** Request and response schemas (zod), shared by validation and the OpenAPI document. */
import { z } from "@hono/zod-openapi";
import { ALLOCATION, APP_EVENTS, BATCH, BILLING, FEED, IDS, PAGING, PLAN_TIERS, QUEUE, RESERVATION, STRATEGIES } from "./config";

export const Id = z.string().min(1).max(IDS.maxLength).regex(IDS.pattern, "letters, digits and . _ : @ - only (max 128)");
const Count = (max: number) => z.number().int().min(0).max(max);

export const Spec = z
  .object({
    cpuCores: z.number().int().min(0).max(1024).optional(),
    memoryMB: z.number().int().min(0).max(16_777_216).optional(),
    storageMB: z.number().int().min(0).max(1_073_741_824).optional(),
  })
  .strict();

/** Idle release grace (per allocation or per pool). */
const IdleMinutes = z.number().int().min(FEED.idleReleaseMinMinutes).max(FEED.idleReleaseMaxMinutes);
const IdleSeconds = z
  .number()
  .int()
  .min(ALLOCATION.minShortSeconds)
  .max(FEED.idleReleaseMaxMinutes * 60);

export const AllocateBody = z
  .object({
    userId: Id.optional().openapi({ description: "Admins only: allocate on behalf of this user." }),
    durationMinutes: z.number().int().min(ALLOCATION.minMinutes).max(ALLOCATION.maxMinutes).default(ALLOCATION.defaultMinutes),
    durationSeconds: z
      .number()
      .int()
      .min(ALLOCATION.minShortSeconds)
      .max(ALLOCATION.maxMinutes * 60)
      .optional()
      .openapi({ description: "Test-only short duration; refused unless ALLOW_SHORT_DURATIONS is set." }),
    pool: Id.optional(),
    spec: Spec.optional(),
    idempotencyKey: z.string().min(1).max(200).optional(),
    idleReleaseMinutes: IdleMinutes.optional().openapi({
      description:
        "Idle release: the allocation ends (reason `idle`, billed as usual) once you have had no user feed socket (GET /ws) open for this many minutes. The clock starts when your last socket closes (or at allocation when none is open) and stops when one opens again. If the pool also sets one, the shorter applies.",
    }),
    idleReleaseSeconds: IdleSeconds.optional().openapi({
      description: "Test-only idle release grace in seconds; refused unless ALLOW_SHORT_DURATIONS is set.",
    }),
  })
  .strict()
  .refine((b) => b.idleReleaseMinutes === undefined || b.idleReleaseSeconds === undefined, {
    message: "name idleReleaseMinutes or idleReleaseSeconds, not both",
    path: ["idleReleaseSeconds"],
  })
  .openapi("AllocateRequest");

export const AllocationResult = z
  .object({
    allocationId: z.string(),
    deviceId: z.string(),
    userId: z.string(),
    pool: z.string(),
    node: z.string(),
    cpuCores: z.number(),
    memoryMB: z.number(),
    storageMB: z.number(),
    allocatedAt: z.string(),
    expiresAt: z.string(),
    durationMinutes: z.number(),
    idleReleaseSeconds: z.number().optional().openapi({
      description:
        "Present when the allocation has an idle release grace: the one that applies (its own or its pool's, the shorter), in seconds.",
    }),
  })
  .openapi("AllocationResult");

export const ReleaseBody = z.object({ deviceId: Id, userId: Id.optional() }).strict().openapi("ReleaseRequest");
export const ReleaseResult = z
  .object({
    allocationId: z.string(),
    deviceId: z.string(),
    userId: z.string(),
    allocatedAt: z.string(),
    releasedAt: z.string(),
    durationSeconds: z.number(),
    reason: z.string(),
  })
  .openapi("ReleaseResult");

export const ExtendBody = z
  .object({ additionalMinutes: z.number().int().min(1).max(ALLOCATION.maxMinutes) })
  .strict()
  .openapi("ExtendRequest");

export const AllocationView = z
  .object({
    allocationId: z.string(),
    userId: z.string(),
    deviceId: z.string().nullable(),
    pool: z.string(),
    status: z.string(),
    cpuCores: z.number(),
    memoryMB: z.number(),
    storageMB: z.number(),
    allocatedAt: z.number().nullable(),
    expiresAt: z.number().nullable(),
    durationMinutes: z.number(),
    releasedAt: z.number().nullable(),
    durationSeconds: z.number().nullable(),
    reason: z.string().nullable(),
    extendCount: z.number(),
    extendedMinutes: z.number(),
    idempotencyKey: z.string().nullable(),
    idleReleaseSeconds: z
      .number()
      .nullable()
      .openapi({ description: "Idle release grace that applies, in seconds (null: no idle release)." }),
  })
  .openapi("Allocation");

export const Limit = z.coerce.number().int().min(1).max(PAGING.maxLimit).optional();

export const ListAllocationsQuery = z
  .object({
    userId: Id.optional(),
    status: z.enum(["pending", "active", "released"]).optional(),
    cursor: z
      .string()
      .max(300)
      .regex(/^\d+\..+$/, "a cursor from a previous page")
      .optional(),
    limit: Limit,
  })
  .strict();

export const AllocationIdParam = z.object({ id: z.string().min(1).max(400) });
export const DeviceIdParam = z.object({ id: Id });
export const PoolParam = z.object({ pool: Id });

export const AvailableQuery = z.object({ pool: Id.optional(), cursor: Id.optional(), limit: Limit }).strict();

export const RegisterDeviceBody = z
  .object({
    deviceId: Id.optional(),
    pool: Id,
    node: Id.optional(),
    cpuCores: z.number().int().min(1).max(1024),
    memoryMB: z.number().int().min(1).max(16_777_216),
    storageMB: z.number().int().min(1).max(1_073_741_824),
  })
  .strict()
  .openapi("RegisterDevice");

export const UpdateDeviceBody = z
  .object({
    pool: Id.optional(),
    node: Id.optional(),
    cpuCores: z.number().int().min(1).max(1024).optional(),
    memoryMB: z.number().int().min(1).max(16_777_216).optional(),
    storageMB: z.number().int().min(1).max(1_073_741_824).optional(),
  })
  .strict()
  .refine((b) => Object.keys(b).length > 0, "name at least one field to change")
  .openapi("UpdateDevice");

export const DeviceView = z
  .object({
    deviceId: z.string(),
    pool: z.string(),
    node: z.string(),
    cpuCores: z.number(),
    memoryMB: z.number(),
    storageMB: z.number(),
    status: z.string(),
    createdAt: z.number(),
    updatedAt: z.number(),
  })
  .passthrough()
  .openapi("Device");

export const HistoryQuery = z.object({ cursor: z.coerce.number().int().min(0).optional(), limit: Limit }).strict();
export const PoolDevicesQuery = z
  .object({
    status: z.enum(["available", "allocated", "maintenance", "offline"]).optional(),
    cursor: Id.optional(),
    limit: Limit,
  })
  .strict();
export const UsersQuery = z.object({ cursor: Id.optional(), limit: Limit }).strict();
export const StrategyBody = z
  .object({
    strategy: z.enum(STRATEGIES).optional().openapi({ description: "How the pool picks a device." }),
    idleReleaseMinutes: IdleMinutes.nullable().optional().openapi({
      description:
        "Idle release for every allocation in the pool: it ends (reason `idle`, billed) once its holder has had no user feed socket open this long. `null` turns it off. An allocation's own idleReleaseMinutes applies if shorter.",
    }),
    idleReleaseSeconds: IdleSeconds.nullable().optional().openapi({
      description: "Test-only idle release grace in seconds; refused unless ALLOW_SHORT_DURATIONS is set.",
    }),
  })
  .strict()
  .refine((b) => Object.keys(b).length > 0, "name at least one field to change")
  .refine((b) => b.idleReleaseMinutes === undefined || b.idleReleaseSeconds === undefined, {
    message: "name idleReleaseMinutes or idleReleaseSeconds, not both",
    path: ["idleReleaseSeconds"],
  })
  .openapi("PoolSettings");

const LimitsPatch = z
  .object({
    maxDevices: Count(100_000),
    maxCpuCores: Count(10_000_000),
    maxMemoryMB: Count(1e12),
    maxStorageMB: Count(1e13),
    maxCpuCoresPerDevice: Count(1024),
    maxMemoryMBPerDevice: Count(16_777_216),
    maxStorageMBPerDevice: Count(1_073_741_824),
    maxDeviceHoursPerPeriod: Count(1e9),
  })
  .partial()
  .strict();

export const QuotaUpdateBody = z
  .object({
    plan: z.enum(PLAN_TIERS).optional(),
    limits: LimitsPatch.optional(),
    suspended: z.boolean().optional(),
    validUntil: z.iso.datetime({ offset: true }).optional(),
  })
  .strict()
  .refine((b) => Object.keys(b).length > 0, "name at least one field to change")
  .openapi("QuotaUpdate");

export const RenewBody = z
  .object({ extensionDays: z.number().int().min(1).max(3650).default(30) })
  .strict()
  .openapi("QuotaRenew");
export const UserParam = z.object({ userId: Id });

export const QuotaView = z
  .object({
    userId: z.string(),
    plan: z.string(),
    status: z.string(),
    suspended: z.boolean(),
    validUntil: z.number(),
    limits: z.record(z.string(), z.number()),
    periodStart: z.number(),
    usage: z.record(z.string(), z.number()),
    updatedAt: z.number(),
  })
  .openapi("Quota");

export const EventsQuery = z.object({ since: z.coerce.number().int().min(0).optional(), limit: Limit, userId: Id.optional() }).strict();

// ---- metering and billing --------------------------------------------------------------------

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

const Instant = z
  .union([z.iso.datetime({ offset: true }), z.number().int().min(0).max(8.64e15)])
  .transform((v) => (typeof v === "number" ? v : Date.parse(v)))
  .openapi({ description: "ISO 8601 time or epoch milliseconds" });

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

export const ErrorSchema = z
  .object({ error: z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() }) })
  .openapi("Error");

// ---- live feed ------------------------------------------------------------------------------

export const TicketBody = z
  .object({
    feed: z.enum(["user", "admin", "device", "pool"]).default("user").openapi({
      description:
        "Which feed the ticket opens: your own (`user`), the operators' (`admin`, admins only), a device you hold (`device`) or a pool's devices (`pool`, admins only).",
    }),
    deviceId: Id.optional().openapi({ description: 'With `feed: "device"`: the device to watch.' }),
    pool: Id.optional().openapi({ description: 'With `feed: "pool"`: the pool to watch.' }),
  })
  .strict()
  .superRefine((b, ctx) => {
    if (b.feed === "device" && !b.deviceId)
      ctx.addIssue({ code: "custom", path: ["deviceId"], message: "a device ticket names its deviceId" });
    if (b.feed !== "device" && b.deviceId)
      ctx.addIssue({ code: "custom", path: ["deviceId"], message: 'deviceId goes with feed "device" only' });
    if (b.feed === "pool" && !b.pool) ctx.addIssue({ code: "custom", path: ["pool"], message: "a pool ticket names its pool" });
    if (b.feed !== "pool" && b.pool) ctx.addIssue({ code: "custom", path: ["pool"], message: 'pool goes with feed "pool" only' });
  })
  .openapi("TicketRequest");

export const TicketResult = z
  .object({
    ticket: z.string(),
    expiresAt: z.string(),
    feed: z.enum(["user", "admin", "device", "pool"]),
    url: z.string().openapi({ description: "Path to open as a WebSocket (add `&since=<last seq>` to resume)." }),
  })
  .openapi("Ticket");

/** `since` on a feed URL: a plain decimal seq (checked by hand: a bad one closes the socket with 4400). */
export const FEED_SINCE = /^(0|[1-9][0-9]{0,14})$/;

// ---- app events from other services (POST /api/internal/events) -----------------------------

/** Free text shown to users: bounded, no control characters (tab and newline allowed in `reason`). */
const Text = (max: number, multiline = false) =>
  z
    .string()
    .min(1)
    .max(max)
    .regex(multiline ? /^[^\u0000-\u0008\u000b-\u001f\u007f]*$/ : /^[^\u0000-\u001f\u007f]*$/, "no control characters");

/** ISO 8601 with a zone, stored as UTC ISO; absent means "now" (as the old system did). */
const EventTime = z.iso
  .datetime({ offset: true })
  .transform((s) => new Date(s).toISOString())
  .default(() => new Date().toISOString())
  .openapi({ description: "ISO 8601 with Z or an offset; default: when received. Stored as UTC." });

const appFields = { userId: Id, appId: Text(APP_EVENTS.maxName), appName: Text(APP_EVENTS.maxName), deviceId: Id };
const EventId = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[A-Za-z0-9._:@-]+$/, "letters, digits and . _ : @ - only")
  .openapi({ description: "The sender's id of this event: a retried send with the same id is shown once." });

const appEvent = <T extends string, D extends z.ZodRawShape>(type: T, data: D) =>
  z.object({ type: z.literal(type), eventId: EventId.optional(), data: z.object(data).strict() }).strict();

export const AppEvent = z
  .discriminatedUnion("type", [
    appEvent("app.installed", {
      ...appFields,
      deviceName: Text(APP_EVENTS.maxName).optional(),
      version: Text(APP_EVENTS.maxVersion),
      installedAt: EventTime,
    }),
    appEvent("app.install_failed", {
      ...appFields,
      deviceName: Text(APP_EVENTS.maxName).optional(),
      reason: Text(APP_EVENTS.maxReason, true),
      failedAt: EventTime,
    }),
    appEvent("app.updated", {
      ...appFields,
      oldVersion: Text(APP_EVENTS.maxVersion),
      newVersion: Text(APP_EVENTS.maxVersion),
      updatedAt: EventTime,
    }),
  ])
  .openapi("AppEvent");

export const AppEventBatch = z
  .object({ events: z.array(AppEvent).min(1).max(APP_EVENTS.maxBatch) })
  .strict()
  .openapi("AppEventBatch");
export const AppEventsBody = z
  .union([AppEvent, AppEventBatch])
  .openapi("AppEventsBody", { description: "One event, or `{events: [...]}` (1 to 100)" });

const AppEventOutcome = z.object({
  eventId: z.string().nullable(),
  type: z.string(),
  userId: z.string(),
  seq: z.number().optional().openapi({ description: "The event's seq on the user's feed" }),
  duplicate: z.boolean().optional().openapi({ description: "True when this eventId was shown before (nothing new was sent)" }),
  error: z
    .object({ code: z.string(), message: z.string() })
    .optional()
    .openapi({ description: "Batches only: this item was not written; send it again" }),
});
export const AppEventsResult = z
  .object({ accepted: z.number(), duplicates: z.number(), failed: z.number(), results: z.array(AppEventOutcome) })
  .openapi("AppEventsResult");

export const AdminEventsQuery = z
  .object({
    since: z.string().regex(FEED_SINCE, "the last seq you received, a whole number ≥ 0").transform(Number).optional(),
    limit: Limit,
  })
  .strict();

// ---- batch operations (POST /scheduler/batch/*, src/routes/batch.ts) ----------------------------
// The envelopes are checked as a whole (a wrong one is a 400); each item is checked on its own
// in src/routes/batch.ts, with the single route's schema, so one bad item fails alone.

/** An item of a batch extend: the single extend route's path id and body in one object. */
export const BatchExtendItem = z
  .object({ allocationId: AllocationIdParam.shape.id, additionalMinutes: ExtendBody.shape.additionalMinutes })
  .strict()
  .openapi("BatchExtendItem");

/** Per item, in request order: what the single route would have answered, as a value or an error. */
export const batchResult = <T extends z.ZodType>(value: T, name: string) =>
  z
    .object({
      results: z.array(
        z.union([
          z.object({
            index: z.number().int(),
            ok: z.literal(true),
            status: z.number().int().openapi({ description: "The single route's success status (201 allocate, 200 otherwise)" }),
            value,
          }),
          z.object({
            index: z.number().int(),
            ok: z.literal(false),
            status: z.number().int().openapi({ description: "The single route's error status; 424 for a skipped item" }),
            skipped: z.literal(true).optional().openapi({ description: "Not tried: an earlier item failed and continueOnError is false" }),
            error: z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() }),
          }),
        ]),
      ),
      succeeded: z.number().int(),
      failed: z.number().int().openapi({ description: "Items tried that failed (skipped ones not counted)" }),
      skipped: z.number().int(),
    })
    .openapi(name);

const requestsOf = (item: { $ref: string }) =>
  z
    .array(z.unknown())
    .min(1)
    .max(BATCH.maxItems)
    .openapi({
      items: item,
      description: `1 to ${BATCH.maxItems} items, in the order they are answered. Each is checked on its own: an invalid item gets its own VALIDATION_FAILED result.`,
    });
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const continueOnError = z.boolean().default(false).openapi({
  description:
    "false (default): run the items in order and stop at the first failure (the rest are skipped). true: try every item; one user's items run in order, different users' concurrently.",
});

export const BatchAllocateBody = z
  .object({
    userId: Id.optional().openapi({ description: "Admins only: the user of every item that names none." }),
    continueOnError,
    requests: requestsOf(ref("AllocateRequest")),
  })
  .strict()
  .openapi("BatchAllocateRequest");

export const BatchReleaseBody = z
  .object({
    userId: Id.optional().openapi({ description: "Admins only: the user of every item that names none." }),
    continueOnError,
    requests: requestsOf(ref("ReleaseRequest")),
  })
  .strict()
  .openapi("BatchReleaseRequest");

export const BatchExtendBody = z
  .object({ continueOnError, requests: requestsOf(ref("BatchExtendItem")) })
  .strict()
  .openapi("BatchExtendRequest");

export const BatchQueryBody = z
  .object({
    allocationIds: z
      .array(z.unknown())
      .min(1)
      .max(BATCH.maxItems)
      .openapi({
        items: { type: "string", minLength: 1, maxLength: 400 },
        description: `1 to ${BATCH.maxItems} allocation ids; each answered on its own (another user's id reads as 404, as on GET /scheduler/allocations/{id}).`,
      }),
  })
  .strict()
  .openapi("BatchQueryRequest");

// ---- waiting queue and reservations --------------------------------------------------------

const Duration = {
  durationMinutes: z.number().int().min(ALLOCATION.minMinutes).max(ALLOCATION.maxMinutes).default(ALLOCATION.defaultMinutes),
  durationSeconds: z
    .number()
    .int()
    .min(ALLOCATION.minShortSeconds)
    .max(ALLOCATION.maxMinutes * 60)
    .optional()
    .openapi({ description: "Test-only short duration; refused unless ALLOW_SHORT_DURATIONS is set." }),
};

export const QueueJoinBody = z
  .object({
    userId: Id.optional().openapi({ description: "Admins only: queue on behalf of this user." }),
    ...Duration,
    pool: Id.optional(),
    spec: Spec.optional(),
    priority: z.number().int().min(0).max(3).optional().openapi({
      description:
        "0 standard, 1 vip, 2 premium, 3 enterprise. Defaults to your plan's (free 0, basic 1, pro 2, enterprise 3); you may ask for lower, only an admin for higher.",
    }),
    maxWaitMinutes: z.number().int().min(1).max(QUEUE.maxMaxWaitMinutes).default(QUEUE.defaultMaxWaitMinutes),
    maxWaitSeconds: z
      .number()
      .int()
      .min(1)
      .max(QUEUE.maxMaxWaitMinutes * 60)
      .optional()
      .openapi({ description: "Test-only short wait; refused unless ALLOW_SHORT_DURATIONS is set." }),
    idempotencyKey: z.string().min(1).max(200).optional().openapi({
      description: "A repeat with the same key answers the first entry (the same request only; else 409 IDEMPOTENCY_KEY_REUSED).",
    }),
  })
  .strict()
  .openapi("QueueJoinRequest");

export const QueueEntryIdParam = z.object({ id: z.string().min(1).max(400) });
export const QueueListQuery = z
  .object({
    pool: Id.optional(),
    userId: Id.optional(),
    status: z.enum(["waiting", "offered", "fulfilled", "expired", "cancelled", "failed"]).optional(),
    limit: Limit,
  })
  .strict();

export const QueueEntryView = z
  .object({
    entryId: z.string(),
    userId: z.string(),
    pool: z.string(),
    status: z.string(),
    priority: z.number(),
    priorityName: z.string(),
    spec: z.object({ cpuCores: z.number(), memoryMB: z.number(), storageMB: z.number() }),
    durationMinutes: z.number(),
    maxWaitMinutes: z.number(),
    joinedAt: z.string(),
    waitUntil: z.string(),
    position: z.number().nullable().openapi({ description: "1 = next in line; null once the entry stopped waiting." }),
    estimatedStartAt: z.string().nullable(),
    estimatedWaitSeconds: z.number().nullable(),
    allocationId: z.string().nullable(),
    deviceId: z.string().nullable(),
    error: z.object({ code: z.string(), message: z.string() }).nullable(),
    createdBy: z.string(),
  })
  .openapi("QueueEntry");

export const ReservationCheckBody = z
  .object({
    userId: Id.optional().openapi({ description: "Admins only: check for this user." }),
    startAt: Instant,
    ...Duration,
    pool: Id.optional(),
    spec: Spec.optional(),
  })
  .strict()
  .openapi("ReservationCheckRequest");

export const ReservationBody = z
  .object({
    userId: Id.optional().openapi({ description: "Admins only: reserve on behalf of this user." }),
    startAt: Instant,
    ...Duration,
    pool: Id.optional(),
    spec: Spec.optional(),
    reminderMinutes: z
      .number()
      .int()
      .min(0)
      .max(RESERVATION.maxReminderMinutes)
      .default(RESERVATION.defaultReminderMinutes)
      .openapi({ description: "`reservation.reminder` on your feed this long before the start (0: none)." }),
    idempotencyKey: z.string().min(1).max(200).optional().openapi({
      description: "A repeat with the same key answers the first reservation (the same request only; else 409 IDEMPOTENCY_KEY_REUSED).",
    }),
  })
  .strict()
  .openapi("ReservationRequest");

export const ReservationIdParam = z.object({ id: z.string().min(1).max(400) });
export const ReservationListQuery = z
  .object({
    pool: Id.optional(),
    userId: Id.optional(),
    status: z.enum(["pending", "confirmed", "executing", "completed", "cancelled", "expired", "failed"]).optional(),
    limit: Limit,
  })
  .strict();

export const ReservationView = z
  .object({
    reservationId: z.string(),
    userId: z.string(),
    pool: z.string(),
    deviceId: z.string().nullable(),
    status: z.string(),
    spec: z.object({ cpuCores: z.number(), memoryMB: z.number(), storageMB: z.number() }),
    startAt: z.string(),
    endAt: z.string(),
    durationMinutes: z.number(),
    reminderMinutes: z.number(),
    remindAt: z.string().nullable(),
    allocationId: z.string().nullable(),
    error: z.object({ code: z.string(), message: z.string() }).nullable(),
    createdBy: z.string(),
    createdAt: z.string(),
  })
  .openapi("Reservation");
