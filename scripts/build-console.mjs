#!/usr/bin/env node
// Builds the web console (src/console/) into public/console/ (and the API reference page,
// src/docs/ with Swagger UI's files, into public/docs/), which the Worker serves as
// static assets at /console/: main.ts bundled with esbuild (ESM, es2022, minified, linked
// source map), index.html and the two stylesheets copied as they are, and _headers (the console's
// security headers) to public/_headers, where Workers static assets read it. Plain Node ESM (Node 20+).
//
//   node scripts/build-console.mjs            # one build; exits 1 with esbuild's message on an error
//   node scripts/build-console.mjs --watch    # rebuild on change (for working on the console)
import { copyFile, mkdir, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const src = path.join(root, "src/console");
const out = path.join(root, "public/console");
const STATIC = ["index.html", "console.css", "console-views.css"];
const watch = process.argv.includes("--watch");

/** @type {import("esbuild").BuildOptions} */
const options = {
  absWorkingDir: root,
  entryPoints: [path.join(src, "main.ts")],
  outfile: path.join(out, "app.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  sourcemap: "linked",
  legalComments: "none",
  charset: "utf8",
  logLevel: "silent",
  metafile: true,
};

// The API reference page (/docs/): our page and its start script, and Swagger UI's bundle and
// stylesheet from the swagger-ui-dist package, copied as they are (nothing is loaded from
// another host at run time).
const docsOut = path.join(root, "public/docs");
const DOCS_OWN = ["index.html", "reference.js", "reference.css"];
const DOCS_PACKAGE = ["swagger-ui-bundle.js", "swagger-ui.css"];

async function copyStatic() {
  await mkdir(out, { recursive: true });
  await mkdir(docsOut, { recursive: true });
  await Promise.all([
    ...STATIC.map((f) => copyFile(path.join(src, f), path.join(out, f))),
    ...DOCS_OWN.map((f) => copyFile(path.join(root, "src/docs", f), path.join(docsOut, f))),
    ...DOCS_PACKAGE.map((f) => copyFile(path.join(root, "node_modules/swagger-ui-dist", f), path.join(docsOut, f))),
  ]);
  await copyFile(path.join(src, "_headers"), path.join(out, "..", "_headers"));
}

async function report(started) {
  const kb = async (f) => `${f} ${((await stat(path.join(out, f))).size / 1024).toFixed(1)} KB`;
  const sizes = await Promise.all(["app.js", ...STATIC].map(kb));
  console.log(`console: ${path.relative(root, out)}/ ${sizes.join(", ")} (${Date.now() - started} ms)`);
}

async function main() {
  const started = Date.now();
  await mkdir(out, { recursive: true });
  if (watch) {
    const ctx = await esbuild.context({
      ...options,
      logLevel: "info",
      plugins: [
        {
          name: "copy-static",
          setup(b) {
            let t = Date.now();
            b.onStart(() => {
              t = Date.now();
            });
            b.onEnd(async (r) => {
              if (r.errors.length) return;
              await copyStatic();
              await report(t);
            });
          },
        },
      ],
    });
    await ctx.watch();
    return;
  }
  try {
    await esbuild.build(options);
  } catch (err) {
    const messages = err?.errors?.length
      ? await esbuild.formatMessages(err.errors, { kind: "error", color: false })
      : [String(err?.message ?? err)];
    process.stderr.write(`console build failed:\n${messages.join("\n")}\n`);
    process.exit(1);
  }
  await copyStatic();
  await report(started);
}

main().catch((err) => {
  process.stderr.write(`console build failed: ${err?.stack ?? err}\n`);
  process.exit(1);
});
