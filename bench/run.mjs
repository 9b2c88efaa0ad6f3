#!/usr/bin/env node
// npm run bench [-- --quick] [-- --only floor,allocate,...]
//
// Starts the built Worker in workerd through Miniflare (direct sockets on 127.0.0.1, no dev
// proxy) next to the floor Worker, measures in one run:
//   floor      bare response, no-op Durable Object RPC, one SQLite write in one object,
//              at the concurrencies of the allocate runs (10, 50, 200 clients)
//   allocate   allocate + release at 10, 50, 200 clients (each client its own user)
//   shards     the same at 50 clients with the devices split over 1, 4, 16 pools
//   cost       what one allocate + release costs, counted: round trips, commits, rows, requests, price
//   expiry, feed, sockets, ingestion   bench/scenarios/<name>.mjs, when present
// and writes bench/results.json plus a readable table (figures beside the floor, ratios,
// targets). Every load generator targets 127.0.0.1 only and stops by itself; the runtime
// is disposed on success, on error and on Ctrl+C.
import os from "node:os";
import path from "node:path";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { root, startRuntime } from "./lib/runtime.mjs";
import { request, runClients, summarize } from "./lib/load.mjs";
import { evaluateTargets, renderReport } from "./lib/report.mjs";
import {
  LEVELS,
  MAIN_POOLS,
  SHARDS,
  SHARD_CLIENTS,
  adminToken,
  cpuFigures,
  runLevels,
  runShards,
  workerdCpuMs,
} from "./scenarios/allocate.mjs";

const ALL = ["floor", "allocate", "shards", "cost", "expiry", "queue", "feed", "sockets", "ingestion", "noisy"];
const EXTERNAL = new Set(["cost", "expiry", "queue", "feed", "sockets", "ingestion", "noisy"]);
// Measured on a runtime of their own: memory figures are only clean on a process that has not
// just held thousands of other objects (freed memory is reused, so deltas would read low).
const FRESH = new Set(["sockets"]);

const usageError = (message) => Object.assign(new Error(message), { usage: true });

function parse(argv) {
  const out = { quick: false, only: null, storage: "disk", out: path.join(root, "bench", "results.json") };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--quick") out.quick = true;
    else if (a === "--only" || a.startsWith("--only=")) {
      const v = a.includes("=") ? a.slice(a.indexOf("=") + 1) : argv[++i];
      out.only = (v ?? "")
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
    } else if (a === "--out" || a.startsWith("--out=")) {
      out.out = path.resolve(a.includes("=") ? a.slice(a.indexOf("=") + 1) : argv[++i]);
    } else if (a === "--storage" || a.startsWith("--storage=")) {
      out.storage = a.includes("=") ? a.slice(a.indexOf("=") + 1) : argv[++i];
      if (!["disk", "memory"].includes(out.storage)) throw usageError(`--storage: disk or memory, not ${out.storage}`);
    } else if (a === "--help" || a === "-h") {
      console.log(`usage: npm run bench [-- --quick] [-- --only ${ALL.join(",")}] [-- --storage disk|memory] [-- --out file.json]`);
      process.exit(0);
    } else {
      throw usageError(`unknown argument ${a} (try --help)`);
    }
  }
  const bad = (out.only ?? []).filter((n) => !ALL.includes(n));
  if (bad.length) throw usageError(`--only: unknown ${bad.join(", ")} (known: ${ALL.join(", ")})`);
  return out;
}

/** Seconds per measurement: --quick keeps the whole run under 3 minutes on 2 cores. */
function timing(quick) {
  return quick
    ? { floorSeconds: 1, floorWarmup: 0.4, allocSeconds: 2.5, allocWarmup: 0.5, shardSeconds: 2.5, scenarioLimit: 75 }
    : { floorSeconds: 5, floorWarmup: 1, allocSeconds: 10, allocWarmup: 1, shardSeconds: 10, scenarioLimit: 400 };
}

function machine() {
  const version = (p) => {
    try {
      return JSON.parse(readFileSync(path.join(root, "node_modules", p, "package.json"), "utf8")).version;
    } catch {
      return null;
    }
  };
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model?.trim() ?? null,
    memoryMB: Math.round(os.totalmem() / 2 ** 20),
    platform: `${process.platform} ${os.release()}`,
    node: process.version,
    workerd: version("workerd"),
    miniflare: version("miniflare"),
    loadAverageAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/** Rejects after `seconds` (the load generators are bounded; this catches a hung scenario). */
function limited(promise, seconds, name) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${name} did not finish within ${seconds} s`)), seconds * 1000);
      timer.unref();
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * One floor request shape at `clients`: requests/s, p50/p99 and workerd CPU per request.
 * `paths(i)` gives client i's requests for one step (the protocol floor is two: alloc, release).
 */
async function floorMeasure(rt, paths, { clients, seconds, warmupSeconds }) {
  const lat = [];
  let served = 0;
  const cpu0 = workerdCpuMs();
  const wall0 = performance.now();
  const r = await runClients({
    clients,
    seconds,
    warmupSeconds,
    step: async (i, counting) => {
      const list = paths(i);
      for (const p of list) {
        const res = await request(rt.floor, "GET", p, { clients });
        served++;
        if (res.status !== 200) throw new Error(`${p}: ${res.status}`);
        if (counting()) lat.push(res.ms);
      }
      return list.length;
    },
  });
  const s = summarize(lat);
  return {
    rps: r.rps,
    p50Ms: s.p50Ms,
    p99Ms: s.p99Ms,
    count: s.count,
    errors: r.errors,
    ...cpuFigures(cpu0, workerdCpuMs(), served, performance.now() - wall0),
  };
}

/** The floor shapes: bare Worker, no-op RPC, one SQLite write, and the protocol floor (see bench/lib/runtime.mjs). */
const FLOOR_SHAPES = {
  bare: () => ["/bare"],
  noop: () => ["/noop"],
  write: () => ["/write"],
  // Each client its own user and device, pools shared as in the allocate runs.
  protocol: (i) => [`/alloc?u=c${i}&p=${i % MAIN_POOLS}&d=c${i}`, `/release?u=c${i}&p=${i % MAIN_POOLS}&d=c${i}`],
};

async function runFloor(rt, { seconds, warmupSeconds, log }) {
  // One short pass first so the JIT and the floor objects are warm for every figure.
  for (const shape of Object.values(FLOOR_SHAPES)) await floorMeasure(rt, shape, { clients: 10, seconds: 0.3, warmupSeconds: 0.2 });
  const levels = [];
  for (const clients of LEVELS) {
    const l = { clients };
    for (const [k, shape] of Object.entries(FLOOR_SHAPES)) l[k] = await floorMeasure(rt, shape, { clients, seconds, warmupSeconds });
    log(
      `  ${clients} clients: bare ${l.bare.rps} req/s, no-op RPC ${l.noop.rps} req/s, ` +
        `SQLite write ${l.write.rps} req/s (p99 ${l.write.p99Ms} ms), ` +
        `protocol floor ${l.protocol.rps} req/s (p99 ${l.protocol.p99Ms} ms)`,
    );
    levels.push(l);
  }
  const at = levels.find((l) => l.clients === 50) ?? levels[0];
  return {
    floor: {
      clients: at.clients,
      workerRps: at.bare.rps,
      noopRpcRps: at.noop.rps,
      sqliteWriteRps: at.write.rps,
      protocolRps: at.protocol.rps,
      bare: at.bare,
      noop: at.noop,
      write: at.write,
      protocol: at.protocol,
      levels,
    },
  };
}

async function main() {
  const args = parse(process.argv.slice(2));
  // The floor Worker's script path is resolved against the working directory.
  process.chdir(root);
  const t = timing(args.quick);
  const selected = args.only ?? ALL;
  const log = (m) => process.stderr.write(`${m}\n`);
  const started = Date.now();
  const results = {
    date: new Date().toISOString(),
    quick: args.quick,
    only: args.only,
    machine: machine(),
    settings: { ...t, levels: LEVELS, shards: SHARDS, shardClients: SHARD_CLIENTS, storage: args.storage },
    floor: null,
    allocateRelease: null,
    ratios: {
      allocateReleaseToWriteFloor: null,
      writeFloorCpuToAllocateReleaseCpu: null,
      allocateReleaseToNoopFloor: null,
      protocolFloorToWriteFloor: null,
      allocateReleaseToProtocolFloor: null,
      allocateP99ToWriteFloorP99: null,
    },
    shards: null,
    criticalPath: null,
    costPerCycle: null,
    cost: null,
    expiryLagMs: null,
    queueHandoverMs: null,
    reservationStartLagMs: null,
    feedLatencyMs: null,
    idleSockets: null,
    ingestionRps: null,
    targets: null,
    notes: [],
    errors: [],
  };

  let rt = null;
  let memoryDir = null;
  let starting = null;
  let stopping = null;
  // Also while it is still starting: the runtime is disposed as soon as it is up.
  const stop = () => (stopping ??= (starting ?? Promise.resolve(null)).then((r) => r?.stop()).catch(() => {}));
  const onSignal = (sig) => {
    log(`\n${sig}: stopping the runtime`);
    stop().finally(() => {
      if (memoryDir) rmSync(memoryDir, { recursive: true, force: true });
      process.exit(130);
    });
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    log(`building and starting the Worker (workerd ${results.machine.workerd})...`);
    // Where Durable Objects and D1 keep their SQLite files: the default temporary directory on
    // disk (as `wrangler dev`), or /dev/shm (no fsync cost: what the runtime costs without this disk).
    if (args.storage === "memory") {
      if (!existsSync("/dev/shm")) throw new Error("--storage memory needs /dev/shm");
      memoryDir = mkdtempSync(path.join("/dev/shm", "edge-bench-"));
    }
    starting = startRuntime({
      vars: { ALLOW_SHORT_DURATIONS: "true" },
      ...(memoryDir ? { persistDir: memoryDir } : {}),
      log: (m) => log(`  ${m}`),
    });
    rt = await starting;
    log(`  main ${rt.main}, floor ${rt.floor}`);
    const admin = adminToken();
    const steps = {
      floor: () => runFloor(rt, { seconds: t.floorSeconds, warmupSeconds: t.floorWarmup, log }),
      allocate: () =>
        runLevels(rt, { seconds: t.allocSeconds, warmupSeconds: t.allocWarmup, log, adminToken: admin }).then((r) => ({
          allocateRelease: { ...r.allocateRelease, levels: r.levels },
        })),
      shards: () => runShards(rt, { seconds: t.shardSeconds, warmupSeconds: t.allocWarmup, log, adminToken: admin }),
    };
    for (const name of selected) {
      const t0 = Date.now();
      let step = steps[name];
      if (EXTERNAL.has(name)) {
        const file = path.join(root, "bench", "scenarios", `${name}.mjs`);
        if (!existsSync(file)) {
          const note = `${name}: skipped, bench/scenarios/${name}.mjs does not exist (yet)`;
          log(note);
          results.notes.push(note);
          continue;
        }
        step = async () => {
          const mod = await import(pathToFileURL(file).href);
          if (typeof mod.run !== "function") throw new Error(`bench/scenarios/${name}.mjs exports no run()`);
          if (!FRESH.has(name)) return mod.run(rt, { quick: args.quick, log: (m) => log(`  ${m}`) });
          // The shared runtime stops first, so only the fresh one's memory is counted.
          await rt.stop();
          let own;
          try {
            own = await startRuntime({
              vars: { ALLOW_SHORT_DURATIONS: "true" },
              ...(memoryDir ? { persistDir: mkdtempSync(path.join(memoryDir, "fresh-")) } : {}),
            });
            return await mod.run(own, { quick: args.quick, log: (m) => log(`  ${m}`) });
          } finally {
            await own?.stop();
            rt = await startRuntime({
              vars: { ALLOW_SHORT_DURATIONS: "true" },
              ...(memoryDir ? { persistDir: mkdtempSync(path.join(memoryDir, "main-")) } : {}),
            });
            starting = Promise.resolve(rt);
          }
        };
      }
      log(`${name}...`);
      try {
        const part = await limited(step(), name === "floor" || EXTERNAL.has(name) ? t.scenarioLimit : t.scenarioLimit * 2, name);
        Object.assign(results, part);
      } catch (err) {
        log(`  ${name} failed: ${err?.stack ?? err}`);
        results.errors.push({ scenario: name, error: String(err?.message ?? err) });
      }
      log(`  (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    }
  } finally {
    await stop();
    if (memoryDir) rmSync(memoryDir, { recursive: true, force: true });
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }

  const f = results.floor;
  const ar = results.allocateRelease;
  if (f && ar) {
    const r3 = (x) => Math.round(x * 1000) / 1000;
    results.ratios = {
      allocateReleaseToWriteFloor: f.sqliteWriteRps ? r3(ar.rps / f.sqliteWriteRps) : null,
      // The same comparison in runtime CPU per request (write floor ÷ allocate/release): what the
      // requests/s ratio would be if the run were CPU-bound, and steadier when the machine is shared.
      writeFloorCpuToAllocateReleaseCpu:
        f.write.workerdCpuMsPerRequest && ar.workerdCpuMsPerRequest ? r3(f.write.workerdCpuMsPerRequest / ar.workerdCpuMsPerRequest) : null,
      allocateReleaseToNoopFloor: f.noopRpcRps ? r3(ar.rps / f.noopRpcRps) : null,
      // The same protocol with no logic (one write per step): the share of the gap that is the runtime's.
      protocolFloorToWriteFloor: f.sqliteWriteRps && f.protocolRps ? r3(f.protocolRps / f.sqliteWriteRps) : null,
      allocateReleaseToProtocolFloor: f.protocolRps ? r3(ar.rps / f.protocolRps) : null,
      allocateP99ToWriteFloorP99: f.write.p99Ms ? r3(ar.allocate.p99Ms / f.write.p99Ms) : null,
    };
    for (const l of ar.levels ?? []) {
      const fl = f.levels.find((x) => x.clients === l.clients);
      if (fl) {
        l.toWriteFloor = {
          writeFloorRps: fl.write.rps,
          ratio: fl.write.rps ? r3(l.rps / fl.write.rps) : null,
          writeFloorP99Ms: fl.write.p99Ms,
        };
        l.toProtocolFloor = {
          protocolFloorRps: fl.protocol.rps,
          ratio: fl.protocol.rps ? r3(l.rps / fl.protocol.rps) : null,
          protocolFloorP99Ms: fl.protocol.p99Ms,
        };
      }
    }
  }
  for (const r of [...(ar?.levels ?? []), ...(results.shards ?? [])])
    if (r.leftAllocated)
      results.notes.push(
        `${r.clients} clients${r.shards ? `, ${r.shards} shards` : ""}: ` +
          `${r.leftAllocated} devices still allocated after the run (a release failed)`,
      );
  const cap = results.idleSockets?.capped;
  if (cap)
    results.notes.push(
      `sockets: ${cap.wanted} wanted, ${cap.reached} held: workerd keeps ${cap.fdsPerConnection} descriptors per connection and its ` +
        `limit here is ${cap.workerdFdLimit} ` +
        `(${cap.workerdFdsBefore} in use before the level); at the measured cost ${cap.wanted} would take about ` +
        `${results.idleSockets.projected?.rssMB} MB`,
    );
  results.machine.loadAverageAtEnd = os.loadavg().map((x) => Math.round(x * 100) / 100);
  results.targets = evaluateTargets(results);
  results.durationSeconds = Math.round((Date.now() - started) / 100) / 10;
  if (results.machine.loadAverageAtStart[0] > 0.5 * results.machine.cpus)
    results.notes.push(
      `the machine was busy when the run started ` +
        `(load average ${results.machine.loadAverageAtStart[0]} on ${results.machine.cpus} CPUs): figures are noisy`,
    );

  writeFileSync(args.out, JSON.stringify(results, null, 2) + "\n");
  console.log(renderReport(results));
  console.log(`\nwrote ${path.relative(process.cwd(), args.out)} in ${results.durationSeconds} s`);
  if (results.errors.length) process.exitCode = 1;
}

main().catch((err) => {
  // A wrong argument is the caller's to fix: its message is enough.
  console.error(err?.usage ? `bench: ${err.message}` : (err?.stack ?? String(err)));
  process.exit(err?.usage ? 2 : 1);
});
