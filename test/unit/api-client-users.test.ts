/**
 * The typed client's admin writes naming a user (src/client/api-client.ts): `create` becomes
 * `?create=true` (an unknown user is 404 USER_NOT_FOUND without it), nothing is sent otherwise;
 * a pricing plan's PATCH.
 */
import { describe, expect, it } from "vitest";
import { ApiClient, ApiError } from "../../src/client/api-client";

function recording(answer: { status: number; body: unknown }) {
  const calls: { url: string; method?: string; body?: unknown }[] = [];
  const api = new ApiClient({
    baseUrl: "https://svc.test",
    token: "t",
    fetch: async (url, init) => {
      calls.push({ url, method: init?.method, body: init?.body ? JSON.parse(String(init.body)) : undefined });
      return new Response(JSON.stringify(answer.body), { status: answer.status });
    },
  });
  return { api, calls };
}

describe("ApiClient: a user's quota and money", () => {
  it("sends ?create=true only when asked, on every write that names a user", async () => {
    const { api, calls } = recording({ status: 200, body: {} });
    await api.updateQuota("al ice", { tier: "pro" });
    await api.updateQuota("al ice", { tier: "pro" }, { create: true });
    await api.renewQuota("bob");
    await api.renewQuota("bob", 7, { create: true });
    await api.topUp("bob", { amountMinor: 100, paymentId: "p1" }, { create: true });
    await api.adjustBalance("bob", { amountMinor: -5, adjustmentId: "a1", memo: "m" }, { create: false });
    await api.setUserPricingPlan("bob", "standard", { create: true });
    expect(calls).toEqual([
      { url: "https://svc.test/quotas/user/al%20ice", method: "PUT", body: { tier: "pro" } },
      { url: "https://svc.test/quotas/user/al%20ice?create=true", method: "PUT", body: { tier: "pro" } },
      { url: "https://svc.test/quotas/renew/bob", method: "POST", body: {} },
      { url: "https://svc.test/quotas/renew/bob?create=true", method: "POST", body: { extensionDays: 7 } },
      { url: "https://svc.test/billing/users/bob/top-ups?create=true", method: "POST", body: { amountMinor: 100, paymentId: "p1" } },
      {
        url: "https://svc.test/admin/billing/users/bob/adjustments",
        method: "POST",
        body: { amountMinor: -5, adjustmentId: "a1", memo: "m" },
      },
      { url: "https://svc.test/admin/billing/users/bob/plan?create=true", method: "PUT", body: { pricingPlanId: "standard" } },
    ]);
  });

  it("an unknown user throws ApiError USER_NOT_FOUND", async () => {
    const { api } = recording({ status: 404, body: { error: { code: "USER_NOT_FOUND", message: "No user", details: { userId: "x" } } } });
    const err = await api.updateQuota("x", { suspended: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 404, code: "USER_NOT_FOUND", details: { userId: "x" } });
  });

  it("updatePricingPlan() PATCHes the fields given", async () => {
    const { api, calls } = recording({ status: 200, body: {} });
    await api.updatePricingPlan("gold", { cpuCoreMicrosPerSecond: 42 });
    expect(calls).toEqual([
      { url: "https://svc.test/admin/billing/pricing-plans/gold", method: "PATCH", body: { cpuCoreMicrosPerSecond: 42 } },
    ]);
  });
});
