/**
 * FleetStore (src/stores/pool-fleet.ts) over a pool's index in Node (test/unit/storage.ts): the metadata the device's
 * states bring (kept when a state has none), natural order, the cursor, every filter, and the sort keys of rows written
 * before the migration.
 */
import { describe, expect, it } from "vitest";
import type { DeviceState, FleetFilter } from "../../src/contracts";
import type { DeviceMeta } from "../../src/domain/types";
import { Sql } from "../../src/objects/sql";
import { FLEET_SCHEMA, FleetStore } from "../../src/stores/pool-fleet";
import { INDEX_SCHEMA, IndexStore, SIZE_ORDER_SCHEMA } from "../../src/stores/pool-index";
import { QUEUE_SCHEMA } from "../../src/stores/pool-queue";
import { RESERVATIONS_SCHEMA } from "../../src/stores/pool-reservations";
import { memoryStorage } from "./storage";

function setup() {
  const sql = new Sql(memoryStorage() as unknown as DurableObjectStorage);
  sql.migrate([
    { name: "1", sql: [INDEX_SCHEMA, QUEUE_SCHEMA, RESERVATIONS_SCHEMA].join("\n") },
    { name: "2", sql: SIZE_ORDER_SCHEMA },
    { name: "3", sql: FLEET_SCHEMA },
  ]);
  return { sql, index: new IndexStore(sql), fleet: new FleetStore(sql) };
}

const meta = (over: Partial<DeviceMeta> = {}): DeviceMeta => ({ name: null, model: null, osVersion: null, labels: {}, ...over });

const state = (deviceId: string, over: Partial<DeviceState> = {}): DeviceState => ({
  deviceId,
  node: "n1",
  cpuCores: 2,
  memoryMB: 1024,
  storageMB: 100,
  status: "available",
  version: 1,
  allocationId: null,
  userId: null,
  expiresAt: null,
  meta: meta(),
  ...over,
});

const ids = (fleet: FleetStore, f: Partial<FleetFilter> = {}) => fleet.page("p1", { limit: 100, ...f }).items.map((d) => d.deviceId);

describe("FleetStore", () => {
  it("lists the index's devices with their metadata, in natural order", () => {
    const { index, fleet } = setup();
    for (const id of ["d-10", "d-2", "d-1", "d-100"]) index.apply(state(id, { meta: meta({ name: `Phone ${id}` }) }));
    const page = fleet.page("p1", { limit: 10 });
    expect(page.items.map((d) => d.deviceId)).toEqual(["d-1", "d-2", "d-10", "d-100"]);
    expect(page.more).toBe(false);
    expect(page.items[0]).toEqual({
      deviceId: "d-1",
      pool: "p1",
      node: "n1",
      cpuCores: 2,
      memoryMB: 1024,
      storageMB: 100,
      status: "available",
      name: "Phone d-1",
      model: null,
      osVersion: null,
      labels: {},
      version: 1,
      allocationId: null,
      userId: null,
      expiresAt: null,
    });
  });

  it("keeps the metadata when a newer state carries none (a claim's answer), and takes a newer one's", () => {
    const { index, fleet } = setup();
    index.apply(state("d1", { meta: meta({ name: "One", labels: { b: "2", a: "1" } }) }));
    index.apply(state("d1", { version: 2, status: "allocated", userId: "u", allocationId: "a", expiresAt: 5, meta: undefined }));
    expect(fleet.page("p1", { limit: 1 }).items[0]).toMatchObject({ status: "allocated", name: "One", labels: { a: "1", b: "2" } });
    index.apply(state("d1", { version: 3, meta: meta({ model: "M" }) }));
    expect(fleet.page("p1", { limit: 1 }).items[0]).toMatchObject({ status: "available", name: null, model: "M", labels: {} });
    // A device first heard of without metadata has none.
    index.apply(state("d2", { meta: undefined }));
    expect(fleet.page("p1", { limit: 5 }).items[1]).toMatchObject({ deviceId: "d2", name: null, labels: {} });
  });

  it("pages after a device id: each device once, whatever changed between pages", () => {
    const { index, fleet } = setup();
    const all = Array.from({ length: 12 }, (_, i) => `x-${i + 1}`);
    for (const id of [...all].reverse()) index.apply(state(id));
    const seen: string[] = [];
    let after: string | undefined;
    for (;;) {
      const p = fleet.page("p1", { limit: 5, after });
      seen.push(...p.items.map((d) => d.deviceId));
      if (!p.more) break;
      after = p.items[p.items.length - 1]!.deviceId;
      index.apply(state("x-1", { version: 9, status: "maintenance" }));
      index.apply(state("x-12", { version: 9, status: "offline" }));
    }
    expect(seen).toEqual(all);
    // A cursor naming a device that is gone still continues after its place.
    expect(ids(fleet, { after: "x-45" })).toEqual([]);
    expect(ids(fleet, { after: "x-4" })).toEqual(all.slice(4));
  });

  it("filters by status, node, holder, labels (all must match) and text in id, name or model", () => {
    const { index, fleet } = setup();
    index.apply(state("a1", { node: "n1", meta: meta({ name: "Alpha", model: "Pixel 8", labels: { tier: "gold", region: "eu" } }) }));
    index.apply(state("a2", { node: "n2", meta: meta({ name: "Beta", model: "Galaxy", labels: { tier: "gold", region: "us" } }) }));
    index.apply(
      state("b1", {
        node: "n2",
        status: "allocated",
        userId: "u1",
        allocationId: "x",
        expiresAt: 9,
        meta: meta({ labels: { tier: "x" } }),
      }),
    );
    index.apply(state("b2", { status: "maintenance", meta: undefined }));
    expect(ids(fleet, { status: "allocated" })).toEqual(["b1"]);
    expect(ids(fleet, { node: "n2" })).toEqual(["a2", "b1"]);
    expect(ids(fleet, { holder: "u1" })).toEqual(["b1"]);
    expect(ids(fleet, { holder: "u2" })).toEqual([]);
    expect(ids(fleet, { labels: [{ key: "tier", value: "gold" }] })).toEqual(["a1", "a2"]);
    expect(
      ids(fleet, {
        labels: [
          { key: "tier", value: "gold" },
          { key: "region", value: "us" },
        ],
      }),
    ).toEqual(["a2"]);
    expect(ids(fleet, { labels: [{ key: "nope", value: "gold" }] })).toEqual([]);
    expect(ids(fleet, { q: "PIXEL" })).toEqual(["a1"]);
    expect(ids(fleet, { q: "beta" })).toEqual(["a2"]);
    expect(ids(fleet, { q: "b" })).toEqual(["a2", "b1", "b2"]);
    // LIKE's wildcards are plain text here.
    expect(ids(fleet, { q: "%" })).toEqual([]);
    expect(ids(fleet, { q: "a", node: "n1" })).toEqual(["a1"]);
  });

  it("gives rows written before the migration their sort key before it lists", () => {
    const { sql, index, fleet } = setup();
    for (const id of ["r-10", "r-9"]) index.apply(state(id));
    sql.exec("UPDATE devices SET sort_key = NULL");
    expect(ids(fleet)).toEqual(["r-9", "r-10"]);
    expect(sql.all("SELECT device_id FROM devices WHERE sort_key IS NULL")).toEqual([]);
  });

  it("a pool with no devices lists nothing", () => {
    const { fleet } = setup();
    expect(fleet.page("p1", { limit: 5 })).toEqual({ items: [], more: false });
  });
});
