#!/usr/bin/env node
// Type-checks every part of the project, side by side, and prints one line per part (with its
// errors, if any). Exits 1 when any part fails. Plain Node ESM (Node 20+); run through npm, so
// node_modules/.bin (tsc) is on PATH.
//
// The parts differ in the types they load, so each has its own tsconfig:
//   .             the Worker, its objects and the test suites (Workers and Node types)
//   test/browser  what runs only in Node: browser tests and test/runner (Node types)
//   console       src/console and src/client with the DOM library (scripts/typecheck-console.mjs)
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const win = process.platform === "win32";
const parts = [
  ["worker and tests", "tsc", ["-p", "."]],
  ["node side", "tsc", ["-p", "test/browser"]],
  ["console", process.execPath, [path.join(root, "scripts/typecheck-console.mjs")]],
];

const run = ([name, cmd, args]) =>
  new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(cmd, args, { cwd: root, shell: win && cmd === "tsc", stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (b) => (out += b));
    child.stderr.on("data", (b) => (out += b));
    child.on("error", (err) => resolve({ name, ok: false, out: String(err), ms: Date.now() - started }));
    child.on("close", (code) => resolve({ name, ok: code === 0, out, ms: Date.now() - started }));
  });

const results = await Promise.all(parts.map(run));
for (const r of results) {
  console.log(`typecheck: ${r.name} ${r.ok ? "passed" : "FAILED"} (${(r.ms / 1000).toFixed(1)} s)`);
  if (!r.ok) process.stderr.write(r.out.endsWith("\n") ? r.out : `${r.out}\n`);
}
process.exit(results.every((r) => r.ok) ? 0 : 1);
