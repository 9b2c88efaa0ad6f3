/**
 * The part of a Durable Object's storage that the stores in src/sql.ts use (`sql.exec`,
 * `transactionSync`, the alarm), over an in-memory SQLite database from Node's node:sqlite, so
 * that store logic can be tested in Node in milliseconds. The Workers suites run the same stores
 * on real object storage; this is for the fast inner loop (npm run test:unit), not instead of it.
 */
import { DatabaseSync } from "node:sqlite";

type Value = ArrayBuffer | string | number | null;

export interface MemoryStorage {
  sql: {
    exec(query: string, ...bindings: Value[]): { toArray(): Record<string, Value>[]; one(): Record<string, Value> };
  };
  transactionSync<T>(fn: () => T): T;
  getAlarm(): Promise<number | null>;
  setAlarm(at: number): Promise<void>;
  deleteAlarm(): Promise<void>;
  /** The database itself, for a test's own checks. */
  db: DatabaseSync;
}

/** How many statements `query` holds (semicolons outside quotes, with something after them). */
function statements(query: string): number {
  let n = 0;
  let quote: string | null = null;
  let pending = false;
  for (const ch of query) {
    if (quote) {
      if (ch === quote) quote = null;
    } else if (ch === "'" || ch === '"' || ch === "`") quote = ch;
    else if (ch === ";") {
      if (pending) n++;
      pending = false;
      continue;
    }
    if (!/\s/.test(ch)) pending = true;
  }
  return n + (pending ? 1 : 0);
}

export function memoryStorage(): MemoryStorage {
  const db = new DatabaseSync(":memory:");
  let alarm: number | null = null;
  let depth = 0;
  return {
    db,
    sql: {
      exec(query, ...bindings) {
        // Object SQL runs several statements in one call (schema steps); node:sqlite's prepare
        // would silently run only the first, so those go to exec (which takes no bindings).
        let rows: Record<string, Value>[] = [];
        if (statements(query) > 1) {
          if (bindings.length > 0) throw new Error("bindings with several statements");
          db.exec(query);
        } else rows = db.prepare(query).all(...(bindings as never[])) as Record<string, Value>[];
        return {
          toArray: () => rows.map((r) => ({ ...r })),
          one: () => {
            if (rows.length !== 1) throw new Error(`expected exactly one row, got ${rows.length}`);
            return { ...rows[0]! };
          },
        };
      },
    },
    // Like the platform's: nested calls are savepoints, a throw rolls back to where the call began.
    transactionSync(fn) {
      const name = `tx${depth++}`;
      db.exec(`SAVEPOINT ${name}`);
      try {
        const out = fn();
        db.exec(`RELEASE ${name}`);
        return out;
      } catch (err) {
        db.exec(`ROLLBACK TO ${name}`);
        db.exec(`RELEASE ${name}`);
        throw err;
      } finally {
        depth--;
      }
    },
    getAlarm: async () => alarm,
    setAlarm: async (at) => {
      alarm = at;
    },
    deleteAlarm: async () => {
      alarm = null;
    },
  };
}
