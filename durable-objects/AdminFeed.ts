/**
 * AdminFeed: the operators' feed (one object, named "operators"). It is not on the
 * allocation path: it only logs operator events (low balances, failed billing, devices
 * leaving service, reconciliation differences) and holds admins' sockets. Senders deliver
 * at least once with a key; each event shows once.
 */
import { DurableObject } from "cloudflare:workers";
import { FEED, type Env } from "../src/config";
import { FeedHub, feedRequestOf, feedSchema, refuseSocket } from "../src/feed/hub";
import { CLOSE, type Envelope, type FeedEvents, type FeedEventType } from "../src/feed/protocol";
import { Sql } from "../src/sql";

export const ADMIN_FEED_NAME = "operators";

const SCHEMA = [feedSchema("events")];

export class AdminFeed extends DurableObject<Env> {
  private readonly sql: Sql;
  private readonly hub: FeedHub;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = new Sql(ctx.storage);
    this.hub = new FeedHub(ctx, this.sql, { table: "events", limit: FEED.historyLimit, maxSockets: FEED.maxAdminSockets });
    ctx.blockConcurrencyWhile(async () => {
      this.sql.migrate(SCHEMA);
      this.hub.start();
    });
  }

  /** An operator event about `userId` ("" for fleet events), once per `key`. */
  async publish<K extends FeedEventType>(key: string, type: K, userId: string, data: FeedEvents[K]): Promise<{ seq: number; duplicate: boolean }> {
    return this.hub.appendOnce(key, userId, type, data);
  }

  async events(since = 0, limit = 100): Promise<{ events: Envelope[]; oldestSeq: number | null; lastSeq: number }> {
    return this.hub.history(since, limit);
  }

  override async fetch(request: Request): Promise<Response> {
    const f = feedRequestOf(request);
    if (f instanceof Response) return f;
    if (f.feed !== "admin" || f.role !== "admin") return refuseSocket(CLOSE.forbidden, "FORBIDDEN", "The admin feed needs the admin role.");
    return this.hub.admit(f);
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    this.hub.onMessage(ws, message);
  }

  override async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    this.hub.onClose(ws, code);
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    this.hub.onClose(ws, 1011);
  }
}
