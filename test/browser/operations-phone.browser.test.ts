/**
 * Operations at a phone's size (390×844, touch) in Chromium against `npm run dev`, with the
 * 34-device fleet: nothing wider than the screen, each device a short card, pools that collapse
 * under 1000 px, and every operator action in reach and working by touch (a drain behind its
 * confirmation, register and import, pool settings, pricing, a user's page with a top-up), each
 * checked against the API. Screenshots in test-results/browser/ops-phone-*.png.
 */
import { describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { api, browserRequired, chromiumPath, devAndBrowser, type DevServer } from "./harness";
import { PHONE, WHEN, expectInView, expectNoSidewaysScroll, shotFromTop } from "./renter-pages";
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

describe.skipIf(!executable)("Operations at 390×844", () => {
  let dev: DevServer;
  let browser: Browser;
  devAndBrowser(executable!, async (d, b) => {
    dev = d;
    browser = b;
    await registerUsFleet(dev);
  });

  it("the fleet as short cards, collapsed under 1000 px; a drain by touch behind its confirmation, live", async () => {
    const { page, seen, close } = await operationsAs(browser, dev, PHONE);
    await expect.poll(() => page.locator("#fleet tr[data-device-id]").count(), { timeout: 10_000 }).toBe(34);
    await expectNoSidewaysScroll(page, PHONE.width);
    // Each device on three short lines (id and Manage; status; node, spec, holder, time left), no table head.
    expect(await page.locator("#fleet-card thead").first().isHidden()).toBe(true);
    const card = fleetRow(page, "us-std-12");
    expect((await card.boundingBox())!.height).toBeLessThan(90);
    await expectInView(page, '#fleet tr[data-device-id="us-std-12"] button.manage', PHONE);
    await shotFromTop(page, "ops-phone-1-fleet");
    await page.locator("#fleet-collapse-all").tap();
    expect(await fleetHeight(page)).toBeLessThan(1000);
    await shotFromTop(page, "ops-phone-2-collapsed");
    await page.locator('#fleet section[data-pool="default"] button.pool-toggle').tap();

    // A drain by touch: the dialog fits the screen; its confirmation is in reach; the API and the row agree.
    const held = await allocateFor(dev, "bob", "default", 20);
    const row = fleetRow(page, held.deviceId);
    await expect.poll(() => row.getAttribute("data-status"), { timeout: 10_000 }).toBe("allocated");
    const dialog = await openDevice(page, held.deviceId, true);
    const box = (await dialog.boundingBox())!;
    expect(box.x).toBeGreaterThanOrEqual(0);
    expect(box.x + box.width).toBeLessThanOrEqual(PHONE.width);
    const step = await reviewAction(dialog, "drain-offline", { reason: "firmware update", tap: true });
    await expectInView(page, "#device-dialog .confirm-yes", PHONE);
    expect((await deviceNow(dev, held.deviceId)).body.drain).toBeNull();
    await shotFromTop(page, "ops-phone-3-confirm");
    await step.locator("button.confirm-yes").tap();
    expect(await actionOutcome(dialog)).toMatch(/is draining: offline once its allocation ends/);
    expect((await deviceNow(dev, held.deviceId)).body).toMatchObject({ statusReason: "firmware update", drain: { status: "offline" } });
    await dialog.locator(".dialog-close").tap();
    await expect.poll(() => row.locator(".note").textContent()).toMatch(/^draining → offline, ends by .+: firmware update$/);
    expect(await row.locator(".note").textContent()).toMatch(WHEN);
    expect((await api(dev.base, dev.token("bob"), "POST", "/scheduler/devices/release", { deviceId: held.deviceId })).status).toBe(200);
    await expect.poll(() => row.getAttribute("data-status"), { timeout: 10_000 }).toBe("offline");
    await expectNoSidewaysScroll(page, PHONE.width);
    await shotFromTop(page, "ops-phone-4-offline");
    expect(seen.problems).toEqual([]);
    expect(seen.offsite).toEqual([]);
    await close();
  });

  it("register, import, pool settings and pricing by touch, each in reach, nothing wider than the screen", async () => {
    const { page, seen, close } = await operationsAs(browser, dev, PHONE);
    await page.locator("#fleet-collapse-all").tap();
    // Register.
    const form = page.locator("#register-form");
    await form.locator("[name=deviceId]").fill("p-1");
    await form.locator("[name=pool]").fill("us-std");
    await expectInView(page, "#register-submit", PHONE);
    await page.locator("#register-submit").tap();
    await expect
      .poll(() => page.locator("#register-msg").textContent(), { timeout: 10_000 })
      .toMatch(/^Registered p-1 in us-std on node-1 /);
    expect((await deviceNow(dev, "p-1")).status).toBe(200);
    // Import, pasted.
    await page.fill("#import-text", "deviceId,pool,cpuCores,memoryMB,storageMB\np-2,us-std,2,4096,32768\np-3,us-std,2,4096,32768\n");
    await page.locator("#import-check").tap();
    await expectInView(page, "#import-submit", PHONE);
    await page.locator("#import-submit").tap();
    await expect
      .poll(() => page.locator("#import-msg").textContent(), { timeout: 15_000 })
      .toBe("Imported 2 of 2: 2 created, 0 updated, 0 unchanged, 0 failed.");
    expect((await deviceNow(dev, "p-3")).body.pool).toBe("us-std");
    await expectNoSidewaysScroll(page, PHONE.width);
    await page.locator("#import-results").scrollIntoViewIfNeeded();
    await shotFromTop(page, "ops-phone-5-import");
    // Pool settings.
    const line = page.locator('#pool-settings [data-pool="default"]');
    await line.locator("select[name=strategy]").selectOption("spread");
    await expectInView(page, '#pool-settings [data-pool="default"] button.save-pool', PHONE);
    await line.locator("button.save-pool").tap();
    await expect.poll(() => line.locator(".row-msg").textContent(), { timeout: 10_000 }).toBe("Saved: spread, idle release off.");
    expect((await api(dev.base, dev.tokens.admin, "GET", "/admin/pools/default")).body.strategy).toBe("spread");
    // Pricing: rows as cards, Edit in reach; the editor fits.
    const plan = page.locator('#pricing-plans tr[data-plan-id="standard"]');
    await expectInView(page, '#pricing-plans tr[data-plan-id="standard"] button.edit-plan', PHONE);
    await plan.locator("button.edit-plan").tap();
    await page.fill("#pricing-form [name=lowBalanceThresholdMinor]", "3.50");
    await expectInView(page, "#pricing-save", PHONE);
    await page.locator("#pricing-save").tap();
    await expect.poll(() => page.locator("#pricing-msg").textContent(), { timeout: 10_000 }).toMatch(/^Saved standard: /);
    const standard = (await api(dev.base, dev.tokens.admin, "GET", "/billing/pricing-plans")).body.items.find(
      (p: { pricingPlanId: string }) => p.pricingPlanId === "standard",
    );
    expect(standard.lowBalanceThresholdMinor).toBe(350);
    await expectNoSidewaysScroll(page, PHONE.width);
    await shotFromTop(page, "ops-phone-6-settings");
    expect(seen.problems).toEqual([]);
    await close();
  });

  it("a user's page by touch: from a holder's link, force-release and a top-up in reach, confirmed, the API agrees", async () => {
    const { page, seen, close } = await operationsAs(browser, dev, PHONE);
    const held = await allocateFor(dev, "bob", "eu-west-large", 20);
    // On a phone the holder is on the card's second line (td.info), with node, spec and time left.
    const holder = fleetRow(page, held.deviceId).locator("td.info a");
    await expect.poll(() => holder.textContent(), { timeout: 10_000 }).toBe("bob");
    await holder.tap();
    await expect.poll(() => page.locator("#user-page-title").textContent()).toBe("User bob");
    const row = page.locator(`#user-allocations tr[data-allocation-id="${held.allocationId}"]`);
    await row.waitFor({ timeout: 10_000 });
    await expectNoSidewaysScroll(page, PHONE.width);
    await expectInView(page, "#user-allocations button.force-release", PHONE);
    await shotFromTop(page, "ops-phone-7-user");
    await row.locator("button.force-release").tap();
    await expectInView(page, "#user-allocations .confirm-yes", PHONE);
    await row.locator(".confirm-yes").tap();
    await row.waitFor({ state: "detached", timeout: 10_000 });
    expect((await api(dev.base, dev.tokens.admin, "GET", `/scheduler/allocations/${held.allocationId}`)).body.status).toBe("released");
    // A top-up (once the release's charge is booked, so the balance moves by the top-up alone).
    await page.locator(`#user-usage tr[data-allocation-id="${held.allocationId}"]`).waitFor({ timeout: 40_000 });
    const before = (await api(dev.base, dev.tokens.admin, "GET", "/billing/users/bob/balance")).body.balanceMinor;
    await page.fill("#topup-form [name=amount]", "2.50");
    await expectInView(page, "#topup-submit", PHONE);
    await page.locator("#topup-submit").tap();
    await expectInView(page, "#user-money-card .confirm-yes", PHONE);
    await page.locator("#user-money-card .confirm-yes").tap();
    await expect.poll(() => page.locator("#money-msg").textContent(), { timeout: 10_000 }).toMatch(/^Credited \$2\.50 /);
    await expect
      .poll(async () => (await api(dev.base, dev.tokens.admin, "GET", "/billing/users/bob/balance")).body.balanceMinor, { timeout: 10_000 })
      .toBe(before + 250);
    await page.locator('#user-ledger tr[data-kind="top_up"]').first().waitFor({ timeout: 10_000 });
    await expectNoSidewaysScroll(page, PHONE.width);
    await shotFromTop(page, "ops-phone-8-topped-up");
    expect(seen.problems).toEqual([]);
    expect(seen.offsite).toEqual([]);
    await close();
  });
});
