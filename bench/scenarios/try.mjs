// Runs one scenario alone against a fresh runtime:
//   node_modules/.bin/node bench/scenarios/try.mjs <cost|expiry|feed|sockets|ingestion> [--quick] [--json]
// Prints the scenario's log lines and its partial result. The runtime is disposed in any case.
import { startRuntime } from "../lib/runtime.mjs";

const args = process.argv.slice(2);
const name = args.find((a) => !a.startsWith("--"));
const quick = args.includes("--quick");
const known = ["cost", "expiry", "feed", "sockets", "ingestion"];
if (!known.includes(name)) {
  console.error(`usage: node_modules/.bin/node bench/scenarios/try.mjs <${known.join("|")}> [--quick]`);
  process.exit(2);
}
const t0 = Date.now();
const log = (msg) => console.error(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${msg}`);
const { run } = await import(`./${name}.mjs`);
// Everything is bounded inside the scenarios; this is a last guard.
const guard = setTimeout(() => {
  console.error("try: scenario exceeded 15 minutes; giving up");
  process.exit(3);
}, 15 * 60_000);
guard.unref();
let rt;
let code = 0;
try {
  rt = await startRuntime({ vars: { ALLOW_SHORT_DURATIONS: "true", USAGE_RETRY_BASE_SECONDS: "0" }, log });
  log(`runtime up: main ${rt.main}, floor ${rt.floor}`);
  const result = await run(rt, { quick, log });
  console.log(JSON.stringify(result, null, 2));
} catch (err) {
  console.error(err);
  code = 1;
} finally {
  await rt?.stop().catch(() => {});
}
process.exit(code);
