/** StatusNoteStore (src/stores/device-status-note.ts) over SQLite in Node: the reason kept, a drain set, done and replaced. */
import { describe, expect, it } from "vitest";
import { Sql } from "../../src/objects/sql";
import { STATUS_NOTE_SCHEMA, StatusNoteStore, statusView } from "../../src/stores/device-status-note";
import { memoryStorage } from "./storage";

const T0 = Date.UTC(2030, 0, 1);

function setup() {
  const sql = new Sql(memoryStorage() as unknown as DurableObjectStorage);
  sql.migrate([{ name: "3", sql: STATUS_NOTE_SCHEMA }]);
  return new StatusNoteStore(sql);
}

describe("StatusNoteStore", () => {
  it("no note at first; a change keeps its reason; a drain waits, is done (reason kept) or replaced", () => {
    const notes = setup();
    expect(notes.get()).toBeNull();
    expect(statusView(notes.get())).toEqual({ statusReason: null, statusSince: null, drain: null });
    notes.changed("power", T0);
    expect(notes.get()).toEqual({ reason: "power", since: T0, drain: null });
    notes.draining("maintenance", "battery", T0 + 60_000, T0 + 1);
    expect(notes.drain()).toEqual({ status: "maintenance", deadline: T0 + 60_000 });
    expect(statusView(notes.get())).toEqual({
      statusReason: "battery",
      statusSince: new Date(T0 + 1).toISOString(),
      drain: { status: "maintenance", deadline: new Date(T0 + 60_000).toISOString() },
    });
    notes.drained(T0 + 2);
    expect(notes.get()).toEqual({ reason: "battery", since: T0 + 2, drain: null });
    notes.draining("offline", null, T0 + 5, T0 + 3);
    notes.changed(null, T0 + 4); // e.g. online: the drain is over, no reason given
    expect(notes.get()).toEqual({ reason: null, since: T0 + 4, drain: null });
  });
});
