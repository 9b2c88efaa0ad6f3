/**
 * Issue 20: an admin's writes that name a user address existing users only (a user exists once
 * they have a billing account, D1 `accounts`, what GET /admin/users lists): a mistyped id is
 * 404 USER_NOT_FOUND and creates nothing, `?create=true` creates, an existing user is changed as
 * before; the payment service's top-ups still open an account.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { SERVICE_TOKEN, admin, call, pricingPlanBody, seenUser, tokenFor, uid } from "./helpers";

const one = <T>(q: string, ...args: unknown[]) =>
  env.DB.prepare(q)
    .bind(...args)
    .first<T>();
const count = async (q: string, ...args: unknown[]) => (await one<{ n: number }>(q, ...args))!.n;

/** What D1 holds of a user: their account, ledger rows, audit rows and notifications. */
const traces = async (userId: string) => ({
  accounts: await count("SELECT COUNT(*) AS n FROM accounts WHERE user_id = ?", userId),
  ledger: await count("SELECT COUNT(*) AS n FROM ledger WHERE user_id = ?", userId),
  audit: await count("SELECT COUNT(*) AS n FROM audit_log WHERE target = ?", `user:${userId}`),
  notifications: await count("SELECT COUNT(*) AS n FROM notifications WHERE user_id = ?", userId),
});
const NONE = { accounts: 0, ledger: 0, audit: 0, notifications: 0 };

async function listedUsers(): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const page: { status: number; body: { items: { userId: string }[]; nextCursor: string | null } } = await call(
      "GET",
      `/admin/users?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
      { token: await admin() },
    );
    expect(page.status).toBe(200);
    ids.push(...page.body.items.map((i) => i.userId));
    cursor = page.body.nextCursor;
  } while (cursor);
  return ids;
}

/** Whether the user's object was ever given a profile (its first call creates one). */
const hasProfile = (userId: string) =>
  runInDurableObject(env.USER_QUOTA.getByName(userId), (_i, state) => {
    const t = state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'profile'").one().n;
    return t > 0 && state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM profile").one().n > 0;
  });

/** Every admin write that names a user, with a body that would succeed. */
const WRITES = (planId: string) => [
  { name: "quota update", method: "PUT", path: (u: string) => `/quotas/user/${u}`, body: { tier: "pro" } },
  { name: "quota renew", method: "POST", path: (u: string) => `/quotas/renew/${u}`, body: { extensionDays: 5 } },
  { name: "pricing plan", method: "PUT", path: (u: string) => `/admin/billing/users/${u}/plan`, body: { pricingPlanId: planId } },
  {
    name: "adjustment",
    method: "POST",
    path: (u: string) => `/admin/billing/users/${u}/adjustments`,
    body: { amountMinor: 250, adjustmentId: uid("adj"), memo: "goodwill" },
  },
  {
    name: "admin top-up",
    method: "POST",
    path: (u: string) => `/billing/users/${u}/top-ups`,
    body: { amountMinor: 1000, paymentId: uid("pay") },
  },
];

async function aPlan(): Promise<string> {
  const planId = uid("plan");
  expect(
    (await call("PUT", `/admin/billing/pricing-plans/${planId}`, { token: await admin(), body: pricingPlanBody(planId) })).status,
  ).toBe(200);
  return planId;
}

describe("admin writes naming a user", () => {
  it("a mistyped id is 404 USER_NOT_FOUND on every one, and nothing is created: not in D1, not listed, no profile", async () => {
    const planId = await aPlan();
    const token = await admin();
    const typo = uid("alcie");
    for (const w of WRITES(planId)) {
      for (const query of ["", "?create=false"]) {
        const r = await call(w.method, `${w.path(typo)}${query}`, { token, body: w.body });
        expect(r.status, `${w.name}${query}`).toBe(404);
        expect(r.body.error).toMatchObject({ code: "USER_NOT_FOUND", details: { userId: typo } });
        expect(r.body.error.message).toContain("?create=true");
      }
    }
    expect(await traces(typo)).toEqual(NONE);
    expect(await listedUsers()).not.toContain(typo);
    expect(await hasProfile(typo)).toBe(false);
  });

  it("a bad create is 400 and creates nothing", async () => {
    const typo = uid("alcie");
    const r = await call("PUT", `/quotas/user/${typo}?create=yes`, { token: await admin(), body: { tier: "pro" } });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe("VALIDATION_FAILED");
    expect(await traces(typo)).toEqual(NONE);
  });

  it("?create=true creates the user: the account opens with its starting credit, the user is listed, the audit says created", async () => {
    const planId = await aPlan();
    const token = await admin();
    for (const w of WRITES(planId)) {
      const user = uid(`new-${w.name.replace(/ /g, "-")}`);
      const r = await call(w.method, `${w.path(user)}?create=true`, { token, body: w.body });
      expect(r.status, w.name).toBeLessThan(300);
      expect(await count("SELECT COUNT(*) AS n FROM accounts WHERE user_id = ?", user), w.name).toBe(1);
      expect(await count("SELECT COUNT(*) AS n FROM ledger WHERE entry_id = ?", `starting_credit:${user}`), w.name).toBe(1);
      const audit = await one<{ change: string }>("SELECT change FROM audit_log WHERE target = ?", `user:${user}`);
      expect(JSON.parse(audit!.change), w.name).toMatchObject({ created: true });
      expect(await listedUsers(), w.name).toContain(user);
    }
    // The quota set at creation is the user's when they come.
    const user = uid("onboarded");
    const set = await call("PUT", `/quotas/user/${user}?create=true`, { token, body: { tier: "enterprise" } });
    expect(set.body).toMatchObject({ userId: user, tier: "enterprise" });
    expect((await call("GET", `/quotas/user/${user}`, { token: await tokenFor(user) })).body.tier).toBe("enterprise");
  });

  it("an existing user is changed as before, with or without create, and their audit rows carry no `created`", async () => {
    const planId = await aPlan();
    const token = await admin();
    const user = await seenUser(uid("known"));
    const before = (await one<{ balance: number }>("SELECT balance FROM accounts WHERE user_id = ?", user))!.balance;
    for (const w of WRITES(planId)) {
      const r = await call(w.method, w.path(user), { token, body: w.body });
      expect(r.status, w.name).toBeLessThan(300);
    }
    const q = await call("GET", `/quotas/user/${user}`, { token });
    expect(q.body.tier).toBe("pro");
    const account = await one<{ plan_id: string; balance: number }>("SELECT plan_id, balance FROM accounts WHERE user_id = ?", user);
    expect(account).toEqual({ plan_id: planId, balance: before + 250 + 1000 });
    const again = await call("PUT", `/quotas/user/${user}?create=true`, { token, body: { tier: "basic" } });
    expect(again.body.tier).toBe("basic");
    expect(await count("SELECT COUNT(*) AS n FROM accounts WHERE user_id = ?", user)).toBe(1);
    const rows = await env.DB.prepare("SELECT change FROM audit_log WHERE target = ?").bind(`user:${user}`).all<{ change: string }>();
    expect(rows.results).toHaveLength(6);
    for (const r of rows.results) expect(JSON.parse(r.change)).not.toHaveProperty("created");
  });

  it("the payment service's top-up still opens the account of a user it has not seen (a payment may come first)", async () => {
    const payer = uid("payer");
    const r = await call("POST", `/billing/users/${payer}/top-ups`, {
      service: SERVICE_TOKEN,
      body: { amountMinor: 2000, paymentId: uid("pay") },
    });
    expect(r.status).toBe(201);
    expect(await count("SELECT COUNT(*) AS n FROM accounts WHERE user_id = ?", payer)).toBe(1);
    expect(await listedUsers()).toContain(payer);
  });

  it("an unknown pricing plan is 404 PLAN_NOT_FOUND before the user is looked at, and opens no account even with create", async () => {
    const typo = uid("alcie");
    const r = await call("PUT", `/admin/billing/users/${typo}/plan?create=true`, {
      token: await admin(),
      body: { pricingPlanId: uid("no-plan") },
    });
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe("PLAN_NOT_FOUND");
    expect(await traces(typo)).toEqual(NONE);
  });
});
