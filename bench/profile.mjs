#!/usr/bin/env node
// npm run bench:profile [-- --seconds 8] [-- --clients 50] [-- --top 40] [-- --pools 4] [-- --devices 400] [-- --no-profile --reps 3]
//
// Where the allocate + release load spends the runtime's CPU: starts the built Worker in workerd
// (bench/lib/runtime.mjs) with V8's inspector on 127.0.0.1, runs the bench's allocate → release
// loop and records a sampling CPU profile of the main Worker's isolate through the Chrome DevTools
// protocol. Writes .bench/profile-<time>.cpuprofile (open it in Chrome DevTools or speedscope)
// and prints the top functions by self time, and self time by source (our files, each library,
// the runtime's natives, garbage collection, idle). With --no-profile it only runs the load
// --reps times and prints requests/s and workerd CPU per request (for before/after
// comparisons of a change). Bounded: the load stops by itself.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { root, startRuntime, workerdRssMB } from "./lib/runtime.mjs";
import { adminToken, allocateRelease, setupFleet, setupUsers } from "./scenarios/allocate.mjs";
import { parseArgs } from "../scripts/lib.mjs";

const argv = parseArgs(process.argv.slice(2), { booleans: ["help", "no-profile"] });
if (argv.help) {
  console.log("npm run bench:profile -- [--seconds 8] [--clients 50] [--top 40] [--pools 4] [--devices 400] [--no-profile --reps 3]");
  process.exit(0);
}
const PROFILE = !argv["no-profile"];

const num = (name, d, min, max) => {
  const v = argv[name] === undefined ? d : Number(argv[name]);
  if (!Number.isInteger(v) || v < min || v > max) {
    console.error(`bench:profile: --${name} takes a whole number from ${min} to ${max}`);
    process.exit(2);
  }
  return v;
};
const SECONDS = num("seconds", 8, 1, 120);
const CLIENTS = num("clients", 50, 1, 500);
const TOP = num("top", 40, 1, 500);
const POOLS = num("pools", 4, 1, 64);
// As the bench's allocate runs: one fleet of 2 × 200 devices.
const DEVICES = num("devices", 400, 1, 5000);
const REPS = num("reps", 3, 1, 20);
const log = (m) => process.stderr.write(`${m}\n`);

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

/** A minimal DevTools protocol client over the inspector's WebSocket. */
async function connect(url) {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = (e) => reject(new Error(`inspector: ${e.message ?? "connection failed"}`));
  });
  let id = 0;
  const waiting = new Map();
  ws.onmessage = (e) => {
    const m = JSON.parse(String(e.data));
    if (m.id && waiting.has(m.id)) {
      const { resolve, reject } = waiting.get(m.id);
      waiting.delete(m.id);
      if (m.error) reject(new Error(`${m.error.message}`));
      else resolve(m.result);
    }
  };
  return {
    send: (method, params = {}) =>
      new Promise((resolve, reject) => {
        const i = ++id;
        waiting.set(i, { resolve, reject });
        ws.send(JSON.stringify({ id: i, method, params }));
      }),
    close: () => ws.close(),
  };
}

/** Which bucket a profile node's self time goes to. */
function sourceOf(node) {
  const { functionName, url } = node.callFrame;
  if (functionName === "(garbage collector)") return "garbage collection";
  if (functionName === "(idle)") return "idle";
  if (functionName === "(program)") return "runtime (program: C++ outside JS)";
  if (!url) return `native: ${functionName || "(anonymous)"}`;
  return url;
}

/**
 * The bundle is one file: map a position in it to the source module wrangler bundled there
 * (esbuild writes `// path/to/file.ts` before each module).
 */
function moduleMap(bundle) {
  const marks = [];
  const lines = bundle.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const m = /^\/\/ (\S+\.(?:ts|js|mjs|cjs))$/.exec(lines[i]);
    if (m) marks.push([i, m[1]]);
  }
  return (line) => {
    let lo = 0;
    let hi = marks.length - 1;
    let best = "(bundle)";
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (marks[mid][0] <= line) {
        best = marks[mid][1];
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return best.replace(/^.*node_modules\/((?:@[^/]+\/)?[^/]+).*$/, "npm: $1");
  };
}

async function main() {
  process.chdir(root);
  const inspectorPort = await freePort();
  log(`building and starting the Worker${PROFILE ? ` with the inspector on 127.0.0.1:${inspectorPort}` : ""}...`);
  const rt = await startRuntime({
    vars: { ALLOW_SHORT_DURATIONS: "true" },
    ...(PROFILE ? { inspectorPort } : {}),
    log: (m) => log(`  ${m}`),
  });
  try {
    const admin = adminToken();
    const pools = await setupFleet(rt, { name: "prof", pools: POOLS, devices: DEVICES, adminToken: admin });
    const users = await setupUsers(rt, { prefix: "prof", count: CLIENTS, adminToken: admin });
    // Warm the JIT before sampling.
    await allocateRelease(rt, { clients: CLIENTS, seconds: 2, warmupSeconds: 0.5, users, pools });
    if (!PROFILE) {
      for (let i = 0; i < REPS; i++) {
        const r = await allocateRelease(rt, { clients: CLIENTS, seconds: SECONDS, warmupSeconds: 0.5, users, pools });
        console.log(
          `${CLIENTS} clients: ${r.rps} req/s, workerd CPU ${r.workerdCpuMsPerRequest} ms/request (busy ${r.workerdBusyPercent}%), ` +
            `allocate p50/p99 ${r.allocate.p50Ms}/${r.allocate.p99Ms} ms, release p50/p99 ${r.release.p50Ms}/${r.release.p99Ms} ms, ` +
            `refused ${r.refused}`,
        );
      }
      return;
    }

    const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json();
    const target = targets.find((t) => /main/.test(`${t.title} ${t.url} ${t.id}`)) ?? targets[0];
    log(`inspector targets: ${targets.map((t) => t.title || t.id).join(", ")}; profiling ${target.title || target.id}`);
    const cdp = await connect(target.webSocketDebuggerUrl);
    await cdp.send("Profiler.enable");
    await cdp.send("Profiler.setSamplingInterval", { interval: 200 });
    await cdp.send("Profiler.start");
    const r = await allocateRelease(rt, { clients: CLIENTS, seconds: SECONDS, warmupSeconds: 0, users, pools });
    const { profile } = await cdp.send("Profiler.stop");
    cdp.close();

    mkdirSync(path.join(root, ".bench"), { recursive: true });
    const file = path.join(root, ".bench", `profile-${new Date().toISOString().replace(/[:.]/g, "-")}.cpuprofile`);
    writeFileSync(file, JSON.stringify(profile));

    // Self time per node from the samples.
    const dt = new Map();
    for (let i = 0; i < profile.samples.length; i++)
      dt.set(profile.samples[i], (dt.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0));
    const total = [...dt.values()].reduce((s, x) => s + x, 0);
    const moduleAt = moduleMap(readFileSync(path.join(root, ".bench", "build", "index.js"), "utf8"));
    const byFn = new Map();
    const bySource = new Map();
    for (const n of profile.nodes) {
      const us = dt.get(n.id) ?? 0;
      if (!us) continue;
      let src = sourceOf(n);
      if (src.endsWith("index.js")) src = moduleAt(n.callFrame.lineNumber);
      const key = `${n.callFrame.functionName || "(anonymous)"}  [${src}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ""}]`;
      byFn.set(key, (byFn.get(key) ?? 0) + us);
      bySource.set(src, (bySource.get(src) ?? 0) + us);
    }
    const busy = total - (bySource.get("idle") ?? 0);
    const pct = (us) => `${((100 * us) / total).toFixed(1)}%`;
    console.log(
      `\n${r.rps} req/s (${r.cyclesPerSecond} allocate+release cycles/s) at ${CLIENTS} clients, ` +
        `allocate p50/p99 ${r.allocate.p50Ms}/${r.allocate.p99Ms} ms; workerd CPU ${r.workerdCpuMsPerRequest} ms/request, ` +
        `RSS ${workerdRssMB()} MB`,
    );
    console.log(
      `main isolate: ${(total / 1000).toFixed(0)} ms sampled, ${pct(busy)} not idle ` +
        `(${(busy / 1000 / (r.rps * SECONDS || 1)).toFixed(3)} ms per request)\n`,
    );
    console.log("self time by source");
    for (const [k, us] of [...bySource].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`  ${pct(us).padStart(6)}  ${k}`);
    console.log(`\ntop ${TOP} functions by self time`);
    for (const [k, us] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`  ${pct(us).padStart(6)}  ${k}`);
    console.log(`\nwrote ${path.relative(process.cwd(), file)}`);
  } finally {
    await rt.stop();
  }
}

main().catch((err) => {
  console.error(err?.stack ?? String(err));
  process.exit(1);
});
