/**
 * A small typed client for the live feed, for browsers and Node (22+, which has a global
 * WebSocket) and for tests inside workerd (pass `connect`). It gets a ticket with the
 * caller's token, opens the feed, keeps it alive with `ping`, and on any drop reconnects
 * with backoff and a new ticket, resuming from the last `seq` it saw: each event reaches
 * the handlers once and in order. Only imports the protocol (types and constants).
 *
 *   const feed = new FeedClient({ baseUrl: "http://127.0.0.1:8787", token });
 *   feed.on("device.allocated", (e) => console.log(e.data.deviceId, e.data.expiresAt));
 *   await feed.start();
 */
import {
  CLOSE,
  PING,
  shouldReconnect,
  type Envelope,
  type ErrorFrameData,
  type FeedEvent,
  type FeedEventType,
  type FeedKind,
  type HelloData,
} from "../feed/protocol";

/** The part of a WebSocket the client uses (browser, Node and workerd sockets all fit). */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "message" | "close" | "error", listener: (ev: any) => void): void;
}

export interface FeedClientOptions {
  /** Where the service is, e.g. `http://127.0.0.1:8787`. */
  baseUrl: string;
  /** A bearer token, or a function that returns a fresh one (called before every ticket). */
  token: string | (() => string | Promise<string>);
  /** Which feed (default `user`). `pool`: one pool's devices as they change (admins only). */
  feed?: FeedKind;
  /** With `feed: "device"`. */
  deviceId?: string;
  /** With `feed: "pool"`: the pool to watch. */
  pool?: string;
  /** With `feed: "user"`: whose feed to watch (admins only; default your own). */
  userId?: string;
  /** Resume after this seq (e.g. stored from a previous session). Default: live from now. */
  since?: number;
  /** Fetch used for tickets (default: global fetch). */
  fetch?: (input: string, init?: RequestInit) => Promise<Response>;
  /** Opens a socket (default: `new WebSocket(url)`). */
  connect?: (url: string) => SocketLike | Promise<SocketLike>;
  /** Reconnect delays: initial, doubling up to max, with ±20% jitter. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Keep-alive interval; 0 turns it off. Default 30 s. */
  pingIntervalMs?: number;
}

export type FeedState = "idle" | "connecting" | "open" | "waiting" | "stopped";

export interface CloseInfo {
  code: number;
  reason: string;
  /** Whether the client will reconnect by itself. */
  reconnecting: boolean;
}

type Handler<T> = (value: T) => void;

export class FeedClient {
  /** The last event seq received (resume point); null before the first event or hello. */
  lastSeq: number | null;
  state: FeedState = "idle";
  /** The `feed.hello` of the current connection. */
  hello: HelloData | null = null;
  /** The last `feed.error` the server sent (e.g. why a socket was refused). */
  lastError: ErrorFrameData | null = null;

  private socket: SocketLike | null = null;
  private readonly handlers = new Map<string, Set<Handler<any>>>();
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private pinger: ReturnType<typeof setInterval> | null = null;
  private helloWaiters: Array<{ resolve: (h: HelloData) => void; reject: (e: Error) => void }> = [];

  constructor(private readonly opts: FeedClientOptions) {
    this.lastSeq = opts.since ?? null;
  }

  // ---- subscriptions --------------------------------------------------------------------

  /** Typed handler for one event type. Returns an unsubscribe function. */
  on<K extends FeedEventType>(type: K, fn: Handler<FeedEvent<K>>): () => void {
    return this.add(type, fn);
  }
  /** Every logged event, in order. */
  onEvent(fn: Handler<FeedEvent>): () => void {
    return this.add("*", fn);
  }
  onHello(fn: Handler<HelloData>): () => void {
    return this.add("feed.hello", fn);
  }
  onError(fn: Handler<ErrorFrameData>): () => void {
    return this.add("feed.error", fn);
  }
  onState(fn: Handler<{ state: FeedState; close?: CloseInfo }>): () => void {
    return this.add("state", fn);
  }

  private add(key: string, fn: Handler<any>): () => void {
    const set = this.handlers.get(key) ?? new Set();
    set.add(fn);
    this.handlers.set(key, set);
    return () => set.delete(fn);
  }

  private fire(key: string, value: unknown): void {
    for (const fn of this.handlers.get(key) ?? []) {
      try {
        fn(value);
      } catch (err) {
        // A failing handler must not stop the feed.
        console.error("feed handler failed", err);
      }
    }
  }

  // ---- lifecycle ------------------------------------------------------------------------

  /** Connects; resolves with the first `feed.hello` (rejects if the first connection is refused for good). */
  start(): Promise<HelloData> {
    if (this.state === "stopped") return Promise.reject(new Error("feed client was closed"));
    const p = this.nextHello();
    if (this.state === "idle") void this.connect();
    return p;
  }

  /** Resolves at the next `feed.hello` (e.g. after a reconnect). */
  nextHello(): Promise<HelloData> {
    return new Promise((resolve, reject) => this.helloWaiters.push({ resolve, reject }));
  }

  /** Closes the feed for good (no reconnect). */
  close(): void {
    this.setState("stopped");
    if (this.timer) clearTimeout(this.timer);
    this.stopPing();
    const s = this.socket;
    this.socket = null;
    try {
      s?.close(1000, "client closed");
    } catch {
      /* already closed */
    }
    this.rejectWaiters(new Error("feed client was closed"));
  }

  /** Drops the current socket as a network failure would (the client reconnects and resumes). */
  drop(): void {
    try {
      this.socket?.close(4000, "client drop");
    } catch {
      /* already closed */
    }
  }

  /** Read through a method: `close()` may run while `connect()` awaits (TS would narrow the field). */
  private isStopped(): boolean {
    return this.state === "stopped";
  }

  private setState(state: FeedState, close?: CloseInfo): void {
    this.state = state;
    this.fire("state", { state, close });
  }

  private async connect(): Promise<void> {
    if (this.state === "stopped") return;
    this.setState("connecting");
    let socket: SocketLike;
    try {
      const url = await this.url();
      if (this.isStopped()) return;
      socket = await (this.opts.connect ?? ((u: string) => new WebSocket(u) as unknown as SocketLike))(url);
    } catch (err) {
      // A refused ticket keeps the API's own words; anything else (no answer, a socket that could not open) is CONNECT_FAILED.
      this.lastError =
        err instanceof TicketRefused && err.error ? err.error : { code: "CONNECT_FAILED", message: String((err as Error)?.message ?? err) };
      if (err instanceof TicketRefused && !err.retryable) return this.stopWith(err.status, err.message);
      return this.retry({ code: 1006, reason: this.lastError.message, reconnecting: true });
    }
    if (this.isStopped()) {
      socket.close(1000, "client closed");
      return;
    }
    this.socket = socket;
    socket.addEventListener("message", (ev: { data: unknown }) => this.receive(socket, ev.data));
    socket.addEventListener("close", (ev: { code: number; reason: string }) => this.closed(socket, ev.code, ev.reason));
    socket.addEventListener("error", () => {
      /* a close event follows */
    });
    const opened = () => {
      if (this.socket !== socket) return;
      this.setState("open");
      this.startPing(socket);
    };
    if (socket.readyState === 1) opened();
    else socket.addEventListener("open", opened);
  }

  /** Gets a ticket and builds the socket URL (with `since` to resume). */
  private async url(): Promise<string> {
    const token = typeof this.opts.token === "function" ? await this.opts.token() : this.opts.token;
    const fetcher = this.opts.fetch ?? ((i: string, init?: RequestInit) => fetch(i, init));
    const feed = this.opts.feed ?? "user";
    const res = await fetcher(`${this.opts.baseUrl.replace(/\/$/, "")}/ws/ticket`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify(
        feed === "device"
          ? { feed, deviceId: this.opts.deviceId }
          : feed === "pool"
            ? { feed, pool: this.opts.pool }
            : feed === "user" && this.opts.userId
              ? { feed, userId: this.opts.userId }
              : { feed },
      ),
    });
    const body = (await res.json().catch(() => null)) as {
      url?: string;
      error?: { code: string; message: string };
    } | null;
    if (!res.ok || !body?.url) {
      const retryable = res.status >= 500 || res.status === 429;
      const error =
        body?.error && typeof body.error.code === "string" ? { code: body.error.code, message: String(body.error.message) } : null;
      throw new TicketRefused(res.status, error ? `${error.code}: ${error.message}` : `ticket refused (${res.status})`, retryable, error);
    }
    const base = this.opts.baseUrl.replace(/^http/, "ws").replace(/\/$/, "");
    return `${base}${body.url}${this.lastSeq !== null ? `&since=${this.lastSeq}` : ""}`;
  }

  private receive(socket: SocketLike, raw: unknown): void {
    if (this.socket !== socket || typeof raw !== "string" || raw === "pong") return;
    let frame: Envelope;
    try {
      frame = JSON.parse(raw) as Envelope;
    } catch {
      return;
    }
    if (frame.type === "feed.hello") {
      const hello = frame.data as HelloData;
      this.hello = hello;
      this.attempt = 0;
      // The server's `since` is the truth (a client ahead of the log is moved back).
      this.lastSeq = hello.since;
      this.fire("feed.hello", hello);
      const waiters = this.helloWaiters;
      this.helloWaiters = [];
      for (const w of waiters) w.resolve(hello);
      return;
    }
    if (frame.type === "feed.error") {
      this.lastError = frame.data as ErrorFrameData;
      this.fire("feed.error", frame.data);
      return;
    }
    if (typeof frame.seq !== "number") return;
    // Belt and braces: never hand an event over twice.
    if (this.lastSeq !== null && frame.seq <= this.lastSeq) return;
    this.lastSeq = frame.seq;
    this.fire(frame.type, frame);
    this.fire("*", frame);
  }

  private closed(socket: SocketLike, code: number, reason: string): void {
    if (this.socket !== socket) return;
    this.socket = null;
    this.stopPing();
    if (this.state === "stopped") return;
    if (!shouldReconnect(code)) return this.stopWith(code, reason);
    this.retry({ code, reason, reconnecting: true });
  }

  private stopWith(code: number, reason: string): void {
    this.setState("stopped", { code, reason, reconnecting: false });
    this.rejectWaiters(new Error(`feed closed: ${code} ${this.lastError ? `${this.lastError.code}: ${this.lastError.message}` : reason}`));
  }

  private retry(info: CloseInfo): void {
    const initial = this.opts.backoff?.initialMs ?? 500;
    const max = this.opts.backoff?.maxMs ?? 30_000;
    // Rate limited: start the wait at a quarter of the maximum.
    const base = info.code === CLOSE.rateLimited ? Math.max(initial, max / 4) : initial;
    const delay = Math.min(max, base * 2 ** this.attempt) * (0.8 + Math.random() * 0.4);
    this.attempt += 1;
    this.setState("waiting", info);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.connect();
    }, delay);
  }

  private startPing(socket: SocketLike): void {
    const every = this.opts.pingIntervalMs ?? 30_000;
    if (every <= 0) return;
    this.pinger = setInterval(() => {
      try {
        socket.send(PING);
      } catch {
        /* closing */
      }
    }, every);
  }

  private stopPing(): void {
    if (this.pinger) clearInterval(this.pinger);
    this.pinger = null;
  }

  private rejectWaiters(err: Error): void {
    const waiters = this.helloWaiters;
    this.helloWaiters = [];
    for (const w of waiters) w.reject(err);
  }
}

/** The ticket request failed; only 5xx and 429 are retried (a 4xx will not change by retrying). */
export class TicketRefused extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly retryable: boolean,
    /** The API's error (`{code, message}`), when it answered with one. */
    readonly error: ErrorFrameData | null = null,
  ) {
    super(message);
  }
}
