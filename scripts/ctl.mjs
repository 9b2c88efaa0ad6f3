#!/usr/bin/env node
// `npm run ctl -- <command>` (`npm run -s ctl -- … --json` for output without npm's banner): the
// operators' command line, src/cli/ctl.ts over the typed client. That TypeScript is bundled
// here with esbuild (a devDependency; the client's imports are extensionless, which plain Node
// cannot load) and run in this process. `npm run ctl -- help` lists the commands.
//
// A token comes from --token or EDA_TOKEN; for a local base URL (npm run dev) without one, an
// admin token (ops-admin, one hour) is minted from .dev.vars, as `npm run token` does. Files
// named on the command line are read relative to where the command was run (npm runs scripts
// in the package root and says where it was started in INIT_CWD).
import { readFileSync } from "node:fs";
import path from "node:path";
import { readDevVars, root, signToken } from "./lib.mjs";

const { build } = await import("esbuild");
const bundle = await build({
  entryPoints: [path.join(root, "src/cli/ctl.ts")],
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "node20",
  write: false,
  logLevel: "silent",
});
const { main } = await import(`data:text/javascript;base64,${Buffer.from(bundle.outputFiles[0].text).toString("base64")}`);

const cwd = process.env.INIT_CWD ?? process.cwd();
const code = await main({
  argv: process.argv.slice(2),
  env: process.env,
  stdout: (text) => process.stdout.write(`${text}\n`),
  stderr: (text) => process.stderr.write(`${text}\n`),
  readFile: (file) => readFileSync(path.resolve(cwd, file), "utf8"),
  devToken: () => {
    try {
      const secret = readDevVars().JWT_SECRET;
      return secret ? signToken(secret, "ops-admin", "admin", 3600) : null;
    } catch {
      return null; // no .dev.vars
    }
  },
});
process.exitCode = code;
