// A bounded load generator: `clients` loops against 127.0.0.1 over keep-alive HTTP/1.1
// connections, each doing one request (or one scenario step) after another, until the time
// is up. Latencies are recorded per request; nothing retries.
import http from "node:http";

const agents = new Map();
function agentFor(clients) {
  let a = agents.get(clients);
  if (!a) {
    a = new http.Agent({ keepAlive: true, maxSockets: clients, maxFreeSockets: clients });
    agents.set(clients, a);
  }
  return a;
}

/** A response body: parsed JSON when it is JSON, else the text. */
export function parseBody(chunks) {
  const text = Buffer.concat(chunks).toString("utf8");
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** One HTTP request; resolves with {status, body (parsed JSON when possible), ms}. */
export function request(base, method, path, { body, headers = {}, clients = 64 } = {}) {
  const url = new URL(path, base);
  if (url.hostname !== "127.0.0.1") throw new Error(`load generators only target 127.0.0.1, not ${url.hostname}`);
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.request(
      url,
      {
        method,
        agent: agentFor(clients),
        headers: {
          ...headers,
          ...(data ? { "content-type": "application/json", "content-length": Buffer.byteLength(data) } : {}),
        },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, body: parseBody(chunks), ms: performance.now() - t0 }));
      },
    );
    req.on("error", reject);
    if (data) req.write(data);
    req.end();
  });
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return Math.round(sorted[i] * 100) / 100;
}

export function summarize(latencies) {
  const s = [...latencies].sort((a, b) => a - b);
  return {
    count: s.length,
    p50Ms: percentile(s, 50),
    p99Ms: percentile(s, 99),
    maxMs: s.length ? Math.round(s[s.length - 1] * 100) / 100 : null,
  };
}

/**
 * Runs `clients` concurrent loops of `step(clientIndex)` for `seconds` (after `warmupSeconds`
 * not counted). `step` returns the number of requests it made and records its own latencies.
 */
export async function runClients({ clients, seconds, warmupSeconds = 1, step, paceMs = 0 }) {
  let counting = false;
  let requests = 0;
  let errors = 0;
  const end = Date.now() + (warmupSeconds + seconds) * 1000;
  setTimeout(() => (counting = true), warmupSeconds * 1000).unref();
  let t0 = 0;
  const startCount = setTimeout(() => (t0 = performance.now()), warmupSeconds * 1000);
  startCount.unref();
  await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      // Paced: client i starts a step every `paceMs` (spread over the first period), whatever
      // the last one took, so the offered load is fixed instead of following the latency.
      let next = Date.now() + (paceMs ? (paceMs * i) / clients : 0);
      while (Date.now() < end) {
        if (paceMs) {
          const wait = next - Date.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          next += paceMs;
          if (Date.now() >= end) break;
        }
        try {
          const n = await step(i, () => counting);
          if (counting) requests += n;
        } catch {
          if (counting) errors += 1;
        }
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  return { requests, errors, seconds: elapsed, rps: Math.round(requests / elapsed) };
}

/** Measures one request shape: requests/s and p50/p99 at `clients`. */
export async function measure(base, method, path, { clients, seconds, body, headers }) {
  const lat = [];
  const r = await runClients({
    clients,
    seconds,
    step: async (_i, counting) => {
      const res = await request(base, method, path, { body, headers, clients });
      if (res.status >= 400) throw new Error(`${res.status}`);
      if (counting()) lat.push(res.ms);
      return 1;
    },
  });
  return { clients, rps: r.rps, errors: r.errors, ...summarize(lat) };
}
