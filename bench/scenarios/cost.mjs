// What one allocate + release cycle costs, counted (not timed) on a runtime of its own with
// METER on (src/meter.ts):
//   - per allocate and per release, in serial cycles with the service quiet in between: the
//     commits, rows and object requests between the request's arrival and its answer (the
//     critical path), and everything the cycle caused until the service is quiet again
//     (`costPerCycle`: the pool's index, the confirm, the usage record, its charge and events);
//   - sequential object round trips: the same cycles again with every object call's answer
//     delayed by HOP_MS; the extra latency divided by HOP_MS (median over the cycles);
//   - the price of a cycle at Cloudflare's published rates (bench/lib/prices.mjs), and of the
//     protocol floor's cycle (its messages and commits with no logic), beside it.
// Loads target 127.0.0.1 only and stop by themselves.
import { startRuntime } from "../lib/runtime.mjs";
import { request } from "../lib/load.mjs";
import { cyclePrice, floorCycle } from "../lib/prices.mjs";
import { adminToken, setupFleet, setupUsers, workerdCpuMs } from "./allocate.mjs";

const HOP_MS = 60;
const auth = (token) => ({ authorization: `Bearer ${token}` });
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : null;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const onPath = (w) => Math.round(((w.commitsBy?.UserQuota ?? 0) + (w.commitsBy?.Device ?? 0)) * 100) / 100;

async function meter(rt, body) {
  const r = await request(rt.main, body ? "POST" : "GET", "/__meter", body ? { body } : {});
  if (r.status !== 200) throw new Error(`/__meter: ${r.status} (is METER on?)`);
  return r.body;
}

/** Waits until nothing is counted for `quietMs` (the off-path work of the last request is done). */
async function quiet(rt, quietMs = 400, limitMs = 15_000) {
  const end = Date.now() + limitMs;
  let last = JSON.stringify((await meter(rt)).counts);
  let since = Date.now();
  while (Date.now() < end) {
    await sleep(100);
    const now = JSON.stringify((await meter(rt)).counts);
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return;
  }
}

const add = (a, b) =>
  Object.fromEntries(Object.keys(b).map((k) => [k, typeof b[k] === "object" ? add(a[k] ?? {}, b[k]) : (a[k] ?? 0) + b[k]]));
const per = (c, n) =>
  Object.fromEntries(Object.entries(c).map(([k, v]) => [k, typeof v === "object" ? per(v, n) : Math.round((v / n) * 100) / 100]));

/** `n` serial cycles of user `u` on `pool`; with `hop` the object calls' answers are delayed. */
async function cycles(rt, { n, u, pool, hop }) {
  await meter(rt, { reset: true, hopDelayMs: hop });
  const lat = { allocate: [], release: [] };
  const win = { allocate: null, release: null };
  let total = null;
  let cpu = 0;
  for (let i = 0; i < n; i++) {
    await quiet(rt);
    const start = (await meter(rt)).counts;
    const cpu0 = workerdCpuMs();
    const a = await request(rt.main, "POST", "/scheduler/devices/allocate", {
      body: { pool, durationSeconds: 600 },
      headers: auth(u.token),
    });
    if (a.status !== 201) throw new Error(`allocate: ${a.status} ${JSON.stringify(a.body)}`);
    const r = await request(rt.main, "POST", "/scheduler/devices/release", { body: { deviceId: a.body.deviceId }, headers: auth(u.token) });
    if (r.status !== 200) throw new Error(`release: ${r.status} ${JSON.stringify(r.body)}`);
    await quiet(rt);
    const m = await meter(rt);
    cpu += (workerdCpuMs() ?? 0) - (cpu0 ?? 0);
    const windows = m.windows.slice(-2);
    for (const [k, w] of [
      ["allocate", windows.find((x) => x.path === "/scheduler/devices/allocate")],
      ["release", windows.find((x) => x.path === "/scheduler/devices/release")],
    ]) {
      if (!w) throw new Error(`no metered window for ${k}`);
      lat[k].push(w.ms);
      win[k] = win[k] ? add(win[k], w.counts) : w.counts;
    }
    const delta = Object.fromEntries(
      Object.entries(m.counts)
        .filter(([k]) => k !== "commitsBy")
        .map(([k, v]) => [k, v - (start[k] ?? 0)]),
    );
    total = total ? add(total, delta) : delta;
  }
  const writers = Object.fromEntries(
    Object.entries((await meter(rt)).writers ?? {})
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => [k, Math.round((v / n) * 100) / 100]),
  );
  return { lat, allocate: per(win.allocate, n), release: per(win.release, n), cycle: per(total, n), cpuMs: cpu / n, writers };
}

export async function run(_shared, { quick, log }) {
  const n = quick ? 6 : 20;
  const rt = await startRuntime({ vars: { ALLOW_SHORT_DURATIONS: "true", METER: "on" } });
  try {
    const admin = adminToken();
    const [pool] = await setupFleet(rt, { name: "cost", pools: 1, devices: 4, adminToken: admin });
    const [u] = await setupUsers(rt, { prefix: "cost-user", count: 1, adminToken: admin });
    // Warm: the objects exist and the balance is known, as in steady use.
    await cycles(rt, { n: 2, u, pool, hop: 0 });
    const base = await cycles(rt, { n, u, pool, hop: 0 });
    const slow = await cycles(rt, { n: Math.max(4, Math.round(n / 2)), u, pool, hop: HOP_MS });
    const trips = (k) => Math.round((median(slow.lat[k]) - median(base.lat[k])) / HOP_MS);
    const criticalPath = {
      method: `serial cycles on a quiet service; round trips: the latency added by delaying each object answer ${HOP_MS} ms, ÷ ${HOP_MS}`,
      // Commits before the answer, and those of the objects the request's own calls reach (the user's and the device's).
      allocate: {
        roundTrips: trips("allocate"),
        commits: base.allocate.commits,
        commitsOnPath: onPath(base.allocate),
        p50Ms: median(base.lat.allocate),
      },
      release: {
        roundTrips: trips("release"),
        commits: base.release.commits,
        commitsOnPath: onPath(base.release),
        p50Ms: median(base.lat.release),
      },
      counted: { allocate: base.allocate, release: base.release },
    };
    // An object request's active time (duration is billed for it): the cycle's latency over its round trips.
    const objectMs =
      (median(base.lat.allocate) + median(base.lat.release)) /
      Math.max(1, criticalPath.allocate.roundTrips + criticalPath.release.roundTrips);
    const costPerCycle = {
      rowsWrittenBy: base.writers,
      ...base.cycle,
      workerdCpuMs: Math.round(base.cpuMs * 100) / 100,
      objectMs: Math.round(objectMs * 100) / 100,
      cycles: n,
    };
    const cost = {
      usdPerMillionCycles: cyclePrice(costPerCycle).usdPerMillion,
      breakdown: cyclePrice(costPerCycle).parts,
      protocolFloor: { perCycle: floorCycle(), usdPerMillionCycles: cyclePrice(floorCycle()).usdPerMillion },
    };
    log(
      `allocate: ${criticalPath.allocate.roundTrips} round trips, ${criticalPath.allocate.commits} commits; ` +
        `release: ${criticalPath.release.roundTrips} round trips, ${criticalPath.release.commits} commits; ` +
        `$${cost.usdPerMillionCycles} per million cycles (protocol floor $${cost.protocolFloor.usdPerMillionCycles})`,
    );
    return { criticalPath, costPerCycle, cost };
  } finally {
    await rt.stop();
  }
}
