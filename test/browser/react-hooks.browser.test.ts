/**
 * The React hooks (src/react) in Chromium against `npm run dev`: a small page (react-hooks-page.ts,
 * bundled here with esbuild and served at the service's origin through playwright's routing, so the
 * Worker serves nothing new) renders each hook, and the test drives real events through the API:
 * quota changes, allocations, top-ups, adjustments, app events from the service. It asserts each
 * hook's callbacks fire with the event's data, the user and device filters keep out the rest, the
 * state renders, and hooks on one feed share one socket. Screenshots in test-results/browser/.
 */
import path from "node:path";
import * as esbuild from "esbuild";
import type { Browser, Page } from "playwright-core";
import { describe, expect, it } from "vitest";
import { readDevVars, root } from "../../scripts/lib.mjs";
import { api, browserRequired, chromiumPath, devAndBrowser, shot, watchPage, type DevServer } from "./harness";
import type { HookCall, HooksPageConfig } from "./react-hooks-page";

const executable = chromiumPath();
if (!executable) {
  const msg = "browser tests: no Chromium found (set CHROMIUM_PATH, or: sudo apt-get install chromium)";
  if (browserRequired) throw new Error(`${msg}; REQUIRE_BROWSER=1 makes this a failure`);
  console.warn(`SKIPPED ${msg}`);
}

const PAGE_PATH = "/react-hooks-test/";

/** The page's script, bundled as a frontend would bundle the hooks, and the source files it took in. */
async function bundlePage(): Promise<{ js: string; inputs: string[] }> {
  const out = await esbuild.build({
    absWorkingDir: root,
    entryPoints: [path.join(root, "test/browser/react-hooks-page.ts")],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    target: "es2022",
    define: { "process.env.NODE_ENV": '"development"' },
    metafile: true,
    logLevel: "silent",
  });
  return { js: out.outputFiles[0]!.text, inputs: Object.keys(out.metafile.inputs) };
}

const HTML = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>React hooks</title><style>
body { font: 13px system-ui, sans-serif; margin: 12px; } main { display: grid; grid-template-columns: repeat(2, 1fr); gap: 12px; }
.panel { border: 1px solid #bbb; border-radius: 6px; padding: 8px 12px; } h2 { font-size: 14px; margin: 0 0 4px; }
h3 { font-size: 12px; margin: 8px 0 2px; } dl { display: grid; grid-template-columns: max-content 1fr; gap: 0 8px; margin: 4px 0; }
dt { color: #555; } dd { margin: 0; } ol { margin: 0; padding-left: 18px; } li { word-break: break-all; }
.panel[data-state="open"] .conn { color: #070; } .panel[data-state="stopped"] .conn { color: #a00; }
</style></head><body><div id="root"></div><script type="module" src="${PAGE_PATH}page.js"></script></body></html>`;

describe.skipIf(!executable)("React hooks in Chromium against npm run dev", () => {
  let dev: DevServer;
  let browser: Browser;
  let js: string;
  const serviceToken = () => (readDevVars() as Record<string, string>).SERVICE_TOKEN!;

  devAndBrowser(executable!, async (d, b) => {
    dev = d;
    browser = b;
    const bundle = await bundlePage();
    js = bundle.js;
    // The hooks take in the feed client and the protocol, and no server code (the Worker's side never imports them either).
    const ours = bundle.inputs.filter((f) => !f.startsWith("node_modules/"));
    expect(ours.sort()).toEqual(
      [
        "src/client/feed-client.ts",
        "src/feed/protocol.ts",
        "src/react/device-state.ts",
        "src/react/index.ts",
        "src/react/provider.ts",
        "src/react/shared-feeds.ts",
        "src/react/use-feed-events.ts",
        "src/react/use-realtime-app.ts",
        "src/react/use-realtime-billing.ts",
        "src/react/use-realtime-device.ts",
        "src/react/use-realtime-quota.ts",
        "test/browser/react-hooks-page.ts",
      ].sort(),
    );
  });

  /** The page with `config`, its tickets and sockets counted, once every panel has its feed's hello. */
  async function openPage(config: HooksPageConfig, ready = true) {
    // A routed page came from no address, so Chromium counts it as public and asks before it opens a socket to
    // 127.0.0.1 (Local Network Access); a page the service served itself is local and is not asked. Granted as a user would.
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 }, permissions: ["local-network-access"] });
    const seen = watchPage(page);
    const tickets: string[] = [];
    const sockets: string[] = [];
    page.on("request", (r) => {
      if (new URL(r.url()).pathname === "/ws/ticket") tickets.push(r.postData() ?? "");
    });
    page.on("websocket", (ws) => sockets.push(new URL(ws.url()).pathname));
    await page.route(
      (url) => url.pathname.startsWith(PAGE_PATH),
      (route) =>
        new URL(route.request().url()).pathname.endsWith("/page.js")
          ? route.fulfill({ contentType: "text/javascript", body: js })
          : route.fulfill({ contentType: "text/html", body: HTML }),
    );
    await page.goto(`${dev.base}${PAGE_PATH}#${encodeURIComponent(JSON.stringify(config))}`);
    if (ready)
      for (const p of config.panels)
        await page
          .locator(`#${p.id}[data-hello="1"][data-state="open"]`)
          .waitFor({ timeout: 20_000 })
          .catch(async (err) => {
            throw new Error(`${p.id} did not open: ${err}\npage: ${await page.locator("body").innerText()}\n${seen.problems.join("\n")}`);
          });
    return { page, seen, tickets, sockets };
  }

  const calls = (page: Page): Promise<HookCall[]> => page.evaluate(() => window.hookCalls);
  const callsOf = async (page: Page, hook: string, callback?: string) =>
    (await calls(page)).filter((c) => c.hook === hook && (!callback || c.callback === callback));
  /** Waits for `hook`'s `callback` to have been called `n` times, and returns those calls. */
  async function called(page: Page, hook: string, callback: string, n = 1): Promise<HookCall[]> {
    await expect.poll(async () => (await callsOf(page, hook, callback)).length, { timeout: 20_000 }).toBeGreaterThanOrEqual(n);
    return callsOf(page, hook, callback);
  }
  const attr = (page: Page, id: string, name: string) => page.locator(`#${id}`).getAttribute(`data-${name}`);

  /** Accounts open with the starting credit on their first read. */
  async function openAccounts(...users: string[]) {
    for (const user of users) expect((await api(dev.base, dev.token(user), "GET", `/billing/users/${user}/balance`)).status).toBe(200);
  }

  async function appEvents(events: unknown[]) {
    const res = await fetch(`${dev.base}/api/internal/events`, {
      method: "POST",
      headers: { "x-service-token": serviceToken(), "content-type": "application/json" },
      body: JSON.stringify({ events }),
    });
    expect(res.status, await res.clone().text()).toBe(202);
  }

  /** An adjustment that takes `userId` from at or above their low-balance threshold to one below it. */
  async function belowThreshold(userId: string, id: string): Promise<{ balance: number; threshold: number }> {
    const b = await api(dev.base, dev.tokens.admin, "GET", `/billing/users/${userId}/balance`);
    expect(b.status).toBe(200);
    const threshold = b.body.lowBalanceThresholdMinor as number;
    expect(b.body.balanceMinor).toBeGreaterThanOrEqual(threshold);
    const adj = await api(dev.base, dev.tokens.admin, "POST", `/admin/billing/users/${userId}/adjustments`, {
      amountMinor: threshold - 1 - b.body.balanceMinor,
      adjustmentId: id,
      memo: "browser test: below the threshold",
    });
    expect(adj.status, JSON.stringify(adj.body)).toBe(201);
    // The answer's balance, not threshold - 1: a charge booked in between moves both the same way.
    expect(adj.body.balanceMinor).toBeLessThan(threshold);
    return { balance: adj.body.balanceMinor, threshold };
  }

  it("a user's page: useRealtimeQuota, useRealtimeBilling, useRealtimeApp and useRealtimeDevice on one socket", async () => {
    const carol = dev.token("carol");
    const dave = dev.token("dave");
    await openAccounts("carol", "dave");
    const { page, seen, tickets, sockets } = await openPage({
      token: carol,
      panels: [
        { hook: "quota", id: "quota", options: { userId: "carol" } },
        { hook: "billing", id: "billing", options: { userId: "carol" } },
        { hook: "app", id: "app", options: { deviceId: "demo-default-1" } },
        { hook: "device", id: "device", options: {} },
      ],
    });
    // Four hooks, in StrictMode (effects run twice): one ticket, one socket.
    expect(tickets).toHaveLength(1);
    expect(sockets).toEqual(["/ws"]);

    // Quota: an operator changes dave's and then carol's limits; only carol's reaches her page.
    expect((await api(dev.base, dev.tokens.admin, "PUT", "/quotas/user/dave", { limits: { maxDevices: 3 } })).status).toBe(200);
    expect((await api(dev.base, dev.tokens.admin, "PUT", "/quotas/user/carol", { limits: { maxDevices: 1 } })).status).toBe(200);
    const [updated] = await called(page, "quota", "onQuotaUpdated");
    expect(updated).toMatchObject({ type: "quota.updated", userId: "carol", data: { limits: { maxDevices: 1 }, status: "active" } });
    await expect.poll(() => attr(page, "quota", "max-devices")).toBe("1");
    const renew = await api(dev.base, dev.tokens.admin, "POST", "/quotas/renew/carol", { extensionDays: 10 });
    expect(renew.status).toBe(200);
    const [renewed] = await called(page, "quota", "onQuotaRenewed");
    expect(renewed!.data).toEqual({ validUntil: renew.body.validUntil, extensionDays: 10 });
    await expect.poll(() => attr(page, "quota", "valid-until")).toBe(renew.body.validUntil);

    // Device and quota: dave allocates (not carol's), then carol takes her one device: allocated, and her quota is reached.
    const daves = await api(dev.base, dave, "POST", "/scheduler/devices/allocate", { pool: "default", durationMinutes: 15 });
    expect(daves.status).toBe(201);
    const mine = await api(dev.base, carol, "POST", "/scheduler/devices/allocate", { pool: "default", durationMinutes: 15 });
    expect(mine.status, JSON.stringify(mine.body)).toBe(201);
    const [allocated] = await called(page, "device", "onDeviceAllocated");
    expect(allocated!.data).toMatchObject({ allocationId: mine.body.allocationId, deviceId: mine.body.deviceId, durationMinutes: 15 });
    const [exceeded] = await called(page, "quota", "onQuotaExceeded");
    expect(exceeded!.data).toMatchObject({ limits: { maxDevices: 1 }, usage: { devices: 1 } });
    await expect.poll(() => attr(page, "quota", "exceeded-devices")).toBe("1");

    // Released, then booked: the charge names the allocation and the balance after it.
    expect((await api(dev.base, carol, "POST", "/scheduler/devices/release", { deviceId: mine.body.deviceId })).status).toBe(200);
    const [released] = await called(page, "device", "onDeviceReleased");
    expect(released!.data).toMatchObject({ allocationId: mine.body.allocationId, deviceId: mine.body.deviceId, reason: "released" });
    const [charged] = await called(page, "billing", "onCharged");
    expect(charged).toMatchObject({ userId: "carol", data: { allocationId: mine.body.allocationId, deviceId: mine.body.deviceId } });
    const afterCharge = await api(dev.base, carol, "GET", "/billing/users/carol/balance");
    expect(charged!.data.newBalance).toBe(afterCharge.body.balanceMinor);
    expect(charged!.data.amount).toBeGreaterThanOrEqual(0);
    expect(charged!.data.currency).toBe(afterCharge.body.currency);
    await expect.poll(() => attr(page, "billing", "last-charge")).toBe(mine.body.allocationId);

    // Payments: dave's top-up is not carol's; hers names the payment, the amount and the new balance.
    const top = (user: string, paymentId: string, amountMinor: number) =>
      api(dev.base, dev.tokens.admin, "POST", `/billing/users/${user}/top-ups`, { amountMinor, paymentId, paymentMethod: "card" });
    expect((await top("dave", "dave-pay-1", 300)).status).toBe(201);
    const paid = await top("carol", "carol-pay-1", 500);
    expect(paid.status, JSON.stringify(paid.body)).toBe(201);
    const [payment] = await called(page, "billing", "onPaymentSuccess");
    expect(payment!.data).toMatchObject({
      amount: 500,
      paymentId: "carol-pay-1",
      paymentMethod: "card",
      newBalance: paid.body.balanceMinor,
    });
    await expect.poll(() => attr(page, "billing", "balance")).toBe(String(paid.body.balanceMinor));

    // Low balance: an adjustment takes her below her plan's threshold.
    const low = await belowThreshold("carol", "carol-low-1");
    const [lowCall] = await called(page, "billing", "onLowBalance");
    expect(lowCall!.data).toMatchObject({ balance: low.balance, threshold: low.threshold });
    await expect.poll(() => attr(page, "billing", "balance")).toBe(String(low.balance));

    // Apps, from the app service: other devices' and other users' events stay out of useRealtimeApp({deviceId}).
    const app = (type: string, userId: string, deviceId: string, extra: Record<string, string>) => ({
      type,
      data: { userId, appId: "com.example.maps", appName: "Maps", deviceId, ...extra },
    });
    await appEvents([
      app("app.installed", "carol", "demo-default-2", { version: "0.9.0" }),
      app("app.installed", "dave", "demo-default-1", { version: "0.9.0" }),
      app("app.installed", "carol", "demo-default-1", { version: "1.0.0", deviceName: "Phone 1" }),
      app("app.install_failed", "carol", "demo-default-1", { reason: "disk full" }),
      app("app.updated", "carol", "demo-default-1", { oldVersion: "1.0.0", newVersion: "1.1.0" }),
    ]);
    await called(page, "app", "onAppUpdated");
    expect((await callsOf(page, "app")).map((c) => [c.callback, c.userId, c.data.deviceId])).toEqual([
      ["onAppInstalled", "carol", "demo-default-1"],
      ["onAppInstallFailed", "carol", "demo-default-1"],
      ["onAppUpdated", "carol", "demo-default-1"],
    ]);
    expect((await callsOf(page, "app", "onAppInstalled"))[0]!.data).toMatchObject({ version: "1.0.0", deviceName: "Phone 1" });
    await expect.poll(() => attr(page, "app", "updated")).toBe("Maps 1.1.0");
    await expect.poll(() => attr(page, "app", "failed")).toBe("disk full");
    expect(await page.locator("#app li[data-type]").count()).toBe(3);

    // Nothing of dave's anywhere, each callback once per event, and the panels list what the callbacks saw.
    const all = await calls(page);
    expect(all.every((c) => c.userId === "carol")).toBe(true);
    expect(new Set(all.map((c) => `${c.hook}:${c.seq}`)).size).toBe(all.length);
    expect(await page.locator("#billing li[data-type]").count()).toBe((await callsOf(page, "billing")).length);
    expect(tickets).toHaveLength(1);
    await shot(page, "react-hooks-user");
    expect(seen.problems).toEqual([]);
    expect(seen.offsite).toEqual([]);
    await page.close();
  });

  it("an admin's page: a device's own feed (late hooks share its state), the admin feed filtered by device and by user", async () => {
    const erin = dev.token("erin");
    await openAccounts("erin", "frank");
    const held = await api(dev.base, erin, "POST", "/scheduler/devices/allocate", { pool: "default", durationMinutes: 20 });
    expect(held.status, JSON.stringify(held.body)).toBe(201);
    const x = held.body.deviceId as string;
    const devices = await api(dev.base, dev.tokens.admin, "GET", "/admin/pools/default/devices");
    const y = (devices.body.items as { deviceId: string; status: string }[]).find(
      (d) => d.deviceId !== x && d.status === "available",
    )!.deviceId;

    const { page, seen, tickets, sockets } = await openPage({
      token: dev.tokens.admin,
      panels: [
        { hook: "device", id: "device", options: { deviceId: x } },
        { hook: "device", id: "device-admin", options: { feed: "admin", deviceId: x } },
        { hook: "device", id: "device-all", options: { feed: "admin" } },
        { hook: "billing", id: "billing-erin", options: { feed: "admin", userId: "erin" } },
        { hook: "billing", id: "billing-all", options: { feed: "admin" } },
      ],
      late: { hook: "device", id: "device-late", options: { deviceId: x } },
    });
    // Two feeds (the device's and the operators'), one socket each.
    expect(tickets).toHaveLength(2);
    expect(sockets.sort()).toEqual(["/ws/admin", `/ws/devices/${x}`]);
    // The device feed's hello says who holds it until when.
    expect(await attr(page, "device", "device-status")).toBe("allocated");
    expect(await attr(page, "device", "holder")).toBe("erin");
    expect(await attr(page, "device", "allocation")).toBe(held.body.allocationId);
    expect(await attr(page, "device-admin", "device-status")).toBe(""); // no device state off the device feed

    // Extended: the callback and the new end.
    const ext = await api(dev.base, erin, "PUT", `/scheduler/allocations/${held.body.allocationId}/extend`, { additionalMinutes: 10 });
    expect(ext.status, JSON.stringify(ext.body)).toBe(200);
    const [extended] = await called(page, "device", "onDeviceExtended");
    expect(extended!.data).toMatchObject({ allocationId: held.body.allocationId, additionalMinutes: 10, expiresAt: ext.body.expiresAt });
    await expect.poll(() => attr(page, "device", "expires-at")).toBe(ext.body.expiresAt);

    // A hook mounted after that event sees the device as it is now, on the same socket.
    await page.click("#mount-late");
    await page.locator('#device-late[data-hello="1"]').waitFor({ timeout: 10_000 });
    expect(await attr(page, "device-late", "expires-at")).toBe(ext.body.expiresAt);
    expect(tickets).toHaveLength(2);

    // Released: both device hooks hear it and show the device free.
    expect((await api(dev.base, erin, "POST", "/scheduler/devices/release", { deviceId: x })).status).toBe(200);
    for (const id of ["device", "device-late"]) {
      const [rel] = await called(page, id, "onDeviceReleased");
      expect(rel).toMatchObject({ userId: "erin", data: { allocationId: held.body.allocationId, deviceId: x } });
      await expect.poll(() => attr(page, id, "device-status")).toBe("available");
      expect(await attr(page, id, "allocation")).toBe("");
    }

    // Status changes on the admin feed: y's and x's reach the page; useRealtimeDevice({deviceId: x}) keeps only x's.
    for (const id of [y, x])
      expect((await api(dev.base, dev.tokens.admin, "POST", `/admin/devices/${id}/maintenance`)).status, id).toBe(200);
    const both = await called(page, "device-all", "onDeviceStatusChanged", 2);
    expect(both.map((c) => c.data.deviceId).sort()).toEqual([x, y].sort());
    const onlyX = await called(page, "device-admin", "onDeviceStatusChanged");
    expect(onlyX.map((c) => [c.data.deviceId, c.data.status])).toEqual([[x, "maintenance"]]);
    const [onDevice] = await called(page, "device", "onDeviceStatusChanged");
    expect(onDevice!.data).toMatchObject({ deviceId: x, status: "maintenance", previousStatus: "available" });
    await expect.poll(() => attr(page, "device", "device-status")).toBe("maintenance");
    for (const id of [y, x]) expect((await api(dev.base, dev.tokens.admin, "POST", `/admin/devices/${id}/online`)).status).toBe(200);
    await expect.poll(() => attr(page, "device", "device-status")).toBe("available");

    // Low balances of two users reach the operators' feed; useRealtimeBilling({feed: "admin", userId}) keeps that user's.
    await belowThreshold("frank", "frank-low-1");
    const erinLow = await belowThreshold("erin", "erin-low-1");
    const lows = await called(page, "billing-all", "onLowBalance", 2);
    expect(lows.map((c) => c.userId).sort()).toEqual(["erin", "frank"]);
    const erins = await called(page, "billing-erin", "onLowBalance");
    expect(erins.map((c) => [c.userId, c.data.balance])).toEqual([["erin", erinLow.balance]]);
    await expect.poll(() => attr(page, "billing-erin", "balance")).toBe(String(erinLow.balance));
    // Many users' balances are no one balance.
    expect(await attr(page, "billing-all", "balance")).toBe("");

    // A drain of the device erin holds next: onDeviceDraining on the operators' feed (every device,
    // and narrowed to it when it is x); at the release the status change carries the reason.
    const again = await api(dev.base, erin, "POST", "/scheduler/devices/allocate", { pool: "default" });
    expect(again.status, JSON.stringify(again.body)).toBe(201);
    const z = again.body.deviceId as string;
    const drain = await api(dev.base, dev.tokens.admin, "POST", `/admin/devices/${z}/maintenance`, { drain: true, reason: "swap" });
    expect(drain.status, JSON.stringify(drain.body)).toBe(200);
    const [drained] = await called(page, "device-all", "onDeviceDraining");
    expect(drained!.data).toMatchObject({ deviceId: z, status: "maintenance", reason: "swap", allocationId: again.body.allocationId });
    expect((await api(dev.base, erin, "POST", "/scheduler/devices/release", { deviceId: z })).status).toBe(200);
    await expect
      .poll(async () =>
        (await callsOf(page, "device-all", "onDeviceStatusChanged")).some((c) => c.data.deviceId === z && c.data.reason === "swap"),
      )
      .toBe(true);
    const last = (await callsOf(page, "device-all", "onDeviceStatusChanged")).filter((c) => c.data.deviceId === z).pop();
    expect(last!.data).toMatchObject({ status: "maintenance", previousStatus: "allocated", reason: "swap" });
    if (z !== x) expect(await callsOf(page, "device-admin", "onDeviceDraining")).toEqual([]);

    await shot(page, "react-hooks-admin");
    expect(seen.problems).toEqual([]);
    expect(seen.offsite).toEqual([]);
    await page.close();
  });

  it("a device feed the user may not open: the hook says stopped, with the server's reason", async () => {
    const gina = dev.token("gina");
    const other = await api(dev.base, dev.token("hank"), "POST", "/scheduler/devices/allocate", { pool: "default", durationMinutes: 5 });
    expect(other.status).toBe(201);
    const { page, seen } = await openPage(
      { token: gina, panels: [{ hook: "device", id: "device", options: { deviceId: other.body.deviceId } }] },
      false,
    );
    await page.locator('#device[data-state="stopped"]').waitFor({ timeout: 20_000 });
    expect(await attr(page, "device", "close")).toBe("4403");
    expect(await attr(page, "device", "error")).toMatch(/\S/);
    await shot(page, "react-hooks-refused");
    expect(seen.problems).toEqual([]);
    await page.close();
  });
});
