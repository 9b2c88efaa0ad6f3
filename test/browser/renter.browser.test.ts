/**
 * The renter's console at a desktop size (1280×800) in Chromium against `npm run dev`: the
 * catalogue in the forms, a form's own success and error states, booking with the window check,
 * the month's chart, `billing.charged` instead of polling, the feed's history on load, and a
 * sign-in link opened in a tab already on the console. Every time shown carries its zone (the
 * pages run in Asia/Kolkata, UTC+5:30). Screenshots in test-results/browser/renter-*.png.
 */
import { describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { api, browserRequired, chromiumPath, devAndBrowser, type DevServer } from "./harness";
import { DESKTOP, WHEN, blankPage, consoleAs, shotFromTop, expectInView, expectZonedTimes, localStart } from "./renter-pages";

const executable = chromiumPath();
if (!executable && browserRequired) throw new Error("browser tests: no Chromium found; REQUIRE_BROWSER=1 makes this a failure");

const specKey = (c: { cpuCores: number; memoryMB: number; storageMB: number }) => `${c.cpuCores}/${c.memoryMB}/${c.storageMB}`;

describe.skipIf(!executable)("the renter's console at 1280×800", () => {
  let dev: DevServer;
  let browser: Browser;
  devAndBrowser(executable!, (d, b) => void ((dev = d), (browser = b)));

  it("offers the catalogue's classes (price, free, refusal); allocates one; extend shows its error, then its confirmation", async () => {
    const token = dev.token("carol");
    const { page, seen, close } = await consoleAs(browser, dev.base, token);
    const cat = (await api(dev.base, token, "GET", "/scheduler/pools")).body;
    const byPool = (name: string) => cat.items.find((p: { pool: string }) => p.pool === name);
    const def = byPool("default");
    // A free-tier user may not take the 8-core class: the catalogue says why.
    expect(def.classes.some((c: { allowed: boolean }) => !c.allowed)).toBe(true);

    const offers = page.locator("#allocate-offers .offer");
    await expect.poll(() => offers.count()).toBe(def.classes.length);
    for (const c of def.classes) {
      const o = page.locator(`#allocate-offers .offer[data-offer="${specKey(c)}"]`);
      expect(await o.locator(".offer-price").textContent()).toContain(`${(c.pricePerHourMinor / 100).toFixed(2)} / h`);
      expect(await o.locator(".offer-free").textContent()).toContain(`${c.free} of ${c.devices} free`);
      expect(await o.getAttribute("data-allowed")).toBe(String(c.allowed));
      if (c.allowed) expect(await o.locator(".offer-refusal").count()).toBe(0);
      else expect(await o.locator(".offer-refusal").textContent()).toContain(`${c.refusal.code}: ${c.refusal.message}`);
    }
    // The booking form chooses from the same catalogue; another pool shows its own classes.
    await expect.poll(() => page.locator("#book-offers .offer").count()).toBe(def.classes.length);
    await page.fill("#allocate-form [name=pool]", "eu-west-large");
    const euw = byPool("eu-west-large");
    await expect.poll(() => offers.count()).toBe(euw.classes.length);
    expect(await page.locator("#allocate-pools option").evaluateAll((os) => os.map((o) => (o as HTMLOptionElement).value))).toEqual(
      cat.items.map((p: { pool: string }) => p.pool),
    );
    await shotFromTop(page, "renter-desktop-1-catalogue");

    // Allocate the 4-core class of the default pool: that class (or a larger one) is what comes.
    await page.fill("#allocate-form [name=pool]", "default");
    const four = def.classes.find((c: { cpuCores: number }) => c.cpuCores === 4);
    await page.check(`#allocate-offers input[value="${specKey(four)}"]`);
    expect(await page.locator("#allocate-estimate").textContent()).toMatch(/^About .+ for 30 min\.$/);
    await page.click("#allocate-submit");
    const allocMsg = page.locator("#allocate-msg");
    await expect.poll(() => allocMsg.getAttribute("class")).toContain("ok");
    expect(await allocMsg.textContent()).toMatch(/^Allocated \S+ \(default\/.+, 4 cpu · 8 GB · 64 GB\) until /);
    expect(await allocMsg.textContent()).toMatch(WHEN);
    const row = page.locator("#allocations tr[data-allocation-id]").first();
    await row.waitFor({ timeout: 10_000 });

    // Extend past the free tier's 30 minutes per extend: the row says why, as the API words it.
    const rowMsg = row.locator(".row-msg");
    await row.locator("input[name=additionalMinutes]").fill("90");
    await row.locator("button.extend").click();
    await expect.poll(() => rowMsg.getAttribute("class"), { timeout: 10_000 }).toContain("error");
    expect(await rowMsg.textContent()).toMatch(/^[A-Z_]+: \S/);
    await shotFromTop(page, "renter-desktop-2-extend-error");
    // Then one that fits: a confirmation with the new end, and the old error is gone.
    await row.locator("input[name=additionalMinutes]").fill("15");
    await row.locator("button.extend").click();
    await expect.poll(() => row.locator(".row-msg").getAttribute("class"), { timeout: 10_000 }).toContain("ok");
    expect(await row.locator(".row-msg").textContent()).toMatch(/^Extended by 15 min: until .+\.$/);
    expect(await row.locator(".row-msg").textContent()).toMatch(WHEN);
    expect(await row.locator(".error").count()).toBe(0);
    // The allocate form kept its own status line.
    expect(await allocMsg.textContent()).toMatch(/^Allocated /);
    await page.locator('#events li[data-type="device.extended"]').first().waitFor({ timeout: 10_000 });
    // The feed's device.extended redraws the row; its status line stays.
    expect(await row.locator(".row-msg").textContent()).toMatch(/^Extended by 15 min/);
    await expectInView(page, "#allocations button.release", DESKTOP);
    await expectZonedTimes(page, ["#allocations td[data-label=Allocated]", "#events li time", "#quota dd:not(#quota-tier)"]);
    expect(await row.locator(".countdown").getAttribute("title")).toMatch(WHEN);
    await shotFromTop(page, "renter-desktop-3-extended");

    // Connect: the device's endpoints (the demo fleet registers made-up ones) and a fresh grant's end.
    await row.locator("button.connect").click();
    await expect
      .poll(() => row.locator(".row-msg").textContent(), { timeout: 10_000 })
      .toMatch(/^adb \S+\.demo\.invalid:5555 · streamUrl wss:/);
    expect(await row.locator(".row-msg").textContent()).toMatch(/access grant until .+\.$/);
    expect(await row.locator(".row-msg").textContent()).toMatch(WHEN);
    await expectInView(page, "#allocations button.connect", DESKTOP);
    await shotFromTop(page, "renter-desktop-3b-connect");

    // An operator drains the device: the renter's event list says so (test/drain.test.ts: the extend it refuses).
    const deviceId = await row.getAttribute("data-device-id");
    const drained = await api(dev.base, dev.tokens.admin, "POST", `/admin/devices/${deviceId}/maintenance`, {
      drain: true,
      reason: "battery swap",
    });
    expect(drained.status, JSON.stringify(drained.body)).toBe(200);
    const note = page.locator('#events li[data-type="device.draining"]').first();
    await note.waitFor({ timeout: 10_000 });
    expect(await note.textContent()).toMatch(/goes to maintenance when allocation \S+ ends \(until .+ at most\): battery swap/);

    expect(seen.problems).toEqual([]);
    expect(seen.offsite).toEqual([]);
    await close();
  });

  it("after a release, billing.charged moves balance, usage and chart without polling; the history shows on load", async () => {
    const token = dev.token("carol");
    const { page, seen, close } = await consoleAs(browser, dev.base, token);
    const row = page.locator("#allocations tr[data-allocation-id]").first();
    await row.waitFor({ timeout: 10_000 });
    const allocationId = (await row.getAttribute("data-allocation-id"))!;
    const usageReads: string[] = [];
    page.on("request", (r) => {
      if (new URL(r.url()).pathname.startsWith("/metering/")) usageReads.push(r.url());
    });

    await row.locator("button.release").click();
    await page.locator(`#allocations tr[data-allocation-id="${allocationId}"]`).waitFor({ state: "detached", timeout: 10_000 });
    const charged = page.locator('#events li[data-type="billing.charged"]').first();
    await charged.waitFor({ timeout: 30_000 });
    await page.locator(`#usage tr[data-allocation-id="${allocationId}"]`).waitFor({ timeout: 10_000 });
    await expect.poll(() => page.locator("#usage-waiting").isHidden()).toBe(true);
    // The event names the charge and the new balance, which the balance card shows.
    const balance = (await api(dev.base, token, "GET", "/billing/users/carol/balance")).body;
    const shown = (balance.balanceMinor / 100).toFixed(2);
    expect(await charged.locator(".sum").textContent()).toContain(`balance $${shown}`);
    await expect.poll(() => page.locator("#balance-amount").textContent()).toContain(shown);
    // One read of the usage when the event came (the list and the chart), none before or after it.
    expect(usageReads.length).toBeLessThanOrEqual(2);
    const reads = usageReads.length;
    await page.waitForTimeout(3_000);
    expect(usageReads.length).toBe(reads);

    // The chart: this month's spend so far, and today's bar (a UTC day) holds the device time.
    const usage = (await api(dev.base, token, "GET", "/metering/users/carol")).body;
    const chart = page.locator("#usage-chart");
    await expect.poll(() => chart.getAttribute("data-spend-minor")).toBe(String(usage.totals.chargesMinor));
    expect(usage.totals.chargesMinor).toBeGreaterThan(0);
    const today = new Date().getUTCDate();
    expect(Number(await chart.locator(`rect.bar[data-day="${today}"]`).getAttribute("data-hours"))).toBeGreaterThan(0);
    expect(await chart.getAttribute("aria-label")).toContain("spent in");
    await expectZonedTimes(page, ["#usage td[data-label=Released]"]);
    await shotFromTop(page, "renter-desktop-4-charged");
    expect(seen.problems).toEqual([]);
    await close();

    // A new page shows the past events at once, newest first, each once; live ones follow them.
    const again = await consoleAs(browser, dev.base, token);
    const past = again.page.locator("#events li.past");
    const types = await past.evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.type));
    expect(types).toEqual(expect.arrayContaining(["device.allocated", "device.extended", "device.released", "billing.charged"]));
    const seqs = async () =>
      await again.page.locator("#events li[data-seq]").evaluateAll((lis) => lis.map((li) => Number((li as HTMLElement).dataset.seq)));
    const before = await seqs();
    expect(before).toEqual([...before].sort((a, b) => b - a));
    const live = await api(dev.base, token, "POST", "/scheduler/devices/allocate", { pool: "default", durationMinutes: 5 });
    expect(live.status, JSON.stringify(live.body)).toBe(201);
    await again.page.locator('#events li[data-type="device.allocated"]:not(.past)').waitFor({ timeout: 10_000 });
    const after = await seqs();
    expect(new Set(after).size).toBe(after.length);
    expect(after[0]).toBeGreaterThan(before[0]!);
    expect(after.slice(after.length - before.length)).toEqual(before);
    await expectZonedTimes(again.page, ["#events li time"]);
    await shotFromTop(again.page, "renter-desktop-5-history");
    expect((await api(dev.base, token, "POST", "/scheduler/devices/release", { deviceId: live.body.deviceId })).status).toBe(200);
    expect(again.seen.problems).toEqual([]);
    expect(again.seen.offsite).toEqual([]);
    await again.close();
  });

  it("books a window after checking it, lists the reservation with its pool, and shows an overlap with the user's own", async () => {
    const token = dev.token("dave");
    const { page, seen, close } = await consoleAs(browser, dev.base, token);
    await expect.poll(() => page.locator("#book-zone").textContent()).toBe("(UTC+5:30)");
    const start = await localStart(page, 1, 10);
    await page.fill("#book-form [name=startAt]", start);
    await page.click("#book-check-button");
    const verdict = page.locator("#book-check [data-available]");
    await verdict.waitFor({ timeout: 10_000 });
    expect(await verdict.getAttribute("data-available")).toBe("true");
    expect(await verdict.textContent()).toMatch(/^Bookable: \d+ of \d+ matching device\(s\) free /);
    expect(await verdict.textContent()).toMatch(WHEN);

    await page.click("#book-submit");
    const msg = page.locator("#book-msg");
    await expect.poll(() => msg.getAttribute("class"), { timeout: 10_000 }).toContain("ok");
    expect(await msg.textContent()).toMatch(/^Booked \S+ in default for .+ \(rsv/);
    expect(await msg.textContent()).toMatch(WHEN);
    const rsvs = (await api(dev.base, token, "GET", "/scheduler/reservations")).body.items;
    expect(rsvs).toHaveLength(1);
    const rsv = page.locator(`#reservations tr[data-reservation-id="${rsvs[0].reservationId}"]`);
    await rsv.waitFor({ timeout: 10_000 });
    expect(await rsv.locator("td[data-label=Pool]").textContent()).toBe("default");
    expect(await rsv.locator("td[data-label=Window]").textContent()).toMatch(WHEN);

    // The same window again: the check names the user's own overlapping reservation.
    await page.click("#book-check-button");
    await page.locator(`#book-check .overlaps li[data-reservation-id="${rsvs[0].reservationId}"]`).waitFor({ timeout: 10_000 });
    await shotFromTop(page, "renter-desktop-6-booked");

    // Cancel it from the list.
    await rsv.locator("button.cancel").click();
    await expect.poll(() => rsv.getAttribute("data-status"), { timeout: 10_000 }).toBe("cancelled");
    expect(seen.problems).toEqual([]);
    expect(seen.offsite).toEqual([]);
    await close();
  });

  it("a booking the quota refuses shows its error in the booking form; the next one replaces it with its confirmation", async () => {
    const token = dev.token("erin");
    const { page, seen, close } = await consoleAs(browser, dev.base, token);
    await page.fill("#book-form [name=startAt]", await localStart(page, 2, 9));
    // Every class of eu-west-large is over a free tier's per-device limit: shown before, refused when tried.
    await page.fill("#book-form [name=pool]", "eu-west-large");
    await page.locator('#book-offers .offer[data-allowed="false"] .offer-refusal').first().waitFor();
    await page.click("#book-submit");
    const msg = page.locator("#book-msg");
    await expect.poll(() => msg.getAttribute("class"), { timeout: 10_000 }).toContain("error");
    expect(await msg.textContent()).toMatch(/^QUOTA_PER_DEVICE_EXCEEDED: /);
    // The allocate form's status line is its own: untouched.
    expect(await page.locator("#allocate-msg").textContent()).toBe("");
    await shotFromTop(page, "renter-desktop-7-booking-refused");

    await page.fill("#book-form [name=pool]", "default");
    await page.click("#book-submit");
    await expect.poll(() => msg.getAttribute("class"), { timeout: 10_000 }).toContain("ok");
    expect(await msg.textContent()).toMatch(/^Booked /);
    expect(seen.problems).toEqual([]);
    await close();
  });

  it("a window with every matching device taken is not booked, and reservations of every pool are listed with their pool", async () => {
    const token = dev.tokens.bob; // pro tier: the 16-core class of eu-west-large is allowed
    const { page, seen, close } = await consoleAs(browser, dev.base, token);
    await page.fill("#book-form [name=pool]", "eu-west-large");
    const big = page.locator('#book-offers .offer[data-offer^="16/"]');
    await big.waitFor();
    expect(await big.getAttribute("data-allowed")).toBe("true");
    await big.locator("input").check();
    await page.fill("#book-form [name=startAt]", await localStart(page, 3, 12));
    const msg = page.locator("#book-msg");
    for (let i = 0; i < 2; i++) {
      await page.click("#book-submit");
      await expect.poll(() => msg.textContent(), { timeout: 10_000 }).toMatch(/^Booked /);
      if (i === 0) await page.locator("#book-check").waitFor();
    }
    await page.click("#book-submit");
    await expect.poll(() => page.locator("#book-check [data-available]").getAttribute("data-available"), { timeout: 10_000 }).toBe("false");
    await expect.poll(() => msg.textContent()).toMatch(/^Not booked: no matching device is free/);
    const mine = (await api(dev.base, token, "GET", "/scheduler/reservations?pool=eu-west-large")).body.items;
    expect(mine).toHaveLength(2);
    // The list asks for every pool at once (no ?pool=) and shows each reservation's pool.
    for (const r of mine) {
      const tr = page.locator(`#reservations tr[data-reservation-id="${r.reservationId}"]`);
      await tr.waitFor({ timeout: 10_000 });
      expect(await tr.locator("td[data-label=Pool]").textContent()).toBe("eu-west-large");
    }
    await shotFromTop(page, "renter-desktop-8-not-bookable");
    expect(seen.problems).toEqual([]);
    await close();
  });

  it("a sign-in link opened in a tab already on the console signs in, signed out or as someone else", async () => {
    // Signed out: the sign-in form, then a link's fragment.
    const p = await blankPage(browser, DESKTOP);
    await p.page.goto(`${dev.base}/console/`);
    await p.page.locator("#signin-form").waitFor();
    await p.page.evaluate((t) => (location.hash = `#token=${t}`), dev.token("frank"));
    await expect.poll(() => p.page.locator("#whoami-user").textContent(), { timeout: 15_000 }).toBe("frank");
    await p.page.locator("#feed-state[data-state=open]").waitFor({ timeout: 20_000 });
    expect(p.page.url()).not.toContain("token=");
    // Signed in as frank: grace's link signs grace in, with her own feed and data.
    await p.page.evaluate((t) => (location.hash = `#token=${t}`), dev.token("grace"));
    await expect.poll(() => p.page.locator("#whoami-user").textContent(), { timeout: 15_000 }).toBe("grace");
    await p.page.locator("#feed-state[data-state=open]").waitFor({ timeout: 20_000 });
    expect(p.page.url()).not.toContain("token=");
    // A bad link says why on the sign-in form.
    await p.page.evaluate(() => (location.hash = "#token=not-a-token"));
    await expect.poll(() => p.page.locator("#signin-error").textContent(), { timeout: 15_000 }).toMatch(/^[A-Z_]+: /);
    await shotFromTop(p.page, "renter-desktop-9-bad-link");
    expect(p.seen.problems).toEqual([]);
    await p.close();
  });
});
