/**
 * Pages and fixtures for the Operations browser tests: the console signed in as an operator on
 * the Operations tab (fleet loaded, pool feeds open), a fleet the size the issue was filed with
 * (the demo's 10 devices plus a pool of 24), the API state the tests compare with, and the steps
 * of a device action (its dialog, its confirmation).
 */
import { expect } from "vitest";
import type { Browser, Locator, Page } from "playwright-core";
import { api, type DevServer } from "./harness";
import { consoleAs, DESKTOP, type ConsolePage } from "./renter-pages";

/** The console as `ops-admin` on Operations, every pool's feed open. */
export async function operationsAs(
  browser: Browser,
  dev: DevServer,
  viewport: { width: number; height: number } = DESKTOP,
): Promise<ConsolePage> {
  const p = await consoleAs(browser, dev.base, dev.tokens.admin, viewport);
  await p.page.locator("#tab-admin").click();
  await p.page.locator("#fleet tr[data-device-id]").first().waitFor({ state: "attached", timeout: 15_000 });
  const pools = (await api(dev.base, dev.tokens.admin, "GET", "/admin/pools")).body.items as { pool: string }[];
  for (const { pool } of pools)
    await p.page
      .locator(`.pool-feed-state[data-pool="${pool}"][data-state="open"]`)
      .waitFor({ state: "attached", timeout: 15_000 })
      .catch(async (err) => {
        const states = await p.page
          .locator(".pool-feed-state")
          .evaluateAll((els) => els.map((e) => `${e.textContent} ${(e as HTMLElement).title}`));
        throw new Error(`${pool}'s feed did not open: ${states.join(" | ")}; ${err}`);
      });
  return p;
}

/** A third pool, `us-std`, of 24 phones registered one by one (so the ids sort as text would get wrong: 1, 10, 11 …). */
export async function registerUsFleet(dev: DevServer): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 1; i <= 24; i++) {
    const deviceId = `us-std-${i}`;
    const r = await api(dev.base, dev.tokens.admin, "POST", "/admin/devices", {
      deviceId,
      pool: "us-std",
      node: `us-node-${(i % 3) + 1}`,
      cpuCores: 4,
      memoryMB: 8192,
      storageMB: 65536,
      name: `Pixel 8 #${i}`,
      model: "Pixel 8",
      osVersion: "Android 14",
      labels: { region: "us", tier: i % 4 === 0 ? "gold" : "std" },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    ids.push(deviceId);
  }
  return ids;
}

/** The device as the API has it (`GET /admin/devices/{id}`: status, reason, drain, allocation). */
export async function deviceNow(dev: DevServer, deviceId: string): Promise<{ status: number; body: any }> {
  return api(dev.base, dev.tokens.admin, "GET", `/admin/devices/${encodeURIComponent(deviceId)}`);
}

/** A user takes a device of `pool` (a few minutes), from outside the page. */
export async function allocateFor(dev: DevServer, userId: string, pool = "default", durationMinutes = 20): Promise<any> {
  const r = await api(dev.base, dev.token(userId), "POST", "/scheduler/devices/allocate", { pool, durationMinutes });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body;
}

export const fleetRow = (page: Page, deviceId: string): Locator => page.locator(`#fleet tr[data-device-id="${deviceId}"]`);

/** Opens a device's dialog from its row and waits for its detail. */
export async function openDevice(page: Page, deviceId: string, tap = false): Promise<Locator> {
  const manage = fleetRow(page, deviceId).locator("button.manage");
  if (tap) await manage.tap();
  else await manage.click();
  const dialog = page.locator("#device-dialog[open]");
  await dialog.waitFor({ timeout: 5_000 });
  await expect.poll(() => dialog.locator("#device-dialog-title").textContent()).toBe(`Device ${deviceId}`);
  return dialog;
}

/** Chooses an action, fills its reason (and deadline), and asks for the review; the confirmation is then shown. */
export async function reviewAction(
  dialog: Locator,
  action: string,
  opts: { reason?: string; deadline?: string; tap?: boolean } = {},
): Promise<Locator> {
  await dialog.locator(`input[name=action][value="${action}"]`).check();
  if (opts.reason !== undefined) await dialog.locator("input[name=reason]").fill(opts.reason);
  if (opts.deadline !== undefined) await dialog.locator("input[name=deadline]").fill(opts.deadline);
  const review = dialog.locator("#device-review");
  if (opts.tap) await review.tap();
  else await review.click();
  const step = dialog.locator(".confirm-step");
  await step.waitFor({ timeout: 5_000 });
  return step;
}

/** The dialog's status line once the action answered (its text). */
export async function actionOutcome(dialog: Locator): Promise<string> {
  const msg = dialog.locator("#device-msg");
  await expect.poll(() => msg.getAttribute("class"), { timeout: 10_000 }).toMatch(/\b(ok|error)\b/);
  return (await msg.textContent()) ?? "";
}

/** The fleet card's height in CSS pixels. */
export async function fleetHeight(page: Page): Promise<number> {
  return (await page.locator("#fleet-card").boundingBox())!.height;
}
