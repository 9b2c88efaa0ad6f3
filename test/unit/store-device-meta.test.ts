/**
 * A device's metadata in its store (src/stores/device.ts, src/stores/device-meta.ts) over SQLite in Node: registration,
 * updates (absent unchanged, null clears, labels replaced whole), the state the pool hears, and a registration again.
 */
import { describe, expect, it } from "vitest";
import { Sql } from "../../src/objects/sql";
import { DEVICE_SCHEMA, DeviceStore, type Registration } from "../../src/stores/device";
import { DEVICE_META_SCHEMA, metaOf } from "../../src/stores/device-meta";
import { memoryStorage } from "./storage";

const T0 = Date.UTC(2030, 0, 1);
const REG: Registration = { deviceId: "dev-1", pool: "p1", node: "n1", cpuCores: 4, memoryMB: 8192, storageMB: 1024 };

function setup() {
  const sql = new Sql(memoryStorage() as unknown as DurableObjectStorage);
  sql.migrate([
    { name: "1", sql: DEVICE_SCHEMA },
    { name: "4", sql: DEVICE_META_SCHEMA },
  ]);
  return { sql, store: new DeviceStore(sql) };
}

describe("device metadata", () => {
  it("is registered, shown by info and carried by the state the pool hears", () => {
    const { store } = setup();
    store.register({ ...REG, name: "One", model: "M1", osVersion: "14", labels: { z: "1", a: "2" } }, T0);
    const d = store.device()!;
    const meta = { name: "One", model: "M1", osVersion: "14", labels: { a: "2", z: "1" } };
    expect(store.info(d)).toMatchObject(meta);
    expect(Object.keys(store.info(d).labels)).toEqual(["a", "z"]);
    expect(store.state(d).meta).toEqual(meta);
    // An allocation's end reports it too.
    store.hold({ allocationId: "a1", userId: "u", expiresAt: T0 + 60_000, confirmAt: T0 + 1, warnAt: T0 + 2, reservationId: null }, T0);
    expect(store.end(store.current()!, "released", T0 + 10).state.meta).toEqual(meta);
  });

  it("updates: an absent field is unchanged, null clears, labels are replaced whole; the version moves", () => {
    const { store } = setup();
    store.register({ ...REG, name: "One", model: "M1", labels: { a: "1" } }, T0);
    store.update(store.device()!, { name: null, labels: { b: "2" } }, T0 + 1);
    const d = store.device()!;
    expect(store.info(d)).toMatchObject({ name: null, model: "M1", osVersion: null, labels: { b: "2" }, node: "n1", cpuCores: 4 });
    expect(d.version).toBe(2);
    store.update(d, { cpuCores: 8 }, T0 + 2);
    expect(store.info(store.device()!)).toMatchObject({ model: "M1", labels: { b: "2" }, cpuCores: 8 });
  });

  it("a registration again starts from the registration's metadata; none given is none", () => {
    const { store } = setup();
    store.register({ ...REG, name: "Old", labels: { a: "1" } }, T0);
    store.register(REG, T0 + 1);
    expect(store.info(store.device()!)).toMatchObject({ name: null, model: null, osVersion: null, labels: {} });
  });

  it("metaOf reads a row without the columns, or with unreadable labels, as none", () => {
    expect(metaOf({})).toEqual({ name: null, model: null, osVersion: null, labels: {} });
    expect(metaOf({ labels: "not json" }).labels).toEqual({});
    expect(metaOf({ labels: "[1]" }).labels).toEqual({});
    expect(metaOf({ labels: null }).labels).toEqual({});
  });
});
