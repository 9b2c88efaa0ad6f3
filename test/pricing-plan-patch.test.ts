/**
 * Issue 20: pricing plans take partial updates. PATCH /admin/billing/pricing-plans/{pricingPlanId}
 * changes the fields it names (each checked as PUT checks it) and leaves the rest; an unknown plan
 * is 404 PLAN_NOT_FOUND, an empty patch 400; audited as pricing_plan.set, like PUT.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { SERVICE_TOKEN, admin, call, pricingPlanBody, seenUser, uid } from "./helpers";

const one = <T>(q: string, ...args: unknown[]) =>
  env.DB.prepare(q)
    .bind(...args)
    .first<T>();
const count = async (q: string, ...args: unknown[]) => (await one<{ n: number }>(q, ...args))!.n;

async function aPlan(): Promise<string> {
  const planId = uid("plan");
  expect(
    (await call("PUT", `/admin/billing/pricing-plans/${planId}`, { token: await admin(), body: pricingPlanBody(planId) })).status,
  ).toBe(200);
  return planId;
}

describe("PATCH /admin/billing/pricing-plans/{pricingPlanId}", () => {
  const patch = async (planId: string, body: unknown) =>
    call("PATCH", `/admin/billing/pricing-plans/${planId}`, { token: await admin(), body });
  const row = (planId: string) => one<Record<string, unknown>>("SELECT * FROM pricing_plans WHERE plan_id = ?", planId);

  it("changes only the fields sent; the rest stay; audited as pricing_plan.set with the fields sent and before", async () => {
    const planId = await aPlan();
    const before = await row(planId);
    const r = await patch(planId, { cpuCoreMicrosPerSecond: 42 });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ ...pricingPlanBody(planId), pricingPlanId: planId, cpuCoreMicrosPerSecond: 42 });
    const after = await row(planId);
    expect(after).toEqual({ ...before, cpu_core_per_second: 42, updated_at: after!.updated_at });
    expect(after!.updated_at as number).toBeGreaterThanOrEqual(before!.updated_at as number);
    const audit = await env.DB.prepare("SELECT actor, action, change FROM audit_log WHERE target = ? ORDER BY seq")
      .bind(`plan:${planId}`)
      .all<{ actor: string; action: string; change: string }>();
    expect(audit.results).toHaveLength(2);
    expect(audit.results[1]!.action).toBe("pricing_plan.set");
    expect(JSON.parse(audit.results[1]!.change)).toEqual({ cpuCoreMicrosPerSecond: 42, before: pricingPlanBody(planId) });

    // Two fields at once, the earlier patch kept.
    const two = await patch(planId, { name: "Renamed", lowBalanceThresholdMinor: 75 });
    expect(two.body).toMatchObject({ name: "Renamed", lowBalanceThresholdMinor: 75, cpuCoreMicrosPerSecond: 42, baseMicrosPerSecond: 100 });
  });

  it("an unknown plan is 404 PLAN_NOT_FOUND and creates nothing", async () => {
    const planId = uid("no-plan");
    const r = await patch(planId, { baseMicrosPerSecond: 1 });
    expect(r.status).toBe(404);
    expect(r.body.error).toMatchObject({ code: "PLAN_NOT_FOUND", details: { pricingPlanId: planId } });
    expect(await row(planId)).toBeNull();
    expect(await count("SELECT COUNT(*) AS n FROM audit_log WHERE target = ?", `plan:${planId}`)).toBe(0);
  });

  it("is checked as PUT is: an empty patch, an unknown field, a bad value, another currency are 400 and change nothing", async () => {
    const planId = await aPlan();
    const before = await row(planId);
    const cases: [unknown, string][] = [
      [{}, "VALIDATION_FAILED"],
      [{ basePerSecond: 1 }, "VALIDATION_FAILED"],
      [{ baseMicrosPerSecond: -1 }, "VALIDATION_FAILED"],
      [{ baseMicrosPerSecond: 1.5 }, "VALIDATION_FAILED"],
      [{ startingCreditMinor: 1e15 }, "VALIDATION_FAILED"],
      [{ name: "" }, "VALIDATION_FAILED"],
      [{ currency: "usd" }, "VALIDATION_FAILED"],
      [{ currency: "EUR" }, "CURRENCY_NOT_SUPPORTED"],
      [{ name: null }, "VALIDATION_FAILED"],
    ];
    for (const [body, code] of cases) {
      const r = await patch(planId, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.code, JSON.stringify(body)).toBe(code);
    }
    const empty = await patch(planId, {});
    expect(empty.body.error.details.issues).toEqual([{ path: "", message: "name at least one field to change" }]);
    expect(await row(planId)).toEqual(before);
    expect(await count("SELECT COUNT(*) AS n FROM audit_log WHERE target = ?", `plan:${planId}`)).toBe(1);
  });

  it("a patched rate prices the next charge", async () => {
    const planId = await aPlan();
    const user = uid("patched");
    const set = await call("PUT", `/admin/billing/users/${user}/plan?create=true`, {
      token: await admin(),
      body: { pricingPlanId: planId },
    });
    expect(set.status).toBe(200);
    expect((await patch(planId, { baseMicrosPerSecond: 1_000_000 })).status).toBe(200);
    const allocationId = uid("ext-alloc");
    const report = await call("POST", "/api/internal/metering/device-usage", {
      service: SERVICE_TOKEN,
      body: {
        allocationId,
        deviceId: "d-ext",
        userId: user,
        durationSeconds: 60,
        cpuCores: 1,
        memoryMB: 1024,
        storageMB: 1024,
        allocatedAt: "2026-01-01T10:00:00Z",
        releasedAt: "2026-01-01T10:01:00Z",
      },
    });
    expect(report.body.recorded).toBe(1);
    // 60 s × (1,000,000 base, patched + 10 cpu + 5 memory + 1 storage, unchanged) millionths = 60.00096 → 61 cents.
    expect(await one("SELECT amount FROM ledger WHERE allocation_id = ?", allocationId)).toEqual({ amount: -61 });
  });
});
