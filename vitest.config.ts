import path from "node:path";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { configDefaults, defineConfig } from "vitest/config";

/**
 * Two projects, each with its own Workers runtime and bindings:
 * - `workers`: every test file, with the production switch BILLING_ALLOW_ON_ERROR = "false"
 *   (an unreadable balance refuses allocations);
 * - `billing-fail-open`: only the files named `*.fail-open.test.ts`, with the switch "true".
 * A binding is fixed per runtime, so the two settings cannot share one project.
 * `vitest run` runs both; `vitest run --project workers` runs one.
 */
const FAIL_OPEN_FILES = ["test/**/*.fail-open.test.ts"];

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
      projects: [
        {
          extends: false,
          plugins: [workers("false")],
          test: { ...shared, name: "workers", include: ["test/**/*.test.ts"], exclude: [...configDefaults.exclude, ...FAIL_OPEN_FILES] },
        },
        {
          extends: false,
          plugins: [workers("true")],
          test: { ...shared, name: "billing-fail-open", include: FAIL_OPEN_FILES },
        },
      ],
    },
  };
});
