/**
 * App events from other services (POST /api/internal/events): who may send them, what is
 * refused (and that nothing is written then), and that each event reaches the feed of the
 * user it names and no one else's, once per eventId. Real sockets through the real Worker.
 */
import { describe, expect, it } from "vitest";
import { admin, call, SERVICE_TOKEN, sleep, tokenFor, uid, until } from "./helpers";
import { events, rawFeed, ticket, type RawFeed } from "./feed-helpers";

const PATH = "/api/internal/events";
const send = (body: unknown) => call("POST", PATH, { service: SERVICE_TOKEN, body });
const open = async (userId: string) => rawFeed(`/ws?ticket=${encodeURIComponent(await ticket(await tokenFor(userId)))}`);
const logged = (f: RawFeed) => f.frames.filter((e) => e.seq !== null);

const installed = (userId: string, extra: Record<string, unknown> = {}) => ({
  type: "app.installed",
  data: {
    userId,
    appId: "com.example.notes",
    appName: "Notes",
    deviceId: "dev-app-1",
    deviceName: "Phone 1",
    version: "1.2.0",
    ...extra,
  },
});
const failed = (userId: string) => ({
  type: "app.install_failed",
  data: {
    userId,
    appId: "com.example.game",
    appName: "Game",
    deviceId: "dev-app-1",
    reason: "not enough storage\nfree 2 GB and retry",
    failedAt: "2026-11-20T10:00:00+02:00",
  },
});
const updated = (userId: string) => ({
  type: "app.updated",
  data: {
    userId,
    appId: "com.example.notes",
    appName: "Notes",
    deviceId: "dev-app-1",
    oldVersion: "1.2.0",
    newVersion: "1.3.0",
  },
});

function expectError(r: { status: number; body: any; res: Response }, status: number, code: string) {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.res.headers.get("content-type")).toMatch(/^application\/json/);
  expect(Object.keys(r.body)).toEqual(["error"]);
  expect(r.body.error.code).toBe(code);
  expect(typeof r.body.error.message).toBe("string");
}

describe("who may send app events", () => {
  it("no token, a wrong service token, a user's or an admin's bearer token are refused, and nothing reaches the feed", async () => {
    const user = uid("app-user");
    const f = await open(user);
    const body = { ...installed(user), eventId: uid("ev") };
    const userToken = await tokenFor(user);
    const probes: [Parameters<typeof call>[2], number, string][] = [
      [{ body }, 401, "UNAUTHORIZED"],
      [{ body, service: "wrong-service-token-0123456789abc" }, 401, "UNAUTHORIZED"],
      [{ body, headers: { "X-Service-Token": "" } }, 401, "UNAUTHORIZED"],
      [{ body, token: userToken }, 403, "FORBIDDEN"],
      [{ body, token: await admin() }, 403, "FORBIDDEN"],
      // Refused before the body is read: a stranger learns nothing from a 400.
      [{ body: { type: "nope" }, token: userToken }, 403, "FORBIDDEN"],
      [{ body: { type: "nope" } }, 401, "UNAUTHORIZED"],
    ];
    for (const [opts, status, code] of probes) expectError(await call("POST", PATH, opts), status, code);
    const history = await call("GET", "/scheduler/events", { token: userToken });
    expect(history.body.events).toEqual([]);
    // The first event the socket sees is the first one accepted: seq 1.
    const ok = await send(body);
    expect(ok.status, JSON.stringify(ok.body)).toBe(202);
    const got = await events(f.frames, 1);
    expect(got.map((e) => [e.seq, e.type])).toEqual([[1, "app.installed"]]);
    f.ws.close(1000);
  });
});

describe("bad app events", () => {
  it("each is refused with 4xx in the error shape and writes nothing", async () => {
    const user = uid("app-bad");
    const f = await open(user);
    const good = installed(user);
    const d = good.data;
    const long = (n: number) => "x".repeat(n);
    const cases: [string, unknown, string | null][] = [
      ["unknown type", { ...good, type: "app.deleted" }, "type"],
      ["a device event type", { ...good, type: "device.allocated" }, "type"],
      ["no type", { data: d }, "type"],
      ["no data", { type: "app.installed" }, "data"],
      ["data is not an object", { type: "app.installed", data: "x" }, "data"],
      ["missing userId", { ...good, data: { ...d, userId: undefined } }, "data.userId"],
      ["missing appId", { ...good, data: { ...d, appId: undefined } }, "data.appId"],
      ["missing version", { ...good, data: { ...d, version: undefined } }, "data.version"],
      ["install_failed without reason", { ...failed(user), data: { ...failed(user).data, reason: undefined } }, "data.reason"],
      ["updated without newVersion", { ...updated(user), data: { ...updated(user).data, newVersion: undefined } }, "data.newVersion"],
      ["userId is a number", { ...good, data: { ...d, userId: 42 } }, "data.userId"],
      ["userId is not an id", { ...good, data: { ...d, userId: "../admin" } }, "data.userId"],
      ["deviceId is not an id", { ...good, data: { ...d, deviceId: "a b" } }, "data.deviceId"],
      ["version is a number", { ...good, data: { ...d, version: 1.2 } }, "data.version"],
      ["empty appName", { ...good, data: { ...d, appName: "" } }, "data.appName"],
      ["control characters in appName", { ...good, data: { ...d, appName: "No\u0000tes" } }, "data.appName"],
      ["installedAt is not a time", { ...good, data: { ...d, installedAt: "yesterday" } }, "data.installedAt"],
      ["installedAt without a zone", { ...good, data: { ...d, installedAt: "2026-11-20T10:00:00" } }, "data.installedAt"],
      ["installedAt as a number", { ...good, data: { ...d, installedAt: 1_700_000_000_000 } }, "data.installedAt"],
      ["a field of another type (reason on installed)", { ...good, data: { ...d, reason: "x" } }, "data"],
      ["an extra field in data", { ...good, data: { ...d, admin: true } }, "data"],
      ["an extra field on the event", { ...good, userId: user }, ""],
      ["eventId with spaces", { ...good, eventId: "a b" }, "eventId"],
      ["eventId too long", { ...good, eventId: long(201) }, "eventId"],
      ["appName too long", { ...good, data: { ...d, appName: long(201) } }, "data.appName"],
      ["version too long", { ...good, data: { ...d, version: long(101) } }, "data.version"],
      ["reason too long", { ...failed(user), data: { ...failed(user).data, reason: long(1001) } }, "data.reason"],
      ["userId too long", { ...good, data: { ...d, userId: long(129) } }, "data.userId"],
      ["an empty batch", { events: [] }, "events"],
      ["101 events", { events: Array.from({ length: 101 }, () => good) }, "events"],
      ["a batch with one bad item", { events: [good, good, { ...good, data: { ...d, appId: 7 } }] }, "events.2.data.appId"],
      ["a batch with an extra key", { events: [good], more: 1 }, ""],
      ["events is not an array", { events: good }, "events"],
      ["an array at the top", [good], null],
      ["a string", "app.installed", null],
      ["null", null, null],
    ];
    for (const [label, body, path] of cases) {
      const r = await send(body);
      expectError(r, 400, "VALIDATION_FAILED");
      if (path !== null)
        expect(
          r.body.error.details.issues.map((i: { path: string }) => i.path),
          `${label}: ${JSON.stringify(r.body.error)}`,
        ).toContain(path);
    }
    // Not JSON at all, the wrong media type, and a body over the limit.
    expectError(
      await call("POST", PATH, {
        service: SERVICE_TOKEN,
        rawBody: "{not json",
        headers: { "Content-Type": "application/json" },
      }),
      400,
      "INVALID_JSON",
    );
    expectError(
      await call("POST", PATH, {
        service: SERVICE_TOKEN,
        rawBody: JSON.stringify(good),
        headers: { "Content-Type": "text/plain" },
      }),
      415,
      "UNSUPPORTED_MEDIA_TYPE",
    );
    expectError(await call("POST", PATH, { service: SERVICE_TOKEN }), 400, "VALIDATION_FAILED");
    expectError(
      await send({
        events: Array.from({ length: 100 }, () => ({ ...good, data: { ...d, appName: long(200) } })),
        pad: long(70_000),
      }),
      413,
      "PAYLOAD_TOO_LARGE",
    );

    // Nothing was written: the user's log is empty, and the socket's first event is the next good one.
    expect((await call("GET", "/scheduler/events", { token: await tokenFor(user) })).body.events).toEqual([]);
    expect((await send(good)).status).toBe(202);
    expect((await events(f.frames, 1)).map((e) => e.seq)).toEqual([1]);
    f.ws.close(1000);
  });
});

describe("delivery", () => {
  it("a valid event reaches exactly its user's open socket, in the envelope, with times as UTC ISO", async () => {
    const alice = uid("app-alice");
    const bob = uid("app-bob");
    const fa = await open(alice);
    const fb = await open(bob);
    const before = Date.now();
    const r = await send(installed(alice));
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.body).toEqual({
      accepted: 1,
      duplicates: 0,
      failed: 0,
      results: [{ eventId: null, type: "app.installed", userId: alice, seq: 1, duplicate: false }],
    });
    const [e] = await events(fa.frames, 1);
    expect(Object.keys(e!).sort()).toEqual(["data", "seq", "timestamp", "type", "userId"]);
    expect(e).toMatchObject({ seq: 1, type: "app.installed", userId: alice, data: { ...installed(alice).data } });
    // No time given: the time it was received.
    const at = Date.parse((e!.data as { installedAt: string }).installedAt);
    expect((e!.data as { installedAt: string }).installedAt).toBe(new Date(at).toISOString());
    expect(at).toBeGreaterThanOrEqual(before);
    expect(at).toBeLessThanOrEqual(Date.now());
    // A time with an offset is kept as the same instant in UTC.
    expect((await send(failed(bob))).status).toBe(202);
    const [eb] = await events(fb.frames, 1);
    expect(eb).toMatchObject({
      seq: 1,
      userId: bob,
      type: "app.install_failed",
      data: { failedAt: "2026-11-20T08:00:00.000Z", reason: "not enough storage\nfree 2 GB and retry" },
    });
    await sleep(200);
    // Bob's socket saw only Bob's event, Alice's only Alice's.
    expect(logged(fb).map((x) => x.userId)).toEqual([bob]);
    expect(logged(fa).map((x) => x.userId)).toEqual([alice]);
    fa.ws.close(1000);
    fb.ws.close(1000);
  });

  it("the same eventId sent twice is shown once (duplicate: true, same seq; the first send's data stands)", async () => {
    const user = uid("app-dup");
    const f = await open(user);
    const eventId = uid("app-ev");
    const first = await send({ ...updated(user), eventId });
    const again = await send({ ...updated(user), eventId, data: { ...updated(user).data, newVersion: "9.9.9" } });
    expect([first.status, again.status]).toEqual([202, 202]);
    expect(first.body.results[0]).toEqual({ eventId, type: "app.updated", userId: user, seq: 1, duplicate: false });
    expect(again.body).toEqual({
      accepted: 0,
      duplicates: 1,
      failed: 0,
      results: [{ eventId, type: "app.updated", userId: user, seq: 1, duplicate: true }],
    });
    // A marker after both: the socket then holds exactly one copy.
    expect((await send(installed(user))).body.results[0].seq).toBe(2);
    const got = await events(f.frames, 2);
    await sleep(200);
    expect(logged(f).map((e) => [e.seq, e.type])).toEqual([
      [1, "app.updated"],
      [2, "app.installed"],
    ]);
    expect((got[0]!.data as { newVersion: string }).newVersion).toBe("1.3.0");
    // The feed's history agrees.
    const history = await call("GET", "/scheduler/events", { token: await tokenFor(user) });
    expect(history.body.events.map((e: { type: string }) => e.type)).toEqual(["app.updated", "app.installed"]);
    f.ws.close(1000);
  });

  it("a batch with a mix reports per item, in order; each user's socket gets its own events in order", async () => {
    const alice = uid("app-mix-a");
    const bob = uid("app-mix-b");
    const fa = await open(alice);
    const fb = await open(bob);
    const seen = uid("app-ev");
    expect((await send({ ...installed(alice), eventId: seen })).status).toBe(202);
    const fresh = uid("app-ev");
    const batch = {
      events: [
        { ...updated(alice), eventId: fresh },
        { ...failed(bob), eventId: uid("app-ev") },
        { ...installed(alice), eventId: seen },
        installed(bob),
        { ...installed(alice, { version: "2.0.0" }) },
      ],
    };
    const r = await send(batch);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.body.accepted).toBe(4);
    expect(r.body.duplicates).toBe(1);
    expect(r.body.failed).toBe(0);
    expect(r.body.results.map((x: any) => [x.userId, x.type, x.seq, x.duplicate, x.error])).toEqual([
      [alice, "app.updated", 2, false, undefined],
      [bob, "app.install_failed", 1, false, undefined],
      [alice, "app.installed", 1, true, undefined],
      [bob, "app.installed", 2, false, undefined],
      [alice, "app.installed", 3, false, undefined],
    ]);
    await until(async () => logged(fa).length >= 3 && logged(fb).length >= 2);
    await sleep(200);
    expect(logged(fa).map((e) => [e.seq, e.type, e.userId])).toEqual([
      [1, "app.installed", alice],
      [2, "app.updated", alice],
      [3, "app.installed", alice],
    ]);
    expect(logged(fb).map((e) => [e.seq, e.type, e.userId])).toEqual([
      [1, "app.install_failed", bob],
      [2, "app.installed", bob],
    ]);
    // The same batch again: every item with an eventId is a duplicate; items without one are new events.
    const again = await send(batch);
    expect(again.body).toMatchObject({ accepted: 2, duplicates: 3, failed: 0 });
    expect(again.body.results.map((x: any) => [x.seq, x.duplicate])).toEqual([
      [2, true],
      [1, true],
      [1, true],
      [3, false],
      [4, false],
    ]);
    await until(async () => logged(fa).length >= 4 && logged(fb).length >= 3);
    await sleep(200);
    expect(logged(fa).map((e) => e.seq)).toEqual([1, 2, 3, 4]);
    expect(logged(fb).map((e) => e.seq)).toEqual([1, 2, 3]);
    fa.ws.close(1000);
    fb.ws.close(1000);
  });

  it("is documented in OpenAPI with the service token, answering 202", async () => {
    const doc = (await call("GET", "/openapi.json")).body;
    const op = doc.paths["/api/internal/events"].post;
    expect(op.security).toEqual([{ service: [] }]);
    expect(Object.keys(op.responses)).toContain("202");
    expect(Object.keys(op.responses)).not.toContain("201");
    expect(op.requestBody.required).toBe(true);
    const admin = doc.paths["/admin/events"].get;
    expect(admin.security).toEqual([{ bearer: [] }]);
  });
});
