/**
 * FeedHub: an event log with hibernatable sockets, used by every object that holds a feed
 * (UserQuota: the user's feed; Device: the device feed; DevicePool: the pool feed; AdminFeed:
 * the operators' feed).
 *
 * - Events are appended to the object's SQLite log (one seq per event) inside whatever
 *   transaction made them, and sent to sockets only afterwards (a microtask later), read
 *   back from the log: an event that rolled back is never sent.
 * - Each socket gets events in seq order, each once: on connect the hub first sends every
 *   open socket what is pending, then replays (since, last] to the new one, then it is live.
 * - Sockets are accepted with `ctx.acceptWebSocket` (hibernation); who is watching lives in
 *   the socket's attachment, so it survives hibernation. `ping` is answered by the runtime.
 * - A socket sees an event only if it is the event's user, an admin watching that user's feed,
 *   or an admin on the admin, device or pool feed (invariant 6 is enforced here, per frame, not
 *   only by routing).
 */
import { FEED } from "../config";
import { iso } from "../domain/time";
import type { Sql } from "./sql";
import {
  CLOSE,
  PING,
  PONG,
  type Envelope,
  type ErrorFrameData,
  type FeedEvents,
  type FeedEventType,
  type FeedKind,
  type HelloData,
} from "../feed/protocol";

/** A page of a feed's log: events after `since`, and the bounds of what the log still keeps. */
export interface FeedHistory {
  events: Envelope[];
  oldestSeq: number | null;
  lastSeq: number;
}

/** Who holds a socket; set by the Worker from a verified ticket. */
export interface Watcher {
  userId: string;
  role: "user" | "admin";
  feed: FeedKind;
  /** On a user feed opened by an admin for someone else: the user whose feed it is. */
  watching?: string;
  connectedAt: number;
}

/** What the Worker passes to the object with an upgrade (header `X-Feed-Watcher`). */
export interface FeedRequest {
  userId: string;
  role: "user" | "admin";
  feed: FeedKind;
  nonce: string;
  ticketExpiresAt: number;
  since?: number;
  deviceId?: string;
  pool?: string;
  /** An admin's ticket for another user's feed: that user. */
  watching?: string;
}
export const FEED_HEADER = "X-Feed-Watcher";

/** The feed request the Worker forwarded (its ticket checked there), or the reply when it is not one. */
export function feedRequestOf(request: Request): FeedRequest | Response {
  const header = request.headers.get(FEED_HEADER);
  if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket" || !header)
    return Response.json({ error: { code: "UPGRADE_REQUIRED", message: "Open the feed as a WebSocket." } }, { status: 426 });
  return JSON.parse(header) as FeedRequest;
}

/**
 * The SQL a feed needs: the log, event keys (at-least-once senders), accepted ticket nonces,
 * and the open socket count this object last reported (see FeedHubOptions.onSockets), kept so
 * that an object whose sockets were cut by a restart corrects its report when it next wakes.
 */
export function feedSchema(table: string): string {
  return `CREATE TABLE ${table} (seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, user_id TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL, ts INTEGER NOT NULL);
   CREATE INDEX ${table}_user ON ${table}(user_id, seq);
   CREATE TABLE ${table}_keys (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts INTEGER NOT NULL);
   CREATE INDEX ${table}_keys_ts ON ${table}_keys(ts);
   CREATE TABLE ${table}_tickets (nonce TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
   CREATE TABLE ${table}_sockets (id INTEGER PRIMARY KEY CHECK (id = 1), reported INTEGER NOT NULL, seq INTEGER NOT NULL);`;
}

/**
 * A later step of every feed's schema: the log without its `user_id` index and without
 * AUTOINCREMENT, each of which wrote a row of its own per event (rows written are billed), and
 * the event keys keyed by the key alone (WITHOUT ROWID, no index by time: the monthly prune
 * reads them all, once per 100 keyed events). The
 * seq stays monotonic without AUTOINCREMENT because the log is only ever pruned from its oldest
 * end and never emptied (an event is appended before any prune), so the highest seq is never
 * deleted. Replays read by seq and filter by user, over a log of at most `limit` events.
 */
export function feedLeanLog(table: string): string {
  return `CREATE TABLE ${table}_lean (seq INTEGER PRIMARY KEY, type TEXT NOT NULL, user_id TEXT NOT NULL DEFAULT '',
      data TEXT NOT NULL, ts INTEGER NOT NULL);
    INSERT INTO ${table}_lean (seq, type, user_id, data, ts) SELECT seq, type, user_id, data, ts FROM ${table};
    DROP TABLE ${table};
    ALTER TABLE ${table}_lean RENAME TO ${table};
    CREATE TABLE ${table}_keys_lean (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO ${table}_keys_lean (key, seq, ts) SELECT key, seq, ts FROM ${table}_keys;
    DROP TABLE ${table}_keys;
    ALTER TABLE ${table}_keys_lean RENAME TO ${table}_keys;`;
}

interface LogRow {
  seq: number;
  type: string;
  user_id: string;
  data: string;
  ts: number;
}

export interface FeedHubOptions {
  table: string;
  /** Events kept for resume. */
  limit: number;
  maxSockets: number;
  /**
   * Told the number of open sockets whenever it changes (the operators' metrics count them),
   * with a number that grows with each report (reports may arrive out of order: the receiver
   * keeps the highest). Needs the sockets table of `feedSchema`. Best effort: a failed report is
   * sent again at the next change or wake.
   */
  onSockets?: (open: number, seq: number) => Promise<unknown>;
}

export class FeedHub {
  /** Highest seq already sent to live sockets. */
  private pumped = 0;
  private scheduled = false;
  private readonly watchers = new WeakMap<WebSocket, Watcher>();
  private readonly strikes = new WeakMap<WebSocket, { n: number; since: number }>();

  constructor(
    private readonly ctx: DurableObjectState,
    private readonly sql: Sql,
    private readonly opts: FeedHubOptions,
  ) {
    // Keep-alive answered by the runtime: a pinging client never wakes the object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING, PONG));
  }

  /** Call once the schema exists (constructor, inside blockConcurrencyWhile). */
  start(): void {
    this.pumped = this.bounds().hi;
    // After a restart the runtime has no sockets left, though the last report may say otherwise
    // (or a report failed): the count is sent again when it differs (no call when it does not).
    this.reportSockets();
  }

  // ---- socket count reports ------------------------------------------------------------------

  /** Reports the open count if it differs from the last report (`closing`: a socket being closed, not counted). */
  private reportSockets(closing?: WebSocket): void {
    const send = this.opts.onSockets;
    if (!send) return;
    const t = `${this.opts.table}_sockets`;
    const last = this.sql.one<{ reported: number; seq: number }>(`SELECT reported, seq FROM ${t} WHERE id = 1`) ?? {
      reported: 0,
      seq: 0,
    };
    const n = this.open(undefined, closing).length;
    if (n === last.reported) return;
    const seq = last.seq + 1;
    this.sql.exec(`INSERT OR REPLACE INTO ${t} (id, reported, seq) VALUES (1, ?, ?)`, n, seq);
    this.ctx.waitUntil(
      send(n, seq).catch(() => {
        // Not reported: the next change (or wake) sends the count again, unless a later report went out meanwhile.
        this.sql.exec(`UPDATE ${t} SET reported = -1 WHERE id = 1 AND seq = ?`, seq);
      }),
    );
  }

  // ---- the log -----------------------------------------------------------------------------

  append<K extends FeedEventType>(userId: string, type: K, data: FeedEvents[K]): Envelope<FeedEvents[K], K> & { seq: number } {
    const ts = Date.now();
    const t = this.opts.table;
    const row = this.sql.one<{ seq: number }>(
      `INSERT INTO ${t} (type, user_id, data, ts) VALUES (?, ?, ?, ?) RETURNING seq`,
      type,
      userId,
      JSON.stringify(data),
      ts,
    )!;
    if (row.seq % 100 === 0) this.sql.exec(`DELETE FROM ${t} WHERE seq <= ?`, row.seq - this.opts.limit);
    this.schedulePump();
    return { seq: row.seq, type, userId, data, timestamp: iso(ts) };
  }

  /** Appends once per `key` (for senders that deliver at least once). Returns the event's seq. */
  appendOnce<K extends FeedEventType>(key: string, userId: string, type: K, data: FeedEvents[K]): { seq: number; duplicate: boolean } {
    const t = this.opts.table;
    const seen = this.sql.one<{ seq: number }>(`SELECT seq FROM ${t}_keys WHERE key = ?`, key);
    if (seen) return { seq: seen.seq, duplicate: true };
    return this.sql.tx(() => {
      const e = this.append(userId, type, data);
      const ts = Date.parse(e.timestamp);
      this.sql.exec(`INSERT INTO ${t}_keys (key, seq, ts) VALUES (?, ?, ?)`, key, e.seq, ts);
      // Keys only need to outlive redelivery; a month is far beyond any retry.
      if (e.seq % 100 === 0) this.sql.exec(`DELETE FROM ${t}_keys WHERE ts < ?`, ts - 31 * 86_400_000);
      return { seq: e.seq, duplicate: false };
    });
  }

  /** The log after `since` (oldest first), optionally one user's events only. */
  history(since: number, limit: number, userId?: string): FeedHistory {
    const rows = this.rowsAfter(since, Math.min(limit, this.opts.limit), userId);
    const b = this.bounds();
    return { events: rows.map((r) => this.envelope(r)), oldestSeq: b.lo, lastSeq: b.hi };
  }

  private rowsAfter(since: number, limit: number, userId?: string): LogRow[] {
    const t = this.opts.table;
    return userId === undefined
      ? this.sql.all<LogRow>(`SELECT * FROM ${t} WHERE seq > ? ORDER BY seq LIMIT ?`, since, limit)
      : this.sql.all<LogRow>(`SELECT * FROM ${t} WHERE seq > ? AND user_id = ? ORDER BY seq LIMIT ?`, since, userId, limit);
  }

  private bounds(): { lo: number | null; hi: number } {
    const b = this.sql.one<{ lo: number | null; hi: number | null }>(`SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM ${this.opts.table}`)!;
    return { lo: b.lo, hi: b.hi ?? 0 };
  }

  private envelope(r: LogRow): Envelope & { seq: number } {
    return {
      seq: r.seq,
      type: r.type,
      userId: r.user_id,
      data: JSON.parse(r.data),
      timestamp: iso(r.ts),
    };
  }

  // ---- sockets ------------------------------------------------------------------------------

  /** Single use: true the first time a ticket's nonce is seen here. */
  redeem(nonce: string, expiresAt: number): boolean {
    const t = this.opts.table;
    const now = Date.now();
    if (expiresAt <= now) return false;
    this.sql.exec(`DELETE FROM ${t}_tickets WHERE expires_at <= ?`, now);
    const before = this.sql.one<{ n: number }>(`SELECT COUNT(*) AS n FROM ${t}_tickets WHERE nonce = ?`, nonce)!.n;
    if (before > 0) return false;
    this.sql.exec(`INSERT INTO ${t}_tickets (nonce, expires_at) VALUES (?, ?)`, nonce, expiresAt);
    return true;
  }

  /** The last steps of every feed's `fetch`: the ticket is used once, then the socket is accepted. */
  admit(f: FeedRequest, state?: unknown): Response {
    if (!this.redeem(f.nonce, f.ticketExpiresAt))
      return refuseSocket(
        CLOSE.unauthorized,
        "TICKET_USED",
        "This ticket was already used or has expired; get a new one from POST /ws/ticket.",
      );
    const watching = f.watching !== undefined && f.watching !== f.userId ? { watching: f.watching } : {};
    return this.accept({ userId: f.userId, role: f.role, feed: f.feed, ...watching, connectedAt: Date.now() }, f.since, state);
  }

  /** Open sockets (optionally one feed kind), without `except` (a socket that is closing). */
  open(feed?: FeedKind, except?: WebSocket): WebSocket[] {
    return this.ctx.getWebSockets(feed).filter((ws) => ws !== except && ws.readyState === WebSocket.OPEN);
  }

  /** Open sockets that `userId` opened themselves (not an admin watching them), without `except`. */
  openBy(userId: string, except?: WebSocket): WebSocket[] {
    return this.ctx.getWebSockets(`u:${userId}`).filter((ws) => ws !== except && ws.readyState === WebSocket.OPEN);
  }

  watcherOf(ws: WebSocket): Watcher | null {
    let w = this.watchers.get(ws);
    if (!w) {
      w = (ws.deserializeAttachment() as Watcher | null) ?? undefined;
      if (w) this.watchers.set(ws, w);
    }
    return w ?? null;
  }

  /**
   * Accepts a socket for `w`: hello, the events after `since` it may see, then live events.
   * Without `since` the socket is live from now on.
   */
  accept(w: Watcher, since: number | undefined, state?: unknown): Response {
    if (this.open(w.feed).length >= this.opts.maxSockets)
      return refuseSocket(
        CLOSE.rateLimited,
        "TOO_MANY_SOCKETS",
        `At most ${this.opts.maxSockets} sockets may be open on this feed; close one first.`,
      );
    // Everything already logged goes out to the existing sockets first, so `pumped` is the end of
    // the log; with none open, nothing is owed to anyone and `pumped` simply moves to the end.
    const existing = this.open().length;
    if (existing) this.pump();
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    this.ctx.acceptWebSocket(server, [w.feed, `u:${w.userId}`]);
    server.serializeAttachment(w);
    this.watchers.set(server, w);
    const { lo, hi } = this.bounds();
    if (!existing) this.pumped = hi;
    const from = since === undefined ? hi : Math.min(since, hi);
    const missed = lo !== null && from < lo - 1 ? { from: from + 1, to: lo - 1, count: lo - 1 - from } : null;
    const hello: HelloData = {
      feed: w.feed,
      since: from,
      replayThrough: hi,
      oldestSeq: lo,
      historyLimit: this.opts.limit,
      missed,
      ...(state === undefined ? {} : { state }),
    };
    server.send(JSON.stringify(control("feed.hello", subjectOf(w), hello)));
    if (from < hi) {
      const rows = this.rowsAfter(from, this.opts.limit + 100, seesAll(w) ? undefined : subjectOf(w));
      for (const r of rows) if (r.seq <= hi) server.send(JSON.stringify(this.envelope(r)));
    }
    this.reportSockets();
    return new Response(null, { status: 101, webSocket: client });
  }

  private schedulePump(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // After the current synchronous work (and its transaction) is over.
    queueMicrotask(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  /**
   * Sends every logged event after `pumped` to the open sockets that may see it. With no socket
   * open there is no one to send to (`accept` catches `pumped` up before the next socket joins).
   */
  pump(): void {
    const sockets = this.open();
    if (sockets.length === 0) return;
    const rows = this.rowsAfter(this.pumped, 10_000);
    if (rows.length === 0) return;
    for (const r of rows) {
      const e = this.envelope(r);
      const frame = JSON.stringify(e);
      for (const ws of sockets) {
        const w = this.watcherOf(ws);
        if (w && visible(e.userId, w)) send(ws, frame);
      }
      this.pumped = r.seq;
    }
  }

  /** Closes the sockets `pred` picks (e.g. a device feed's holder when the allocation ends). */
  closeWhere(pred: (w: Watcher) => boolean, code: number, reason: string): number {
    this.pump();
    let n = 0;
    for (const ws of this.open()) {
      const w = this.watcherOf(ws);
      if (w && pred(w)) {
        try {
          ws.close(code, reason);
          n++;
        } catch {
          /* already closing */
        }
      }
    }
    if (n) this.reportSockets();
    return n;
  }

  /** Hibernation handler: clients only send `ping` (answered by the runtime). */
  onMessage(ws: WebSocket, message: string | ArrayBuffer): void {
    if (message === PING) return send(ws, PONG);
    const now = Date.now();
    const s = this.strikes.get(ws) ?? { n: 0, since: now };
    if (now - s.since > 60_000) Object.assign(s, { n: 0, since: now });
    s.n += 1;
    this.strikes.set(ws, s);
    if (s.n > FEED.maxClientMessagesPerMinute) {
      ws.close(CLOSE.rateLimited, "too many messages");
      return;
    }
    const w = this.watcherOf(ws);
    send(
      ws,
      JSON.stringify(
        control("feed.error", w?.userId ?? "", {
          code: "UNSUPPORTED_MESSAGE",
          message: `The feed is server-to-client; send only "${PING}" to keep it alive.`,
        }),
      ),
    );
  }

  /** Hibernation handler: answers the client's close frame so it does not hang in CLOSING. */
  onClose(ws: WebSocket, code: number): void {
    try {
      ws.close(code === 1005 || code === 1006 || code === 1015 ? 1000 : code, "closed");
    } catch {
      /* already closed */
    }
    this.reportSockets(ws);
  }
}

function seesAll(w: Watcher): boolean {
  return w.role === "admin" && w.feed !== "user";
}

/** Whose events a socket that does not see all gets: its own, or the watched user's (admins only). */
function subjectOf(w: Watcher): string {
  return w.watching !== undefined && w.role === "admin" ? w.watching : w.userId;
}

/** The per-frame rule of invariant 6 (exported for its unit test). */
export function visible(eventUserId: string, w: Watcher): boolean {
  return seesAll(w) || eventUserId === subjectOf(w);
}

function send(ws: WebSocket, frame: string): void {
  try {
    ws.send(frame);
  } catch {
    /* closing: the client resumes from its last seq */
  }
}

function control<K extends "feed.hello" | "feed.error">(
  type: K,
  userId: string,
  data: K extends "feed.hello" ? HelloData : ErrorFrameData,
): Envelope {
  return { seq: null, type, userId, data, timestamp: iso(Date.now()) };
}

/** A socket that is closed at once with `code` after one `feed.error` frame (browsers see both). */
export function refuseSocket(code: number, errorCode: string, message: string): Response {
  const pair = new WebSocketPair();
  const [client, server] = [pair[0], pair[1]];
  server.accept();
  server.send(JSON.stringify(control("feed.error", "", { code: errorCode, message })));
  // Close reasons are limited to 123 bytes.
  server.close(code, errorCode.slice(0, 120));
  return new Response(null, { status: 101, webSocket: client });
}
