/**
 * The console at a phone's size (390×844, touch, the mobile viewport) in Chromium against
 * `npm run dev`: nothing wider than the screen, the tables' rows as cards, and every action a
 * renter takes (allocate, extend, release, book, cancel) reachable and working there. The
 * pages run in Asia/Kolkata (UTC+5:30). Screenshots in test-results/browser/phone-*.png.
 */
import { describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { browserRequired, chromiumPath, devAndBrowser, type DevServer } from "./harness";
import { PHONE, WHEN, consoleAs, shotFromTop, expectInView, expectNoSidewaysScroll, expectZonedTimes, localStart } from "./renter-pages";

const executable = chromiumPath();
if (!executable && browserRequired) throw new Error("browser tests: no Chromium found; REQUIRE_BROWSER=1 makes this a failure");

describe.skipIf(!executable)("the console at 390×844", () => {
  let dev: DevServer;
  let browser: Browser;
  devAndBrowser(executable!, (d, b) => void ((dev = d), (browser = b)));

  it("a renter allocates, extends, books, cancels and releases on a phone, every button in reach, nothing cut off", async () => {
    const { page, seen, close } = await consoleAs(browser, dev.base, dev.token("ivan"), PHONE);
    await expectNoSidewaysScroll(page, PHONE.width);
    await shotFromTop(page, "phone-1-signed-in");

    // Allocate from the form.
    await expectInView(page, "#allocate-submit", PHONE);
    await page.locator("#allocate-submit").tap();
    const row = page.locator("#allocations tr[data-allocation-id]").first();
    await row.waitFor({ timeout: 10_000 });
    await expect.poll(() => page.locator("#allocate-msg").textContent()).toMatch(/^Allocated /);
    // The table's rows are cards: no header row, each cell labelled.
    expect(await page.locator("#allocations-card thead").isHidden()).toBe(true);
    expect(await row.evaluate((tr) => getComputedStyle(tr).display)).toBe("block");
    expect(await row.locator("td[data-label=Allocated]").evaluate((td) => getComputedStyle(td, "::before").content)).toBe('"Allocated"');
    await expectZonedTimes(page, ["#allocations td[data-label=Allocated]"]);
    await expectInView(page, "#allocations button.extend", PHONE);
    await expectInView(page, "#allocations button.release", PHONE);
    await expectInView(page, "#allocations button.connect", PHONE);
    await expectNoSidewaysScroll(page, PHONE.width);

    // Extend: the confirmation shows in the row, on screen.
    await row.locator("input[name=additionalMinutes]").fill("10");
    await row.locator("button.extend").tap();
    await expect.poll(() => row.locator(".row-msg").textContent(), { timeout: 10_000 }).toMatch(/^Extended by 10 min: until /);
    expect(await row.locator(".row-msg").textContent()).toMatch(WHEN);
    await expectInView(page, "#allocations .row-msg", PHONE);
    await expectNoSidewaysScroll(page, PHONE.width);
    await shotFromTop(page, "phone-2-extended");

    // Book a window tomorrow, after its check; the reservation is a card with its Cancel in reach.
    await page.fill("#book-form [name=startAt]", await localStart(page, 1, 15));
    await expectInView(page, "#book-check-button", PHONE);
    await page.locator("#book-check-button").tap();
    await expect.poll(() => page.locator("#book-check [data-available]").getAttribute("data-available"), { timeout: 10_000 }).toBe("true");
    await page.locator("#book-submit").tap();
    await expect.poll(() => page.locator("#book-msg").textContent(), { timeout: 10_000 }).toMatch(/^Booked /);
    const rsv = page.locator("#reservations tr[data-reservation-id]").first();
    await rsv.waitFor({ timeout: 10_000 });
    expect(await rsv.locator("td[data-label=Pool]").textContent()).toBe("default");
    await expectZonedTimes(page, ["#reservations td[data-label=Window]"]);
    await expectInView(page, "#reservations button.cancel", PHONE);
    await expectNoSidewaysScroll(page, PHONE.width);
    await shotFromTop(page, "phone-3-booked");
    await rsv.locator("button.cancel").tap();
    await expect.poll(() => rsv.getAttribute("data-status"), { timeout: 10_000 }).toBe("cancelled");

    // Release: the usage comes with billing.charged, as a card; the chart fits the screen.
    await expectInView(page, "#allocations button.release", PHONE);
    const allocationId = (await row.getAttribute("data-allocation-id"))!;
    await row.locator("button.release").tap();
    await page.locator(`#usage tr[data-allocation-id="${allocationId}"]`).waitFor({ timeout: 30_000 });
    await page.locator('#events li[data-type="billing.charged"]').first().waitFor({ timeout: 10_000 });
    await expectZonedTimes(page, ["#usage td[data-label=Released]", "#events li time"]);
    const chart = await page.locator("#usage-chart").boundingBox();
    expect(chart!.x).toBeGreaterThanOrEqual(0);
    expect(chart!.x + chart!.width).toBeLessThanOrEqual(PHONE.width);
    await expectNoSidewaysScroll(page, PHONE.width);
    await shotFromTop(page, "phone-4-released");

    expect(seen.problems).toEqual([]);
    expect(seen.offsite).toEqual([]);
    await close();
  });

  it("the operators' view is no wider than a phone either (its tables' rows are cards too)", async () => {
    const { page, seen, close } = await consoleAs(browser, dev.base, dev.tokens.admin, PHONE);
    await page.locator("#tab-admin").tap();
    await page.locator("#fleet tr[data-device-id]").first().waitFor({ timeout: 15_000 });
    await expectNoSidewaysScroll(page, PHONE.width);
    await shotFromTop(page, "phone-5-operations");
    expect(seen.problems).toEqual([]);
    await close();
  });
});
