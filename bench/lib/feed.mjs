// Shared helpers of the feed, expiry, sockets and ingestion scenarios: tokens, tickets, raw
// feed sockets (Node 22's global WebSocket) with arrival times, bounded concurrency, fleet
// and user setup. Everything targets 127.0.0.1 only (request() in load.mjs refuses others).
import { createHmac } from "node:crypto";
import { JWT_SECRET, SERVICE_TOKEN } from "./runtime.mjs";
import { request } from "./load.mjs";

const b64url = (v) => Buffer.from(v).toString("base64url");

/** An HS256 JWT {sub, role, iat, exp}, as scripts/lib.mjs signToken (same JWT_SECRET as the runtime). */
export function token(userId, role = "user", ttlSeconds = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub: userId, role, iat: now, exp: now + ttlSeconds }));
  return `${head}.${body}.${createHmac("sha256", JWT_SECRET).update(`${head}.${body}`).digest("base64url")}`;
}

const tokens = new Map();
/** Authorization header for a user (tokens cached: signing is not what we measure). */
export function bearer(userId, role = "user") {
  const k = `${role}:${userId}`;
  let t = tokens.get(k);
  if (!t) tokens.set(k, (t = token(userId, role)));
  return { authorization: `Bearer ${t}` };
}
export const ADMIN = "bench-admin";
export const adminHeaders = () => bearer(ADMIN, "admin");
export const serviceHeaders = { "x-service-token": SERVICE_TOKEN };

/** Wall clock with sub-millisecond resolution (comparable with the server's Date.now() values). */
export const nowMs = () => performance.timeOrigin + performance.now();

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs `fn(item, i)` over `items` with at most `concurrency` in flight; returns the results in order. */
export async function pool(items, concurrency, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i], i);
      }
    }),
  );
  return out;
}

/** Rejects after `ms` with `what` in the message (everything in the bench is bounded). */
export function within(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, rej) => (t = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms))),
  ]).finally(() => clearTimeout(t));
}

/** Throws unless the response has the expected status. */
export function expectStatus(res, status, what) {
  if (res.status !== status) throw new Error(`${what}: HTTP ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
  return res.body;
}

/** A single-use feed ticket → the ws:// URL to open (optionally with `since`). */
export async function ticketUrl(base, userId, { feed, deviceId, since, role = "user" } = {}) {
  const body = feed ? { feed, ...(deviceId ? { deviceId } : {}) } : undefined;
  const res = await request(base, "POST", "/ws/ticket", { headers: bearer(userId, role), body });
  const t = expectStatus(res, 201, `ticket for ${userId}`);
  return `${base.replace(/^http/, "ws")}${t.url}${since !== undefined ? `&since=${since}` : ""}`;
}

/**
 * Opens a feed socket; resolves at its `feed.hello` with a handle:
 * {ws, hello, frames (when `keep`), closed (a promise of {code, reason}), close()}.
 * `onFrame(frame, arrivalMs)` sees every frame after the hello, stamped on arrival.
 */
export async function openFeed(base, userId, { feed, deviceId, since, role, onFrame, keep = false, timeoutMs = 15_000 } = {}) {
  const url = await ticketUrl(base, userId, { feed, deviceId, since, role });
  const ws = new WebSocket(url);
  const sock = { ws, userId, hello: null, frames: keep ? [] : null, closeInfo: null };
  sock.closed = new Promise((resolve) =>
    ws.addEventListener("close", (e) => resolve((sock.closeInfo = { code: e.code, reason: e.reason }))),
  );
  sock.close = () => {
    try {
      ws.close(1000, "bench done");
    } catch {
      /* already closing */
    }
  };
  const hello = new Promise((resolve, reject) => {
    ws.addEventListener("message", (e) => {
      const at = nowMs();
      if (typeof e.data !== "string" || e.data === "pong") return;
      const f = JSON.parse(e.data);
      if (!sock.hello) {
        if (f.type === "feed.hello") {
          sock.hello = f;
          resolve(sock);
        } else reject(new Error(`feed refused for ${userId}: ${e.data.slice(0, 200)}`));
        return;
      }
      if (keep) sock.frames.push({ at, frame: f });
      onFrame?.(f, at);
    });
    ws.addEventListener("error", () => reject(new Error(`socket error for ${userId}`)));
    ws.addEventListener("close", (e) => reject(new Error(`socket closed before hello for ${userId}: ${e.code} ${e.reason}`)));
  });
  try {
    return await within(hello, timeoutMs, `feed.hello for ${userId}`);
  } catch (err) {
    sock.close();
    throw err;
  }
}

/** Closes sockets and waits (bounded) until they report closed. */
export async function closeAll(socks, timeoutMs = 20_000) {
  for (const s of socks) s?.close();
  await within(Promise.all(socks.filter(Boolean).map((s) => s.closed)), timeoutMs, `closing ${socks.length} sockets`).catch(() => {});
}

/** Registers `count` devices in `pool` (ids `${prefix}-${i}`), spread over `nodes` nodes. */
export async function registerDevices(
  base,
  { pool: poolName, prefix, count, nodes = 4, spec = { cpuCores: 2, memoryMB: 4096, storageMB: 32768 }, concurrency = 16 },
) {
  const ids = Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
  await pool(ids, concurrency, async (deviceId, i) => {
    const res = await request(base, "POST", "/admin/devices", {
      headers: adminHeaders(),
      body: { deviceId, pool: poolName, node: `node-${i % nodes}`, ...spec },
    });
    expectStatus(res, 201, `register ${deviceId}`);
  });
  return ids;
}

/** One app event to `userId`'s feed (the service endpoint); resolves with the HTTP result. */
export function sendAppEvent(base, userId, eventId, extra = {}) {
  return request(base, "POST", "/api/internal/events", {
    headers: serviceHeaders,
    body: {
      type: "app.installed",
      eventId,
      data: { userId, appId: "bench.app", appName: "Bench", deviceId: "bench-device", version: "1.0", ...extra },
    },
  });
}

/** {p50, p99, max, min, mean, count} of a list of numbers (ms), rounded to 0.01. */
export function stats(values) {
  const s = [...values].sort((a, b) => a - b);
  const r = (v) => (v === null || v === undefined ? null : Math.round(v * 100) / 100);
  const pct = (p) => (s.length ? s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] : null);
  return {
    count: s.length,
    p50: r(pct(50)),
    p90: r(pct(90)),
    p99: r(pct(99)),
    max: r(s[s.length - 1]),
    min: r(s[0]),
    mean: r(s.length ? s.reduce((a, b) => a + b, 0) / s.length : null),
  };
}

/**
 * The runtime's floor for idle feed sockets: a bare Worker that forwards the upgrade to a
 * Durable Object, which accepts it for hibernation (with an attachment, a first frame and the
 * runtime's ping/pong), as our feeds do, and nothing else. Same compatibility date and flags
 * as wrangler.toml, so WebSocket compression is negotiated (or not) as for the app.
 * Returns {base, stop}; its workerd is a child of this process, so workerdRssMB() counts it.
 */
export async function startSocketFloor() {
  const { readFileSync } = await import("node:fs");
  const path = await import("node:path");
  const { root } = await import("./runtime.mjs");
  const toml = readFileSync(path.join(root, "wrangler.toml"), "utf8");
  const compatibilityDate = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(toml)?.[1];
  const flagsText = /^compatibility_flags\s*=\s*\[([^\]]*)\]/m.exec(toml)?.[1] ?? "";
  const compatibilityFlags = [...flagsText.matchAll(/"([^"]+)"/g)].map((m) => m[1]);
  const script = `
import { DurableObject } from "cloudflare:workers";
export class Room extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }
  async fetch(req) {
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1], ["user"]);
    pair[1].serializeAttachment({ userId: "u", role: "user", feed: "user", connectedAt: Date.now() });
    pair[1].send(JSON.stringify({ seq: null, type: "feed.hello", userId: "u", data: {}, timestamp: new Date().toISOString() }));
    return new Response(null, { status: 101, webSocket: pair[0] });
  }
}
export default {
  fetch(req, env) {
    return env.ROOM.getByName(new URL(req.url).searchParams.get("o") ?? "o").fetch(req);
  },
};`;
  const { Miniflare, Log, LogLevel, convertV4MiniflareOptions } = await import("miniflare");
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      log: new Log(LogLevel.WARN),
      cf: false,
      host: "127.0.0.1",
      port: 0,
      modules: true,
      script,
      compatibilityDate,
      compatibilityFlags,
      durableObjects: { ROOM: { className: "Room", useSQLite: true } },
      unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
    }),
  );
  await mf.ready;
  const base = (await mf.unsafeGetDirectURL()).toString().replace(/\/$/, "");
  return { base, compatibilityDate, compatibilityFlags, stop: () => mf.dispose() };
}

/** A raw socket to the floor (no ticket): resolves at its first frame with the same handle as openFeed. */
export async function openFloorSocket(base, object, { timeoutMs = 15_000 } = {}) {
  const ws = new WebSocket(`${base.replace(/^http/, "ws")}/?o=${encodeURIComponent(object)}`);
  const sock = { ws, userId: object, hello: null, closeInfo: null };
  sock.closed = new Promise((resolve) =>
    ws.addEventListener("close", (e) => resolve((sock.closeInfo = { code: e.code, reason: e.reason }))),
  );
  sock.close = () => {
    try {
      ws.close(1000, "bench done");
    } catch {
      /* already closing */
    }
  };
  const first = new Promise((resolve, reject) => {
    ws.addEventListener("message", () => resolve(sock), { once: true });
    ws.addEventListener("error", () => reject(new Error(`floor socket error (${object})`)));
  });
  try {
    return await within(first, timeoutMs, `floor socket ${object}`);
  } catch (err) {
    sock.close();
    throw err;
  }
}

/**
 * Open file descriptors and the soft RLIMIT_NOFILE of the runtime's workerd process(es)
 * (children of this process). workerd holds two descriptors per accepted connection, so its
 * limit, not memory, bounds how many sockets one runtime can hold here.
 */
export async function workerdFds() {
  const { readdirSync, readFileSync } = await import("node:fs");
  const out = [];
  for (const pid of readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      if (!(/\(([^)]*)\)/.exec(stat)?.[1] ?? "").startsWith("workerd")) continue;
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) !== process.pid) continue;
      const limit = Number(/Max open files\s+(\d+)/.exec(readFileSync(`/proc/${pid}/limits`, "utf8"))?.[1] ?? Infinity);
      out.push({ pid: Number(pid), fds: readdirSync(`/proc/${pid}/fd`).length, limit });
    } catch {
      /* process went away */
    }
  }
  return out;
}
