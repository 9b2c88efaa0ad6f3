// Starts the built Worker in workerd through Miniflare, directly (no `wrangler dev` proxy),
// next to a "floor" Worker that measures the runtime itself: a bare response, a no-op
// Durable Object RPC and one SQLite write in a Durable Object. Both listen on their own
// 127.0.0.1 port (Miniflare's direct sockets, no router in front).
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const buildDir = path.join(root, ".bench", "build");

export const JWT_SECRET = "bench-jwt-secret-0123456789abcdef";
export const SERVICE_TOKEN = "bench-service-token-0123456789abcdef";

let built = null;

/** Bundles the Worker exactly as a deploy would (wrangler deploy --dry-run); once per process. */
export function buildWorker() {
  if (built) return built;
  mkdirSync(buildDir, { recursive: true });
  const bin = path.join(root, "node_modules", ".bin", process.platform === "win32" ? "wrangler.cmd" : "wrangler");
  // node_modules/.bin first, so wrangler's `#!/usr/bin/env node` finds the pinned Node 22.
  const PATH = [path.dirname(bin), process.env.PATH].filter(Boolean).join(path.delimiter);
  const r = spawnSync(bin, ["deploy", "--dry-run", "--outdir", buildDir], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, PATH, WRANGLER_SEND_METRICS: "false" },
    shell: process.platform === "win32",
  });
  if (r.status !== 0) throw new Error(`wrangler build failed:\n${r.stderr}`);
  return (built = path.join(buildDir, "index.js"));
}

// The floor Worker. Besides the three basic shapes it has the protocol floor: the messages
// and commits of our allocate and release with no logic at all (one SQLite write per step), so
// the runtime's own cost of the protocol's shape is measured beside ours:
//   /alloc    W → pool (read), then W → user (write) and W → device (write) side by side
//   /release  W → user → device (write), then the user (write)
// (the user's object, the pool and the device are objects of one class, by name.)
const FLOOR_SCRIPT = `
import { DurableObject } from "cloudflare:workers";
export class Floor extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS w (id INTEGER PRIMARY KEY, at INTEGER NOT NULL)");
  }
  noop() { return 1; }
  read() { return this.ctx.storage.sql.exec("SELECT COUNT(*) AS n FROM w").one().n; }
  write() { this.ctx.storage.sql.exec("INSERT INTO w (at) VALUES (?)", Date.now()); return 1; }
  at(name) { return this.env.FLOOR.getByName(name); }
  async userRelease(device) { await this.at("d:" + device).write(); this.write(); return 1; }
}
export default {
  async fetch(req, env) {
    const u = new URL(req.url);
    if (u.pathname === "/bare") return new Response("ok");
    const q = u.searchParams;
    if (u.pathname === "/alloc") {
      await env.FLOOR.getByName("p:" + q.get("p")).read();
      await Promise.all([env.FLOOR.getByName("u:" + q.get("u")).write(), env.FLOOR.getByName("d:" + q.get("d")).write()]);
      return new Response("ok");
    }
    if (u.pathname === "/release") {
      await env.FLOOR.getByName("u:" + q.get("u")).userRelease(q.get("d")); return new Response("ok");
    }
    const stub = env.FLOOR.getByName(q.get("o") ?? "one");
    if (u.pathname === "/noop") { await stub.noop(); return new Response("ok"); }
    if (u.pathname === "/write") { await stub.write(); return new Response("ok"); }
    return new Response("no", { status: 404 });
  },
};`;

// Opt-in (`control: true`): a third Worker for test harnesses, on its own 127.0.0.1 port, bound
// to the main Worker's D1 database and Durable Object classes: POST /sql {sql, params?, mode?:
// "all" | "run"} answers {ok, results, changes}; POST /evict {className, name, webSockets?}
// restarts one object (workerd's own eviction). Both are plain async HTTP. Miniflare's proxies
// (`db`, mf.unsafeEvictDurableObject) make synchronous calls (Atomics.wait) on this process's
// main thread; if workerd is meanwhile blocked writing a burst of logs into a pipe that this
// thread is not reading, both wait for ever. Under heavy logging (injected faults) use these.
const CONTROL_SCRIPT = `
import workerdUnsafe from "workerd:unsafe";
export default {
  async fetch(req, env) {
    const url = new URL(req.url);
    if (req.method !== "POST") return new Response("POST /sql or /evict", { status: 405 });
    try {
      const b = await req.json();
      if (url.pathname === "/sql") {
        const stmt = env.DB.prepare(b.sql).bind(...(b.params ?? []));
        const r = b.mode === "run" ? await stmt.run() : await stmt.all();
        return Response.json({ ok: true, results: r.results ?? [], changes: r.meta?.changes ?? 0 });
      }
      if (url.pathname === "/evict") {
        const ns = env[b.className];
        if (!ns) return Response.json({ ok: false, error: "no such class: " + b.className }, { status: 404 });
        await workerdUnsafe.evict(ns.get(ns.idFromName(b.name)), { webSockets: b.webSockets ?? "close" });
        return Response.json({ ok: true });
      }
      return Response.json({ ok: false, error: "not found" }, { status: 404 });
    } catch (err) {
      return Response.json({ ok: false, error: String(err) }, { status: 500 });
    }
  },
};`;

/**
 * Starts both Workers. `vars` override wrangler.toml vars (the bench turns on the test-only
 * short durations, which production refuses). Returns the base URLs and a stop function.
 */
export async function startRuntime({
  vars = {},
  log = () => {},
  persistDir,
  onWorkerLog,
  miniflareLog,
  control = false,
  inspectorPort,
  rateLimits = "raised",
} = {}) {
  const scriptPath = buildWorker();
  log(`built ${path.relative(root, scriptPath)}`);
  const { Miniflare, Log, LogLevel, convertV4MiniflareOptions } = await import("miniflare");
  const { unstable_getMiniflareWorkerOptions } = await import("wrangler");
  const { workerOptions: all } = unstable_getMiniflareWorkerOptions(path.join(root, "wrangler.toml"));
  // Module rules only matter for unbundled sources; the bundle is one ES module. Static assets
  // (the web console) are left out: locally Miniflare serves them through a router Worker in
  // front of ours, which would proxy every request and hold every WebSocket in JavaScript
  // (about 300 KB a socket), a cost the deployed service does not have (Cloudflare routes
  // assets before the Worker). The API is what the benchmarks measure.
  const { modulesRules: _rules, assets: _assets, ...workerOptions } = all;
  // `rateLimits`: "raised" (the default) keeps the same bindings with limits out of reach, for
  // scenarios that drive thousands of calls as one user or admin to time the service;
  // "configured" keeps wrangler.toml's, for the scenario that floods them (bench/scenarios/noisy.mjs).
  if (rateLimits === "raised")
    workerOptions.ratelimits = Object.fromEntries(
      Object.entries(workerOptions.ratelimits ?? {}).map(([k, v]) => [k, { ...v, simple: { ...v.simple, limit: 1_000_000_000 } }]),
    );
  const floorPath = path.join(buildDir, "floor.mjs");
  writeFileSync(floorPath, FLOOR_SCRIPT);
  const controlPath = path.join(buildDir, "control.mjs");
  if (control) writeFileSync(controlPath, CONTROL_SCRIPT);
  // wrangler still describes a Worker in Miniflare 4's option shape; Miniflare 5 converts it.
  const options = convertV4MiniflareOptions({
    // `persistDir` (optional): Durable Object, D1 and other state lives there instead of
    // Miniflare's temporary directory (both survive restart() below).
    ...(persistDir ? { resourcePersistencePath: persistDir } : {}),
    // `onWorkerLog` (optional): the Worker's console output goes to this function
    // ({level, message}) instead of this process's stdout/stderr.
    ...(onWorkerLog ? { handleStructuredLogs: onWorkerLog } : {}),
    // `miniflareLog` (optional): a miniflare Log for Miniflare's own messages (e.g. queue dead letters).
    log: miniflareLog ?? new Log(LogLevel.WARN),
    // `inspectorPort` (optional): workerd's V8 inspector on 127.0.0.1 (bench/profile.mjs takes CPU profiles through it).
    ...(inspectorPort !== undefined ? { inspectorPort } : {}),
    // No download of request.cf data from Cloudflare: nothing here may leave the machine.
    cf: false,
    host: "127.0.0.1",
    port: 0,
    workers: [
      {
        ...workerOptions,
        name: "main",
        modules: true,
        modulesRoot: buildDir,
        scriptPath,
        bindings: { ...workerOptions.bindings, JWT_SECRET, SERVICE_TOKEN, ...vars },
        unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
      },
      {
        name: "floor",
        modules: true,
        scriptPath: floorPath,
        compatibilityDate: workerOptions.compatibilityDate,
        durableObjects: { FLOOR: { className: "Floor", useSQLite: true } },
        unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
      },
      ...(control
        ? [
            {
              name: "control",
              modules: true,
              scriptPath: controlPath,
              compatibilityDate: workerOptions.compatibilityDate,
              compatibilityFlags: ["unsafe_module"],
              // The same database id as the main Worker's DB: the same database.
              d1Databases: workerOptions.d1Databases,
              // The main Worker's classes, bound by class name.
              durableObjects: Object.fromEntries(
                Object.values(workerOptions.durableObjects ?? {}).map((d) => {
                  const className = typeof d === "string" ? d : d.className;
                  return [
                    className,
                    {
                      className,
                      scriptName: "main",
                      ...(typeof d === "object" && d.useSQLite !== undefined ? { useSQLite: d.useSQLite } : {}),
                    },
                  ];
                }),
              ),
              unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
            },
          ]
        : []),
    ],
  });
  const mf = new Miniflare(options);
  optionsOf.set(mf, options);
  await mf.ready;
  const db = await mf.getD1Database("DB", "main");
  await applyMigrations(db);
  const main = (await mf.unsafeGetDirectURL("main")).toString().replace(/\/$/, "");
  const floor = (await mf.unsafeGetDirectURL("floor")).toString().replace(/\/$/, "");
  const rt = { mf, db, main, floor, stop: () => mf.dispose() };
  if (control) rt.control = (await mf.unsafeGetDirectURL("control")).toString().replace(/\/$/, "");
  return rt;
}

const optionsOf = new WeakMap();

/**
 * Restarts the runtime the way a deploy does: the same options again through setOptions, so
 * workerd reloads the Worker. Every Durable Object starts anew (in-memory state and open
 * sockets are gone, stored state stays), in-flight requests fail, and whatever only lived in
 * memory (Miniflare's queue broker keeps its messages there) is lost. Ports may change: the
 * runtime object's `main`, `floor`, `control` and `db` are updated in place (`db` only with
 * refreshDb, else null). Returns the milliseconds it took.
 */
export async function restart(rt, { refreshDb = true } = {}) {
  const options = optionsOf.get(rt.mf);
  if (!options) throw new Error("restart(): not a runtime from startRuntime()");
  const t0 = performance.now();
  await rt.mf.setOptions(options);
  await rt.mf.ready;
  rt.main = (await rt.mf.unsafeGetDirectURL("main")).toString().replace(/\/$/, "");
  rt.floor = (await rt.mf.unsafeGetDirectURL("floor")).toString().replace(/\/$/, "");
  if (rt.control) rt.control = (await rt.mf.unsafeGetDirectURL("control")).toString().replace(/\/$/, "");
  // The old D1 proxy is dead. Getting a new one makes a synchronous call into workerd (see
  // CONTROL_SCRIPT): a harness on `control` passes refreshDb: false and never pays for it.
  rt.db = refreshDb ? await rt.mf.getD1Database("DB", "main") : null;
  return Math.round(performance.now() - t0);
}

/**
 * Restarts one Durable Object of the main Worker (`className` e.g. "Device", `name` as given to
 * getByName): its instance is dropped, stored state and alarms stay. `webSockets: "close"` closes
 * its sockets, "hibernate" keeps them. Through the control Worker when there is one (async HTTP,
 * see CONTROL_SCRIPT), else through Miniflare. Evicting an object that is not running throws.
 */
export async function evictObject(rt, className, name, webSockets = "close") {
  if (!rt.control) return rt.mf.unsafeEvictDurableObject("main", className, { name, webSockets });
  const r = await controlCall(rt, "/evict", { className, name, webSockets });
  if (!r.ok) throw new Error(r.error);
}

/** Runs one SQL statement on the main Worker's D1 database through the control Worker. */
export async function sql(rt, text, params = [], mode = "all") {
  const r = await controlCall(rt, "/sql", { sql: text, params, mode });
  if (!r.ok) throw new Error(r.error);
  return r;
}

async function controlCall(rt, p, body, timeoutMs = 20_000) {
  if (!rt.control) throw new Error("start the runtime with {control: true}");
  const res = await fetch(rt.control + p, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "content-type": "application/json" },
    signal: AbortSignal.timeout(timeoutMs),
  });
  return res.json();
}

/** Applies migrations/*.sql in order (what `wrangler d1 migrations apply --local` does). */
async function applyMigrations(db) {
  const { unstable_splitSqlQuery } = await import("wrangler");
  const dir = path.join(root, "migrations");
  for (const f of readdirSync(dir)
    .filter((n) => n.endsWith(".sql"))
    .sort()) {
    const statements = unstable_splitSqlQuery(readFileSync(path.join(dir, f), "utf8")).filter((s) => s.trim());
    await db.batch(statements.map((s) => db.prepare(s)));
  }
}

/** The workerd processes' resident memory in MB (children of this Node process). */
export function workerdRssMB() {
  let total = 0;
  for (const pid of readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const comm = /\(([^)]*)\)/.exec(stat)?.[1] ?? "";
      if (!comm.startsWith("workerd")) continue;
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== process.pid) continue;
      const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
      total += Number(rss ?? 0) / 1024;
    } catch {
      /* process went away */
    }
  }
  return Math.round(total);
}
