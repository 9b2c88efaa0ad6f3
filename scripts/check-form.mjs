#!/usr/bin/env node
// The form checks of `npm test`: no import loop (scripts/check-imports.mjs), Prettier's check
// over the tree, then two rules Prettier cannot keep: no line over 140 characters in a source,
// test or script file (long strings and comments are not broken by Prettier), and no
// hand-written source file (src/, durable-objects/, scripts/) over 500 lines. `npm run format` fixes what Prettier can.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const MAX_LINE = 140;
const MAX_FILE_LINES = 500;
const SIZED = /^(src|durable-objects|scripts)\//;

const imports = spawnSync(process.execPath, ["scripts/check-imports.mjs"], { stdio: "inherit" });
// The project's own Prettier (so this works from npm scripts and when run with plain node).
const bin = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  "..",
  "node_modules",
  ".bin",
  process.platform === "win32" ? "prettier.cmd" : "prettier",
);
const prettier = spawnSync(bin, ["--check", "--log-level", "warn", "."], { stdio: "inherit", shell: process.platform === "win32" });
const files = spawnSync("git", ["ls-files", "--cached", "--others", "--exclude-standard"], { encoding: "utf8" })
  .stdout.split("\n")
  .filter((f) => /\.(ts|mjs|js|css)$/.test(f) && f !== "worker-configuration.d.ts");

const problems = [];
for (const file of files) {
  let text;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    continue; // deleted in the work tree
  }
  const lines = text.split("\n");
  lines.forEach((line, i) => {
    if (line.length > MAX_LINE) problems.push(`${file}:${i + 1}: ${line.length} characters (at most ${MAX_LINE})`);
  });
  const count = lines.length - (text.endsWith("\n") ? 1 : 0);
  if (SIZED.test(file) && count > MAX_FILE_LINES) problems.push(`${file}: ${count} lines (at most ${MAX_FILE_LINES})`);
}
for (const p of problems) console.error(p);
if (prettier.status !== 0) console.error("form: Prettier found files to format (npm run format).");
if (problems.length) console.error(`form: ${problems.length} problem(s) above.`);
if (prettier.status !== 0 || problems.length || imports.status !== 0) process.exit(1);
console.log(`form: ${files.length} files checked (Prettier, lines ≤ ${MAX_LINE}, source files ≤ ${MAX_FILE_LINES} lines).`);
