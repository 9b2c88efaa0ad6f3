// Allocate + release under load: many users over many devices. Each client is its own user
// (free plan, topped up so money never refuses) and loops allocate → release on one pool;
// every HTTP request is counted. Refusals (402, 409, ...) are counted by code and are not
// successes. `shards` runs the same load with the devices split over 1, 4 or 16 pools.
import { readFileSync, readdirSync } from "node:fs";
import { JWT_SECRET } from "../lib/runtime.mjs";
import { request, runClients, summarize } from "../lib/load.mjs";
import { pool } from "../lib/feed.mjs";
import { signToken } from "../../scripts/lib.mjs";

/** A small device: inside the free plan's per-device limits (4 cores, 8 GB, 64 GB). */
export const DEVICE_SPEC = { cpuCores: 2, memoryMB: 4096, storageMB: 32768 };
/** Devices per node inside a pool (the pool orders nodes by strategy, then looks up by index). */
const DEVICES_PER_NODE = 8;
/** Credit per bench user (minor units): 1,000.00 USD, far more than any run spends. */
const TOP_UP = 100_000;
/** Requests the setup keeps in flight (registration, top-ups). */
const SETUP_CONCURRENCY = 24;

const auth = (token) => ({ authorization: `Bearer ${token}` });

/**
 * CPU time (ms, user + system) used so far by the workerd processes this Node process started;
 * null where /proc is missing. Per request it is the cost of one request in the runtime, much
 * less sensitive than requests/s to other work on the machine (workerd runs all JS on one thread).
 */
export function workerdCpuMs() {
  let ticks = 0;
  let found = false;
  try {
    for (const pid of readdirSync("/proc")) {
      if (!/^\d+$/.test(pid)) continue;
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        if (!/\(workerd[^)]*\)/.test(stat)) continue;
        const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        if (Number(f[1]) !== process.pid) continue;
        ticks += Number(f[11]) + Number(f[12]);
        found = true;
      } catch {
        /* process went away */
      }
    }
  } catch {
    return null;
  }
  // USER_HZ is 100 on every Linux the bench targets.
  return found ? ticks * 10 : null;
}

/** CPU per request and how busy workerd was over a window (null without /proc). */
export function cpuFigures(cpu0, cpu1, requests, wallMs) {
  if (cpu0 === null || cpu1 === null || !requests) return { workerdCpuMsPerRequest: null, workerdBusyPercent: null };
  return {
    workerdCpuMsPerRequest: Math.round(((cpu1 - cpu0) / requests) * 1000) / 1000,
    workerdBusyPercent: Math.round((100 * (cpu1 - cpu0)) / wallMs),
  };
}

/**
 * Registers `devices` devices spread evenly over `pools` pools named `<name>-p<k>`
 * (≥ 2 devices per client is the rule of the runs). Returns the pool names.
 */
export async function setupFleet(rt, { name, pools, devices, adminToken }) {
  const names = Array.from({ length: pools }, (_, k) => `${name}-p${k}`);
  const list = Array.from({ length: devices }, (_, i) => {
    const poolName = names[i % pools];
    const j = Math.floor(i / pools);
    return {
      deviceId: `${poolName}-d${j}`,
      pool: poolName,
      node: `${poolName}-n${Math.floor(j / DEVICES_PER_NODE)}`,
      ...DEVICE_SPEC,
    };
  });
  await pool(list, SETUP_CONCURRENCY, async (d) => {
    const r = await request(rt.main, "POST", "/admin/devices", {
      body: d,
      headers: auth(adminToken),
      clients: SETUP_CONCURRENCY,
    });
    if (r.status !== 201 && !(r.status === 409 && r.body?.error?.code === "DEVICE_EXISTS"))
      throw new Error(`register ${d.deviceId}: ${r.status} ${JSON.stringify(r.body)}`);
  });
  return names;
}

/**
 * `count` users named `<prefix>-<i>`, each with a token and a top-up, and their quota object
 * created (the first call of a user opens its UserQuota and its D1 account).
 */
export async function setupUsers(rt, { prefix, count, adminToken }) {
  const users = Array.from({ length: count }, (_, i) => {
    const userId = `${prefix}-${i}`;
    return { userId, token: signToken(JWT_SECRET, userId, "user", 86_400) };
  });
  await pool(users, SETUP_CONCURRENCY, async (u) => {
    const t = await request(rt.main, "POST", `/billing/users/${u.userId}/top-ups?create=true`, {
      body: { amountMinor: TOP_UP, paymentId: `bench-${u.userId}` },
      headers: auth(adminToken),
      clients: SETUP_CONCURRENCY,
    });
    if (t.status !== 201 && t.status !== 200) throw new Error(`top-up ${u.userId}: ${t.status} ${JSON.stringify(t.body)}`);
    const q = await request(rt.main, "GET", `/quotas/user/${u.userId}`, {
      headers: auth(u.token),
      clients: SETUP_CONCURRENCY,
    });
    if (q.status !== 200) throw new Error(`quota ${u.userId}: ${q.status} ${JSON.stringify(q.body)}`);
  });
  return users;
}

const codeOf = (res) => `${res.status} ${res.body?.error?.code ?? ""}`.trim();
const bump = (m, k) => (m[k] = (m[k] ?? 0) + 1);

/**
 * `clients` users (users[i] for client i) loop allocate → release for `seconds`, client i on
 * pool `pools[i % pools.length]`. Successful requests make `rps`; refusals are counted apart.
 */
export async function allocateRelease(rt, { clients, seconds, warmupSeconds = 1, users, pools, durationMinutes = 1, paceMs = 0 }) {
  if (users.length < clients) throw new Error(`need ${clients} users, have ${users.length}`);
  const alloc = [];
  const rel = [];
  const both = [];
  const refusals = {};
  const releaseFailures = {};
  let okRequests = 0;
  let attempted = 0;
  let cycles = 0;
  // Every request the runtime served in the window (warm-up included), for CPU per request.
  let served = 0;
  const cpu0 = workerdCpuMs();
  const wall0 = performance.now();
  const r = await runClients({
    clients,
    seconds,
    warmupSeconds,
    paceMs,
    step: async (i, counting) => {
      const u = users[i];
      const headers = auth(u.token);
      const a = await request(rt.main, "POST", "/scheduler/devices/allocate", {
        body: { pool: pools[i % pools.length], durationMinutes },
        headers,
        clients,
      });
      served++;
      const countA = counting();
      if (countA) attempted++;
      if (a.status !== 201) {
        if (countA) bump(refusals, codeOf(a));
        return 1;
      }
      if (countA) {
        okRequests++;
        alloc.push(a.ms);
        both.push(a.ms);
      }
      const x = await request(rt.main, "POST", "/scheduler/devices/release", {
        body: { deviceId: a.body.deviceId },
        headers,
        clients,
      });
      served++;
      const countR = counting();
      if (countR) attempted++;
      if (x.status !== 200) {
        if (countR) bump(releaseFailures, codeOf(x));
        return 2;
      }
      if (countR) {
        okRequests++;
        rel.push(x.ms);
        both.push(x.ms);
        cycles++;
      }
      return 2;
    },
  });
  const cpu = cpuFigures(cpu0, workerdCpuMs(), served, performance.now() - wall0);
  const a = summarize(alloc);
  const x = summarize(rel);
  const all = summarize(both);
  return {
    clients,
    pools: pools.length,
    devicesPerClient: null,
    seconds: Math.round(r.seconds * 100) / 100,
    rps: Math.round(okRequests / r.seconds),
    attemptedRps: Math.round(attempted / r.seconds),
    cyclesPerSecond: Math.round(cycles / r.seconds),
    p50Ms: all.p50Ms,
    p99Ms: all.p99Ms,
    allocate: { count: a.count, p50Ms: a.p50Ms, p99Ms: a.p99Ms, maxMs: a.maxMs },
    release: { count: x.count, p50Ms: x.p50Ms, p99Ms: x.p99Ms, maxMs: x.maxMs },
    refusals,
    refused: Object.values(refusals).reduce((s, n) => s + n, 0),
    releaseFailures,
    networkErrors: r.errors,
    ...cpu,
  };
}

/** Devices still allocated in `pools` (after a run every client has released what it got). */
export async function stillAllocated(rt, { pools, adminToken }) {
  let n = 0;
  for (const p of pools) {
    const r = await request(rt.main, "GET", `/admin/pools/${p}`, { headers: auth(adminToken), clients: 1 });
    if (r.status === 200) n += r.body.allocated ?? 0;
  }
  return n;
}

export const LEVELS = [10, 50, 200];
export const SHARDS = [1, 4, 16];
/** The main runs spread their devices over this many pools (the shard runs vary it). */
export const MAIN_POOLS = 4;
export const SHARD_CLIENTS = 50;
/** The paced run: 50 clients, each one allocate + release every second (100 requests/s offered). */
export const PACED_CLIENTS = 50;
export const PACED_CYCLE_MS = 1000;

/**
 * allocate + release at 10, 50 and 200 clients (one fleet of 2 × 200 devices over MAIN_POOLS
 * pools; each level uses its own users). Returns {allocateRelease (at 50), levels}.
 */
export async function runLevels(rt, { seconds, warmupSeconds = 1, log = () => {}, levels = LEVELS, adminToken }) {
  const max = Math.max(...levels);
  const t0 = Date.now();
  const pools = await setupFleet(rt, { name: "bench-main", pools: MAIN_POOLS, devices: 2 * max, adminToken });
  log(`  fleet: ${2 * max} devices over ${pools.length} pools (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  const out = [];
  for (const clients of levels) {
    const users = await setupUsers(rt, { prefix: `bench-c${clients}`, count: clients, adminToken });
    const r = await allocateRelease(rt, { clients, seconds, warmupSeconds, users, pools });
    r.devicesPerClient = (2 * max) / clients;
    r.leftAllocated = await stillAllocated(rt, { pools, adminToken });
    log(
      `  ${clients} clients: ${r.rps} req/s, allocate p50/p99 ${r.allocate.p50Ms}/${r.allocate.p99Ms} ms, ` +
        `release ${r.release.p50Ms}/${r.release.p99Ms} ms, refused ${r.refused}`,
    );
    out.push(r);
  }
  const at50 = out.find((r) => r.clients === 50) ?? out[0];
  // The same 50 clients at a fixed, lower load (one allocate + release per client per
  // PACED_CYCLE_MS): latency when the runtime is not saturated, beside the closed loop above.
  let paced = null;
  if (levels.includes(PACED_CLIENTS)) {
    const users = await setupUsers(rt, { prefix: "bench-paced", count: PACED_CLIENTS, adminToken });
    // Two cycles of each client not counted: their first allocation opens a new user's state.
    paced = await allocateRelease(rt, {
      clients: PACED_CLIENTS,
      seconds,
      warmupSeconds: Math.max(warmupSeconds, (2 * PACED_CYCLE_MS) / 1000),
      users,
      pools,
      paceMs: PACED_CYCLE_MS,
    });
    paced.offeredRps = Math.round((2 * PACED_CLIENTS * 1000) / PACED_CYCLE_MS);
    log(
      `  ${PACED_CLIENTS} clients paced (${paced.offeredRps} req/s offered): ${paced.rps} req/s, ` +
        `allocate p50/p99 ${paced.allocate.p50Ms}/${paced.allocate.p99Ms} ms, release ${paced.release.p50Ms}/${paced.release.p99Ms} ms`,
    );
  }
  return { allocateRelease: { ...at50, paced }, levels: out };
}

/** The same load at SHARD_CLIENTS clients with 2 × clients devices split over 1, 4, 16 pools. */
export async function runShards(rt, { seconds, warmupSeconds = 1, log = () => {}, shards = SHARDS, adminToken }) {
  const out = [];
  for (const n of shards) {
    const pools = await setupFleet(rt, { name: `bench-s${n}`, pools: n, devices: 2 * SHARD_CLIENTS, adminToken });
    const users = await setupUsers(rt, { prefix: `bench-s${n}`, count: SHARD_CLIENTS, adminToken });
    const r = await allocateRelease(rt, { clients: SHARD_CLIENTS, seconds, warmupSeconds, users, pools });
    r.devicesPerClient = 2;
    r.leftAllocated = await stillAllocated(rt, { pools, adminToken });
    log(`  ${n} shard(s): ${r.rps} req/s, allocate p50/p99 ${r.allocate.p50Ms}/${r.allocate.p99Ms} ms, refused ${r.refused}`);
    out.push({ shards: n, ...r });
  }
  return { shards: out };
}

export function adminToken() {
  return signToken(JWT_SECRET, "bench-admin", "admin", 86_400);
}

/** Both parts, in the shape the other scenarios use. */
export async function run(rt, { quick = false, log = () => {} } = {}) {
  const seconds = quick ? 2.5 : 10;
  const warmupSeconds = quick ? 0.5 : 1;
  const admin = adminToken();
  return {
    ...(await runLevels(rt, { seconds, warmupSeconds, log, adminToken: admin })),
    ...(await runShards(rt, { seconds, warmupSeconds, log, adminToken: admin })),
  };
}
