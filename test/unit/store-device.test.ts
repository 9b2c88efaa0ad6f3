/**
 * DeviceStore (src/stores/device.ts) over SQLite in Node (test/unit/storage.ts): the cached device row and its versions,
 * the allocation it holds from claim to end, its history pages and the reservation windows booked on it.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ALLOCATION } from "../../src/config";
import { Sql } from "../../src/objects/sql";
import type { EndReason } from "../../src/domain/types";
import { DEVICE_SCHEMA, DeviceStore, type Registration } from "../../src/stores/device";
import { DEVICE_META_SCHEMA } from "../../src/stores/device-meta";
import { memoryStorage } from "./storage";

const T0 = Date.UTC(2030, 0, 1);
const MIN = 60_000;
const REG: Registration = { deviceId: "dev-1", pool: "p1", node: "n1", cpuCores: 4, memoryMB: 8192, storageMB: 1024 };

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(T0);
});
afterEach(() => void vi.useRealTimers());

function setup(register = true) {
  const storage = memoryStorage();
  const sql = new Sql(storage as unknown as DurableObjectStorage);
  sql.migrate([
    { name: "1", sql: DEVICE_SCHEMA },
    { name: "4", sql: DEVICE_META_SCHEMA },
  ]);
  const store = new DeviceStore(sql);
  if (register) store.register(REG, T0);
  return { sql, store };
}

const claim = (id: string, over: Partial<Parameters<DeviceStore["hold"]>[0]> = {}) => ({
  allocationId: id,
  userId: "u1",
  expiresAt: T0 + 60 * MIN,
  confirmAt: T0 + 30_000,
  warnAt: T0 + 55 * MIN,
  reservationId: null,
  ...over,
});

/** Holds and ends one allocation from `at` for `minutes`. */
function oneAllocation(store: DeviceStore, id: string, at: number, minutes: number, reason: EndReason = "released") {
  store.hold(claim(id, { expiresAt: at + 120 * MIN }), at);
  store.activate(id);
  store.end(store.current()!, reason, at + minutes * MIN);
}

describe("the device row", () => {
  it("registers available at version 1; registering again bumps the version and drops its windows", () => {
    const { store } = setup(false);
    expect([store.device(), store.registered()]).toEqual([null, null]);
    store.register(REG, T0);
    expect(store.device()).toMatchObject({ device_id: "dev-1", pool: "p1", status: "available", version: 1, created_at: T0 });
    store.reserve({ reservationId: "r1", userId: "u1", startAt: T0 + 10 * MIN, endAt: T0 + 20 * MIN }, T0);
    store.setStatus("removed", T0 + 1);
    expect(store.registered()).toBeNull();
    expect(store.device()).toMatchObject({ status: "removed", version: 2 });
    store.register({ ...REG, pool: "p2", cpuCores: 8 }, T0 + 2);
    expect(store.registered()).toMatchObject({ pool: "p2", cpu: 8, status: "available", version: 3, updated_at: T0 + 2 });
    expect(store.hasWindow("r1")).toBe(false);
  });

  it("update changes only the fields given, one version up; info and state map the row", () => {
    const { store } = setup();
    store.update(store.device()!, { node: "n2", memoryMB: 4096 }, T0 + 5);
    const d = store.device()!;
    expect(d).toMatchObject({ pool: "p1", node: "n2", cpu: 4, mem: 4096, storage: 1024, version: 2, updated_at: T0 + 5 });
    expect(store.info(d)).toEqual({
      deviceId: "dev-1",
      pool: "p1",
      node: "n2",
      cpuCores: 4,
      memoryMB: 4096,
      storageMB: 1024,
      status: "available",
      name: null,
      model: null,
      osVersion: null,
      labels: {},
      createdAt: T0,
      updatedAt: T0 + 5,
    });
    expect(store.state(d)).toEqual({
      deviceId: "dev-1",
      node: "n2",
      cpuCores: 4,
      memoryMB: 4096,
      storageMB: 1024,
      status: "available",
      version: 2,
      allocationId: null,
      userId: null,
      expiresAt: null,
      meta: { name: null, model: null, osVersion: null, labels: {} },
    });
  });

  it("keeps the row it read until it writes it itself", () => {
    const { sql, store } = setup();
    expect(store.device()!.node).toBe("n1");
    sql.exec("UPDATE device SET node = 'elsewhere' WHERE id = 1");
    expect(store.device()!.node).toBe("n1");
    store.setStatus("maintenance", T0 + 1);
    expect(store.device()).toMatchObject({ node: "elsewhere", status: "maintenance", version: 2 });
  });
});

describe("the allocation it holds", () => {
  it("hold writes a held claim with the device's spec and marks the device allocated", () => {
    const { store } = setup();
    expect(store.current()).toBeNull();
    store.hold(claim("a1", { reservationId: "r1" }), T0 + 1);
    expect(store.current()).toMatchObject({
      allocation_id: "a1",
      user_id: "u1",
      state: "held",
      cpu: 4,
      mem: 8192,
      storage: 1024,
      allocated_at: T0 + 1,
      expires_at: T0 + 60 * MIN,
      confirm_at: T0 + 30_000,
      warn_at: T0 + 55 * MIN,
      warned: 0,
      reservation_id: "r1",
    });
    expect(store.device()).toMatchObject({ status: "allocated", version: 2 });
    expect(store.state(store.device()!)).toMatchObject({ status: "allocated", allocationId: "a1", userId: "u1", expiresAt: T0 + 60 * MIN });
    expect(store.currentView()).toEqual({
      allocationId: "a1",
      userId: "u1",
      confirmed: false,
      allocatedAt: T0 + 1,
      expiresAt: T0 + 60 * MIN,
    });
  });

  it("activate, confirmBy, warned and extend move only their columns", () => {
    const { store } = setup();
    store.hold(claim("a1"), T0);
    store.confirmBy("a1", T0 + 99);
    expect(store.allocation("a1")!.confirm_at).toBe(T0 + 99);
    store.activate("a1");
    store.warned("a1");
    expect(store.allocation("a1")).toMatchObject({ state: "active", confirm_at: null, warned: 1 });
    expect(store.currentView()!.confirmed).toBe(true);
    const now = T0 + 50 * MIN;
    store.extend("a1", T0 + 120 * MIN, now);
    expect(store.allocation("a1")).toMatchObject({
      expires_at: T0 + 120 * MIN,
      warn_at: T0 + 120 * MIN - ALLOCATION.expiryWarningMs,
      warned: 0,
    });
    // A short extension warns at half of what is left.
    store.extend("a1", now + 4_000, now);
    expect(store.allocation("a1")!.warn_at).toBe(now + 2_000);
  });

  it("end by release: the row ended with its duration, its window gone, the device free, the state it now reports", () => {
    const { store } = setup();
    store.reserve({ reservationId: "r1", userId: "u1", startAt: T0, endAt: T0 + 60 * MIN }, T0);
    store.reserve({ reservationId: "r2", userId: "u2", startAt: T0 + 90 * MIN, endAt: T0 + 99 * MIN }, T0);
    store.hold(claim("a1", { reservationId: "r1" }), T0);
    store.activate("a1");
    const { ended, state } = store.end(store.current()!, "released", T0 + 10 * MIN + 400);
    expect(ended).toEqual({
      allocationId: "a1",
      deviceId: "dev-1",
      userId: "u1",
      allocatedAt: T0,
      releasedAt: T0 + 10 * MIN + 400,
      durationSeconds: 600,
      reason: "released",
    });
    expect(store.allocation("a1")).toMatchObject({
      state: "ended",
      released_at: T0 + 10 * MIN + 400,
      reason: "released",
      confirm_at: null,
    });
    expect(store.current()).toBeNull();
    expect([store.hasWindow("r1"), store.hasWindow("r2")]).toEqual([false, true]);
    expect(state).toEqual({ ...store.state(store.device()!), ended: { allocationId: "a1", reason: "released", lagMs: null } });
    expect(store.device()).toMatchObject({ status: "available", version: 3 });
    expect(store.ended(store.allocation("a1")!)).toEqual(ended);
  });

  it("end by expiry bills up to expiresAt (not the alarm's lag); a device in maintenance stays so", () => {
    const { store } = setup();
    store.hold(claim("a1", { expiresAt: T0 + 5 * MIN }), T0);
    store.activate("a1");
    store.setStatus("maintenance", T0 + MIN);
    const { ended, state } = store.end(store.current()!, "expired", T0 + 5 * MIN + 1_234);
    expect(ended).toMatchObject({ releasedAt: T0 + 5 * MIN, durationSeconds: 300 });
    expect(state).toMatchObject({ status: "maintenance", ended: { allocationId: "a1", reason: "expired", lagMs: 1_234 } });
    expect(store.device()!.status).toBe("maintenance");
  });

  it("allocationData and snapshot show the allocation as the feeds do", () => {
    const { store } = setup();
    store.hold(claim("a1", { expiresAt: T0 + 90 * MIN + 1 }), T0);
    const a = store.current()!;
    expect(store.allocationData(a)).toEqual({
      allocationId: "a1",
      deviceId: "dev-1",
      pool: "p1",
      node: "n1",
      cpuCores: 4,
      memoryMB: 8192,
      storageMB: 1024,
      allocatedAt: new Date(T0).toISOString(),
      expiresAt: new Date(T0 + 90 * MIN + 1).toISOString(),
      durationMinutes: 91,
    });
    vi.setSystemTime(T0 + 30 * MIN);
    expect(store.snapshot(store.device()!, a)).toEqual({
      deviceId: "dev-1",
      pool: "p1",
      node: "n1",
      status: "allocated",
      allocation: {
        allocationId: "a1",
        userId: "u1",
        state: "held",
        allocatedAt: new Date(T0).toISOString(),
        expiresAt: new Date(T0 + 90 * MIN + 1).toISOString(),
        secondsLeft: 3600,
      },
    });
    expect(store.snapshot(store.device()!, null).allocation).toBeNull();
  });
});

describe("history", () => {
  it("pages the ended, billable allocations newest first; orphaned and current ones are left out", () => {
    const { store } = setup();
    oneAllocation(store, "a1", T0, 1);
    oneAllocation(store, "a2", T0 + 10 * MIN, 2);
    oneAllocation(store, "orphan", T0 + 20 * MIN, 1, "orphaned");
    oneAllocation(store, "a3", T0 + 30 * MIN, 3);
    store.hold(claim("now", { expiresAt: T0 + 200 * MIN }), T0 + 40 * MIN);
    const first = store.history(undefined, 2);
    expect(first.items.map((e) => [e.allocationId, e.durationSeconds])).toEqual([
      ["a3", 180],
      ["a2", 120],
    ]);
    expect(first.nextCursor).toBe(T0 + 10 * MIN);
    const second = store.history(first.nextCursor!, 2);
    expect([second.items.map((e) => e.allocationId), second.nextCursor]).toEqual([["a1"], null]);
    expect(store.history(undefined, 3).nextCursor).toBeNull();
  });

  it.todo(
    "pages two allocations that began in the same millisecond without losing one (the cursor is allocated_at alone: " +
      "history(cursor) asks allocated_at < cursor, so the second of a tie is never shown; AllocationStore.page uses (time, id))",
  );
});

describe("reservation windows", () => {
  it("reserve drops windows that ended; windowBefore skips the own one and those ended; openWindows counts the rest", () => {
    const { store } = setup();
    store.reserve({ reservationId: "old", userId: "u1", startAt: T0 - 20 * MIN, endAt: T0 - 10 * MIN }, T0 - 30 * MIN);
    store.reserve({ reservationId: "r1", userId: "u1", startAt: T0 + 10 * MIN, endAt: T0 + 20 * MIN }, T0);
    expect(store.hasWindow("old")).toBe(false);
    store.reserve({ reservationId: "r2", userId: "u2", startAt: T0 + 30 * MIN, endAt: T0 + 40 * MIN }, T0);
    expect(store.windowBefore(T0 + 60 * MIN, T0, null)).toEqual({ reservation_id: "r1", start_at: T0 + 10 * MIN });
    expect(store.windowBefore(T0 + 60 * MIN, T0, "r1")).toEqual({ reservation_id: "r2", start_at: T0 + 30 * MIN });
    expect(store.windowBefore(T0 + 10 * MIN, T0, null)).toBeNull(); // a claim ending as r1 starts does not meet it
    expect(store.windowBefore(T0 + 60 * MIN, T0 + 20 * MIN, "r2")).toBeNull(); // r1 ended
    expect(store.openWindows(T0)).toEqual({ n: 2, first: T0 + 10 * MIN });
    expect(store.openWindows(T0 + 40 * MIN)).toEqual({ n: 0, first: null });
    store.unreserve("r1");
    expect(store.openWindows(T0)).toEqual({ n: 1, first: T0 + 30 * MIN });
  });

  it("clash: another window overlapping [start, end) that has not ended; a booked id cannot be booked twice", () => {
    const { store } = setup();
    store.reserve({ reservationId: "r1", userId: "u1", startAt: T0 + 10 * MIN, endAt: T0 + 20 * MIN }, T0);
    expect(store.clash(T0 + 15 * MIN, T0 + 25 * MIN, T0)).toBe(true);
    expect(store.clash(T0, T0 + 11 * MIN, T0)).toBe(true);
    expect(store.clash(T0 + 20 * MIN, T0 + 30 * MIN, T0)).toBe(false);
    expect(store.clash(T0, T0 + 10 * MIN, T0)).toBe(false);
    // Asked once the window has ended, it clashes with nothing.
    expect(store.clash(T0, T0 + 30 * MIN, T0 + 20 * MIN)).toBe(false);
    expect(() => store.reserve({ reservationId: "r1", userId: "u1", startAt: T0, endAt: T0 + MIN }, T0)).toThrow();
    expect(store.openWindows(T0)).toEqual({ n: 1, first: T0 + 10 * MIN });
  });
});
