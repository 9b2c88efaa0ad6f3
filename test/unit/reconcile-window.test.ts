/** reconcileWindow (src/domain/reconcile-window.ts): the window an operator's reconciliation checks, pure. */
import { describe, expect, it } from "vitest";
import { reconcileWindow } from "../../src/domain/reconcile-window";

const now = Date.UTC(2030, 5, 15, 12, 0, 0);
const rules = { graceMs: 10 * 60_000, lookbackMs: 31 * 86_400_000 };

describe("reconcileWindow", () => {
  it("{}: up to the grace before now, from the lookback before that, both ends said to be defaults", () => {
    expect(reconcileWindow({}, now, rules)).toEqual({
      from: now - rules.graceMs - rules.lookbackMs,
      to: now - rules.graceMs,
      defaulted: ["from", "to"],
    });
  });

  it("a given end is kept; only the other is filled in (from: the lookback before the given to)", () => {
    const to = now - 86_400_000;
    expect(reconcileWindow({ to }, now, rules)).toEqual({ from: to - rules.lookbackMs, to, defaulted: ["from"] });
    const from = now - 3_600_000;
    expect(reconcileWindow({ from }, now, rules)).toEqual({ from, to: now - rules.graceMs, defaulted: ["to"] });
  });

  it("both given: exactly those, nothing defaulted (a from after to is the route's 400, not changed here)", () => {
    expect(reconcileWindow({ from: 5, to: 10 }, now, rules)).toEqual({ from: 5, to: 10, defaulted: [] });
    expect(reconcileWindow({ from: 10, to: 5 }, now, rules)).toEqual({ from: 10, to: 5, defaulted: [] });
  });
});
