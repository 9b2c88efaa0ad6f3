#!/usr/bin/env node
// `npm run feed -- [--user alice] [--admin] [--watch <userId>] [--device <id>] [--since <seq>] [--port 8787 | --base <url>]`
//
// Watches a live feed of `npm run dev` from the terminal with the project's typed client
// (src/client/feed-client.ts, bundled on the fly by esbuild, which wrangler ships): it gets a
// ticket with a dev token, prints every event as it arrives, and on a drop reconnects and
// resumes from the last seq it printed. Ctrl+C stops it. Runs on the pinned Node 22
// (global WebSocket), which `npm run` puts first on PATH.
import path from "node:path";
import { ensureDevVars, jwtSecret, parseArgs, root, signToken, USER_ID } from "./lib.mjs";

const usage =
  "usage: npm run feed -- [--user <id>] [--admin] [--watch <userId>] [--device <deviceId>] [--since <seq>] [--port <n> | --base <url>]";
const args = parseArgs(process.argv.slice(2), { booleans: ["admin", "help"] });
if (args.help) {
  console.log(usage);
  process.exit(0);
}
const die = (msg) => {
  console.error(`feed: ${msg}\n${usage}`);
  process.exit(2);
};
if (typeof WebSocket === "undefined")
  die(`this Node (${process.version}) has no global WebSocket; run it as \`npm run feed\` (pinned Node 22).`);
if (args.watch !== undefined && (typeof args.watch !== "string" || !USER_ID.test(args.watch))) die("--watch must be a user id");
// --watch: an admin watching that user's own feed (as they see it).
const admin = args.admin || args.watch !== undefined;
const user = args.user ?? args._[0] ?? (admin ? "ops-admin" : "alice");
if (typeof user !== "string" || !USER_ID.test(user)) die("--user must be a user id");
const since = args.since === undefined ? undefined : Number(args.since);
if (since !== undefined && (!Number.isInteger(since) || since < 0)) die("--since must be a whole number >= 0");
if (args.device !== undefined && (typeof args.device !== "string" || !USER_ID.test(args.device))) die("--device must be a device id");
const base = typeof args.base === "string" ? args.base.replace(/\/$/, "") : `http://127.0.0.1:${args.port ?? 8787}`;
const feed = args.admin ? "admin" : args.device ? "device" : "user";

ensureDevVars();
const token = () => signToken(jwtSecret(), user, admin ? "admin" : "user", 3600);

const { build } = await import("esbuild");
const bundle = await build({
  entryPoints: [path.join(root, "src/client/feed-client.ts")],
  bundle: true,
  format: "esm",
  platform: "neutral",
  write: false,
  logLevel: "silent",
});
const { FeedClient } = await import(`data:text/javascript;base64,${Buffer.from(bundle.outputFiles[0].text).toString("base64")}`);

const time = (at) => new Date(at).toISOString().slice(11, 19);
const say = (msg) => process.stdout.write(`${msg}\n`);
const client = new FeedClient({ baseUrl: base, token, feed, deviceId: args.device, userId: args.watch, since });
client.onHello((h) => {
  const lost = h.missed ? `; ${h.missed.count} older event(s) are no longer kept (seq ${h.missed.from}-${h.missed.to})` : "";
  const replay =
    h.replayThrough > h.since
      ? `replaying seq ${h.since + 1}..${h.replayThrough}, then live`
      : "nothing missed, live from seq " + (h.replayThrough + 1);
  const whose = args.watch ? ` of ${args.watch}` : "";
  say(`-- connected to the ${h.feed} feed${whose} as ${user}: ${replay}${lost}`);
  if (h.state) say(`-- device now: ${JSON.stringify(h.state)}`);
});
client.onEvent((e) =>
  say(`#${e.seq} ${time(e.timestamp)} ${e.type.padEnd(26)} ${e.userId ? `[${e.userId}] ` : ""}${JSON.stringify(e.data)}`),
);
client.onError((e) => say(`-- server says ${e.code}: ${e.message}`));
client.onState(({ state, close }) => {
  if (state === "waiting")
    say(`-- disconnected (${close.code}${close.reason ? ` ${close.reason}` : ""}); reconnecting from seq ${client.lastSeq ?? "now"}...`);
  if (state === "stopped" && close)
    say(
      `-- closed for good (${close.code}): ` +
        `${client.lastError ? `${client.lastError.code}: ${client.lastError.message}` : close.reason || "no reason given"}`,
    );
});
process.on("SIGINT", () => {
  client.close();
  say(`-- stopped; resume later with --since ${client.lastSeq ?? 0}`);
  process.exit(0);
});
try {
  await client.start();
} catch (err) {
  // The server said no (its reason is printed above), or there was no server to ask.
  if (client.lastError) console.error(`feed: refused: ${client.lastError.code}`);
  else console.error(`feed: ${err.message}. Is \`npm run dev\` running at ${base}?`);
  process.exit(1);
}
