/**
 * An admin watching another user's feed (`POST /ws/ticket {feed: "user", userId}` →
 * `/ws/users/{userId}`): they get that user's events live, as the user does; nobody else may
 * name a user; a ticket opens only the feed it names; and an admin's socket is no presence of
 * the user's (it neither holds off an idle release nor restarts its clock when it closes).
 */
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, sleep, tokenFor, uid, until } from "./helpers";
import { events, feedClient, rawFeed, ticket, type RawFeed } from "./feed-helpers";

const GRACE_MS = 2000;

/** A user with an account (a balance read opens one), and their token. */
async function member(prefix: string): Promise<{ userId: string; token: string }> {
  const userId = uid(prefix);
  const token = await tokenFor(userId);
  expect((await call("GET", `/billing/users/${userId}/balance`, { token })).status).toBe(200);
  return { userId, token };
}

async function watch(userId: string): Promise<RawFeed> {
  const r = await call("POST", "/ws/ticket", { token: await admin(), body: { feed: "user", userId } });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  expect(r.body.url).toMatch(new RegExp(`^/ws/users/${userId}\\?ticket=`));
  const f = await rawFeed(r.body.url);
  await until(async () => f.frames.length > 0);
  return f;
}

const allocate = (token: string, body: Record<string, unknown>) => call("POST", "/scheduler/devices/allocate", { token, body });

describe.concurrent("watching a user's feed", () => {
  it("an admin gets the user's events live, the same frames the user gets, and nobody else's", async ({ expect }) => {
    const pool = uid("watch");
    await registerDevice(pool);
    const [alice, bob] = [await member("alice"), await member("bob")];
    const mine = feedClient(alice.token);
    const got: string[] = [];
    mine.on("device.allocated", (e) => got.push(`${e.seq}`));
    await mine.start();
    const watcher = await watch(alice.userId);
    expect(watcher.frames[0]).toMatchObject({ type: "feed.hello", userId: alice.userId, data: { feed: "user" } });

    const a = await allocate(alice.token, { pool, durationSeconds: 60 });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    // Bob's doings are not on Alice's feed, watched or not.
    await call("PUT", `/quotas/user/${bob.userId}`, { token: await admin(), body: { plan: "pro" } });
    const [seen] = await events(watcher.frames, 1);
    expect(seen).toMatchObject({ type: "device.allocated", userId: alice.userId, data: { allocationId: a.body.allocationId } });
    await until(async () => got.length > 0);
    expect(got).toEqual([`${seen!.seq}`]);
    const rel = await call("POST", "/scheduler/devices/release", { token: alice.token, body: { deviceId: a.body.deviceId } });
    expect(rel.status, JSON.stringify(rel.body)).toBe(200);
    const after = await events(watcher.frames, 2);
    expect(after.map((e) => e.type)).toEqual(["device.allocated", "device.released"]);
    expect(watcher.frames.every((f) => f.userId === alice.userId)).toBe(true);

    // The typed client takes the same option, and resumes with `since` like any feed.
    const typed = feedClient(await admin(), { userId: alice.userId, since: 0 });
    const replayed: string[] = [];
    typed.on("device.released", (e) => replayed.push(e.data.allocationId));
    await typed.start();
    await until(async () => replayed.length > 0);
    expect(replayed).toEqual([a.body.allocationId]);
    typed.close();
    mine.close();
    watcher.ws.close(1000);
  });

  it("only admins name a user; a ticket opens only the feed it names; an unknown user is 404", async ({ expect }) => {
    const [alice, bob] = [await member("named"), await member("other")];
    const refused = await call("POST", "/ws/ticket", { token: bob.token, body: { feed: "user", userId: alice.userId } });
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe("FORBIDDEN");
    expect(refused.body.error.message).toMatch(/another user's feed/i);
    // Naming yourself is your own feed.
    const own = await call("POST", "/ws/ticket", { token: bob.token, body: { feed: "user", userId: bob.userId } });
    expect(own.status).toBe(201);
    expect(own.body.url).toMatch(/^\/ws\?ticket=/);
    const wrongFeed = await call("POST", "/ws/ticket", { token: await admin(), body: { feed: "admin", userId: alice.userId } });
    expect(wrongFeed.status).toBe(400);
    expect(wrongFeed.body.error.message).toContain(`userId goes with feed "user" only`);
    const unknown = await call("POST", "/ws/ticket", { token: await admin(), body: { feed: "user", userId: uid("nobody") } });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe("USER_NOT_FOUND");

    // A user's own ticket does not open someone's watched feed; an admin's ticket for Alice does not open Bob's.
    const bobs = await rawFeed(`/ws/users/${alice.userId}?ticket=${encodeURIComponent(await ticket(bob.token))}`);
    expect((await bobs.closed).code).toBe(4401);
    const forAlice = await ticket(await admin(), { feed: "user", userId: alice.userId });
    const crossed = await rawFeed(`/ws/users/${bob.userId}?ticket=${encodeURIComponent(forAlice)}`);
    expect((await crossed.closed).code).toBe(4401);
    expect(crossed.frames[0]).toMatchObject({ type: "feed.error", data: { code: "TICKET_INVALID" } });
    // The same ticket still opens Alice's, once.
    const first = await rawFeed(`/ws/users/${alice.userId}?ticket=${encodeURIComponent(forAlice)}`);
    await until(async () => first.frames.length > 0);
    expect(first.frames[0]).toMatchObject({ type: "feed.hello", userId: alice.userId });
    const again = await rawFeed(`/ws/users/${alice.userId}?ticket=${encodeURIComponent(forAlice)}`);
    expect((await again.closed).code).toBe(4401);
    first.ws.close(1000);
  });

  it("an admin's socket is not the user's presence: idle release runs from the user's last close", async ({ expect }) => {
    const pool = uid("watch-idle");
    await registerDevice(pool);
    const u = await member("watched");
    const view = async (id: string) => (await call("GET", `/scheduler/allocations/${id}`, { token: u.token })).body;
    const own = await rawFeed(`/ws?ticket=${encodeURIComponent(await ticket(u.token))}`);
    await until(async () => own.frames.length > 0);
    const a = await allocate(u.token, { pool, durationSeconds: 60, idleReleaseSeconds: 2 });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    const watcher = await watch(u.userId);

    own.ws.close(1000);
    await own.closed;
    const gone = Date.now();
    // The admin keeps watching past half the grace, then goes: the clock is the user's, not restarted.
    await sleep(GRACE_MS * 0.75);
    expect((await view(a.body.allocationId)).status).toBe("active");
    watcher.ws.close(1000);
    await watcher.closed;
    const v = await until(
      async () => {
        const x = await view(a.body.allocationId);
        return x.status === "released" && x;
      },
      8000,
      25,
    );
    expect(v.reason).toBe("idle");
    expect(Date.parse(v.releasedAt) - gone).toBeGreaterThanOrEqual(GRACE_MS - 50);
    // Had the admin's close restarted it, the release would come GRACE_MS after that close (≥ 1.75 × grace).
    expect(Date.parse(v.releasedAt) - gone).toBeLessThan(GRACE_MS * 1.6);
  });

  it("with only an admin watching, an idle-release allocation is released after the grace", async ({ expect }) => {
    const pool = uid("watch-only");
    await registerDevice(pool);
    const u = await member("absent");
    const a = await allocate(u.token, { pool, durationSeconds: 60, idleReleaseSeconds: 2 });
    expect(a.status).toBe(201);
    const watcher = await watch(u.userId);
    const v = await until(
      async () => {
        const x = (await call("GET", `/scheduler/allocations/${a.body.allocationId}`, { token: u.token })).body;
        return x.status === "released" && x;
      },
      8000,
      25,
    );
    expect(v.reason).toBe("idle");
    // The watcher saw it go.
    const seen = await events(watcher.frames, 1);
    expect(seen.map((e) => e.type)).toContain("device.released");
    watcher.ws.close(1000);
  });
});
