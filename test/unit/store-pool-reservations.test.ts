/**
 * ReservationStore (src/stores/pool-reservations.ts) over SQLite in Node (test/unit/storage.ts): a booking pending until its
 * device confirms, the windows the offer round and the picker respect, what the alarm finds due (stale bookings, reminders,
 * starts and their retries), the start and the end of the allocation it made, and its views.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RESERVATION } from "../../src/config";
import type { ReservationBooking } from "../../src/contracts";
import type { DeviceSpec } from "../../src/domain/types";
import { fail } from "../../src/errors";
import { Sql } from "../../src/objects/sql";
import { INDEX_SCHEMA } from "../../src/stores/pool-index";
import { QUEUE_SCHEMA, parseError } from "../../src/stores/pool-queue";
import { RESERVATIONS_SCHEMA, ReservationStore } from "../../src/stores/pool-reservations";
import { memoryStorage } from "./storage";

const T0 = Date.UTC(2030, 0, 1);
const MIN = 60_000;
const S = (cpuCores: number): DeviceSpec => ({ cpuCores, memoryMB: 1024, storageMB: 100 });
const iso = (t: number) => new Date(t).toISOString();

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(T0);
});
afterEach(() => void vi.useRealTimers());

function setup() {
  const sql = new Sql(memoryStorage() as unknown as DurableObjectStorage);
  sql.migrate([{ name: "1", sql: [INDEX_SCHEMA, QUEUE_SCHEMA, RESERVATIONS_SCHEMA].join("\n") }]);
  return new ReservationStore(sql);
}

/** A booking of [start, start + minutes) minutes from T0. */
const booking = (start: number, minutes = 30, over: Partial<ReservationBooking> = {}): ReservationBooking => ({
  userId: "u1",
  pool: "p1",
  min: S(2),
  max: S(8),
  startAt: T0 + start * MIN,
  endAt: T0 + (start + minutes) * MIN,
  durationMinutes: minutes,
  reminderMinutes: 15,
  createdBy: "u1",
  ...over,
});

/** Books and confirms `id` on `device`. */
function confirmed(r: ReservationStore, id: string, device: string, b: ReservationBooking, remindAt: number | null = null, now = T0) {
  r.insertPending(id, b, device, now);
  r.confirm(id, remindAt, now);
}

describe("booking", () => {
  it("insertPending writes a pending row on its device; a user's key is unique and found by byKey", () => {
    const r = setup();
    r.insertPending("r1", booking(60, 30, { idempotencyKey: "k" }), "d1", T0);
    expect(r.row("r1")).toMatchObject({
      user_id: "u1",
      device_id: "d1",
      status: "pending",
      cpu_min: 2,
      cpu_max: 8,
      start_at: T0 + 60 * MIN,
      end_at: T0 + 90 * MIN,
      duration_minutes: 30,
      reminder_minutes: 15,
      remind_at: null,
      created_at: T0,
      idem_key: "k",
    });
    expect(r.row("r1")!.idem_hash).toEqual(expect.any(String));
    expect(r.byKey("u1", "k")!.reservation_id).toBe("r1");
    expect(r.byKey("u2", "k")).toBeNull();
    expect(() => r.insertPending("r2", booking(120, 30, { idempotencyKey: "k" }), "d2", T0)).toThrow();
    r.insertPending("r3", booking(120, 30, { userId: "u2", idempotencyKey: "k" }), "d2", T0);
    expect(r.byKey("u2", "k")!.reservation_id).toBe("r3");
  });

  it("confirm and dropPending act on pending rows only; moveTo changes the device; delete removes any", () => {
    const r = setup();
    r.insertPending("r1", booking(60), "d1", T0);
    r.moveTo("r1", "d2", T0 + 1);
    r.confirm("r1", T0 + 45 * MIN, T0 + 2);
    expect(r.row("r1")).toMatchObject({ status: "confirmed", device_id: "d2", remind_at: T0 + 45 * MIN, updated_at: T0 + 2 });
    r.confirm("r1", null, T0 + 3); // confirmed once: the reminder stays
    r.dropPending("r1");
    expect(r.row("r1")).toMatchObject({ status: "confirmed", remind_at: T0 + 45 * MIN });
    r.insertPending("r2", booking(60), "d3", T0);
    r.dropPending("r2");
    expect(r.row("r2")).toBeNull();
    r.delete("r1");
    expect(r.row("r1")).toBeNull();
  });

  it("counts open reservations; lists by start; overlapping finds the user's open ones in a window", () => {
    const r = setup();
    confirmed(r, "late", "d1", booking(120));
    r.insertPending("early", booking(10), "d2", T0);
    confirmed(r, "other", "d3", booking(10, 30, { userId: "u2" }));
    confirmed(r, "gone", "d1", booking(40));
    r.end("gone", "cancelled", null, T0);
    confirmed(r, "running", "d4", booking(0, 60));
    r.executing("running", "d4", "alc-1", T0);
    expect([r.open(), r.openFor("u1"), r.openFor("u2")]).toEqual([4, 2, 1]);
    expect(r.list("u1", undefined, 10).map((x) => x.reservation_id)).toEqual(["running", "early", "gone", "late"]);
    expect(r.list(undefined, "confirmed", 10).map((x) => x.reservation_id)).toEqual(["other", "late"]);
    expect(r.list(undefined, undefined, 2).map((x) => x.reservation_id)).toEqual(["running", "early"]);
    const ids = (from: number, to: number) => r.overlapping("u1", T0 + from * MIN, T0 + to * MIN).map((x) => x.reservation_id);
    expect(ids(30, 60)).toEqual(["running", "early"]);
    expect(ids(40, 70)).toEqual(["running"]); // "early" ended at 40; "gone" was cancelled
    expect(ids(60, 120)).toEqual([]);
    expect(ids(149, 151)).toEqual(["late"]);
  });

  it("windowStarts: each device's earliest pending or confirmed window that has not ended", () => {
    const r = setup();
    confirmed(r, "a", "d1", booking(60));
    r.insertPending("b", booking(20), "d1", T0);
    confirmed(r, "c", "d2", booking(-10, 20)); // in progress: blocks d2 now
    confirmed(r, "past", "d3", booking(-30, 20));
    confirmed(r, "x", "d4", booking(5));
    r.end("x", "cancelled", null, T0);
    confirmed(r, "run", "d5", booking(0));
    r.executing("run", "d5", "alc", T0);
    expect(r.windowStarts(T0)).toEqual(
      new Map([
        ["d1", T0 + 20 * MIN],
        ["d2", T0 - 10 * MIN],
      ]),
    );
    expect(r.windowStarts(T0 + 50 * MIN)).toEqual(new Map([["d1", T0 + 60 * MIN]]));
  });
});

describe("what the alarm finds due", () => {
  it("a booking still pending after pendingTimeoutMs is stale; nextStale says when the first is", () => {
    const r = setup();
    expect(r.nextStale()).toBeNull();
    r.insertPending("r1", booking(60), "d1", T0);
    r.insertPending("r2", booking(60), "d2", T0 + 5_000);
    confirmed(r, "r3", "d3", booking(60), null, T0 - 10 * MIN);
    expect(r.nextStale()).toBe(T0 + RESERVATION.pendingTimeoutMs);
    const stale = (now: number) => r.stalePending(now).map((x) => x.reservation_id);
    expect(stale(T0 + RESERVATION.pendingTimeoutMs - 1)).toEqual([]);
    expect(stale(T0 + RESERVATION.pendingTimeoutMs)).toEqual(["r1"]);
    expect(stale(T0 + RESERVATION.pendingTimeoutMs + 5_000)).toEqual(["r1", "r2"]);
  });

  it("reminders of confirmed reservations are due at remind_at, once", () => {
    const r = setup();
    confirmed(r, "r1", "d1", booking(60), T0 + 45 * MIN);
    confirmed(r, "r2", "d2", booking(30), T0 + 15 * MIN);
    confirmed(r, "quiet", "d3", booking(10), null);
    r.insertPending("pend", booking(10), "d4", T0);
    expect(r.nextReminder()).toBe(T0 + 15 * MIN);
    expect(r.dueReminders(T0 + 15 * MIN).map((x) => x.reservation_id)).toEqual(["r2"]);
    r.reminded("r2");
    expect(r.dueReminders(T0 + 15 * MIN)).toEqual([]);
    expect(r.nextReminder()).toBe(T0 + 45 * MIN);
    r.end("r1", "cancelled", null, T0);
    expect([r.nextReminder(), r.dueReminders(T0 + 60 * MIN)]).toEqual([null, []]);
  });

  it("starts are due at start_at, or at the retry after a failed attempt; nextStart follows both", () => {
    const r = setup();
    expect(r.nextStart()).toBeNull();
    confirmed(r, "a", "d1", booking(10));
    confirmed(r, "b", "d2", booking(5));
    r.insertPending("p", booking(1), "d3", T0);
    expect(r.nextStart()).toBe(T0 + 5 * MIN);
    const due = (now: number) => r.dueStarts(now).map((x) => x.reservation_id);
    expect(due(T0 + 5 * MIN - 1)).toEqual([]);
    expect(due(T0 + 10 * MIN)).toEqual(["b", "a"]);
    r.retryStart("b", fail(409, "DEVICE_BUSY", "still held"), T0 + 10 * MIN);
    expect(r.row("b")).toMatchObject({ retry_at: T0 + 10 * MIN + RESERVATION.startRetryMs });
    expect(parseError(r.row("b")!.error)).toEqual({ code: "DEVICE_BUSY", message: "still held" });
    expect(due(T0 + 10 * MIN)).toEqual(["a"]);
    expect(due(T0 + 10 * MIN + RESERVATION.startRetryMs)).toEqual(["b", "a"]);
    r.executing("a", "d1", "alc-a", T0 + 10 * MIN);
    expect(r.nextStart()).toBe(T0 + 10 * MIN + RESERVATION.startRetryMs);
  });

  it("startedAt is fixed by the first attempt", () => {
    const r = setup();
    confirmed(r, "a", "d1", booking(0));
    vi.setSystemTime(T0 + 1_000);
    expect(r.startedAt(r.row("a")!)).toBe(T0 + 1_000);
    vi.setSystemTime(T0 + 9_000);
    expect(r.startedAt(r.row("a")!)).toBe(T0 + 1_000);
    expect(r.row("a")!.exec_from).toBe(T0 + 1_000);
  });
});

describe("the start and the end", () => {
  it("executing records the device and allocation and clears retry, reminder and error; end moves to an end state", () => {
    const r = setup();
    confirmed(r, "a", "d1", booking(0), T0 - MIN);
    r.retryStart("a", fail(409, "DEVICE_BUSY", "x"), T0);
    r.executing("a", "d9", "alc-1", T0 + 1);
    expect(r.row("a")).toMatchObject({
      status: "executing",
      device_id: "d9",
      allocation_id: "alc-1",
      retry_at: null,
      remind_at: null,
      error: null,
    });
    confirmed(r, "b", "d2", booking(30), T0 + 15 * MIN);
    r.retryStart("b", fail(409, "DEVICE_BUSY", "x"), T0);
    r.end("b", "failed", fail(409, "NO_DEVICE_AVAILABLE", "none fits"), T0 + 2);
    expect(r.row("b")).toMatchObject({ status: "failed", retry_at: null, remind_at: null, updated_at: T0 + 2 });
    expect(parseError(r.row("b")!.error)).toEqual({ code: "NO_DEVICE_AVAILABLE", message: "none fits" });
    r.end("b", "expired", null, T0 + 3);
    expect(r.row("b")).toMatchObject({ status: "expired", error: null });
  });

  it("completeEnded completes the executing reservations on a device whose allocation is no longer theirs", () => {
    const r = setup();
    const start = (id: string, device: string, alc: string) => {
      confirmed(r, id, device, booking(0));
      r.executing(id, device, alc, T0);
    };
    start("a", "d1", "alc-a");
    start("b", "d2", "alc-b");
    confirmed(r, "c", "d1", booking(120));
    expect(r.completeEnded("d1", "alc-a", T0 + 1)).toEqual([]);
    const done = r.completeEnded("d1", "alc-new", T0 + 2);
    expect(done.map((x) => [x.reservation_id, x.status])).toEqual([["a", "executing"]]); // the rows as they were
    expect(r.row("a")).toMatchObject({ status: "completed", updated_at: T0 + 2 });
    expect(r.row("c")!.status).toBe("confirmed");
    // The device holds nothing now.
    expect(r.completeEnded("d2", null, T0 + 3).map((x) => x.reservation_id)).toEqual(["b"]);
    expect(r.completeEnded("d2", null, T0 + 4)).toEqual([]);
    expect([r.row("b")!.status, r.open()]).toEqual(["completed", 1]);
  });
});

describe("views", () => {
  it("view and eventData show a reservation with ISO times and its parsed error", () => {
    const r = setup();
    confirmed(r, "a", "d1", booking(60, 30, { createdBy: "admin-1" }), T0 + 45 * MIN);
    expect(r.view(r.row("a")!, "p1")).toEqual({
      reservationId: "a",
      userId: "u1",
      pool: "p1",
      deviceId: "d1",
      status: "confirmed",
      spec: S(2),
      startAt: iso(T0 + 60 * MIN),
      endAt: iso(T0 + 90 * MIN),
      durationMinutes: 30,
      reminderMinutes: 15,
      remindAt: iso(T0 + 45 * MIN),
      allocationId: null,
      error: null,
      createdBy: "admin-1",
      createdAt: iso(T0),
    });
    r.end("a", "failed", fail(409, "NO_DEVICE_AVAILABLE", "none"), T0);
    expect(r.view(r.row("a")!, "p1")).toMatchObject({
      status: "failed",
      remindAt: null,
      error: { code: "NO_DEVICE_AVAILABLE", message: "none" },
    });
    expect(r.eventData(r.row("a")!, "p1")).toEqual({
      reservationId: "a",
      pool: "p1",
      deviceId: "d1",
      startAt: iso(T0 + 60 * MIN),
      endAt: iso(T0 + 90 * MIN),
      status: "failed",
    });
  });
});
