/**
 * Browser test harness: the service as a newcomer runs it (`npm run dev`, on a free port with
 * a fresh state directory), and Debian's Chromium driven by playwright-core (headless, no
 * sandbox, no background networking). Screenshots go to test-results/browser/.
 *
 * Chromium is looked up at CHROMIUM_PATH, then the usual Debian paths. Without one the browser
 * tests are skipped with a message, unless REQUIRE_BROWSER=1 (CI), where that is a failure.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll } from "vitest";
// Plain ESM helpers shared with scripts/dev.mjs (the same demo-token signing).
import { jwtSecret, root, signToken } from "../../scripts/lib.mjs";

export const ARTIFACTS = path.join(root, "test-results", "browser");

const CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable"];

export function chromiumPath(): string | null {
  const wanted = process.env.CHROMIUM_PATH;
  if (wanted) return existsSync(wanted) ? wanted : null;
  return CANDIDATES.find((p) => existsSync(p)) ?? null;
}

export const browserRequired = process.env.REQUIRE_BROWSER === "1";

export function launchBrowser(executablePath: string): Promise<Browser> {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-dev-shm-usage",
      "--no-first-run",
      "--disable-sync",
    ],
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface DevServer {
  base: string;
  output: () => string;
  tokens: { alice: string; bob: string; admin: string };
  token(userId: string, role?: "user" | "admin"): string;
  stop(): Promise<void>;
}

/**
 * A file's service and browser: `npm run dev` and Chromium start before its tests (then `ready`
 * runs with both) and stop after them.
 */
export function devAndBrowser(executable: string, ready: (dev: DevServer, browser: Browser) => void | Promise<void>): void {
  let dev: DevServer | undefined;
  let browser: Browser | undefined;
  beforeAll(async () => {
    dev = await startDev();
    browser = await launchBrowser(executable);
    await ready(dev, browser);
  }, 240_000);
  afterAll(async () => {
    await browser?.close();
    await dev?.stop();
  }, 60_000);
}

/**
 * `npm run dev -- --port <free> --persist-to <fresh dir>`, resolved once its banner is printed.
 * A port found free can be taken before wrangler binds it (several files start a server at
 * once, and workerd binds sockets of its own): "Address already in use" is tried again, on a
 * new port, a few times.
 */
export async function startDev(timeoutMs = 180_000): Promise<DevServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDevOnce(timeoutMs);
    } catch (err) {
      if (attempt >= 3 || !String(err).includes("Address already in use")) throw err;
    }
  }
}

async function startDevOnce(timeoutMs: number): Promise<DevServer> {
  const port = await freePort();
  const state = mkdtempSync(path.join(os.tmpdir(), "eda-browser-"));
  // npm as the test runner was started (npm_execpath), else the one on PATH.
  const npm = process.env.npm_execpath;
  const [cmd, args] = npm
    ? [process.execPath, [npm, "run", "dev", "--", "--port", String(port), "--persist-to", state]]
    : ["npm", ["run", "dev", "--", "--port", String(port), "--persist-to", state]];
  const child: ChildProcess = spawn(cmd, args as string[], {
    cwd: root,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
  });
  let out = "";
  child.stdout!.on("data", (b) => (out += b));
  child.stderr!.on("data", (b) => (out += b));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const ready = await Promise.race([
    (async () => {
      const end = Date.now() + timeoutMs;
      while (Date.now() < end) {
        if (out.includes("is running at")) return true;
        await new Promise((r) => setTimeout(r, 200));
      }
      return false;
    })(),
    exited.then(() => false),
  ]);
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid!, "SIGTERM");
      } catch {
        /* gone */
      }
      const t = setTimeout(() => {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {
          /* gone */
        }
      }, 10_000);
      await exited;
      clearTimeout(t);
    }
    rmSync(state, { recursive: true, force: true });
  };
  if (!ready) {
    await stop();
    throw new Error(`npm run dev did not come up:\n${out.slice(-4000)}`);
  }
  const secret = jwtSecret();
  const token = (userId: string, role: "user" | "admin" = "user") => signToken(secret, userId, role) as string;
  return {
    base: `http://127.0.0.1:${port}`,
    output: () => out,
    tokens: { alice: token("alice"), bob: token("bob"), admin: token("ops-admin", "admin") },
    token,
    stop,
  };
}

/** A JSON call from the test itself (another user acting while the page watches). */
export async function api(
  base: string,
  token: string,
  method: string,
  urlPath: string,
  body?: unknown,
): Promise<{ status: number; body: any }> {
  const res = await fetch(base + urlPath, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

/** Everything a page did that a user would call broken: uncaught errors, console errors, requests off 127.0.0.1. */
export function watchPage(page: Page): { problems: string[]; offsite: string[] } {
  const problems: string[] = [];
  const offsite: string[] = [];
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    // The browser's own line for a 4xx the page asked for and shows is not a fault of the page.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`console.error: ${m.text()}`);
  });
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.hostname !== "127.0.0.1" && u.protocol !== "data:" && u.protocol !== "blob:") offsite.push(r.url());
  });
  return { problems, offsite };
}

export async function shot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
