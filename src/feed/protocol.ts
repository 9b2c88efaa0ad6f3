/**
 * The feed's wire protocol, shared by the server (the objects that hold sockets) and the
 * typed client (browser and Node). No runtime imports: the client bundles this file as is.
 *
 * Every frame the server sends is one JSON envelope `{seq, type, userId, data, timestamp}`.
 * Logged events carry their `seq` (1, 2, 3… per feed); control frames (`feed.*`) carry
 * `seq: null`, are never stored and never replayed.
 */
import type { QuotaLimits } from "../config";
import type { z } from "@hono/zod-openapi";
import type { QuotaUsage } from "../domain/types";
import type { QuotaView } from "../schemas/quotas";

// ---- event data, by type -----------------------------------------------------------------

export interface AllocationEventData {
  allocationId: string;
  deviceId: string | null;
  pool: string;
  node: string | null;
  cpuCores: number;
  memoryMB: number;
  storageMB: number;
  allocatedAt: string;
  expiresAt: string;
  durationMinutes: number;
}

export interface ReleasedEventData {
  allocationId: string;
  deviceId: string;
  pool?: string;
  allocatedAt: string;
  releasedAt: string;
  durationSeconds: number;
  reason: string;
}

export interface ExpiringEventData {
  allocationId: string;
  deviceId: string;
  expiresAt: string;
  secondsLeft: number;
}

export interface ExtendedEventData extends AllocationEventData {
  additionalMinutes: number;
  extendCount: number;
  extendedMinutes: number;
}

export interface DeviceStatusEventData {
  deviceId: string;
  pool: string;
  node: string;
  status: string;
  previousStatus: string | null;
  /** The allocation this change ended, if any. */
  endedAllocationId: string | null;
  /** The operator's reason for the change (null: none given). */
  reason: string | null;
}

/** An operator drains the device: it goes to `status` once the running allocation ends, which may run until `deadline` at most. */
export interface DrainingEventData {
  deviceId: string;
  pool: string;
  node: string;
  status: "maintenance" | "offline";
  reason: string | null;
  allocationId: string;
  /** No extension past this (the allocation's end when the drain began, unless the operator gave a later one). */
  deadline: string;
}

/**
 * `hello.state` on a device feed: the device and its allocation when the socket opened.
 * Show time left from `expiresAt` (the server sends no ticks).
 */
export interface DeviceFeedState {
  deviceId: string;
  pool: string;
  node: string;
  status: string;
  /** Only an admin or the holder may connect, so a user sees only their own allocation here. */
  allocation: {
    allocationId: string;
    userId: string;
    /** `held` until the user's side confirmed the claim. */
    state: "held" | "active";
    allocatedAt: string;
    expiresAt: string;
    secondsLeft: number;
  } | null;
  /** The holder's hello only: how to reach the device (its registered endpoints). */
  access?: Record<string, string>;
  /** The holder's hello only: a fresh access grant (null when the service has no signing key); renew it over HTTP. */
  accessGrant?: string | null;
}

/** `quota.exceeded` says which limits and usage; `quota.updated` carries the whole quota, as GET /quotas/user/{userId} answers it. */
export interface QuotaEventData {
  limits: QuotaLimits;
  usage: QuotaUsage;
}
export type QuotaUpdatedEventData = z.infer<typeof QuotaView>;

export interface QuotaRenewedEventData {
  validUntil: string;
  extensionDays: number;
}

export interface LowBalanceEventData {
  userId?: string;
  balance: number;
  threshold: number;
  currency?: string;
  [k: string]: unknown;
}

export interface PaymentSuccessEventData {
  userId?: string;
  amount: number;
  paymentId: string;
  newBalance: number;
  /** Who credited it: an admin's user id, or `service`. */
  actor?: string;
  [k: string]: unknown;
}

/** A month's invoice, as src/billing/invoices.ts writes it (money in minor units of `currency`). */
export interface InvoiceGeneratedEventData {
  invoiceId: string;
  /** The month, `YYYY-MM` (UTC). */
  period: string;
  currency: string;
  charges: number;
  credits: number;
  debits: number;
  openingBalance: number;
  closingBalance: number;
  usageCount: number;
  usageSeconds: number;
}

/**
 * A usage record was booked and charged (user feed, once per record). Money in minor units under
 * the old notification service's names: `amount` is what was charged (positive), `newBalance`
 * the balance right after this charge.
 */
export interface ChargedEventData {
  allocationId: string;
  deviceId: string;
  amount: number;
  newBalance: number;
  currency: string;
  durationSeconds: number;
}

/** App events come from the app service (POST /api/internal/events), as in the old system. */
export interface AppInstalledEventData {
  userId: string;
  appId: string;
  appName: string;
  deviceId: string;
  deviceName?: string;
  version: string;
  installedAt: string;
}

export interface AppInstallFailedEventData {
  userId: string;
  appId: string;
  appName: string;
  deviceId: string;
  deviceName?: string;
  reason: string;
  failedAt: string;
}

export interface AppUpdatedEventData {
  userId: string;
  appId: string;
  appName: string;
  deviceId: string;
  oldVersion: string;
  newVersion: string;
  updatedAt: string;
}

/** Operator events (admin feed only). */
export interface UsageFailedEventData {
  allocationId: string;
  userId: string;
  deviceId: string;
  status: string;
  error: string | null;
}

export interface ReconcileDifferencesEventData {
  from: string;
  to: string;
  differences: number;
  healed: number;
  sample: unknown[];
}

/** A device as its pool's index knows it (pool feed: the hello's snapshot and every `pool.device`). */
export interface PoolDeviceView {
  deviceId: string;
  node: string;
  status: string;
  cpuCores: number;
  memoryMB: number;
  storageMB: number;
  allocationId: string | null;
  userId: string | null;
  expiresAt: string | null;
}

/** `pool.device` (pool feed, admins): a device of the pool changed; status `removed` when it left. */
export interface PoolDeviceEventData extends PoolDeviceView {
  pool: string;
  previousStatus: string | null;
  /** Why the previous allocation ended, when this change ended one. */
  reason: string | null;
}

/** `feed.hello` `state` on a pool feed: the pool's devices as of the connect. */
export interface PoolFeedState {
  pool: string;
  devices: PoolDeviceView[];
  /** More devices than a hello carries (`FEED.poolSnapshotLimit`): list the rest with GET /admin/pools/{pool}/devices. */
  truncated: boolean;
}

/** Waiting queue (user feed): the entry got its device, waited too long, or could not be served. */
export interface QueueEventData {
  entryId: string;
  pool: string;
  priority: number;
  joinedAt: string;
  /** queue.fulfilled: the allocation it got (a `device.allocated` event comes with it). */
  allocationId?: string;
  deviceId?: string;
  waitedSeconds?: number;
  /** queue.expired: the wait it had. */
  maxWaitMinutes?: number;
  /** queue.failed: why (the API's error, e.g. a quota or balance refusal at hand-over). */
  error?: { code: string; message: string };
}

/** Reservations (user feed): reminder before the start, start, and every ending. */
export interface ReservationEventData {
  reservationId: string;
  pool: string;
  deviceId: string | null;
  startAt: string;
  endAt: string;
  status: string;
  /** reservation.reminder: minutes until the start. */
  minutesBefore?: number;
  /** reservation.started: the allocation made for the window. */
  allocationId?: string;
  /** reservation.failed: why. */
  error?: { code: string; message: string };
}

/** Every logged event type and its data. Emitters and the client are typed by this map. */
export interface FeedEvents {
  "device.allocated": AllocationEventData;
  "device.extended": ExtendedEventData;
  "device.expiring": ExpiringEventData;
  "device.released": ReleasedEventData;
  "device.status": DeviceStatusEventData;
  "device.draining": DrainingEventData;
  "pool.device": PoolDeviceEventData;
  "quota.updated": QuotaUpdatedEventData;
  "quota.exceeded": QuotaEventData;
  "quota.renewed": QuotaRenewedEventData;
  "billing.low_balance": LowBalanceEventData;
  "billing.payment_success": PaymentSuccessEventData;
  "billing.invoice_generated": InvoiceGeneratedEventData;
  "billing.charged": ChargedEventData;
  "billing.usage_failed": UsageFailedEventData;
  "billing.reconcile_differences": ReconcileDifferencesEventData;
  "app.installed": AppInstalledEventData;
  "app.install_failed": AppInstallFailedEventData;
  "app.updated": AppUpdatedEventData;
  "queue.fulfilled": QueueEventData;
  "queue.expired": QueueEventData;
  "queue.failed": QueueEventData;
  "reservation.reminder": ReservationEventData;
  "reservation.started": ReservationEventData;
  "reservation.completed": ReservationEventData;
  "reservation.cancelled": ReservationEventData;
  "reservation.expired": ReservationEventData;
  "reservation.failed": ReservationEventData;
}
export type FeedEventType = keyof FeedEvents;

/** The same types as a list (the API documents them as an enum); the check below keeps the two equal. */
export const FEED_EVENT_TYPES = [
  "device.allocated",
  "device.extended",
  "device.expiring",
  "device.released",
  "device.status",
  "device.draining",
  "pool.device",
  "quota.updated",
  "quota.exceeded",
  "quota.renewed",
  "billing.low_balance",
  "billing.payment_success",
  "billing.invoice_generated",
  "billing.charged",
  "billing.usage_failed",
  "billing.reconcile_differences",
  "app.installed",
  "app.install_failed",
  "app.updated",
  "queue.fulfilled",
  "queue.expired",
  "queue.failed",
  "reservation.reminder",
  "reservation.started",
  "reservation.completed",
  "reservation.cancelled",
  "reservation.expired",
  "reservation.failed",
] as const;
const everyType: [(typeof FEED_EVENT_TYPES)[number], FeedEventType] extends [FeedEventType, (typeof FEED_EVENT_TYPES)[number]]
  ? true
  : never = true;
void everyType;

export const APP_EVENT_TYPES = ["app.installed", "app.install_failed", "app.updated"] as const;
export type AppEventType = (typeof APP_EVENT_TYPES)[number];

// ---- frames ------------------------------------------------------------------------------

export interface Envelope<T = unknown, K extends string = string> {
  seq: number | null;
  type: K;
  userId: string;
  data: T;
  /** When the event was logged: ISO 8601, UTC. */
  timestamp: string;
}

/** A logged event: always has a seq. */
export type FeedEvent<K extends FeedEventType = FeedEventType> = {
  [P in K]: Envelope<FeedEvents[P], P> & { seq: number };
}[K];

export type FeedKind = "user" | "admin" | "device" | "pool";

/** First frame on every socket: where replay starts and ends, and what history was lost. */
export interface HelloData {
  feed: FeedKind;
  /** The `since` the server used (a client ahead of the log is moved back to its end). */
  since: number;
  /** Replayed events end here; everything after it is live. */
  replayThrough: number;
  /** Oldest seq still kept (null: the log is empty). */
  oldestSeq: number | null;
  /** How many events each feed keeps for resume. */
  historyLimit: number;
  /** Events the client missed that are no longer kept (`null` when nothing was lost). */
  missed: { from: number; to: number; count: number } | null;
  /** Device feeds: the device and its allocation as of now; pool feeds: the pool's devices (PoolFeedState). */
  state?: unknown;
}

export interface ErrorFrameData {
  code: string;
  message: string;
}

export interface ControlFrames {
  "feed.hello": HelloData;
  "feed.error": ErrorFrameData;
}

// ---- client → server ---------------------------------------------------------------------

/** Keep-alive: the runtime answers PING with PONG without waking the object. */
export const PING = "ping";
export const PONG = "pong";

// ---- close codes -------------------------------------------------------------------------

export const CLOSE = {
  /** The server ended this feed on purpose (a device feed whose allocation ended). */
  normal: 1000,
  /** Sent by the runtime, not by us, when it shuts a socket down (e.g. a deploy or restart): reconnect and resume. */
  goingAway: 1001,
  /** The service is restarting: reconnect (with backoff) and resume. */
  serviceRestart: 1012,
  /** The query was malformed (e.g. `since` is not a number). Fix the request. */
  badRequest: 4400,
  /** Ticket missing, invalid, expired or already used: get a new ticket. */
  unauthorized: 4401,
  /** Valid ticket, but not for this feed (not an admin; not the device's holder). */
  forbidden: 4403,
  /** No such device or pool. */
  notFound: 4404,
  /** The device was removed from the fleet: its feed is gone for good. */
  deviceRemoved: 4410,
  /** Too many sockets or messages: wait, then reconnect. */
  rateLimited: 4429,
} as const;

/** Whether a client should reconnect after a close with this code. */
export function shouldReconnect(code: number): boolean {
  return (
    code !== CLOSE.normal &&
    code !== CLOSE.deviceRemoved &&
    code !== CLOSE.badRequest &&
    code !== CLOSE.forbidden &&
    code !== CLOSE.notFound
  );
}
