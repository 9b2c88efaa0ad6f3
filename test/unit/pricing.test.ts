/**
 * Unit tests of src/domain/pricing.ts: exact prices (rounding up to a whole cent, MB
 * shares of a GB rate, zero and fractional seconds, products far beyond 2^53), estimates
 * rounding seconds up, the funds check at its boundary, billing periods at year and leap
 * edges, invoice totals and money formatting. Hand-computed values throughout; a few
 * fast-check properties check the same rules over many inputs.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { DeviceSpec } from "../../src/domain/types";
import {
  MICROS_PER_MINOR,
  checkFunds,
  estimateOf,
  formatMoney,
  invoiceTotals,
  periodBounds,
  periodOf,
  previousPeriod,
  priceOf,
  type LedgerLine,
  type Rates,
} from "../../src/domain/pricing";

/** The seeded `standard` plan (micro-cents per second). */
const STANDARD: Rates = { basePerSecond: 2500, cpuCorePerSecond: 1000, memoryGBPerSecond: 500, storageGBPerSecond: 10 };
const NONE: DeviceSpec = { cpuCores: 0, memoryMB: 0, storageMB: 0 };
const base = (basePerSecond: number): Rates => ({
  basePerSecond,
  cpuCorePerSecond: 0,
  memoryGBPerSecond: 0,
  storageGBPerSecond: 0,
});
const memOnly = (memoryGBPerSecond: number): Rates => ({
  basePerSecond: 0,
  cpuCorePerSecond: 0,
  memoryGBPerSecond,
  storageGBPerSecond: 0,
});
const DAY = 86_400_000;

describe("priceOf", () => {
  it("standard plan: 2 cores, 4 GB, 32 GB for an hour is 6820 µ¢/s × 3600 = 24.552 ¢ → 25", () => {
    expect(priceOf(STANDARD, { cpuCores: 2, memoryMB: 4096, storageMB: 32768 }, 3600)).toBe(25);
    // Each part alone, an hour each: 9.00 ¢ base, 3.60 ¢ per core, 1.80 ¢ per GB of memory, 0.036 ¢ per GB of storage.
    expect(priceOf(base(2500), NONE, 3600)).toBe(9);
    expect(priceOf({ ...base(0), cpuCorePerSecond: 1000 }, { ...NONE, cpuCores: 10 }, 3600)).toBe(36);
    expect(priceOf(memOnly(500), { ...NONE, memoryMB: 10 * 1024 }, 3600)).toBe(18);
    expect(priceOf({ ...base(0), storageGBPerSecond: 10 }, { ...NONE, storageMB: 1000 * 1024 }, 3600)).toBe(36);
  });

  it("rounds up to a whole cent: any fraction costs a cent, exact cents stay", () => {
    expect(MICROS_PER_MINOR).toBe(1_000_000);
    expect(priceOf(base(1), NONE, 1)).toBe(1); // 0.000001 ¢
    expect(priceOf(base(499_999), NONE, 1)).toBe(1); // 0.499999 ¢
    expect(priceOf(base(500_000), NONE, 1)).toBe(1); // 0.5 ¢
    expect(priceOf(base(1_000_000), NONE, 1)).toBe(1); // exactly 1 ¢
    expect(priceOf(base(1_000_001), NONE, 1)).toBe(2); // 1.000001 ¢
    expect(priceOf(base(4999), NONE, 100)).toBe(1); // 0.4999 ¢
    expect(priceOf(base(1), NONE, 1_000_000)).toBe(1); // exactly 1 ¢ from a 1 µ¢ rate
    expect(priceOf(base(1), NONE, 1_000_001)).toBe(2);
    expect(priceOf(base(1_500_000), NONE, 1)).toBe(2);
    expect(priceOf(base(2_000_000), NONE, 1)).toBe(2);
    expect(priceOf(base(2_000_001), NONE, 1)).toBe(3);
    // The standard plan's smallest device for 3 seconds: 2500 µ¢/s × 3 = 0.0075 ¢ → 1 ¢, not free.
    expect(priceOf(STANDARD, NONE, 3)).toBe(1);
  });

  it("prices memory and storage per MB as a pro-rata share of the GB rate (1024 MB), rounding only once", () => {
    expect(priceOf(memOnly(1024), { ...NONE, memoryMB: 1 }, 1_000_000)).toBe(1); // 1 µ¢/s for 1 MB, a million seconds
    expect(priceOf(memOnly(1000), { ...NONE, memoryMB: 1 }, 1_024_000)).toBe(1); // 1000/1024 µ¢/s × 1,024,000 s = 1,000,000 µ¢
    expect(priceOf(memOnly(1000), { ...NONE, memoryMB: 1 }, 1_024_001)).toBe(2); // 1,000,000.98 µ¢ → 2
    expect(priceOf(memOnly(1000), { ...NONE, memoryMB: 1 }, 512_000)).toBe(1); // 500,000 µ¢ = 0.5 ¢ → 1
    expect(priceOf(memOnly(2_000_000), { ...NONE, memoryMB: 512 }, 10)).toBe(10); // half a GB at 2 ¢/GB-s
    const storage = { basePerSecond: 0, cpuCorePerSecond: 0, memoryGBPerSecond: 0, storageGBPerSecond: 3 };
    // 3 µ¢/GB-s × 100 MB = 300/1024 µ¢/s; × 3,413,333 s = 999,999.90 µ¢ → 1; one second more: 1,000,000.195 → 2.
    expect(priceOf(storage, { ...NONE, storageMB: 100 }, 3_413_333)).toBe(1);
    expect(priceOf(storage, { ...NONE, storageMB: 100 }, 3_413_334)).toBe(2);
    // The parts add up before rounding: two 0.3 ¢ shares make 0.6 ¢ → 1, not 1 + 1.
    const split = { basePerSecond: 0, cpuCorePerSecond: 0, memoryGBPerSecond: 300_000, storageGBPerSecond: 300_000 };
    expect(priceOf(split, { cpuCores: 0, memoryMB: 1024, storageMB: 1024 }, 1)).toBe(1);
  });

  it("costs nothing for zero (or negative) seconds and rounds fractional seconds to the nearest whole one", () => {
    expect(priceOf(STANDARD, { cpuCores: 64, memoryMB: 262144, storageMB: 1048576 }, 0)).toBe(0);
    expect(priceOf(STANDARD, { cpuCores: 2, memoryMB: 4096, storageMB: 32768 }, -3600)).toBe(0);
    expect(priceOf(base(1_000_000), NONE, -0.5)).toBe(0);
    expect(priceOf(base(1_000_000), NONE, 0.49)).toBe(0);
    expect(priceOf(base(1_000_000), NONE, 0.5)).toBe(1);
    expect(priceOf(base(1_000_000), NONE, 2.5)).toBe(3);
  });

  it("keeps every digit when the exact product is far beyond 2^53", () => {
    // 20,978,379,216 µ¢/s × 47,687,500 s = 1,000,406,458,863,000,000 µ¢: exactly …863 ¢ (a float product says …864).
    expect(20_978_379_216 * 47_687_500).toBeGreaterThan(Number.MAX_SAFE_INTEGER);
    expect(priceOf(base(20_978_379_216), NONE, 47_687_500)).toBe(1_000_406_458_863);
    expect(Math.ceil((20_978_379_216 * 47_687_500) / 1e6)).toBe(1_000_406_458_864); // why BigInt is needed
    // 100,613,112,087 µ¢/s × 100,793,977 s = 10,141,195,705,595,499,999 µ¢ → …596 ¢.
    expect(priceOf(base(100_613_112_087), NONE, 100_793_977)).toBe(10_141_195_705_596);
    // All four parts large at once (hand-summed below).
    const big: Rates = {
      basePerSecond: 987_654_321,
      cpuCorePerSecond: 123_456_789,
      memoryGBPerSecond: 555_555_555,
      storageGBPerSecond: 77_777_777,
    };
    const spec = { cpuCores: 64, memoryMB: 262_144, storageMB: 1_048_576 };
    // Per second: 987,654,321 + 64 × 123,456,789 + 256 × 555,555,555 + 1024 × 77,777,777 = 230,755,554,545 µ¢.
    expect(priceOf(big, spec, 1)).toBe(230_756); // 230,755.554545 ¢
    expect(priceOf(big, spec, 31_536_000)).toBe(7_277_107_168_132); // a year: 7,277,107,168,131.12 ¢
  });
});

describe("estimateOf", () => {
  it("charges whole seconds, rounding a started second up", () => {
    const cent = base(1_000_000); // 1 ¢ per second
    expect(estimateOf(cent, NONE, 0)).toBe(0);
    expect(estimateOf(cent, NONE, 1)).toBe(1);
    expect(estimateOf(cent, NONE, 999)).toBe(1);
    expect(estimateOf(cent, NONE, 1000)).toBe(1);
    expect(estimateOf(cent, NONE, 1001)).toBe(2);
    expect(estimateOf(cent, NONE, 60 * 60_000)).toBe(3600);
    expect(estimateOf(STANDARD, { cpuCores: 2, memoryMB: 4096, storageMB: 32768 }, 60 * 60_000)).toBe(25);
    expect(estimateOf(STANDARD, { cpuCores: 2, memoryMB: 4096, storageMB: 32768 }, 30 * 60_000)).toBe(13); // 12.276 → 13
  });
});

describe("checkFunds", () => {
  const funds = { balance: 100, currency: "USD" };

  it("allows exactly what is available and refuses one minor unit more, with the numbers", () => {
    expect(checkFunds(funds, 30, 70)).toBeNull();
    const refused = checkFunds(funds, 30, 71);
    expect(refused).toMatchObject({ ok: false, status: 402, code: "INSUFFICIENT_BALANCE" });
    expect(refused!.details).toEqual({ balance: 100, committed: 30, available: 70, required: 71, currency: "USD" });
    expect(typeof refused!.message).toBe("string");
  });

  it("a free request passes at zero, not below; a negative or fully committed balance refuses anything that costs", () => {
    expect(checkFunds({ balance: 0, currency: "USD" }, 0, 0)).toBeNull();
    expect(checkFunds(funds, 100, 0)).toBeNull();
    expect(checkFunds(funds, 100, 1)!.details).toEqual({
      balance: 100,
      committed: 100,
      available: 0,
      required: 1,
      currency: "USD",
    });
    expect(checkFunds({ balance: -5, currency: "USD" }, 0, 0)!.details).toEqual({
      balance: -5,
      committed: 0,
      available: -5,
      required: 0,
      currency: "USD",
    });
    expect(checkFunds(funds, 101, 0)!.code).toBe("INSUFFICIENT_BALANCE");
  });

  it("property: allowed exactly when balance − committed ≥ required", () => {
    fc.assert(
      fc.property(fc.integer({ min: -1e9, max: 1e9 }), fc.nat(1e9), fc.nat(1e9), (balance, committed, required) => {
        const r = checkFunds({ balance, currency: "USD" }, committed, required);
        expect(r === null).toBe(balance - committed >= required);
        if (r) expect(r.details).toEqual({ balance, committed, available: balance - committed, required, currency: "USD" });
      }),
    );
  });
});

describe("billing periods (calendar months, UTC)", () => {
  it("periodOf names the UTC month, at its first and last millisecond", () => {
    expect(periodOf(Date.UTC(2026, 0, 1))).toBe("2026-01");
    expect(periodOf(Date.UTC(2026, 0, 1) - 1)).toBe("2025-12");
    expect(periodOf(Date.UTC(2026, 11, 31, 23, 59, 59, 999))).toBe("2026-12");
    expect(periodOf(Date.UTC(2024, 1, 29, 12))).toBe("2024-02");
    expect(periodOf(Date.UTC(2026, 9, 31, 23, 30) /* 01:30 on Nov 1 in UTC+2 */)).toBe("2026-10");
  });

  it("periodBounds gives [start, end) of the month: leap February, December into January", () => {
    expect(periodBounds("2026-01")).toEqual({ start: Date.UTC(2026, 0, 1), end: Date.UTC(2026, 1, 1) });
    expect(periodBounds("2026-12")).toEqual({ start: Date.UTC(2026, 11, 1), end: Date.UTC(2027, 0, 1) });
    const feb = (y: string) => {
      const b = periodBounds(`${y}-02`)!;
      return (b.end - b.start) / DAY;
    };
    expect(feb("2024")).toBe(29);
    expect(feb("2026")).toBe(28);
    expect(feb("2000")).toBe(29); // divisible by 400
    expect(feb("2100")).toBe(28); // divisible by 100 only
    expect(periodBounds("2026-04")!.end - periodBounds("2026-04")!.start).toBe(30 * DAY);
  });

  it("periodBounds refuses what is not YYYY-MM", () => {
    for (const bad of ["2026-13", "2026-00", "2026-1", "26-01", "2026-01-01", "2026/01", "", " 2026-01", "2026-01 ", "202a-01", "2026-1a"])
      expect(periodBounds(bad), bad).toBeNull();
  });

  it("years below 100 are those years, not 19xx (Date.UTC would map them)", () => {
    expect(periodBounds("0099-12")).toEqual({
      start: Date.parse("0099-12-01T00:00:00Z"),
      end: Date.parse("0100-01-01T00:00:00Z"),
    });
    expect(periodBounds("0000-01")!.start).toBe(Date.parse("0000-01-01T00:00:00Z"));
    expect(periodOf(Date.parse("0050-06-15T00:00:00Z"))).toBe("0050-06");
    expect(previousPeriod(Date.parse("0050-01-15T00:00:00Z"))).toBe("0049-12");
  });

  it("previousPeriod is the last month that has fully ended", () => {
    expect(previousPeriod(Date.UTC(2026, 0, 15))).toBe("2025-12");
    expect(previousPeriod(Date.UTC(2026, 0, 1))).toBe("2025-12");
    expect(previousPeriod(Date.UTC(2026, 2, 1))).toBe("2026-02"); // the first instant of March: February has ended
    expect(previousPeriod(Date.UTC(2026, 2, 1) - 1)).toBe("2026-01"); // the last instant of February: it has not
    expect(previousPeriod(Date.UTC(2024, 2, 1))).toBe("2024-02");
    expect(previousPeriod(Date.UTC(2026, 11, 31, 23, 59, 59, 999))).toBe("2026-11");
  });

  it("property: a month's bounds hold every instant of it, and the previous month ends where it starts", () => {
    const t = fc.integer({ min: Date.UTC(1970, 0, 1), max: Date.UTC(2200, 0, 1) });
    fc.assert(
      fc.property(t, (now) => {
        const b = periodBounds(periodOf(now))!;
        expect(now >= b.start && now < b.end).toBe(true);
        expect(periodOf(b.start)).toBe(periodOf(now));
        expect(periodOf(b.end - 1)).toBe(periodOf(now));
        expect(periodOf(b.end)).not.toBe(periodOf(now));
        const prev = periodBounds(previousPeriod(now))!;
        expect(prev.end).toBe(b.start);
        expect(prev.end).toBeLessThanOrEqual(now);
      }),
    );
  });
});

describe("invoiceTotals", () => {
  it("splits charges, credits and debits and closes at opening + every amount", () => {
    const lines: LedgerLine[] = [
      { kind: "starting_credit", amount: 1000 },
      { kind: "top_up", amount: 500 },
      { kind: "charge", amount: -25 },
      { kind: "charge", amount: -30 },
      { kind: "adjustment", amount: -100 },
      { kind: "adjustment", amount: 40 },
    ];
    expect(invoiceTotals(0, lines)).toEqual({
      openingBalance: 0,
      charges: 55,
      credits: 1540,
      debits: 100,
      closingBalance: 1385,
    });
    expect(invoiceTotals(1000, lines)).toEqual({
      openingBalance: 1000,
      charges: 55,
      credits: 1540,
      debits: 100,
      closingBalance: 2385,
    });
  });

  it("a month without lines closes where it opened; a negative opening stays negative", () => {
    expect(invoiceTotals(975, [])).toEqual({
      openingBalance: 975,
      charges: 0,
      credits: 0,
      debits: 0,
      closingBalance: 975,
    });
    expect(invoiceTotals(-20, [{ kind: "charge", amount: -5 }])).toEqual({
      openingBalance: -20,
      charges: 5,
      credits: 0,
      debits: 0,
      closingBalance: -25,
    });
  });

  it("a zero adjustment counts as neither credit nor debit in effect; a positive charge line (a refund) lowers the charges", () => {
    expect(invoiceTotals(0, [{ kind: "adjustment", amount: 0 }])).toEqual({
      openingBalance: 0,
      charges: 0,
      credits: 0,
      debits: 0,
      closingBalance: 0,
    });
    expect(
      invoiceTotals(100, [
        { kind: "charge", amount: -30 },
        { kind: "charge", amount: 10 },
      ]),
    ).toMatchObject({ charges: 20, closingBalance: 80 });
  });

  it("property: closing = opening + the sum of all lines, and every part is non-negative when charges are", () => {
    const line = fc.oneof(
      fc.record({ kind: fc.constant("charge" as const), amount: fc.integer({ min: -1e6, max: 0 }) }),
      fc.record({ kind: fc.constantFrom("starting_credit" as const, "top_up" as const), amount: fc.nat(1e6) }),
      fc.record({ kind: fc.constant("adjustment" as const), amount: fc.integer({ min: -1e6, max: 1e6 }) }),
    );
    fc.assert(
      fc.property(fc.integer({ min: -1e9, max: 1e9 }), fc.array(line, { maxLength: 30 }), (opening, lines) => {
        const t = invoiceTotals(opening, lines);
        expect(t.closingBalance).toBe(opening + lines.reduce((s, l) => s + l.amount, 0));
        expect(t.charges).toBe(0 - lines.filter((l) => l.kind === "charge").reduce((s, l) => s + l.amount, 0));
        expect(t.charges >= 0 && t.credits >= 0 && t.debits >= 0).toBe(true);
        expect(t.credits - t.debits).toBe(lines.filter((l) => l.kind !== "charge").reduce((s, l) => s + l.amount, 0));
      }),
    );
  });
});

describe("formatMoney", () => {
  it("writes minor units as major.minor with the currency", () => {
    expect(formatMoney(1234, "USD")).toBe("12.34 USD");
    expect(formatMoney(100, "USD")).toBe("1.00 USD");
    expect(formatMoney(99, "USD")).toBe("0.99 USD");
    expect(formatMoney(5, "USD")).toBe("0.05 USD");
    expect(formatMoney(0, "USD")).toBe("0.00 USD");
    expect(formatMoney(-0, "USD")).toBe("0.00 USD");
    expect(formatMoney(-5, "USD")).toBe("-0.05 USD");
    expect(formatMoney(-99, "EUR")).toBe("-0.99 EUR");
    expect(formatMoney(-1234, "USD")).toBe("-12.34 USD");
    expect(formatMoney(123_456_789_012, "USD")).toBe("1234567890.12 USD");
  });

  it("property: the text reads back as the same amount", () => {
    fc.assert(
      fc.property(fc.integer({ min: -1e12, max: 1e12 }), (minor) => {
        const m = /^(-?)(\d+)\.(\d{2}) USD$/.exec(formatMoney(minor, "USD"));
        expect(m).not.toBeNull();
        const back = (m![1] ? -1 : 1) * (Number(m![2]) * 100 + Number(m![3]));
        expect(back === minor || (minor === 0 && back === 0)).toBe(true);
      }),
    );
  });
});

describe("priceOf properties", () => {
  const rates = fc.record({
    basePerSecond: fc.nat(10_000_000),
    cpuCorePerSecond: fc.nat(10_000_000),
    memoryGBPerSecond: fc.nat(10_000_000),
    storageGBPerSecond: fc.nat(10_000_000),
  });
  const spec = fc.record({ cpuCores: fc.nat(256), memoryMB: fc.nat(1_048_576), storageMB: fc.nat(16_777_216) });
  const seconds = fc.nat(10_000_000);

  it("is the smallest whole cent not below the exact cost", () => {
    fc.assert(
      fc.property(rates, spec, seconds, (r, s, sec) => {
        const exactX1024 =
          (BigInt(r.basePerSecond) * 1024n +
            BigInt(r.cpuCorePerSecond) * BigInt(s.cpuCores) * 1024n +
            BigInt(r.memoryGBPerSecond) * BigInt(s.memoryMB) +
            BigInt(r.storageGBPerSecond) * BigInt(s.storageMB)) *
          BigInt(sec);
        const unit = 1024n * 1_000_000n;
        const p = BigInt(priceOf(r, s, sec));
        // p − 1 < exact ≤ p (in cents)
        expect(exactX1024 <= p * unit).toBe(true);
        expect(exactX1024 > (p - 1n) * unit).toBe(true);
      }),
    );
  });

  it("never falls when seconds or any rate grow, and two halves of a hold cost the whole within a cent", () => {
    fc.assert(
      fc.property(rates, spec, seconds, seconds, (r, s, a, b) => {
        expect(priceOf(r, s, a + b)).toBeGreaterThanOrEqual(priceOf(r, s, Math.min(a, b)));
        expect(priceOf({ ...r, basePerSecond: r.basePerSecond + 1 }, s, a)).toBeGreaterThanOrEqual(priceOf(r, s, a));
        expect(Math.abs(priceOf(r, s, a + b) - priceOf(r, s, a) - priceOf(r, s, b))).toBeLessThanOrEqual(1);
      }),
    );
  });
});
