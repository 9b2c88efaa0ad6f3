import { log } from "./log";

/**
 * The one error shape. Durable Objects return `Failure` values across RPC (thrown errors
 * lose their fields on the way), and routes turn them into `{error: {code, message, details?}}`.
 */
export type ErrorStatus = 400 | 401 | 402 | 403 | 404 | 409 | 413 | 415 | 422 | 426 | 429 | 500 | 503;

export interface Failure {
  ok: false;
  status: ErrorStatus;
  code: string;
  message: string;
  details?: unknown;
}
export type Result<T> = { ok: true; value: T } | Failure;

export const ok = <T>(value: T): Result<T> => ({ ok: true, value });
/** A result's value changed by `f` (a refusal passes through). */
export const mapOk = <T, U>(r: Result<T>, f: (value: T) => U): Result<U> => (r.ok ? ok(f(r.value)) : r);

export function fail(status: ErrorStatus, code: string, message: string, details?: unknown): Failure {
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
