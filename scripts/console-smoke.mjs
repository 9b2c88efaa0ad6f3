#!/usr/bin/env node
// A browser run through the web console against a running service (`npm run dev`, with its
// demo fleet): headless Chromium through playwright-core. Plain Node ESM (Node 20+).
//
//   node scripts/console-smoke.mjs [--base http://127.0.0.1:8787] [--out test-results/console] [--expiry]
//
// As alice: sign in by #token=, feed open, allocate, countdown ticks, extend, release, the
// usage record shows; a bad token shows the API's 401 words. As ops-admin: the fleet lists
// the pools' devices and follows alice's allocation live (pool feed). --expiry also waits
// for a 1-minute allocation to be highlighted (device.expiring) and released by the server
// (~70 s more). Screenshots go to --out. Tokens are signed with JWT_SECRET from .dev.vars.
// Chromium: /usr/bin/chromium, or CHROMIUM_PATH.
import { mkdirSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { jwtSecret, parseArgs, root, signToken } from "./lib.mjs";

const args = parseArgs(process.argv.slice(2), { booleans: ["expiry", "help"] });
if (args.help) {
  console.log("usage: node scripts/console-smoke.mjs [--base <url>] [--out <dir>] [--expiry]");
  process.exit(0);
}
const BASE = String(args.base ?? "http://127.0.0.1:8787").replace(/\/$/, "");
const OUT = path.resolve(root, String(args.out ?? "test-results/console"));
mkdirSync(OUT, { recursive: true });
const secret = jwtSecret();
const ALICE = signToken(secret, "alice", "user");
const ADMIN = signToken(secret, "ops-admin", "admin");
const T = 15_000;

/** Ends alice's active allocations (left by an earlier run), so her quota has room. */
async function releaseAll(token) {
  const call = async (method, p, body) => (await fetch(`${BASE}${p}`, { method, headers: { Authorization: `Bearer ${token}`, "content-type": "application/json" }, body: body && JSON.stringify(body) })).json();
  const { items = [] } = await call("GET", "/scheduler/allocations?status=active");
  for (const a of items) if (a.deviceId) await call("POST", "/scheduler/devices/release", { deviceId: a.deviceId });
  return items.length;
}

/** Submits the allocate form and waits for the row of the new allocation. */
async function allocate(page, minutes) {
  const before = await page.locator("#allocations [data-allocation-id]").evaluateAll((els) => els.map((e) => e.dataset.allocationId));
  await page.fill("#allocate-form [name=durationMinutes]", String(minutes));
  await page.click("#allocate-submit");
  const handle = await page.waitForFunction(
    (known) => [...document.querySelectorAll("#allocations [data-allocation-id]")].find((e) => !known.includes(e.dataset.allocationId)),
    before, { timeout: T },
  );
  return handle.asElement();
}

const started = Date.now();
const log = (msg) => console.log(`[console-smoke ${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${msg}`);
let failures = 0;
function check(ok, msg) {
  if (ok) log(`ok   ${msg}`);
  else {
    failures += 1;
    log(`FAIL ${msg}`);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-background-networking"],
});
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => check(false, `page error: ${e.message}`));

  // ---- alice ----------------------------------------------------------------------------
  const left = await releaseAll(ALICE);
  if (left) log(`released ${left} allocation(s) alice still held`);
  await page.goto(`${BASE}/console/#token=${ALICE}`);
  await page.waitForSelector("#feed-state[data-state=open]", { timeout: T });
  check(!page.url().includes("token="), "the token left the address bar");
  check((await page.textContent("#whoami-user")) === "alice", "signed in as alice");
  await page.waitForSelector("#quota-plan", { timeout: T });

  const resumed = await page.evaluate(() => {
    const feed = globalThis.edaConsole.userFeed;
    const hello = feed.nextHello();
    feed.drop();
    return hello.then((h) => h.since);
  });
  await page.waitForSelector("#feed-state[data-state=open]", { timeout: T });
  check(typeof resumed === "number", `the feed reconnected after a drop (resumed from seq ${resumed})`);

  await page.fill("#allocate-form [name=pool]", "default");
  const row = await allocate(page, 30);
  const id = await row.getAttribute("data-allocation-id");
  const device = await row.getAttribute("data-device-id");
  log(`alice holds ${device} (${id})`);
  const sel = `#allocations [data-allocation-id="${id}"]`;
  const c1 = await page.textContent(`${sel} .countdown`);
  await page.waitForTimeout(2_100);
  const c2 = await page.textContent(`${sel} .countdown`);
  check(/^\d\d:\d\d$/.test(c1 ?? "") && c1 !== c2, `the countdown runs (${c1} → ${c2})`);
  await page.waitForSelector('#events [data-type="device.allocated"]', { timeout: T });
  check(true, "device.allocated in the event list");

  await page.fill(`${sel} [name=additionalMinutes]`, "5");
  await page.click(`${sel} button.extend`);
  await page.waitForSelector('#events [data-type="device.extended"]', { timeout: T });
  const c3 = await page.textContent(`${sel} .countdown`);
  check(c3?.startsWith("34:"), `extend by 5 minutes moved the countdown (${c2} → ${c3})`);
  await page.screenshot({ path: path.join(OUT, "user-allocated.png"), fullPage: true });

  // ---- the admin watches the fleet -------------------------------------------------------
  const actx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const admin = await actx.newPage();
  admin.on("pageerror", (e) => check(false, `admin page error: ${e.message}`));
  await admin.goto(`${BASE}/console/`);
  await admin.fill("#signin-token", ADMIN);
  await admin.click("#signin-submit");
  await admin.click("#tab-admin");
  await admin.waitForSelector(`#fleet [data-device-id="${device}"][data-status=allocated]`, { timeout: T });
  check(true, `the fleet shows ${device} allocated`);
  const poolStates = await admin.locator(".pool-feed-state").evaluateAll((els) => els.map((e) => e.dataset.state));
  log(`pool feeds: ${poolStates.join(", ")}`);
  await admin.screenshot({ path: path.join(OUT, "admin.png"), fullPage: true });

  // ---- release, usage, the fleet follows -------------------------------------------------
  await page.click(`${sel} button.release`);
  await page.waitForSelector(sel, { state: "detached", timeout: T });
  await page.waitForSelector('#events [data-type="device.released"]', { timeout: T });
  check(true, "released: the row left, device.released in the event list");
  await page.waitForSelector(`#usage [data-allocation-id="${id}"]`, { timeout: 35_000 });
  check(true, "its usage record shows");
  await admin.waitForSelector(`#fleet [data-device-id="${device}"][data-status=available]`, { timeout: T });
  check(true, `the fleet shows ${device} available again`);
  await page.screenshot({ path: path.join(OUT, "user-released.png"), fullPage: true });

  await page.fill("#allocate-form [name=cpuCores]", "999");
  await page.click("#allocate-submit");
  await page.waitForSelector("#allocate-msg.error", { timeout: T });
  check(/^[A-Z_]+: /.test((await page.textContent("#allocate-msg")) ?? ""), `a refusal reads CODE: message (${await page.textContent("#allocate-msg")})`);
  await page.fill("#allocate-form [name=cpuCores]", "");

  if (args.expiry) {
    const r = await allocate(page, 1);
    const id2 = await r.getAttribute("data-allocation-id");
    await page.waitForSelector(`#allocations tr.expiring[data-allocation-id="${id2}"]`, { timeout: 45_000 });
    check(true, "device.expiring highlights the row");
    await page.waitForSelector(`#allocations [data-allocation-id="${id2}"]`, { state: "detached", timeout: 45_000 });
    check(true, "the server released it at expiry");
    await page.waitForSelector(`#usage [data-allocation-id="${id2}"]`, { timeout: 35_000 });
    check(true, "its usage record shows");
  }

  const bad = await browser.newPage();
  await bad.goto(`${BASE}/console/#token=not.a.token`);
  await bad.waitForSelector("#signin-error.error", { timeout: T });
  check((await bad.textContent("#signin-error"))?.startsWith("UNAUTHORIZED: "), `a bad token: ${await bad.textContent("#signin-error")}`);

  await page.click("#signout");
  await page.waitForSelector("#signin-token", { state: "visible", timeout: T });
  check((await page.evaluate(() => sessionStorage.length)) === 0, "signed out: nothing kept");
} catch (err) {
  failures += 1;
  log(`FAIL ${err?.message?.split("\n")[0] ?? err}`);
  for (const [i, p] of browser.contexts().flatMap((c) => c.pages()).entries()) {
    await p.screenshot({ path: path.join(OUT, `failure-${i}.png`), fullPage: true }).catch(() => {});
  }
} finally {
  await browser.close();
}
log(failures ? `${failures} check(s) failed; screenshots in ${path.relative(root, OUT)}` : `all passed; screenshots in ${path.relative(root, OUT)}`);
process.exit(failures ? 1 : 0);
