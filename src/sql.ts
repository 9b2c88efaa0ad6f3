/** Small typed helpers over Durable Object SQLite (raw SQL is the simplest hot path). */
type Row = Record<string, SqlStorageValue>;

export class Sql {
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

  tx<T>(fn: () => T): T {
    return this.storage.transactionSync(fn);
  }
}

/** Sets the object's single alarm to `at` unless an earlier one is already due. */
export async function armAlarm(storage: DurableObjectStorage, at: number | null): Promise<void> {
  if (at === null) return;
  const current = await storage.getAlarm();
  if (current === null || at < current) await storage.setAlarm(at);
}
