/**
 * Small typed helpers over Durable Object SQLite (raw SQL is the simplest hot path): queries,
 * transactions with rollback hooks, named migrations, and a row cached by the object that owns it.
 */
import { countSql } from "../meter";

type Row = Record<string, SqlStorageValue>;

/** One step of an object's schema: a name it is known by for ever, and its SQL. */
export interface Migration {
  name: string;
  sql: string;
}

export class Sql {
  private readonly rollbackHooks: (() => void)[] = [];

  constructor(private readonly storage: DurableObjectStorage) {}

  exec(query: string, ...args: unknown[]): void {
    countSql(this.storage, this.storage.sql.exec(query, ...(args as SqlStorageValue[])), query);
  }

  all<T = Row>(query: string, ...args: unknown[]): T[] {
    const cursor = this.storage.sql.exec(query, ...(args as SqlStorageValue[]));
    const rows = cursor.toArray() as unknown as T[];
    countSql(this.storage, cursor, query);
    return rows;
  }

  one<T = Row>(query: string, ...args: unknown[]): T | null {
    const rows = this.all<T>(query, ...args);
    return rows[0] ?? null;
  }

  /**
   * Applies the migrations not applied yet, in their order, all in one transaction (a failing
   * one leaves the schema as it was). Each is recorded by name, so a list only ever grows at
   * its end and a name is never reused. (Object SQLite refuses `PRAGMA user_version`.)
   */
  migrate(migrations: readonly Migration[]): void {
    this.storage.transactionSync(() => {
      // Storage made before migrations had names (a local dev state of that time) is not upgraded.
      if (this.one("SELECT 1 AS x FROM sqlite_master WHERE name = '_schema'"))
        throw new Error("This object's storage predates named migrations: delete the local state (.wrangler/state) and start again.");
      this.storage.sql.exec("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)");
      const applied = new Set(this.all<{ name: string }>("SELECT name FROM _migrations").map((r) => r.name));
      for (const m of migrations) {
        if (applied.has(m.name)) continue;
        this.storage.sql.exec(m.sql);
        this.exec("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", m.name, Date.now());
      }
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
