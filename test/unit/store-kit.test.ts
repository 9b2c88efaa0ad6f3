/**
 * The object kit of src/objects/ over SQLite in Node (test/unit/storage.ts): the Outbox (add, supersede by key, nextAt,
 * flush with a handler per kind and its backoff) and the Schedule (due tasks in order, the re-arm after an alarm, earliest).
 * Time is Date only (fake), so every promise still settles as usual.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { AlarmClock } from "../../src/objects/clock";
import { OUTBOX_SCHEMA, Outbox, type OutboxOptions } from "../../src/objects/outbox";
import { Schedule, earliest, type Task } from "../../src/objects/schedule";
import { Sql } from "../../src/objects/sql";
import { memoryStorage } from "./storage";

const T0 = Date.UTC(2030, 0, 1);

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(T0);
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

type Kinds = { note: { userId: string; n: number }; ping: { record: { userId: string; allocationId: string } } };
type Row = { id: number; kind: string; key: string | null; payload: string; attempts: number; next_at: number; last_error: string | null };

function setup(deliver: Partial<OutboxOptions<Kinds>["deliver"]> = {}, logAs?: () => Record<string, unknown>) {
  const storage = memoryStorage();
  const sql = new Sql(storage as unknown as DurableObjectStorage);
  sql.migrate([{ name: "1", sql: OUTBOX_SCHEMA }]);
  const outbox = new Outbox<Kinds>(sql, {
    retryMs: 1_000,
    deliver: { note: async () => true, ping: async () => true, ...deliver },
    ...(logAs ? { logAs } : {}),
  });
  const rows = () => sql.all<Row>("SELECT * FROM outbox ORDER BY id");
  return { storage, sql, outbox, rows };
}

describe("Outbox.add and supersede", () => {
  it("adds several items in one call, each with its kind, key and JSON payload, due now", () => {
    const { outbox, rows } = setup();
    expect(outbox.waiting).toBe(false);
    outbox.add();
    expect([outbox.waiting, rows()]).toEqual([false, []]);
    outbox.add(
      { kind: "note", payload: { userId: "u1", n: 1 }, key: "k" },
      { kind: "ping", payload: { record: { userId: "u2", allocationId: "a" } } },
    );
    expect(outbox.waiting).toBe(true);
    expect(
      rows().map(({ kind, key, payload, attempts, next_at }) => ({ kind, key, payload: JSON.parse(payload), attempts, next_at })),
    ).toEqual([
      { kind: "note", key: "k", payload: { userId: "u1", n: 1 }, attempts: 0, next_at: T0 },
      { kind: "ping", key: null, payload: { record: { userId: "u2", allocationId: "a" } }, attempts: 0, next_at: T0 },
    ]);
  });

  it("supersede takes out only the items under that key, oldest first", () => {
    const { outbox, rows } = setup();
    outbox.add({ kind: "note", payload: { userId: "u", n: 1 }, key: "a" });
    outbox.add({ kind: "note", payload: { userId: "u", n: 2 }, key: "b" });
    outbox.add({ kind: "note", payload: { userId: "u", n: 3 }, key: "a" });
    outbox.add({ kind: "note", payload: { userId: "u", n: 4 } });
    expect(outbox.supersede<"note">("a").map((p) => p.n)).toEqual([1, 3]);
    expect(outbox.supersede("a")).toEqual([]);
    expect(outbox.supersede("nope")).toEqual([]);
    expect(rows().map((r) => JSON.parse(r.payload).n)).toEqual([2, 4]);
  });

  it("nextAt is null when empty, else the earliest next_at", async () => {
    const { outbox } = setup({ note: async () => false });
    expect(outbox.nextAt()).toBeNull();
    outbox.add({ kind: "note", payload: { userId: "u", n: 1 } });
    expect(outbox.nextAt()).toBe(T0);
    await outbox.flush();
    expect(outbox.nextAt()).toBe(T0 + 1_000);
    vi.setSystemTime(T0 + 500);
    outbox.add({ kind: "ping", payload: { record: { userId: "u", allocationId: "a" } } });
    expect(outbox.nextAt()).toBe(T0 + 500);
  });
});

describe("Outbox.flush", () => {
  it("hands each item to its kind's handler with the parsed payload and deletes what was delivered", async () => {
    const notes: number[] = [];
    const pings: string[] = [];
    const { outbox, rows } = setup({
      note: async (p) => (notes.push(p.n), true),
      ping: async (p) => (pings.push(p.record.allocationId), true),
    });
    outbox.add(
      { kind: "note", payload: { userId: "u", n: 7 } },
      { kind: "ping", payload: { record: { userId: "u", allocationId: "a9" } } },
    );
    await outbox.flush();
    expect([notes, pings, rows()]).toEqual([[7], ["a9"], []]);
    expect(outbox.waiting).toBe(false);
  });

  it("'not yet' waits retryMs without counting; a failure counts, backs off and is logged with whom it is about", async () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    let failures = 0;
    const { outbox, rows } = setup(
      {
        note: async () => false,
        ping: async () => {
          failures++;
          throw new Error("down");
        },
      },
      () => ({ pool: "p1" }),
    );
    outbox.add(
      { kind: "note", payload: { userId: "u", n: 1 } },
      { kind: "ping", payload: { record: { userId: "u7", allocationId: "a7" } } },
    );
    await outbox.flush();
    const [note, ping] = rows();
    expect(note).toMatchObject({ attempts: 0, next_at: T0 + 1_000, last_error: null });
    expect(ping).toMatchObject({ attempts: 1, next_at: T0 + 1_000, last_error: "Error: down" });
    expect(warn).toHaveBeenCalledTimes(1);
    const line = JSON.parse(String(warn.mock.calls[0]![0]));
    expect(line).toMatchObject({ level: "warn", userId: "u7", allocationId: "a7", pool: "p1", kind: "ping", attempts: 1 });

    // Not due yet: nothing is tried.
    await outbox.flush();
    expect(failures).toBe(1);
    // Due again: the second failure waits twice as long (1 s · 2^1).
    vi.setSystemTime(T0 + 1_000);
    await outbox.flush();
    expect(failures).toBe(2);
    expect(rows()[1]).toMatchObject({ attempts: 2, next_at: T0 + 1_000 + 2_000 });
  });

  it("a failure without logAs is not logged, and an item delivered on a later pass is gone", async () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    let up = false;
    const { outbox, rows } = setup({
      note: async () => {
        if (!up) throw new Error("later");
        return true;
      },
    });
    outbox.add({ kind: "note", payload: { userId: "u", n: 1 } });
    await outbox.flush();
    expect(warn).not.toHaveBeenCalled();
    expect(rows()).toHaveLength(1);
    up = true;
    vi.setSystemTime(T0 + 1_000);
    await outbox.flush();
    expect(rows()).toEqual([]);
    expect(outbox.nextAt()).toBeNull();
  });
});

describe("Schedule", () => {
  const clockOver = async () => {
    const storage = memoryStorage();
    const clock = new AlarmClock(storage as unknown as DurableObjectStorage);
    await clock.load();
    return { storage, clock };
  };

  it("runDue runs the due tasks in order, reading each one's time again after the one before ran", async () => {
    const { clock } = await clockOver();
    const ran: string[] = [];
    let bDue: number | null = null;
    const a: Task = {
      due: () => T0 - 1,
      run: (now) => {
        ran.push(`a@${now}`);
        bDue = now;
      },
    };
    const b: Task = { due: () => bDue, run: () => void ran.push("b") };
    const later: Task = { due: () => T0 + 1, run: () => void ran.push("later") };
    const none: Task = { due: () => null, run: () => void ran.push("none") };
    const noRun: Task = { due: () => T0 - 5 };
    await new Schedule(clock, [a, b, later, none, noRun]).runDue();
    expect(ran).toEqual([`a@${T0}`, "b"]);
    // In the other order b is read before a makes it due.
    ran.length = 0;
    bDue = null;
    await new Schedule(clock, [b, a]).runDue();
    expect(ran).toEqual([`a@${T0}`]);
  });

  it("awaits each task before the next one is read", async () => {
    const { clock } = await clockOver();
    const ran: string[] = [];
    let secondDue: number | null = null;
    const first: Task = {
      due: () => T0,
      run: async () => {
        await Promise.resolve();
        ran.push("first");
        secondDue = T0;
      },
    };
    await new Schedule(clock, [first, { due: () => secondDue, run: () => void ran.push("second") }]).runDue();
    expect(ran).toEqual(["first", "second"]);
  });

  it("after an alarm, a time still due is retried retryMs later; an earlier future time or outbox item wins", async () => {
    const { storage, clock } = await clockOver();
    const stuck: Task = { due: () => T0 - 10_000, run: () => {} }; // its work failed: still due
    let outboxAt: number | null = T0 + 3_000;
    let flushed = 0;
    const outbox = { nextAt: () => outboxAt, flush: async () => void flushed++ };
    const dueNow: Task = { due: () => T0 }; // due as the alarm ends: retried too
    const schedule = new Schedule(clock, [stuck, dueNow], { outbox, retryMs: 5_000 });
    clock.fired();
    await schedule.alarm();
    expect(flushed).toBe(1);
    expect(await storage.getAlarm()).toBe(T0 + 3_000);
    clock.fired();
    outboxAt = null;
    await schedule.alarm();
    expect(await storage.getAlarm()).toBe(T0 + 5_000);
    // The same times outside an alarm (set-up after a restart): the due time itself, at once.
    clock.fired();
    await schedule.rearm();
    expect(await storage.getAlarm()).toBe(T0 - 10_000);
  });

  it("rearm only moves the alarm earlier, arms nothing when nothing is due, and without retryMs re-arms a due time as is", async () => {
    const { storage, clock } = await clockOver();
    let at: number | null = T0 + 60_000;
    const schedule = new Schedule(clock, [{ due: () => at }]);
    await schedule.rearm();
    expect(await storage.getAlarm()).toBe(T0 + 60_000);
    at = T0 + 90_000;
    await schedule.rearm();
    expect(await storage.getAlarm()).toBe(T0 + 60_000);
    at = T0 + 30_000;
    await schedule.rearm();
    expect(await storage.getAlarm()).toBe(T0 + 30_000);
    clock.fired();
    await storage.deleteAlarm();
    at = null;
    await schedule.rearm(true);
    expect(await storage.getAlarm()).toBeNull();
    at = T0 - 1;
    await schedule.alarm();
    expect(await storage.getAlarm()).toBe(T0 - 1);
  });

  it("earliest ignores null and undefined", () => {
    expect(earliest()).toBeNull();
    expect(earliest(null, undefined)).toBeNull();
    expect(earliest(5, null, 3, undefined, 9)).toBe(3);
    expect(earliest(0)).toBe(0);
  });
});
