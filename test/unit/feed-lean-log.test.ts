/**
 * The lean feed log (src/objects/feed.ts `feedLeanLog`, each feed's later migration): the events
 * and keys it had are kept, seqs go on from the last one (no AUTOINCREMENT: the newest is never
 * pruned), and it has no index but its key.
 */
import { describe, expect, it } from "vitest";
import { feedLeanLog, feedSchema } from "../../src/objects/feed";
import { Sql } from "../../src/objects/sql";
import { memoryStorage } from "./storage";

describe("the lean feed log", () => {
  it("keeps the log and its keys, goes on from the last seq after a prune, and has only its keys' indexes", () => {
    const sql = new Sql(memoryStorage() as unknown as DurableObjectStorage);
    sql.migrate([{ name: "1", sql: feedSchema("events") }]);
    for (let i = 0; i < 5; i++) sql.exec("INSERT INTO events (type, user_id, data, ts) VALUES ('t', 'u', '{}', ?)", i);
    sql.exec("INSERT INTO events_keys (key, seq, ts) VALUES ('k', 5, 1)");
    // Pruned from the oldest end, as the hub does.
    sql.exec("DELETE FROM events WHERE seq <= 3");
    sql.migrate([
      { name: "1", sql: feedSchema("events") },
      { name: "2", sql: feedLeanLog("events") },
    ]);
    expect(sql.all("SELECT seq FROM events ORDER BY seq")).toEqual([{ seq: 4 }, { seq: 5 }]);
    expect(sql.one("SELECT key, seq FROM events_keys")).toEqual({ key: "k", seq: 5 });
    const next = sql.one<{ seq: number }>("INSERT INTO events (type, user_id, data, ts) VALUES ('t', 'u', '{}', 9) RETURNING seq");
    expect(next?.seq).toBe(6);
    const indexes = sql.all<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name LIKE 'events%'");
    expect(indexes.map((i) => i.name).filter((n) => !n.startsWith("sqlite_autoindex"))).toEqual([]);
  });
});
