#!/usr/bin/env node
// Draws the imports between the hand-written source files (src/, durable-objects/; type-only
// imports count too) and fails on a loop. `--print` lists each file with what it imports.
// Part of `npm test` (through scripts/check-form.mjs).
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";

const files = spawnSync("git", ["ls-files", "--cached", "--others", "--exclude-standard", "src", "durable-objects"], { encoding: "utf8" })
  .stdout.split("\n")
  .filter((f) => f.endsWith(".ts") && existsSync(f));
const known = new Set(files);
const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+["'](\.[^"']+)["']/g;

/** file -> the files it imports (relative specifiers only; packages are not part of the drawing). */
const graph = new Map();
for (const file of files) {
  const text = readFileSync(file, "utf8");
  const deps = new Set();
  for (const m of text.matchAll(IMPORT)) {
    const base = path.posix.normalize(path.posix.join(path.posix.dirname(file), m[1]));
    const target = [base, `${base}.ts`, `${base}/index.ts`].find((c) => known.has(c));
    if (target) deps.add(target);
  }
  graph.set(file, [...deps].sort());
}

if (process.argv.includes("--print"))
  for (const [file, deps] of [...graph].sort()) console.log(`${file}${deps.length ? ` -> ${deps.join(", ")}` : ""}`);

// Tarjan's strongly connected components: any component of two or more files is a loop.
let index = 0;
const stack = [];
const meta = new Map();
const loops = [];
function visit(v) {
  meta.set(v, { index, low: index, on: true });
  index++;
  stack.push(v);
  for (const w of graph.get(v)) {
    if (!meta.has(w)) {
      visit(w);
      meta.get(v).low = Math.min(meta.get(v).low, meta.get(w).low);
    } else if (meta.get(w).on) meta.get(v).low = Math.min(meta.get(v).low, meta.get(w).index);
  }
  if (meta.get(v).low === meta.get(v).index) {
    const component = [];
    let w;
    do {
      w = stack.pop();
      meta.get(w).on = false;
      component.push(w);
    } while (w !== v);
    if (component.length > 1 || graph.get(v).includes(v)) loops.push(component.sort());
  }
}
for (const v of graph.keys()) if (!meta.has(v)) visit(v);

const arrows = [...graph.values()].reduce((n, d) => n + d.length, 0);
if (loops.length) {
  for (const l of loops) console.error(`imports: a loop of ${l.length} files: ${l.join(", ")}`);
  process.exit(1);
}
console.log(`imports: ${graph.size} files, ${arrows} imports, no loop.`);
