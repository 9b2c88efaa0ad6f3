#!/usr/bin/env node
// Installs the project's packages when node_modules is missing or stale, so that
// `npm run dev` and `npm test` work on a fresh clone without a prior `npm install`.
//
// Plain ESM with no dependencies: it runs before anything is installed, on whatever
// Node runs npm (Node 20 is fine). After it, the npm script's next commands find
// node_modules/.bin/node (the pinned Node 22) first on PATH, so wrangler, vitest and
// tsc run on Node 22 even on a Node 20 machine.
//
// Stale means: no node_modules/.package-lock.json (npm's record of the last install),
// package-lock.json newer than it, a dependency of package.json not installed, or a
// tool the scripts call missing from node_modules/.bin.
//
// Output goes to stderr so that commands whose last stdout line matters (npm run token)
// stay clean. Set ENSURE_DEPS_SKIP=1 to skip the check.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync, utimesSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const nm = path.join(root, "node_modules");
const lock = path.join(root, "package-lock.json");
const installed = path.join(nm, ".package-lock.json");
const TOOLS = ["node", "wrangler", "vitest", "tsc", "prettier"];

const log = (msg) => process.stderr.write(`[ensure-deps] ${msg}\n`);

function staleReason() {
  if (!existsSync(nm)) return "node_modules is missing";
  if (!existsSync(installed)) return "node_modules/.package-lock.json is missing";
  if (existsSync(lock) && statSync(lock).mtimeMs > statSync(installed).mtimeMs) return "package-lock.json is newer than the last install";
  const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));
  for (const name of Object.keys({ ...pkg.dependencies, ...pkg.devDependencies }))
    if (!existsSync(path.join(nm, name, "package.json"))) return `${name} is not installed`;
  const ext = process.platform === "win32" ? ".cmd" : "";
  for (const tool of TOOLS)
    if (!existsSync(path.join(nm, ".bin", tool + ext)) && !existsSync(path.join(nm, ".bin", tool)))
      return `node_modules/.bin/${tool} is missing`;
  return null;
}

/**
 * Runs npm without waiting for input. Its stdout goes to our stderr (see above); with
 * `capture`, all of it is kept and returned instead, so an attempt that has a fallback
 * does not print errors a newcomer would take for a failure.
 */
function npm(args, { capture = false } = {}) {
  const win = process.platform === "win32";
  log(`npm ${args.join(" ")}`);
  const r = spawnSync(win ? "npm.cmd" : "npm", args, {
    cwd: root,
    stdio: capture ? ["ignore", "pipe", "pipe"] : ["ignore", process.stderr, "inherit"],
    encoding: "utf8",
    shell: win,
    env: { ...process.env, CI: process.env.CI ?? "true" },
  });
  if (r.error) throw r.error;
  return { status: r.status ?? 1, output: capture ? `${r.stdout ?? ""}${r.stderr ?? ""}` : "" };
}

if (process.env.ENSURE_DEPS_SKIP !== "1") {
  const reason = staleReason();
  if (reason) {
    log(`installing packages (${reason})...`);
    // --loglevel=error: npm's engine warnings (wrangler and vitest want Node 22) do not
    // apply, since the pinned node@22 devDependency is what runs them.
    const common = ["--no-audit", "--no-fund", "--loglevel=error"];
    let status;
    if (existsSync(lock)) {
      const ci = npm(["ci", ...common], { capture: true });
      status = ci.status;
      if (status !== 0) {
        // `npm ci` refuses a lockfile that lacks entries npm expects, e.g. other platforms'
        // optional binaries a registry mirror cannot serve. `npm install` still installs the
        // locked versions; --no-save keeps package.json and package-lock.json untouched.
        log("npm ci refused the lockfile; installing the same locked versions with `npm install --no-save`");
        status = npm(["install", "--no-save", ...common]).status;
        if (status !== 0) process.stderr.write(`[ensure-deps] what npm ci said:\n${ci.output}`);
      }
    } else {
      status = npm(["install", ...common]).status;
    }
    if (status !== 0) {
      log(`npm exited with ${status}; packages are not installed`);
      process.exit(status);
    }
    // Mark the install as current even when npm left its record untouched.
    if (existsSync(installed)) {
      const now = new Date();
      utimesSync(installed, now, now);
    }
    const still = staleReason();
    if (still) {
      log(`packages still look incomplete after installing: ${still}`);
      process.exit(1);
    }
    log("packages installed");
  }
}
