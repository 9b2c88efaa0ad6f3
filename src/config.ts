/**
 * The one config module: plans, limits and environment switches. Every tunable number
 * of the service lives here so a reader finds it in one place. It imports nothing: every
 * other module may import it. (The bindings are in src/env.ts.)
 */
export const PLAN_TIERS = ["free", "basic", "pro", "enterprise"] as const;
export type PlanTier = (typeof PLAN_TIERS)[number];

/** Extend policy per tier (from the old system). `null` means unlimited. */
export interface ExtendPolicy {
  maxExtends: number | null;
  maxMinutesPerExtend: number;
  maxTotalExtendMinutes: number | null;
  cooldownSeconds: number;
}

export const EXTEND_POLICIES: Record<PlanTier, ExtendPolicy> = {
  free: { maxExtends: 2, maxMinutesPerExtend: 30, maxTotalExtendMinutes: 120, cooldownSeconds: 300 },
  basic: { maxExtends: 5, maxMinutesPerExtend: 60, maxTotalExtendMinutes: 480, cooldownSeconds: 120 },
  pro: { maxExtends: 10, maxMinutesPerExtend: 120, maxTotalExtendMinutes: 1440, cooldownSeconds: 60 },
  enterprise: { maxExtends: null, maxMinutesPerExtend: 240, maxTotalExtendMinutes: null, cooldownSeconds: 0 },
};

/** Quota limits a user gets with each plan when no admin has set their own. */
export interface QuotaLimits {
  maxDevices: number;
  maxCpuCores: number;
  maxMemoryMB: number;
  maxStorageMB: number;
  /** Largest single device a user may hold. */
  maxCpuCoresPerDevice: number;
  maxMemoryMBPerDevice: number;
  maxStorageMBPerDevice: number;
  /** Device-hours per quota period (calendar month, UTC). */
  maxDeviceHoursPerPeriod: number;
}

export const PLAN_LIMITS: Record<PlanTier, QuotaLimits> = {
  free: {
    maxDevices: 2,
    maxCpuCores: 8,
    maxMemoryMB: 16384,
    maxStorageMB: 131072,
    maxCpuCoresPerDevice: 4,
    maxMemoryMBPerDevice: 8192,
    maxStorageMBPerDevice: 65536,
    maxDeviceHoursPerPeriod: 100,
  },
  basic: {
    maxDevices: 5,
    maxCpuCores: 20,
    maxMemoryMB: 40960,
    maxStorageMB: 327680,
    maxCpuCoresPerDevice: 8,
    maxMemoryMBPerDevice: 16384,
    maxStorageMBPerDevice: 131072,
    maxDeviceHoursPerPeriod: 500,
  },
  pro: {
    maxDevices: 20,
    maxCpuCores: 80,
    maxMemoryMB: 163840,
    maxStorageMB: 1310720,
    maxCpuCoresPerDevice: 16,
    maxMemoryMBPerDevice: 32768,
    maxStorageMBPerDevice: 262144,
    maxDeviceHoursPerPeriod: 5000,
  },
  enterprise: {
    maxDevices: 200,
    maxCpuCores: 800,
    maxMemoryMB: 1638400,
    maxStorageMB: 13107200,
    maxCpuCoresPerDevice: 64,
    maxMemoryMBPerDevice: 262144,
    maxStorageMBPerDevice: 1048576,
    maxDeviceHoursPerPeriod: 100000,
  },
};

/**
 * What one user may have open in one pool at a time, by plan: waiting queue entries, and
 * reservations not yet started (pending or confirmed). Bookings also count against the plan's
 * devices, totals and balance for their window (durable-objects/user/bookings.ts).
 */
export const PLAN_BOUNDS: Record<PlanTier, { waitingEntries: number; openReservations: number }> = {
  free: { waitingEntries: 2, openReservations: 4 },
  basic: { waitingEntries: 5, openReservations: 10 },
  pro: { waitingEntries: 10, openReservations: 20 },
  enterprise: { waitingEntries: 50, openReservations: 100 },
};

/** How long a new or renewed quota stays valid. */
export const QUOTA_VALID_DAYS = 30;
export const DEFAULT_RENEW_DAYS = 30;

export const ALLOCATION = {
  minMinutes: 1,
  maxMinutes: 1440,
  defaultMinutes: 60,
  /** A pending allocation not confirmed by then is aborted by its user object. */
  intentTimeoutMs: 20_000,
  /** A device holding an unconfirmed claim asks its user object after this long. */
  claimConfirmMs: 30_000,
  /** Retry delay for device notifications that could not be delivered. */
  notifyRetryMs: 2_000,
  /** A device makes sure its alarm comes this soon after a change, for outbox rows a crash mid-delivery left behind. */
  outboxSafetyMs: 30_000,
  /** A user object checks an allocation it still thinks active this long past expiry. */
  overdueGraceMs: 10_000,
  /** `device.expiring` is sent once, this long before expiry (or at half of a shorter one). */
  expiryWarningMs: 5 * 60_000,
  /** How many candidates the pool asks per allocation before giving up as busy. */
  claimAttempts: 4,
  /** A device a pick handed out is kept from other picks this long, or until its claim's state reaches the pool. */
  pickLeaseMs: 5_000,
  /**
   * A direct allocation recorded by the user's object is checked with its device this long after
   * it began, unless it ended first (a claim that failed while its caller died leaves no quota held).
   */
  recordCheckMs: 40_000,
  /** How far two objects' clocks may be apart where one compares the other's times with its own. */
  clockMarginMs: 1_000,
  /** Test-only short durations (ALLOW_SHORT_DURATIONS), in seconds. */
  minShortSeconds: 1,
};

/** Waiting queue on each pool (see durable-objects/DevicePool.ts, src/domain/queue.ts). */
export const QUEUE = {
  /** Priority names, 0-3; a user's plan gives their priority (see planPriority). */
  priorities: ["standard", "vip", "premium", "enterprise"] as const,
  defaultMaxWaitMinutes: 30,
  maxMaxWaitMinutes: 120,
  /** An entry being handed a device is driven again after this long if its hand-over did not finish. */
  offerRetryMs: 5_000,
  /** Hand-overs that fail for a passing reason (a user object or billing not answering) before the device goes back to the queue. */
  offerAttempts: 5,
  /** A device whose hand-over found it not free after all is passed over by that entry this long. */
  raceSkipMs: 30_000,
  /** Dispatch rounds run back to back in one invocation of the pool before the alarm takes over. */
  roundsPerInvocation: 4,
};

/** Reservations of a future window on a pool's devices. */
export const RESERVATION = {
  defaultReminderMinutes: 15,
  maxReminderMinutes: 1440,
  /** How far ahead a window may start. */
  maxAheadDays: 30,
  /** At the start, a reserved device still busy (its last holder ends at the alarm) is tried again for this long. */
  startGraceMs: 30_000,
  /** A start retried this often before another device is tried. */
  startRetryMs: 2_000,
  /** A booking still pending this long was never confirmed (its request crashed): it is dropped. */
  pendingTimeoutMs: 60_000,
};

/** Batch operations: items per request, and how many run at once (items of one user run in order). */
export const BATCH = { maxItems: 50, concurrency: 8 };

/**
 * What a device says of itself beside its spec (src/schemas/device-meta.ts): name, model and OS
 * version are text of at most these lengths (no control characters, no space at either end);
 * labels a map of at most `maxLabels`, keys a letter or digit then letters, digits, `. _ / -`,
 * values letters, digits and `. _ - : / @ +`.
 */
export const DEVICE_META = { nameMax: 100, modelMax: 100, osVersionMax: 50, maxLabels: 20, labelKeyMax: 63, labelValueMax: 128 };

/**
 * The fleet routes (src/routes/fleet.ts): GET /admin/devices asks this many pools at once;
 * POST /admin/devices/bulk takes this many items, runs this many at once, and a body this large.
 */
export const FLEET = { poolConcurrency: 16, bulkMaxItems: 500, bulkConcurrency: 16, bulkMaxBodyBytes: 512 * 1024, maxLabelFilters: 20 };

/** The node of a device registered without one. */
export const DEFAULT_NODE = "node-1";

export const BILLING = {
  /** The one currency of a deployment (pricing plans state theirs; all must match it). */
  currency: "USD",
  defaultPricingPlan: "standard",
  /** Usage writes that fail are retried after base·2^(attempt-1) seconds, at most this long. */
  retryBaseSeconds: 2,
  retryMaxSeconds: 300,
  /** Reconciliation leaves allocations that ended this recently to the queue. */
  reconcileGraceMs: 10 * 60_000,
  /** Each reconciliation pass also re-reads this much before its last watermark. */
  reconcileOverlapMs: 60 * 60_000,
  /** An operator's reconciliation without `from` checks this long before its `to` (every account, no watermark). */
  reconcileLookbackMs: 31 * 86_400_000,
  /** Work per cron run, so one run stays well inside its time limit. */
  reconcileAccountsPerRun: 100,
  invoiceAccountsPerRun: 200,
  /** A month's invoices are written this long after it ends (see src/billing/invoices.ts). */
  invoiceCloseDelayMs: 15 * 60_000,
  notificationsPerRun: 200,
  /** Delivered billing events are deleted from D1 after this long (the feed has its own log). */
  deliveredEventRetentionMs: 30 * 86_400_000,
  /**
   * A user's object uses a balance it read from D1 this recently again (less what allocations
   * that ended since then cost); older, it reads D1. A refusal always reads afresh first.
   */
  balanceReuseMs: 30_000,
  /** Largest batch the internal usage endpoint takes (a Queue batch is at most 100 too). */
  maxUsageBatch: 100,
  /** Top-ups and adjustments above this are refused as typos (minor units: 1,000,000.00). */
  maxTransfer: 100_000_000,
};

export const PAGING = { defaultLimit: 50, maxLimit: 200 };

/**
 * GET /admin/metrics: a source (a pool, D1, the socket counts) slower than this is left out of the
 * scrape and counted in eda_metrics_source_errors.
 */
export const METRICS = { sourceTimeoutMs: 2_000 };

/** App events from other services (POST /api/internal/events): batch size and text limits. */
export const APP_EVENTS = { maxBatch: 100, maxName: 200, maxVersion: 100, maxReason: 1000 };

/** The live feed (see src/feed/). */
export const FEED = {
  /** Events each user feed keeps for resume (the admin feed keeps as many). Older ones are pruned. */
  historyLimit: 1000,
  /** A device feed keeps fewer: it lives as long as one allocation. */
  deviceHistoryLimit: 200,
  /** A ticket opens one feed once, within this many seconds of being issued. */
  ticketTtlSeconds: 60,
  /** Open sockets per user feed, per device feed and on the admin feed; one more is closed with 4429. */
  maxSocketsPerUser: 20,
  maxSocketsPerDevice: 20,
  maxAdminSockets: 200,
  /** Open sockets per pool feed (admins watching a pool). */
  maxSocketsPerPool: 50,
  /** Events each pool feed keeps for resume (one per device change). */
  poolHistoryLimit: 1000,
  /** Devices a pool feed's hello lists; a larger pool says `truncated` (page the rest from GET /admin/pools/{pool}/devices). */
  poolSnapshotLimit: 1000,
  /** Clients send only `ping`; other messages beyond this many per minute close the socket with 4429. */
  maxClientMessagesPerMinute: 30,
  /** Idle release grace (per allocation or per pool), in minutes. */
  idleReleaseMinMinutes: 1,
  idleReleaseMaxMinutes: 1440,
};

/**
 * Rate limits (src/limits.ts): the Workers rate limiting bindings of wrangler.toml, which hold
 * each one's limit and period; a limited caller is told to retry after the period. A unit test
 * keeps these periods equal to wrangler.toml's.
 */
export const RATE_LIMITS = {
  /** Every call of one signed-in user (key: the user id). */
  user: { binding: "LIMIT_USER", periodSeconds: 10 },
  /** One user's calls that reach a pool (device lists, queue, bookings) and feed tickets (key: the user id). */
  shared: { binding: "LIMIT_SHARED", periodSeconds: 10 },
  /** Every call of one admin or of the service token (key: the admin's id, or `service`). */
  operator: { binding: "LIMIT_OPERATOR", periodSeconds: 10 },
  /** App events sent to one user (key: that user's id). */
  target: { binding: "LIMIT_TARGET", periodSeconds: 10 },
  /** Calls without a valid token, feed upgrades among them (key: the client's address). */
  address: { binding: "LIMIT_ADDRESS", periodSeconds: 10 },
} as const;
export type RateLimitName = keyof typeof RATE_LIMITS;
/** Refused callers an isolate remembers (each until its limit's period is over), so their next calls do not reach the binding. */
export const RATE_LIMIT_MEMORY = 10_000;

/** Which pools and devices exist (src/registry.ts): how long an isolate trusts a name it found, and how many it keeps. */
export const REGISTRY = { knownTtlMs: 60_000, cacheEntries: 10_000 };

/** Largest request body accepted anywhere, in bytes. */
export const MAX_BODY_BYTES = 64 * 1024;
export const IDS = { maxLength: 128, pattern: /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/ };

/** How a pool picks among free devices that fit (src/domain/strategy.ts says what each does). */
export const STRATEGIES = ["least-loaded", "spread", "bin-pack", "load-first"] as const;
export type Strategy = (typeof STRATEGIES)[number];
export const DEFAULT_STRATEGY: Strategy = "least-loaded";

export function defaultPlan(env: { DEFAULT_PLAN?: string }): PlanTier {
  const p = env.DEFAULT_PLAN as PlanTier | undefined;
  return p && (PLAN_TIERS as readonly string[]).includes(p) ? p : "free";
}

export function defaultPool(env: { DEFAULT_POOL?: string }): string {
  return env.DEFAULT_POOL || "default";
}

export function shortDurationsAllowed(env: { ALLOW_SHORT_DURATIONS?: string }): boolean {
  return env.ALLOW_SHORT_DURATIONS === "true";
}

/** When the balance cannot be read: "true" lets allocations through, anything else refuses them. */
export function billingAllowOnError(env: { BILLING_ALLOW_ON_ERROR?: string }): boolean {
  return env.BILLING_ALLOW_ON_ERROR === "true";
}

export function defaultPricingPlan(env: { DEFAULT_PRICING_PLAN?: string }): string {
  return env.DEFAULT_PRICING_PLAN || BILLING.defaultPricingPlan;
}

/** Backoff of a failed usage write, in whole seconds (`attempts` counts from 1). */
export function usageRetryDelay(env: { USAGE_RETRY_BASE_SECONDS?: string }, attempts: number): number {
  const base = env.USAGE_RETRY_BASE_SECONDS !== undefined ? Number(env.USAGE_RETRY_BASE_SECONDS) : BILLING.retryBaseSeconds;
  return Math.min(
    BILLING.retryMaxSeconds,
    Math.round((Number.isFinite(base) ? base : BILLING.retryBaseSeconds) * 2 ** Math.max(0, attempts - 1)),
  );
}

/**
 * The two secrets (`JWT_SECRET` signs bearer tokens and, derived, feed tickets; `SERVICE_TOKEN`
 * is what other services send): each at least `minBytes` long, and never one of the committed
 * examples of .dev.vars.example unless `LOCAL_DEV` is "true". `LOCAL_DEV` is set only in
 * .dev.vars (which wrangler never deploys) and by `npm run dev`, so a deployed Worker with an
 * example secret refuses to serve.
 */
export const SECRETS = {
  minBytes: 32,
  examples: ["local-dev-only-jwt-secret-do-not-use-in-production", "local-dev-only-service-token-do-not-use-in-production"],
};

/** What is wrong with one secret (null: fine); `localDev` allows the committed examples. */
export function secretProblem(name: string, value: string | undefined, localDev: boolean): string | null {
  if (!value) return `${name} is not set.`;
  if (new TextEncoder().encode(value).length < SECRETS.minBytes) return `${name} is shorter than ${SECRETS.minBytes} bytes.`;
  if (SECRETS.examples.includes(value) && !localDev)
    return `${name} is the committed example value, which only local development (LOCAL_DEV=true) may use.`;
  return null;
}

/** What is wrong with the secrets, one line each (empty: fine). */
export function secretProblems(env: {
  JWT_SECRET?: string;
  SERVICE_TOKEN?: string;
  JWT_SECRET_PREVIOUS?: string;
  ACCESS_SIGNING_KEY?: string;
  ACCESS_SIGNING_KEY_PREVIOUS?: string;
  LOCAL_DEV?: string;
}): string[] {
  // The previous key (rotation) is optional, but when set it must be as sound as the others.
  const names = [
    "JWT_SECRET",
    "SERVICE_TOKEN",
    ...(env.JWT_SECRET_PREVIOUS !== undefined ? ["JWT_SECRET_PREVIOUS" as const] : []),
  ] as const;
  const localDev = env.LOCAL_DEV === "true";
  // Access grants are optional (off without a key); a key that is set must be a sound one.
  const keys = (["ACCESS_SIGNING_KEY", "ACCESS_SIGNING_KEY_PREVIOUS"] as const).map((name) =>
    env[name] === undefined ? null : signingKeyProblem(name, env[name]!, localDev),
  );
  return [...names.map((name) => secretProblem(name, env[name], localDev)), ...keys].filter((p): p is string => p !== null);
}

/**
 * Device access grants (src/access.ts): a grant lives at most `grantMaxSeconds` (and never past
 * the allocation's end); a device's access map has at most `maxEndpoints` named endpoints, each
 * name and value within the lengths below. `exampleKeyX` is the public `x` of the committed
 * example key in .dev.vars.example, which only local development may sign with.
 */
export const ACCESS = {
  grantMaxSeconds: 3600,
  issuer: "edge-device-allocator",
  maxEndpoints: 8,
  nameMaxLength: 32,
  valueMaxLength: 512,
  exampleKeyX: "usjofn9AoAUObTV0Hb36Cla6J3txIAZzSSkICMJJ_tw",
};

/** What is wrong with a signing key's value (null: a P-256 private key as a JWK, and not the example outside local dev). */
export function signingKeyProblem(name: string, value: string, localDev: boolean): string | null {
  let jwk: { kty?: unknown; crv?: unknown; x?: unknown; y?: unknown; d?: unknown };
  try {
    jwk = JSON.parse(value) as typeof jwk;
  } catch {
    return `${name} is not JSON (it must be a P-256 private key as a JWK).`;
  }
  if (
    jwk === null ||
    jwk.kty !== "EC" ||
    jwk.crv !== "P-256" ||
    typeof jwk.x !== "string" ||
    typeof jwk.y !== "string" ||
    typeof jwk.d !== "string"
  )
    return `${name} must be a P-256 private key as a JWK ({"kty":"EC","crv":"P-256","x":…,"y":…,"d":…}).`;
  if (jwk.x === ACCESS.exampleKeyX && !localDev)
    return `${name} is the committed example key, which only local development (LOCAL_DEV=true) may use.`;
  return null;
}

/**
 * Bearer tokens: the longest lifetime accepted (`exp` no further than this after `iat`, nor after now; TOKEN_MAX_DAYS
 * overrides), and how long an isolate reuses a user's token revocation ("not before") it read from D1 before reading it
 * again (src/revocations.ts): the most a revocation made in another isolate takes to reach this one. At most
 * `revocationCacheMax` users are remembered (oldest out first).
 */
export const TOKENS = { maxLifetimeDays: 30, revocationCacheMs: 30_000, revocationCacheMax: 10_000 };

export function tokenMaxLifetimeSeconds(env: { TOKEN_MAX_DAYS?: string }): number {
  const days = env.TOKEN_MAX_DAYS === undefined ? TOKENS.maxLifetimeDays : Number(env.TOKEN_MAX_DAYS);
  return Math.round((Number.isFinite(days) && days > 0 ? days : TOKENS.maxLifetimeDays) * 86_400);
}
