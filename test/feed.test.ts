/** The user feed: tickets, live events, resume, close codes. */
import { describe, expect, it } from "vitest";
import { call, registerDevice, sleep, tokenFor, uid, until } from "./helpers";
import { events, feedClient, rawFeed, ticket } from "./feed-helpers";
import type { FeedEvent } from "../src/feed/protocol";
import { visible, type Watcher } from "../src/objects/feed";

describe("user feed", () => {
  it("delivers allocation, quota and release events live, in the envelope", async () => {
    const user = uid("u");
    const token = await tokenFor(user);
    const pool = uid("pool");
    await registerDevice(pool);
    const f = await rawFeed(`/ws?ticket=${encodeURIComponent(await ticket(token))}`);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 5 } });
    expect(a.status).toBe(201);
    await call("POST", "/scheduler/devices/release", { token, body: { deviceId: a.body.deviceId } });
    // The first two events; the charge (billing.charged) follows the release once the queue books it.
    const got = (await events(f.frames, 2)).slice(0, 2);
    expect(f.frames[0]!.type).toBe("feed.hello");
    expect(got.map((e) => e.type)).toEqual(["device.allocated", "device.released"]);
    for (const e of got) {
      expect(e.userId).toBe(user);
      expect(Object.keys(e).sort()).toEqual(["data", "seq", "timestamp", "type", "userId"]);
    }
    expect(got[1]!.seq).toBe(got[0]!.seq! + 1);
    f.ws.close(1000);
  });

  it("a ticket request with no body is for the caller's own feed; the reply says where to go", async () => {
    const user = uid("u");
    const r = await call("POST", "/ws/ticket", { token: await tokenFor(user) });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({
      feed: "user",
      url: expect.stringMatching(/^\/ws\?ticket=/),
      expiresAt: expect.any(String),
    });
    const ttl = Date.parse(r.body.expiresAt) - Date.now();
    expect(ttl).toBeGreaterThan(50_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
    const f = await rawFeed(r.body.url);
    await until(async () => f.frames.length > 0);
    expect(f.frames[0]).toMatchObject({
      seq: null,
      type: "feed.hello",
      userId: user,
      data: { feed: "user", historyLimit: 1000, missed: null },
    });
    f.ws.close(1000);
  });

  it("a ticket opens one socket once", async () => {
    const token = await tokenFor(uid("u"));
    const t = await ticket(token);
    const first = await rawFeed(`/ws?ticket=${encodeURIComponent(t)}`);
    await until(async () => first.frames.length > 0);
    expect(first.frames[0]!.type).toBe("feed.hello");
    const second = await rawFeed(`/ws?ticket=${encodeURIComponent(t)}`);
    expect((await second.closed).code).toBe(4401);
    expect(second.frames[0]).toMatchObject({ type: "feed.error", data: { code: "TICKET_USED" } });
    first.ws.close(1000);
  });

  it("the typed client resumes after a drop: missed events once, in order", async () => {
    const user = uid("u");
    const token = await tokenFor(user);
    const seen: FeedEvent[] = [];
    const client = feedClient(token, { since: 0 });
    client.onEvent((e) => seen.push(e));
    await client.start();
    await call("PUT", `/quotas/user/${user}?create=true`, {
      token: await tokenFor("root", "admin"),
      body: { limits: { maxDevices: 3 } },
    });
    await until(async () => seen.length === 1);
    client.drop();
    for (let i = 0; i < 5; i++)
      await call("POST", `/quotas/renew/${user}?create=true`, {
        token: await tokenFor("root", "admin"),
        body: { extensionDays: i + 1 },
      });
    await client.nextHello();
    await until(async () => seen.length === 6);
    await sleep(100);
    expect(seen.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(seen.slice(1).map((e) => (e.data as { extensionDays: number }).extensionDays)).toEqual([1, 2, 3, 4, 5]);
    client.close();
  });
});

describe("the per-frame filter (second line of invariant 6, behind per-user objects and closed device sockets)", () => {
  const w = (userId: string, role: "user" | "admin", feed: Watcher["feed"]): Watcher => ({
    userId,
    role,
    feed,
    connectedAt: 0,
  });
  it("a user socket sees only its own user's events, on every kind of feed", () => {
    for (const feed of ["user", "device", "admin"] as const) {
      expect(visible("alice", w("alice", "user", feed))).toBe(true);
      expect(visible("bob", w("alice", "user", feed))).toBe(false);
      expect(visible("", w("alice", "user", feed))).toBe(false);
      expect(visible("alice ", w("alice", "user", feed))).toBe(false);
    }
  });
  it("an admin sees everything on device and admin feeds, but on a user feed only as that user", () => {
    expect(visible("bob", w("root", "admin", "device"))).toBe(true);
    expect(visible("", w("root", "admin", "admin"))).toBe(true);
    expect(visible("bob", w("root", "admin", "user"))).toBe(false);
    expect(visible("root", w("root", "admin", "user"))).toBe(true);
  });
  it("an admin watching a user's feed sees that user's events only; `watching` on a user's socket gives nothing", () => {
    const watching = (role: "user" | "admin", who: string): Watcher => ({ ...w("root", role, "user"), watching: who });
    expect(visible("bob", watching("admin", "bob"))).toBe(true);
    expect(visible("carol", watching("admin", "bob"))).toBe(false);
    expect(visible("root", watching("admin", "bob"))).toBe(false);
    // A forged attachment on a user's socket is still only that user's own view.
    expect(visible("bob", watching("user", "bob"))).toBe(false);
    expect(visible("root", watching("user", "bob"))).toBe(true);
  });
});
