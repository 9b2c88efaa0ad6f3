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

export function fail(status: ErrorStatus, code: string, message: string, details?: unknown): Failure {
  return details === undefined ? { ok: false, status, code, message } : { ok: false, status, code, message, details };
}

export function errorBody(f: Pick<Failure, "code" | "message" | "details">) {
  return { error: f.details === undefined ? { code: f.code, message: f.message } : { code: f.code, message: f.message, details: f.details } };
}

/** Thrown inside the Worker (never across RPC) and turned into a response by the app's onError. */
export class HttpError extends Error {
  constructor(readonly failure: Failure) {
    super(failure.message);
  }
}
