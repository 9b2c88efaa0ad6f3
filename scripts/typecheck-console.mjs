#!/usr/bin/env node
// Type-checks the browser code: src/console/ and src/client/ (which the console bundles),
// with the DOM library (src/console/tsconfig.json). Plain Node ESM (Node 20+).
//
// Why not plain `tsc -p src/console`: the client imports server types (`import type`, e.g.
// the feed protocol and the schemas), and through src/config.ts those reach every server
// file, which tsc would then check too, under the DOM library and without the Workers types
// (those cannot be loaded next to the DOM's: their HTMLRewriter `Element` merges into the
// DOM's and breaks it), so the server files fail there. They are checked by the root
// `tsc -p .` with the Workers types; here only the browser files' diagnostics count.
// Exits 1 and prints them if there are any.
import path from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const configPath = path.join(root, "src/console/tsconfig.json");
const read = ts.readConfigFile(configPath, ts.sys.readFile);
if (read.error) fail([read.error]);
const parsed = ts.parseJsonConfigFileContent(read.config, ts.sys, path.dirname(configPath), undefined, configPath);
if (parsed.errors.length) fail(parsed.errors);

const program = ts.createProgram({ rootNames: parsed.fileNames, options: parsed.options });
const mine = (f) => {
  const rel = path.relative(root, f.fileName).split(path.sep).join("/");
  return rel.startsWith("src/console/") || rel.startsWith("src/client/");
};
const files = program.getSourceFiles().filter(mine);
const diagnostics = [
  ...program.getOptionsDiagnostics(),
  ...program.getGlobalDiagnostics(),
  ...files.flatMap((f) => [...program.getSyntacticDiagnostics(f), ...program.getSemanticDiagnostics(f)]),
];
if (diagnostics.length) fail(diagnostics);
console.log(`console: type-check passed (${files.length} files in src/console and src/client)`);

function fail(diags) {
  const host = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => root, getNewLine: () => "\n" };
  process.stderr.write(ts.formatDiagnostics(diags, host));
  process.exit(1);
}
