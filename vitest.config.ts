import path from "node:path";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { configDefaults, defineConfig } from "vitest/config";

/**
 * Three projects:
 * - `workers`: every test file, in a Workers runtime, with the production switch
 *   BILLING_ALLOW_ON_ERROR = "false" (an unreadable balance refuses allocations);
 * - `billing-fail-open`: only the files named `*.fail-open.test.ts`, with the switch "true"
 *   (a binding is fixed per runtime, so the two settings cannot share one project);
 * - `browser`: test/browser, in Node: `npm run dev` and Debian's Chromium driven by
 *   playwright-core, its files one at a time. It runs beside the other two (their Workers pool
 *   is vitest's custom pool, which `sequence.groupOrder` does not order). Skipped with a message
 *   when no Chromium is found, unless REQUIRE_BROWSER=1.
 * `vitest run` runs all three; `vitest run --project workers` runs one.
 */
const FAIL_OPEN_FILES = ["test/**/*.fail-open.test.ts"];
const BROWSER_FILES = ["test/browser/**/*.test.ts"];

export default defineConfig(async () => {
  const migrations = await readD1Migrations(path.join(import.meta.dirname, "migrations"));
  const workers = (billingAllowOnError: "true" | "false") =>
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      miniflare: {
        bindings: {
          TEST_MIGRATIONS: migrations,
          JWT_SECRET: "test-jwt-secret-0123456789abcdef",
          SERVICE_TOKEN: "test-service-token-0123456789abcdef",
          ALLOW_SHORT_DURATIONS: "true",
          USAGE_RETRY_BASE_SECONDS: "0",
          BILLING_ALLOW_ON_ERROR: billingAllowOnError,
        },
      },
    });
  const shared = {
    setupFiles: ["./test/setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  };
  return {
    test: {
      // The service's info lines (one per request, see src/log.ts) would bury the test output;
      // warnings and errors are still shown. Tests that check log lines spy on console.log.
      onConsoleLog: (line: string) => !/^\{"ts":"[^"]*","level":"(info|debug)"/.test(line),
      projects: [
        {
          extends: false,
          plugins: [workers("false")],
          test: { ...shared, name: "workers", include: ["test/**/*.test.ts"], exclude: [...configDefaults.exclude, ...FAIL_OPEN_FILES, ...BROWSER_FILES] },
        },
        {
          extends: false,
          plugins: [workers("true")],
          test: { ...shared, name: "billing-fail-open", include: FAIL_OPEN_FILES },
        },
        {
          extends: false,
          test: {
            name: "browser", include: BROWSER_FILES, environment: "node", testTimeout: 120_000, hookTimeout: 240_000,
            fileParallelism: false,
          },
        },
      ],
    },
  };
});
