/** Work over many items with at most `limit` in flight at once (fleet lists over pools, bulk imports). */

/**
 * `fn` over every item, at most `limit` at a time; the results in the items' order. A throw rejects
 * the whole (the calls already started run on).
 */
export async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
  return out;
}
