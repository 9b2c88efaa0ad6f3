#!/usr/bin/env node
// `npm run dev [-- --port <n>]`: the whole service on your machine, seeded with a demo fleet.
//
//  1. creates .dev.vars from .dev.vars.example when missing (local-only secrets);
//  2. applies the D1 migrations to the local database (.wrangler/state);
//  3. starts `wrangler dev --local` on 127.0.0.1:<port> (default 8787): Worker, Durable
//     Objects, D1, Queues and the cron trigger all run in workerd; nothing reaches Cloudflare;
//  4. once it answers, registers a demo fleet and demo users through the admin API
//     (fixed ids, so re-running is harmless: 409 DEVICE_EXISTS is expected);
//  5. prints the base URL, the web console's sign-in links, demo tokens and curl commands, then keeps running with
//     wrangler's output until Ctrl+C (SIGINT/SIGTERM are passed on to wrangler);
//  6. fires the cron trigger every 5 minutes (wrangler dev does not), via --test-scheduled.
//
// Plain Node (20+) ESM with no dependencies; wrangler itself runs on the pinned Node 22
// from node_modules/.bin (run `npm run dev`, which installs packages first).
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { ensureDevVars, jwtSecret, parseArgs, readDevVars, root, signToken } from "./lib.mjs";

const DB_NAME = "edge-device-allocator";
const args = parseArgs(process.argv.slice(2), { booleans: ["no-seed", "help"] });
if (args.help) {
  console.log("usage: npm run dev -- [--port <n>] [--no-seed] [--persist-to <dir>]");
  console.log(
    "  --persist-to <dir>  keep local state (D1, objects, queues) there instead of .wrangler/state (the browser tests use a fresh one)",
  );
  process.exit(0);
}
const persistTo = args["persist-to"] === undefined ? null : path.resolve(String(args["persist-to"]));
const persistArgs = persistTo ? ["--persist-to", persistTo] : [];
const port = args.port === undefined ? 8787 : Number(args.port);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`dev: --port must be a port number, got ${JSON.stringify(args.port)}`);
  process.exit(2);
}
const host = "127.0.0.1";
const base = `http://${host}:${port}`;

const binDir = path.join(root, "node_modules", ".bin");
const win = process.platform === "win32";
const wranglerBin = path.join(binDir, win ? "wrangler.cmd" : "wrangler");
if (!existsSync(wranglerBin)) {
  console.error("dev: node_modules/.bin/wrangler is missing; start with `npm run dev` (it installs packages first).");
  process.exit(1);
}
// node_modules/.bin first, so wrangler's `#!/usr/bin/env node` finds the pinned Node 22.
const PATH_KEY = Object.keys(process.env).find((k) => k.toUpperCase() === "PATH") ?? "PATH";
const childEnv = {
  ...process.env,
  [PATH_KEY]: [binDir, process.env[PATH_KEY]].filter(Boolean).join(path.delimiter),
  // No usage metrics to Cloudflare, and no download of request.cf data from Cloudflare
  // (miniflare uses built-in placeholder values instead).
  WRANGLER_SEND_METRICS: process.env.WRANGLER_SEND_METRICS ?? "false",
  CLOUDFLARE_CF_FETCH_ENABLED: process.env.CLOUDFLARE_CF_FETCH_ENABLED ?? "false",
};
const say = (msg) => process.stdout.write(`[dev] ${msg}\n`);

// 1. Secrets for local dev.
ensureDevVars((m) => say(m));

// 2. Local D1 migrations (non-interactive: CI=true and no stdin make wrangler answer "yes").
say(`applying D1 migrations to the local database (${DB_NAME})...`);
const mig = spawnSync(wranglerBin, ["d1", "migrations", "apply", DB_NAME, "--local", ...persistArgs], {
  cwd: root,
  stdio: ["ignore", "inherit", "inherit"],
  env: { ...childEnv, CI: "true" },
  shell: win,
});
if (mig.status !== 0) {
  console.error(`dev: applying migrations failed (exit ${mig.status ?? mig.signal}).`);
  process.exit(mig.status || 1);
}

// 3. Refuse a port someone else answers on: the readiness check would talk to them.
if (await portAnswers(host, port)) {
  console.error(`dev: something is already listening on ${host}:${port}. Stop it or pick another port: npm run dev -- --port ${port + 1}`);
  process.exit(1);
}

say(`starting wrangler dev on ${base} ...`);
const child = spawn(
  wranglerBin,
  [
    "dev",
    "--local",
    "--ip",
    host,
    "--port",
    String(port),
    "--show-interactive-dev-session=false",
    "--test-scheduled",
    "--var",
    "LOCAL_DEV:true",
    ...persistArgs,
  ],
  { cwd: root, stdio: ["ignore", "inherit", "inherit"], env: childEnv, shell: win },
);
let childExited = false;
let stopping = false;
child.on("error", (err) => {
  console.error(`dev: could not start wrangler: ${err.message}`);
  process.exit(1);
});
child.on("exit", (code, signal) => {
  childExited = true;
  if (!stopping) console.error(`dev: wrangler exited (${signal ?? code}).`);
  process.exit(code ?? (signal ? 1 : 0));
});

for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    if (childExited) process.exit(0);
    if (stopping) {
      child.kill("SIGKILL");
      return;
    }
    stopping = true;
    say(`stopping wrangler (${sig})...`);
    child.kill(sig);
    // If wrangler does not stop within 10 s, make sure it does.
    setTimeout(() => child.kill("SIGKILL"), 10_000).unref();
  });
}

// 4. Wait until the Worker answers, then seed.
if (!(await waitUntilReady(120_000))) {
  console.error(`dev: ${base}/ did not answer within 120 s.`);
  child.kill("SIGTERM");
  process.exit(1);
}

const secret = jwtSecret();
const tokens = {
  alice: signToken(secret, "alice", "user"),
  bob: signToken(secret, "bob", "user"),
  "ops-admin": signToken(secret, "ops-admin", "admin"),
};

if (!args["no-seed"]) {
  try {
    await seed();
  } catch (err) {
    console.error(`dev: seeding the demo data failed: ${err?.message ?? err}`);
    console.error("dev: the server keeps running; see wrangler's output above.");
  }
}
if (!stopping) printBanner();

// wrangler dev does not fire cron triggers by itself: fire ours (wrangler.toml: every 5
// minutes) through the --test-scheduled route, so invoices, reconciliation and billing
// event delivery run locally as they would deployed.
const CRON = "*/5 * * * *";
const fireCron = async () => {
  try {
    const res = await fetch(`${base}/__scheduled?cron=${encodeURIComponent(CRON)}`, {
      signal: AbortSignal.timeout(60_000),
    });
    if (!res.ok) say(`cron run answered ${res.status}`);
  } catch (err) {
    if (!stopping) say(`cron run failed: ${err?.message ?? err}`);
  }
};
if (!stopping) {
  await fireCron();
  setInterval(fireCron, 5 * 60_000);
}

// ---------------------------------------------------------------------------------------

function portAnswers(h, p) {
  return new Promise((resolve) => {
    const s = net.connect({ host: h, port: p });
    s.setTimeout(1000);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("timeout", () => {
      s.destroy();
      resolve(false);
    });
    s.once("error", () => resolve(false));
  });
}

async function waitUntilReady(timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !childExited && !stopping) {
    try {
      const res = await fetch(`${base}/`, { signal: AbortSignal.timeout(2000) });
      const body = await res.json().catch(() => null);
      if (res.ok && body?.service === "edge-device-allocator") return true;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  return false;
}

async function api(method, urlPath, token, body) {
  const res = await fetch(base + urlPath, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json().catch(() => null);
  return { status: res.status, json };
}

/** The demo fleet: fixed ids, so a second run finds them registered (409 DEVICE_EXISTS). */
function demoDevices() {
  const specs = [
    { cpuCores: 2, memoryMB: 4096, storageMB: 32768 },
    { cpuCores: 4, memoryMB: 8192, storageMB: 65536 },
    { cpuCores: 8, memoryMB: 16384, storageMB: 65536 },
  ];
  const list = [];
  // Pool "default" (DEFAULT_POOL in wrangler.toml): 6 devices over 3 nodes, mixed specs.
  for (let i = 0; i < 6; i++)
    list.push({ deviceId: `demo-default-${i + 1}`, pool: "default", node: `node-${(i % 3) + 1}`, ...specs[i % 3] });
  // Pool "eu-west-large": 4 bigger devices over 2 nodes.
  for (let i = 0; i < 4; i++)
    list.push({
      deviceId: `demo-euw-large-${i + 1}`,
      pool: "eu-west-large",
      node: `euw-node-${(i % 2) + 1}`,
      cpuCores: i < 2 ? 8 : 16,
      memoryMB: i < 2 ? 16384 : 32768,
      storageMB: 131072,
    });
  return list;
}

async function seed() {
  const admin = tokens["ops-admin"];
  let created = 0,
    existed = 0;
  for (const d of demoDevices()) {
    const r = await api("POST", "/admin/devices", admin, d);
    if (r.status === 201) created++;
    else if (r.status === 409 && r.json?.error?.code === "DEVICE_EXISTS") existed++;
    else throw new Error(`POST /admin/devices ${d.deviceId} -> ${r.status} ${JSON.stringify(r.json)}`);
  }
  say(`demo fleet: ${created} device(s) registered, ${existed} already there (pools "default" and "eu-west-large")`);
  // How to reach each demo device (made-up endpoints: there is no real phone behind them); its
  // holder sees them in the allocate answer, with a signed access grant.
  for (const d of demoDevices()) {
    const access = { adb: `${d.node}.demo.invalid:5555`, streamUrl: `wss://${d.node}.demo.invalid/stream/${d.deviceId}` };
    const r = await api("PUT", `/admin/devices/${d.deviceId}/access`, admin, { access });
    if (r.status !== 200) throw new Error(`PUT /admin/devices/${d.deviceId}/access -> ${r.status} ${JSON.stringify(r.json)}`);
  }

  // The seed brings bob into being (an admin's quota write for a user nobody has seen yet is 404 without ?create=true).
  const bob = await api("PUT", "/quotas/user/bob?create=true", admin, { tier: "pro" });
  if (bob.status !== 200) throw new Error(`PUT /quotas/user/bob?create=true -> ${bob.status} ${JSON.stringify(bob.json)}`);
  const alice = await api("GET", "/quotas/user/alice", tokens.alice);
  if (alice.status !== 200) throw new Error(`GET /quotas/user/alice -> ${alice.status} ${JSON.stringify(alice.json)}`);
  say(`demo users: alice (tier ${alice.json?.tier}), bob (tier ${bob.json?.tier}), ops-admin (role admin)`);
  // Accounts open with the default pricing plan's starting credit on first read; bob also
  // gets a welcome top-up (a fixed paymentId, so a second run credits nothing).
  const aliceMoney = await api("GET", "/billing/users/alice/balance", tokens.alice);
  if (aliceMoney.status !== 200)
    throw new Error(`GET /billing/users/alice/balance -> ${aliceMoney.status} ${JSON.stringify(aliceMoney.json)}`);
  const topUp = await api("POST", "/billing/users/bob/top-ups", admin, {
    amountMinor: 5000,
    paymentId: "demo-bob-welcome",
    paymentMethod: "demo",
  });
  if (topUp.status !== 201 && topUp.status !== 200)
    throw new Error(`POST /billing/users/bob/top-ups -> ${topUp.status} ${JSON.stringify(topUp.json)}`);
  say(`demo balances: alice ${aliceMoney.json?.formatted}, bob ${(topUp.json?.balanceMinor / 100).toFixed(2)} ${topUp.json?.currency}`);
}

function serviceToken() {
  return readDevVars().SERVICE_TOKEN ?? "<SERVICE_TOKEN from .dev.vars>";
}

function printBanner() {
  const line = "=".repeat(78);
  const out = [
    "",
    line,
    ` edge-device-allocator is running at ${base}`,
    line,
    " Demo tokens (HS256, valid 7 days, signed with JWT_SECRET from .dev.vars):",
    `   alice      (user, plan free): ${tokens.alice}`,
    `   bob        (user, plan pro) : ${tokens.bob}`,
    `   ops-admin  (admin)          : ${tokens["ops-admin"]}`,
    " More: npm run token -- --user <id> [--role admin] [--ttl seconds]",
    "",
    " Web console (open in a browser; the token travels in the # part, never to the server):",
    `   as alice     : ${base}/console/#token=${tokens.alice}`,
    `   as ops-admin : ${base}/console/#token=${tokens["ops-admin"]}`,
    "",
    " Demo fleet: pool default (demo-default-1..6 on node-1..3),",
    "             pool eu-west-large (demo-euw-large-1..4 on euw-node-1..2)",
    "",
    " Watch alice's live feed in another terminal (typed client; resumes after drops):",
    "   npm run feed -- --user alice        (--admin for the operators' feed, --device <id> for a device you hold)",
    "",
    " Try it (paste into a shell):",
    "",
    `BASE=${base}`,
    `ALICE=${tokens.alice}`,
    `ADMIN=${tokens["ops-admin"]}`,
    "",
    "# allocate a device for 30 minutes (pool default) and keep its id",
    `DEVICE=$(curl -s -X POST "$BASE/scheduler/devices/allocate" -H "Authorization: Bearer $ALICE" -H ` +
      `'content-type: application/json' -d '{"durationMinutes":30,"spec":{"cpuCores":2}}' | tee /dev/stderr | sed -n ` +
      `'s/.*"deviceId":"\\([^"]*\\)".*/\\1/p'); echo; echo "device: $DEVICE"`,
    "# a 1-minute allocation: the feed shows device.allocated, device.expiring at 30 s, device.released (expired) at 60 s",
    `curl -s -X POST "$BASE/scheduler/devices/allocate" -H "Authorization: Bearer $ALICE" -H 'content-type: application/json' -d ` +
      `'{"durationMinutes":1}'; echo`,
    "# a feed ticket (single use, 60 s) for a browser: new WebSocket(BASE.replace('http','ws') + url + '&since=0')",
    `curl -s -X POST "$BASE/ws/ticket" -H "Authorization: Bearer $ALICE"; echo`,
    "# list alice's allocations",
    `curl -s "$BASE/scheduler/allocations" -H "Authorization: Bearer $ALICE"; echo`,
    "# release it",
    `curl -s -X POST "$BASE/scheduler/devices/release" -H "Authorization: Bearer $ALICE" -H 'content-type: application/json' -d ` +
      `"{\\"deviceId\\":\\"$DEVICE\\"}"; echo`,
    "# wait in the queue when nothing fits (served at once if a device is free; the feed says queue.fulfilled / queue.expired)",
    `curl -s -X POST "$BASE/scheduler/queue/join" -H "Authorization: Bearer $ALICE" -H 'content-type: application/json' -d ` +
      `'{"durationMinutes":15,"maxWaitMinutes":30}'; echo`,
    "# reserve a device for an hour from tomorrow 09:00 UTC (reminder 15 minutes before, allocated at the start)",
    `curl -s -X POST "$BASE/scheduler/reservations" -H "Authorization: Bearer $ALICE" -H 'content-type: application/json' -d ` +
      `"{\\"startAt\\":\\"$(date -u -d 'tomorrow 09:00' +%Y-%m-%dT%H:%M:%SZ)\\",\\"durationMinutes\\":60}"; echo`,
    `curl -s "$BASE/scheduler/reservations" -H "Authorization: Bearer $ALICE"; echo`,
    "# alice's quota and usage",
    `curl -s "$BASE/quotas/user/alice" -H "Authorization: Bearer $ALICE"; echo`,
    "# alice's balance, ledger and usage report (charges arrive through the usage queue in a second or two)",
    `curl -s "$BASE/billing/users/alice/balance" -H "Authorization: Bearer $ALICE"; echo`,
    `curl -s "$BASE/billing/users/alice/ledger" -H "Authorization: Bearer $ALICE"; echo`,
    `curl -s "$BASE/metering/users/alice" -H "Authorization: Bearer $ALICE"; echo`,
    "# top up alice by 20.00 USD (admin; the same paymentId is credited once)",
    `curl -s -X POST "$BASE/billing/users/alice/top-ups" -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' -d ` +
      `'{"amountMinor":2000,"paymentId":"demo-pay-1","paymentMethod":"card"}'; echo`,
    "# what another service sees (X-Service-Token from .dev.vars)",
    `SERVICE=${serviceToken()}`,
    "# an app event from the app service: lands on alice's feed (the same eventId shows once)",
    `curl -s -X POST "$BASE/api/internal/events" -H "X-Service-Token: $SERVICE" -H 'content-type: application/json' -d ` +
      `'{"type":"app.installed","eventId":"demo-app-1",` +
      `"data":{"userId":"alice","appId":"com.example.chat","appName":"Chat","deviceId":"demo-default-1","version":"1.2.0"}}'; echo`,
    `curl -s "$BASE/api/internal/balance/user/alice" -H "X-Service-Token: $SERVICE"; echo`,
    "# reconcile ended allocations with usage and charges (admin)",
    `curl -s -X POST "$BASE/admin/billing/reconcile" -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' -d ` +
      `'{"userId":"alice","to":"2999-01-01T00:00:00Z"}'; echo`,
    "# pools (admin)",
    `curl -s "$BASE/admin/pools" -H "Authorization: Bearer $ADMIN"; echo`,
    "# operator metrics in the Prometheus text format (admin)",
    `curl -s "$BASE/admin/metrics" -H "Authorization: Bearer $ADMIN"`,
    "# run the cron now (billing events, last month's invoices, reconciliation); npm run dev also runs it every 5 minutes",
    `curl -s "$BASE/__scheduled?cron=*/5+*+*+*+*"; echo`,
    "# the OpenAPI document",
    `curl -s "$BASE/openapi.json"; echo`,
    "",
    line,
    ` Ctrl+C stops the server. Local data lives in ${persistTo ?? ".wrangler/state"} (delete it to start over).`,
    line,
    "",
  ];
  process.stdout.write(out.join("\n") + "\n");
}
