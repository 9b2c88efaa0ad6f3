/**
 * The console's Operations at 1280×800 in Chromium against `npm run dev`, part two: registering a
 * device from the form and importing many (CSV pasted, JSON from a file) through the bulk route,
 * with a result per device; and one user's page (`#user=<id>`): quota edit, their allocations with
 * force-release, top-up and adjustment with the ledger, usage and their feed's events, all checked
 * against the API and kept current without a reload. Screenshots in test-results/browser/ops-user-*.png.
 */
import { describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { api, browserRequired, chromiumPath, devAndBrowser, type DevServer } from "./harness";
import { WHEN, expectZonedTimes, shotFromTop } from "./renter-pages";
import { allocateFor, deviceNow, fleetRow, operationsAs } from "./operations-pages";

const executable = chromiumPath();
if (!executable && browserRequired) throw new Error("browser tests: no Chromium found; REQUIRE_BROWSER=1 makes this a failure");

describe.skipIf(!executable)("Operations at 1280×800: register, import, a user's page", () => {
  let dev: DevServer;
  let browser: Browser;
  devAndBrowser(executable!, (d, b) => void ((dev = d), (browser = b)));

  it("registers a device in a new pool (it shows live), imports CSV and JSON through bulk with a result per device", async () => {
    const { page, seen, close } = await operationsAs(browser, dev);
    const form = page.locator("#register-form");
    await form.locator("[name=deviceId]").fill("lab-1");
    await form.locator("[name=pool]").fill("lab");
    await form.locator("[name=node]").fill("lab-node-1");
    await form.locator("[name=cpuCores]").fill("2");
    await form.locator("[name=memoryMB]").fill("4096");
    await form.locator("[name=storageMB]").fill("32768");
    await form.locator("[name=name]").fill("Lab phone 1");
    await form.locator("[name=labels]").fill("room=3, rack=b");
    await page.click("#register-submit");
    await expect
      .poll(() => page.locator("#register-msg").textContent(), { timeout: 10_000 })
      .toBe("Registered lab-1 in lab on lab-node-1 (2 cpu · 4 GB · 32 GB).");
    expect((await deviceNow(dev, "lab-1")).body).toMatchObject({ pool: "lab", name: "Lab phone 1", labels: { rack: "b", room: "3" } });
    // The new pool is read and watched: its device shows, and later changes arrive from its feed.
    await fleetRow(page, "lab-1").waitFor({ timeout: 10_000 });
    await page.locator('.pool-feed-state[data-pool="lab"][data-state="open"]').waitFor({ timeout: 15_000 });
    // A second registration of the same id is the API's refusal, as it words it.
    await form.locator("[name=deviceId]").fill("lab-1");
    await page.click("#register-submit");
    await expect.poll(() => page.locator("#register-msg").textContent(), { timeout: 10_000 }).toMatch(/^DEVICE_EXISTS: /);

    // CSV pasted: checked first (two new, one to update), then imported with a result per device.
    const csv = [
      "deviceId,pool,node,cpuCores,memoryMB,storageMB,name,model,label:room",
      "lab-1,lab,lab-node-1,2,4096,32768,Lab phone 1 (renamed),,3",
      'lab-2,lab,lab-node-2,4,8192,65536,"Lab phone 2, spare",Pixel 8,4',
      "lab-3,lab,lab-node-2,4,8192,65536,Lab phone 3,Pixel 8,4",
    ].join("\n");
    await page.fill("#import-text", csv);
    await page.click("#import-check");
    expect(await page.locator("#import-summary").textContent()).toBe("CSV: 3 device(s), 2 new, 1 to update.");
    expect(await page.locator("#import-submit").textContent()).toBe("Import 3 device(s)");
    // Nothing is sent by the check.
    expect((await deviceNow(dev, "lab-2")).status).toBe(404);
    await page.click("#import-submit");
    await expect
      .poll(() => page.locator("#import-msg").textContent(), { timeout: 15_000 })
      .toBe("Imported 3 of 3: 2 created, 1 updated, 0 unchanged, 0 failed.");
    const outcome = (id: string) => page.locator(`#import-result-rows tr[data-device-id="${id}"]`).getAttribute("data-outcome");
    expect(await outcome("lab-1")).toBe("updated");
    expect(await page.locator('#import-result-rows tr[data-device-id="lab-1"]').textContent()).toContain("changed name, labels");
    expect(await outcome("lab-2")).toBe("created");
    expect((await deviceNow(dev, "lab-1")).body).toMatchObject({ name: "Lab phone 1 (renamed)", labels: { room: "3" } });
    expect((await deviceNow(dev, "lab-2")).body).toMatchObject({ node: "lab-node-2", name: "Lab phone 2, spare", model: "Pixel 8" });
    await fleetRow(page, "lab-3").waitFor({ timeout: 10_000 });
    await shotFromTop(page, "ops-user-1-imported");

    // What the console can tell is wrong is said per line, and nothing can be imported until it is fixed.
    await page.fill("#import-text", "deviceId,pool,cpuCores,memoryMB,storageMB,colour\nlab-4,lab,four,4096,32768,red\n");
    await page.click("#import-check");
    expect(await page.locator("#import-summary").textContent()).toBe("CSV: 0 device(s), 0 new, 0 to update; 2 problem(s) to fix first:");
    expect(await page.locator("#import-problems li").allTextContents()).toEqual([
      "line 1: unknown column(s): colour",
      "line 2 (lab-4): cpuCores: a whole number ≥ 1",
    ]);
    expect(await page.locator("#import-submit").isDisabled()).toBe(true);

    // JSON from a file: read into the box and checked at once; the API's refusal of one item is shown on that item.
    const json = JSON.stringify([
      { deviceId: "lab-4", pool: "lab", cpuCores: 2, memoryMB: 4096, storageMB: 32768, labels: { "bad key!": "x" } },
      { deviceId: "lab-5", pool: "lab", cpuCores: 2, memoryMB: 4096, storageMB: 32768 },
    ]);
    await page.setInputFiles("#import-file", { name: "lab.json", mimeType: "application/json", buffer: Buffer.from(json) });
    await expect.poll(() => page.locator("#import-summary").textContent()).toBe("JSON: 2 device(s), 2 new, 0 to update.");
    await page.click("#import-submit");
    await expect.poll(() => outcome("lab-4"), { timeout: 15_000 }).toBe("refused");
    expect(await page.locator('#import-result-rows tr[data-device-id="lab-4"]').textContent()).toMatch(/VALIDATION_FAILED: labels/);
    expect(await outcome("lab-5")).toBe("not sent");
    expect(await page.locator("#import-msg").textContent()).toMatch(/^VALIDATION_FAILED: /);
    expect((await deviceNow(dev, "lab-5")).status).toBe(404);
    // Fixed, the same file goes through.
    await page.fill("#import-text", json.replace('"bad key!"', '"shelf"'));
    await page.click("#import-check");
    await page.click("#import-submit");
    await expect
      .poll(() => page.locator("#import-msg").textContent(), { timeout: 15_000 })
      .toBe("Imported 2 of 2: 2 created, 0 updated, 0 unchanged, 0 failed.");
    expect((await deviceNow(dev, "lab-4")).body.labels).toEqual({ shelf: "x" });
    await shotFromTop(page, "ops-user-2-import-json");
    expect(seen.problems).toEqual([]);
    expect(seen.offsite).toEqual([]);
    await close();
  });

  it("a user's page: quota edit, allocations with force-release, top-up and adjustment, ledger, usage and events, live", async () => {
    const { page, seen, close } = await operationsAs(browser, dev);
    // From the users list, by the user's link.
    await page.locator('#users a[href="#user=bob"]').click();
    await expect.poll(() => page.locator("#user-page-title").textContent()).toBe("User bob");
    expect(page.url()).toContain("#user=bob");
    expect(await page.locator("#view-admin").isHidden()).toBe(true);
    await expect.poll(() => page.locator("#user-quota-tier").textContent(), { timeout: 10_000 }).toBe("pro");
    const balanceMinor = async () =>
      (await api(dev.base, dev.tokens.admin, "GET", "/billing/users/bob/balance")).body.balanceMinor as number;
    const start = await balanceMinor();
    await expect.poll(() => page.locator("#user-balance").getAttribute("data-minor"), { timeout: 10_000 }).toBe(String(start));
    await page.locator("#user-ledger tr").first().waitFor({ timeout: 10_000 });
    await expectZonedTimes(page, ["#user-quota-valid", "#user-ledger td[data-label=When]"]);

    // Quota: change one limit; only that is sent, and the API has it.
    await page.locator("#user-quota-editor summary").click();
    await page.fill("#user-quota-form [name=maxDevices]", "3");
    await page.click("#user-quota-save");
    await expect
      .poll(() => page.locator("#user-quota-msg").textContent(), { timeout: 10_000 })
      .toMatch(/^Saved: limits \(tier pro, active, valid until .+\)\.$/);
    const quota = (await api(dev.base, dev.tokens.admin, "GET", "/quotas/user/bob")).body;
    expect(quota).toMatchObject({ tier: "pro", limits: { maxDevices: 3, maxCpuCores: 80 } });
    expect(await page.locator('#user-quota dd[data-limit="maxDevices"]').textContent()).toBe("0 / 3");

    // Their own feed is open on the page, live (an admin's ticket naming them).
    await page.locator('#user-feed-state[data-state="open"]').waitFor({ timeout: 10_000 });
    // Their allocation shows without a reload (from their feed); so do their events and the quota's usage.
    const held = await allocateFor(dev, "bob", "default", 20);
    const row = page.locator(`#user-allocations tr[data-allocation-id="${held.allocationId}"]`);
    await row.waitFor({ timeout: 10_000 });
    await page.locator('#user-events li[data-type="device.allocated"]').first().waitFor({ timeout: 10_000 });
    await expect.poll(() => page.locator('#user-quota dd[data-limit="maxDevices"]').textContent(), { timeout: 10_000 }).toBe("1 / 3");
    await shotFromTop(page, "ops-user-3-page");
    // Force-release: confirmed first (Cancel changes nothing), then the API has it ended.
    await row.locator("button.force-release").click();
    const step = row.locator(".confirm-step");
    expect(await step.textContent()).toContain(`${held.deviceId}: bob's allocation ${held.allocationId} ends now and is billed.`);
    await step.locator("button.confirm-no").click();
    expect((await api(dev.base, dev.tokens.admin, "GET", `/scheduler/allocations/${held.allocationId}`)).body.status).toBe("active");
    await row.locator("button.force-release").click();
    await row.locator(".confirm-step button.confirm-yes").click();
    await expect
      .poll(() => page.locator("#user-allocations-msg").textContent(), { timeout: 10_000 })
      .toMatch(new RegExp(`^Released ${held.allocationId} on ${held.deviceId} after `));
    expect((await api(dev.base, dev.tokens.admin, "GET", `/scheduler/allocations/${held.allocationId}`)).body).toMatchObject({
      status: "released",
      reason: "force_released",
    });
    await row.waitFor({ state: "detached", timeout: 10_000 });
    // Its charge comes through the usage queue: its billing.charged on their feed has the page read balance, ledger and usage.
    await page.locator(`#user-usage tr[data-allocation-id="${held.allocationId}"]`).waitFor({ timeout: 40_000 });
    await page.locator('#user-events li[data-type="billing.charged"]').first().waitFor({ timeout: 10_000 });
    await page.locator('#user-ledger tr[data-kind="charge"]').first().waitFor({ timeout: 10_000 });
    const charged = await balanceMinor();
    expect(charged).toBeLessThan(start);
    await expect.poll(() => page.locator("#user-balance").getAttribute("data-minor"), { timeout: 10_000 }).toBe(String(charged));

    // Top-up: said in words first; then the API's balance, the ledger and the status line agree.
    await page.fill("#topup-form [name=amount]", "5.00");
    await page.click("#topup-submit");
    const confirm = page.locator("#user-money-card .confirm-step");
    expect(await confirm.textContent()).toMatch(/^Credit \$5\.00 to bob \(payment console-payment-\d+; a repeated id credits nothing\)\./);
    expect(await balanceMinor()).toBe(charged);
    await confirm.locator("button.confirm-yes").click();
    await expect
      .poll(() => page.locator("#money-msg").textContent(), { timeout: 10_000 })
      .toMatch(/^Credited \$5\.00 \(console-payment-\d+\): balance /);
    expect(await balanceMinor()).toBe(charged + 500);
    await page.locator('#user-ledger tr[data-kind="top_up"]').first().waitFor({ timeout: 10_000 });
    expect(await page.locator("#user-balance").getAttribute("data-minor")).toBe(String(charged + 500));
    // Adjustment: a debit with a memo; Escape at the confirmation sends nothing.
    await page.fill("#adjust-form [name=amount]", "-1.25");
    await page.fill("#adjust-form [name=memo]", "double charge fixed");
    await page.click("#adjust-submit");
    expect(await confirm.textContent()).toContain('Debit $1.25 from bob\'s balance: "double charge fixed"');
    await page.keyboard.press("Escape");
    await confirm.waitFor({ state: "detached" });
    expect(await balanceMinor()).toBe(charged + 500);
    await page.click("#adjust-submit");
    await confirm.locator("button.confirm-yes").click();
    await expect
      .poll(() => page.locator("#money-msg").textContent(), { timeout: 10_000 })
      .toMatch(/^Adjusted by -\$1\.25 \(console-adjustment-\d+\): balance /);
    expect(await balanceMinor()).toBe(charged + 375);
    const entry = page.locator('#user-ledger tr[data-kind="adjustment"]').first();
    await entry.waitFor({ timeout: 10_000 });
    expect(await entry.textContent()).toContain("double charge fixed");
    expect(await entry.textContent()).toContain("ops-admin");
    await page.locator('#user-events li[data-type="billing.payment_success"]').first().waitFor({ timeout: 10_000 });
    await expectZonedTimes(page, ["#user-usage td[data-label=Released]", "#user-events li time"]);
    expect(await page.locator("#user-usage-totals").textContent()).toMatch(WHEN);
    await shotFromTop(page, "ops-user-4-money");

    // Another user from the picker; an unknown id opens no account.
    await page.selectOption("#user-pick", "alice");
    await expect.poll(() => page.locator("#user-page-title").textContent()).toBe("User alice");
    await page.evaluate(() => (location.hash = "user=nobody-here"));
    await expect.poll(() => page.locator("#user-page-msg").textContent(), { timeout: 10_000 }).toMatch(/^No account for nobody-here/);
    const users = (await api(dev.base, dev.tokens.admin, "GET", "/admin/users?limit=200")).body.items.map(
      (u: { userId: string }) => u.userId,
    );
    expect(users).not.toContain("nobody-here");
    // Back to the overview.
    await page.click("#user-page-back");
    await expect.poll(() => page.locator("#view-admin").isVisible()).toBe(true);
    expect(seen.problems).toEqual([]);
    expect(seen.offsite).toEqual([]);
    await close();
  });
});
