/**
 * The operators' feed: who may open it, and the operator events it carries (low balance,
 * failed usage, reconciliation differences), through real sockets, the real queue and D1.
 * Failures are injected in D1 itself (a trigger), not mocked.
 */
import { env } from "cloudflare:workers";
import { sign } from "hono/jwt";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { deliverNotifications } from "../src/billing/notify";
import { mintTicket } from "../src/feed/tickets";
import type { Envelope } from "../src/feed/protocol";
import { admin, call, registerDevice, sleep, tokenFor, uid, until } from "./helpers";
import { events, rawFeed, ticket, type RawFeed } from "./feed-helpers";

// The consumer logs each refused usage write (expected here); keep the run's output readable.
let quiet: { mockRestore(): void } | undefined;
beforeAll(() => {
  const error = console.error.bind(console);
  quiet = vi.spyOn(console, "error").mockImplementation((...args: unknown[]) => {
    if (typeof args[0] === "string" && args[0].includes('"usage write failed"')) return;
    error(...args);
  });
});
afterAll(() => quiet?.mockRestore());

const adminSocket = async () => rawFeed(`/ws/admin?ticket=${encodeURIComponent(await ticket(await admin(), { feed: "admin" }))}`);
const userSocket = async (token: string) => rawFeed(`/ws?ticket=${encodeURIComponent(await ticket(token))}`);

/** Logged frames of `type` that `pick` accepts (the admin feed is shared by every test here). */
const framesOf = (f: RawFeed, type: string, pick: (e: Envelope<any>) => boolean): Envelope<any>[] =>
  f.frames.filter((e) => e.seq !== null && e.type === type && pick(e));

async function refused(path: string): Promise<{ code: number; error: unknown }> {
  const f = await rawFeed(path);
  const closed = await f.closed;
  return {
    code: closed.code,
    error: f.frames[0]?.type === "feed.error" ? (f.frames[0].data as { code: string }).code : null,
  };
}

describe("who may open the admin feed", () => {
  it("a user cannot get an admin ticket; user, device, forged, garbage, expired, reused or missing tickets close with 4401", async () => {
    const user = uid("nosy");
    const userToken = await tokenFor(user);
    const noTicket = await call("POST", "/ws/ticket", { token: userToken, body: { feed: "admin" } });
    expect(noTicket.status).toBe(403);
    expect(noTicket.body).toEqual({ error: { code: "FORBIDDEN", message: expect.any(String) } });

    const exp = Math.floor(Date.now() / 1000) + 60;
    const claims = { sub: "root-admin", role: "admin", scope: "admin", jti: "f".repeat(32), exp, typ: "ws-ticket" };
    const expired = await mintTicket(env, { userId: "root-admin", role: "admin" }, "admin", Date.now() - 120_000);
    const cases: [string, string][] = [
      ["a user-feed ticket", await ticket(userToken)],
      ["a device-feed ticket of an admin", (await mintTicket(env, { userId: "root-admin", role: "admin" }, "device:dev-x")).ticket],
      ["signed with another key", await sign(claims, "not-the-secret-0123456789abcdef", "HS256")],
      // Bearer tokens are signed with JWT_SECRET itself; tickets with a key derived from it.
      ["signed with the bearer key", await sign(claims, env.JWT_SECRET, "HS256")],
      ["an admin bearer token", await admin()],
      ["garbage", "not-a-ticket"],
      ["expired", expired.ticket],
    ];
    for (const [label, t] of cases) {
      expect(await refused(`/ws/admin?ticket=${encodeURIComponent(t)}`), label).toEqual({
        code: 4401,
        error: "TICKET_INVALID",
      });
    }
    expect(await refused("/ws/admin")).toEqual({ code: 4401, error: "TICKET_INVALID" });
    expect(await refused("/ws/admin?ticket=")).toEqual({ code: 4401, error: "TICKET_INVALID" });

    // Single use: the second socket on the same admin ticket is refused.
    const t = await ticket(await admin(), { feed: "admin" });
    const first = await rawFeed(`/ws/admin?ticket=${encodeURIComponent(t)}`);
    await until(async () => first.frames.length > 0);
    expect(first.frames[0]).toMatchObject({ seq: null, type: "feed.hello", data: { feed: "admin" } });
    expect(await refused(`/ws/admin?ticket=${encodeURIComponent(t)}`)).toEqual({ code: 4401, error: "TICKET_USED" });
    first.ws.close(1000);
  });

  it("a validly signed admin-scope ticket of a non-admin is refused with 4403 (the role is checked again)", async () => {
    // The ticket route never issues this; the upgrade must not rely on that.
    const t = await mintTicket(env, { userId: uid("nosy"), role: "user" }, "admin");
    expect(await refused(`/ws/admin?ticket=${encodeURIComponent(t.ticket)}`)).toEqual({
      code: 4403,
      error: "FORBIDDEN",
    });
  });

  it("a plain GET gets 426 in the error shape", async () => {
    for (const path of ["/ws/admin", `/ws/admin?ticket=${encodeURIComponent(await ticket(await admin(), { feed: "admin" }))}`]) {
      const r = await call("GET", path, { token: await admin() });
      expect(r.status).toBe(426);
      expect(r.res.headers.get("content-type")).toMatch(/^application\/json/);
      expect(r.body).toEqual({ error: { code: "UPGRADE_REQUIRED", message: expect.any(String) } });
    }
  });

  it("GET /admin/events is for admins only and checks its query", async () => {
    const user = await tokenFor(uid("nosy"));
    expect((await call("GET", "/admin/events", { token: user })).status).toBe(403);
    expect((await call("GET", "/admin/events")).status).toBe(401);
    expect((await call("GET", "/admin/events", { service: "test-service-token-0123456789abcdef" })).status).toBe(403);
    for (const q of ["since=-1", "since=abc", "since=1.5", "since=", "limit=0", "limit=201", "userId=x", "foo=1"]) {
      const r = await call("GET", `/admin/events?${q}`, { token: await admin() });
      expect(r.status, q).toBe(400);
      expect(r.body.error.code, q).toBe("VALIDATION_FAILED");
    }
  });
});

describe("operator events on the admin feed", () => {
  it("a low balance reaches the admin socket and the user's socket once each, also when delivered again", async () => {
    const user = uid("low");
    const token = await tokenFor(user);
    const ops = await adminSocket();
    const mine = await userSocket(token);
    // 1000 starting credit, threshold 200: −900 crosses it.
    const adj = await call("POST", `/admin/billing/users/${user}/adjustments?create=true`, {
      token: await admin(),
      body: { amountMinor: -900, adjustmentId: uid("adj"), memo: "test: below the threshold" },
    });
    expect(adj.status, JSON.stringify(adj.body)).toBe(201);
    expect(adj.body.balanceMinor).toBe(100);
    // An adjustment leaves its event to the cron's delivery step; run that step now.
    await deliverNotifications(env, [user]);
    const seen = await until(async () => {
      const e = framesOf(ops, "billing.low_balance", (x) => x.userId === user);
      return e.length > 0 && e;
    });
    expect(seen[0]).toMatchObject({
      type: "billing.low_balance",
      userId: user,
      data: { userId: user, balance: 100, threshold: 200, currency: "USD" },
    });
    const own = await events(mine.frames, 1);
    expect(own.map((e) => e.type)).toEqual(["billing.low_balance"]);
    expect(own[0]!.data).toMatchObject({ balance: 100, threshold: 200 });

    // The "delivered" mark is lost (as if D1 failed after the feeds took it): the next run sends it again.
    const row = await env.DB.prepare("SELECT key FROM notifications WHERE user_id = ? AND type = 'billing.low_balance'")
      .bind(user)
      .first<{ key: string }>();
    await env.DB.prepare("UPDATE notifications SET delivered_at = NULL WHERE key = ?").bind(row!.key).run();
    expect(await deliverNotifications(env, [user])).toEqual({ delivered: 1, failed: 0 });
    await call("PUT", `/quotas/user/${user}`, { token: await admin(), body: { limits: { maxDevices: 3 } } }); // a marker after it
    await events(mine.frames, 2);
    await sleep(200);
    expect(framesOf(ops, "billing.low_balance", (x) => x.userId === user)).toHaveLength(1);
    expect(mine.frames.filter((e) => e.seq !== null).map((e) => e.type)).toEqual(["billing.low_balance", "quota.updated"]);
    const history = await call("GET", "/admin/events?limit=200", { token: await admin() });
    expect(history.status).toBe(200);
    expect(history.body.events.filter((e: Envelope) => e.type === "billing.low_balance" && e.userId === user)).toHaveLength(1);
    ops.ws.close(1000);
    mine.ws.close(1000);
  });

  it(
    "a usage record D1 keeps refusing ends in the dead-letter store and on the admin socket once; " +
      "reconciliation then reports and heals it",
    async () => {
      const user = uid("lost");
      const token = await tokenFor(user);
      const pool = uid("ops-pool");
      await registerDevice(pool);
      const ops = await adminSocket();
      const mine = await userSocket(token);
      const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 5 } });
      expect(a.status, JSON.stringify(a.body)).toBe(201);
      const allocationId: string = a.body.allocationId;
      await env.DB.exec(
        `CREATE TRIGGER ops_refuse_usage BEFORE INSERT ON usage_records WHEN NEW.allocation_id = '${allocationId}' BEGIN ` +
          `SELECT RAISE(ABORT, 'injected: usage write'); END`,
      );
      try {
        expect((await call("POST", "/scheduler/devices/release", { token, body: { deviceId: a.body.deviceId } })).status).toBe(200);
        // The queue retries (no delay in tests), then the dead-letter consumer keeps it and tells operators.
        const failed = await until(
          async () => {
            const e = framesOf(ops, "billing.usage_failed", (x) => x.data.allocationId === allocationId);
            return e.length > 0 && e;
          },
          60_000,
          100,
        );
        expect(failed[0]).toMatchObject({
          userId: user,
          data: {
            allocationId,
            userId: user,
            deviceId: a.body.deviceId,
            status: "failed",
            error: "usage queue retries exhausted",
          },
        });
        const kept = await env.DB.prepare("SELECT status FROM failed_usage WHERE allocation_id = ?")
          .bind(allocationId)
          .first<{ status: string }>();
        expect(kept).toEqual({ status: "failed" });
      } finally {
        await env.DB.exec("DROP TRIGGER IF EXISTS ops_refuse_usage");
      }

      const reconcile = async (heal: boolean) =>
        call("POST", "/admin/billing/reconcile", {
          token: await admin(),
          body: { userId: user, from: "2000-01-01T00:00:00Z", to: new Date(Date.now() + 60_000).toISOString(), heal },
        });
      const diffsFor = () => framesOf(ops, "billing.reconcile_differences", (x) => JSON.stringify(x.data.sample).includes(allocationId));
      // A dry run reports it; the same dry run again is no news.
      for (let i = 0; i < 2; i++) {
        const dry = await reconcile(false);
        expect(dry.body).toMatchObject({ missingUsage: 1, healed: 0, stillMissing: 1 });
      }
      const dryEvent = await until(async () => {
        const e = diffsFor();
        return e.length > 0 && e;
      });
      expect(dryEvent[0]).toMatchObject({
        userId: "",
        data: { differences: 1, healed: 0, sample: [{ userId: user, missingUsage: [allocationId], stillMissing: 1 }] },
      });
      expect(Date.parse(dryEvent[0]!.data.from)).toBe(Date.parse("2000-01-01T00:00:00Z"));
      // Healing it is news; a run after that finds nothing and says nothing.
      expect((await reconcile(true)).body).toMatchObject({
        missingUsage: 1,
        healed: 1,
        stillMissing: 0,
        resolvedDeadLetters: 1,
      });
      const healed = await until(async () => {
        const e = diffsFor();
        return e.length > 1 && e;
      });
      expect(healed[1]!.data).toMatchObject({ differences: 1, healed: 1, sample: [{ userId: user, stillMissing: 0 }] });
      expect((await reconcile(true)).body).toMatchObject({
        missingUsage: 0,
        missingCharges: 0,
        mismatched: 0,
        balanceDrift: 0,
      });
      await sleep(300);
      expect(diffsFor()).toHaveLength(2);
      expect(framesOf(ops, "billing.usage_failed", (x) => x.data.allocationId === allocationId)).toHaveLength(1);

      // Operator events never reach the user's own feed.
      const own = mine.frames.filter((e) => e.seq !== null).map((e) => e.type);
      expect(own).toContain("device.released");
      expect(own.filter((t) => t === "billing.usage_failed" || t === "billing.reconcile_differences")).toEqual([]);

      // The history holds what the socket saw, in order, and pages with nextSince.
      const all = await call("GET", "/admin/events?since=0&limit=200", { token: await admin() });
      const mineInHistory = all.body.events.filter(
        (e: Envelope<any>) => e.data?.allocationId === allocationId || JSON.stringify(e.data?.sample ?? "").includes(allocationId),
      );
      expect(mineInHistory.map((e: Envelope) => e.type)).toEqual([
        "billing.usage_failed",
        "billing.reconcile_differences",
        "billing.reconcile_differences",
      ]);
      const firstSeq = mineInHistory[0].seq as number;
      const page = await call("GET", `/admin/events?since=${firstSeq - 1}&limit=1`, { token: await admin() });
      expect(page.body.events.map((e: Envelope) => e.seq)).toEqual([firstSeq]);
      expect(page.body.nextSince).toBe(firstSeq);
      const end = await call("GET", `/admin/events?since=${page.body.lastSeq}`, { token: await admin() });
      expect(end.body).toMatchObject({ events: [], nextSince: null });
      ops.ws.close(1000);
      mine.ws.close(1000);
    },
  );

  it("a malformed message on the usage queue is kept as invalid and shown to operators once", async () => {
    const ops = await adminSocket();
    const allocationId = uid("junk-ops");
    await env.USAGE_QUEUE.send({ allocationId, userId: "someone", note: "not a usage record" } as never, {
      contentType: "json",
    });
    const seen = await until(
      async () => {
        const e = framesOf(ops, "billing.usage_failed", (x) => x.data.allocationId === allocationId);
        return e.length > 0 && e;
      },
      15_000,
      50,
    );
    expect(seen[0]!.data).toMatchObject({
      allocationId,
      userId: "someone",
      deviceId: "",
      status: "invalid",
      error: expect.stringMatching(/^invalid usage record/),
    });
    await sleep(300);
    expect(framesOf(ops, "billing.usage_failed", (x) => x.data.allocationId === allocationId)).toHaveLength(1);
    ops.ws.close(1000);
  });
});
