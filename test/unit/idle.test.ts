/** The idle release rule (src/domain/idle.ts): which grace applies and when it runs out. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { effectiveIdleGraceMs, idleDeadline, requestedIdleGraceMs, type IdleInput } from "../../src/domain/idle";

const MIN = 60_000;
const NOW = Date.UTC(2026, 10, 21, 12, 0, 0);
const BASE: IdleInput = {
  openSockets: 0,
  goneAt: NOW - 2 * MIN,
  allocatedAt: NOW - 10 * MIN,
  expiresAt: NOW + 60 * MIN,
  graceMs: 5 * MIN,
  now: NOW,
};

describe("idle.effectiveIdleGraceMs", () => {
  it("the smaller of allocation and pool when both are set", () => {
    expect(effectiveIdleGraceMs(10 * MIN, 3 * MIN)).toBe(3 * MIN);
    expect(effectiveIdleGraceMs(2 * MIN, 30 * MIN)).toBe(2 * MIN);
  });

  it("whichever is set alone; null when neither", () => {
    expect(effectiveIdleGraceMs(7 * MIN, null)).toBe(7 * MIN);
    expect(effectiveIdleGraceMs(undefined, 4 * MIN)).toBe(4 * MIN);
    expect(effectiveIdleGraceMs(null, undefined)).toBeNull();
    expect(effectiveIdleGraceMs(0, null)).toBeNull();
  });
});

describe("idle.requestedIdleGraceMs", () => {
  it("minutes, or the test-only seconds, or none", () => {
    expect(requestedIdleGraceMs(5, undefined)).toBe(5 * MIN);
    expect(requestedIdleGraceMs(undefined, 3)).toBe(3000);
    expect(requestedIdleGraceMs(5, 3)).toBe(3000);
    expect(requestedIdleGraceMs(undefined, undefined)).toBeNull();
  });
});

describe("idle.idleDeadline", () => {
  it("grace after the last socket went", () => {
    expect(idleDeadline(BASE)).toBe(NOW - 2 * MIN + 5 * MIN);
  });

  it("none while any socket is open, however long ago one went", () => {
    expect(idleDeadline({ ...BASE, openSockets: 1 })).toBeNull();
    expect(idleDeadline({ ...BASE, openSockets: 3, goneAt: NOW - 60 * MIN })).toBeNull();
  });

  it("none without a grace", () => {
    expect(idleDeadline({ ...BASE, graceMs: null })).toBeNull();
    expect(idleDeadline({ ...BASE, graceMs: 0 })).toBeNull();
  });

  it("never starts before the allocation: sockets gone long before count from allocatedAt", () => {
    expect(idleDeadline({ ...BASE, goneAt: NOW - 24 * 60 * MIN, allocatedAt: NOW - MIN })).toBe(NOW - MIN + 5 * MIN);
  });

  it("unknown since when (e.g. a restart dropped the sockets): the clock starts now", () => {
    expect(idleDeadline({ ...BASE, goneAt: null })).toBe(NOW + 5 * MIN);
  });

  it("already due when the grace has passed (the alarm releases it)", () => {
    expect(idleDeadline({ ...BASE, goneAt: NOW - 6 * MIN })).toBe(NOW - MIN);
  });

  it("none when expiry comes first (expiry releases it anyway)", () => {
    expect(idleDeadline({ ...BASE, expiresAt: NOW + 3 * MIN + 1 })).toBe(NOW + 3 * MIN);
    expect(idleDeadline({ ...BASE, expiresAt: NOW + 3 * MIN })).toBeNull();
    expect(idleDeadline({ ...BASE, expiresAt: NOW + MIN })).toBeNull();
  });

  it("property: a deadline is always grace after max(goneAt, allocatedAt), before expiry, and only with no socket", () => {
    fc.assert(
      fc.property(
        fc.nat(3),
        fc.option(fc.integer({ min: -100 * MIN, max: 0 }), { nil: null }),
        fc.integer({ min: -100 * MIN, max: 0 }),
        fc.integer({ min: 1, max: 200 * MIN }),
        fc.option(fc.integer({ min: 1, max: 60 * MIN }), { nil: null }),
        (open, gone, alloc, exp, grace) => {
          const i: IdleInput = {
            openSockets: open,
            goneAt: gone === null ? null : NOW + gone,
            allocatedAt: NOW + alloc,
            expiresAt: NOW + alloc + exp,
            graceMs: grace,
            now: NOW,
          };
          const at = idleDeadline(i);
          if (open > 0 || grace === null) {
            expect(at).toBeNull();
          } else {
            const expected = Math.max(i.goneAt ?? NOW, i.allocatedAt) + grace;
            expect(at).toBe(expected < i.expiresAt ? expected : null);
          }
        },
      ),
    );
  });
});
