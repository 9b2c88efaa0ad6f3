/**
 * The console's Operations at a desktop size (1280×800) in Chromium against `npm run dev`, with a
 * fleet of 34 devices over three pools: the fleet's search, filters, collapse and natural order,
 * live from the feeds; each device's actions behind their confirmation, checked against the API
 * after each; pool settings; pricing plans. Screenshots in test-results/browser/ops-*.png.
 * (Register and import, and a user's page: operations-user.browser.test.ts.)
 */
import { describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { api, browserRequired, chromiumPath, devAndBrowser, type DevServer } from "./harness";
import { DESKTOP, WHEN, expectZonedTimes, localStart, shotFromTop } from "./renter-pages";
import {
  actionOutcome,
  allocateFor,
  deviceNow,
  fleetHeight,
  fleetRow,
  openDevice,
  operationsAs,
  registerUsFleet,
  reviewAction,
} from "./operations-pages";

const executable = chromiumPath();
if (!executable && browserRequired) throw new Error("browser tests: no Chromium found; REQUIRE_BROWSER=1 makes this a failure");

describe.skipIf(!executable)("Operations at 1280×800", () => {
  let dev: DevServer;
  let browser: Browser;
  devAndBrowser(executable!, async (d, b) => {
    dev = d;
    browser = b;
    await registerUsFleet(dev);
  });

  it("the fleet: natural order, search and filters, pools collapse, shorter than 1000 px collapsed; live without reload", async () => {
    const { page, seen, close } = await operationsAs(browser, dev);
    const ids = (pool: string) =>
      page
        .locator(`#fleet section[data-pool="${pool}"] tr[data-device-id]`)
        .evaluateAll((trs) => trs.map((tr) => (tr as HTMLElement).dataset.deviceId));
    // 34 devices over three pools, each pool in natural order (us-std-2 before us-std-10).
    await expect.poll(() => page.locator("#fleet tr[data-device-id]").count(), { timeout: 10_000 }).toBe(34);
    expect(await ids("us-std")).toEqual(Array.from({ length: 24 }, (_, i) => `us-std-${i + 1}`));
    expect(await page.locator("#fleet section.pool").evaluateAll((s) => s.map((x) => (x as HTMLElement).dataset.pool))).toEqual([
      "default",
      "eu-west-large",
      "us-std",
    ]);
    expect(await page.locator("#fleet-shown").textContent()).toBe("34 devices");
    // Compact rows: one line each at this size.
    const rowHeight = (await fleetRow(page, "us-std-1").boundingBox())!.height;
    expect(rowHeight).toBeLessThan(40);
    // The name, model and labels are in the device's cell.
    expect(await fleetRow(page, "us-std-4").locator("td.dev").textContent()).toContain("Pixel 8 #4 · Pixel 8 · Android 14");
    expect(await fleetRow(page, "us-std-4").locator(".label-chip").allTextContents()).toEqual(["region:us", "tier:gold"]);
    await shotFromTop(page, "ops-1-fleet");

    // Text search: the words are all found in the id, name, model, node, holder or labels.
    await page.fill("#fleet-search", "pixel #1");
    await expect.poll(() => ids("us-std")).toEqual(["us-std-1", ...Array.from({ length: 10 }, (_, i) => `us-std-${i + 10}`)]);
    expect(await page.locator('#fleet section[data-pool="default"]').isHidden()).toBe(true);
    expect(await page.locator("#fleet-shown").textContent()).toBe("11 of 34 devices match");
    // Label and node filters narrow it further; Clear brings the whole fleet back.
    await page.fill("#fleet-search", "");
    await page.selectOption("#fleet-label", "tier:gold");
    await expect.poll(() => ids("us-std")).toEqual(["us-std-4", "us-std-8", "us-std-12", "us-std-16", "us-std-20", "us-std-24"]);
    await page.selectOption("#fleet-node", "us-node-1");
    await expect.poll(() => ids("us-std")).toEqual(["us-std-12", "us-std-24"]);
    await shotFromTop(page, "ops-2-filtered");
    await page.click("#fleet-clear");
    await page.selectOption("#fleet-pool", "eu-west-large");
    await expect.poll(() => page.locator("#fleet tr[data-device-id]").count()).toBe(4);
    await page.selectOption("#fleet-pool", "");
    await page.selectOption("#fleet-status", "available");
    await expect.poll(() => page.locator("#fleet tr[data-device-id]").count()).toBe(34);
    await page.click("#fleet-clear");

    // Collapse: per pool (the header is a button, kept for the tab), and all at once.
    const expanded = await fleetHeight(page);
    const usToggle = page.locator('#fleet section[data-pool="us-std"] button.pool-toggle');
    await usToggle.click();
    expect(await usToggle.getAttribute("aria-expanded")).toBe("false");
    expect(await fleetRow(page, "us-std-1").isHidden()).toBe(true);
    await page.click("#fleet-collapse-all");
    const collapsed = await fleetHeight(page);
    expect(collapsed).toBeLessThan(1000);
    expect(collapsed).toBeLessThan(expanded / 2);
    await shotFromTop(page, "ops-3-collapsed");
    // A search opens the pools it finds devices in.
    await page.fill("#fleet-search", "euw-large-3");
    await expect.poll(() => fleetRow(page, "demo-euw-large-3").isVisible()).toBe(true);
    expect(await page.locator('#fleet section[data-pool="eu-west-large"] button.pool-toggle').getAttribute("aria-expanded")).toBe("true");
    await page.click("#fleet-clear");
    await page.click("#fleet-expand-all");
    // The state of each pool is kept for the tab: a reload shows them as they were left.
    await usToggle.click();
    await page.reload();
    await page.locator("#fleet tr[data-device-id]").first().waitFor({ state: "attached", timeout: 15_000 });
    await expect
      .poll(() => page.locator('#fleet section[data-pool="us-std"] button.pool-toggle').getAttribute("aria-expanded"))
      .toBe("false");
    await page.locator('#fleet section[data-pool="us-std"] button.pool-toggle').click();

    // Live: someone allocates and releases; the row follows from the pool feed without a reload or a list read.
    await page.locator('.pool-feed-state[data-pool="us-std"][data-state="open"]').waitFor({ timeout: 15_000 });
    const reads: string[] = [];
    page.on("request", (r) => {
      if (/^\/admin\/(pools\/[^/]+\/devices|devices)/.test(new URL(r.url()).pathname)) reads.push(r.url());
    });
    const bob = await allocateFor(dev, "bob", "us-std", 15);
    const row = fleetRow(page, bob.deviceId);
    await expect.poll(() => row.getAttribute("data-status"), { timeout: 10_000 }).toBe("allocated");
    expect(await row.locator("td.holder").textContent()).toBe("bob");
    expect(await row.locator("td.left .countdown").getAttribute("title")).toMatch(WHEN);
    await page.fill("#fleet-search", "bob");
    await expect.poll(() => page.locator("#fleet tr[data-device-id]").count()).toBe(1);
    await page.click("#fleet-clear");
    expect((await api(dev.base, dev.token("bob"), "POST", "/scheduler/devices/release", { deviceId: bob.deviceId })).status).toBe(200);
    await expect.poll(() => row.getAttribute("data-status"), { timeout: 10_000 }).toBe("available");
    expect(reads).toEqual([]);

    expect(seen.problems).toEqual([]);
    expect(seen.offsite).toEqual([]);
    await close();
  });

  it("device actions: each confirmed first (nothing changes before), then the API and the row agree; reasons, drains", async () => {
    const { page, seen, close } = await operationsAs(browser, dev);
    // A drain of a held device: the confirmation says what will happen; Cancel and Escape change nothing.
    const held = await allocateFor(dev, "bob", "default", 20);
    const row = fleetRow(page, held.deviceId);
    await expect.poll(() => row.getAttribute("data-status"), { timeout: 10_000 }).toBe("allocated");
    let dialog = await openDevice(page, held.deviceId);
    await expect.poll(() => dialog.locator("#device-summary").textContent()).toContain("bob until");
    const deadline = await localStart(page, 1, 9);
    let step = await reviewAction(dialog, "drain-maintenance", { reason: "battery swap", deadline });
    expect(await step.textContent()).toMatch(
      new RegExp(
        "takes no new allocation; bob's allocation \\(until .+\\) runs to its end \\(it may be extended up to .+\\), " +
          "then the device goes into maintenance\\. Reason: battery swap\\.",
      ),
    );
    expect(await step.textContent()).toMatch(WHEN);
    await shotFromTop(page, "ops-4-drain-confirm");
    // Focus is on Confirm; Escape steps back (the dialog stays), and nothing was sent.
    expect(await page.evaluate(() => document.activeElement?.className)).toContain("confirm-yes");
    await page.keyboard.press("Escape");
    await step.waitFor({ state: "detached" });
    expect(await page.locator("#device-dialog[open]").count()).toBe(1);
    expect((await deviceNow(dev, held.deviceId)).body.drain).toBeNull();
    step = await reviewAction(dialog, "drain-maintenance", { reason: "battery swap", deadline });
    await step.locator("button.confirm-no").click();
    expect((await deviceNow(dev, held.deviceId)).body.drain).toBeNull();
    // Confirm: the drain is under way in the API, and in the row (still allocated to bob).
    step = await reviewAction(dialog, "drain-maintenance", { reason: "battery swap", deadline });
    await step.locator("button.confirm-yes").click();
    expect(await actionOutcome(dialog)).toMatch(/is draining: maintenance once its allocation ends \(no extension past .+\)\.$/);
    let now = (await deviceNow(dev, held.deviceId)).body;
    expect(now).toMatchObject({ status: "allocated", statusReason: "battery swap", drain: { status: "maintenance" } });
    // The deadline typed on the page's clock (UTC+5:30) is the instant the API keeps.
    expect(now.drain.deadline).toBe(await page.evaluate((d) => new Date(d).toISOString(), deadline));
    await page.keyboard.press("Escape");
    await expect.poll(() => row.getAttribute("data-draining")).toBe("true");
    expect(await row.locator(".note").textContent()).toMatch(/^draining → maintenance, ends by .+: battery swap$/);
    expect(await row.locator(".note").textContent()).toMatch(WHEN);
    await expect.poll(() => page.locator('#admin-events li[data-type="device.draining"]').count(), { timeout: 10_000 }).toBe(1);
    await shotFromTop(page, "ops-5-draining");
    // The holder releases: the device goes to maintenance with its reason, live.
    expect((await api(dev.base, dev.token("bob"), "POST", "/scheduler/devices/release", { deviceId: held.deviceId })).status).toBe(200);
    await expect.poll(() => row.getAttribute("data-status"), { timeout: 10_000 }).toBe("maintenance");
    await expect.poll(() => row.locator(".note").textContent()).toBe("battery swap");
    expect(await row.getAttribute("data-draining")).toBeNull();

    // Back online, with a reason: the API and the row say so.
    dialog = await openDevice(page, held.deviceId);
    step = await reviewAction(dialog, "online", { reason: "swapped" });
    expect(await step.textContent()).toContain("goes back into service (available). Reason: swapped.");
    await step.locator("button.confirm-yes").click();
    expect(await actionOutcome(dialog)).toBe(`${held.deviceId} is available (swapped).`);
    expect((await deviceNow(dev, held.deviceId)).body).toMatchObject({ status: "available", statusReason: "swapped", drain: null });
    await expect.poll(() => row.getAttribute("data-status")).toBe("available");
    await page.keyboard.press("Escape");

    // Maintenance now on a held device ends the allocation (the confirmation says it is billed).
    const second = await allocateFor(dev, "alice", "default", 20);
    const row2 = fleetRow(page, second.deviceId);
    await expect.poll(() => row2.getAttribute("data-status"), { timeout: 10_000 }).toBe("allocated");
    dialog = await openDevice(page, second.deviceId);
    step = await reviewAction(dialog, "maintenance", { reason: "screen cracked" });
    expect(await step.textContent()).toMatch(
      /alice's allocation \(until .+\) ends now and is billed; \S+ goes into maintenance\. Reason: screen cracked\./,
    );
    expect((await deviceNow(dev, second.deviceId)).body.status).toBe("allocated");
    await step.locator("button.confirm-yes").click();
    expect(await actionOutcome(dialog)).toMatch(
      new RegExp(`^${second.deviceId} is maintenance \\(screen cracked\\); ended \\S+ of alice after `),
    );
    now = (await deviceNow(dev, second.deviceId)).body;
    expect(now).toMatchObject({ status: "maintenance", statusReason: "screen cracked", allocation: null });
    await expect.poll(() => row2.getAttribute("data-status")).toBe("maintenance");
    expect(await row2.locator(".note").textContent()).toBe("screen cracked");
    // Offline now, then online again.
    step = await reviewAction(dialog, "offline", { reason: "moved racks" });
    await step.locator("button.confirm-yes").click();
    expect(await actionOutcome(dialog)).toBe(`${second.deviceId} is offline (moved racks).`);
    expect((await deviceNow(dev, second.deviceId)).body.status).toBe("offline");
    await expect.poll(() => row2.getAttribute("data-status")).toBe("offline");
    step = await reviewAction(dialog, "online");
    await step.locator("button.confirm-yes").click();
    expect(await actionOutcome(dialog)).toBe(`${second.deviceId} is available.`);
    expect((await deviceNow(dev, second.deviceId)).body).toMatchObject({ status: "available", statusReason: null });
    await page.keyboard.press("Escape");

    // Force-release: only offered while the device is held.
    const third = await allocateFor(dev, "bob", "default", 20);
    const row3 = fleetRow(page, third.deviceId);
    await expect.poll(() => row3.getAttribute("data-status"), { timeout: 10_000 }).toBe("allocated");
    dialog = await openDevice(page, third.deviceId);
    step = await reviewAction(dialog, "force-release");
    expect(await step.textContent()).toMatch(/bob's allocation \(until .+\) ends now and is billed; \S+ is free again\./);
    await step.locator("button.confirm-yes").click();
    expect(await actionOutcome(dialog)).toMatch(new RegExp(`^Released ${third.allocationId} of bob after .+\\.$`));
    expect((await deviceNow(dev, third.deviceId)).body).toMatchObject({ status: "available", allocation: null });
    await expect.poll(() => row3.getAttribute("data-status")).toBe("available");
    await expect.poll(() => dialog.locator('input[value="force-release"]').isDisabled()).toBe(true);
    await page.keyboard.press("Escape");

    // Remove, the whole way by keyboard: Manage, an action (arrow keys), Review (Enter), Confirm (Enter).
    const temp = await api(dev.base, dev.tokens.admin, "POST", "/admin/devices", {
      deviceId: "temp-1",
      pool: "default",
      cpuCores: 2,
      memoryMB: 4096,
      storageMB: 32768,
    });
    expect(temp.status).toBe(201);
    await fleetRow(page, "temp-1").waitFor({ timeout: 10_000 });
    await fleetRow(page, "temp-1").locator("button.manage").focus();
    await page.keyboard.press("Enter");
    dialog = page.locator("#device-dialog[open]");
    await dialog.waitFor();
    expect(await dialog.locator('input[value="online"]').isDisabled()).toBe(true);
    await dialog.locator('input[value="offline"]').focus();
    await page.keyboard.press("ArrowDown"); // online is disabled: the next is force-release (disabled), then remove
    await expect.poll(() => dialog.locator('input[value="remove"]').isChecked()).toBe(true);
    await page.keyboard.press("Enter");
    step = dialog.locator(".confirm-step");
    await step.waitFor();
    expect(await step.textContent()).toContain("temp-1 leaves the fleet. This cannot be undone here (register it again).");
    expect((await deviceNow(dev, "temp-1")).status).toBe(200);
    await page.keyboard.press("Enter");
    expect(await actionOutcome(dialog)).toBe("Removed temp-1.");
    expect((await deviceNow(dev, "temp-1")).status).toBe(404);
    await fleetRow(page, "temp-1").waitFor({ state: "detached", timeout: 10_000 });
    await page.keyboard.press("Escape");
    expect(await page.locator("#fleet-msg").textContent()).toBe("Removed temp-1.");
    await expectZonedTimes(page, ["#admin-events li time"]);

    expect(seen.problems).toEqual([]);
    expect(seen.offsite).toEqual([]);
    await close();
  });

  it("pool settings: strategy (load-first) and idle release are saved, shown in the fleet, refused when out of range", async () => {
    const { page, seen, close } = await operationsAs(browser, dev);
    const line = page.locator('#pool-settings [data-pool="us-std"]');
    await line.waitFor();
    await line.locator("select[name=strategy]").selectOption("load-first");
    await line.locator("input[name=idleReleaseMinutes]").fill("30");
    await line.locator("button.save-pool").click();
    await expect.poll(() => line.locator(".row-msg").textContent(), { timeout: 10_000 }).toBe("Saved: load-first, idle release 30 min.");
    expect((await api(dev.base, dev.tokens.admin, "GET", "/admin/pools/us-std")).body).toMatchObject({
      strategy: "load-first",
      idleReleaseMinutes: 30,
    });
    expect(await page.locator('#fleet section[data-pool="us-std"] .pool-settings').textContent()).toBe("load-first · idle release 30 min");
    // Out of range: said at once, nothing sent.
    await line.locator("input[name=idleReleaseMinutes]").fill("0");
    await line.locator("button.save-pool").click();
    expect(await line.locator(".row-msg").textContent()).toBe("Idle release: 1 to 1,440 minutes, or empty for off.");
    expect(await line.locator(".row-msg").getAttribute("class")).toContain("error");
    expect((await api(dev.base, dev.tokens.admin, "GET", "/admin/pools/us-std")).body.idleReleaseMinutes).toBe(30);
    await shotFromTop(page, "ops-6-pool-settings");
    // Empty turns it off.
    await line.locator("input[name=idleReleaseMinutes]").fill("");
    await line.locator("button.save-pool").click();
    await expect.poll(() => line.locator(".row-msg").textContent(), { timeout: 10_000 }).toBe("Saved: load-first, idle release off.");
    expect((await api(dev.base, dev.tokens.admin, "GET", "/admin/pools/us-std")).body.idleReleaseMinutes).toBeNull();
    expect(seen.problems).toEqual([]);
    await close();
  });

  it("pricing plans: rates per hour; an edit is saved (the API says so), a refusal shown as the API words it; a new plan", async () => {
    const { page, seen, close } = await operationsAs(browser, dev);
    const before = (await api(dev.base, dev.tokens.admin, "GET", "/billing/pricing-plans")).body.items.find(
      (p: { pricingPlanId: string }) => p.pricingPlanId === "standard",
    );
    const row = page.locator('#pricing-plans tr[data-plan-id="standard"]');
    await row.waitFor({ timeout: 10_000 });
    await row.locator("button.edit-plan").click();
    const form = page.locator("#pricing-form");
    await form.locator("[name=baseMicrosPerSecond]").fill("30000");
    expect(await form.locator('.hint[data-for="baseMicrosPerSecond"]').textContent()).toBe("= $1.08 / h");
    // Only what changed is sent (PATCH), so another operator's change to another rate stands.
    const sent: { method: string; body: unknown }[] = [];
    page.on("request", (r) => {
      if (new URL(r.url()).pathname.startsWith("/admin/billing/pricing-plans/")) sent.push({ method: r.method(), body: r.postDataJSON() });
    });
    await page.click("#pricing-save");
    await expect
      .poll(() => page.locator("#pricing-msg").textContent(), { timeout: 10_000 })
      .toMatch(/^Saved standard: per device \$1\.08 \/ h, /);
    expect(await page.locator("#pricing-msg").textContent()).toMatch(/ \(changed: per device\)\.$/);
    expect(sent).toEqual([{ method: "PATCH", body: { baseMicrosPerSecond: 30000 } }]);
    const after = (await api(dev.base, dev.tokens.admin, "GET", "/billing/pricing-plans")).body.items.find(
      (p: { pricingPlanId: string }) => p.pricingPlanId === "standard",
    );
    expect(after).toMatchObject({ ...before, baseMicrosPerSecond: 30000, updatedAt: after.updatedAt });
    await expect.poll(() => row.locator("td").nth(2).textContent()).toBe("$1.08 / h");
    await expectZonedTimes(page, ['#pricing-plans tr[data-plan-id="standard"] td:nth-child(9)']);
    // The API's refusal, as it words it.
    await row.locator("button.edit-plan").click();
    await form.locator("[name=currency]").fill("EUR");
    await page.click("#pricing-save");
    await expect.poll(() => page.locator("#pricing-msg").textContent(), { timeout: 10_000 }).toMatch(/^CURRENCY_NOT_SUPPORTED: /);
    await shotFromTop(page, "ops-7-pricing");
    // A new plan.
    await page.click("#pricing-new");
    await form.locator("[name=pricingPlanId]").fill("gold");
    await form.locator("[name=name]").fill("Gold");
    await form.locator("[name=baseMicrosPerSecond]").fill("50000");
    await form.locator("[name=startingCreditMinor]").fill("25.00");
    await form.locator("[name=lowBalanceThresholdMinor]").fill("5");
    await page.click("#pricing-save");
    await page.locator('#pricing-plans tr[data-plan-id="gold"]').waitFor({ timeout: 10_000 });
    expect(await page.locator("#pricing-msg").textContent()).toMatch(/^Saved gold: .+ \(new plan\)\.$/);
    expect(sent.at(-1)!.method).toBe("PUT");
    const gold = (await api(dev.base, dev.tokens.admin, "GET", "/billing/pricing-plans")).body.items.find(
      (p: { pricingPlanId: string }) => p.pricingPlanId === "gold",
    );
    expect(gold).toMatchObject({
      name: "Gold",
      currency: "USD",
      baseMicrosPerSecond: 50000,
      startingCreditMinor: 2500,
      lowBalanceThresholdMinor: 500,
    });
    expect(seen.problems).toEqual([]);
    await close();
  });
});
