// The waiting queue and reservations, timed from the outside.
//
// Hand-over: a pool whose devices are all held; waiters (each its own user, with a feed
// socket open) join its queue one after another. The holders then release, spread out, and
// each waiter, once served, holds its device a moment and releases it, so the devices pass
// down the queue until everyone was served. The figure: the released allocation's
// `releasedAt` (the server's clock, same host) → the next holder's `queue.fulfilled` frame.
// That path: the device's release → its outbox tells the pool (on the release's own request)
// → the pool offers the device to the head entry → the entry's user object allocates it (the
// whole allocation protocol) → the pool logs `queue.fulfilled` through its outbox → the
// user's socket. The reference in the same run: a direct allocation's latency on the same
// runtime (one client, a free device), which the hand-over contains.
//
// Reservation start: reservations on their own devices, starting spread over a few seconds;
// `startAt` → the `reservation.started` frame (the pool's alarm, then the same allocation).
import { request } from "../lib/load.mjs";
import { bearer, closeAll, expectStatus, nowMs, openFeed, pool, registerDevices, sleep, stats, within } from "../lib/feed.mjs";

export async function run(rt, { quick = false, log = () => {} } = {}) {
  const base = rt.main;
  const devices = quick ? 10 : 20;
  const waiters = devices * 3;
  const reservations = quick ? 20 : 50;
  const tag = Date.now().toString(36);
  const qPool = `bench-queue-${tag}`;
  const rPool = `bench-rsv-${tag}`;
  const socks = [];
  try {
    // ---- hand-over ----------------------------------------------------------------------
    log(`queue: ${devices} devices in ${qPool}, all held; ${waiters} waiters join`);
    await registerDevices(base, { pool: qPool, prefix: `${qPool}-d`, count: devices, nodes: 2 });
    const holders = Array.from({ length: devices }, (_, i) => `bench-qh-${tag}-${i}`);
    const held = await pool(holders, 8, async (u) =>
      expectStatus(
        await request(base, "POST", "/scheduler/devices/allocate", {
          headers: bearer(u),
          body: { pool: qPool, durationMinutes: 30 },
        }),
        201,
        `hold ${u}`,
      ),
    );

    const served = new Map(); // entryId → {at, deviceId, allocationId}
    const releases = []; // {deviceId, releasedAt}
    const duplicates = [];
    let allServed;
    const everyone = new Promise((r) => (allServed = r));
    const entries = new Map(); // userId → entryId
    const pending = []; // the waiters' own releases (a hand-over's frame can come before the release that caused it answers)
    const release = async (userId, deviceId) => {
      const res = await request(base, "POST", "/scheduler/devices/release", {
        headers: bearer(userId),
        body: { deviceId },
      });
      const body = expectStatus(res, 200, `release by ${userId}`);
      releases.push({ deviceId, releasedAt: Date.parse(body.releasedAt) });
    };
    const onFrame = (userId) => (f, at) => {
      if (f.type !== "queue.fulfilled") return;
      if (served.has(f.data.entryId)) return duplicates.push(f.data.entryId);
      served.set(f.data.entryId, { at, userId, deviceId: f.data.deviceId, allocationId: f.data.allocationId });
      if (served.size === waiters) allServed();
      // Hold it a moment, then pass it on down the queue.
      pending.push(
        sleep(100 + Math.random() * 200)
          .then(() => release(userId, f.data.deviceId))
          .catch((err) => log(`queue: ${err.message}`)),
      );
    };
    const users = Array.from({ length: waiters }, (_, i) => `bench-qw-${tag}-${i}`);
    await pool(users, 16, async (u) => socks.push(await openFeed(base, u, { onFrame: onFrame(u) })));
    for (const u of users) {
      const e = expectStatus(
        await request(base, "POST", "/scheduler/queue/join", {
          headers: bearer(u),
          body: { pool: qPool, durationMinutes: 5, maxWaitMinutes: 30 },
        }),
        201,
        `join ${u}`,
      );
      if (e.status !== "waiting") throw new Error(`join ${u}: expected to wait, got ${e.status}`);
      entries.set(u, e.entryId);
    }
    const started = nowMs();
    log(`queue: holders release, spread over ${devices * 50} ms; devices pass down the queue`);
    await Promise.all(
      held.map(async (a, i) => {
        await sleep(i * 50);
        await release(holders[i], a.deviceId);
      }),
    );
    await within(everyone, 60_000, `queue.fulfilled for all ${waiters} waiters`).catch((err) => log(`queue: ${err.message}`));
    const handoverSeconds = (nowMs() - started) / 1000;
    await within(Promise.all(pending), 20_000, "the waiters' releases").catch((err) => log(`queue: ${err.message}`));
    // Each hand-over against the release of the device it got that came just before it.
    const byDevice = new Map();
    for (const r of releases) (byDevice.get(r.deviceId) ?? byDevice.set(r.deviceId, []).get(r.deviceId)).push(r.releasedAt);
    const lat = [];
    for (const s of served.values()) {
      const before = (byDevice.get(s.deviceId) ?? []).filter((t) => t <= s.at).sort((a, b) => b - a)[0];
      if (before !== undefined) lat.push(s.at - before);
    }

    // The reference: a direct allocation on the same runtime, one client, a free device.
    const direct = [];
    const solo = `bench-qd-${tag}`;
    for (let i = 0; i < 30; i++) {
      const t0 = nowMs();
      const a = expectStatus(
        await request(base, "POST", "/scheduler/devices/allocate", {
          headers: bearer(solo),
          body: { pool: qPool, durationMinutes: 5 },
        }),
        201,
        "direct allocate",
      );
      direct.push(nowMs() - t0);
      await release(solo, a.deviceId);
    }

    // ---- reservation start ---------------------------------------------------------------
    log(`queue: ${reservations} reservations in ${rPool}, starting over 3 s`);
    await registerDevices(base, { pool: rPool, prefix: `${rPool}-d`, count: reservations, nodes: 4 });
    const booked = new Map(); // reservationId → {startAt, at}
    const bookers = Array.from({ length: reservations }, (_, i) => `bench-qr-${tag}-${i}`);
    let allStarted;
    const startedAll = new Promise((r) => (allStarted = r));
    let startedCount = 0;
    const onStart = (f, at) => {
      if (f.type !== "reservation.started") return;
      const r = booked.get(f.data.reservationId);
      if (!r || r.at !== undefined) return;
      r.at = at;
      if (++startedCount === reservations) allStarted();
    };
    await pool(bookers, 16, async (u) => socks.push(await openFeed(base, u, { onFrame: onStart })));
    const t0 = Date.now() + 4_000;
    await pool(bookers, 8, async (u, i) => {
      const startAt = t0 + Math.round((i / reservations) * 3_000);
      const r = expectStatus(
        await request(base, "POST", "/scheduler/reservations", {
          headers: bearer(u),
          body: { pool: rPool, startAt, durationSeconds: 5, reminderMinutes: 0 },
        }),
        201,
        `reserve ${u}`,
      );
      booked.set(r.reservationId, { startAt, at: undefined });
    });
    await within(startedAll, 20_000, `reservation.started for all ${reservations}`).catch((err) => log(`queue: ${err.message}`));
    const startLag = [...booked.values()].filter((r) => r.at !== undefined).map((r) => r.at - r.startAt);

    if (process.env.BENCH_DEBUG) log(`queue: hand-overs ${JSON.stringify(lat.map((x) => Math.round(x)))}`);
    const h = stats(lat);
    const d = stats(direct);
    const s = stats(startLag);
    log(
      `queue: hand-over p50/p99 ${h.p50}/${h.p99} ms (n=${h.count}); direct allocate p50/p99 ${d.p50}/${d.p99} ms; ` +
        `reservation start lag p50/p99 ${s.p50}/${s.p99} ms (n=${s.count})`,
    );
    return {
      queueHandoverMs: { p50: h.p50, p99: h.p99, max: h.max, count: h.count },
      reservationStartLagMs: { p50: s.p50, p99: s.p99, max: s.max, count: s.count },
      queue: {
        devices,
        waiters,
        served: served.size,
        servedTwice: duplicates.length,
        handoversPerSecond: Math.round((served.size / handoverSeconds) * 10) / 10,
        // releasedAt of the device's previous holder → queue.fulfilled on the next one's socket.
        handover: h,
        // The same runtime, one client, a free device: allocate's own latency (the hand-over contains one).
        directAllocate: d,
        handoverToDirectAllocateP50: d.p50 ? Math.round((h.p50 / d.p50) * 100) / 100 : null,
        reservations,
        started: startLag.length,
        // startAt → reservation.started on the user's socket.
        reservationStart: s,
      },
    };
  } finally {
    await closeAll(socks);
  }
}
