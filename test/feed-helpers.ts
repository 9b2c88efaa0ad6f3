/** Feed test helpers: real sockets through the real Worker (exports.default), no network. */
import { exports } from "cloudflare:workers";
import { FeedClient, type FeedClientOptions, type SocketLike } from "../src/client/feed-client";
import type { Envelope } from "../src/feed/protocol";
import { call, sleep } from "./helpers";

/** Opens a WebSocket through the Worker, as the typed client's `connect`. */
export async function connectInWorkerd(url: string): Promise<SocketLike> {
  const res = await exports.default.fetch(new Request(url.replace(/^ws/, "http"), { headers: { Upgrade: "websocket" } }));
  const ws = res.webSocket;
  if (!ws) throw new Error(`no upgrade: ${res.status} ${await res.text()}`);
  ws.accept();
  return ws as unknown as SocketLike;
}

const workerdFetch = (input: string, init?: RequestInit) => exports.default.fetch(new Request(input, init));

/** A typed client wired to the in-process Worker. */
export function feedClient(token: string, opts: Partial<FeedClientOptions> = {}): FeedClient {
  return new FeedClient({
    baseUrl: "https://test.local",
    token,
    fetch: workerdFetch,
    connect: connectInWorkerd,
    backoff: { initialMs: 20, maxMs: 200 },
    pingIntervalMs: 0,
    ...opts,
  });
}

/** A raw socket that records every frame (for tests that check the protocol itself). */
export interface RawFeed {
  ws: WebSocket;
  frames: Envelope[];
  closed: Promise<{ code: number; reason: string }>;
  closeInfo: { code: number; reason: string } | null;
}

export async function rawFeed(path: string): Promise<RawFeed> {
  const res = await exports.default.fetch(new Request(`https://test.local${path}`, { headers: { Upgrade: "websocket" } }));
  const ws = res.webSocket;
  if (!ws) throw new Error(`no upgrade: ${res.status} ${await res.text()}`);
  const frames: Envelope[] = [];
  const out: RawFeed = { ws, frames, closed: null as never, closeInfo: null };
  out.closed = new Promise((resolve) =>
    ws.addEventListener("close", (ev) => {
      out.closeInfo = { code: ev.code, reason: ev.reason };
      resolve(out.closeInfo);
    }),
  );
  ws.addEventListener("message", (ev) => {
    if (typeof ev.data === "string" && ev.data !== "pong") frames.push(JSON.parse(ev.data) as Envelope);
  });
  ws.accept();
  return out;
}

/** A ticket for `feed` (and device). */
export async function ticket(token: string, body: Record<string, unknown> = {}): Promise<string> {
  const r = await call("POST", "/ws/ticket", { token, body });
  if (r.status !== 201) throw new Error(`ticket: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.ticket as string;
}

/** Waits until `frames` holds `n` logged events (seq != null). */
export async function events(frames: Envelope[], n: number, timeoutMs = 10_000): Promise<Envelope[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const got = frames.filter((f) => f.seq !== null);
    if (got.length >= n) return got;
    if (Date.now() > end) throw new Error(`expected ${n} events, got ${got.length}: ${JSON.stringify(got.map((f) => f.type))}`);
    await sleep(20);
  }
}
