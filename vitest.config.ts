import os from "node:os";
import path from "node:path";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { unstable_readConfig } from "wrangler";
import { configDefaults, defineConfig } from "vitest/config";
import { divertRuntimeNoise, serviceLog } from "./test/runner/quiet.ts";
import { QUEUE_BATCH_TIMEOUT_S } from "./test/timing.ts";

/**
 * Six projects:
 * - `unit`: test/unit, in Node: the pure modules and the stores over node:sqlite (seconds);
 * - `workers`: every other test file, in a Workers runtime, with the production switch
 *   BILLING_ALLOW_ON_ERROR = "false" (an unreadable balance refuses allocations);
 * - `billing-fail-open`: only the files named `*.fail-open.test.ts`, with the switch "true"
 *   (a binding is fixed per runtime, so the two settings cannot share one project);
 * - `limits`: only the files named `*.limits.test.ts`, with wrangler.toml's rate limits (the
 *   others raise them out of reach: their tests make hundreds of calls as one caller);
 * - `browser`: test/browser, in Node: `npm run dev` (each file its own, on a free port) and
 *   Debian's Chromium driven by playwright-core. It starts early and runs beside the others.
 *   Skipped with a message when no Chromium is found, unless REQUIRE_BROWSER=1.
 * - `client`: test/client, in Node: types generated from the OpenAPI document (openapi-typescript)
 *   type-check an openapi-fetch client, which then runs against its own `npm run dev`. No Chromium.
 *   test/cli joins it: `npm run ctl` run as a process against its own `npm run dev`.
 * `vitest run` runs all six; `vitest run --project workers` runs one.
 */
/** A P-256 key for the tests only (never the committed example of .dev.vars.example). */
const TEST_ACCESS_KEY = {
  kty: "EC",
  crv: "P-256",
  x: "naLF2tf5fTRMKZxssSi_p0NTat6r1XQF0WjMB0_HRY8",
  y: "Pg7ipNw8-OfUq7gwNx7_4D4uXLGUzyhCWKicpDDlNfs",
  d: "hrhp7g8eewcieXrePvIYKF-EhPueRxbBxYNdLWvsexk",
};

const FAIL_OPEN_FILES = ["test/**/*.fail-open.test.ts"];
const LIMITS_FILES = ["test/**/*.limits.test.ts"];
const BROWSER_FILES = ["test/browser/**/*.test.ts"];
const CLIENT_FILES = ["test/client/**/*.test.ts", "test/cli/**/*.test.ts"];
const UNIT_FILES = ["test/unit/**/*.test.ts"];

/**
 * wrangler.toml's rate limits raised out of reach, for the projects whose tests drive hundreds of
 * calls as one user or admin: the same bindings and code run, and never refuse. The `limits`
 * project keeps wrangler.toml's own and tries them (test/*.limits.test.ts).
 */
function raisedRateLimits() {
  const { ratelimits } = unstable_readConfig({ config: path.join(import.meta.dirname, "wrangler.toml") });
  return Object.fromEntries(
    (ratelimits ?? []).map((r: { name: string; namespace_id: string; simple: { period: 10 | 60 } }) => [
      r.name,
      { namespace_id: r.namespace_id, simple: { limit: 1_000_000_000, period: r.simple.period } },
    ]),
  );
}

function configuredLimits(): Record<string, number> {
  const { ratelimits } = unstable_readConfig({ config: path.join(import.meta.dirname, "wrangler.toml") });
  return Object.fromEntries((ratelimits ?? []).map((r: { name: string; simple: { limit: number } }) => [r.name, r.simple.limit]));
}

const raisedLimits = (r: Record<string, { simple: { limit: number } }>) =>
  Object.fromEntries(Object.entries(r).map(([name, v]) => [name, v.simple.limit]));

/** wrangler.toml's queue consumers with the test batch timeout (test/timing.ts), in Miniflare's shape. */
function testQueueConsumers() {
  const { queues } = unstable_readConfig({ config: path.join(import.meta.dirname, "wrangler.toml") });
  return Object.fromEntries(
    (queues.consumers ?? []).map(
      (c: { queue: string; max_batch_size?: number; max_retries?: number; retry_delay?: number; dead_letter_queue?: string }) => [
        c.queue,
        {
          maxBatchSize: c.max_batch_size,
          maxBatchTimeout: QUEUE_BATCH_TIMEOUT_S,
          maxRetries: c.max_retries,
          retryDelay: c.retry_delay,
          deadLetterQueue: c.dead_letter_queue,
        },
      ],
    ),
  );
}

export default defineConfig(async () => {
  divertRuntimeNoise();
  const migrations = await readD1Migrations(path.join(import.meta.dirname, "migrations"));
  const queueConsumers = testQueueConsumers();
  const raised = raisedRateLimits();
  const workers = (billingAllowOnError: "true" | "false", limits: "raised" | "real" = "raised") =>
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      // The real entry, with every answer held against the OpenAPI document (test/support/answers.ts).
      main: "./test/support/worker.ts",
      miniflare: {
        queueConsumers,
        ...(limits === "raised" ? { ratelimits: raised } : {}),
        bindings: {
          TEST_MIGRATIONS: migrations,
          JWT_SECRET: "test-jwt-secret-0123456789abcdef",
          SERVICE_TOKEN: "test-service-token-0123456789abcdef",
          // Signs device access grants (test/access.test.ts verifies them with /.well-known/jwks.json).
          ACCESS_SIGNING_KEY: JSON.stringify(TEST_ACCESS_KEY),
          // The tests run as a deployed Worker would: a developer's .dev.vars (LOCAL_DEV="true") must not leak in.
          LOCAL_DEV: "false",
          ALLOW_SHORT_DURATIONS: "true",
          USAGE_RETRY_BASE_SECONDS: "0",
          BILLING_ALLOW_ON_ERROR: billingAllowOnError,
          // The limits in force, by binding (test/*.limits.test.ts floods each one).
          TEST_RATE_LIMITS: JSON.stringify(limits === "raised" ? raisedLimits(raised) : configuredLimits()),
        },
      },
    });
  const shared = {
    // Every core (set per project: vitest reads it there). The default, cores - 1, ran one file
    // at a time on a 2-core machine, leaving a core idle while the suites wait on alarms and queues.
    maxWorkers: Math.max(2, os.availableParallelism()),
    setupFiles: ["./test/setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  };
  return {
    test: {
      // The service's own log lines stay out of the output: info and debug are dropped, warn and
      // error go to test-results/service.log (test/runner/quiet.ts; a failing test prints its own again).
      // Tests that check log lines spy on console.
      onConsoleLog: serviceLog(),
      projects: [
        {
          extends: false,
          // The pure modules and the stores over node:sqlite, in Node: `npm run test:unit`.
          test: {
            name: "unit",
            include: UNIT_FILES,
            environment: "node",
            maxWorkers: shared.maxWorkers,
            execArgv: ["--disable-warning=ExperimentalWarning"],
          },
        },
        {
          extends: false,
          plugins: [workers("false")],
          test: {
            ...shared,
            name: "workers",
            include: ["test/**/*.test.ts"],
            exclude: [...configDefaults.exclude, ...FAIL_OPEN_FILES, ...LIMITS_FILES, ...BROWSER_FILES, ...CLIENT_FILES, ...UNIT_FILES],
          },
        },
        {
          extends: false,
          plugins: [workers("false", "real")],
          test: { ...shared, name: "limits", include: LIMITS_FILES },
        },
        {
          extends: false,
          plugins: [workers("true")],
          test: { ...shared, name: "billing-fail-open", include: FAIL_OPEN_FILES },
        },
        {
          extends: false,
          test: {
            // The same maxWorkers as the others: a project limited to one worker is run after all the
            // rest (vitest's sequential group), and most of this one's time is npm run dev starting.
            name: "browser",
            include: BROWSER_FILES,
            environment: "node",
            testTimeout: 120_000,
            hookTimeout: 240_000,
            maxWorkers: shared.maxWorkers,
          },
        },
        {
          extends: false,
          test: {
            // Like `browser`: most of its time is npm run dev starting, which its test awaits.
            name: "client",
            include: CLIENT_FILES,
            environment: "node",
            testTimeout: 240_000,
            hookTimeout: 60_000,
            maxWorkers: shared.maxWorkers,
          },
        },
      ],
    },
  };
});
