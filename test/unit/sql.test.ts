/**
 * The storage helpers of src/objects/ (sql.ts, outbox.ts, clock.ts) over SQLite in Node (test/unit/storage.ts): schema steps, transactions
 * and their rollback hooks, the cached row, one outbox delivery pass, the alarm clock. The same
 * code runs on real object storage in every Workers suite.
 */
import { describe, expect, it } from "vitest";
import { AlarmClock } from "../../src/objects/clock";
import { deliverOutbox } from "../../src/objects/outbox";
import { CachedRow, Sql } from "../../src/objects/sql";
import { memoryStorage, type MemoryStorage } from "./storage";

const sqlOver = (storage: MemoryStorage) => new Sql(storage as unknown as DurableObjectStorage);

describe("Sql.migrate", () => {
  const names = (storage: MemoryStorage) =>
    (storage.db.prepare("SELECT name FROM _migrations ORDER BY name").all() as { name: string }[]).map((r) => r.name);

  it("applies each named migration once, in order, and only the new ones after an upgrade", () => {
    const storage = memoryStorage();
    const steps = [
      { name: "1-tables", sql: "CREATE TABLE a (x INTEGER); CREATE TABLE b (y TEXT)" },
      { name: "2-column", sql: "ALTER TABLE a ADD COLUMN z INTEGER" },
    ];
    sqlOver(storage).migrate(steps);
    sqlOver(storage).migrate(steps); // a restart: nothing runs again (a second CREATE TABLE would throw)
    const tables = (
      storage.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as {
        name: string;
      }[]
    ).map((t) => t.name);
    expect(tables).toEqual(["_migrations", "a", "b"]);
    expect(names(storage)).toEqual(["1-tables", "2-column"]);
    sqlOver(storage).migrate([...steps, { name: "3-table", sql: "CREATE TABLE c (w INTEGER)" }]);
    expect(names(storage)).toEqual(["1-tables", "2-column", "3-table"]);
    expect(storage.db.prepare("SELECT name FROM sqlite_master WHERE name = 'c'").get()).toEqual({ name: "c" });
  });

  it("storage made before migrations had names is refused with a clear error, not half-upgraded", () => {
    const storage = memoryStorage();
    storage.db.exec("CREATE TABLE _schema (id INTEGER PRIMARY KEY, version INTEGER NOT NULL); CREATE TABLE a (x INTEGER)");
    expect(() => sqlOver(storage).migrate([{ name: "1-a", sql: "CREATE TABLE a (x INTEGER)" }])).toThrow(/delete the local state/);
    expect(storage.db.prepare("SELECT name FROM sqlite_master WHERE name = '_migrations'").get()).toBeUndefined();
  });

  it("a failing migration leaves the schema and the applied names as they were", () => {
    const storage = memoryStorage();
    sqlOver(storage).migrate([{ name: "1-a", sql: "CREATE TABLE a (x INTEGER)" }]);
    expect(() =>
      sqlOver(storage).migrate([
        { name: "1-a", sql: "CREATE TABLE a (x INTEGER)" },
        { name: "2-b", sql: "CREATE TABLE b (y INTEGER)" },
        { name: "3-a-again", sql: "CREATE TABLE a (again INTEGER)" },
      ]),
    ).toThrow();
    expect(names(storage)).toEqual(["1-a"]);
    expect(storage.db.prepare("SELECT name FROM sqlite_master WHERE name = 'b'").get()).toBeUndefined();
  });
});

describe("Sql.tx and CachedRow", () => {
  const setup = () => {
    const storage = memoryStorage();
    const sql = sqlOver(storage);
    sql.migrate([
      { name: "1-profile", sql: "CREATE TABLE profile (id INTEGER PRIMARY KEY, plan TEXT NOT NULL)" },
      { name: "2-row", sql: "INSERT INTO profile VALUES (1, 'free')" },
    ]);
    return { sql, row: new CachedRow<{ plan: string }>(sql, "SELECT plan FROM profile WHERE id = 1") };
  };

  it("a transaction that throws writes nothing and runs the rollback hooks", () => {
    const { sql } = setup();
    let rolledBack = 0;
    sql.onRollback(() => rolledBack++);
    expect(() =>
      sql.tx(() => {
        sql.exec("UPDATE profile SET plan = 'pro' WHERE id = 1");
        throw new Error("refused");
      }),
    ).toThrow("refused");
    expect(sql.one("SELECT plan FROM profile WHERE id = 1")).toEqual({ plan: "free" });
    expect(rolledBack).toBe(1);
    expect(sql.tx(() => (sql.exec("UPDATE profile SET plan = 'pro' WHERE id = 1"), 7))).toBe(7);
    expect(sql.one("SELECT plan FROM profile WHERE id = 1")).toEqual({ plan: "pro" });
    expect(rolledBack).toBe(1);
  });

  it("the cached row is read once, read again after its own write and after a rollback", () => {
    const { sql, row } = setup();
    expect(row.get()).toEqual({ plan: "free" });
    // Written behind the cache's back: the cache keeps what it read (only the object writes its row).
    sql.exec("UPDATE profile SET plan = 'basic' WHERE id = 1");
    expect(row.get()).toEqual({ plan: "free" });
    row.write("UPDATE profile SET plan = 'pro' WHERE id = 1");
    expect(row.get()).toEqual({ plan: "pro" });
    // A row read inside a transaction that rolls back may never have been: forgotten.
    expect(() =>
      sql.tx(() => {
        row.write("UPDATE profile SET plan = 'enterprise' WHERE id = 1");
        expect(row.get()).toEqual({ plan: "enterprise" });
        throw new Error("abort");
      }),
    ).toThrow("abort");
    expect(row.get()).toEqual({ plan: "pro" });
  });
});

describe("deliverOutbox", () => {
  const outbox = () => {
    const storage = memoryStorage();
    const sql = sqlOver(storage);
    sql.migrate([
      {
        name: "1-outbox",
        sql:
          "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, payload TEXT NOT NULL, " +
          "attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL, last_error TEXT)",
      },
    ]);
    const add = (payload: string, nextAt = 0, attempts = 0) =>
      sql.exec("INSERT INTO outbox (payload, next_at, attempts) VALUES (?, ?, ?)", payload, nextAt, attempts);
    const rows = () =>
      sql.all<{ id: number; payload: string; attempts: number; next_at: number; last_error: string | null }>(
        "SELECT * FROM outbox ORDER BY id",
      );
    return { sql, add, rows };
  };
  type Row = { id: number; payload: string; attempts: number };

  it("deletes what was delivered, delays what is not ready yet, and backs off what failed", async () => {
    const { sql, add, rows } = outbox();
    add("ok");
    add("later");
    add("boom");
    add("boom-again", 0, 9);
    add("not-due", Date.now() + 60_000);
    const seen: string[] = [];
    const before = Date.now();
    await deliverOutbox<Row>(sql, "outbox", 1_000, async (r) => {
      seen.push(r.payload);
      if (r.payload.startsWith("boom")) throw new Error(`no ${r.payload}`);
      return r.payload === "ok";
    });
    expect(seen).toEqual(["ok", "later", "boom", "boom-again"]);
    const left = rows();
    expect(left.map((r) => r.payload)).toEqual(["later", "boom", "boom-again", "not-due"]);
    const [later, boom, again] = left;
    // Not ready: tried again after the retry time, not counted as a failure.
    expect(later).toMatchObject({ attempts: 0, last_error: null });
    expect(later!.next_at - before).toBeGreaterThanOrEqual(1_000);
    expect(later!.next_at - before).toBeLessThan(2_000);
    // Failed: counted, with its error, backing off 1 s · 2^attempts, at most a minute.
    expect(boom).toMatchObject({ attempts: 1, last_error: "Error: no boom" });
    expect(boom!.next_at - before).toBeGreaterThanOrEqual(1_000);
    expect(again).toMatchObject({ attempts: 10, last_error: "Error: no boom-again" });
    expect(again!.next_at - before).toBeGreaterThanOrEqual(32_000);
    expect(again!.next_at - before).toBeLessThanOrEqual(60_000 + 1_000);
  });

  it("takes at most 100 due rows a pass, oldest first", async () => {
    const { sql, add, rows } = outbox();
    for (let i = 0; i < 130; i++) add(`m${i}`);
    const seen: string[] = [];
    await deliverOutbox<Row>(sql, "outbox", 1_000, async (r) => (seen.push(r.payload), true));
    expect(seen).toEqual(Array.from({ length: 100 }, (_, i) => `m${i}`));
    expect(rows().map((r) => r.payload)).toEqual(Array.from({ length: 30 }, (_, i) => `m${i + 100}`));
  });
});

describe("AlarmClock", () => {
  it("arms the earliest time only, and forgets the alarm that fired", async () => {
    const storage = memoryStorage();
    const clock = new AlarmClock(storage as unknown as DurableObjectStorage);
    await clock.load();
    expect(clock.at).toBeNull();
    await clock.arm(5_000);
    await clock.arm(9_000);
    await clock.arm(null);
    expect(await storage.getAlarm()).toBe(5_000);
    await clock.arm(3_000);
    expect([clock.at, await storage.getAlarm()]).toEqual([3_000, 3_000]);
    clock.fired();
    await clock.arm(9_000);
    expect(await storage.getAlarm()).toBe(9_000);
  });
});
