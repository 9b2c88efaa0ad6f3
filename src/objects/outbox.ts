/**
 * The one outbox: what an object must tell others about a change is written in the same
 * transaction as the change, and delivered until it is (the object's alarm retries). Devices
 * (to users, pools, the usage queue and the operators) and pools (to users and devices) use it.
 * A handler per kind delivers; receivers are idempotent, so a redelivery is harmless.
 */
import { log } from "../log";
import type { Sql } from "./sql";

/** The outbox table (in an object's first migration). `key` groups items a newer one replaces. */
export const OUTBOX_SCHEMA = `CREATE TABLE outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, key TEXT, payload TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL, last_error TEXT);
CREATE INDEX outbox_key ON outbox(key) WHERE key IS NOT NULL;`;

/** One item: its kind, what it carries, and (optional) the key under which a newer one replaces it. */
export type OutboxItem<M> = { [K in keyof M]: { kind: K; payload: M[K]; key?: string } }[keyof M];

export interface OutboxOptions<M> {
  /** Delay of a "not yet" and base of the backoff of a failure. */
  retryMs: number;
  /** One handler per kind: true when delivered, false to try again later without counting a failure. */
  deliver: { [K in keyof M]: (payload: M[K]) => Promise<boolean> };
  /** Failed deliveries are logged (as warnings, with these fields), then retried; absent: not logged. */
  logAs?: () => Record<string, unknown>;
}

export class Outbox<M extends object> {
  /** Something was added since the last delivery pass (so a path without its own pass starts one). */
  waiting = false;

  constructor(
    private readonly sql: Sql,
    private readonly opts: OutboxOptions<M>,
  ) {}

  /** Adds items (one statement); call inside the transaction of the change they report. */
  add(...items: OutboxItem<M>[]): void {
    if (items.length === 0) return;
    const at = Date.now();
    this.waiting = true;
    this.sql.exec(
      `INSERT INTO outbox (kind, key, payload, next_at) VALUES ${items.map(() => "(?, ?, ?, ?)").join(", ")}`,
      ...items.flatMap((item) => [item.kind, item.key ?? null, JSON.stringify(item.payload), at]),
    );
  }

  /** Takes out the items waiting under `key`, oldest first (the caller adds the newer one that replaces them). */
  supersede<K extends keyof M>(key: string): M[K][] {
    const rows = this.sql.all<{ id: number; payload: string }>("SELECT id, payload FROM outbox WHERE key = ? ORDER BY id", key);
    if (rows.length) this.sql.exec(`DELETE FROM outbox WHERE id IN (${rows.map(() => "?").join(",")})`, ...rows.map((r) => r.id));
    return rows.map((r) => JSON.parse(r.payload) as M[K]);
  }

  /** When the next item is due (null: empty). */
  nextAt(): number | null {
    return this.sql.one<{ t: number | null }>("SELECT MIN(next_at) AS t FROM outbox")?.t ?? null;
  }

  /** One delivery pass over the due items (see deliverOutbox). */
  flush(): Promise<void> {
    this.waiting = false;
    return deliverOutbox<{ id: number; kind: keyof M & string; payload: string; attempts: number }>(
      this.sql,
      "outbox",
      this.opts.retryMs,
      async (row) => {
        const item = { kind: row.kind, payload: JSON.parse(row.payload) } as OutboxItem<M>;
        try {
          return await (this.opts.deliver[item.kind] as (payload: unknown) => Promise<boolean>)(item.payload);
        } catch (err) {
          if (this.opts.logAs) {
            // The user and allocation an item is about, where it names them (directly or in its record).
            const p = item.payload as { record?: { userId?: string; allocationId?: string }; allocationId?: string; userId?: string };
            const about = { userId: p.record?.userId ?? p.userId, allocationId: p.record?.allocationId ?? p.allocationId };
            const error = String(err).slice(0, 300);
            log("warn", "outbox delivery failed", { ...about, ...this.opts.logAs(), kind: item.kind, attempts: row.attempts + 1, error });
          }
          throw err;
        }
      },
    );
  }
}

/**
 * One delivery pass over an object's outbox table (columns id, attempts, next_at, last_error):
 * the due rows (at most 100, oldest first) are delivered side by side, then all settled in one
 * synchronous turn (one commit). A row is deleted only once delivered; `false` from `deliver`
 * means "not yet" (tried again after `retryMs`, not counted as a failure); a failure backs off
 * (`retryMs` · 2^attempts, at most a minute). Receivers must be idempotent.
 */
export async function deliverOutbox<R extends { id: number; attempts: number }>(
  sql: Sql,
  table: string,
  retryMs: number,
  deliver: (row: R) => Promise<boolean>,
): Promise<void> {
  const due = sql.all<R>(`SELECT * FROM ${table} WHERE next_at <= ? ORDER BY id LIMIT 100`, Date.now());
  if (due.length === 0) return;
  const outcomes = await Promise.allSettled(due.map(deliver));
  const now = Date.now();
  const delivered = due
    .filter((_, i) => outcomes[i]!.status === "fulfilled" && (outcomes[i] as PromiseFulfilledResult<boolean>).value)
    .map((r) => r.id);
  sql.tx(() => {
    if (delivered.length) sql.exec(`DELETE FROM ${table} WHERE id IN (${delivered.map(() => "?").join(",")})`, ...delivered);
    due.forEach((row, i) => {
      const o = outcomes[i]!;
      if (o.status === "fulfilled" && o.value) return;
      if (o.status === "fulfilled") sql.exec(`UPDATE ${table} SET next_at = ? WHERE id = ?`, now + retryMs, row.id);
      else
        sql.exec(
          `UPDATE ${table} SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id = ?`,
          now + Math.min(60_000, retryMs * 2 ** Math.min(row.attempts, 5)),
          String(o.reason).slice(0, 500),
          row.id,
        );
    });
  });
}
