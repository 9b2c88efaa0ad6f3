/**
 * IndexStore (src/stores/pool-index.ts) over SQLite in Node (test/unit/storage.ts), with the queue and reservations tables
 * the picker reads: states applied by version, the `gone` table, node counts, the pick per strategy, the window search,
 * the reads (list, summary, snapshot) and the metrics counters.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DEFAULT_STRATEGY, FEED, type Strategy } from "../../src/config";
import type { DeviceState } from "../../src/contracts";
import type { DeviceSpec } from "../../src/domain/types";
import { Sql } from "../../src/objects/sql";
import { INDEX_SCHEMA, IndexStore, SIZE_ORDER_SCHEMA, deviceView, indexState } from "../../src/stores/pool-index";
import { QUEUE_SCHEMA, QueueStore } from "../../src/stores/pool-queue";
import { FLEET_SCHEMA } from "../../src/stores/pool-fleet";
import { RESERVATIONS_SCHEMA, ReservationStore } from "../../src/stores/pool-reservations";
import { memoryStorage } from "./storage";

const T0 = Date.UTC(2030, 0, 1);
const MIN = 60_000;
const S = (cpuCores: number, memoryMB = 1024, storageMB = 100): DeviceSpec => ({ cpuCores, memoryMB, storageMB });
const ANY = { min: S(0, 0, 0), max: S(1000, 1 << 20, 1 << 20) };

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(T0);
});
afterEach(() => void vi.useRealTimers());

function setup() {
  const sql = new Sql(memoryStorage() as unknown as DurableObjectStorage);
  sql.migrate([
    { name: "1", sql: [INDEX_SCHEMA, QUEUE_SCHEMA, RESERVATIONS_SCHEMA].join("\n") },
    { name: "2", sql: SIZE_ORDER_SCHEMA },
    { name: "3", sql: FLEET_SCHEMA },
  ]);
  return { sql, index: new IndexStore(sql), queue: new QueueStore(sql), reservations: new ReservationStore(sql) };
}

const state = (deviceId: string, over: Partial<DeviceState> = {}): DeviceState => ({
  deviceId,
  node: "n1",
  ...S(2),
  status: "available",
  version: 1,
  allocationId: null,
  userId: null,
  expiresAt: null,
  ...over,
});

const busy = (deviceId: string, node: string, version = 2, expiresAt = T0 + 30 * MIN): DeviceState =>
  state(deviceId, { node, status: "allocated", version, allocationId: `a-${deviceId}`, userId: "u", expiresAt });

type Nodes = { node: string; busy: number; total: number; free: number }[];
const nodes = (sql: Sql) => sql.all<Nodes[number]>("SELECT node, busy, total, free FROM nodes ORDER BY node");
const pick = (index: IndexStore, strategy: Strategy, o: { skip?: string[]; pickedAt?: [string, number][]; bounds?: typeof ANY } = {}) =>
  index.pick(strategy, o.bounds ?? ANY, new Set(o.skip ?? []), new Map(o.pickedAt ?? []), 10 * MIN, null)?.device_id ?? null;

describe("settings", () => {
  it("are written with the defaults on first use and kept", () => {
    const { index } = setup();
    expect(index.pool()).toBe("");
    expect(index.settings("p1")).toEqual({ pool: "p1", strategy: DEFAULT_STRATEGY, idleReleaseSeconds: null });
    expect(index.settings("other").pool).toBe("p1");
    index.setSettings({ pool: "p1", strategy: "spread", idleReleaseSeconds: 90 });
    expect(index.settings("p1")).toEqual({ pool: "p1", strategy: "spread", idleReleaseSeconds: 90 });
    expect(index.pool()).toBe("p1");
  });
});

describe("apply", () => {
  it("keeps the newest version of each device and returns the entry it replaced", () => {
    const { index } = setup();
    expect(index.exists()).toBe(false);
    expect(index.missing("p1")).toMatchObject({ status: 404, code: "POOL_NOT_FOUND", details: { pool: "p1" } });
    expect(index.apply(state("d1", { version: 3 }))).toBeNull();
    expect([index.exists(), index.missing("p1")]).toEqual([true, null]);
    expect(index.apply(state("d1", { version: 3, node: "changed" }))).toBeUndefined();
    expect(index.apply(state("d1", { version: 2, status: "offline" }))).toBeUndefined();
    expect(index.device("d1")).toMatchObject({ node: "n1", status: "available", version: 3 });
    expect(index.apply(busy("d1", "n1", 4))).toEqual({ status: "available", allocationId: null });
    expect(index.apply(state("d1", { version: 5 }))).toEqual({ status: "allocated", allocationId: "a-d1" });
    expect(indexState(index.device("d1")!)).toEqual(state("d1", { version: 5 }));
  });

  it("a removed device is remembered in `gone`: older or equal states do not bring it back, a newer one does", () => {
    const { sql, index } = setup();
    index.apply(state("d1", { version: 1 }));
    expect(index.apply(state("d1", { version: 2, status: "removed" }))).toEqual({ status: "available", allocationId: null });
    expect(index.device("d1")).toBeNull();
    expect(sql.all("SELECT * FROM gone")).toEqual([{ device_id: "d1", version: 2 }]);
    expect(index.apply(state("d1", { version: 1 }))).toBeUndefined();
    expect(index.apply(state("d1", { version: 2 }))).toBeUndefined();
    expect(index.device("d1")).toBeNull();
    expect(index.apply(state("d1", { version: 3 }))).toBeNull();
    expect(index.device("d1")!.version).toBe(3);
    expect(sql.all("SELECT * FROM gone")).toEqual([]);
  });

  it("a removal of a device never indexed is recorded too, so its late older states stay out", () => {
    const { sql, index } = setup();
    expect(index.apply(state("d9", { version: 4, status: "removed" }))).toBeUndefined();
    expect(sql.all("SELECT * FROM gone")).toEqual([{ device_id: "d9", version: 4 }]);
    expect(index.apply(state("d9", { version: 3 }))).toBeUndefined();
    expect(index.exists()).toBe(false);
    expect(nodes(sql)).toEqual([]);
  });

  it("node counts follow status and node changes, and a node with no devices left goes", () => {
    const { sql, index } = setup();
    index.apply(state("a", { node: "n1" }));
    index.apply(state("b", { node: "n1" }));
    index.apply(busy("c", "n1"));
    index.apply(state("d", { node: "n2", status: "maintenance" }));
    expect(nodes(sql)).toEqual([
      { node: "n1", busy: 1, total: 3, free: 2 },
      { node: "n2", busy: 0, total: 1, free: 0 },
    ]);
    // A move counts on both nodes (same status).
    index.apply(state("b", { node: "n2", version: 2 }));
    expect(nodes(sql)).toEqual([
      { node: "n1", busy: 1, total: 2, free: 1 },
      { node: "n2", busy: 0, total: 2, free: 1 },
    ]);
    index.apply(state("c", { node: "n1", version: 3 }));
    expect(nodes(sql)).toEqual([
      { node: "n1", busy: 0, total: 2, free: 2 },
      { node: "n2", busy: 0, total: 2, free: 1 },
    ]);
    index.apply(state("d", { node: "n2", status: "removed", version: 2 }));
    expect(index.drop("b")).toMatchObject({ device_id: "b", node: "n2" });
    expect(index.drop("b")).toBeNull();
    expect(nodes(sql)).toEqual([{ node: "n1", busy: 0, total: 2, free: 2 }]);
  });
});

describe("pick", () => {
  /** n1: 1 of 2 busy; n2: 1 of 4 busy; n3: 3 of 4 busy. Each has free devices of cpu 2 and 4. */
  function fleet() {
    const t = setup();
    const add = (node: string, free: number[], nBusy: number) => {
      free.forEach((cpu, i) => t.index.apply(state(`${node}-f${i}-c${cpu}`, { node, ...S(cpu) })));
      for (let i = 0; i < nBusy; i++) t.index.apply(busy(`${node}-b${i}`, node));
    };
    add("n1", [4], 1);
    add("n2", [4, 2, 8], 1);
    add("n3", [2], 3);
    return t;
  }

  it("load-first takes the least busy node, then its smallest fitting device", () => {
    const { index } = fleet();
    expect(pick(index, "load-first")).toBe("n2-f1-c2");
    expect(pick(index, "load-first", { bounds: { min: S(3), max: ANY.max } })).toBe("n2-f0-c4");
    expect(pick(index, "load-first", { bounds: { min: S(5), max: S(16) } })).toBe("n2-f2-c8");
    expect(pick(index, "load-first", { bounds: { min: S(16), max: S(32) } })).toBeNull();
    // Its node comes before size: with n2's 2-core device skipped it takes n2's 4-core one, not n3's 2-core.
    expect(pick(index, "load-first", { skip: ["n2-f1-c2"] })).toBe("n2-f0-c4");
  });

  it("every other strategy takes the smallest fitting class first, then its node among those holding one", () => {
    const { index } = fleet();
    expect(pick(index, "least-loaded")).toBe("n2-f1-c2");
    expect(pick(index, "least-loaded", { bounds: { min: S(3), max: ANY.max } })).toBe("n2-f0-c4");
    expect(pick(index, "least-loaded", { bounds: { min: S(5), max: S(16) } })).toBe("n2-f2-c8");
    expect(pick(index, "bin-pack")).toBe("n3-f0-c2");
    expect(pick(index, "bin-pack", { bounds: { min: S(3), max: S(4) } })).toBe("n1-f0-c4");
    expect(pick(index, "least-loaded", { bounds: { min: S(16), max: S(32) } })).toBeNull();
    // The case: a 2-core device is free on a busier node, so a 2-core request gets it, not a 4-core one.
    expect(pick(index, "least-loaded", { skip: ["n2-f1-c2"] })).toBe("n3-f0-c2");
    expect(pick(index, "least-loaded", { bounds: { min: S(2), max: ANY.max }, skip: ["n2-f1-c2"] })).toBe("n3-f0-c2");
  });

  it("orders classes by cores, then memory, then storage, then the device id", () => {
    const { index } = setup();
    const add = (deviceId: string, cpu: number, mem: number, storage: number) =>
      index.apply(state(deviceId, { node: `node-${deviceId}`, ...S(cpu, mem, storage) }));
    add("z", 2, 2, 2);
    add("b", 1, 9, 9);
    add("a", 2, 2, 2);
    add("c", 2, 1, 9);
    add("d", 2, 2, 1);
    const order: string[] = [];
    for (let id = pick(index, "least-loaded"); id; id = pick(index, "least-loaded", { skip: order })) order.push(id);
    expect(order).toEqual(["b", "c", "d", "a", "z"]);
    expect(order.slice(0, 1)).toEqual([pick(index, "spread")]);
  });

  it("spread takes the node picked longest ago among those holding the smallest class, counting picks still in flight", () => {
    const { index } = fleet();
    index.picked("n1", T0 - 3);
    index.picked("n2", T0 - 2);
    index.picked("n2", T0 - 100); // never moves back
    expect(pick(index, "spread")).toBe("n3-f0-c2");
    // n3 was just picked: n2 holds the other free 2-core device (n1's only free one is larger).
    expect(pick(index, "spread", { pickedAt: [["n3", T0]] })).toBe("n2-f1-c2");
    expect(pick(index, "spread", { pickedAt: [["n3", T0]], bounds: { min: S(3), max: ANY.max } })).toBe("n1-f0-c4");
    expect(
      pick(index, "spread", {
        pickedAt: [
          ["n3", T0],
          ["n1", T0],
        ],
      }),
    ).toBe("n2-f1-c2");
  });

  it("passes over skipped devices, devices offered to a queue entry and those reserved before the claim ends", () => {
    const { index, queue, reservations } = fleet();
    const four = { min: S(3), max: ANY.max };
    expect(pick(index, "least-loaded", { skip: ["n2-f1-c2", "n3-f0-c2"] })).toBe("n2-f0-c4");
    // An entry is offered n2's smallest device; n3's is then the only free 2-core one.
    queue.insert({ userId: "u", pool: "p", priority: 0, ...ANY, durationMinutes: 5, maxWaitMinutes: 10, createdBy: "u" }, T0);
    queue.offer([index.device("n2-f1-c2")!], new Map(), T0);
    expect(pick(index, "least-loaded")).toBe("n3-f0-c2");
    // n2's 4-core device is booked from 5 minutes on: a 10-minute claim for 3+ cores takes n1's, a 5-minute one n2's.
    const booking = { userId: "u", pool: "p", ...ANY, durationMinutes: 5, reminderMinutes: 0, createdBy: "u" };
    reservations.insertPending("r1", { ...booking, startAt: T0 + 5 * MIN, endAt: T0 + 10 * MIN }, "n2-f0-c4", T0);
    expect(pick(index, "least-loaded", { bounds: four })).toBe("n1-f0-c4");
    expect(pick(index, "least-loaded", { bounds: four, skip: ["n1-f0-c4"] })).toBe("n2-f2-c8");
    expect(index.pick("least-loaded", four, new Set(["n1-f0-c4"]), new Map(), 5 * MIN, null)!.device_id).toBe("n2-f0-c4");
    // The reservation's own claim may take its device.
    expect(index.pick("least-loaded", four, new Set(["n1-f0-c4"]), new Map(), 10 * MIN, "r1")!.device_id).toBe("n2-f0-c4");
    // A window that ended, or was cancelled, holds nothing.
    reservations.end("r1", "cancelled", null, T0);
    expect(pick(index, "least-loaded", { bounds: four, skip: ["n1-f0-c4"] })).toBe("n2-f0-c4");
  });

  it("skipping every free device of the best node moves on to the next node", () => {
    const { index } = fleet();
    expect(pick(index, "load-first", { skip: ["n2-f0-c4", "n2-f1-c2", "n2-f2-c8"] })).toBe("n1-f0-c4");
    expect(pick(index, "least-loaded", { skip: ["n2-f0-c4", "n2-f1-c2", "n2-f2-c8"] })).toBe("n3-f0-c2");
    expect(pick(index, "least-loaded", { skip: ["n2-f0-c4", "n2-f1-c2", "n2-f2-c8", "n1-f0-c4", "n3-f0-c2"] })).toBeNull();
  });

  it("says when the quota's room, not the fleet, rules out the free devices that meet the floor", () => {
    const { index } = fleet();
    const small = { min: S(3), max: S(3) };
    expect(pick(index, "least-loaded", { bounds: small })).toBeNull();
    // Free and at least 3 cores: n1's and n2's 4-core devices and n2's 8-core one.
    expect(index.freeAboveMax(small, new Set(), 10 * MIN)).toEqual({ count: 3, smallest: S(4) });
    expect(index.freeAboveMax(small, new Set(["n1-f0-c4", "n2-f0-c4"]), 10 * MIN)).toEqual({ count: 1, smallest: S(8) });
    expect(index.freeAboveMax({ min: S(16), max: S(16) }, new Set(), 10 * MIN)).toEqual({ count: 0, smallest: null });
    // In service (held ones too, 2 cores each here): the queue's check.
    expect(index.inServiceAbove(S(3))).toEqual({ count: 3, smallest: S(4) });
    expect(index.inServiceAbove(S(2)).count).toBe(10);
  });
});

describe("the window search and the queue's reads", () => {
  it("freeForWindow: free devices, or busy ones freed by the start, with no open reservation overlapping", () => {
    const { index, reservations } = setup();
    index.apply(state("free", S(2)));
    index.apply(busy("frees-early", "n1", 2, T0 + 20 * MIN)); // just as the window starts
    index.apply(busy("frees-late", "n1", 2, T0 + 30 * MIN));
    index.apply(state("offline", { status: "offline" }));
    index.apply(state("booked", S(3)));
    index.apply(state("was-booked", S(4)));
    index.apply(state("too-big", S(64)));
    const booking = { userId: "u", pool: "p", ...ANY, durationMinutes: 10, reminderMinutes: 0, createdBy: "u" };
    reservations.insertPending("r1", { ...booking, startAt: T0 + 25 * MIN, endAt: T0 + 35 * MIN }, "booked", T0);
    reservations.insertPending("r2", { ...booking, startAt: T0 + 15 * MIN, endAt: T0 + 25 * MIN }, "was-booked", T0);
    reservations.end("r2", "cancelled", null, T0);
    const ids = (skip: string[] = [], startAt = T0 + 20 * MIN, endAt = T0 + 30 * MIN) =>
      index.freeForWindow({ min: S(1), max: S(8) }, startAt, endAt, new Set(skip)).map((d) => d.device_id);
    expect(ids()).toEqual(["free", "frees-early", "was-booked"]);
    expect(ids(["free"])).toEqual(["frees-early", "was-booked"]);
    // The booking's window ends as r1 starts: "booked" is free for it.
    expect(ids([], T0 + 15 * MIN, T0 + 25 * MIN)).toEqual(["free", "booked", "was-booked"]);
  });

  it("freeForQueue leaves out offered devices; matching, estimateDevices and soonestExpiry", () => {
    const { index, queue } = setup();
    expect(index.soonestExpiry()).toBeNull();
    index.apply(state("b", S(4)));
    index.apply(state("a", S(4)));
    index.apply(state("small", S(1)));
    index.apply(busy("busy", "n1", 2, T0 + 7 * MIN));
    index.apply(state("maint", { ...S(4), status: "maintenance" }));
    expect(index.freeForQueue().map((d) => d.device_id)).toEqual(["small", "a", "b"]);
    queue.insert({ userId: "u", pool: "p", priority: 0, min: S(3), max: S(8), durationMinutes: 5, maxWaitMinutes: 10, createdBy: "u" }, T0);
    queue.offer(index.freeForQueue(), new Map(), T0);
    expect(index.freeForQueue().map((d) => d.device_id)).toEqual(["small", "b"]);
    expect(index.matching(S(2), S(8))).toBe(4);
    expect(index.matching(S(2), S(8), true)).toBe(3);
    expect(index.soonestExpiry()).toBe(T0 + 7 * MIN);
    expect(
      index
        .estimateDevices(T0)
        .map((d) => d.freeAt)
        .sort(),
    ).toEqual([T0, T0, T0, T0 + 7 * MIN]);
  });
});

describe("reads and counters", () => {
  it("list pages by device id, with a status filter and the holders when asked", () => {
    const { index } = setup();
    ["d3", "d1", "d4", "d2"].forEach((id) => index.apply(state(id)));
    index.apply(busy("d2", "n1"));
    const p1 = index.list({ limit: 2 });
    expect([p1.items.map((d) => d.deviceId), p1.nextCursor]).toEqual([["d1", "d2"], "d2"]);
    expect(p1.items[0]).toEqual({ deviceId: "d1", node: "n1", ...S(2), status: "available" });
    const p2 = index.list({ limit: 2, cursor: p1.nextCursor! });
    expect([p2.items.map((d) => d.deviceId), p2.nextCursor]).toEqual([["d3", "d4"], null]);
    expect(index.list({ limit: 10, status: "allocated", withHolders: true }).items).toEqual([
      {
        deviceId: "d2",
        node: "n1",
        ...S(2),
        status: "allocated",
        allocationId: "a-d2",
        userId: "u",
        expiresAt: T0 + 30 * MIN,
        meta: { name: null, model: null, osVersion: null, labels: {} },
      },
    ]);
  });

  it("summary counts by status and node; byStatus; an empty pool counts zeros", () => {
    const { index } = setup();
    const s = { pool: "p1", strategy: "bin-pack" as const, idleReleaseSeconds: 90 };
    expect(index.summary(s)).toMatchObject({ devices: 0, available: 0, allocated: 0, maintenance: 0, offline: 0, nodes: 0 });
    index.apply(state("a"));
    index.apply(busy("b", "n2"));
    index.apply(state("c", { node: "n2", status: "offline" }));
    index.apply(state("d", { node: "n3", status: "maintenance" }));
    expect(index.summary(s)).toEqual({
      pool: "p1",
      strategy: "bin-pack",
      idleReleaseMinutes: 1.5,
      idleReleaseSeconds: 90,
      devices: 4,
      available: 1,
      allocated: 1,
      maintenance: 1,
      offline: 1,
      nodes: 3,
    });
    expect(index.summary({ ...s, idleReleaseSeconds: null }).idleReleaseMinutes).toBeNull();
    expect(index.byStatus()).toEqual({ available: 1, allocated: 1, offline: 1, maintenance: 1 });
  });

  it("snapshot shows the devices as views, the first FEED.poolSnapshotLimit of them", () => {
    const { sql, index } = setup();
    index.apply(busy("d0", "n1"));
    expect(index.snapshot()).toEqual({ devices: [deviceView(busy("d0", "n1"))], truncated: false });
    expect(index.snapshot().devices[0]!.expiresAt).toBe(new Date(T0 + 30 * MIN).toISOString());
    // The rest written at once (apply's node count per device would make this the slowest test here).
    sql.exec(
      `WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < ?)
       INSERT INTO devices (device_id, node, cpu, mem, storage, status, version)
       SELECT printf('d%04d', n), 'n1', 2, 1024, 100, 'available', 1 FROM i`,
      FEED.poolSnapshotLimit,
    );
    const snap = index.snapshot();
    expect([snap.devices.length, snap.truncated, snap.devices[0]!.deviceId]).toEqual([FEED.poolSnapshotLimit, true, "d0"]);
  });

  it("count adds to each (name, label) counter; counters lists them in order", () => {
    const { index } = setup();
    expect(index.counters()).toEqual([]);
    index.count([
      { name: "picks", label: "", value: 1 },
      { name: "ends", label: "expired", value: 2 },
    ]);
    index.count([
      { name: "picks", label: "", value: 1.5 },
      { name: "ends", label: "released", value: 1 },
    ]);
    expect(index.counters()).toEqual([
      { name: "ends", label: "expired", value: 2 },
      { name: "ends", label: "released", value: 1 },
      { name: "picks", label: "", value: 2.5 },
    ]);
  });
});

describe("classes (the catalogue)", () => {
  it("one row per spec in service, smallest first: devices, free, and the first held one's end", () => {
    const { index } = setup();
    index.apply(state("a1"));
    index.apply(busy("a2", "n1", 2, T0 + 40 * MIN));
    index.apply(busy("a3", "n2", 2, T0 + 10 * MIN));
    index.apply(state("b1", { ...S(8) }));
    index.apply(state("b2", { ...S(8), status: "maintenance" }));
    index.apply(state("c1", { ...S(4), status: "offline" }));
    expect(index.classes()).toEqual([
      { ...S(2), devices: 3, free: 1, nextFreeAt: T0 + 10 * MIN },
      { ...S(8), devices: 1, free: 1, nextFreeAt: null },
    ]);
  });
});
