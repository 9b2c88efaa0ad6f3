/**
 * Billing unavailable, failing closed (BILLING_ALLOW_ON_ERROR = "false", the default and the
 * setting of this project): when D1 cannot be read, allocate and extend answer 503
 * BILLING_UNAVAILABLE and change nothing. A balance the user's object read within the last
 * BILLING.balanceReuseMs is still used (less what ended since), so only a user whose balance is not
 * known fresh is refused. D1 really fails: its `accounts` table is renamed away for the outage
 * and back afterwards (no mocks). The fail-open twin is
 * billing-unavailable.fail-open.test.ts; "allowed" and "refused for money" are in billing-flow.
 */
import { evictDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, tokenFor, uid, withBillingDown, withoutGrant } from "./helpers";

const quota = async (user: string, token: string) => (await call("GET", `/quotas/user/${user}`, { token })).body;
const allocations = async (token: string) => (await call("GET", "/scheduler/allocations?limit=200", { token })).body.items as any[];
const device = async (deviceId: string) => (await call("GET", `/admin/devices/${deviceId}`, { token: await admin() })).body;

describe("BILLING_ALLOW_ON_ERROR=false: an unreadable balance refuses and changes nothing", () => {
  it("the switch of this project is off", () => {
    expect(env.BILLING_ALLOW_ON_ERROR).toBe("false");
  });

  it("allocate: 503 BILLING_UNAVAILABLE, quota and allocations unchanged, the device stays free; works again after recovery", async () => {
    const pool = uid("down");
    const dev = await registerDevice(pool);
    const user = uid("closed");
    const token = await tokenFor(user);
    // The account exists before the outage (a first read opens it with its starting credit).
    expect((await call("GET", `/billing/users/${user}/balance`, { token })).body.balanceMinor).toBe(1000);
    const quotaBefore = await quota(user, token);
    const deviceBefore = await device(dev.deviceId);

    const refused = await withBillingDown(() =>
      call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 30 } }),
    );
    expect(refused.status, JSON.stringify(refused.body)).toBe(503);
    expect(refused.body.error.code).toBe("BILLING_UNAVAILABLE");
    expect(typeof refused.body.error.message).toBe("string");

    expect(await allocations(token)).toEqual([]);
    const quotaAfter = await quota(user, token);
    expect(quotaAfter.usage).toEqual(quotaBefore.usage);
    expect(quotaAfter.status).toBe(quotaBefore.status);
    // The device's claim ran beside the refused record and was given back: the device is as it
    // was, free, but its record was touched (`updatedAt`), as by any claim.
    const deviceAfter = await device(dev.deviceId);
    expect({ ...deviceAfter, updatedAt: null }).toEqual({ ...deviceBefore, updatedAt: null });
    const free = await call("GET", `/scheduler/devices/available?pool=${pool}`, { token });
    expect(free.body.items.map((d: any) => d.deviceId)).toEqual([dev.deviceId]);
    // Nothing was booked either.
    const ledger = await env.DB.prepare("SELECT kind FROM ledger WHERE user_id = ?").bind(user).all<{ kind: string }>();
    expect(ledger.results.map((r) => r.kind)).toEqual(["starting_credit"]);

    // D1 is back: the same request goes through, on that very device.
    const ok = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 30 } });
    expect(ok.status, JSON.stringify(ok.body)).toBe(201);
    expect(ok.body.deviceId).toBe(dev.deviceId);
    await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } });
  });

  it("allocate for a user with no account yet: 503 too, and no account is half-opened", async () => {
    const pool = uid("down-new");
    await registerDevice(pool);
    const user = uid("closed-new");
    const token = await tokenFor(user);
    const refused = await withBillingDown(() => call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 5 } }));
    expect(refused.status, JSON.stringify(refused.body)).toBe(503);
    expect(refused.body.error.code).toBe("BILLING_UNAVAILABLE");
    expect(await allocations(token)).toEqual([]);
    const rows = await env.DB.prepare("SELECT COUNT(*) AS n FROM ledger WHERE user_id = ?").bind(user).first<{ n: number }>();
    expect(rows!.n).toBe(0);
    const bal = await call("GET", `/billing/users/${user}/balance`, { token });
    expect(bal.body.balanceMinor).toBe(1000);
  });

  it(
    "extend: a balance read moments ago carries it through an outage; " +
      "not known fresh, 503 BILLING_UNAVAILABLE and nothing changes; works again after recovery",
    async () => {
      const pool = uid("down-ext");
      const dev = await registerDevice(pool);
      const user = uid("closed-ext");
      const token = await tokenFor(user);
      // Enterprise: no extend cooldown, so only billing decides here.
      expect((await call("PUT", `/quotas/user/${user}?create=true`, { token: await admin(), body: { tier: "enterprise" } })).status).toBe(
        200,
      );
      const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 30 } });
      expect(a.status, JSON.stringify(a.body)).toBe(201);
      const id = a.body.allocationId as string;
      // The allocation just read the balance: an extension during an outage uses it.
      const carried = await withBillingDown(() =>
        call("PUT", `/scheduler/allocations/${id}/extend`, { token, body: { additionalMinutes: 5 } }),
      );
      expect(carried.status, JSON.stringify(carried.body)).toBe(200);
      expect(carried.body).toMatchObject({ extendCount: 1, extendedMinutes: 5 });
      // The user's object restarts and remembers no balance: now the outage refuses.
      await evictDurableObject(env.USER_QUOTA.getByName(user));
      const before = (await call("GET", `/scheduler/allocations/${id}`, { token })).body;
      const quotaBefore = await quota(user, token);
      const deviceBefore = await device(dev.deviceId);

      const refused = await withBillingDown(() =>
        call("PUT", `/scheduler/allocations/${id}/extend`, { token, body: { additionalMinutes: 10 } }),
      );
      expect(refused.status, JSON.stringify(refused.body)).toBe(503);
      expect(refused.body.error.code).toBe("BILLING_UNAVAILABLE");

      const after = (await call("GET", `/scheduler/allocations/${id}`, { token })).body;
      // Each read signs a fresh access grant; the allocation itself is unchanged.
      expect(withoutGrant(after)).toEqual(withoutGrant(before));
      expect(after).toMatchObject({ status: "active", extendCount: 1, extendedMinutes: 5, durationMinutes: 35 });
      expect((await quota(user, token)).usage).toEqual(quotaBefore.usage);
      expect(await device(dev.deviceId)).toEqual(deviceBefore);

      // D1 is back: the extension goes through once.
      const ok = await call("PUT", `/scheduler/allocations/${id}/extend`, { token, body: { additionalMinutes: 10 } });
      expect(ok.status, JSON.stringify(ok.body)).toBe(200);
      expect(ok.body).toMatchObject({ extendCount: 2, extendedMinutes: 15 });
      expect(Date.parse(ok.body.expiresAt) - Date.parse(a.body.expiresAt)).toBe(15 * 60_000);
      await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } });
    },
  );
});
