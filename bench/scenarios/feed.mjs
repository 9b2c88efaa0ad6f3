// Feed latency: from an event's cause to its arrival on a connected socket.
//
// Users each hold open user-feed sockets. Causes are sent at a steady rate (not a flood), one
// user at a time, picked at random:
//   - app events, POST /api/internal/events (service token): Worker → the user's UserQuota
//     (appendOnce, a SQLite write) → pumped to that user's sockets; the cleanest cause;
//   - quota renewals, POST /quotas/renew/{userId} (admin): the same path through a quota change.
// Latency = arrival of the frame on a socket − the moment the request was sent (both clocks
// are this process's). The HTTP reply's own time is kept beside it, and the floor Worker's
// one-SQLite-write round trip at the same rate gives the runtime's part.
// Then the same steady stream again while other clients flood app events to other users
// (reported separately: `underFlood`).
import { request } from "../lib/load.mjs";
import { ADMIN, bearer, closeAll, nowMs, openFeed, pool, sendAppEvent, sleep, stats, within } from "../lib/feed.mjs";

/** Sends `count` causes at `rate`/s; each resolves when its frame has arrived on every socket of its user. */
async function steady(rt, { users, socketsOf, pending, count, rate, cause, tag, log, roundRobin = false }) {
  const lat = [];
  const http = [];
  const lost = [];
  const gap = 1000 / rate;
  const start = nowMs();
  const inflight = [];
  for (let i = 0; i < count; i++) {
    const due = start + i * gap;
    const wait = due - nowMs();
    if (wait > 1) await sleep(wait);
    const userId = roundRobin ? users[i % users.length] : users[Math.floor(Math.random() * users.length)];
    const id = `${tag}-${i}-${Math.random().toString(36).slice(2, 8)}`;
    const expected = socketsOf.get(userId).length;
    const t0 = nowMs();
    const arrived = new Promise((resolve) => pending.set(id, { t0, left: expected, lat: [], resolve }));
    inflight.push(
      (async () => {
        const res = await cause(userId, id);
        http.push(res.ms);
        if (res.status >= 300) throw new Error(`${tag}: HTTP ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
        const got = await within(arrived, 10_000, `${tag} ${id}`).catch(() => null);
        if (!got) {
          lost.push(id);
          pending.delete(id);
          return;
        }
        lat.push(...got);
      })(),
    );
  }
  await Promise.all(inflight);
  if (lost.length) log(`feed: ${tag}: ${lost.length} event(s) did not arrive within 10 s`);
  return { lat, http, lost: lost.length };
}

export async function run(rt, { quick = false, log = () => {} } = {}) {
  const userCount = quick ? 50 : 200;
  const perUser = 2;
  const count = quick ? 300 : 600;
  const rate = 100;
  const renewCount = quick ? 50 : 100;
  const base = rt.main;
  const users = Array.from({ length: userCount }, (_, i) => `bench-feed-${i}`);
  const socketsOf = new Map(users.map((u) => [u, []]));
  // Causes in flight: id → {t0, left, lat, resolve}. Frames are matched by appId (app events) or user (renewals).
  const pending = new Map();
  const renewWaiting = new Map(); // userId → id of the renew in flight (one per user at a time)
  const all = [];
  const onFrame = (f, at) => {
    let id = null;
    // An app event carries its cause's id as appId (the event's data is strict: no extra fields).
    if (f.type === "app.installed") id = f.data?.appId ?? null;
    else if (f.type === "quota.renewed") id = renewWaiting.get(f.userId) ?? null;
    const p = id && pending.get(id);
    if (!p) return;
    p.lat.push(at - p.t0);
    if (--p.left === 0) {
      pending.delete(id);
      if (f.type === "quota.renewed") renewWaiting.delete(f.userId);
      p.resolve(p.lat);
    }
  };
  try {
    log(`feed: opening ${userCount * perUser} sockets (${userCount} users × ${perUser})`);
    const slots = users.flatMap((u) => Array.from({ length: perUser }, () => u));
    await pool(slots, 16, async (u) => {
      const s = await openFeed(base, u, { onFrame });
      socketsOf.get(u).push(s);
      all.push(s);
    });

    const appCause = (userId, id) => sendAppEvent(base, userId, id, { appId: id });

    // Warm-up: one event per user (wakes every object; not counted).
    log("feed: warm-up, one event per user");
    await steady(rt, { users, socketsOf, pending, count: userCount, rate: 200, cause: appCause, tag: "warm", log });

    // The runtime's floor at the same rate: HTTP → Worker → Durable Object → one SQLite write → reply.
    const floorLat = [];
    for (let i = 0; i < Math.min(count, 300); i++) {
      const due = nowMs() + 1000 / rate;
      const r = await request(rt.floor, "GET", `/write?o=f${i % userCount}`);
      floorLat.push(r.ms);
      const wait = due - nowMs();
      if (wait > 1) await sleep(wait);
    }

    log(`feed: ${count} app events at ${rate}/s`);
    const app = await steady(rt, { users, socketsOf, pending, count, rate, cause: appCause, tag: "app", log });

    log(`feed: ${renewCount} quota renewals at 20/s`);
    const renewCause = (userId, id) => {
      renewWaiting.set(userId, id);
      return request(base, "POST", `/quotas/renew/${userId}`, {
        headers: bearer(ADMIN, "admin"),
        body: { extensionDays: 1 },
      });
    };
    // Users in turn (one renewal per user at a time), so a quota.renewed frame names its cause.
    const renew = await steady(rt, {
      users,
      socketsOf,
      pending,
      count: renewCount,
      rate: 20,
      cause: renewCause,
      tag: "renew",
      log,
      roundRobin: true,
    });

    // Under a flood: 32 clients send app events as fast as they can to the other half of the users.
    const floodSeconds = quick ? 3 : 6;
    log(`feed: steady stream while 32 clients flood app events for ${floodSeconds} s`);
    const half = Math.floor(users.length / 2);
    const quiet = users.slice(0, half);
    const noisy = users.slice(half);
    let flooding = true;
    let floodSent = 0;
    const flood = Promise.all(
      Array.from({ length: 32 }, async (_, c) => {
        for (let i = 0; flooding; i++) {
          const u = noisy[(c * 7 + i) % noisy.length];
          const r = await sendAppEvent(base, u, `flood-${c}-${i}`, { appName: "Flood", appId: "flood" }).catch(() => null);
          if (r?.status === 202) floodSent++;
        }
      }),
    );
    await sleep(300);
    const t = nowMs();
    const underFlood = await steady(rt, {
      users: quiet,
      socketsOf,
      pending,
      count: Math.round(rate * floodSeconds * 0.8),
      rate,
      cause: appCause,
      tag: "flood",
      log,
    });
    flooding = false;
    await flood;
    const floodRate = Math.round(floodSent / ((nowMs() - t + 300) / 1000));

    const s = stats(app.lat);
    return {
      feedLatencyMs: { p50: s.p50, p99: s.p99, count: s.count },
      feed: {
        sockets: all.length,
        users: userCount,
        ratePerSecond: rate,
        appEvent: { arrival: stats(app.lat), httpReply: stats(app.http), lost: app.lost },
        quotaRenew: { arrival: stats(renew.lat), httpReply: stats(renew.http), lost: renew.lost },
        floorOneSqliteWriteRoundTrip: stats(floorLat),
        underFlood: {
          floodEventsPerSecond: floodRate,
          arrival: stats(underFlood.lat),
          httpReply: stats(underFlood.http),
          lost: underFlood.lost,
        },
      },
    };
  } finally {
    await closeAll(all);
  }
}
