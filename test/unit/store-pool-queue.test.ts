/**
 * QueueStore (src/stores/pool-queue.ts) over SQLite in Node (test/unit/storage.ts): entries and their keys, the offer round
 * in queue order (with reservation windows and devices a hand-over found taken), the hand-over's outcomes, the schedule's
 * times and the entry's view with its position and estimate.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { QUEUE } from "../../src/config";
import type { QueueJoin } from "../../src/contracts";
import type { DeviceSpec } from "../../src/domain/types";
import { fail } from "../../src/errors";
import { Sql } from "../../src/objects/sql";
import { INDEX_SCHEMA, IndexStore, type IndexRow } from "../../src/stores/pool-index";
import { FLEET_SCHEMA } from "../../src/stores/pool-fleet";
import { QUEUE_SCHEMA, QueueStore, boundsOf, parseError } from "../../src/stores/pool-queue";
import { RESERVATIONS_SCHEMA } from "../../src/stores/pool-reservations";
import { memoryStorage } from "./storage";

const T0 = Date.UTC(2030, 0, 1);
const MIN = 60_000;
const S = (cpuCores: number): DeviceSpec => ({ cpuCores, memoryMB: 1024, storageMB: 100 });
const iso = (t: number) => new Date(t).toISOString();
const TAKEN = fail(409, "DEVICE_BUSY", "taken");
const BUSY = fail(503, "USER_UNAVAILABLE", "try later");

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(T0);
});
afterEach(() => void vi.useRealTimers());

function setup() {
  const sql = new Sql(memoryStorage() as unknown as DurableObjectStorage);
  sql.migrate([
    { name: "1", sql: [INDEX_SCHEMA, QUEUE_SCHEMA, RESERVATIONS_SCHEMA].join("\n") },
    { name: "3", sql: FLEET_SCHEMA },
  ]);
  return { sql, queue: new QueueStore(sql), index: new IndexStore(sql) };
}

const join = (over: Partial<QueueJoin> = {}): QueueJoin => ({
  userId: "u1",
  pool: "p1",
  priority: 0,
  min: S(2),
  max: S(8),
  durationMinutes: 10,
  maxWaitMinutes: 30,
  createdBy: "u1",
  ...over,
});

const device = (deviceId: string, cpu: number): IndexRow => ({
  device_id: deviceId,
  node: "n1",
  cpu,
  mem: 1024,
  storage: 100,
  status: "available",
  version: 1,
  allocation_id: null,
  user_id: null,
  expires_at: null,
});

/** Offers `free` (smallest first, as freeForQueue gives them); returns entry → device. */
const offer = (queue: QueueStore, free: IndexRow[], now = T0, windows: [string, number][] = []) =>
  Object.fromEntries(queue.offer(free, new Map(windows), now).map((e) => [e.entry_id, e.device_id]));

describe("entries", () => {
  it("insert: a waiting entry in arrival order, its durations, and its key's hash only with a key", () => {
    const { queue } = setup();
    const a = queue.insert(join(), T0);
    const b = queue.insert(join({ durationSeconds: 30, maxWaitSeconds: 45, idempotencyKey: "k" }), T0 + 1);
    expect(a).toEqual({ entryId: expect.stringMatching(/^que_/), waitUntil: T0 + 30 * MIN });
    expect(b.waitUntil).toBe(T0 + 1 + 45_000);
    expect(queue.row(a.entryId)).toMatchObject({
      seq: 1,
      status: "waiting",
      cpu_min: 2,
      cpu_max: 8,
      duration_ms: 10 * MIN,
      wait_until: T0 + 30 * MIN,
      idem_key: null,
      idem_hash: null,
      attempts: 0,
      retry_at: null,
    });
    expect(queue.row(b.entryId)).toMatchObject({ seq: 2, duration_seconds: 30, duration_ms: 30_000, idem_key: "k" });
    expect(queue.row(b.entryId)!.idem_hash).toEqual(expect.any(String));
  });

  it("byKey is per user; a user's key is unique", () => {
    const { queue } = setup();
    const a = queue.insert(join({ idempotencyKey: "k" }), T0);
    const b = queue.insert(join({ userId: "u2", idempotencyKey: "k" }), T0);
    expect(queue.byKey("u1", "k")!.entry_id).toBe(a.entryId);
    expect(queue.byKey("u2", "k")!.entry_id).toBe(b.entryId);
    expect(queue.byKey("u3", "k")).toBeNull();
    expect(() => queue.insert(join({ idempotencyKey: "k" }), T0)).toThrow();
  });

  it("counts, lists (newest first), cancels only open entries and expires only waiting ones past their wait", () => {
    const { queue } = setup();
    const a = queue.insert(join({ maxWaitMinutes: 1 }), T0);
    const b = queue.insert(join(), T0);
    const c = queue.insert(join({ userId: "u2" }), T0 + 1);
    expect([queue.open(), queue.openFor("u1"), queue.anyWaiting()]).toEqual([3, 2, true]);
    expect(queue.list(undefined, undefined, 10).map((r) => r.entry_id)).toEqual([c.entryId, b.entryId, a.entryId]);
    expect(queue.list("u1", undefined, 1).map((r) => r.entry_id)).toEqual([b.entryId]);
    expect(queue.pastWait(T0 + MIN).map((r) => r.entry_id)).toEqual([a.entryId]);
    queue.expire(a.entryId, T0 + MIN);
    queue.cancel(b.entryId, T0 + MIN);
    queue.cancel(a.entryId, T0 + 2 * MIN); // expired stays expired
    expect([queue.row(a.entryId)!.status, queue.row(b.entryId)!.status]).toEqual(["expired", "cancelled"]);
    expect(queue.list(undefined, "cancelled", 10).map((r) => r.entry_id)).toEqual([b.entryId]);
    expect([queue.open(), queue.openFor("u1")]).toEqual([1, 0]);
    queue.cancel(c.entryId, T0);
    expect(queue.anyWaiting()).toBe(false);
  });
});

describe("the offer round", () => {
  it("serves entries by priority then arrival, each the smallest free device it fits, until none is left", () => {
    const { queue } = setup();
    const first = queue.insert(join(), T0).entryId;
    const big = queue.insert(join({ min: S(16), max: S(32) }), T0).entryId;
    const vip = queue.insert(join({ priority: 2 }), T0).entryId;
    const last = queue.insert(join({ min: S(4) }), T0).entryId;
    const late = queue.insert(join(), T0).entryId;
    const free = [device("d2", 2), device("d4", 4), device("d6", 6), device("d64", 64)];
    expect(offer(queue, free)).toEqual({ [vip]: "d2", [first]: "d4", [last]: "d6" });
    expect(free.map((d) => d.device_id)).toEqual(["d64"]); // what is left for the round's next step
    expect(queue.row(vip)).toMatchObject({ status: "offered", device_id: "d2", retry_at: T0 + QUEUE.offerRetryMs, updated_at: T0 });
    expect([queue.row(big)!.status, queue.row(late)!.status]).toEqual(["waiting", "waiting"]);
    // Offered entries are not offered again; the next free device goes to the next waiting entry that fits.
    expect(offer(queue, [device("d3", 3)])).toEqual({ [late]: "d3" });
    expect(offer(queue, [])).toEqual({});
  });

  it("a device whose reservation window starts before the allocation would end is not offered", () => {
    const { queue } = setup();
    const e = queue.insert(join({ durationMinutes: 10 }), T0).entryId;
    const free = () => [device("a", 2), device("b", 4)];
    expect(offer(queue, free(), T0, [["a", T0 + 10 * MIN - 1]])).toEqual({ [e]: "b" });
    queue.cancel(e, T0);
    const e2 = queue.insert(join({ durationMinutes: 10 }), T0).entryId;
    expect(offer(queue, free(), T0, [["a", T0 + 10 * MIN]])).toEqual({ [e2]: "a" });
    const e3 = queue.insert(join(), T0).entryId;
    expect(offer(queue, [device("a", 2)], T0, [["a", T0 - MIN]])).toEqual({});
    expect(queue.row(e3)!.status).toBe("waiting");
  });

  it("raceLost: the entry waits again and passes over that device for raceSkipMs; others may take it", () => {
    const { queue } = setup();
    const a = queue.insert(join(), T0).entryId;
    offer(queue, [device("d1", 2)]);
    queue.raceLost(queue.row(a)!, TAKEN, T0 + 1);
    expect(queue.row(a)).toMatchObject({ status: "waiting", device_id: null, retry_at: null });
    expect(parseError(queue.row(a)!.error)).toEqual({ code: "DEVICE_BUSY", message: "taken" });
    expect(offer(queue, [device("d1", 2)], T0 + 2)).toEqual({});
    expect(offer(queue, [device("d1", 2), device("d2", 2)], T0 + 2)).toEqual({ [a]: "d2" });
    // Lost again: now it passes over both, while an entry behind it takes one.
    queue.raceLost(queue.row(a)!, TAKEN, T0 + 3);
    const b = queue.insert(join(), T0 + 4).entryId;
    expect(offer(queue, [device("d1", 2), device("d2", 2)], T0 + 5)).toEqual({ [b]: "d1" });
    expect(offer(queue, [device("d2", 2)], T0 + 3 + QUEUE.raceSkipMs - 1)).toEqual({});
    expect(offer(queue, [device("d2", 2)], T0 + 3 + QUEUE.raceSkipMs)).toEqual({ [a]: "d2" });
  });

  it.todo(
    "nextWait includes the end of a raced device's skip (after raceLost it stays the entry's wait_until: " +
      "a device left free, e.g. refused as DEVICE_UNFIT, is offered again only if something else runs the offer round " +
      "before the wait ends, and that round expires the entry first)",
  );
});

describe("the hand-over's outcomes", () => {
  it("fulfilled records the allocation; failed ends the entry with its error", () => {
    const { queue } = setup();
    const a = queue.insert(join(), T0).entryId;
    const b = queue.insert(join(), T0).entryId;
    offer(queue, [device("d1", 2), device("d2", 2)]);
    queue.fulfilled(a, "alc-1", "d1", T0 + 1);
    queue.failed(b, fail(403, "QUOTA_SUSPENDED", "no"), T0 + 1);
    expect(queue.row(a)).toMatchObject({
      status: "fulfilled",
      allocation_id: "alc-1",
      device_id: "d1",
      retry_at: null,
      updated_at: T0 + 1,
    });
    expect(queue.row(b)).toMatchObject({ status: "failed", device_id: null, retry_at: null });
    expect(parseError(queue.row(b)!.error)).toEqual({ code: "QUOTA_SUSPENDED", message: "no" });
    expect([queue.open(), queue.nextRetry(), queue.nextWait()]).toEqual([0, null, null]);
  });

  it("retryLater keeps the offer and counts; stuck finds it when due; requeue puts the entry back to wait a while", () => {
    const { queue } = setup();
    const a = queue.insert(join(), T0).entryId;
    offer(queue, [device("d1", 2)]);
    expect(queue.stuck(T0 + QUEUE.offerRetryMs - 1)).toEqual([]);
    expect(queue.stuck(T0 + QUEUE.offerRetryMs).map((r) => r.entry_id)).toEqual([a]);
    queue.retryLater(a, BUSY, T0 + 10);
    queue.retryLater(a, BUSY, T0 + 20);
    expect(queue.row(a)).toMatchObject({ status: "offered", device_id: "d1", attempts: 2, retry_at: T0 + 20 + QUEUE.offerRetryMs });
    expect(queue.nextRetry()).toBe(T0 + 20 + QUEUE.offerRetryMs);
    queue.requeue(a, BUSY, T0 + 30);
    expect(queue.row(a)).toMatchObject({ status: "waiting", device_id: null, attempts: 0, retry_at: T0 + 30 + QUEUE.offerRetryMs });
    expect(queue.nextRetry()).toBeNull();
    // It waits out its retry before it is offered again; its retry is when the offer round runs next.
    expect(queue.nextWait()).toBe(T0 + 30 + QUEUE.offerRetryMs);
    expect(offer(queue, [device("d1", 2)], T0 + 31)).toEqual({});
    expect(offer(queue, [device("d1", 2)], T0 + 30 + QUEUE.offerRetryMs)).toEqual({ [a]: "d1" });
  });

  it("nextWait is the earliest end of a wait among waiting entries", () => {
    const { queue } = setup();
    expect(queue.nextWait()).toBeNull();
    const a = queue.insert(join({ maxWaitMinutes: 5 }), T0).entryId;
    queue.insert(join({ maxWaitMinutes: 9 }), T0);
    expect(queue.nextWait()).toBe(T0 + 5 * MIN);
    offer(queue, [device("d1", 2)]);
    expect(queue.row(a)!.status).toBe("offered");
    expect(queue.nextWait()).toBe(T0 + 9 * MIN);
  });
});

describe("view", () => {
  it("an open entry's position counts the open entries ahead; its estimate, the devices freeing for them first", () => {
    const { queue, index } = setup();
    const devices = () => index.estimateDevices(Date.now());
    index.apply({
      deviceId: "d1",
      node: "n1",
      ...S(2),
      status: "allocated",
      version: 1,
      allocationId: "x",
      userId: "x",
      expiresAt: T0 + 5 * MIN,
    });
    index.apply({
      deviceId: "d2",
      node: "n1",
      ...S(2),
      status: "allocated",
      version: 1,
      allocationId: "y",
      userId: "y",
      expiresAt: T0 + 8 * MIN,
    });
    const a = queue.insert(join({ durationMinutes: 10 }), T0).entryId;
    const b = queue.insert(join({ durationMinutes: 10 }), T0).entryId;
    const vip = queue.insert(join({ priority: 1, durationMinutes: 10 }), T0).entryId;
    const c = queue.insert(join({ durationMinutes: 10 }), T0).entryId;
    const view = (id: string) => queue.view(queue.row(id)!, "p1", devices);
    expect(view(vip)).toMatchObject({ position: 1, estimatedStartAt: iso(T0 + 5 * MIN), estimatedWaitSeconds: 300, priorityName: "vip" });
    expect(view(a)).toMatchObject({ position: 2, estimatedStartAt: iso(T0 + 8 * MIN) });
    expect(view(b)).toMatchObject({ position: 3, estimatedStartAt: iso(T0 + 15 * MIN) });
    expect(view(c)).toMatchObject({ position: 4, estimatedStartAt: iso(T0 + 18 * MIN), estimatedWaitSeconds: 18 * 60 });
    queue.cancel(a, T0);
    expect(view(c).position).toBe(3);
  });

  it("an offered entry starts now; a closed one has no position and shows its device only once fulfilled", () => {
    const { queue } = setup();
    const a = queue.insert(join({ createdBy: "admin-1" }), T0).entryId;
    const none = queue.insert(join({ min: S(64), max: S(64) }), T0).entryId;
    offer(queue, [device("d1", 2)]);
    vi.setSystemTime(T0 + 1_000);
    const offered = queue.view(queue.row(a)!, "p1", () => []);
    expect(offered).toMatchObject({
      status: "offered",
      position: 1,
      estimatedStartAt: iso(T0 + 1_000),
      estimatedWaitSeconds: 0,
      deviceId: null,
    });
    // Nothing in service fits: no estimate.
    expect(queue.view(queue.row(none)!, "p1", () => [{ ...S(2), freeAt: T0 }])).toMatchObject({ position: 2, estimatedStartAt: null });
    queue.fulfilled(a, "alc-1", "d1", T0 + 1_000);
    expect(queue.view(queue.row(a)!, "p1", () => [])).toEqual({
      entryId: a,
      userId: "u1",
      pool: "p1",
      status: "fulfilled",
      priority: 0,
      priorityName: "standard",
      spec: S(2),
      durationMinutes: 10,
      maxWaitMinutes: 30,
      joinedAt: iso(T0),
      waitUntil: iso(T0 + 30 * MIN),
      position: null,
      estimatedStartAt: null,
      estimatedWaitSeconds: null,
      allocationId: "alc-1",
      deviceId: "d1",
      error: null,
      createdBy: "admin-1",
    });
    expect(boundsOf(queue.row(none)!)).toEqual({ min: S(64), max: S(64) });
  });
});
