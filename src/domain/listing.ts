/**
 * Lists over several pools (GET /scheduler/queue and /scheduler/reservations without `pool`).
 * Each pool answers its own list already in the list's order and at most `limit` long, so the
 * first `limit` of the union, in the same order, is the first `limit` over all pools.
 */

/**
 * The lists as one, in `order`, cut to `limit`. The sort is stable: items `order` calls equal
 * keep the order of `lists` (the caller passes pools by name), then each pool's own order.
 */
export function mergeInOrder<T>(lists: T[][], order: (a: T, b: T) => number, limit: number): T[] {
  return lists.flat().sort(order).slice(0, limit);
}

/** Queue entries: newest first, as a pool lists them (its tie-break, arrival, holds within the pool). */
export const newestJoinedFirst = (a: { joinedAt: string }, b: { joinedAt: string }): number =>
  Date.parse(b.joinedAt) - Date.parse(a.joinedAt);

/** Reservations: by start, then id, as a pool lists them. */
export const byStart = (a: { startAt: string; reservationId: string }, b: { startAt: string; reservationId: string }): number =>
  Date.parse(a.startAt) - Date.parse(b.startAt) || (a.reservationId < b.reservationId ? -1 : a.reservationId > b.reservationId ? 1 : 0);
