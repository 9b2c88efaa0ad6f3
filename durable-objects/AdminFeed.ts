/**
 * AdminFeed: the operators' object (one, named "operators"). It is not on the allocation
 * path: it logs operator events (low balances, failed billing, devices leaving service,
 * reconciliation differences) and holds admins' sockets; senders deliver at least once with
 * a key, and each event shows once. It also keeps the open socket count each feed-holding
 * object last reported, which the metrics endpoint sums (`sockets open`).
 */
import { FEED } from "../src/config";
import type { Env } from "../src/env";
import { FeedHub, feedLeanLog, feedSchema, refuseSocket, type FeedHistory, type FeedRequest } from "../src/objects/feed";
import { CLOSE, type FeedEvents, type FeedEventType, type FeedKind } from "../src/feed/protocol";
import { ServiceObject } from "../src/objects/base";

const MIGRATIONS = [
  {
    name: "1-feed-and-sockets",
    // The feed, and the open sockets per feed-holding object (its id), as last reported.
    sql: `${feedSchema("events")}
      CREATE TABLE sockets (object TEXT PRIMARY KEY, feed TEXT NOT NULL, open INTEGER NOT NULL, seq INTEGER NOT NULL,
        reported_at INTEGER NOT NULL);`,
  },
  { name: "2-lean-feed-log", sql: feedLeanLog("events") },
];

export class AdminFeed extends ServiceObject {
  protected readonly hub: FeedHub;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.hub = new FeedHub(ctx, this.sql, {
      table: "events",
      limit: FEED.historyLimit,
      maxSockets: FEED.maxAdminSockets,
      onSockets: async (open, seq) => this.socketsOpen(ctx.id.toString(), "admin", open, seq),
    });
    this.start(MIGRATIONS);
  }

  /** An operator event about `userId` ("" for fleet events), once per `key`. */
  async publish<K extends FeedEventType>(
    key: string,
    type: K,
    userId: string,
    data: FeedEvents[K],
  ): Promise<{ seq: number; duplicate: boolean }> {
    return this.hub.appendOnce(key, userId, type, data);
  }

  async events(since = 0, limit = 100): Promise<FeedHistory> {
    return this.hub.history(since, limit);
  }

  /** An object's open socket count: a report replaces an older one (by `seq`), never a newer one that came first. */
  async socketsOpen(object: string, feed: FeedKind, open: number, seq: number): Promise<void> {
    this.sql.exec(
      `INSERT INTO sockets (object, feed, open, seq, reported_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT(object) DO UPDATE SET feed = excluded.feed, open = excluded.open, seq = excluded.seq, reported_at = excluded.reported_at
       WHERE excluded.seq > sockets.seq`,
      object,
      feed,
      Math.max(0, open),
      seq,
      Date.now(),
    );
  }

  /** Open sockets by feed kind, summed over the objects' last reports. */
  async socketCounts(): Promise<Record<string, number>> {
    // Rows at 0 are kept a day (a late, older report must still lose to them), then dropped.
    this.sql.exec("DELETE FROM sockets WHERE open = 0 AND reported_at < ?", Date.now() - 86_400_000);
    const rows = this.sql.all<{ feed: string; n: number }>("SELECT feed, SUM(open) AS n FROM sockets GROUP BY feed");
    return Object.fromEntries(rows.map((r) => [r.feed, r.n]));
  }

  protected openFeed(f: FeedRequest): Response {
    if (f.feed !== "admin" || f.role !== "admin") return refuseSocket(CLOSE.forbidden, "FORBIDDEN", "The admin feed needs the admin role.");
    return this.hub.admit(f);
  }
}
