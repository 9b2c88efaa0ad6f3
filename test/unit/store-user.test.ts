/**
 * The user's stores over SQLite in Node (test/unit/storage.ts): AllocationStore and its views (src/stores/allocations.ts):
 * pending → active → released, usage derived from the rows, the alarm's reads, the pages; and ProfileStore
 * (src/stores/profile.ts): the profile created on first use, the period, the quota, the idle clock.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { PLAN_LIMITS, QUOTA_VALID_DAYS } from "../../src/config";
import type { Claimed } from "../../src/contracts";
import type { EndReason } from "../../src/domain/types";
import { Sql } from "../../src/objects/sql";
import {
  ALLOCATIONS_SCHEMA,
  AllocationStore,
  eventData,
  orphanedEnd,
  releaseResult,
  requestHash,
  resultOf,
  viewOf,
  type PendingAllocation,
} from "../../src/stores/allocations";
import { PROFILE_SCHEMA, ProfileStore } from "../../src/stores/profile";
import { specOf } from "../../src/domain/spec";
import { memoryStorage } from "./storage";

const T0 = Date.UTC(2030, 0, 10, 12);
const MIN = 60_000;
const HOUR = 3_600_000;
const iso = (t: number) => new Date(t).toISOString();

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(T0);
});
afterEach(() => void vi.useRealTimers());

function sqlWith(schema: string) {
  const sql = new Sql(memoryStorage() as unknown as DurableObjectStorage);
  sql.migrate([{ name: "1", sql: schema }]);
  return sql;
}

const allocations = () => new AllocationStore(sqlWith(ALLOCATIONS_SCHEMA));

const pending = (id: string, over: Partial<PendingAllocation> = {}): PendingAllocation => ({
  allocationId: id,
  pool: "p1",
  spec: { cpuCores: 2, memoryMB: 1024, storageMB: 100 },
  durationMinutes: 90,
  durationMs: 90 * MIN,
  idempotencyKey: null,
  hash: "h",
  deadline: T0 + 20_000,
  idleMs: null,
  ...over,
});

const claimed = (deviceId: string, at = T0, over: Partial<Claimed> = {}): Claimed => ({
  deviceId,
  pool: "p1",
  node: "n1",
  cpuCores: 4,
  memoryMB: 2048,
  storageMB: 200,
  allocatedAt: at,
  expiresAt: at + 90 * MIN,
  state: {} as Claimed["state"],
  access: {},
  ...over,
});

/** An allocation made active at `at` and released `seconds` later. */
function released(s: AllocationStore, id: string, at: number, seconds: number, reason: EndReason = "released") {
  s.insertPending(pending(id), at);
  s.activate(id, claimed(`d-${id}`, at), null);
  s.markReleased({
    allocationId: id,
    deviceId: `d-${id}`,
    userId: "u",
    allocatedAt: at,
    releasedAt: at + seconds * 1000,
    durationSeconds: seconds,
    reason,
  });
}

describe("AllocationStore: the protocol's steps", () => {
  it("a pending row holds quota; usage sums pending and active rows plus the period's finished hours", () => {
    const s = allocations();
    expect(s.usage(0)).toEqual({ devices: 0, cpuCores: 0, memoryMB: 0, storageMB: 0, deviceHours: 0 });
    s.insertPending(pending("a1"), T0);
    s.insertPending(pending("a2", { durationMs: 30 * MIN }), T0);
    expect(s.row("a1")).toMatchObject({ status: "pending", booked_hours: 1.5, deadline: T0 + 20_000, created_at: T0, device_id: null });
    expect(s.usage(10)).toEqual({ devices: 2, cpuCores: 4, memoryMB: 2048, storageMB: 200, deviceHours: 12 });
    expect(s.usage(0, "a1")).toEqual({ devices: 1, cpuCores: 2, memoryMB: 1024, storageMB: 100, deviceHours: 0.5 });
    expect(s.open("a2")).toEqual([{ cpu: 2, mem: 1024, storage: 100, duration_ms: 90 * MIN }]);
  });

  it("an idempotency key is unique; dropping the pending row frees it, aborting clears it and the quota", () => {
    const s = allocations();
    s.insertPending(pending("a1", { idempotencyKey: "k" }), T0);
    expect(s.byKey("k")!.allocation_id).toBe("a1");
    expect(() => s.insertPending(pending("a2", { idempotencyKey: "k" }), T0)).toThrow();
    s.dropPending("a1");
    expect([s.row("a1"), s.byKey("k")]).toEqual([null, null]);
    s.insertPending(pending("a2", { idempotencyKey: "k" }), T0);
    s.abortPending("a2");
    expect(s.row("a2")).toMatchObject({ status: "aborted", deadline: null, idem_key: null });
    expect(s.byKey("k")).toBeNull();
    expect(s.usage(0).devices).toBe(0);
  });

  it("activate records the device's real spec and times; dropPending and abortPending leave an active row alone", () => {
    const s = allocations();
    s.insertPending(pending("a1"), T0);
    s.activate("a1", claimed("dev-9", T0 + 5), 120_000);
    expect(s.row("a1")).toMatchObject({
      status: "active",
      device_id: "dev-9",
      node: "n1",
      cpu: 4,
      mem: 2048,
      storage: 200,
      allocated_at: T0 + 5,
      expires_at: T0 + 5 + 90 * MIN,
      deadline: null,
      idle_ms: 120_000,
    });
    expect(s.activeOn("dev-9")!.allocation_id).toBe("a1");
    s.dropPending("a1");
    s.abortPending("a1");
    expect(s.row("a1")!.status).toBe("active");
    expect(s.usage(0)).toMatchObject({ devices: 1, cpuCores: 4, memoryMB: 2048 });
  });

  it("markReleased ends an active row once (booking back to 0); a pending one is aborted instead; unknown: null", () => {
    const s = allocations();
    s.insertPending(pending("a1"), T0);
    s.activate("a1", claimed("d1"), null);
    const e = { allocationId: "a1", deviceId: "d1", userId: "u", allocatedAt: T0, releasedAt: T0 + 61_000, durationSeconds: 61 };
    expect(s.markReleased({ ...e, reason: "released" })).toEqual({ status: "active", pool: "p1", cpu: 4, mem: 2048, storage: 200 });
    expect(s.row("a1")).toMatchObject({
      status: "released",
      released_at: T0 + 61_000,
      duration_seconds: 61,
      reason: "released",
      booked_hours: 0,
    });
    expect(s.markReleased({ ...e, reason: "expired", releasedAt: T0 + 99_000 })).toBeNull();
    expect(s.row("a1")).toMatchObject({ reason: "released", released_at: T0 + 61_000 });
    expect(s.activeOn("d1")).toBeNull();
    s.insertPending(pending("a2", { idempotencyKey: "k2" }), T0);
    expect(s.markReleased({ ...e, allocationId: "a2", reason: "released" })).toBeNull();
    expect(s.row("a2")).toMatchObject({ status: "aborted", idem_key: null });
    expect(s.markReleased({ ...e, allocationId: "nope", reason: "released" })).toBeNull();
  });

  it("extend books more time; restore puts the row back as it was; setExpires and restore touch only active rows", () => {
    const s = allocations();
    s.insertPending(pending("a1"), T0);
    s.activate("a1", claimed("d1"), null);
    const before = s.row("a1")!;
    s.extend("a1", T0 + 120 * MIN, 30, T0 + MIN);
    expect(s.row("a1")).toMatchObject({
      expires_at: T0 + 120 * MIN,
      duration_minutes: 120,
      duration_ms: 120 * MIN,
      booked_hours: 2,
      extend_count: 1,
      extended_minutes: 30,
      last_extended_at: T0 + MIN,
    });
    s.restore(before);
    expect(s.row("a1")).toEqual(before);
    s.setExpires("a1", T0 + 5);
    expect(s.row("a1")!.expires_at).toBe(T0 + 5);
    s.insertPending(pending("p"), T0);
    s.setExpires("p", T0 + 7);
    s.restore({ ...s.row("p")!, duration_minutes: 1 });
    expect(s.row("p")).toMatchObject({ expires_at: null, duration_minutes: 90 });
  });
});

describe("AllocationStore: what the alarm reads", () => {
  it("deadlines of pending rows, overdue active rows (with grace), idle releasable rows", () => {
    const s = allocations();
    expect([s.firstDeadline(), s.firstOverdue(1_000), s.stalePending(T0)]).toEqual([null, null, []]);
    s.insertPending(pending("p1", { deadline: T0 + 10 }), T0);
    s.insertPending(pending("p2", { deadline: T0 + 20 }), T0);
    expect(s.firstDeadline()).toBe(T0 + 10);
    expect(s.stalePending(T0 + 10)).toEqual(["p1"]);
    s.insertPending(pending("a1"), T0);
    s.activate("a1", claimed("d1", T0, { expiresAt: T0 + 100 }), null);
    s.insertPending(pending("a2"), T0);
    s.activate("a2", claimed("d2", T0, { expiresAt: T0 + 200 }), 5_000);
    expect(s.firstOverdue(1_000)).toBe(T0 + 1_100);
    expect(s.overdue(T0 + 100).map((r) => r.allocation_id)).toEqual(["a1"]);
    expect(s.overdue(T0 + 99)).toEqual([]);
    expect(s.idleReleasable().map((r) => r.allocation_id)).toEqual(["a2"]);
  });

  it("endedSince lists billable releases from `since` on", () => {
    const s = allocations();
    released(s, "old", T0 - HOUR, 60);
    released(s, "new", T0, 120);
    released(s, "orph", T0, 30, "orphaned");
    expect(s.endedSince(T0 - HOUR + 60_000)).toEqual([
      { cpu: 4, mem: 2048, storage: 200, duration_seconds: 60 },
      { cpu: 4, mem: 2048, storage: 200, duration_seconds: 120 },
    ]);
    expect(s.endedSince(T0 + 1)).toHaveLength(1);
  });
});

describe("AllocationStore: pages", () => {
  it("page: newest first, (created_at, id) cursor across ties, status filter, aborted never shown", () => {
    const s = allocations();
    s.insertPending(pending("a"), T0);
    s.insertPending(pending("b"), T0);
    s.insertPending(pending("c"), T0 + 1);
    s.insertPending(pending("x"), T0 + 2);
    s.abortPending("x");
    s.activate("a", claimed("d"), null);
    const p1 = s.page({ limit: 2 });
    expect(p1.rows.map((r) => r.allocation_id)).toEqual(["c", "b"]);
    expect(p1.nextCursor).toBe(`${T0}.b`);
    const p2 = s.page({ limit: 2, cursor: p1.nextCursor! });
    expect([p2.rows.map((r) => r.allocation_id), p2.nextCursor]).toEqual([["a"], null]);
    expect(s.page({ limit: 10, status: "pending" }).rows.map((r) => r.allocation_id)).toEqual(["c", "b"]);
    expect(s.page({ limit: 10, status: "aborted" }).rows).toEqual([]);
    expect(s.page({ limit: 10, cursor: "garbage" }).rows).toHaveLength(3);
  });

  it("usageRecords: billable releases in [from, to), oldest first, with a cursor across equal release times", () => {
    const s = allocations();
    released(s, "b", T0, 60); // released at T0 + 60 s
    released(s, "a", T0, 60);
    released(s, "c", T0, 120);
    released(s, "o", T0, 90, "orphaned");
    released(s, "late", T0, 180);
    const to = T0 + 180_000;
    const p1 = s.usageRecords("u1", T0 + 60_000, to, undefined, 2);
    expect(p1.records.map((r) => r.allocationId)).toEqual(["a", "b"]);
    expect(p1.records[0]).toEqual({
      allocationId: "a",
      deviceId: "d-a",
      userId: "u1",
      durationSeconds: 60,
      cpuCores: 4,
      memoryMB: 2048,
      storageMB: 200,
      allocatedAt: T0,
      releasedAt: T0 + 60_000,
      reason: "released",
    });
    expect(p1.next).toBe(`${T0 + 60_000}.b`);
    const p2 = s.usageRecords("u1", T0 + 60_000, to, p1.next!, 2);
    expect([p2.records.map((r) => r.allocationId), p2.next]).toEqual([["c"], null]);
    expect(s.usageRecords("u1", T0 + 60_001, to, undefined, 10).records.map((r) => r.allocationId)).toEqual(["c"]);
  });
});

describe("allocation views", () => {
  it("eventData, resultOf, viewOf show one row; idle grace in seconds only when set", () => {
    const s = allocations();
    s.insertPending(pending("a1", { idempotencyKey: "k" }), T0);
    s.activate("a1", claimed("d1"), 90_000);
    const r = s.row("a1")!;
    expect(eventData(r)).toEqual({
      allocationId: "a1",
      deviceId: "d1",
      pool: "p1",
      node: "n1",
      cpuCores: 4,
      memoryMB: 2048,
      storageMB: 200,
      allocatedAt: iso(T0),
      expiresAt: iso(T0 + 90 * MIN),
      durationMinutes: 90,
    });
    expect(resultOf("u1", r)).toMatchObject({ allocationId: "a1", userId: "u1", node: "n1", idleReleaseSeconds: 90 });
    expect("idleReleaseSeconds" in resultOf("u1", { ...r, idle_ms: null })).toBe(false);
    expect(resultOf("u1", { ...r, node: null }).node).toBe("");
    expect(viewOf("u1", r)).toMatchObject({ status: "active", idempotencyKey: "k", extendCount: 0, idleReleaseSeconds: 90 });
    expect(viewOf("u1", { ...r, idle_ms: null }).idleReleaseSeconds).toBeNull();
    expect(specOf(r)).toEqual({ cpuCores: 4, memoryMB: 2048, storageMB: 200 });
  });

  it("orphanedEnd is unbilled; releaseResult shows times as ISO; requestHash tells requests apart", () => {
    const s = allocations();
    s.insertPending(pending("a1"), T0);
    s.activate("a1", claimed("d1"), null);
    const e = orphanedEnd(s.row("a1")!, "u1", T0 + 5_000);
    expect(e).toEqual({
      allocationId: "a1",
      deviceId: "d1",
      userId: "u1",
      allocatedAt: T0,
      releasedAt: T0 + 5_000,
      durationSeconds: 0,
      reason: "orphaned",
    });
    expect(releaseResult(e)).toEqual({ ...e, allocatedAt: iso(T0), releasedAt: iso(T0 + 5_000) });
    const req = { pool: "p", durationMinutes: 60, spec: { cpuCores: 1, memoryMB: 2, storageMB: 3 } };
    expect(requestHash(req, null)).toBe(requestHash({ ...req }, null));
    expect(
      new Set([
        requestHash(req, null),
        requestHash(req, 60_000),
        requestHash({ ...req, durationSeconds: 5 }, null),
        requestHash({ ...req, spec: { ...req.spec, storageMB: 4 } }, null),
      ]).size,
    ).toBe(4);
  });
});

describe("ProfileStore", () => {
  const profile = () => new ProfileStore(sqlWith(PROFILE_SCHEMA));

  it("the first get creates the profile with the plan's quota; later gets keep it", () => {
    const p = profile();
    expect(p.owner()).toBe("");
    expect(p.goneAt()).toBeNull();
    const row = p.get("u1", "basic", T0);
    expect(row).toMatchObject({
      user_id: "u1",
      plan: "basic",
      suspended: 0,
      valid_until: T0 + QUOTA_VALID_DAYS * 86_400_000,
      period_start: Date.UTC(2030, 0, 1),
      hours_used: 0,
      exceeded: 0,
      updated_at: T0,
      sockets_gone_at: null,
    });
    expect(p.state(row)).toEqual({ suspended: false, validUntil: row.valid_until, limits: PLAN_LIMITS.basic });
    expect(p.get("u1", "pro", T0 + 1).plan).toBe("basic");
    expect(p.owner()).toBe("u1");
  });

  it("a new period starts with no finished hours; within the period they add up", () => {
    const p = profile();
    p.get("u1", "free", T0);
    p.addHours(1.25);
    p.addHours(0.5);
    expect(p.get("u1", "free", Date.UTC(2030, 0, 31, 23)).hours_used).toBe(1.75);
    const feb = Date.UTC(2030, 1, 1);
    expect(p.get("u1", "free", feb)).toMatchObject({ period_start: feb, hours_used: 0 });
    // Stored, not only returned.
    expect(p.get("u1", "free", feb + 1)).toMatchObject({ period_start: feb, hours_used: 0 });
  });

  it("update, renew and setExceeded write the row; quota shows status and rounded hours", () => {
    const p = profile();
    p.get("u1", "free", T0);
    const limits = { ...PLAN_LIMITS.free, maxDevices: 1 };
    p.update({ plan: "pro", limits, suspended: false, validUntil: T0 + HOUR }, T0 + 1);
    p.setExceeded(true);
    const row = p.get("u1", "free", T0 + 2);
    expect(row).toMatchObject({ plan: "pro", suspended: 0, valid_until: T0 + HOUR, updated_at: T0 + 1, exceeded: 1 });
    const usage = { devices: 0, cpuCores: 0, memoryMB: 0, storageMB: 0, deviceHours: 1.23456 };
    expect(p.quota(row, usage)).toEqual({
      userId: "u1",
      plan: "pro",
      status: "active",
      suspended: false,
      validUntil: T0 + HOUR,
      limits,
      periodStart: Date.UTC(2030, 0, 1),
      usage: { ...usage, deviceHours: 1.235 },
      updatedAt: T0 + 1,
    });
    expect(p.quota(row, { ...usage, devices: 1 }).status).toBe("exceeded");
    vi.setSystemTime(T0 + HOUR);
    expect(p.quota(row, usage).status).toBe("expired");
    p.renew(T0 + 2 * HOUR, T0 + HOUR);
    expect(p.quota(p.get("u1", "free", T0 + HOUR), usage).status).toBe("active");
    p.update({ plan: "pro", limits, suspended: true, validUntil: T0 + 2 * HOUR }, T0 + HOUR);
    expect(p.quota(p.get("u1", "free", T0 + HOUR), usage)).toMatchObject({ status: "suspended", suspended: true });
  });

  it("the idle clock starts once (the first time is kept) and stops on a socket", () => {
    const p = profile();
    p.get("u1", "free", T0);
    p.socketsGone(T0 + 10);
    p.socketsGone(T0 + 20);
    expect(p.goneAt()).toBe(T0 + 10);
    p.socketsGone(null);
    expect(p.goneAt()).toBeNull();
    p.socketsGone(T0 + 30);
    expect(p.goneAt()).toBe(T0 + 30);
  });
});
