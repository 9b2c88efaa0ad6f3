/**
 * A small typed client for the HTTP API, for browsers and Node (22+: global fetch). The web
 * console uses it. Every response type comes from the server's own schemas and functions by
 * `import type` only, so nothing of zod, hono or the server is bundled with it.
 *
 *   const api = new ApiClient({ baseUrl: "http://127.0.0.1:8787", token });
 *   const { items } = await api.allocations({ status: "active" });
 *
 * A non-2xx answer throws `ApiError` with the API's one error shape
 * (`{error: {code, message, details?}}`); a request that never got an answer throws
 * `ApiError` with status 0 and code `NETWORK`.
 */
import type { z } from "@hono/zod-openapi";
import type {
  AdminEventsPage,
  AdjustmentBody,
  AdjustmentResult as AdjustmentResultSchema,
  AdminUserView,
  AllocateBody,
  AllocatedResult,
  AllocationDetail as AllocationDetailSchema,
  AllocationView,
  Catalogue as CatalogueSchema,
  DeviceAccess as DeviceAccessSchema,
  DeviceDetailView,
  DeviceStatusView,
  DeviceView,
  LedgerPage as LedgerPageSchema,
  PricingPlanBody,
  PricingPlanPatch as PricingPlanPatchSchema,
  PricingPlanView,
  QuotaUpdateBody,
  RegisterDeviceBody,
  RemovedDeviceView,
  StrategyBody,
  TopUpBody,
  TopUpResult as TopUpResultSchema,
  ReservationBody,
  ReservationCheck as ReservationCheckSchema,
  ReservationCheckBody,
  UserEventsPage,
  BalanceView,
  FailedUsagePage as FailedUsagePageSchema,
  PoolDeviceView,
  PoolView,
  QueueEntryView,
  QueueJoinBody,
  QuotaView,
  ReconcileResult as ReconcileResultSchema,
  ReleaseResult,
  ReplayResult as ReplayResultSchema,
  ReservationView,
  TicketResult,
  UserUsageReport,
} from "../schemas";
import type { ExtendResult as ExtendResultSchema } from "../routes/scheduler";
import type { FeedKind } from "../feed/protocol";
import type { BulkDevicesBody, BulkResult as BulkResultSchema, FleetDeviceView, FleetQuery as FleetQuerySchema } from "../schemas";

// ---- response and request types ------------------------------------------------------------

export type Quota = z.infer<typeof QuotaView>;
export type Balance = z.infer<typeof BalanceView>;
/** An allocation as listed (times as ISO strings, like every time the API answers). */
export type Allocation = z.infer<typeof AllocationView>;
/** What allocate answers (times as ISO strings), with how to reach the device (`access`, `accessGrant`). */
export type AllocationResult = z.infer<typeof AllocatedResult>;
/** One allocation as its holder reads it (access fields filled while it runs). */
export type AllocationDetail = z.infer<typeof AllocationDetailSchema>;
/** The holder's renewal: the device's endpoints and a fresh access grant. */
export type DeviceAccess = z.infer<typeof DeviceAccessSchema>;
/** GET /scheduler/pools: every pool's device classes, free counts, prices and the quota's verdict. */
export type Catalogue = z.infer<typeof CatalogueSchema>;
export type PoolOffer = Catalogue["items"][number];
export type DeviceOffer = PoolOffer["classes"][number];
/** The user's feed log after `since`, oldest first, with its bounds. */
export type EventsPage = z.infer<typeof UserEventsPage>;
export type BookingRequest = z.input<typeof ReservationBody>;
export type WindowCheckRequest = z.input<typeof ReservationCheckBody>;
export type WindowCheck = z.infer<typeof ReservationCheckSchema>;
export type ExtendResult = z.infer<typeof ExtendResultSchema>;
export type ReleaseResult = z.infer<typeof ReleaseResult>;
export type AllocateRequest = z.input<typeof AllocateBody>;
export type QueueEntry = z.infer<typeof QueueEntryView>;
export type QueueJoinRequest = z.input<typeof QueueJoinBody>;
export type Reservation = z.infer<typeof ReservationView>;
export type Ticket = z.infer<typeof TicketResult>;
/** A user's usage report: times as ISO 8601 UTC, money as `…Minor` with its `currency`. */
export type UsageReport = z.infer<typeof UserUsageReport>;
export type UsageItem = UsageReport["items"][number];
export type FailedUsagePage = z.infer<typeof FailedUsagePageSchema>;
export type FailedUsage = FailedUsagePage["items"][number];
export type ReplayResult = z.infer<typeof ReplayResultSchema>;
/** A pool's device with its holder (`expiresAt` an ISO string or null). */
export type PoolDevice = z.infer<typeof PoolDeviceView>;
export type PoolSummary = z.infer<typeof PoolView>;
/** A device after a status change: what it ended, its reason and a drain under way. */
export type DeviceStatusChange = z.infer<typeof DeviceStatusView>;

/** A device as registered (POST /admin/devices). */
export type Device = z.infer<typeof DeviceView>;
/** GET /admin/devices/{id}: the device, the allocation it holds, why its status last changed and a drain under way. */
export type DeviceDetail = z.infer<typeof DeviceDetailView>;
export type RegisterDeviceRequest = z.input<typeof RegisterDeviceBody>;
export type RemovedDevice = z.infer<typeof RemovedDeviceView>;
export type PoolSettings = z.input<typeof StrategyBody>;
export type QuotaUpdate = z.input<typeof QuotaUpdateBody>;
export type LedgerPage = z.infer<typeof LedgerPageSchema>;
export type LedgerEntry = LedgerPage["items"][number];
export type TopUpRequest = z.input<typeof TopUpBody>;
export type TopUpResult = z.infer<typeof TopUpResultSchema>;
export type AdjustmentRequest = z.input<typeof AdjustmentBody>;
export type AdjustmentResult = z.infer<typeof AdjustmentResultSchema>;
export type PricingPlan = z.infer<typeof PricingPlanView>;
export type PricingPlanSettings = z.input<typeof PricingPlanBody>;
/** Some of a pricing plan's fields (PATCH; at least one); the others stay. */
export type PricingPlanPatch = z.input<typeof PricingPlanPatchSchema>;
/** An admin's write naming a user: `create: true` lets it bring an unknown user into being (else 404 USER_NOT_FOUND). */
export type UserWriteOptions = { create?: boolean };
/** The operators' feed log after `since`, oldest first (`nextSince`: more to read). */
export type AdminEvents = z.infer<typeof AdminEventsPage>;

/**
 * POST /admin/billing/reconcile: the run with its times as ISO strings and at most 100 differences;
 * `from` and `to` the window checked, `defaulted` the ends the service filled in.
 */
export type ReconcileResult = z.infer<typeof ReconcileResultSchema>;

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/** GET /admin/users: a page of users with their account and quota. */
export type AdminUser = z.infer<typeof AdminUserView>;

export type TicketRequest = { feed?: FeedKind; deviceId?: string; pool?: string };

/** GET /admin/devices: a device of the fleet as its pool's index has it (name, model, osVersion, labels, holder). */
export type FleetDevice = z.infer<typeof FleetDeviceView>;
/** The fleet list's filters: `label` is `key:value`, one or several (all must match); `cursor` the last page's `nextCursor`. */
export type FleetQuery = Omit<z.input<typeof FleetQuerySchema>, "label" | "limit"> & { label?: string | string[]; limit?: number };
/** An item of POST /admin/devices/bulk: what the device should be (a registration whose deviceId is required). */
export type BulkDevice = z.input<typeof BulkDevicesBody>["devices"][number];
/** The bulk answer: one result per item (`created`, `updated` with the fields it `changed`, `unchanged`, or an error). */
export type BulkResult = z.infer<typeof BulkResultSchema>;
/** The same, by its name in the OpenAPI document. */
export type BulkDevicesResult = BulkResult;
export type BulkItemResult = BulkResult["results"][number];

/** The API's one error shape, thrown for every non-2xx answer. */
export class ApiError extends Error {
  constructor(
    /** HTTP status; 0 when no answer came (network failure). */
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** `CODE: message`, as the console shows it. */
  override toString(): string {
    return `${this.code}: ${this.message}`;
  }

  /** Any thrown value as an ApiError (other errors become code `CLIENT`). */
  static from(err: unknown): ApiError {
    if (err instanceof ApiError) return err;
    return new ApiError(0, "CLIENT", String((err as Error)?.message ?? err));
  }
}

export interface ApiClientOptions {
  /** Where the service is, e.g. `http://127.0.0.1:8787` (or `location.origin` in the browser). */
  baseUrl: string;
  /** A bearer token, or a function that returns the current one. */
  token?: string | (() => string | null | undefined);
  /** Fetch to use (default: the global fetch). */
  fetch?: (input: string, init?: RequestInit) => Promise<Response>;
}

/** Query parameters; an array repeats its key (`label=a:1&label=b:2`). */
type Query = Record<string, string | number | boolean | null | undefined | readonly string[]>;

const enc = encodeURIComponent;

export class ApiClient {
  constructor(private readonly opts: ApiClientOptions) {}

  get baseUrl(): string {
    return this.opts.baseUrl.replace(/\/$/, "");
  }

  /** One request: JSON in, JSON out; a non-2xx answer or no answer throws `ApiError`. */
  async request<T>(method: string, path: string, opts: { query?: Query; body?: unknown } = {}): Promise<T> {
    const token = typeof this.opts.token === "function" ? this.opts.token() : this.opts.token;
    const headers: Record<string, string> = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const qs = opts.query
      ? Object.entries(opts.query)
          .flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x] as const) : [[k, v] as const]))
          .filter(([, v]) => v !== undefined && v !== null && v !== "")
          .map(([k, v]) => `${enc(k)}=${enc(String(v))}`)
          .join("&")
      : "";
    const url = `${this.baseUrl}${path}${qs ? `?${qs}` : ""}`;
    const fetcher = this.opts.fetch ?? ((i: string, init?: RequestInit) => fetch(i, init));
    let res: Response;
    try {
      res = await fetcher(url, {
        method,
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      });
    } catch (err) {
      throw new ApiError(0, "NETWORK", `${method} ${path} got no answer: ${String((err as Error)?.message ?? err)}`);
    }
    const text = await res.text().catch(() => "");
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!res.ok) {
      const e = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } } | null)?.error;
      if (e && typeof e.code === "string" && typeof e.message === "string") throw new ApiError(res.status, e.code, e.message, e.details);
      throw new ApiError(res.status, `HTTP_${res.status}`, `${method} ${path} answered ${res.status} ${res.statusText}`.trim());
    }
    return body as T;
  }

  // ---- allocations ------------------------------------------------------------------------

  allocate(body: AllocateRequest): Promise<AllocationResult> {
    return this.request("POST", "/scheduler/devices/allocate", { body });
  }
  release(deviceId: string, userId?: string): Promise<ReleaseResult> {
    return this.request("POST", "/scheduler/devices/release", { body: userId ? { deviceId, userId } : { deviceId } });
  }
  extend(allocationId: string, additionalMinutes: number): Promise<ExtendResult> {
    return this.request("PUT", `/scheduler/allocations/${enc(allocationId)}/extend`, { body: { additionalMinutes } });
  }
  /** One allocation; its holder gets the device's access while it runs. */
  allocation(allocationId: string): Promise<AllocationDetail> {
    return this.request("GET", `/scheduler/allocations/${enc(allocationId)}`);
  }
  /** A fresh access grant (and the endpoints) for the holder of a running allocation. */
  renewAccess(allocationId: string): Promise<DeviceAccess> {
    return this.request("POST", `/scheduler/allocations/${enc(allocationId)}/access`);
  }
  /** What there is to rent: every pool's device classes, free now, price per hour, the quota's verdict. */
  catalogue(): Promise<Catalogue> {
    return this.request("GET", "/scheduler/pools");
  }
  /** The user's feed log after `since` (what the feed replays), oldest first. */
  events(q: { since?: number; limit?: number } = {}): Promise<EventsPage> {
    return this.request("GET", "/scheduler/events", { query: q });
  }
  /** A user's allocations, newest first (`userId`: admins only, for another user). */
  allocations(
    q: { userId?: string; status?: "pending" | "active" | "released"; cursor?: string; limit?: number } = {},
  ): Promise<Page<Allocation>> {
    return this.request("GET", "/scheduler/allocations", { query: q });
  }

  // ---- quota, money, usage ----------------------------------------------------------------

  quota(userId: string): Promise<Quota> {
    return this.request("GET", `/quotas/user/${enc(userId)}`);
  }
  balance(userId: string): Promise<Balance> {
    return this.request("GET", `/billing/users/${enc(userId)}/balance`);
  }
  /** Admins: a user's tier, limits, suspension or validity (an unknown user: 404 USER_NOT_FOUND unless `create`). */
  updateQuota(userId: string, body: QuotaUpdate, opts: UserWriteOptions = {}): Promise<Quota> {
    return this.request("PUT", `/quotas/user/${enc(userId)}`, { query: createQuery(opts), body });
  }
  /** Admins: extend a user's validity by `extensionDays` (default 30). */
  renewQuota(userId: string, extensionDays?: number, opts: UserWriteOptions = {}): Promise<Quota> {
    const body = extensionDays === undefined ? {} : { extensionDays };
    return this.request("POST", `/quotas/renew/${enc(userId)}`, { query: createQuery(opts), body });
  }
  /** Ledger entries, newest first (`cursor`: the `nextCursor` of the page before). */
  ledger(userId: string, q: { cursor?: string; limit?: number } = {}): Promise<LedgerPage> {
    return this.request("GET", `/billing/users/${enc(userId)}/ledger`, { query: q });
  }
  /** Admins and services: credit a payment (once per `paymentId`; an admin's for an unknown user needs `create`). */
  topUp(userId: string, body: TopUpRequest, opts: UserWriteOptions = {}): Promise<TopUpResult> {
    return this.request("POST", `/billing/users/${enc(userId)}/top-ups`, { query: createQuery(opts), body });
  }
  /** Admins: a signed correction of the balance (once per `adjustmentId`). */
  adjustBalance(userId: string, body: AdjustmentRequest, opts: UserWriteOptions = {}): Promise<AdjustmentResult> {
    return this.request("POST", `/admin/billing/users/${enc(userId)}/adjustments`, { query: createQuery(opts), body });
  }
  /** Admins: the pricing plan a user's next charges are priced by. */
  setUserPricingPlan(userId: string, pricingPlanId: string, opts: UserWriteOptions = {}): Promise<Balance> {
    return this.request("PUT", `/admin/billing/users/${enc(userId)}/plan`, { query: createQuery(opts), body: { pricingPlanId } });
  }
  pricingPlans(): Promise<{ items: PricingPlan[] }> {
    return this.request("GET", "/billing/pricing-plans");
  }
  /** Admins: create a pricing plan or replace all of its fields. */
  setPricingPlan(pricingPlanId: string, body: PricingPlanSettings): Promise<PricingPlan> {
    return this.request("PUT", `/admin/billing/pricing-plans/${enc(pricingPlanId)}`, { body });
  }
  /** Admins: change some fields of an existing plan (404 PLAN_NOT_FOUND for an unknown one). */
  updatePricingPlan(pricingPlanId: string, body: PricingPlanPatch): Promise<PricingPlan> {
    return this.request("PATCH", `/admin/billing/pricing-plans/${enc(pricingPlanId)}`, { body });
  }
  /** Usage records, newest first, for a period (default: this month). */
  usage(userId: string, q: { from?: string; to?: string; cursor?: string; limit?: number } = {}): Promise<UsageReport> {
    return this.request("GET", `/metering/users/${enc(userId)}`, { query: q });
  }

  // ---- waiting queue and reservations (lists: every pool unless `pool`) --------------------

  /** Wait for a device (served at once, status `fulfilled`, when one is free). */
  joinQueue(body: QueueJoinRequest): Promise<QueueEntry> {
    return this.request("POST", "/scheduler/queue/join", { body });
  }
  queue(q: { pool?: string; userId?: string; status?: string; limit?: number } = {}): Promise<{ items: QueueEntry[]; waiting: number }> {
    return this.request("GET", "/scheduler/queue", { query: q });
  }
  cancelQueueEntry(entryId: string): Promise<QueueEntry> {
    return this.request("DELETE", `/scheduler/queue/${enc(entryId)}`);
  }
  reservations(q: { pool?: string; userId?: string; status?: string; limit?: number } = {}): Promise<{ items: Reservation[] }> {
    return this.request("GET", "/scheduler/reservations", { query: q });
  }
  /** Would the window be bookable (free matching devices), and your own reservations overlapping it. */
  checkReservation(body: WindowCheckRequest): Promise<WindowCheck> {
    return this.request("POST", "/scheduler/reservations/check", { body });
  }
  reserve(body: BookingRequest): Promise<Reservation> {
    return this.request("POST", "/scheduler/reservations", { body });
  }
  cancelReservation(reservationId: string): Promise<Reservation> {
    return this.request("DELETE", `/scheduler/reservations/${enc(reservationId)}`);
  }

  // ---- feed -------------------------------------------------------------------------------

  ticket(body: TicketRequest = {}): Promise<Ticket> {
    return this.request("POST", "/ws/ticket", { body });
  }

  // ---- operators --------------------------------------------------------------------------
  /**
   * maintenance / offline / online (`POST /admin/devices/{id}/{status}`): with `drain` the running
   * allocation reaches its end first (no extension past `deadline`); `reason` is kept and audited.
   */
  setDeviceStatus(
    deviceId: string,
    status: "maintenance" | "offline" | "online",
    change: { reason?: string; drain?: boolean; deadline?: string } = {},
  ): Promise<DeviceStatusChange> {
    return this.request("POST", `/admin/devices/${enc(deviceId)}/${status}`, { body: change });
  }

  /** One device: its allocation, the reason of its last status change and a drain under way. */
  device(deviceId: string): Promise<DeviceDetail> {
    return this.request("GET", `/admin/devices/${enc(deviceId)}`);
  }
  registerDevice(body: RegisterDeviceRequest): Promise<Device> {
    return this.request("POST", "/admin/devices", { body });
  }
  /** Takes the device out of the fleet (an allocation it holds ends now and is billed). */
  removeDevice(deviceId: string): Promise<RemovedDevice> {
    return this.request("DELETE", `/admin/devices/${enc(deviceId)}`);
  }
  /** Ends the device's allocation now (billed as it stands). */
  forceRelease(deviceId: string): Promise<ReleaseResult> {
    return this.request("POST", `/admin/devices/${enc(deviceId)}/force-release`);
  }
  /** A pool's strategy and idle release (`idleReleaseMinutes: null` turns it off). */
  updatePool(pool: string, body: PoolSettings): Promise<PoolSummary> {
    return this.request("PUT", `/admin/pools/${enc(pool)}`, { body });
  }
  /** The operators' feed log after `since` (what the admin feed replays), oldest first. */
  adminEvents(q: { since?: number; limit?: number } = {}): Promise<AdminEvents> {
    return this.request("GET", "/admin/events", { query: q });
  }
  /** A user's feed log after `since` (admins: any user's). */
  userEvents(userId: string, q: { since?: number; limit?: number } = {}): Promise<EventsPage> {
    return this.request("GET", "/scheduler/events", { query: { ...q, userId } });
  }

  pools(): Promise<{ items: PoolSummary[] }> {
    return this.request("GET", "/admin/pools");
  }
  /** A page of a pool's devices with their holders. */
  poolDevices(pool: string, q: { status?: string; cursor?: string; limit?: number } = {}): Promise<Page<PoolDevice>> {
    return this.request("GET", `/admin/pools/${enc(pool)}/devices`, { query: q });
  }
  /**
   * One page of the whole fleet (every pool, or `pool`), in natural order of the device ids, from the pools' indexes
   * (one call per pool on the server). Pass `nextCursor` back as `cursor` for the next page.
   */
  fleet(q: FleetQuery = {}): Promise<Page<FleetDevice>> {
    return this.request("GET", "/admin/devices", { query: q });
  }
  /**
   * Registers or updates up to 500 devices, idempotent by deviceId: a result per item. One invalid item refuses the
   * whole request (ApiError 400 VALIDATION_FAILED with every failing path, `devices.3.labels`), and nothing is done.
   */
  bulkDevices(devices: BulkDevice[]): Promise<BulkResult> {
    return this.request("POST", "/admin/devices/bulk", { body: { devices } });
  }
  adminUsers(q: { cursor?: string; limit?: number } = {}): Promise<Page<AdminUser>> {
    return this.request("GET", "/admin/users", { query: q });
  }
  failedUsage(
    q: { status?: "failed" | "replayed" | "resolved" | "invalid"; cursor?: string; limit?: number } = {},
  ): Promise<FailedUsagePage> {
    return this.request("GET", "/admin/billing/failed-usage", { query: q });
  }
  replayFailedUsage(body: { allocationIds: string[] } | { all: true }): Promise<ReplayResult> {
    return this.request("POST", "/admin/billing/failed-usage/replay", { body });
  }
  /** Without `from`/`to`: every account over the 31 days up to 10 minutes ago (the answer names its window). */
  reconcile(body: { userId?: string; from?: string; to?: string; heal?: boolean } = {}): Promise<ReconcileResult> {
    return this.request("POST", "/admin/billing/reconcile", { body });
  }
}

const createQuery = (o: UserWriteOptions): Query | undefined => (o.create ? { create: "true" } : undefined);
