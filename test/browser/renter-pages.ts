/**
 * Pages for the renter's browser tests: the console signed in at a desktop or a phone size, in a
 * fixed time zone (so every time shown must carry it), and the checks both sizes share.
 */
import { expect } from "vitest";
import type { Browser, Page } from "playwright-core";
import { shot, watchPage } from "./harness";

/** India has no daylight saving, and a half-hour offset shows that the zone is written whole. */
export const ZONE = "Asia/Kolkata";
/**
 * The console's one form of a time: `3 Dec 2026, 14:05 UTC+5:30` (seconds where they matter; a
 * window within a day: `3 Dec 2026, 14:05 – 15:05 UTC+5:30`).
 */
export const WHEN = /\b\d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4}, \d\d:\d\d(:\d\d)?( – \d\d:\d\d)? UTC\+5:30\b/;

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

export interface ConsolePage {
  page: Page;
  seen: ReturnType<typeof watchPage>;
  close(): Promise<void>;
}

/** A fresh browser context at `viewport` (a phone one with touch and the mobile viewport), not signed in. */
export async function blankPage(browser: Browser, viewport: { width: number; height: number }): Promise<ConsolePage> {
  const phone = viewport.width < 600;
  const context = await browser.newContext({ viewport, timezoneId: ZONE, isMobile: phone, hasTouch: phone });
  const page = await context.newPage();
  return { page, seen: watchPage(page), close: () => context.close() };
}

/** The console signed in with `token` through its sign-in link, the user's feed open. */
export async function consoleAs(
  browser: Browser,
  base: string,
  token: string,
  viewport: { width: number; height: number } = DESKTOP,
): Promise<ConsolePage> {
  const p = await blankPage(browser, viewport);
  await p.page.goto(`${base}/console/#token=${token}`);
  await p.page.locator("#feed-state[data-state=open]").waitFor({ timeout: 20_000 });
  // The catalogue is in the allocate form.
  await p.page.locator("#allocate-offers .offer").first().waitFor({ timeout: 10_000 });
  return p;
}

/** Nothing sticks out sideways: the page is no wider than the screen. */
export async function expectNoSidewaysScroll(page: Page, width: number): Promise<void> {
  const scrollWidth = await page.evaluate(() => document.scrollingElement!.scrollWidth);
  expect(scrollWidth, "page wider than the screen").toBeLessThanOrEqual(width);
}

/** `selector` can be scrolled to and then lies wholly inside the screen's width and height. */
export async function expectInView(page: Page, selector: string, viewport: { width: number; height: number }): Promise<void> {
  const el = page.locator(selector).first();
  await el.scrollIntoViewIfNeeded();
  const box = await el.boundingBox();
  expect(box, `${selector} has no box`).not.toBeNull();
  expect(box!.x, selector).toBeGreaterThanOrEqual(0);
  expect(box!.x + box!.width, selector).toBeLessThanOrEqual(viewport.width);
  expect(box!.y, selector).toBeGreaterThanOrEqual(0);
  expect(box!.y + box!.height, selector).toBeLessThanOrEqual(viewport.height);
}

/** Every time on the page (cells, events, messages that name one) carries its date and zone. */
export async function expectZonedTimes(page: Page, selectors: string[]): Promise<void> {
  for (const sel of selectors) {
    const texts = await page.locator(sel).allTextContents();
    expect(texts.length, `no ${sel} on the page`).toBeGreaterThan(0);
    for (const t of texts) expect(t, sel).toMatch(WHEN);
  }
}

/** A `datetime-local` value `days` from now at `hour`:00 on the page's clock (the test's zone). */
export async function localStart(page: Page, days: number, hour: number): Promise<string> {
  return page.evaluate(
    ([d, hr]) => {
      const t = new Date();
      t.setDate(t.getDate() + d!);
      t.setHours(hr!, 0, 0, 0);
      const pad = (n: number) => String(n).padStart(2, "0");
      return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())}T${pad(t.getHours())}:00`;
    },
    [days, hour],
  );
}

/** A whole-page screenshot from the top (a scrolled page draws its sticky header and table heads mid-page). */
export async function shotFromTop(page: Page, name: string): Promise<void> {
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot(page, name);
}
