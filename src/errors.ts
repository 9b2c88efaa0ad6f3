import { log } from "./log";

/**
 * The one error shape. Durable Objects return `Failure` values across RPC (thrown errors
 * lose their fields on the way), and routes turn them into `{error: {code, message, details?}}`.
 */
/**
 * Every error code the service answers (the OpenAPI document's enum): `fail` takes only these,
 * so a new code is added here, where clients read the list.
 */
export const ERROR_CODES = [
  "ADJUSTMENT_ID_REUSED",
  "ALLOCATION_ABORTED",
  "ALLOCATION_ENDED",
  "ALLOCATION_IN_PROGRESS",
  "ALLOCATION_NOT_FOUND",
  "BAD_REQUEST",
  "BILLING_UNAVAILABLE",
  "CURRENCY_NOT_SUPPORTED",
  "DEVICE_BUSY",
  "DEVICE_DRAINING",
  "DEVICE_EXISTS",
  "DEVICE_NOT_ALLOCATED",
  "DEVICE_NOT_FOUND",
  "DEVICE_RESERVED",
  "DEVICE_UNAVAILABLE",
  "DEVICE_UNFIT",
  "EXTEND_COOLDOWN",
  "EXTEND_LIMIT_REACHED",
  "EXTEND_TOO_LONG",
  "EXTEND_TOTAL_EXCEEDED",
  "FEED_UNAVAILABLE",
  "FORBIDDEN",
  "IDEMPOTENCY_KEY_REUSED",
  "INSUFFICIENT_BALANCE",
  "INTERNAL",
  "INVALID_JSON",
  "INVOICE_NOT_FOUND",
  "NO_CAPACITY",
  "NO_DEVICE_AVAILABLE",
  "NO_DEVICE_WITHIN_QUOTA",
  "NO_MATCHING_DEVICE",
  "OWN_ALLOCATION",
  "PAYLOAD_TOO_LARGE",
  "PAYMENT_ID_REUSED",
  "PERIOD_NOT_ENDED",
  "PLAN_NOT_FOUND",
  "POOL_NOT_FOUND",
  "POOL_UNAVAILABLE",
  "PRIORITY_NOT_ALLOWED",
  "QUEUE_ENTRY_BUSY",
  "QUEUE_ENTRY_CLOSED",
  "QUEUE_ENTRY_NOT_FOUND",
  "QUEUE_LIMIT",
  "QUEUE_OFFER_GONE",
  "QUOTA_DEVICES_EXCEEDED",
  "QUOTA_EXPIRED",
  "QUOTA_HOURS_EXCEEDED",
  "QUOTA_PER_DEVICE_EXCEEDED",
  "QUOTA_SUSPENDED",
  "QUOTA_TOTAL_EXCEEDED",
  "RATE_LIMITED",
  "RESERVATION_CLOSED",
  "RESERVATION_EXECUTING",
  "RESERVATION_IN_PAST",
  "RESERVATION_LIMIT",
  "RESERVATION_NOT_FOUND",
  "RESERVATION_TOO_FAR",
  "RESERVATION_WINDOW_OVER",
  "ROUTE_NOT_FOUND",
  "SERVICE_MISCONFIGURED",
  "SHORT_DURATION_DISABLED",
  "SKIPPED",
  "STORAGE_UNAVAILABLE",
  "TICKET_INVALID",
  "TICKET_USED",
  "TOKEN_REVOKED",
  "TOO_MANY_SOCKETS",
  "UNAUTHORIZED",
  "UNSUPPORTED_MEDIA_TYPE",
  "UNSUPPORTED_MESSAGE",
  "UPGRADE_REQUIRED",
  "USER_NOT_FOUND",
  "USER_UNAVAILABLE",
  "VALIDATION_FAILED",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export type ErrorStatus = 400 | 401 | 402 | 403 | 404 | 409 | 413 | 415 | 422 | 426 | 429 | 500 | 503;

export interface Failure {
  ok: false;
  status: ErrorStatus;
  code: ErrorCode;
  message: string;
  details?: unknown;
}
export type Result<T> = { ok: true; value: T } | Failure;

export const ok = <T>(value: T): Result<T> => ({ ok: true, value });
/** A result's value changed by `f` (a refusal passes through). */
export const mapOk = <T, U>(r: Result<T>, f: (value: T) => U): Result<U> => (r.ok ? ok(f(r.value)) : r);

export function fail(status: ErrorStatus, code: ErrorCode, message: string, details?: unknown): Failure {
  return details === undefined ? { ok: false, status, code, message } : { ok: false, status, code, message, details };
}

export function errorBody(f: Pick<Failure, "code" | "message" | "details">) {
  return {
    error: f.details === undefined ? { code: f.code, message: f.message } : { code: f.code, message: f.message, details: f.details },
  };
}

/**
 * An error nobody expected: logged once (with what the caller knows of the request), answered
 * with the one 500 shape, which says nothing about it but the request id.
 */
export function internalFailure(err: unknown, context: { requestId: string; path: string; [k: string]: unknown }): Failure {
  log("error", "unexpected error", { ...context, error: String(err), stack: (err as Error)?.stack });
  return fail(500, "INTERNAL", "Something went wrong on our side; nothing was changed that you were not told of.", {
    requestId: context.requestId,
  });
}

/** Thrown inside the Worker (never across RPC) and turned into a response by the app's onError. */
export class HttpError extends Error {
  constructor(readonly failure: Failure) {
    super(failure.message);
  }
}
