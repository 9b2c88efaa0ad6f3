// Cloudflare's published prices on the Workers Paid plan, beyond what the plan includes, as read
// on 2026-12-03 (docs/capacity.md cites each page). USD per unit.
export const PRICES = {
  source: {
    read: "2026-12-03",
    workers: "https://developers.cloudflare.com/workers/platform/pricing/",
    durableObjects: "https://developers.cloudflare.com/durable-objects/platform/pricing/",
    d1: "https://developers.cloudflare.com/d1/platform/pricing/",
    queues: "https://developers.cloudflare.com/queues/platform/pricing/",
  },
  workerRequest: 0.3 / 1e6,
  workerCpuMs: 0.02 / 1e6,
  objectRequest: 0.15 / 1e6,
  objectGbSecond: 12.5 / 1e6,
  /** Billed memory of an active object, whatever it uses. */
  objectGb: 0.128,
  sqlRowRead: 0.001 / 1e6,
  sqlRowWritten: 1.0 / 1e6,
  d1RowRead: 0.001 / 1e6,
  d1RowWritten: 1.0 / 1e6,
  /** Per operation; a message delivered once is three (write, read, delete). */
  queueOperation: 0.4 / 1e6,
  queueOperationsPerMessage: 3,
};

/**
 * The price of one cycle from its counts (bench/scenarios/cost.mjs), per million cycles.
 * `objectMs`: the active time each object request is billed for (duration), when known; the
 * Worker's CPU is priced from `workerCpuMs` (the runtime's CPU of the whole cycle, so an upper bound).
 */
export function cyclePrice(c) {
  const p = PRICES;
  const parts = {
    workerRequests: (c.workerRequests ?? 0) * p.workerRequest,
    workerCpu: (c.workerdCpuMs ?? 0) * p.workerCpuMs,
    objectRequests: (c.objectRequests ?? 0) * p.objectRequest,
    objectDuration: ((c.objectRequests ?? 0) * (c.objectMs ?? 0) * p.objectGb * p.objectGbSecond) / 1000,
    sqlRowsRead: (c.sqlRowsRead ?? 0) * p.sqlRowRead,
    sqlRowsWritten: (c.sqlRowsWritten ?? 0) * p.sqlRowWritten,
    d1RowsRead: (c.d1RowsRead ?? 0) * p.d1RowRead,
    d1RowsWritten: (c.d1RowsWritten ?? 0) * p.d1RowWritten,
    queue: (c.queueMessages ?? 0) * p.queueOperationsPerMessage * p.queueOperation,
  };
  const r4 = (x) => Math.round(x * 1e6 * 10_000) / 10_000;
  const total = Object.values(parts).reduce((a, b) => a + b, 0);
  return { usdPerMillion: r4(total), parts: Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, r4(v)])) };
}

/**
 * The protocol floor's cycle (bench/lib/runtime.mjs FLOOR_SCRIPT), counted by construction:
 * allocate = the Worker, a read of the pool, then the user's and the device's write side by side;
 * release = the Worker, the user, the device's write, the user's write. One row per write.
 */
export function floorCycle() {
  return {
    workerRequests: 2,
    objectRequests: 5,
    commits: 4,
    sqlRowsRead: 0,
    sqlRowsWritten: 4,
    d1RowsRead: 0,
    d1RowsWritten: 0,
    queueMessages: 0,
  };
}
