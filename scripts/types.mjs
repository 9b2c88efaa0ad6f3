#!/usr/bin/env node
// `npm run types`: regenerates worker-configuration.d.ts (the `Env` that `cloudflare:workers`
// gives tests and the Worker) from wrangler.toml. Run it after changing bindings or vars.
// wrangler takes secret names from .dev.vars, so this makes sure .dev.vars exists first
// (otherwise JWT_SECRET and SERVICE_TOKEN would drop out of the generated Env).
// Runtime types come from @cloudflare/workers-types (tsconfig.json), hence --include-runtime false.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { ensureDevVars, root } from "./lib.mjs";

ensureDevVars();
const win = process.platform === "win32";
const args = ["types", "--include-runtime", "false", ...process.argv.slice(2)];
const r = spawnSync(path.join(root, "node_modules", ".bin", win ? "wrangler.cmd" : "wrangler"), args, {
  cwd: root,
  stdio: ["ignore", "inherit", "inherit"],
  env: { ...process.env, WRANGLER_SEND_METRICS: process.env.WRANGLER_SEND_METRICS ?? "false" },
  shell: win,
});
process.exit(r.status ?? 1);
