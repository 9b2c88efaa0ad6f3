/** Small typed helpers over Durable Object SQLite (raw SQL is the simplest hot path). */
type Row = Record<string, SqlStorageValue>;

export class Sql {
  private readonly rollbackHooks: (() => void)[] = [];

  constructor(private readonly storage: DurableObjectStorage) {}

  exec(query: string, ...args: unknown[]): void {
    this.storage.sql.exec(query, ...(args as SqlStorageValue[]));
  }

  all<T = Row>(query: string, ...args: unknown[]): T[] {
    return this.storage.sql.exec(query, ...(args as SqlStorageValue[])).toArray() as unknown as T[];
  }

  one<T = Row>(query: string, ...args: unknown[]): T | null {
    const rows = this.all<T>(query, ...args);
    return rows[0] ?? null;
  }

  /**
   * Applies schema steps newer than the stored version, in one transaction.
   * (Object SQLite refuses `PRAGMA user_version`, so the version lives in a table.)
   */
  migrate(steps: string[]): void {
    this.storage.transactionSync(() => {
      this.storage.sql.exec("CREATE TABLE IF NOT EXISTS _schema (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)");
      const version = this.one<{ version: number }>("SELECT version FROM _schema WHERE id = 1")?.version ?? 0;
      for (let v = version; v < steps.length; v++) this.storage.sql.exec(steps[v]!);
      if (version < steps.length) this.storage.sql.exec("INSERT OR REPLACE INTO _schema (id, version) VALUES (1, ?)", steps.length);
    });
  }

  /** Runs `fn` when a transaction of this object rolls back (objects clear what they cache of a row). */
  onRollback(fn: () => void): void {
    this.rollbackHooks.push(fn);
  }

  tx<T>(fn: () => T): T {
    try {
      return this.storage.transactionSync(fn);
    } catch (err) {
      for (const hook of this.rollbackHooks) hook();
      throw err;
    }
  }
}

/**
 * One row that only its own object writes (a profile, a device, a pool's settings): read once
 * and kept until the object writes it through `write`, or until a transaction of the object
 * rolls back (a row read inside it may be one that never was).
 */
export class CachedRow<T> {
  private row: T | null | undefined = undefined;

  constructor(
    private readonly sql: Sql,
    private readonly query: string,
  ) {
    sql.onRollback(() => (this.row = undefined));
  }

  get(): T | null {
    if (this.row === undefined) this.row = this.sql.one<T>(this.query);
    return this.row;
  }

  /** Writes the row; the next `get` reads it again. */
  write(query: string, ...args: unknown[]): void {
    this.row = undefined;
    this.sql.exec(query, ...args);
  }
}

/**
 * The object's one alarm, with its time kept in memory. Here an alarm write costs about as much
 * as a storage commit, and an awaited `getAlarm()` between a write and `setAlarm()` splits one
 * commit into two; so the time is read once per instance (`load()`, in the constructor) and the
 * alarm is only ever moved earlier. An alarm that fires early finds nothing due and re-arms.
 */
export class AlarmClock {
  /** undefined: not read yet; null: no alarm. */
  private known: number | null | undefined = undefined;

  constructor(private readonly storage: DurableObjectStorage) {}

  /** Reads the stored alarm (call inside blockConcurrencyWhile, so arm() never has to await a read). */
  async load(): Promise<void> {
    this.known = await this.storage.getAlarm();
  }

  /** Call first thing in alarm(): the alarm that fired is gone unless the handler sets a new one. */
  fired(): void {
    this.known = null;
  }

  /** The alarm time as this instance knows it (null: none; undefined: unknown). */
  get at(): number | null | undefined {
    return this.known;
  }

  /** Sets the alarm to `at` unless one at or before `at` is already set. */
  async arm(at: number | null): Promise<void> {
    if (at === null) return;
    if (this.known === undefined) this.known = await this.storage.getAlarm();
    if (this.known !== null && this.known <= at) return;
    this.known = at;
    await this.storage.setAlarm(at);
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
