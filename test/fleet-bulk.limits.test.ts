/**
 * Project `limits` (wrangler.toml's own rate limits): POST /admin/devices/bulk counts once per
 * request against the operator limit, whatever its number of items, so more items than the limit
 * go through in a few requests.
 */
import { env } from "cloudflare:workers";
import { expect, it } from "vitest";
import { FLEET, RATE_LIMITS } from "../src/config";
import { call, tokenFor, uid } from "./helpers";

const configured = JSON.parse((env as unknown as { TEST_RATE_LIMITS: string }).TEST_RATE_LIMITS) as Record<string, number>;
const OPERATOR = configured[RATE_LIMITS.operator.binding]!;

it("a bulk request counts once against the operator limit, not once per item", async () => {
  const token = await tokenFor(uid("ops"), "admin");
  const run = uid("bulk-limit");
  const per = Math.min(FLEET.bulkMaxItems, 100);
  const devices = Array.from({ length: per }, (_, n) => ({
    deviceId: `${run}-${n}`,
    pool: run,
    cpuCores: 1,
    memoryMB: 1024,
    storageMB: 1024,
  }));
  const requests = Math.floor(OPERATOR / per) + 2;
  // More items than the limit allows calls in its period, in a handful of calls (repeats: unchanged, cheap).
  expect(requests * per).toBeGreaterThan(OPERATOR);
  expect(requests).toBeLessThan(OPERATOR);
  for (let i = 0; i < requests; i++) {
    const r = await call("POST", "/admin/devices/bulk", { token, body: { devices } });
    expect(r.status, `request ${i}: ${JSON.stringify(r.body).slice(0, 200)}`).toBe(200);
    expect(r.body.failed).toBe(0);
  }
});
