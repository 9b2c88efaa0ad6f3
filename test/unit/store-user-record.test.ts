/**
 * A direct allocation's rows in the user's store (src/stores/allocations.ts) over SQLite in Node:
 * written `active` at once beside its claim, checked with its device at its deadline, undone when
 * the claim failed; and the lean table (migration 4) keeping what was there, the idempotency key
 * still unique where set.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Picked } from "../../src/contracts";
import { Sql } from "../../src/objects/sql";
import { ALLOCATIONS_LEAN, ALLOCATIONS_SCHEMA, AllocationStore } from "../../src/stores/allocations";
import { memoryStorage } from "./storage";

const T0 = Date.UTC(2030, 0, 10, 12);
const MIN = 60_000;

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(T0);
});
afterEach(() => void vi.useRealTimers());

function store(): { sql: Sql; s: AllocationStore } {
  const sql = new Sql(memoryStorage() as unknown as DurableObjectStorage);
  sql.migrate([
    { name: "1", sql: ALLOCATIONS_SCHEMA },
    { name: "4", sql: ALLOCATIONS_LEAN },
  ]);
  return { sql, s: new AllocationStore(sql) };
}

const device: Picked = { deviceId: "d1", node: "n1", cpuCores: 4, memoryMB: 2048, storageMB: 200, idleReleaseSeconds: null };
const recorded = (id: string, key: string | null = null) => ({
  allocationId: id,
  pool: "p1",
  durationMinutes: 30,
  durationMs: 30 * MIN,
  idempotencyKey: key,
  hash: "h",
  deadline: T0 + 40_000,
  idleMs: null,
  device,
  allocatedAt: T0,
  expiresAt: T0 + 30 * MIN,
});

describe("AllocationStore: a direct allocation's record", () => {
  it("is active at once on the picked device, counts as usage, and is found by its device", () => {
    const { s } = store();
    s.insertActive(recorded("a1"), T0);
    expect(s.row("a1")).toMatchObject({
      status: "active",
      device_id: "d1",
      node: "n1",
      cpu: 4,
      allocated_at: T0,
      expires_at: T0 + 30 * MIN,
    });
    expect(s.usage(0)).toMatchObject({ devices: 1, cpuCores: 4, memoryMB: 2048, storageMB: 200, deviceHours: 0.5 });
    expect(s.activeOn("d1")?.allocation_id).toBe("a1");
  });

  it("its check with the device is due at its deadline, once: checked or ended, it is not due again", () => {
    const { s } = store();
    s.insertActive(recorded("a1"), T0);
    s.insertActive({ ...recorded("a2"), deadline: T0 + 50_000 }, T0);
    expect(s.firstRecordCheck()).toBe(T0 + 40_000);
    expect(s.recordChecksDue(T0 + 39_999)).toEqual([]);
    expect(s.recordChecksDue(T0 + 45_000).map((r) => r.allocation_id)).toEqual(["a1"]);
    s.recordChecked("a1");
    expect(s.firstRecordCheck()).toBe(T0 + 50_000);
    s.markReleased({
      allocationId: "a2",
      deviceId: "d1",
      userId: "u",
      allocatedAt: T0,
      releasedAt: T0 + 1000,
      durationSeconds: 1,
      reason: "released",
    });
    expect(s.firstRecordCheck()).toBeNull();
  });

  it("undone when its claim failed: aborted (read as not found), no usage, its key free again; only once", () => {
    const { s } = store();
    s.insertActive(recorded("a1", "k1"), T0);
    expect(s.abortRecorded("a1")).toBe(true);
    expect(s.abortRecorded("a1")).toBe(false);
    expect(s.row("a1")?.status).toBe("aborted");
    expect(s.active("a1").ok).toBe(false);
    expect(s.usage(0).devices).toBe(0);
    expect(s.byKey("k1")).toBeNull();
    s.insertActive(recorded("a2", "k1"), T0);
    expect(s.byKey("k1")?.allocation_id).toBe("a2");
  });

  it("the lean table keeps the rows it had, many rows without a key, and a key still once", () => {
    const sql = new Sql(memoryStorage() as unknown as DurableObjectStorage);
    sql.migrate([{ name: "1", sql: ALLOCATIONS_SCHEMA }]);
    const before = new AllocationStore(sql);
    before.insertActive(recorded("old", "k0"), T0);
    sql.migrate([
      { name: "1", sql: ALLOCATIONS_SCHEMA },
      { name: "4", sql: ALLOCATIONS_LEAN },
    ]);
    const s = new AllocationStore(sql);
    expect(s.row("old")).toMatchObject({ status: "active", device_id: "d1", idem_key: "k0" });
    s.insertActive(recorded("n1"), T0);
    s.insertActive(recorded("n2"), T0);
    expect(() => s.insertActive(recorded("n3", "k0"), T0)).toThrow(/UNIQUE/);
  });
});
