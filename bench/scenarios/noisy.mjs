// Noisy neighbours: how much one caller's flood slows another user's allocations.
//
// Quiet users (each its own user, paced: an allocate + release every 250 ms, well inside their
// own limit) allocate from a pool; their allocate latency is timed alone, then again while a
// flood runs beside them for the same time: one user reading that pool's free devices and
// minting feed tickets, and the service token sending app events to that user. Three floods,
// each bounded (32 connections, the phase's seconds) and stopping by itself: paced at 200
// requests/s (the report's 2,000 in 10 s) (the figure: quiet allocate p99 beside it ÷ alone, target ≤ 2); as fast as
// the connections are answered (closed loop); and the closed loop's rate of bare responses from
// the runtime's floor Worker, which is what a flood that fast costs this machine whatever the
// Worker does; the paced rate of bare responses likewise. Each beside the quiet users alone just before.
//
// It runs twice, on two runtimes of its own started here: with wrangler.toml's rate limits
// (`limited`, the service as deployed; target ratio ≤ 2) and with them raised out of reach
// (`unlimited`, what the flood costs when nothing stops it: the reference in the same run).
import { request, summarize } from "../lib/load.mjs";
import { startRuntime } from "../lib/runtime.mjs";
import { bearer, registerDevices, sendAppEvent, sleep } from "../lib/feed.mjs";

const QUIET_USERS = 8;
const PACE_MS = 250;
const FLOOD_CONNECTIONS = 32;
const PACED_RATE = 200;

async function quietLoad(base, pool, users, seconds) {
  const lat = [];
  const end = Date.now() + seconds * 1000;
  let refused = 0;
  await Promise.all(
    users.map(async (u, i) => {
      await sleep((PACE_MS * i) / users.length);
      while (Date.now() < end) {
        const next = Date.now() + PACE_MS;
        const a = await request(base, "POST", "/scheduler/devices/allocate", {
          headers: bearer(u),
          body: { pool, durationMinutes: 5 },
        });
        if (a.status === 201) {
          lat.push(a.ms);
          await request(base, "POST", "/scheduler/devices/release", { headers: bearer(u), body: { deviceId: a.body.deviceId } });
        } else refused++;
        const wait = next - Date.now();
        if (wait > 0) await sleep(wait);
      }
    }),
  );
  return { ...summarize(lat), refused };
}

/**
 * The flood: one user reading the pool's free devices and minting tickets, and the service
 * sending that user app events, over 32 connections for `seconds`. `rate` (requests/s) paces it
 * (a bounded load); without, every connection sends again as soon as it is answered.
 * `floorBase` sends the same number of requests to the runtime's bare response instead: what
 * any flood of that rate costs this machine, whatever the Worker does with it.
 */
async function flood(base, pool, noisy, seconds, { rate, floorBase } = {}) {
  const t0 = Date.now();
  const end = t0 + seconds * 1000;
  const counts = { requests: 0, limited: 0, other: 0 };
  let n = 0;
  const shapes = floorBase
    ? [() => request(floorBase, "GET", "/bare", { clients: FLOOD_CONNECTIONS })]
    : [
        () => request(base, "GET", `/scheduler/devices/available?pool=${pool}`, { headers: bearer(noisy), clients: FLOOD_CONNECTIONS }),
        () => request(base, "POST", "/ws/ticket", { headers: bearer(noisy), body: {}, clients: FLOOD_CONNECTIONS }),
        () => sendAppEvent(base, noisy, `noisy-${n}`),
      ];
  await Promise.all(
    Array.from({ length: FLOOD_CONNECTIONS }, async () => {
      while (Date.now() < end) {
        const i = n++;
        if (rate) {
          const wait = t0 + (i * 1000) / rate - Date.now();
          if (wait > 0) await sleep(wait);
          if (Date.now() >= end) break;
        }
        const r = await shapes[i % shapes.length]();
        counts.requests++;
        if (r.status === 429) counts.limited++;
        else if (r.status >= 400) counts.other++;
      }
    }),
  );
  return counts;
}

async function phase(rateLimits, seconds, log) {
  const rt = await startRuntime({ vars: { ALLOW_SHORT_DURATIONS: "true" }, rateLimits, onWorkerLog: () => {} });
  try {
    const tag = `${rateLimits}-${Date.now().toString(36)}`;
    const pool = `bench-noisy-${tag}`;
    await registerDevices(rt.main, { pool, prefix: `${pool}-d`, count: QUIET_USERS * 2, nodes: 2 });
    const users = Array.from({ length: QUIET_USERS }, (_, i) => `bench-quiet-${tag}-${i}`);
    const noisy = `bench-noisy-${tag}`;
    // Warm the objects (first calls create users and accounts) before anything is timed.
    await quietLoad(rt.main, pool, users, 1);
    // Each flood is timed against the quiet users alone just before it (a runtime's latency drifts
    // as its objects fill, so a ratio is taken between neighbours).
    const ratio = (a, b) => (a.p99Ms ? Math.round((b.p99Ms / a.p99Ms) * 100) / 100 : null);
    const beside = async (opts) => {
      const alone = await quietLoad(rt.main, pool, users, seconds);
      const [under, flooded] = await Promise.all([quietLoad(rt.main, pool, users, seconds), flood(rt.main, pool, noisy, seconds, opts)]);
      if (alone.count === 0) throw new Error(`${rateLimits}: the quiet users allocated nothing`);
      return { alone, under, flood: flooded, p99Ratio: ratio(alone, under) };
    };
    // Bounded: 200 requests/s, the report's flood (2,000 in 10 s), and the same rate of bare
    // responses; then as fast as 32 connections go, and that rate of bare responses (the
    // machine's floor for a flood that fast).
    const paced = await beside({ rate: PACED_RATE });
    const pacedFloor = await beside({ floorBase: rt.floor, rate: PACED_RATE });
    const closed = await beside({});
    const closedFloor = await beside({ floorBase: rt.floor, rate: Math.round(closed.flood.requests / seconds) });
    const runs = { paced, pacedFloor, closed, closedFloor };
    for (const [name, r] of Object.entries(runs))
      log(
        `noisy (${rateLimits}, ${name}): quiet allocate p99 ${r.alone.p99Ms} ms alone, ${r.under.p99Ms} ms beside ` +
          `${r.flood.requests} requests (${r.flood.limited} limited) → ${r.p99Ratio}×`,
      );
    return { ...runs, p99Ratio: paced.p99Ratio, floorP99Ratio: pacedFloor.p99Ratio };
  } finally {
    await rt.stop();
  }
}

export async function run(_rt, { quick = false, log = () => {} } = {}) {
  const seconds = quick ? 3 : 12;
  const limited = await phase("configured", seconds, log);
  const unlimited = await phase("raised", seconds, log);
  return {
    noisy: {
      quietUsers: QUIET_USERS,
      paceMs: PACE_MS,
      floodConnections: FLOOD_CONNECTIONS,
      seconds,
      limited,
      unlimited,
      pacedRate: PACED_RATE,
      limitedP99Ratio: limited.p99Ratio,
      unlimitedP99Ratio: unlimited.p99Ratio,
      floorP99Ratio: limited.floorP99Ratio,
    },
  };
}
