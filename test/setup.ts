import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, expect } from "vitest";
import { mismatches } from "./support/answers";

await applyD1Migrations(env.DB, (env as unknown as { TEST_MIGRATIONS: Parameters<typeof applyD1Migrations>[1] }).TEST_MIGRATIONS);

// The service's warn and error lines (src/log.ts) are kept out of the test output, into
// test-results/service.log (see test/runner/quiet.ts): most come from faults the tests inject. The lines
// logged during a test that fails are printed again when it fails, so its own output still shows.
const held: string[] = [];
const reprint = console.warn.bind(console);
for (const level of ["warn", "error"] as const) {
  const print = console[level].bind(console);
  console[level] = (...args: unknown[]) => {
    if (typeof args[0] === "string" && args[0].startsWith('{"ts":')) held.push(args[0]);
    print(...args);
  };
}
beforeEach(({ onTestFailed }) => {
  held.length = 0;
  onTestFailed(() => {
    if (held.length > 0) reprint(`[the service's warn and error lines during this test]\n${held.join("\n")}`);
  });
});

// Every answer a test received matched the OpenAPI document (test/support/answers.ts).
afterEach(() => {
  const seen = mismatches.splice(0);
  expect(seen, "answers that do not match the OpenAPI document").toEqual([]);
});
