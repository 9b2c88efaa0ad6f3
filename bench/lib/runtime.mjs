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

/** Bundles the Worker exactly as a deploy would (wrangler deploy --dry-run). */
export function buildWorker() {
  mkdirSync(buildDir, { recursive: true });
  const bin = path.join(root, "node_modules", ".bin", process.platform === "win32" ? "wrangler.cmd" : "wrangler");
  // node_modules/.bin first, so wrangler's `#!/usr/bin/env node` finds the pinned Node 22.
  const PATH = [path.dirname(bin), process.env.PATH].filter(Boolean).join(path.delimiter);
  const r = spawnSync(bin, ["deploy", "--dry-run", "--outdir", buildDir], {
    cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, PATH, WRANGLER_SEND_METRICS: "false" }, shell: process.platform === "win32",
  });
  if (r.status !== 0) throw new Error(`wrangler build failed:\n${r.stderr}`);
  return path.join(buildDir, "index.js");
}

const FLOOR_SCRIPT = `
import { DurableObject } from "cloudflare:workers";
export class Floor extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS w (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL)");
  }
  noop() { return 1; }
  write() { this.ctx.storage.sql.exec("INSERT INTO w (at) VALUES (?)", Date.now()); return 1; }
}
export default {
  async fetch(req, env) {
    const u = new URL(req.url);
    if (u.pathname === "/bare") return new Response("ok");
    const stub = env.FLOOR.getByName(u.searchParams.get("o") ?? "one");
    if (u.pathname === "/noop") { await stub.noop(); return new Response("ok"); }
    if (u.pathname === "/write") { await stub.write(); return new Response("ok"); }
    return new Response("no", { status: 404 });
  },
};`;

/**
 * Starts both Workers. `vars` override wrangler.toml vars (the bench turns on the test-only
 * short durations, which production refuses). Returns the base URLs and a stop function.
 */
export async function startRuntime({ vars = {}, log = () => {} } = {}) {
  const scriptPath = buildWorker();
  log(`built ${path.relative(root, scriptPath)}`);
  const { Miniflare, Log, LogLevel, convertV4MiniflareOptions } = await import("miniflare");
  const { unstable_getMiniflareWorkerOptions } = await import("wrangler");
  const { workerOptions: all } = unstable_getMiniflareWorkerOptions(path.join(root, "wrangler.toml"));
  // Module rules only matter for unbundled sources; the bundle is one ES module.
  const { modulesRules: _rules, ...workerOptions } = all;
  const floorPath = path.join(buildDir, "floor.mjs");
  writeFileSync(floorPath, FLOOR_SCRIPT);
  // wrangler still describes a Worker in Miniflare 4's option shape; Miniflare 5 converts it.
  const mf = new Miniflare(convertV4MiniflareOptions({
    log: new Log(LogLevel.WARN),
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
    ],
  }));
  await mf.ready;
  const db = await mf.getD1Database("DB", "main");
  await applyMigrations(db);
  const main = (await mf.unsafeGetDirectURL("main")).toString().replace(/\/$/, "");
  const floor = (await mf.unsafeGetDirectURL("floor")).toString().replace(/\/$/, "");
  return { mf, db, main, floor, stop: () => mf.dispose() };
}

/** Applies migrations/*.sql in order (what `wrangler d1 migrations apply --local` does). */
async function applyMigrations(db) {
  const { unstable_splitSqlQuery } = await import("wrangler");
  const dir = path.join(root, "migrations");
  for (const f of readdirSync(dir).filter((n) => n.endsWith(".sql")).sort()) {
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
