/** The fleet's pure rules (src/domain/fleet.ts): natural order, the cursor, merging pools' pages, label filters, bulk changes. */
import { describe, expect, it } from "vitest";
import {
  byNaturalId,
  canonicalLabels,
  changesTo,
  cursorId,
  fleetCursor,
  labelFilter,
  mergeFleet,
  naturalKey,
} from "../../src/domain/fleet";
import type { DeviceInfo } from "../../src/domain/types";

const sortIds = (ids: string[]) =>
  ids
    .map((deviceId) => ({ deviceId }))
    .sort(byNaturalId)
    .map((d) => d.deviceId);

describe("naturalKey and byNaturalId", () => {
  it("order digit runs as numbers and everything else as the id does", () => {
    expect(sortIds(["us-std-10", "us-std-2", "us-std-1", "us-std-100", "us-std-20"])).toEqual([
      "us-std-1",
      "us-std-2",
      "us-std-10",
      "us-std-20",
      "us-std-100",
    ]);
    expect(sortIds(["b1", "a10", "a9", "a", "a-1", "A1"])).toEqual(["A1", "a", "a-1", "a9", "a10", "b1"]);
    // Several runs, each as a number.
    expect(sortIds(["r2-s10", "r10-s1", "r2-s9", "r1-s100"])).toEqual(["r1-s100", "r2-s9", "r2-s10", "r10-s1"]);
    // Leading zeros: the same number, then the id decides (a total order).
    expect(naturalKey("d-007")).toBe(naturalKey("d-7"));
    expect(sortIds(["d-7", "d-007", "d-08"])).toEqual(["d-007", "d-7", "d-08"]);
    expect(naturalKey("x")).toBe("x");
    expect(naturalKey("0")).toBe("0010");
  });

  it("keys compare as text the way the ids compare as numbers (the SQL sorts the keys)", () => {
    const ids = Array.from({ length: 300 }, (_, i) => `n-${(i * 7919) % 1000}`);
    const byKey = [...ids].sort((a, b) => (naturalKey(a) < naturalKey(b) ? -1 : naturalKey(a) > naturalKey(b) ? 1 : 0));
    expect(byKey.map((id) => Number(id.slice(2)))).toEqual(ids.map((id) => Number(id.slice(2))).sort((a, b) => a - b));
  });
});

describe("the cursor", () => {
  it("round-trips any device id and refuses anything else", () => {
    for (const id of ["d1", "us-std-10", "a.b_c:d@e-f", "x".repeat(128)]) expect(cursorId(fleetCursor(id))).toBe(id);
    expect(fleetCursor("d1")).not.toContain("d1");
    for (const bad of ["", "d1", "n1.", "n2.ZDE", "n1.ZDE=", "n1.***", `n1.${btoa("../x")}`, `n1.${btoa("-lead")}`])
      expect(cursorId(bad), bad).toBeNull();
  });
});

describe("labelFilter", () => {
  it("splits at the first colon (values may hold colons)", () => {
    expect(labelFilter("region:eu")).toEqual({ key: "region", value: "eu" });
    expect(labelFilter("url:a:b")).toEqual({ key: "url", value: "a:b" });
  });
});

describe("mergeFleet", () => {
  const d = (deviceId: string, version = 1, pool = "p") => ({ deviceId, version, pool });

  it("merges the pools' pages in natural order, cut to the limit, with the last id as the cursor", () => {
    const r = mergeFleet(
      [
        { items: [d("a-1"), d("a-10")], more: false },
        { items: [d("a-2"), d("a-3")], more: true },
      ],
      3,
    );
    expect(r.items.map((x) => x.deviceId)).toEqual(["a-1", "a-2", "a-3"]);
    expect(cursorId(r.nextCursor!)).toBe("a-3");
  });

  it("has no cursor when no pool has more and everything fits; a cursor when a pool has more", () => {
    expect(mergeFleet([{ items: [d("a")], more: false }], 5).nextCursor).toBeNull();
    expect(mergeFleet([], 5)).toEqual({ items: [], nextCursor: null });
    expect(cursorId(mergeFleet([{ items: [d("a")], more: true }], 1).nextCursor!)).toBe("a");
  });

  it("lists a device two pools list (it moved) once, as its newer version says", () => {
    const r = mergeFleet(
      [
        { items: [d("m", 3, "old"), d("z")], more: false },
        { items: [d("m", 5, "new")], more: false },
      ],
      10,
    );
    expect(r.items).toEqual([d("m", 5, "new"), d("z")]);
  });
});

describe("changesTo", () => {
  const current: DeviceInfo = {
    deviceId: "d1",
    pool: "p",
    node: "n1",
    cpuCores: 2,
    memoryMB: 1024,
    storageMB: 10,
    status: "available",
    name: "one",
    model: "m",
    osVersion: null,
    labels: { a: "1", b: "2" },
    createdAt: 0,
    updatedAt: 0,
  };
  const same = { deviceId: "d1", pool: "p", cpuCores: 2, memoryMB: 1024, storageMB: 10 };

  it("is null when the item is already true, whatever it leaves out and whatever the labels' order", () => {
    expect(changesTo(current, same)).toBeNull();
    expect(changesTo(current, { ...same, node: "n1", name: "one", labels: { b: "2", a: "1" } })).toBeNull();
  });

  it("names only what differs", () => {
    expect(changesTo(current, { ...same, pool: "q", cpuCores: 4 })).toEqual({ pool: "q", cpuCores: 4 });
    expect(changesTo(current, { ...same, node: "n2", osVersion: "14", labels: {} })).toEqual({ node: "n2", osVersion: "14", labels: {} });
    expect(changesTo(current, { ...same, name: null })).toEqual({ name: null });
  });
});

it("canonicalLabels orders the keys", () => {
  expect(Object.keys(canonicalLabels({ z: "1", a: "2", m: "3" }))).toEqual(["a", "m", "z"]);
});
