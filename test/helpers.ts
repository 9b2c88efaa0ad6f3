/** Test helpers: call the real Worker (exports.default) with real tokens. */
import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { issueToken } from "../src/auth";
import worker from "../src/index";

export const SERVICE_TOKEN = "test-service-token-0123456789abcdef";

export async function tokenFor(userId: string, role: "user" | "admin" = "user"): Promise<string> {
  return issueToken(env.JWT_SECRET, userId, role);
}

export interface CallOpts {
  token?: string | null;
  service?: string;
  body?: unknown;
  rawBody?: BodyInit;
  headers?: Record<string, string>;
}

export async function call(method: string, path: string, opts: CallOpts = {}): Promise<{ status: number; body: any; res: Response }> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  if (opts.service) headers["X-Service-Token"] = opts.service;
  let body: BodyInit | undefined = opts.rawBody;
  if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["Content-Type"] ??= "application/json";
  }
  const res = await exports.default.fetch(new Request(`https://test.local${path}`, { method, headers, body }));
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON: the test will see a string */
  }
  return { status: res.status, body: parsed, res };
}

let seq = 0;
/** A unique id per call, so tests in one file do not share users, devices or pools. */
export function uid(prefix: string): string {
  seq += 1;
  return `${prefix}-${seq}-${Math.random().toString(36).slice(2, 8)}`;
}

export async function admin(): Promise<string> {
  return tokenFor("root-admin", "admin");
}

export async function registerDevice(
  pool: string,
  spec: Partial<{ deviceId: string; node: string; cpuCores: number; memoryMB: number; storageMB: number }> = {},
) {
  const r = await call("POST", "/admin/devices", {
    token: await admin(),
    body: { pool, cpuCores: 2, memoryMB: 4096, storageMB: 32768, ...spec },
  });
  if (r.status !== 201) throw new Error(`register failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as { deviceId: string; pool: string; node: string };
}

/**
 * A user who has used the service: their own balance read opened their billing account, so an
 * admin's writes may name them (an unknown user is 404 USER_NOT_FOUND unless `?create=true`).
 */
export async function seenUser(userId: string): Promise<string> {
  const r = await call("GET", `/billing/users/${userId}/balance`, { token: await tokenFor(userId) });
  if (r.status !== 200) throw new Error(`balance read failed: ${r.status} ${JSON.stringify(r.body)}`);
  return userId;
}

/** A pricing plan's body (PUT /admin/billing/pricing-plans/{pricingPlanId}) with small rates, in USD. */
export const pricingPlanBody = (name: string): Record<string, unknown> => ({
  name,
  currency: "USD",
  baseMicrosPerSecond: 100,
  cpuCoreMicrosPerSecond: 10,
  memoryGBMicrosPerSecond: 5,
  storageGBMicrosPerSecond: 1,
  startingCreditMinor: 500,
  lowBalanceThresholdMinor: 50,
});

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value or the time is up. */
export async function until<T>(fn: () => Promise<T | null | undefined | false>, timeoutMs = 10_000, stepMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error("condition not met in time");
    await sleep(stepMs);
  }
}

/** Runs `fn` while D1's accounts table is gone, so every balance read really fails (no mocks). */
export async function withBillingDown<T>(fn: () => Promise<T>): Promise<T> {
  await env.DB.exec("ALTER TABLE accounts RENAME TO accounts_off");
  try {
    return await fn();
  } finally {
    await env.DB.exec("ALTER TABLE accounts_off RENAME TO accounts");
  }
}

/**
 * Hands `bodies` to the real queue consumer as one batch (messages m0, m1, … with `attempts`),
 * on `queue` (the usage queue or its dead-letter queue), and returns what it acked and retried.
 */
export async function deliverBatch(queue: "device-usage" | "device-usage-dlq", bodies: unknown[], attempts = 1) {
  const batch = createMessageBatch<unknown>(
    queue,
    bodies.map((body, i) => ({ id: `m${i}`, timestamp: new Date(), attempts, body })),
  );
  const ctx = createExecutionContext();
  await worker.queue(batch, env as never);
  return getQueueResult(batch, ctx);
}

type Timed = { allocatedAt: number | string; releasedAt: number | string };
const isoTime = (t: number | string) => (typeof t === "number" ? new Date(t).toISOString() : t);

/**
 * A usage record (times in epoch ms, as the queue carries it) as another service reports it over
 * HTTP: times as ISO 8601, the one time format of requests. Takes one record, an array or `{records}`.
 */
export function asReport(body: object): unknown {
  const one = <T extends Timed>(r: T) => ({ ...r, allocatedAt: isoTime(r.allocatedAt), releasedAt: isoTime(r.releasedAt) });
  if (Array.isArray(body)) return body.map(one);
  if ("records" in body) return { ...body, records: (body.records as Timed[]).map(one) };
  return one(body as Timed);
}

/** An answer without its access grant: every answer signs a fresh one, a repeated key's included. */
export function withoutGrant(body: Record<string, unknown>): Record<string, unknown> {
  const { accessGrant: _g, accessGrantExpiresAt: _e, ...rest } = body;
  return rest;
}

/** One allocation without the holder's fields (GET /scheduler/allocations/{id} adds them; lists and batch reads do not). */
export function withoutHolder(body: Record<string, unknown>): Record<string, unknown> {
  const { access: _a, ...rest } = withoutGrant(body);
  return rest;
}
