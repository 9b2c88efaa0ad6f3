/**
 * What operators see: the pool feed (admins watch a pool's devices live), the metrics endpoint
 * (Prometheus text; counters exact under concurrency and across restarts), and the structured
 * logs (request id, user id and allocation id on the lines that have them). Real objects, real
 * queue and D1; failures are injected in D1 itself, as in the usage tests.
 */
import { abortAllDurableObjects } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { UsageRecord } from "../src/domain/types";
import type { Envelope, PoolFeedState } from "../src/feed/protocol";
import { admin, call, deliverBatch as deliver, registerDevice, sleep, tokenFor, uid, until } from "./helpers";
import { events, feedClient, rawFeed, ticket } from "./feed-helpers";

/** Parses the Prometheus text into `name{labels}` → value (labels in the order written). */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    out.set(m[1]!, Number(m[2]));
  }
  return out;
}

async function metrics(): Promise<Map<string, number>> {
  const r = await call("GET", "/admin/metrics", { token: await admin() });
  expect(r.status).toBe(200);
  expect(r.res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseMetrics(r.body as string);
}

const m = (all: Map<string, number>, key: string) => all.get(key) ?? 0;

async function allocate(token: string, pool: string, body: Record<string, unknown> = {}) {
  return call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 30, ...body } });
}

describe("pool feed: admins watch a pool's devices live", () => {
  it("the hello lists the pool's devices; allocation, release and a status change each arrive as pool.device", async () => {
    const pool = uid("obs-pf");
    const d1 = await registerDevice(pool);
    const d2 = await registerDevice(pool);
    const adminToken = await admin();
    const feed = await rawFeed(`/ws/pools/${pool}?ticket=${await ticket(adminToken, { feed: "pool", pool })}`);
    const hello = await until(async () => feed.frames.find((f) => f.type === "feed.hello"));
    const state = (hello.data as { state: PoolFeedState }).state;
    expect(state.pool).toBe(pool);
    expect(state.truncated).toBe(false);
    expect(state.devices.map((d) => d.deviceId).sort()).toEqual([d1.deviceId, d2.deviceId].sort());
    expect(state.devices.every((d) => d.status === "available" && d.userId === null)).toBe(true);

    const user = uid("obs-pf-user");
    const token = await tokenFor(user);
    const a = await allocate(token, pool);
    expect(a.status).toBe(201);
    const [allocated] = await events(feed.frames, 1);
    expect(allocated).toMatchObject({
      type: "pool.device",
      data: {
        pool,
        deviceId: a.body.deviceId,
        status: "allocated",
        previousStatus: "available",
        userId: user,
        allocationId: a.body.allocationId,
        reason: null,
      },
    });
    expect(Date.parse((allocated!.data as { expiresAt: string }).expiresAt)).toBe(Date.parse(a.body.expiresAt));

    expect((await call("POST", "/scheduler/devices/release", { token, body: { deviceId: a.body.deviceId } })).status).toBe(200);
    const released = (await events(feed.frames, 2))[1]!;
    expect(released).toMatchObject({
      type: "pool.device",
      data: {
        deviceId: a.body.deviceId,
        status: "available",
        previousStatus: "allocated",
        userId: null,
        allocationId: null,
        reason: "released",
      },
    });

    const other = a.body.deviceId === d1.deviceId ? d2.deviceId : d1.deviceId;
    expect((await call("POST", `/admin/devices/${other}/maintenance`, { token: adminToken })).status).toBe(200);
    const maint = (await events(feed.frames, 3))[2]!;
    expect(maint).toMatchObject({
      type: "pool.device",
      data: { deviceId: other, status: "maintenance", previousStatus: "available" },
    });
    feed.ws.close(1000);
  });

  it("the typed client resumes a pool feed after a drop without losing or repeating an event", async () => {
    const pool = uid("obs-pf-resume");
    for (let i = 0; i < 4; i++) await registerDevice(pool);
    const client = feedClient(await admin(), { feed: "pool", pool });
    const seen: Envelope[] = [];
    client.on("pool.device", (e) => seen.push(e));
    await client.start();
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      if (i === 2) client.drop(); // two changes happen while the client is away
      const a = await allocate(await tokenFor(uid("obs-pf-resume-user")), pool);
      expect(a.status).toBe(201);
      ids.push(a.body.deviceId);
    }
    await until(async () => seen.length >= 4);
    await sleep(100);
    expect(seen.map((e) => e.seq)).toEqual([...new Set(seen.map((e) => e.seq))]);
    expect(seen.map((e) => (e.data as { deviceId: string }).deviceId)).toEqual(ids);
    client.close();
  });
});

describe("metrics endpoint (Prometheus text, admin only)", () => {
  it("refuses users and strangers in the one error shape", async () => {
    const r = await call("GET", "/admin/metrics", { token: await tokenFor(uid("obs-nosy")) });
    expect(r.status).toBe(403);
    expect(r.body.error.code).toBe("FORBIDDEN");
    expect((await call("GET", "/admin/metrics")).status).toBe(401);
  });

  it("counts allocations and releases by reason exactly, with the expiry lag, and keeps them across restarts", async () => {
    const pool = uid("obs-m");
    for (let i = 0; i < 3; i++) await registerDevice(pool);
    const token = await tokenFor(uid("obs-m-user"));
    const released = await allocate(token, pool);
    const forced = await allocate(token, pool);
    const expiring = await allocate(await tokenFor(uid("obs-m-user2")), pool, {
      durationMinutes: undefined,
      durationSeconds: 1,
    });
    expect([released.status, forced.status, expiring.status]).toEqual([201, 201, 201]);
    expect((await call("POST", "/scheduler/devices/release", { token, body: { deviceId: released.body.deviceId } })).status).toBe(200);
    expect((await call("POST", `/admin/devices/${forced.body.deviceId}/force-release`, { token: await admin() })).status).toBe(200);
    const L = `pool="${pool}"`;
    const after = await until(async () => {
      const all = await metrics();
      return m(all, `eda_releases_total{${L},reason="expired"}`) === 1 ? all : null;
    }, 15_000);
    expect(m(after, `eda_allocations_total{${L}}`)).toBe(3);
    expect(m(after, `eda_releases_total{${L},reason="released"}`)).toBe(1);
    expect(m(after, `eda_releases_total{${L},reason="force_released"}`)).toBe(1);
    expect(m(after, `eda_expiry_lag_seconds_count{${L}}`)).toBe(1);
    expect(m(after, `eda_expiry_lag_seconds_bucket{${L},le="+Inf"}`)).toBe(1);
    // Alarms run within a second of expiresAt here; buckets are cumulative.
    expect(m(after, `eda_expiry_lag_seconds_bucket{${L},le="1"}`)).toBe(1);
    expect(m(after, `eda_expiry_lag_seconds_sum{${L}}`)).toBeLessThan(1);
    expect(m(after, `eda_devices{${L},status="available"}`)).toBe(3);
    expect(m(after, `eda_devices{${L},status="allocated"}`)).toBe(0);

    await abortAllDurableObjects();
    const again = await metrics();
    for (const key of [
      `eda_allocations_total{${L}}`,
      `eda_releases_total{${L},reason="released"}`,
      `eda_releases_total{${L},reason="expired"}`,
      `eda_expiry_lag_seconds_count{${L}}`,
    ])
      expect(m(again, key), key).toBe(m(after, key));
  });

  it(
    "an allocated device taken into maintenance or removed counts its release under that reason, " +
      "and a removed device is gone from the gauges",
    async () => {
      const pool = uid("obs-rm");
      const devices = await Promise.all(Array.from({ length: 3 }, () => registerDevice(pool)));
      const adminToken = await admin();
      const feed = await rawFeed(`/ws/pools/${pool}?ticket=${await ticket(adminToken, { feed: "pool", pool })}`);
      await until(async () => feed.frames.find((f) => f.type === "feed.hello"));
      const held = await Promise.all(
        [0, 1].map(
          async (i) =>
            (await allocate(await tokenFor(uid(`obs-rm-u${i}`)), pool)).body as {
              deviceId: string;
              allocationId: string;
            },
        ),
      );
      expect((await call("POST", `/admin/devices/${held[0]!.deviceId}/maintenance`, { token: adminToken })).status).toBe(200);
      expect((await call("DELETE", `/admin/devices/${held[1]!.deviceId}`, { token: adminToken })).status).toBe(200);
      const L = `pool="${pool}"`;
      const all = await until(async () => {
        const x = await metrics();
        return m(x, `eda_releases_total{${L},reason="removed"}`) === 1 && m(x, `eda_releases_total{${L},reason="maintenance"}`) === 1
          ? x
          : null;
      });
      expect(m(all, `eda_releases_total{${L},reason="unknown"}`)).toBe(0);
      expect(m(all, `eda_allocations_total{${L}}`)).toBe(2);
      expect(m(all, `eda_devices{${L},status="maintenance"}`)).toBe(1);
      expect(m(all, `eda_devices{${L},status="available"}`)).toBe(1);
      expect(m(all, `eda_devices{${L},status="allocated"}`)).toBe(0);
      // The pool feed said why each allocation ended, and that the removed device left (the end and
      // the status change reach the pool as one newest state: 2 allocations + 2 changes).
      const got = await events(feed.frames, 4);
      const ofDevice = (id: string) =>
        got.filter((e) => (e.data as { deviceId: string }).deviceId === id).map((e) => e.data as { status: string; reason: string | null });
      expect(ofDevice(held[0]!.deviceId).at(-1)).toMatchObject({ status: "maintenance", reason: "maintenance" });
      expect(ofDevice(held[1]!.deviceId).at(-1)).toMatchObject({ status: "removed", reason: "removed" });
      // The device list agrees: the removed one is not back.
      const list = await call("GET", `/admin/pools/${pool}/devices`, { token: adminToken });
      expect(list.body.items.map((d: { deviceId: string }) => d.deviceId).sort()).toEqual(
        devices
          .map((d) => d.deviceId)
          .filter((id) => id !== held[1]!.deviceId)
          .sort(),
      );
      feed.ws.close(1000);
    },
  );

  it("a failing source is left out and counted; the rest of the scrape still answers", async () => {
    const pool = uid("obs-src");
    await registerDevice(pool);
    await env.DB.exec("ALTER TABLE metric_counters RENAME TO metric_counters_off");
    let all: Map<string, number>;
    try {
      all = await metrics();
    } finally {
      await env.DB.exec("ALTER TABLE metric_counters_off RENAME TO metric_counters");
    }
    expect(m(all, 'eda_metrics_source_errors{source="d1"}')).toBe(1);
    expect(m(all, 'eda_metrics_source_errors{source="pool"}')).toBe(0);
    expect(all.has(`eda_devices{pool="${pool}",status="available"}`)).toBe(true);
    expect([...all.keys()].some((k) => k.startsWith("eda_usage_reports_sent_total"))).toBe(false);
  });

  it("socket reports that arrive out of order keep the newest", async () => {
    const feedObj = env.ADMIN_FEED.getByName("operators");
    const object = uid("obs-obj");
    const before = (await feedObj.socketCounts()).device ?? 0;
    await feedObj.socketsOpen(object, "device", 2, 5);
    await feedObj.socketsOpen(object, "device", 7, 4); // older: ignored
    expect(((await feedObj.socketCounts()).device ?? 0) - before).toBe(2);
    await feedObj.socketsOpen(object, "device", 0, 6);
    await feedObj.socketsOpen(object, "device", 3, 5); // older than the close: ignored
    expect(((await feedObj.socketCounts()).device ?? 0) - before).toBe(0);
  });

  it("a storm of concurrent allocations and releases is counted once each", async () => {
    const pool = uid("obs-storm");
    await Promise.all(Array.from({ length: 8 }, () => registerDevice(pool)));
    const tokens = await Promise.all(Array.from({ length: 6 }, (_, i) => tokenFor(uid(`obs-storm-u${i}`))));
    const tries = await Promise.all(Array.from({ length: 24 }, (_, i) => allocate(tokens[i % tokens.length]!, pool)));
    const won = tries.filter((r) => r.status === 201);
    expect(won.length).toBeGreaterThan(0);
    expect(won.length).toBeLessThanOrEqual(8);
    await Promise.all(
      won.map((r, i) =>
        call("POST", "/scheduler/devices/release", {
          token: tokens[tries.indexOf(r) % tokens.length]!,
          body: { deviceId: r.body.deviceId },
        }).then((x) => expect(x.status, `release ${i}`).toBe(200)),
      ),
    );
    const L = `pool="${pool}"`;
    const all = await until(async () => {
      const x = await metrics();
      return m(x, `eda_releases_total{${L},reason="released"}`) === won.length ? x : null;
    });
    expect(m(all, `eda_allocations_total{${L}}`)).toBe(won.length);
    expect([...all.keys()].filter((k) => k.startsWith(`eda_releases_total{${L}`) && m(all, k) > 0)).toEqual([
      `eda_releases_total{${L},reason="released"}`,
    ]);
  });

  it("counts usage reports sent through the real queue, failed (retried) and dead-lettered", async () => {
    const before = await metrics();
    const pool = uid("obs-usage");
    await registerDevice(pool);
    const user = uid("obs-usage-user");
    const token = await tokenFor(user);
    const a = await allocate(token, pool);
    expect((await call("POST", "/scheduler/devices/release", { token, body: { deviceId: a.body.deviceId } })).status).toBe(200);
    await until(
      async () =>
        (await call("GET", `/metering/users/${user}`, { token })).body.items?.some(
          (r: { allocationId: string }) => r.allocationId === a.body.allocationId,
        ),
      15_000,
    );
    const sent = await until(async () => {
      const x = await metrics();
      return m(x, "eda_usage_reports_sent_total") >= m(before, "eda_usage_reports_sent_total") + 1 ? x : null;
    });
    expect(m(sent, "eda_usage_reports_sent_total")).toBeGreaterThanOrEqual(1);

    // A record D1 refuses (trigger) is retried: failed +1. A malformed one and a dead letter are kept: +2.
    const record = (allocationId: string): UsageRecord => ({
      allocationId,
      deviceId: "dev-obs",
      userId: uid("obs-u"),
      durationSeconds: 60,
      cpuCores: 1,
      memoryMB: 1024,
      storageMB: 1024,
      allocatedAt: 1_000,
      releasedAt: 61_000,
      reason: "released",
    });
    const stuck = record(uid("obs-stuck"));
    const mid = await metrics();
    await env.DB.exec(
      `CREATE TRIGGER obs_refuse BEFORE INSERT ON usage_records WHEN NEW.allocation_id = '${stuck.allocationId}' BEGIN ` +
        `SELECT RAISE(ABORT, 'injected'); END`,
    );
    try {
      expect((await deliver("device-usage", [stuck, record(uid("obs-fine"))])).retryMessages.length).toBe(1);
    } finally {
      await env.DB.exec("DROP TRIGGER obs_refuse");
    }
    await deliver("device-usage", [{ allocationId: uid("obs-bad"), durationSeconds: -1 }]);
    await deliver("device-usage-dlq", [record(uid("obs-dlq"))], 11);
    const end = await metrics();
    expect(m(end, "eda_usage_reports_failed_total") - m(mid, "eda_usage_reports_failed_total")).toBe(1);
    expect(m(end, "eda_usage_reports_sent_total") - m(mid, "eda_usage_reports_sent_total")).toBe(1);
    expect(m(end, "eda_usage_reports_dead_lettered_total") - m(mid, "eda_usage_reports_dead_lettered_total")).toBe(2);
    expect(m(end, 'eda_usage_failed_records{status="failed"}')).toBeGreaterThanOrEqual(1);
    expect(m(end, 'eda_usage_failed_records{status="invalid"}')).toBeGreaterThanOrEqual(1);
  });

  it("open sockets go up and down with the feeds, and a restart that cut them is corrected", async () => {
    const open = async (feed: string) => m(await metrics(), `eda_sockets_open{feed="${feed}"}`);
    const baseUser = await open("user");
    const basePool = await open("pool");
    const pool = uid("obs-sock");
    await registerDevice(pool);
    const user = uid("obs-sock-user");
    const userToken = await tokenFor(user);
    const a = feedClient(userToken);
    const b = feedClient(userToken);
    const p = feedClient(await admin(), { feed: "pool", pool });
    await Promise.all([a.start(), b.start(), p.start()]);
    await until(async () => (await open("user")) === baseUser + 2 && (await open("pool")) === basePool + 1);
    a.close();
    await until(async () => (await open("user")) === baseUser + 1);
    b.close();
    p.close();
    await until(async () => (await open("user")) === baseUser && (await open("pool")) === basePool);

    // A restart cuts sockets without running close handlers; the object corrects its report when it next wakes.
    const raw = await rawFeed(`/ws?ticket=${await ticket(userToken)}`);
    await until(async () => (await open("user")) === baseUser + 1);
    await abortAllDurableObjects();
    await raw.closed;
    expect((await call("GET", `/quotas/user/${user}`, { token: userToken })).status).toBe(200);
    await until(async () => (await open("user")) === baseUser);
  });
});

describe("structured logs", () => {
  afterEach(() => vi.restoreAllMocks());

  const lines = (spy: { mock: { calls: unknown[][] } }) =>
    spy.mock.calls
      .map((c) => String(c[0]))
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  it("a request's line names its request id, user and allocation; the user's object logs the allocation too", async () => {
    const spy = vi.spyOn(console, "log");
    const pool = uid("obs-log");
    await registerDevice(pool);
    const user = uid("obs-log-user");
    const r = await allocate(await tokenFor(user), pool);
    expect(r.status).toBe(201);
    const requestId = r.res.headers.get("x-request-id");
    expect(requestId).toBeTruthy();
    const got = lines(spy);
    const req = got.find((l) => l.msg === "request" && l.requestId === requestId);
    expect(req).toMatchObject({
      level: "info",
      userId: user,
      allocationId: r.body.allocationId,
      method: "POST",
      path: "/scheduler/devices/allocate",
      status: 201,
    });
    expect(typeof req!.ms).toBe("number");
    expect(Date.parse(req!.ts as string)).not.toBeNaN();
    expect(got.find((l) => l.msg === "allocation active" && l.allocationId === r.body.allocationId)).toMatchObject({
      userId: user,
      deviceId: r.body.deviceId,
      pool,
    });
  });

  it("an error answer is logged with its status; a feed ticket in the query never reaches a log line", async () => {
    const spy = vi.spyOn(console, "log");
    const others = [vi.spyOn(console, "warn"), vi.spyOn(console, "error"), vi.spyOn(console, "info")];
    const token = await tokenFor(uid("obs-log-err"));
    const r = await call("PUT", `/scheduler/allocations/${uid("alc-none")}/extend`, {
      token,
      body: { additionalMinutes: 5 },
    });
    expect(r.status).toBe(404);
    const t = await ticket(token);
    const feed = await rawFeed(`/ws?ticket=${t}`);
    await until(async () => feed.frames.find((f) => f.type === "feed.hello"));
    feed.ws.close(1000);
    const got = lines(spy);
    expect(got.find((l) => l.requestId === r.res.headers.get("x-request-id"))).toMatchObject({
      msg: "request",
      status: 404,
    });
    expect(got.some((l) => l.path === "/ws" && l.status === 101)).toBe(true);
    for (const s of [spy, ...others]) expect(s.mock.calls.map((c) => c.map(String).join(" ")).join("\n")).not.toContain(t);
  });
});
