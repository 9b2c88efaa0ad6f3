/**
 * The web console in a real browser (Debian's Chromium, headless) against `npm run dev`:
 * what a user and an operator see, live from the feeds, with no reload. Screenshots of each
 * step are saved in test-results/browser/.
 */
import { describe, expect, it } from "vitest";
import type { Browser, Page } from "playwright-core";
import { api, browserRequired, chromiumPath, devAndBrowser, shot, watchPage, type DevServer } from "./harness";

const executable = chromiumPath();
if (!executable) {
  const msg = "browser tests: no Chromium found (set CHROMIUM_PATH, or: sudo apt-get install chromium)";
  if (browserRequired) throw new Error(`${msg}; REQUIRE_BROWSER=1 makes this a failure`);
  console.warn(`SKIPPED ${msg}`);
}

describe.skipIf(!executable)("web console in Chromium against npm run dev", () => {
  let dev: DevServer;
  let browser: Browser;
  devAndBrowser(executable!, (d, b) => void ((dev = d), (browser = b)));

  async function signedIn(token: string): Promise<{ page: Page; seen: ReturnType<typeof watchPage> }> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const seen = watchPage(page);
    const res = await page.goto(`${dev.base}/console/#token=${token}`);
    // Served with its security headers (public/_headers): only this origin, never in a frame.
    expect(res?.headers()["content-security-policy"]).toContain("frame-ancestors 'none'");
    await page.locator("#feed-state[data-state=open]").waitFor({ timeout: 20_000 });
    // The token left the address bar (it travelled in the fragment, never to the server).
    expect(page.url()).not.toContain("token=");
    return { page, seen };
  }

  it("the API reference page (/docs/) renders every operation of /openapi.json, desktop and phone, this origin only", async () => {
    const root = await fetch(`${dev.base}/`).then((r) => r.json());
    expect(root.reference).toBe("/docs/");
    for (const [name, viewport] of [
      ["reference-desktop", { width: 1280, height: 900 }],
      ["reference-phone", { width: 390, height: 844 }],
    ] as const) {
      const page = await browser.newPage({ viewport });
      const seen = watchPage(page);
      const res = await page.goto(`${dev.base}/docs/`);
      expect(res?.status()).toBe(200);
      expect(res?.headers()["content-security-policy"]).toContain("frame-ancestors 'none'");
      await page.locator(".opblock").first().waitFor({ timeout: 20_000 });
      // Every operation is listed (once per tag it has) with its operationId, what a generated client calls it.
      const shown = new Set(await page.locator(".opblock-summary-operation-id").allTextContents());
      const spec = await fetch(`${dev.base}/openapi.json`).then((r) => r.json());
      const declared = Object.values(spec.paths as Record<string, Record<string, { operationId: string }>>).flatMap((item) =>
        Object.values(item).map((op) => op.operationId),
      );
      expect([...shown].sort()).toEqual([...new Set(declared)].sort());
      await shot(page, name);
      expect(seen.problems).toEqual([]);
      expect(seen.offsite).toEqual([]);
      await page.close();
    }
    // The console links to it.
    const page = await browser.newPage();
    await page.goto(`${dev.base}/console/`);
    expect(await page.locator('a[href="/docs/"]').count()).toBe(1);
    await page.close();
  });

  it("a user allocates, sees the countdown and device.allocated, releases, and sees the usage appear", async () => {
    const { page, seen } = await signedIn(dev.tokens.alice);
    await shot(page, "user-1-signed-in");

    // An error is shown as the API words it.
    await page.fill("#allocate-form [name=pool]", "no-such-pool");
    await page.click("#allocate-form [type=submit]");
    await expect.poll(() => page.locator("#allocate-form .error").textContent(), { timeout: 10_000 }).toMatch(/^POOL_NOT_FOUND: /);
    await shot(page, "user-2-api-error");

    await page.fill("#allocate-form [name=pool]", "default");
    await page.fill("#allocate-form [name=durationMinutes]", "30");
    await page.click("#allocate-form [type=submit]");
    const row = page.locator("#allocations tr[data-allocation-id]").first();
    await row.waitFor({ timeout: 10_000 });
    const allocationId = (await row.getAttribute("data-allocation-id"))!;
    expect(allocationId).toMatch(/\S/);
    // The countdown is live: it reads mm:ss under 30 minutes and moves without a reload.
    const countdown = row.locator(".countdown");
    const first = (await countdown.textContent())!.trim();
    expect(first).toMatch(/^(29|30):\d\d$/);
    await expect.poll(async () => (await countdown.textContent())!.trim(), { timeout: 5_000 }).not.toBe(first);
    await page.locator(`#events li[data-type="device.allocated"]`).first().waitFor({ timeout: 10_000 });
    await shot(page, "user-3-allocated");

    await row.locator("button.release").click();
    await page.locator(`#allocations tr[data-allocation-id="${allocationId}"]`).waitFor({ state: "detached", timeout: 10_000 });
    await page.locator(`#events li[data-type="device.released"]`).first().waitFor({ timeout: 10_000 });
    // Usage is booked through the queue; the page shows it once it is there.
    await page.locator(`#usage tr[data-allocation-id="${allocationId}"]`).waitFor({ timeout: 30_000 });
    await shot(page, "user-4-released-usage");

    expect(seen.problems).toEqual([]);
    expect(seen.offsite).toEqual([]);
    await page.close();
  });

  it("an operator sees a device change state live, without reloading", async () => {
    const { page, seen } = await signedIn(dev.tokens.admin);
    await page.click("#tab-admin");
    const fleet = page.locator("#fleet");
    await fleet.locator("tr[data-device-id]").first().waitFor({ timeout: 15_000 });
    // Live from the pool feed, not from the fallback poller: the feed is open, and the device list is not read again.
    await page.locator('.pool-feed-state[data-pool="default"][data-state="open"]').waitFor({ timeout: 15_000 });
    const reads: string[] = [];
    page.on("request", (r) => {
      if (new URL(r.url()).pathname.startsWith("/admin/pools/default/devices")) reads.push(r.url());
    });
    await shot(page, "admin-1-fleet");

    // Someone else allocates: the operator's row changes from the pool feed.
    const bob = await api(dev.base, dev.tokens.bob, "POST", "/scheduler/devices/allocate", {
      pool: "default",
      durationMinutes: 15,
    });
    expect(bob.status, JSON.stringify(bob.body)).toBe(201);
    const device = fleet.locator(`tr[data-device-id="${bob.body.deviceId}"]`);
    await expect.poll(() => device.getAttribute("data-status"), { timeout: 10_000 }).toBe("allocated");
    await expect.poll(() => device.textContent(), { timeout: 5_000 }).toContain("bob");
    await shot(page, "admin-2-allocated-live");

    const rel = await api(dev.base, dev.tokens.bob, "POST", "/scheduler/devices/release", {
      deviceId: bob.body.deviceId,
    });
    expect(rel.status).toBe(200);
    await expect.poll(() => device.getAttribute("data-status"), { timeout: 10_000 }).toBe("available");
    await shot(page, "admin-3-released-live");
    expect(reads).toEqual([]);

    expect(seen.problems).toEqual([]);
    expect(seen.offsite).toEqual([]);
    await page.close();
  });
});
