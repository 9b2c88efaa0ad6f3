/** mergeInOrder and the two list orders (src/domain/listing.ts): lists over all pools, pure. */
import { describe, expect, it } from "vitest";
import { byStart, mergeInOrder, newestJoinedFirst } from "../../src/domain/listing";

const at = (ms: number) => new Date(Date.UTC(2030, 0, 1) + ms).toISOString();
const entry = (id: string, ms: number) => ({ id, joinedAt: at(ms) });
const booking = (reservationId: string, ms: number) => ({ reservationId, startAt: at(ms) });

describe("mergeInOrder", () => {
  it("merges the pools' lists newest first and cuts the merged list to the limit", () => {
    const a = [entry("a3", 30), entry("a1", 10)];
    const b = [entry("b4", 40), entry("b2", 20)];
    expect(mergeInOrder([a, b], newestJoinedFirst, 10).map((e) => e.id)).toEqual(["b4", "a3", "b2", "a1"]);
    expect(mergeInOrder([a, b], newestJoinedFirst, 3).map((e) => e.id)).toEqual(["b4", "a3", "b2"]);
    expect(mergeInOrder([], newestJoinedFirst, 3)).toEqual([]);
  });

  it("keeps the lists' order for equal times: pools in the order given, then each pool's own", () => {
    const a = [entry("a-later-seq", 10), entry("a-earlier-seq", 10)];
    const b = [entry("b", 10)];
    expect(mergeInOrder([a, b], newestJoinedFirst, 10).map((e) => e.id)).toEqual(["a-later-seq", "a-earlier-seq", "b"]);
  });

  it("reservations by start, then id, as a pool orders them", () => {
    const a = [booking("rsv_a:2", 10), booking("rsv_a:9", 30)];
    const b = [booking("rsv_b:1", 10), booking("rsv_b:5", 20)];
    expect(mergeInOrder([a, b], byStart, 10).map((r) => r.reservationId)).toEqual(["rsv_a:2", "rsv_b:1", "rsv_b:5", "rsv_a:9"]);
    expect(mergeInOrder([b, a], byStart, 2).map((r) => r.reservationId)).toEqual(["rsv_a:2", "rsv_b:1"]);
  });
});
