/**
 * The user's bookings (src/stores/bookings.ts) over SQLite in Node, and the window rules
 * (peakOver, checkWindowLoad in src/domain/reservation.ts): holds time out, settlement keeps
 * or drops, the peak is taken where something starts, and the plan's count and totals apply.
 */
import { describe, expect, it } from "vitest";
import { PLAN_LIMITS } from "../../src/config";
import { checkWindowLoad, peakOver, type Held } from "../../src/domain/reservation";
import { Sql } from "../../src/objects/sql";
import { BOOKINGS_SCHEMA, BookingStore, type Booking } from "../../src/stores/bookings";
import { memoryStorage } from "./storage";

const T0 = Date.UTC(2030, 0, 10, 12);
const HOUR = 3_600_000;
const spec = (cpuCores: number) => ({ cpuCores, memoryMB: 1024, storageMB: 8192 });
const held = (from: number, to: number, cores = 2): Held => ({ startAt: T0 + from * HOUR, endAt: T0 + to * HOUR, spec: spec(cores) });

function store() {
  const sql = new Sql(memoryStorage() as unknown as DurableObjectStorage);
  sql.exec(BOOKINGS_SCHEMA);
  return new BookingStore(sql);
}
const booking = (id: string, from: number, to: number, cores = 2): Booking => ({
  reservationId: id,
  pool: "p",
  startAt: T0 + from * HOUR,
  endAt: T0 + to * HOUR,
  spec: spec(cores),
});

describe("BookingStore", () => {
  it("a hold counts until it times out; settled booked it counts until its window ends; dropped it is gone", () => {
    const s = store();
    s.hold(booking("a", 1, 2), T0 + 60_000);
    s.hold(booking("b", 1, 3), T0 + 60_000);
    expect(s.open(T0).map((b) => b.duration_ms)).toEqual([HOUR, 2 * HOUR]);
    expect(s.open(T0 + 60_000)).toEqual([]);
    s.settle(booking("a", 1, 2, 4), true);
    s.settle(booking("b", 1, 3), false);
    // Settling takes the device's spec; it is kept past the hold's timeout, until the window ends.
    expect(s.open(T0 + 60_000)).toEqual([expect.objectContaining({ cpu: 4, spec: spec(4), startAt: T0 + HOUR })]);
    expect(s.open(T0 + 2 * HOUR)).toEqual([]);
    expect(s.open(T0, "a")).toEqual([]);
    s.settle(booking("a", 1, 2, 4), true); // again: idempotent
    expect(s.open(T0)).toHaveLength(1);
    s.drop("a");
    expect(s.open(T0)).toEqual([]);
  });

  it("prune removes ended windows and timed-out holds only", () => {
    const s = store();
    s.settle(booking("old", -3, -1), true);
    s.hold(booking("stale", 1, 2), T0 - 1);
    s.settle(booking("live", 1, 2), true);
    s.prune(T0);
    s.settle(booking("old", -3, -1), false);
    expect(s.open(T0 - 4 * HOUR).map((b) => b.startAt)).toEqual([T0 + HOUR]);
  });
});

describe("the window rules", () => {
  it("peakOver takes each dimension's peak at the points where something starts", () => {
    // 0-2 and 3-5 never overlap each other; 1-4 overlaps both.
    const items = [held(0, 2), held(3, 5), held(1, 4, 6)];
    expect(peakOver(items, T0, T0 + 6 * HOUR)).toEqual({ devices: 2, cpuCores: 8, memoryMB: 2048, storageMB: 16384 });
    expect(peakOver(items, T0 + 2 * HOUR, T0 + 3 * HOUR)).toMatchObject({ devices: 1, cpuCores: 6 });
    expect(peakOver(items, T0 + 5 * HOUR, T0 + 6 * HOUR)).toMatchObject({ devices: 0, cpuCores: 0 });
    // Touching windows (one ends as the next starts) do not overlap.
    expect(peakOver([held(0, 1), held(1, 2)], T0, T0 + 2 * HOUR)).toMatchObject({ devices: 1 });
  });

  it("checkWindowLoad applies the plan's device count and totals to the window", () => {
    const free = PLAN_LIMITS.free; // 2 devices, 8 cores
    expect(checkWindowLoad(free, [held(0, 2)], spec(2), T0 + HOUR, T0 + 3 * HOUR)).toBeNull();
    expect(checkWindowLoad(free, [held(0, 2), held(1, 3)], spec(2), T0 + HOUR, T0 + 2 * HOUR)).toMatchObject({
      status: 409,
      code: "QUOTA_DEVICES_EXCEEDED",
      details: { limit: 2, used: 2 },
    });
    expect(checkWindowLoad(free, [held(0, 2, 6)], spec(4), T0, T0 + HOUR)).toMatchObject({
      code: "QUOTA_TOTAL_EXCEEDED",
      details: { field: "cpuCores", limit: 8, used: 6, requested: 4 },
    });
    // Outside the window nothing counts.
    expect(checkWindowLoad(free, [held(0, 1), held(0, 1)], spec(2), T0 + HOUR, T0 + 2 * HOUR)).toBeNull();
  });
});
