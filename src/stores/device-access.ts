/**
 * How to reach a device (its node's endpoints, e.g. `adb`, `streamUrl`), registered by operators
 * or the device-service. A secret of sorts: only the device's current holder reads it, while the
 * allocation runs (Device.accessFor, the device feed's hello), and it is never logged.
 */
import type { Sql } from "../objects/sql";

/** Named endpoints: a small map of name → connection string. */
export type AccessMap = Record<string, string>;

/** Device migration 2. */
export const ACCESS_SCHEMA = `CREATE TABLE access (name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at INTEGER NOT NULL);`;

export class AccessStore {
  constructor(private readonly sql: Sql) {}

  /** The map is replaced whole (an empty map clears it), so a stale endpoint never lingers. */
  replace(access: AccessMap, now: number): void {
    this.sql.tx(() => {
      this.sql.exec("DELETE FROM access");
      for (const [name, value] of Object.entries(access))
        this.sql.exec("INSERT INTO access (name, value, updated_at) VALUES (?, ?, ?)", name, value, now);
    });
  }

  map(): AccessMap {
    return Object.fromEntries(
      this.sql.all<{ name: string; value: string }>("SELECT name, value FROM access ORDER BY name").map((r) => [r.name, r.value]),
    );
  }

  names(): string[] {
    return this.sql.all<{ name: string }>("SELECT name FROM access ORDER BY name").map((r) => r.name);
  }
}
