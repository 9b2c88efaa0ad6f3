// Usage ingestion: records per second from the `device-usage` Queue into D1.
//
// Records are put on the queue with the runtime's own producer binding
// (mf.getQueueProducer, sendBatch of 100) and the clock runs from the first send until
// `SELECT COUNT(*) FROM usage_records` reaches the total. Batching is wrangler.toml's
// (max_batch_size 100, max_batch_timeout 1 s); the local queue broker hands the consumer one
// batch at a time. Two phases:
//   - cold: every record is a new user's, so each batch also opens 100 accounts (starting
//     credit) — the worst case; it happens when usage arrives for users billing has not seen;
//   - warm: the same users again (accounts exist) — the steady state, since an allocation
//     reads the balance (opening the account) before any usage can exist. `ingestionRps` is this one.
// Then the same work without the queue: the internal endpoint (POST
// /api/internal/metering/device-usage, 100 records a request) books through the same
// applyUsage, one request at a time (what one consumer does per batch) and 4 at a time (what
// concurrent consumers could do), which separates the broker's share from the booking's.
//
// The runtime's floor for the D1 part (d1Floor): a bare Worker with the same D1 schema times
// one D1 batch per 100 records in three shapes: 400 trivial INSERTs (the runtime's cost per
// statement), 4 statements per record as applyUsage writes them (usage row, ledger entry with
// running balance, balance, low-balance notification), and the same rows in 4 set-based
// statements (json_each over one JSON parameter), checked to write the same ledger rows.
import path from "node:path";
import { readFileSync, readdirSync } from "node:fs";
import { request } from "../lib/load.mjs";
import { root } from "../lib/runtime.mjs";
import { nowMs, serviceHeaders, sleep, stats } from "../lib/feed.mjs";

const BATCH = 100;

// GET /setup: 1,000 accounts; GET /<shape>?n=100: one batch of that shape, timed around the
// batch's await (the clock moves at I/O), with the ledger rows it wrote.
const D1_FLOOR_SCRIPT = `
const now = () => Date.now();
function recs(tag, n, users) {
  const out = [];
  for (let i = 0; i < n; i++) out.push({
    allocationId: tag + "-" + i, deviceId: "d-" + (i % 97), userId: "u-" + (i % users), durationSeconds: 60, cpuCores: 2,
    memoryMB: 4096, storageMB: 32768, allocatedAt: 1, releasedAt: 60001, reason: "released", amount: 3,
  });
  return out;
}
// As src/billing/usage.ts + ledger.ts write one record (the SQL drizzle generates, by hand).
function ours(DB, r, at) {
  const e = "charge:" + r.allocationId;
  return [
    DB.prepare("insert into usage_records (allocation_id, device_id, user_id, tenant_id, duration_seconds, cpu_cores, memory_mb, " +
      "storage_mb, allocated_at, released_at, reason, received_at, source) " +
      "values (?, ?, ?, null, ?, ?, ?, ?, ?, ?, ?, ?, 'device') on conflict do nothing")
      .bind(r.allocationId, r.deviceId, r.userId, r.durationSeconds, r.cpuCores, r.memoryMB, r.storageMB, r.allocatedAt, r.releasedAt,
        r.reason, at),
    DB.prepare("INSERT INTO ledger (entry_id, user_id, kind, amount, balance_after, allocation_id, plan_id, reference, memo, created_at) " +
      "SELECT ?, a.user_id, 'charge', ?, a.balance + ?, ?, 'standard', null, ?, ? FROM accounts a WHERE a.user_id = ? " +
      "ON CONFLICT (entry_id) DO NOTHING")
      .bind(e, -r.amount, -r.amount, r.allocationId, "60s on " + r.deviceId + " (released)", at, r.userId),
    DB.prepare("UPDATE accounts SET balance = l.balance_after, last_seq = l.seq, updated_at = ? " +
      "FROM (SELECT seq, balance_after, user_id FROM ledger WHERE entry_id = ?) AS l " +
      "WHERE accounts.user_id = ? AND l.user_id = accounts.user_id AND l.seq > accounts.last_seq")
      .bind(at, e, r.userId),
    DB.prepare("INSERT INTO notifications (key, user_id, type, data, created_at) " +
      "SELECT 'low_balance:' || l.seq, l.user_id, 'billing.low_balance', " +
      "json_object('balance', l.balance_after, 'threshold', p.low_balance_threshold, 'currency', p.currency, 'entryId', l.entry_id), ? " +
      "FROM ledger l JOIN accounts a ON a.user_id = l.user_id JOIN pricing_plans p ON p.plan_id = a.plan_id " +
      "WHERE l.entry_id = ? AND a.last_seq = l.seq AND l.amount < 0 AND l.balance_after < p.low_balance_threshold " +
      "AND l.balance_after - l.amount >= p.low_balance_threshold ON CONFLICT (key) DO NOTHING")
      .bind(at, e),
  ];
}
// The same work set-based: one JSON parameter carries the batch.
function setBased(DB, rs, at) {
  const j = JSON.stringify(rs.map((r, i) => ({ ...r, i })));
  return [
    DB.prepare("insert into usage_records (allocation_id, device_id, user_id, tenant_id, duration_seconds, cpu_cores, memory_mb, " +
      "storage_mb, allocated_at, released_at, reason, received_at, source) " +
      "select value->>'allocationId', value->>'deviceId', value->>'userId', null, value->>'durationSeconds', value->>'cpuCores', " +
      "value->>'memoryMB', value->>'storageMB', value->>'allocatedAt', value->>'releasedAt', value->>'reason', ?2, 'device' " +
      "from json_each(?1) where true on conflict do nothing").bind(j, at),
    DB.prepare("INSERT INTO ledger (entry_id, user_id, kind, amount, balance_after, allocation_id, plan_id, reference, memo, created_at) " +
      "SELECT 'charge:' || (j.value->>'allocationId'), a.user_id, 'charge', -(j.value->>'amount'), " +
      "a.balance - SUM(j.value->>'amount') OVER (PARTITION BY a.user_id ORDER BY j.value->>'i' ROWS UNBOUNDED PRECEDING), " +
      "j.value->>'allocationId', 'standard', null, 'memo', ?2 FROM json_each(?1) j JOIN accounts a ON a.user_id = j.value->>'userId' " +
      "ORDER BY j.value->>'i' ON CONFLICT (entry_id) DO NOTHING").bind(j, at),
    DB.prepare("UPDATE accounts SET balance = l.balance_after, last_seq = l.seq, updated_at = ?2 " +
      "FROM (SELECT user_id, MAX(seq) AS seq, balance_after FROM ledger " +
      "WHERE entry_id IN (SELECT 'charge:' || (value->>'allocationId') FROM json_each(?1)) GROUP BY user_id) AS l " +
      "WHERE accounts.user_id = l.user_id AND l.seq > accounts.last_seq").bind(j, at),
    DB.prepare("INSERT INTO notifications (key, user_id, type, data, created_at) " +
      "SELECT 'low_balance:' || l.seq, l.user_id, 'billing.low_balance', json_object('balance', l.balance_after), ?2 " +
      "FROM ledger l JOIN accounts a ON a.user_id = l.user_id JOIN pricing_plans p ON p.plan_id = a.plan_id " +
      "WHERE l.entry_id IN (SELECT 'charge:' || (value->>'allocationId') FROM json_each(?1)) AND l.amount < 0 " +
      "AND l.balance_after < p.low_balance_threshold AND l.balance_after - l.amount >= p.low_balance_threshold " +
      "ON CONFLICT (key) DO NOTHING").bind(j, at),
  ];
}
let k = 0;
export default {
  async fetch(req, env) {
    const u = new URL(req.url);
    const shape = u.pathname.slice(1);
    const n = Number(u.searchParams.get("n") ?? 100);
    const at = now();
    if (shape === "setup") {
      const st = [];
      for (let i = 0; i < 1000; i++) {
        st.push(env.DB.prepare("INSERT OR IGNORE INTO accounts (user_id, plan_id, balance, last_seq, reconciled_through, created_at, " +
          "updated_at) VALUES (?, 'standard', 100000000, 0, 0, 0, 0)").bind("u-" + i));
      }
      await env.DB.batch(st);
      await env.DB.prepare("CREATE TABLE IF NOT EXISTS scratch (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)").run();
      return new Response("ok");
    }
    const tag = shape + "-" + (k++) + "-" + Math.random().toString(36).slice(2);
    const rs = recs(tag, n, 1000);
    let st;
    if (shape === "ours") st = rs.flatMap((r) => ours(env.DB, r, at));
    else if (shape === "set") st = setBased(env.DB, rs, at);
    else if (shape === "trivial") {
      st = Array.from({ length: n * 4 }, (_, i) => env.DB.prepare("INSERT INTO scratch (v) VALUES (?)").bind("x" + i));
    }
    else if (shape === "one") st = [env.DB.prepare("SELECT 1")];
    const t0 = Date.now();
    const res = await env.DB.batch(st);
    const ms = Date.now() - t0;
    const check = shape === "ours" || shape === "set"
      ? (await env.DB.prepare("SELECT COUNT(*) AS n FROM ledger WHERE entry_id LIKE ?").bind("charge:" + tag + "-%").first()).n
      : null;
    return Response.json({ shape, statements: st.length, ms, check, bytes: JSON.stringify(res).length });
  },
};`;

/** Median time of one D1 batch per 100 records in each shape, in a bare Worker with our schema. */
async function d1Floor(reps) {
  const { Miniflare, Log, LogLevel, convertV4MiniflareOptions } = await import("miniflare");
  const { unstable_splitSqlQuery } = await import("wrangler");
  const toml = readFileSync(path.join(root, "wrangler.toml"), "utf8");
  const compatibilityDate = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(toml)?.[1];
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      log: new Log(LogLevel.WARN),
      cf: false,
      host: "127.0.0.1",
      port: 0,
      modules: true,
      script: D1_FLOOR_SCRIPT,
      compatibilityDate,
      d1Databases: { DB: "d1-floor" },
      unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
    }),
  );
  try {
    await mf.ready;
    const db = await mf.getD1Database("DB");
    const dir = path.join(root, "migrations");
    for (const f of readdirSync(dir)
      .filter((n) => n.endsWith(".sql"))
      .sort()) {
      const statements = unstable_splitSqlQuery(readFileSync(path.join(dir, f), "utf8")).filter((q) => q.trim());
      await db.batch(statements.map((q) => db.prepare(q)));
    }
    const base = (await mf.unsafeGetDirectURL()).toString().replace(/\/$/, "");
    await request(base, "GET", "/setup");
    const out = {};
    for (const shape of ["one", "trivial", "ours", "set"]) {
      const ms = [];
      let last;
      for (let i = 0; i < reps; i++) {
        const r = await request(base, "GET", `/${shape}?n=100`);
        last = r.body;
        ms.push(r.body.ms);
      }
      ms.sort((x, y) => x - y);
      out[shape] = { statements: last.statements, batchMedianMs: ms[ms.length >> 1], ledgerRows: last.check };
    }
    return {
      roundTripMs: out.one.batchMedianMs,
      trivial400StatementsMs: out.trivial.batchMedianMs,
      perRecordStatements: { ...out.ours, recordsPerSecond: Math.round(100_000 / Math.max(1, out.ours.batchMedianMs)) },
      setBased: { ...out.set, recordsPerSecond: Math.round(100_000 / Math.max(1, out.set.batchMedianMs)) },
    };
  } finally {
    await mf.dispose();
  }
}

function records(prefix, users, count, offset = 0) {
  const now = Date.now();
  return Array.from({ length: count }, (_, i) => {
    const n = offset + i;
    const seconds = 30 + (n % 90);
    return {
      allocationId: `${prefix}-${n}`,
      deviceId: `bench-ing-dev-${n % 97}`,
      userId: users[n % users.length],
      durationSeconds: seconds,
      cpuCores: 2,
      memoryMB: 4096,
      storageMB: 32768,
      allocatedAt: now - 3_600_000 - seconds * 1000,
      releasedAt: now - 3_600_000,
      reason: "released",
    };
  });
}

/** All usage rows (COUNT(*) walks the smallest index: cheap next to the consumer's writes). */
async function count(db) {
  return (await db.prepare("SELECT COUNT(*) AS n FROM usage_records").first()).n;
}

/** Sends `recs` through the queue and waits until D1 holds all of them. */
async function viaQueue(rt, producer, recs, timeoutMs, log) {
  const base = await count(rt.db);
  const t0 = nowMs();
  const sendStart = nowMs();
  // Four sendBatch calls in flight, so the producer side is done long before the consumer and the
  // figure is the consumer's (sendSeconds shows it).
  let next = 0;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < recs.length) {
        const chunk = recs.slice(next, (next += BATCH));
        await producer.sendBatch(chunk.map((body) => ({ body, contentType: "json" })));
      }
    }),
  );
  const sendSeconds = (nowMs() - sendStart) / 1000;
  let n = 0;
  const deadline = Date.now() + timeoutMs;
  while (n < recs.length && Date.now() < deadline) {
    await sleep(100);
    n = (await count(rt.db)) - base;
  }
  const seconds = (nowMs() - t0) / 1000;
  if (n < recs.length) log(`ingestion: only ${n}/${recs.length} after ${Math.round(seconds)} s`);
  return {
    records: n,
    seconds: Math.round(seconds * 100) / 100,
    rps: Math.round(n / seconds),
    sendSeconds: Math.round(sendSeconds * 100) / 100,
    msPerBatchOf100: Math.round(((seconds * 1000 * BATCH) / Math.max(1, n)) * 10) / 10,
    complete: n === recs.length,
  };
}

/** The same booking through the internal endpoint, `concurrency` requests of 100 at a time. */
async function viaEndpoint(rt, recs, concurrency) {
  const lat = [];
  const t0 = nowMs();
  let next = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < recs.length) {
        const chunk = recs.slice(next, (next += BATCH));
        const r = await request(rt.main, "POST", "/api/internal/metering/device-usage", {
          headers: serviceHeaders,
          // Times as ISO 8601, the one time format of requests (the queue carries epoch ms).
          body: {
            records: chunk.map((c) => ({
              ...c,
              allocatedAt: new Date(c.allocatedAt).toISOString(),
              releasedAt: new Date(c.releasedAt).toISOString(),
            })),
          },
        });
        lat.push(r.ms);
        if (r.status !== 200 || r.body.recorded !== chunk.length) failed += chunk.length;
      }
    }),
  );
  const seconds = (nowMs() - t0) / 1000;
  return {
    records: recs.length,
    concurrency,
    seconds: Math.round(seconds * 100) / 100,
    rps: Math.round((recs.length - failed) / seconds),
    failed,
    msPerRequestOf100: stats(lat),
  };
}

export async function run(rt, { quick = false, log = () => {} } = {}) {
  const n = quick ? 2500 : 10_000;
  const warmN = quick ? 5000 : 20_000;
  const tag = Date.now().toString(36);
  const producer = await rt.mf.getQueueProducer("USAGE_QUEUE", "main");
  const users = Array.from({ length: n }, (_, i) => `bench-ing-${tag}-${i}`);

  // A short warm-up of the consumer (first batch compiles the code paths), not counted.
  const warmUsers = users.slice(0, 10);
  const wr = records(`bench-ing-${tag}-w`, warmUsers, 200);
  await viaQueue(rt, producer, wr, 30_000, log);

  log(`ingestion: cold, ${n} records of ${n} new users (each batch opens 100 accounts)`);
  const cold = await viaQueue(rt, producer, records(`bench-ing-${tag}-c`, users, n), quick ? 60_000 : 180_000, log);
  log(`ingestion: cold ${cold.rps} records/s`);

  log(`ingestion: warm, ${warmN} records of the same ${n} users`);
  const warm = await viaQueue(rt, producer, records(`bench-ing-${tag}-h`, users, warmN), quick ? 60_000 : 180_000, log);
  log(`ingestion: warm ${warm.rps} records/s`);

  // Without the queue: same booking path, same (warm) users.
  const epN = quick ? 2000 : 5000;
  log(`ingestion: ${epN} records through the internal endpoint, 1 and 4 requests at a time`);
  const ep1 = await viaEndpoint(rt, records(`bench-ing-${tag}-e1`, users, epN), 1);
  const ep4 = await viaEndpoint(rt, records(`bench-ing-${tag}-e4`, users, epN), 4);

  log("ingestion: D1 floor (one batch per 100 records: trivial, our per-record shape, set-based)");
  const floor = await d1Floor(quick ? 7 : 15);

  // Everything booked once: each record has its charge.
  const charges = await rt.db.prepare("SELECT COUNT(*) AS n FROM ledger WHERE entry_id LIKE ?").bind(`charge:bench-ing-${tag}-%`).first();
  const usage = await rt.db
    .prepare("SELECT COUNT(*) AS n FROM usage_records WHERE allocation_id LIKE ?")
    .bind(`bench-ing-${tag}-%`)
    .first();
  // The balance is the sum of the ledger for every account the run touched.
  const off = await rt.db
    .prepare(
      "SELECT COUNT(*) AS n FROM accounts a WHERE a.user_id LIKE ? AND a.balance != (SELECT COALESCE(SUM(l.amount), 0) " +
        "FROM ledger l WHERE l.user_id = a.user_id)",
    )
    .bind(`bench-ing-${tag}-%`)
    .first();
  return {
    ingestionRps: warm.rps,
    ingestion: {
      records: warm.records,
      seconds: warm.seconds,
      batchSize: BATCH,
      maxBatchTimeoutSeconds: 1,
      consumersAtOnce: 1,
      warm,
      cold,
      endpointOneAtATime: ep1,
      endpointFourAtATime: ep4,
      d1Floor: floor,
      check: { usageRecords: usage.n, charges: charges.n, balancesNotSumOfLedger: off.n },
    },
  };
}
