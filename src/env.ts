/**
 * The Worker's bindings: the `Env` wrangler generates from wrangler.toml
 * (worker-configuration.d.ts, `npm run types`), with the queues typed by their message and the
 * variables that wrangler.toml does not set (or sets to one literal) widened to what may be set.
 */
import type { UsageRecord } from "./domain/types";

type Vars =
  | "DEFAULT_PLAN"
  | "DEFAULT_POOL"
  | "BILLING_ALLOW_ON_ERROR"
  | "ALLOW_SHORT_DURATIONS"
  | "LOCAL_DEV"
  | "TOKEN_MAX_DAYS"
  | "ACCESS_SIGNING_KEY";

export interface Env extends Omit<Cloudflare.Env, "USAGE_QUEUE" | "USAGE_DLQ" | Vars> {
  USAGE_QUEUE: Queue<UsageRecord>;
  USAGE_DLQ: Queue<UsageRecord>;
  DEFAULT_PLAN?: string;
  DEFAULT_POOL?: string;
  BILLING_ALLOW_ON_ERROR?: string;
  ALLOW_SHORT_DURATIONS?: string;
  /** Pricing plan a new account gets (default `standard`, seeded by the migrations). */
  DEFAULT_PRICING_PLAN?: string;
  /** "true" only on a developer's machine (.dev.vars, npm run dev): the example secrets are allowed. */
  LOCAL_DEV?: string;
  /** The key before the last rotation: still verifies the tokens it signed (their `kid`), never signs. */
  JWT_SECRET_PREVIOUS?: string;
  /** P-256 private key (JWK) that signs device access grants; unset: grants are off (src/access.ts). */
  ACCESS_SIGNING_KEY?: string;
  /** The access key before the last rotation: its public part stays in /.well-known/jwks.json, it never signs. */
  ACCESS_SIGNING_KEY_PREVIOUS?: string;
  /** Longest bearer token lifetime accepted, in days (default TOKENS.maxLifetimeDays, 30). */
  TOKEN_MAX_DAYS?: string;
  /** "on" only in the benchmarks: every request's cost is counted (src/meter.ts). */
  METER?: string;
  /** Seconds before the first retry of a failed usage write (doubles per attempt). */
  USAGE_RETRY_BASE_SECONDS?: string;
}
