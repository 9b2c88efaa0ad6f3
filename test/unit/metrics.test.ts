/** Pure rules of observability: what a device change counts, the text format, the log line. */
import { describe, expect, it } from "vitest";
import { EXPIRY_LAG_BUCKETS_MS, countChange, lagBucket, lagHistogram, render } from "../../src/metrics";
import { logLine } from "../../src/log";

describe("countChange", () => {
  it("counts an allocation when the index first sees it, once", () => {
    expect(countChange({ allocationId: null }, { allocationId: "a1" })).toEqual([{ name: "allocations", label: "", value: 1 }]);
    expect(countChange(null, { allocationId: "a1" })).toEqual([{ name: "allocations", label: "", value: 1 }]);
    // The same allocation seen again (an extension, a newer version) is not a new one.
    expect(countChange({ allocationId: "a1" }, { allocationId: "a1" })).toEqual([]);
  });

  it("counts a release with the reason and lag of the change that ended it", () => {
    expect(
      countChange({ allocationId: "a1" }, { allocationId: null, ended: { allocationId: "a1", reason: "expired", lagMs: 40 } }),
    ).toEqual([
      { name: "releases", label: "expired", value: 1 },
      { name: "expiry_lag_bucket", label: "50", value: 1 },
      { name: "expiry_lag_sum_ms", label: "", value: 40 },
      { name: "expiry_lag_count", label: "", value: 1 },
    ]);
    expect(
      countChange({ allocationId: "a1" }, { allocationId: null, ended: { allocationId: "a1", reason: "released", lagMs: null } }),
    ).toEqual([{ name: "releases", label: "released", value: 1 }]);
  });

  it("a skipped version still counts the release (reason unknown) and the next allocation", () => {
    expect(countChange({ allocationId: "a1" }, { allocationId: "a2" })).toEqual([
      { name: "releases", label: "unknown", value: 1 },
      { name: "allocations", label: "", value: 1 },
    ]);
    // An `ended` about another allocation does not lend its reason.
    expect(
      countChange({ allocationId: "a1" }, { allocationId: null, ended: { allocationId: "a0", reason: "idle", lagMs: null } })[0],
    ).toEqual({ name: "releases", label: "unknown", value: 1 });
  });

  it("a device the index never saw allocated counts nothing when it frees", () => {
    expect(countChange(null, { allocationId: null, ended: { allocationId: "a1", reason: "released", lagMs: null } })).toEqual([]);
  });
});

describe("expiry lag histogram", () => {
  it("puts a lag in the first bucket that holds it, past the last in +Inf", () => {
    expect(lagBucket(0)).toBe("5");
    expect(lagBucket(5)).toBe("5");
    expect(lagBucket(6)).toBe("10");
    expect(lagBucket(60_000)).toBe("60000");
    expect(lagBucket(60_001)).toBe("+Inf");
  });

  it("renders cumulative buckets in seconds, then sum (s) and count", () => {
    const s = lagHistogram(
      { pool: "p" },
      new Map([
        ["5", 2],
        ["100", 1],
        ["+Inf", 1],
      ]),
      70_012,
      4,
    );
    const buckets = s.filter((x) => x.suffix === "_bucket");
    expect(buckets).toHaveLength(EXPIRY_LAG_BUCKETS_MS.length + 1);
    expect(buckets[0]).toEqual({ suffix: "_bucket", labels: { pool: "p", le: "0.005" }, value: 2 });
    expect(buckets.find((b) => b.labels!.le === "0.1")!.value).toBe(3);
    expect(buckets.find((b) => b.labels!.le === "60")!.value).toBe(3);
    expect(buckets.at(-1)).toEqual({ suffix: "_bucket", labels: { pool: "p", le: "+Inf" }, value: 4 });
    expect(s.find((x) => x.suffix === "_sum")!.value).toBeCloseTo(70.012);
    expect(s.find((x) => x.suffix === "_count")!.value).toBe(4);
  });
});

describe("Prometheus text", () => {
  it("writes HELP and TYPE, then one sample per line, with escaped labels", () => {
    const text = render([
      {
        name: "x_total",
        help: "Things\nand \\ more",
        type: "counter",
        samples: [{ value: 3 }, { labels: { pool: 'a"b\\c\nd' }, value: 1.5 }],
      },
      { name: "h", help: "h", type: "histogram", samples: [{ suffix: "_count", value: Infinity }] },
    ]);
    expect(text).toBe(
      [
        "# HELP x_total Things\\nand \\\\ more",
        "# TYPE x_total counter",
        "x_total 3",
        'x_total{pool="a\\"b\\\\c\\nd"} 1.5',
        "# HELP h h",
        "# TYPE h histogram",
        "h_count +Inf",
        "",
      ].join("\n"),
    );
  });
});

describe("logLine", () => {
  it("puts ts, level, msg, then the ids that tie lines together, leaving out empty ones", () => {
    const line = logLine(
      "info",
      "allocation ended",
      { reason: "expired", allocationId: "a1", userId: "u1", deviceId: null, requestId: "", pool: undefined },
      Date.UTC(2026, 11, 2),
    );
    expect(line).toBe(
      '{"ts":"2026-12-02T00:00:00.000Z","level":"info","msg":"allocation ended","userId":"u1","allocationId":"a1","reason":"expired"}',
    );
  });

  it("fields cannot overwrite ts, level or msg; errors become their message", () => {
    const o = JSON.parse(logLine("warn", "m", { level: "debug", msg: "x", ts: 1, error: new Error("boom") }));
    expect(o).toMatchObject({ level: "warn", msg: "m", error: "boom" });
    expect(typeof o.ts).toBe("string");
  });
});
