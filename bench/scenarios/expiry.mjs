// Expiry lag: allocations with short durations (the test-only `durationSeconds`, which needs
// ALLOW_SHORT_DURATIONS) over many devices and users, started spread out with durations of
// 2-20 s. Each user holds a user-feed socket from before their first allocation; the lag is
// the arrival of `device.released` (reason `expired`) on it minus the allocation's `expiresAt`.
//
// The path of one expiry: the Device's alarm fires → ends the allocation in one transaction
// (device feed event + outbox rows) → the alarm's outbox flush calls UserQuota.deviceEnded
// → the user's log → pumped to the user's sockets. To split it, the holder also watches the
// device feed (whose `device.released` is sent by the Device inside the alarm itself), and
// the envelope's own `timestamp` (when UserQuota logged it) is kept.
import { request } from "../lib/load.mjs";
import { bearer, closeAll, nowMs, openFeed, pool, registerDevices, sleep, stats, within } from "../lib/feed.mjs";

export async function run(rt, { quick = false, log = () => {} } = {}) {
  const allocations = quick ? 50 : 200;
  const perUser = 2; // the free plan allows 2 concurrent devices
  const userCount = Math.ceil(allocations / perUser);
  const startWindowMs = quick ? 6_000 : 12_000;
  const [minS, maxS] = quick ? [2, 10] : [2, 20];
  const base = rt.main;
  const poolName = `bench-expiry-${Date.now().toString(36)}`;
  const users = Array.from({ length: userCount }, (_, i) => `bench-exp-${i}`);
  const byAllocation = new Map(); // allocationId → record
  const socks = [];
  const early = new Map(); // frames that arrived before their allocate reply (not expected, kept anyway)

  const noteUser = (f, at) => {
    if (f.type !== "device.released") return;
    const r = byAllocation.get(f.data.allocationId);
    if (!r) return early.set(f.data.allocationId, { f, at });
    if (r.userAt !== undefined) return;
    Object.assign(r, {
      userAt: at,
      loggedAt: Date.parse(f.timestamp),
      releasedAt: Date.parse(f.data.releasedAt),
      reason: f.data.reason,
    });
    r.done?.();
  };
  const noteDevice = (r) => (f, at) => {
    if (f.type === "device.released" && f.data.allocationId === r.allocationId && r.deviceAt === undefined)
      Object.assign(r, { deviceAt: at, deviceLoggedAt: Date.parse(f.timestamp) });
  };

  try {
    log(`expiry: registering ${allocations} devices in ${poolName}`);
    await registerDevices(base, { pool: poolName, prefix: `${poolName}-d`, count: allocations, nodes: 8 });
    log(`expiry: ${userCount} users open their feed`);
    await pool(users, 16, async (u) => socks.push(await openFeed(base, u, { onFrame: noteUser })));

    // The plan: each allocation starts at a random moment in the window and lasts 2-20 s.
    const plan = Array.from({ length: allocations }, (_, i) => ({
      userId: users[i % userCount],
      startAt: Math.random() * startWindowMs,
      seconds: minS + Math.floor(Math.random() * (maxS - minS + 1)),
    })).sort((a, b) => a.startAt - b.startAt);
    const t0 = nowMs();
    const failures = [];
    log(`expiry: ${allocations} allocations over ${startWindowMs / 1000} s, ${minS}-${maxS} s each`);
    await Promise.all(
      plan.map(async (p) => {
        const wait = t0 + p.startAt - nowMs();
        if (wait > 0) await sleep(wait);
        const res = await request(base, "POST", "/scheduler/devices/allocate", {
          headers: bearer(p.userId),
          body: { pool: poolName, durationSeconds: p.seconds },
        });
        if (res.status !== 201) return failures.push(`${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
        const a = res.body;
        const r = {
          allocationId: a.allocationId,
          deviceId: a.deviceId,
          userId: p.userId,
          seconds: p.seconds,
          expiresAt: Date.parse(a.expiresAt),
        };
        r.arrived = new Promise((resolve) => (r.done = resolve));
        byAllocation.set(r.allocationId, r);
        const e = early.get(r.allocationId);
        if (e) noteUser(e.f, e.at);
        // The holder watches the device feed too (it is closed by the device after the release).
        openFeed(base, p.userId, { feed: "device", deviceId: r.deviceId, onFrame: noteDevice(r) })
          .then((s) => socks.push(s))
          .catch((err) => (r.deviceFeedError = String(err.message ?? err)));
      }),
    );
    if (failures.length) log(`expiry: ${failures.length} allocation(s) refused, e.g. ${failures[0]}`);
    const records = [...byAllocation.values()];
    const lastExpiry = Math.max(...records.map((r) => r.expiresAt));
    log(`expiry: ${records.length} allocated; waiting for the releases (last expiry in ${Math.round((lastExpiry - Date.now()) / 1000)} s)`);
    await within(
      Promise.all(records.map((r) => r.arrived)),
      Math.max(0, lastExpiry - Date.now()) + 20_000,
      "device.released for every allocation",
    ).catch((err) => log(`expiry: ${err.message}`));

    const got = records.filter((r) => r.userAt !== undefined);
    const expired = got.filter((r) => r.reason === "expired");
    const lag = expired.map((r) => r.userAt - r.expiresAt);
    const s = stats(lag);
    const deviceLag = expired.filter((r) => r.deviceAt !== undefined).map((r) => r.deviceAt - r.expiresAt);
    return {
      expiryLagMs: { p50: s.p50, p99: s.p99, max: s.max, count: s.count },
      expiry: {
        allocations: records.length,
        refused: failures.length,
        users: userCount,
        devices: allocations,
        durationsSeconds: [minS, maxS],
        startWindowSeconds: startWindowMs / 1000,
        released: got.length,
        expired: expired.length,
        otherReasons: got.length - expired.length,
        missing: records.length - got.length,
        // expiresAt → arrival on the user's socket (the figure above).
        userFeedArrival: s,
        // expiresAt → the Device's own device.released arriving on its device feed (alarm fired, allocation ended).
        deviceFeedArrival: stats(deviceLag),
        // expiresAt → when UserQuota logged the event (its envelope timestamp, the server's clock).
        userLogged: stats(expired.map((r) => r.loggedAt - r.expiresAt)),
        // expiresAt → the Device's log time of its device.released (inside the alarm).
        deviceLogged: stats(expired.filter((r) => r.deviceLoggedAt !== undefined).map((r) => r.deviceLoggedAt - r.expiresAt)),
        // The event's own releasedAt vs expiresAt (expiry bills up to expiresAt, so 0 is right).
        releasedAtMinusExpiresAt: stats(expired.map((r) => r.releasedAt - r.expiresAt)),
        deviceFeedErrors: records.filter((r) => r.deviceFeedError).length,
      },
    };
  } finally {
    await closeAll(socks);
  }
}
