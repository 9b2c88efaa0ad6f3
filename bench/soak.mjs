// The load-and-fault run (`npm run soak -- [--minutes 3] [--seed 1]`): the built Worker in
// workerd (bench/lib/runtime.mjs), mixed traffic from many users over a few small pools for a
// few minutes while failures are injected, then the service's seven invariants (README, Invariants) are checked over
// the whole run from what the service recorded and what clients were told.
//
// Traffic (bounded: `--clients` loops with a think time, all against 127.0.0.1): allocations of
// 2-12 s (and some of 30-60 s, some with an idle release, some with an idempotency key and a
// repeat), releases (also by an admin on a user's behalf), extensions, reads, top-ups (some sent
// twice), app events, admin force-releases and maintenance/offline → online toggles, quota
// changes, and user and admin feed sockets that reconnect and resume.
//
// Faults (a timeline drawn from the seed): flaky D1 (triggers failing a share of the usage and
// charge inserts, all run long), usage outages (every usage insert fails for 14 s, so messages
// exhaust their retries and are dead-lettered), outages of the dead-letter store (some dead
// letters are lost and only reconciliation can book them), billing outages (the accounts table
// renamed for 4 s), restarts of single objects (Device, UserQuota, DevicePool, AdminFeed), and
// restarts of the whole runtime (every object restarts, sockets drop, the queue's in-memory
// messages are lost).
//
// Then: faults off, the end state is read (expiry, orphans), every remaining allocation is
// released, the usage queue drains, dead letters are replayed, reconciliation runs, and the
// checks of bench/lib/invariants.mjs run over everything. Prints the counts and PASS/FAIL per
// invariant, writes bench/soak-results.json, exits 1 if any invariant fails (2 if the run itself
// broke). Stops by itself: a watchdog ends it whatever happens.
import http from "node:http";
import { createHmac } from "node:crypto";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { Worker } from "node:worker_threads";
import { Log, LogLevel } from "miniflare";
import { JWT_SECRET, SERVICE_TOKEN, evictObject, restart, root, sql, startRuntime } from "./lib/runtime.mjs";
import {
  checkAcknowledged,
  checkBilling,
  checkDoubleAllocations,
  checkExpiry,
  checkFeeds,
  checkMetrics,
  checkOrphans,
  checkQueueAndReservations,
  checkQuota,
  checkRecordsAgree,
  compareHoldings,
  confirmedHoldings,
  isBillable,
} from "./lib/invariants.mjs";
import { parseArgs } from "../scripts/lib.mjs";
import { pool } from "./lib/feed.mjs";
import { parseBody } from "./lib/load.mjs";

// ---- options -----------------------------------------------------------------------------------

const argv = parseArgs(process.argv.slice(2), { booleans: ["help"] });
if (argv.help) {
  console.log("npm run soak -- [--minutes 3] [--seed 1] [--clients 30] [--users 60] [--think 40] [--out bench/soak-results.json]");
  process.exit(0);
}
const num = (v, d, min, max) => {
  const n = v === undefined ? d : Number(v);
  if (!Number.isFinite(n) || n < min || n > max) {
    console.error(`soak: bad value ${v} (expected ${min}..${max})`);
    process.exit(2);
  }
  return n;
};
const MINUTES = num(argv.minutes, 3, 0.5, 60);
const SEED = num(argv.seed, 1, 0, 2 ** 31);
const CLIENTS = num(argv.clients, 30, 1, 200);
const USERS = num(argv.users, 60, 4, 1000);
const THINK_MS = num(argv.think, 40, 0, 5000);
const OUT = path.resolve(argv.out ?? path.join(root, "bench", "soak-results.json"));
const CHAOS_S = Math.round(MINUTES * 60);

/** Device grace for expiry (invariant 4: about a second; the alarm's own lag included). */
const DEVICE_EXPIRY_GRACE_MS = 5_000;
/** A user object learns of an expiry from the device's outbox, else by its own check 10 s past expiry. */
const USER_EXPIRY_GRACE_MS = 15_000;
/** After a whole-runtime restart, objects come back; expiry is judged again this long after. */
const RESTART_SETTLE_MS = 5_000;
/** Claims not confirmed within 30 s are checked with their user (ALLOCATION.claimConfirmMs). */
const CLAIM_SETTLE_MS = 35_000;

// ---- seeded randomness -------------------------------------------------------------------------

function mulberry32(a) {
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rng = mulberry32(SEED);
const int = (lo, hi) => lo + Math.floor(rng() * (hi - lo + 1));
const pick = (xs) => xs[Math.floor(rng() * xs.length)];
const chance = (p) => rng() < p;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the fleet and the users -------------------------------------------------------------------

const SPEC = { s: [2, 4096, 32768], m: [4, 8192, 65536], l: [8, 16384, 131072] };
const POOLS = [
  { name: "soak-a", strategy: "least-loaded", nodes: 3, specs: ["s", "s", "m"], devices: 12 },
  { name: "soak-b", strategy: "spread", nodes: 2, specs: ["s", "m", "l"], devices: 10 },
  { name: "soak-c", strategy: "bin-pack", nodes: 2, specs: ["l", "m"], devices: 6 },
];
const DEVICES = POOLS.flatMap((p) =>
  Array.from({ length: p.devices }, (_, i) => {
    const [cpuCores, memoryMB, storageMB] = SPEC[p.specs[i % p.specs.length]];
    return {
      deviceId: `${p.name}-${String(i + 1).padStart(2, "0")}`,
      pool: p.name,
      node: `${p.name}-n${(i % p.nodes) + 1}`,
      cpuCores,
      memoryMB,
      storageMB,
    };
  }),
);
const DEVICE_IDS = DEVICES.map((d) => d.deviceId);
const ADMIN = "soak-admin";
const USER_IDS = Array.from({ length: USERS }, (_, i) => `soak-u${String(i).padStart(3, "0")}`);
const userIndex = new Map(USER_IDS.map((u, i) => [u, i]));
/** Per user: quota tier, device limit, cpu limit; who has its quota toggled, who keeps a feed open, who uses idle release. */
const USER = new Map(
  USER_IDS.map((u, i) => [
    u,
    {
      tier: i % 3 === 2 ? "pro" : "enterprise",
      maxDevices: 1 + (i % 3),
      maxCpuCores: i % 4 === 0 ? 6 : 64,
      pricey: i % 6 === 5,
      toggled: i < Math.max(2, Math.round(USERS / 6)),
      feed: i < Math.max(2, Math.round(USERS / 3)),
      idle: i >= USERS - Math.round(USERS / 4),
    },
  ]),
);
const PRICEY_PLAN = {
  name: "soak pricey",
  currency: "USD",
  baseMicrosPerSecond: 20_000_000,
  cpuCoreMicrosPerSecond: 500_000,
  memoryGBMicrosPerSecond: 20_000,
  storageGBMicrosPerSecond: 1_000,
  startingCreditMinor: 1000,
  lowBalanceThresholdMinor: 500,
};

// ---- tokens and HTTP -------------------------------------------------------------------------------

const b64url = (v) => Buffer.from(v).toString("base64url");
function signToken(sub, role) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub, role, iat: now, exp: now + 6 * 3600 }));
  return `${head}.${body}.${createHmac("sha256", JWT_SECRET).update(`${head}.${body}`).digest("base64url")}`;
}
const tokens = new Map();
const as = (userId, role = "user") => {
  const k = `${role}:${userId}`;
  if (!tokens.has(k)) tokens.set(k, { authorization: `Bearer ${signToken(userId, role)}` });
  return tokens.get(k);
};
const admin = () => as(ADMIN, "admin");
const service = { "x-service-token": SERVICE_TOKEN };

let rt = null;
const agent = new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64 });

/** One request to the Worker. Never throws: a network failure or timeout is `{status: 0, error}`. */
function call(method, p, { body, headers = {}, timeoutMs = 15_000 } = {}) {
  const url = new URL(p, rt.main);
  if (url.hostname !== "127.0.0.1") throw new Error(`soak targets 127.0.0.1 only, not ${url.hostname}`);
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve) => {
    const t0 = performance.now();
    let done = false;
    const finish = (r) => {
      if (done) return;
      done = true;
      resolve({ ...r, ms: performance.now() - t0 });
    };
    const req = http.request(
      url,
      {
        method,
        agent,
        timeout: timeoutMs,
        headers: {
          ...headers,
          ...(data ? { "content-type": "application/json", "content-length": Buffer.byteLength(data) } : {}),
        },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("error", (e) => finish({ status: 0, error: e.code ?? "RESPONSE_ERROR" }));
        res.on("aborted", () => finish({ status: 0, error: "ABORTED" }));
        res.on("end", () => finish({ status: res.statusCode, body: parseBody(chunks) }));
      },
    );
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
    req.on("error", (e) => finish({ status: 0, error: e.code ?? e.message }));
    if (data) req.write(data);
    req.end();
  });
}

/** For the phases after the chaos: retries what failed for transient reasons, then gives up loudly. */
async function must(method, p, opts = {}, { ok = (r) => r.status >= 200 && r.status < 300, tries = 8 } = {}) {
  let last;
  for (let i = 0; i < tries; i++) {
    last = await call(method, p, opts);
    if (ok(last)) return last;
    if (last.status !== 0 && last.status < 500) break;
    await sleep(500 * (i + 1));
  }
  throw new Error(`${method} ${p} failed: ${last.status} ${JSON.stringify(last.body ?? last.error).slice(0, 300)}`);
}

// ---- what the run counts ---------------------------------------------------------------------------

const stats = {
  ops: {}, // op → outcome → count
  latency: {}, // op → ms[]
  requests: 0,
};
function count(op, r) {
  const outcome = r.status === 0 ? `net ${r.error}` : `${r.status}${r.body?.error?.code ? ` ${r.body.error.code}` : ""}`;
  const o = (stats.ops[op] ??= {});
  o[outcome] = (o[outcome] ?? 0) + 1;
  stats.requests++;
  if (r.status !== 0) (stats.latency[op] ??= []).push(r.ms);
  return r;
}

/** What clients were told (checked against the service's records at the end). */
const told = {
  allocations: new Map(), // allocationId → {userId, deviceId, allocatedAt, expiresAt}
  releases: new Map(), // allocationId → {releasedAt, durationSeconds, reason}
  extensions: new Map(), // allocationId → expiresAt
  idempotency: { repeats: 0, retriesAfterFailure: 0, mismatches: [] },
  topUps: new Map(), // paymentId → {userId, amount, acked}
  quota: new Map(USER_IDS.map((u) => [u, [{ sentAt: -Infinity, ackedAt: -Infinity, maxDevices: USER.get(u).maxDevices }]])),
  queue: new Map(), // entryId → {userId, pool}
  reservations: new Map(), // reservationId → {userId, pool, startAt, endAt}
};
/** What each user is believed to hold (targets for release and extend; may be stale). */
const holding = new Map(USER_IDS.map((u) => [u, new Map()]));

const faults = {
  timeline: [],
  restarts: [], // {at, ms}
  evictions: {}, // class → count
  evictionErrors: 0,
  evictionsNotRunning: 0,
  skippedLate: [],
  usageOutages: 0,
  deadLetterStoreOutages: 0,
  billingOutages: 0,
  flakyD1: { usagePercent: 25, chargePercent: 15 },
  devicesDown: 0,
  devicesUpFailed: 0,
  quotaChanges: 0,
  quotaRenewals: 0,
  errors: [],
};
const workerLog = { counts: {}, maxAttempts: 0, other: 0, shapes: {} };
const miniflareLog = { deadLettered: 0, dropped: 0, other: 0, samples: [] };

class CountingLog extends Log {
  constructor() {
    super(LogLevel.WARN);
  }
  logWithLevel(level, message) {
    if (level > LogLevel.WARN) return;
    if (/to dead letter queue/.test(message)) miniflareLog.deadLettered++;
    else if (/^Dropped message/.test(message)) miniflareLog.dropped++;
    else {
      miniflareLog.other++;
      if (miniflareLog.samples.length < 20) miniflareLog.samples.push(message.slice(0, 400));
    }
  }
}
function onWorkerLog(l) {
  const text = String(l.message);
  // The service logs JSON lines {level, msg, ...}; long ones may arrive cut, so the msg is matched.
  const msg = /^\{"level":"\w+","msg":"([^"]+)"/.exec(text)?.[1];
  if (msg) {
    workerLog.counts[msg] = (workerLog.counts[msg] ?? 0) + 1;
    const attempts = Number(/"attempts":(\d+)/.exec(text)?.[1] ?? 0);
    if (msg === "usage write failed") workerLog.maxAttempts = Math.max(workerLog.maxAttempts, attempts);
    return;
  }
  // Anything else (the runtime's own warnings) is counted by its shape, numbers and ids masked.
  workerLog.other++;
  const shape = `${l.level}: ${text
    .replace(/[0-9a-f]{16,}/g, "<id>")
    .replace(/\d+(\.\d+)?/g, "#")
    .slice(0, 160)}`;
  workerLog.shapes[shape] = (workerLog.shapes[shape] ?? 0) + 1;
}

// ---- traffic ----------------------------------------------------------------------------------------

let idem = 0;
let payments = 0;
let appEvents = 0;
const devicesDown = new Set();
const pendingOnline = new Set();

function trackAllocated(u, b) {
  const a = {
    userId: u,
    deviceId: b.deviceId,
    allocatedAt: Date.parse(b.allocatedAt),
    expiresAt: Date.parse(b.expiresAt),
  };
  told.allocations.set(b.allocationId, a);
  holding.get(u).set(b.allocationId, { deviceId: b.deviceId, expiresAt: a.expiresAt });
}
function trackEnded(e) {
  if (!e?.allocationId) return;
  told.releases.set(e.allocationId, {
    releasedAt: typeof e.releasedAt === "number" ? e.releasedAt : Date.parse(e.releasedAt),
    durationSeconds: e.durationSeconds,
    reason: e.reason,
  });
  holding.get(e.userId)?.delete(e.allocationId);
}
function heldBy(u) {
  const m = holding.get(u);
  const now = Date.now();
  for (const [id, h] of m) if (h.expiresAt < now - 2000) m.delete(id);
  return [...m.entries()];
}

const OPS = {
  async allocate() {
    const u = pick(USER_IDS);
    const target = pick(POOLS);
    // In the last 15 s many allocations are long, so the end state has holdings to compare.
    const late = Date.now() > chaosEndAt - 15_000;
    const body = {
      pool: target.name,
      durationSeconds: chance(late ? 0.4 : 0.9) ? int(2, 12) : int(late ? 60 : 30, late ? 120 : 60),
    };
    if (chance(0.25)) body.spec = { cpuCores: pick([2, 4, 8]) };
    if (USER.get(u).idle && chance(0.3)) body.idleReleaseSeconds = int(3, 8);
    if (chance(0.3)) body.idempotencyKey = `soak-${SEED}-${idem++}`;
    let r = count("allocate", await call("POST", "/scheduler/devices/allocate", { headers: as(u), body }));
    if (body.idempotencyKey && (r.status === 0 || r.status >= 500)) {
      // Unknown outcome: the client retries with the same key (the reason keys exist).
      told.idempotency.retriesAfterFailure++;
      await sleep(300);
      r = count("allocate (retry, same key)", await call("POST", "/scheduler/devices/allocate", { headers: as(u), body }));
    }
    if (r.status !== 201) return r;
    trackAllocated(u, r.body);
    if (body.idempotencyKey && chance(0.3)) {
      const again = count("allocate (repeat, same key)", await call("POST", "/scheduler/devices/allocate", { headers: as(u), body }));
      if (again.status === 201) {
        told.idempotency.repeats++;
        if (again.body.allocationId !== r.body.allocationId || again.body.deviceId !== r.body.deviceId)
          told.idempotency.mismatches.push({
            userId: u,
            key: body.idempotencyKey,
            first: r.body.allocationId,
            repeat: again.body.allocationId,
          });
      }
    }
    return r;
  },

  async release() {
    // Mostly a user who holds something (else it is a 404 most of the time).
    const holders = USER_IDS.filter((x) => holding.get(x).size > 0);
    const u = holders.length && chance(0.8) ? pick(holders) : pick(USER_IDS);
    const mine = heldBy(u);
    const onBehalf = chance(0.1);
    const deviceId = mine.length ? pick(mine)[1].deviceId : pick(DEVICE_IDS);
    const r = count(
      onBehalf ? "release (admin for user)" : "release",
      await call("POST", "/scheduler/devices/release", {
        headers: onBehalf ? admin() : as(u),
        body: onBehalf ? { deviceId, userId: u } : { deviceId },
      }),
    );
    if (r.status === 200) trackEnded(r.body);
    else if (r.status === 404) for (const [id, h] of mine) if (h.deviceId === deviceId) holding.get(u).delete(id);
    return r;
  },

  async extend() {
    const holders = USER_IDS.filter((x) => holding.get(x).size > 0);
    const u = holders.length ? pick(holders) : pick(USER_IDS);
    const mine = heldBy(u);
    if (!mine.length) return OPS.reads();
    const [id] = pick(mine);
    const r = count("extend", await call("PUT", `/scheduler/allocations/${id}/extend`, { headers: as(u), body: { additionalMinutes: 1 } }));
    if (r.status === 200) {
      const e = Date.parse(r.body.expiresAt);
      told.extensions.set(id, Math.max(told.extensions.get(id) ?? 0, e));
      const h = holding.get(u).get(id);
      if (h) h.expiresAt = e;
    }
    return r;
  },

  async reads() {
    const u = pick(USER_IDS);
    const which = int(0, 4);
    const [op, p] = [
      ["list allocations", "/scheduler/allocations?limit=20"],
      ["quota", `/quotas/user/${u}`],
      ["balance", `/billing/users/${u}/balance`],
      ["available devices", `/scheduler/devices/available?pool=${pick(POOLS).name}`],
      ["events", "/scheduler/events?limit=20"],
    ][which];
    return count(op, await call("GET", p, { headers: as(u) }));
  },

  async topUp() {
    const repeat = told.topUps.size > 0 && chance(0.15);
    let paymentId;
    let t;
    if (repeat) {
      paymentId = pick([...told.topUps.keys()]);
      t = told.topUps.get(paymentId);
    } else {
      paymentId = `soak-pay-${SEED}-${payments++}`;
      t = { userId: pick(USER_IDS), amount: int(50, 500), acked: false };
      told.topUps.set(paymentId, t);
    }
    const r = count(
      repeat ? "top-up (same payment again)" : "top-up",
      await call("POST", `/billing/users/${t.userId}/top-ups`, {
        headers: admin(),
        body: { amountMinor: t.amount, paymentId, paymentMethod: "soak" },
      }),
    );
    if (r.status === 200 || r.status === 201) t.acked = true;
    return r;
  },

  async appEvent() {
    const u = pick(USER_IDS);
    const eventId = chance(0.1) && appEvents > 0 ? `soak-ev-${SEED}-${int(0, appEvents - 1)}` : `soak-ev-${SEED}-${appEvents++}`;
    return count(
      "app event",
      await call("POST", "/api/internal/events", {
        headers: service,
        body: {
          type: "app.installed",
          eventId,
          data: {
            userId: u,
            appId: "com.example.soak",
            appName: "Soak",
            deviceId: pick(DEVICE_IDS),
            version: `1.${int(0, 9)}`,
          },
        },
      }),
    );
  },

  async forceRelease() {
    const id = pick(DEVICE_IDS);
    const r = count("admin force-release", await call("POST", `/admin/devices/${id}/force-release`, { headers: admin() }));
    if (r.status === 200) trackEnded(r.body);
    return r;
  },

  async deviceDown() {
    const id = pick(DEVICE_IDS);
    // At most two devices out of service at a time.
    if (devicesDown.has(id) || devicesDown.size >= 2) return OPS.adminReads();
    const status = chance(0.6) ? "maintenance" : "offline";
    devicesDown.add(id);
    const r = count(`admin ${status}`, await call("POST", `/admin/devices/${id}/${status}`, { headers: admin() }));
    if (r.status === 200) {
      faults.devicesDown++;
      trackEnded(r.body.ended);
    }
    // Back in service a few seconds later (and in any case at the end of the run).
    const back = (async () => {
      await sleep(int(2000, 6000));
      for (let i = 0; i < 5; i++) {
        const o = count("admin online", await call("POST", `/admin/devices/${id}/online`, { headers: admin() }));
        if (o.status === 200) break;
        await sleep(500);
      }
      devicesDown.delete(id);
    })();
    pendingOnline.add(back);
    back.finally(() => pendingOnline.delete(back));
    return r;
  },

  async queueJoin() {
    const u = pick(USER_IDS);
    const body = { pool: pick(POOLS).name, durationSeconds: int(2, 12), maxWaitSeconds: int(3, 20) };
    if (chance(0.25)) body.spec = { cpuCores: pick([2, 4, 8]) };
    if (chance(0.2)) body.idempotencyKey = `soak-q-${SEED}-${idem++}`;
    const r = count("queue join", await call("POST", "/scheduler/queue/join", { headers: as(u), body }));
    if (r.status === 201) told.queue.set(r.body.entryId, { userId: u, pool: body.pool });
    return r;
  },

  queueCancel: () => cancelOne("queue cancel", told.queue, "/scheduler/queue"),

  async reserve() {
    const u = pick(USER_IDS);
    const startAt = Date.now() + int(2_000, 20_000);
    const seconds = int(3, 10);
    const body = {
      pool: pick(POOLS).name,
      startAt: new Date(startAt).toISOString(),
      durationSeconds: seconds,
      reminderMinutes: pick([0, 1]),
    };
    if (chance(0.25)) body.spec = { cpuCores: pick([2, 4]) };
    const r = count("reserve", await call("POST", "/scheduler/reservations", { headers: as(u), body }));
    if (r.status === 201)
      told.reservations.set(r.body.reservationId, {
        userId: u,
        pool: body.pool,
        startAt,
        endAt: startAt + seconds * 1000,
      });
    return r;
  },

  reservationCancel: () => cancelOne("reservation cancel", told.reservations, "/scheduler/reservations"),

  async adminReads() {
    const which = int(0, 3);
    const pool = pick(POOLS).name;
    const [op, p] = [
      ["admin device", `/admin/devices/${pick(DEVICE_IDS)}`],
      ["admin pool", `/admin/pools/${pool}`],
      ["admin pool devices", `/admin/pools/${pool}/devices?limit=50`],
      ["admin failed usage", "/admin/billing/failed-usage?limit=5"],
    ][which];
    return count(op, await call("GET", p, { headers: admin() }));
  },
};
/** Its user cancels one of the queue entries or reservations the run made (a read when there is none yet). */
async function cancelOne(op, made, path) {
  const ids = [...made.keys()];
  if (!ids.length) return OPS.reads();
  const id = pick(ids);
  return count(op, await call("DELETE", `${path}/${id}`, { headers: as(made.get(id).userId) }));
}

// Per step. Releases, extensions and admin actions are rare on purpose: most allocations should
// run to their expiry, and every extension holds a device one more minute.
const WEIGHTS = [
  ["allocate", 40],
  ["release", 0.7],
  ["extend", 0.15],
  ["reads", 30],
  ["topUp", 1.5],
  ["appEvent", 6],
  ["forceRelease", 0.12],
  ["deviceDown", 0.4],
  ["adminReads", 8],
  ["queueJoin", 1.5],
  ["queueCancel", 0.2],
  ["reserve", 0.8],
  ["reservationCancel", 0.15],
];
const TOTAL_WEIGHT = WEIGHTS.reduce((s, [, w]) => s + w, 0);
function pickOp() {
  let x = rng() * TOTAL_WEIGHT;
  for (const [op, w] of WEIGHTS) if ((x -= w) < 0) return op;
  return "reads";
}

let trafficOn = false;
let chaosEndAt = Infinity;
async function client() {
  while (trafficOn) {
    let r;
    try {
      r = await OPS[pickOp()]();
    } catch (err) {
      faults.errors.push(`client: ${String(err).slice(0, 200)}`);
    }
    // A refused connection is most likely a restart: back off instead of spinning.
    await sleep(r?.status === 0 ? 250 : THINK_MS * (0.5 + rng()));
  }
}

// ---- feed sockets ------------------------------------------------------------------------------------

const feed = {
  sockets: 0,
  reconnects: 0,
  events: 0,
  foreign: 0,
  duplicates: 0,
  gaps: 0,
  missedReported: 0,
  errors: 0,
  closes: {},
  byType: {},
  samples: [],
  expiryLagMs: [],
};
let feedsOn = false;
const openSockets = new Set();

async function runFeed(userId, role) {
  let lastSeq = null;
  while (feedsOn) {
    const t = await call("POST", "/ws/ticket", {
      headers: as(userId, role),
      body: role === "admin" ? { feed: "admin" } : undefined,
    });
    if (t.status !== 201) {
      await sleep(500);
      continue;
    }
    const url = rt.main.replace(/^http/, "ws") + t.body.url + (lastSeq !== null ? `&since=${lastSeq}` : "");
    feed.sockets++;
    await new Promise((resolve) => {
      let ws;
      try {
        ws = new WebSocket(url);
      } catch {
        resolve();
        return;
      }
      openSockets.add(ws);
      let missedTo = 0;
      ws.onmessage = (e) => {
        const text = String(e.data);
        if (text === "pong") return;
        let m;
        try {
          m = JSON.parse(text);
        } catch {
          return;
        }
        if (m.type === "feed.hello") {
          if (lastSeq === null) lastSeq = m.data.replayThrough;
          if (m.data.missed) {
            feed.missedReported += m.data.missed.count;
            missedTo = m.data.missed.to;
          }
          return;
        }
        if (m.type === "feed.error") {
          feed.errors++;
          return;
        }
        feed.events++;
        feed.byType[m.type] = (feed.byType[m.type] ?? 0) + 1;
        // How late the user's object recorded an expiry (its event's time against expiresAt).
        if (role !== "admin" && m.type === "device.released" && m.data?.reason === "expired")
          feed.expiryLagMs.push(Date.parse(m.timestamp) - Date.parse(m.data.releasedAt));
        if (role !== "admin" && m.userId !== userId) {
          feed.foreign++;
          if (feed.samples.length < 10) feed.samples.push({ kind: "frame of another user", socketUser: userId, frame: text.slice(0, 300) });
        }
        if (typeof m.seq !== "number") return;
        if (lastSeq !== null && m.seq <= lastSeq) {
          feed.duplicates++;
          if (feed.samples.length < 10)
            feed.samples.push({
              kind: "event seen twice",
              socketUser: userId,
              role,
              seq: m.seq,
              lastSeq,
              type: m.type,
            });
        } else if (lastSeq !== null && m.seq > lastSeq + 1 && m.seq - 1 > missedTo) feed.gaps++;
        lastSeq = lastSeq === null ? m.seq : Math.max(lastSeq, m.seq);
      };
      ws.onerror = () => {};
      ws.onclose = (e) => {
        feed.closes[e.code] = (feed.closes[e.code] ?? 0) + 1;
        openSockets.delete(ws);
        resolve();
      };
    });
    if (feedsOn) {
      feed.reconnects++;
      await sleep(200 + rng() * 800);
    }
  }
}
const pinger = () =>
  setInterval(() => {
    for (const ws of openSockets) if (ws.readyState === 1) ws.send("ping");
  }, 25_000);

// ---- faults --------------------------------------------------------------------------------------------

let restarting = false;
let lastRestartEnd = 0;
let restartCount = 0;
let accountsRenamed = false;

// D1 is reached through the runtime's control Worker (async HTTP), never through Miniflare's
// D1 proxy: its synchronous calls can deadlock with workerd while the Worker logs heavily.
async function d1(sqlText) {
  for (let i = 0; ; i++) {
    try {
      return await sql(rt, sqlText, [], "run");
    } catch (err) {
      if (i >= 4) throw err;
      await sleep(300);
    }
  }
}
const TRIGGERS = {
  soak_flaky_usage:
    `CREATE TRIGGER IF NOT EXISTS soak_flaky_usage BEFORE INSERT ON usage_records WHEN abs(random()) ` +
    `% 100 < ${faults.flakyD1.usagePercent} BEGIN SELECT RAISE(ABORT, 'soak: injected usage write failure'); END`,
  soak_flaky_charge:
    `CREATE TRIGGER IF NOT EXISTS soak_flaky_charge BEFORE INSERT ON ledger WHEN NEW.kind = 'charge' ` +
    `AND abs(random()) % 100 < ${faults.flakyD1.chargePercent} BEGIN SELECT RAISE(ABORT, ` +
    `'soak: injected charge failure'); END`,
  soak_usage_outage:
    "CREATE TRIGGER IF NOT EXISTS soak_usage_outage BEFORE INSERT ON usage_records BEGIN SELECT RAISE(ABORT, " +
    "'soak: usage store down'); END",
  soak_dlq_outage:
    "CREATE TRIGGER IF NOT EXISTS soak_dlq_outage BEFORE INSERT ON failed_usage BEGIN SELECT RAISE(ABORT, " +
    "'soak: dead-letter store down'); END",
};
const on = (name) => d1(TRIGGERS[name]);
const outage = { deadLettered: 0, dropped: 0 };
async function waitFor(cond, maxMs) {
  const end = Date.now() + maxMs;
  while (!cond() && Date.now() < end) await sleep(250);
}
const off = (name) => d1(`DROP TRIGGER IF EXISTS ${name}`);

const ACTIONS = {
  flakyOn: async () => {
    await on("soak_flaky_usage");
    await on("soak_flaky_charge");
  },
  flakyOff: async () => {
    await off("soak_flaky_usage");
    await off("soak_flaky_charge");
  },
  // The outages wait for what they are there to cause (how fast messages use up their
  // retries depends on the machine): a few dead letters stored before the store goes down, a
  // few more arriving while it is down, and at least one dropped by the dead-letter queue.
  usageOutageOn: async () => {
    faults.usageOutages++;
    outage.deadLettered = miniflareLog.deadLettered;
    await on("soak_usage_outage");
  },
  dlqOutageOn: async () => {
    await waitFor(() => miniflareLog.deadLettered >= outage.deadLettered + 3, 40_000);
    faults.deadLetterStoreOutages++;
    outage.deadLettered = miniflareLog.deadLettered;
    outage.dropped = miniflareLog.dropped;
    await on("soak_dlq_outage");
  },
  usageOutageOff: async () => {
    await waitFor(() => miniflareLog.deadLettered >= outage.deadLettered + 3, 20_000);
    await off("soak_usage_outage");
  },
  dlqOutageOff: async () => {
    await waitFor(() => miniflareLog.dropped > outage.dropped, 30_000);
    await off("soak_dlq_outage");
  },
  billingDown: async () => {
    faults.billingOutages++;
    await d1("ALTER TABLE accounts RENAME TO soak_accounts_off");
    accountsRenamed = true;
  },
  billingUp: async () => {
    if (!accountsRenamed) return;
    await d1("ALTER TABLE soak_accounts_off RENAME TO accounts");
    accountsRenamed = false;
  },
  evict: async () => {
    const kind = pick(["Device", "Device", "UserQuota", "UserQuota", "DevicePool", "AdminFeed"]);
    const name =
      kind === "Device" ? pick(DEVICE_IDS) : kind === "UserQuota" ? pick(USER_IDS) : kind === "DevicePool" ? pick(POOLS).name : "operators";
    try {
      await evictObject(rt, kind, name, chance(0.7) ? "close" : "hibernate");
      faults.evictions[kind] = (faults.evictions[kind] ?? 0) + 1;
    } catch (err) {
      // An object that is not running has nothing to restart.
      if (/not currently running/.test(String(err))) {
        faults.evictionsNotRunning++;
        return;
      }
      faults.evictionErrors++;
      if (faults.errors.length < 20) faults.errors.push(`evict ${kind} ${name}: ${String(err).slice(0, 200)}`);
    }
  },
  restart: async () => {
    restarting = true;
    const at = Date.now();
    try {
      const ms = await restart(rt, { refreshDb: false });
      faults.restarts.push({ at, ms });
      restartCount++;
    } finally {
      restarting = false;
      lastRestartEnd = Date.now();
    }
  },
};

/** The fault timeline of a run of `d` seconds (drawn from the seed). */
function buildTimeline(d) {
  const t = [];
  const add = (at, kind) => t.push({ at: Math.round(at * 10) / 10, kind });
  add(2, "flakyOn");
  add(d - 3, "flakyOff");
  // One cycle a minute (the last one cut short). Outages do not overlap restarts: a restart
  // loses the queue's in-memory messages, which would hide the dead-letter path.
  for (let p = 0; p + 20 <= d; p += 60) {
    // Every usage write fails from p+5 until messages have used up their 11 attempts and
    // reached the dead-letter consumer; then the dead-letter store goes down too, so the early
    // dead letters are stored and later ones fail there and are dropped after its own retries.
    // (Each step below waits for its effect, see ACTIONS; later steps then run late.)
    add(p + 5, "usageOutageOn");
    add(p + 19, "dlqOutageOn");
    add(p + 21, "usageOutageOff");
    add(Math.min(p + 40, d - 1), "dlqOutageOff");
    if (p + 52 <= d - 2) {
      add(p + 47, "billingDown");
      add(p + 51, "billingUp");
    }
    if (p + 53 <= d - 4) add(p + 53, "restart");
  }
  for (let s = 4 + rng() * 3; s < d - 3; s += 3 + rng() * 3) add(s, "evict");
  return t.sort((a, b) => a.at - b.at);
}

let chaosStart = 0;
const STARTS = new Set(["usageOutageOn", "dlqOutageOn", "billingDown", "evict", "restart"]);
async function runChaos(timeline, chaosEnd) {
  for (const ev of timeline) {
    const wait = chaosStart + ev.at * 1000 - Date.now();
    if (wait > 0) await sleep(wait);
    // Steps that waited for their effect can push the rest past the end: nothing new starts then.
    if (STARTS.has(ev.kind) && Date.now() > chaosEnd - 3000) {
      faults.skippedLate.push(ev.kind);
      continue;
    }
    try {
      await ACTIONS[ev.kind]();
      faults.timeline.push({ at: Math.round((Date.now() - chaosStart) / 100) / 10, kind: ev.kind });
    } catch (err) {
      faults.errors.push(`${ev.kind}: ${String(err).slice(0, 200)}`);
    }
  }
}

/** Admin quota changes of the toggled users, one at a time (so their order is known). */
async function runQuotaChanges(until) {
  const toggled = USER_IDS.filter((u) => USER.get(u).toggled);
  while (Date.now() < until) {
    await sleep(int(2500, 4000));
    const u = pick(toggled);
    if (chance(0.15)) {
      const r = count("quota renew", await call("POST", `/quotas/renew/${u}`, { headers: admin(), body: { extensionDays: 1 } }));
      if (r.status === 200) faults.quotaRenewals++;
      continue;
    }
    const tl = told.quota.get(u);
    const current = tl[tl.length - 1].maxDevices;
    const maxDevices = pick([1, 2, 3].filter((n) => n !== current));
    const entry = { sentAt: Date.now(), ackedAt: null, maxDevices };
    const r = count("quota update", await call("PUT", `/quotas/user/${u}`, { headers: admin(), body: { limits: { maxDevices } } }));
    if (r.status === 200) {
      entry.ackedAt = Date.now();
      faults.quotaChanges++;
      tl.push(entry);
    } else if (r.status === 0 || r.status >= 500) tl.push(entry); // may or may not have happened
  }
}

/** The highest device limit that may have been in force for `u` at some time in [a, b]. */
function maxDevicesBetween(u, a, b) {
  const tl = told.quota.get(u);
  let base = 0;
  for (let i = 0; i < tl.length; i++) if (tl[i].ackedAt !== null && tl[i].ackedAt <= a) base = i;
  let max = tl[base].maxDevices;
  for (let i = base + 1; i < tl.length; i++) if (tl[i].sentAt <= b) max = Math.max(max, tl[i].maxDevices);
  return max;
}

// ---- expiry watcher: devices must not hold an allocation long past its expiry ------------------------------

const watcher = { samples: 0, devicesSeen: 0, skipped: 0, maxOverdueMs: 0, violations: [] };
async function runWatcher(until) {
  while (Date.now() < until) {
    await sleep(4000);
    const t0 = Date.now();
    const before = restartCount;
    if (restarting || t0 < lastRestartEnd + RESTART_SETTLE_MS) {
      watcher.skipped++;
      continue;
    }
    const reads = await pool(DEVICE_IDS, 6, (id) => call("GET", `/admin/devices/${id}`, { headers: admin(), timeoutMs: 10_000 }));
    if (restarting || restartCount !== before) {
      watcher.skipped++;
      continue;
    }
    watcher.samples++;
    reads.forEach((r, i) => {
      if (r.status !== 200) return;
      watcher.devicesSeen++;
      const a = r.body.allocation;
      if (!a) return;
      const overdue = t0 - Date.parse(a.expiresAt);
      watcher.maxOverdueMs = Math.max(watcher.maxOverdueMs, overdue);
      if (overdue > DEVICE_EXPIRY_GRACE_MS)
        watcher.violations.push({
          deviceId: DEVICE_IDS[i],
          allocationId: a.allocationId,
          userId: a.userId,
          confirmed: a.confirmed,
          expiresAt: a.expiresAt,
          seenAt: t0,
          overdueMs: overdue,
        });
    });
  }
}

// ---- reading the service's records -------------------------------------------------------------------------

/** The API answers ISO times; the checks here compare epoch ms (null stays null). */
const TIME_FIELDS = ["allocatedAt", "expiresAt", "releasedAt"];
const msTimes = (o) => {
  if (!o) return o;
  const out = { ...o };
  for (const k of TIME_FIELDS) if (typeof out[k] === "string") out[k] = Date.parse(out[k]);
  return out;
};
async function userAllocations(u, status) {
  const items = [];
  let cursor = null;
  do {
    const r = await must(
      "GET",
      `/scheduler/allocations?userId=${u}&limit=200${status ? `&status=${status}` : ""}` +
        `${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
      { headers: admin() },
    );
    items.push(...r.body.items.map(msTimes));
    cursor = r.body.nextCursor;
  } while (cursor);
  return items;
}
async function allUserAllocations(status) {
  const lists = await pool(USER_IDS, 6, (u) => userAllocations(u, status));
  return new Map(USER_IDS.map((u, i) => [u, lists[i]]));
}
async function deviceHistory(id) {
  const items = [];
  let cursor = null;
  do {
    const r = await must("GET", `/admin/devices/${id}/history?limit=200${cursor !== null ? `&cursor=${cursor}` : ""}`, {
      headers: admin(),
    });
    items.push(...r.body.items.map(msTimes));
    cursor = r.body.nextCursor;
  } while (cursor !== null);
  return items;
}
async function devicesNow() {
  const reads = await pool(DEVICE_IDS, 6, (id) => must("GET", `/admin/devices/${id}`, { headers: admin() }));
  return {
    current: new Map(DEVICE_IDS.map((id, i) => [id, msTimes(reads[i].body.allocation)])),
    status: new Map(DEVICE_IDS.map((id, i) => [id, reads[i].body.status])),
  };
}
async function quotasNow() {
  const reads = await pool(USER_IDS, 6, (u) => must("GET", `/quotas/user/${u}`, { headers: admin() }));
  return new Map(USER_IDS.map((u, i) => [u, reads[i].body]));
}
async function poolIndexNow() {
  const out = new Map();
  for (const p of POOLS) {
    const r = await must("GET", `/admin/pools/${p.name}/devices?limit=200`, { headers: admin() });
    for (const d of r.body.items) out.set(d.deviceId, msTimes(d));
  }
  return out;
}
async function holdingsNow() {
  const now = Date.now();
  const [dev, users, quotas, pool] = [await devicesNow(), await allUserAllocations(), await quotasNow(), await poolIndexNow()];
  return compareHoldings({
    deviceCurrent: dev.current,
    deviceStatus: dev.status,
    userAllocations: users,
    quotas,
    poolIndex: pool,
    now,
  });
}
async function rows(q) {
  for (let i = 0; ; i++) {
    try {
      return (await sql(rt, q)).results;
    } catch (err) {
      if (i >= 4) throw err;
      await sleep(500);
    }
  }
}

// ---- the run ---------------------------------------------------------------------------------------------------

const log = (m) => console.log(`soak: ${m}`);
const fmt = (ms) => `${(ms / 1000).toFixed(1)} s`;

async function main() {
  const runStart = Date.now();
  log(
    `${MINUTES} min of traffic and faults, seed ${SEED}, ${USERS} users, ${DEVICES.length} devices in ${POOLS.length} pools, ` +
      `${CLIENTS} clients (think ${THINK_MS} ms)`,
  );
  rt = await startRuntime({
    vars: { ALLOW_SHORT_DURATIONS: "true", USAGE_RETRY_BASE_SECONDS: "0" },
    onWorkerLog,
    miniflareLog: new CountingLog(),
    control: true,
  });
  log(`runtime up at ${rt.main} (${fmt(Date.now() - runStart)})`);

  // Setup: fleet, pool strategies, a pricey pricing plan, users' plans and limits, accounts.
  await pool(DEVICES, 4, (d) => must("POST", "/admin/devices", { headers: admin(), body: d }));
  for (const p of POOLS) await must("PUT", `/admin/pools/${p.name}`, { headers: admin(), body: { strategy: p.strategy } });
  await must("PUT", "/admin/billing/pricing-plans/soak-pricey", { headers: admin(), body: PRICEY_PLAN });
  await pool(USER_IDS, 6, async (u) => {
    const c = USER.get(u);
    // The setup brings the users into being: an admin's write naming an unknown user is 404 without ?create=true.
    await must("PUT", `/quotas/user/${u}?create=true`, {
      headers: admin(),
      body: { tier: c.tier, limits: { maxDevices: c.maxDevices, maxCpuCores: c.maxCpuCores } },
    });
    if (c.pricey) await must("PUT", `/admin/billing/users/${u}/plan`, { headers: admin(), body: { pricingPlanId: "soak-pricey" } });
    else await must("GET", `/billing/users/${u}/balance`, { headers: as(u) });
  });
  log(
    `setup done (${fmt(Date.now() - runStart)}): ${DEVICES.length} devices, ` +
      `${USERS} users (${[...USER.values()].filter((c) => c.pricey).length} on a pricey plan, ` +
      `${[...USER.values()].filter((c) => c.toggled).length} with changing quotas)`,
  );

  // Chaos: traffic, feeds, faults, quota changes and the expiry watcher, all for CHAOS_S seconds.
  chaosStart = Date.now();
  const chaosEnd = chaosStart + CHAOS_S * 1000;
  chaosEndAt = chaosEnd;
  const timeline = buildTimeline(CHAOS_S);
  trafficOn = true;
  feedsOn = true;
  const clients = Array.from({ length: CLIENTS }, () => client());
  const feeds = [...USER_IDS.filter((u) => USER.get(u).feed).map((u) => runFeed(u, "user")), runFeed(ADMIN, "admin")];
  const ping = pinger();
  const chaos = runChaos(timeline, chaosEnd);
  const quotaLoop = runQuotaChanges(chaosEnd);
  const watch = runWatcher(chaosEnd);
  const progress = setInterval(() => {
    const alloc = stats.ops.allocate?.["201"] ?? 0;
    log(
      `${fmt(Date.now() - chaosStart)}: ${stats.requests} requests, ` +
        `${told.allocations.size} allocations acknowledged (${alloc} first try), ${told.releases.size} releases, ` +
        `${restartCount} restarts, ${Object.values(faults.evictions).reduce((s, n) => s + n, 0)} evictions, ${feed.events} feed events`,
    );
  }, 15_000);
  await sleep(CHAOS_S * 1000);
  trafficOn = false;
  await Promise.all(clients);
  await Promise.all([chaos, quotaLoop, watch]);
  clearInterval(progress);
  const trafficSeconds = (Date.now() - chaosStart) / 1000;
  log(
    `traffic stopped after ${fmt(Date.now() - chaosStart)}: ${stats.requests} requests (${Math.round(stats.requests / trafficSeconds)}/s)`,
  );

  // Faults off: triggers dropped, accounts back, every device in service.
  for (const name of Object.keys(TRIGGERS)) await off(name);
  await ACTIONS.billingUp();
  await Promise.all([...pendingOnline]);
  for (const id of DEVICE_IDS) {
    const d = await must("GET", `/admin/devices/${id}`, { headers: admin() });
    if (d.body.status === "maintenance" || d.body.status === "offline") {
      faults.devicesUpFailed++;
      await must("POST", `/admin/devices/${id}/online`, { headers: admin() });
    }
  }
  // The queue and the reservations are closed, so nothing is handed over after the final release.
  const closed = await closeQueueAndReservations();
  log(`queue entries and reservations closed: ${closed.cancelled} cancelled, ${closed.busy} were being served`);
  const stoppedAt = Date.now();

  // 5 (end): nothing active past its expiry, on devices or in user objects.
  await sleep(3000);
  const endDevices = [];
  const endUsers = [];
  {
    const t0 = Date.now();
    const dev = await devicesNow();
    for (const [deviceId, a] of dev.current)
      if (a && t0 - a.expiresAt > DEVICE_EXPIRY_GRACE_MS)
        endDevices.push({ deviceId, allocationId: a.allocationId, userId: a.userId, overdueMs: t0 - a.expiresAt });
    const t1 = Date.now();
    const active = await allUserAllocations("active");
    for (const [userId, list] of active)
      for (const a of list)
        if (t1 - a.expiresAt > USER_EXPIRY_GRACE_MS)
          endUsers.push({ userId, allocationId: a.allocationId, deviceId: a.deviceId, overdueMs: t1 - a.expiresAt });
  }

  // 4 (after traffic): once unconfirmed claims have had their check, holdings agree (read twice).
  await sleep(Math.max(0, stoppedAt + CLAIM_SETTLE_MS - Date.now()));
  const first = await holdingsNow();
  await sleep(3000);
  const afterTraffic = confirmedHoldings(first, await holdingsNow());
  log(`end state read (${fmt(Date.now() - stoppedAt)} after the stop); releasing what is still held`);

  // Release everything still active, as its user.
  const stillActive = await allUserAllocations("active");
  let releasedAtEnd = 0;
  await pool(
    [...stillActive].flatMap(([u, list]) => list.map((a) => [u, a])),
    6,
    async ([u, a]) => {
      const r = await must(
        "POST",
        "/scheduler/devices/release",
        { headers: as(u), body: { deviceId: a.deviceId } },
        { ok: (x) => x.status === 200 || x.status === 404 },
      );
      if (r.status === 200) {
        releasedAtEnd++;
        trackEnded(r.body);
      }
    },
  );
  for (let i = 0; i < 40; i++) {
    const dev = await devicesNow();
    if ([...dev.current.values()].every((a) => !a)) break;
    await sleep(1000);
  }

  // Drain: every ended, billable allocation booked or dead-lettered (or no progress for 20 s).
  const ended = await allUserAllocations();
  const billable = [...ended.values()]
    .flat()
    .filter(isBillable)
    .map((a) => a.allocationId);
  const drainStart = Date.now();
  let waiting = billable.length;
  let lastProgress = Date.now();
  for (;;) {
    const usage = new Set((await rows("SELECT allocation_id FROM usage_records")).map((r) => r.allocation_id));
    const charged = new Set((await rows("SELECT allocation_id FROM ledger WHERE kind = 'charge'")).map((r) => r.allocation_id));
    const dead = new Set(
      (await rows("SELECT allocation_id FROM failed_usage WHERE status IN ('failed','invalid')")).map((r) => r.allocation_id),
    );
    const left = billable.filter((id) => !(usage.has(id) && charged.has(id)) && !dead.has(id)).length;
    if (left < waiting) lastProgress = Date.now();
    waiting = left;
    if (left === 0 || Date.now() - lastProgress > 20_000 || Date.now() - drainStart > 120_000) break;
    await sleep(2000);
  }
  const beforeRecovery = await billingGaps(billable);
  log(
    `queue drained in ${fmt(Date.now() - drainStart)}: ${billable.length} ended billable allocations, ` +
      `${beforeRecovery.missingUsage} without usage and ${beforeRecovery.missingCharge} without charge, ` +
      `${beforeRecovery.deadLetters.failed ?? 0} dead letters open`,
  );

  // Replay dead letters, then reconcile (twice: the second pass must find nothing).
  const replay = { calls: 0, replayed: 0, failed: 0, remaining: null };
  for (let i = 0; i < 20; i++) {
    const r = await must("POST", "/admin/billing/failed-usage/replay", { headers: admin(), body: { all: true } });
    replay.calls++;
    replay.replayed += r.body.replayed;
    replay.failed += r.body.failed;
    replay.remaining = r.body.remaining;
    if (r.body.remaining === 0 || r.body.replayed === 0) break;
  }
  const afterReplay = await billingGaps(billable);
  const window = {
    from: new Date(runStart - 3_600_000).toISOString(),
    to: new Date(Date.now() + 86_400_000).toISOString(),
  };
  const rec1 = (await must("POST", "/admin/billing/reconcile", { headers: admin(), body: window })).body;
  const rec2 = (await must("POST", "/admin/billing/reconcile", { headers: admin(), body: window })).body;
  const pick2 = (r) => ({
    users: r.users,
    checked: r.checked,
    missingUsage: r.missingUsage,
    missingCharges: r.missingCharges,
    mismatched: r.mismatched,
    healed: r.healed,
    stillMissing: r.stillMissing,
    balanceDrift: r.balanceDrift,
    resolvedDeadLetters: r.resolvedDeadLetters,
  });
  log(
    `replayed ${replay.replayed} dead letters; reconciliation healed ${rec1.healed} (second pass: ` +
      `${rec2.missingUsage + rec2.missingCharges + rec2.mismatched + rec2.balanceDrift} differences)`,
  );

  // Final records.
  feedsOn = false;
  for (const ws of openSockets) ws.close(1000);
  clearInterval(ping);
  await Promise.race([Promise.all(feeds), sleep(5000)]);
  const final = await allUserAllocations();
  const histories = new Map(await pool(DEVICE_IDS, 6, async (id) => [id, await deviceHistory(id)]));
  const first2 = await holdingsNow();
  await sleep(2000);
  const atRest = confirmedHoldings(first2, await holdingsNow());
  const dev = await devicesNow();
  const metricsText = (await must("GET", "/admin/metrics", { headers: admin() })).body;
  const queueEnd = await pool([...told.queue], 6, async ([id, t]) => ({
    ...t,
    ...(await must("GET", `/scheduler/queue/${id}`, { headers: admin() })).body,
  }));
  const reservationsEnd = await pool([...told.reservations], 6, async ([id, t]) => ({
    told: t,
    ...(await must("GET", `/scheduler/reservations/${id}`, { headers: admin() })).body,
  }));
  const [usageRows, ledgerRows, accounts, plans, deadLetters] = [
    await rows("SELECT * FROM usage_records"),
    await rows("SELECT * FROM ledger"),
    await rows("SELECT * FROM accounts"),
    await rows("SELECT * FROM pricing_plans"),
    await rows("SELECT status, COUNT(*) AS n FROM failed_usage GROUP BY status"),
  ];

  // The checks.
  const all = [...final.values()].flat();
  const byReason = {};
  for (const a of all) if (a.status === "released") byReason[a.reason] = (byReason[a.reason] ?? 0) + 1;
  const invariants = [
    checkDoubleAllocations({
      deviceHistories: histories,
      deviceCurrent: dev.current,
      userAllocations: final,
      now: Date.now(),
    }),
    checkQuota({
      userAllocations: final,
      limitsOf: (u) => ({
        maxDevicesBetween: (a, b) => maxDevicesBetween(u, a, b),
        maxCpuCores: USER.get(u).maxCpuCores,
      }),
      window: [25_000, 5_000],
    }),
    checkBilling({ userAllocations: final, usageRows, ledgerRows, accounts, plans, topUps: told.topUps }),
    checkOrphans({ afterTraffic, atRest, userAllocations: final }),
    checkExpiry({
      watcher,
      endDevices,
      endUsers,
      deviceGraceMs: DEVICE_EXPIRY_GRACE_MS,
      userGraceMs: USER_EXPIRY_GRACE_MS,
      expiredCount: byReason.expired ?? 0,
      userLagMs: feed.expiryLagMs,
    }),
    checkFeeds(feed),
    checkAcknowledged({
      acked: told.allocations,
      releases: told.releases,
      extensions: told.extensions,
      userAllocations: final,
      idempotency: told.idempotency,
    }),
    checkRecordsAgree({ deviceHistories: histories, userAllocations: final }),
    checkQueueAndReservations({ entries: queueEnd, reservations: reservationsEnd, userAllocations: final }),
    checkMetrics({ metricsText, deviceHistories: histories }),
  ];

  const latency = Object.fromEntries(
    Object.entries(stats.latency).map(([op, xs]) => {
      const s = [...xs].sort((a, b) => a - b);
      const p = (q) => Math.round(s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]);
      return [op, { n: s.length, p50Ms: p(0.5), p99Ms: p(0.99), maxMs: Math.round(s[s.length - 1]) }];
    }),
  );
  const fivexx = {};
  for (const [op, outcomes] of Object.entries(stats.ops))
    for (const [k, n] of Object.entries(outcomes)) if (/^5\d\d/.test(k) || k.startsWith("net")) fivexx[`${op}: ${k}`] = n;
  const counts = {
    requests: stats.requests,
    requestsPerSecond: Math.round(stats.requests / trafficSeconds),
    trafficSeconds: Math.round(trafficSeconds),
    allocations: {
      acknowledged: told.allocations.size,
      recorded: all.length,
      active: all.filter((a) => a.status === "active").length,
      pending: all.filter((a) => a.status === "pending").length,
      released: all.filter((a) => a.status === "released").length,
      releasedByReason: byReason,
      releasedByTheSoakAtEnd: releasedAtEnd,
      extended: all.filter((a) => a.extendCount > 0).length,
      withIdleRelease: all.filter((a) => a.idleReleaseSeconds != null).length,
    },
    outcomes: stats.ops,
    failuresAndNetworkErrors: fivexx,
    faults: {
      restarts: faults.restarts.length,
      restartMs: faults.restarts.map((r) => r.ms),
      evictions: faults.evictions,
      evictionErrors: faults.evictionErrors,
      evictionsOfObjectsNotRunning: faults.evictionsNotRunning,
      skippedLate: faults.skippedLate,
      usageOutages: faults.usageOutages,
      deadLetterStoreOutages: faults.deadLetterStoreOutages,
      billingOutages: faults.billingOutages,
      flakyD1: faults.flakyD1,
      devicesTakenDown: faults.devicesDown,
      devicesStillDownAtEnd: faults.devicesUpFailed,
      quotaChanges: faults.quotaChanges,
      quotaRenewals: faults.quotaRenewals,
      harnessErrors: faults.errors,
    },
    usage: {
      endedBillable: billable.length,
      workerLog: workerLog.counts, // "usage write failed" = one failed attempt of one message (retried)
      maxDeliveryAttemptSeen: workerLog.maxAttempts,
      deadLettered: miniflareLog.deadLettered,
      droppedByDeadLetterQueue: miniflareLog.dropped,
      beforeRecovery: {
        missingUsage: beforeRecovery.missingUsage,
        missingCharge: beforeRecovery.missingCharge,
        deadLetters: beforeRecovery.deadLetters,
      },
      replay,
      afterReplay: { missingUsage: afterReplay.missingUsage, missingCharge: afterReplay.missingCharge },
      reconcile: pick2(rec1),
      reconcileSecondPass: pick2(rec2),
      deadLettersAtEnd: Object.fromEntries(deadLetters.map((d) => [d.status, d.n])),
      usageRowsBySource: (await rows("SELECT source, COUNT(*) AS n FROM usage_records GROUP BY source")).reduce(
        (o, r) => ({ ...o, [r.source]: r.n }),
        {},
      ),
    },
    feed: { ...feed, samples: undefined, expiryLagMs: undefined },
    topUps: { sent: told.topUps.size, acknowledged: [...told.topUps.values()].filter((t) => t.acked).length },
    queue: tally(queueEnd.map((e) => e.status)),
    queueFailedBecause: tally(queueEnd.filter((e) => e.status === "failed").map((e) => e.error?.code ?? "?")),
    reservations: tally(reservationsEnd.map((r) => r.status)),
    reservationsFailedBecause: tally(reservationsEnd.filter((r) => r.status === "failed").map((r) => r.error?.code ?? "?")),
    appEvents,
    latency,
    workerLogOther: { count: workerLog.other, byShape: workerLog.shapes },
    miniflareLogOther: { count: miniflareLog.other, samples: miniflareLog.samples },
  };
  const pass = invariants.every((i) => i.pass);
  const results = {
    when: new Date(runStart).toISOString(),
    pass,
    config: {
      minutes: MINUTES,
      seed: SEED,
      clients: CLIENTS,
      users: USERS,
      thinkMs: THINK_MS,
      devices: DEVICES.length,
      pools: POOLS.map((p) => ({ name: p.name, strategy: p.strategy, devices: p.devices })),
    },
    durationSeconds: Math.round((Date.now() - runStart) / 1000),
    invariants,
    counts,
    faultTimeline: faults.timeline,
  };
  writeFileSync(OUT, JSON.stringify(results, null, 2) + "\n");
  report(results);
  return pass;
}

/** Cancels every queue entry and reservation still open (an entry or start being served right now finishes first). */
async function closeQueueAndReservations() {
  const out = { cancelled: 0, busy: 0 };
  const close = async (path, userId) => {
    for (let i = 0; i < 20; i++) {
      const r = await call("DELETE", path, { headers: as(userId) });
      if (r.status === 200) return void out.cancelled++;
      // Busy: its hand-over or start is running; it ends served (or not) in a moment.
      if (r.status === 409 && /BUSY|CLOSED|EXECUTING/.test(r.body?.error?.code ?? "")) {
        if (r.body.error.code !== "QUEUE_ENTRY_BUSY" && !/starting/.test(r.body.error.message)) return;
        out.busy++;
      } else if (r.status !== 0 && r.status < 500) return;
      await sleep(500);
    }
  };
  await pool([...told.queue], 6, ([id, t]) => close(`/scheduler/queue/${id}`, t.userId));
  await pool([...told.reservations], 6, ([id, t]) => close(`/scheduler/reservations/${id}`, t.userId));
  return out;
}

const tally = (xs) => xs.reduce((o, x) => ({ ...o, [x]: (o[x] ?? 0) + 1 }), {});

async function billingGaps(billable) {
  const usage = new Set((await rows("SELECT allocation_id FROM usage_records")).map((r) => r.allocation_id));
  const charged = new Set((await rows("SELECT allocation_id FROM ledger WHERE kind = 'charge'")).map((r) => r.allocation_id));
  const dl = await rows("SELECT status, COUNT(*) AS n FROM failed_usage GROUP BY status");
  return {
    missingUsage: billable.filter((id) => !usage.has(id)).length,
    missingCharge: billable.filter((id) => !charged.has(id)).length,
    deadLetters: Object.fromEntries(dl.map((d) => [d.status, d.n])),
  };
}

function report(r) {
  const c = r.counts;
  const top = (o, n = 8) =>
    Object.entries(o)
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ");
  console.log("");
  console.log(`traffic: ${c.requests} requests in ${c.trafficSeconds} s (${c.requestsPerSecond}/s)`);
  for (const [op, outcomes] of Object.entries(c.outcomes).sort()) console.log(`  ${op.padEnd(28)} ${top(outcomes)}`);
  console.log(
    `allocations: ${c.allocations.acknowledged} acknowledged to clients, ${c.allocations.recorded} recorded; released by reason: ` +
      `${top(c.allocations.releasedByReason)}; ${c.allocations.extended} extended, ${c.allocations.withIdleRelease} with idle ` +
      `release; ${c.allocations.releasedByTheSoakAtEnd} released at the end`,
  );
  const f = c.faults;
  console.log(
    `faults: ${f.restarts} whole-runtime restarts (${f.restartMs.join(", ")} ms), ` +
      `${Object.values(f.evictions).reduce((s, n) => s + n, 0)} object restarts (${top(f.evictions)}), ` +
      `${f.usageOutages} usage outages, ${f.deadLetterStoreOutages} dead-letter store outages, ${f.billingOutages} billing outages, ` +
      `flaky D1 (${f.flakyD1.usagePercent}% usage, ${f.flakyD1.chargePercent}% charge writes), ` +
      `${f.devicesTakenDown} devices taken down, ` +
      `${f.quotaChanges} quota changes${f.harnessErrors.length ? `; harness errors: ${f.harnessErrors.length}` : ""}`,
  );
  const u = c.usage;
  console.log(
    `usage: ${u.endedBillable} ended billable; consumer saw ${u.workerLog["usage write failed"] ?? 0} failed record writes and ` +
      `${u.workerLog["usage batch failed"] ?? 0} failed batches (retried; highest attempt ${u.maxDeliveryAttemptSeen}), ` +
      `${u.deadLettered} messages dead-lettered, ${u.workerLog["dead letter could not be stored"] ?? 0} dead-letter store failures, ` +
      `${u.droppedByDeadLetterQueue} dead letters dropped`,
  );
  console.log(
    `       after drain: ${u.beforeRecovery.missingUsage} without usage, ${u.beforeRecovery.missingCharge} without charge ` +
      `(dead letters: ${top(u.beforeRecovery.deadLetters) || "none"}); replayed ${u.replay.replayed}; ` +
      `reconciliation healed ${u.reconcile.healed} (missing usage ${u.reconcile.missingUsage}, ` +
      `charges ${u.reconcile.missingCharges}); second pass ` +
      `${
        u.reconcileSecondPass.missingUsage +
        u.reconcileSecondPass.missingCharges +
        u.reconcileSecondPass.mismatched +
        u.reconcileSecondPass.balanceDrift
      } differences; rows by source: ${top(u.usageRowsBySource)}`,
  );
  console.log(
    `queue entries: ${top(c.queue)} (failed: ${top(c.queueFailedBecause) || "none"}); reservations: ${top(c.reservations)} (failed: ` +
      `${top(c.reservationsFailedBecause) || "none"})`,
  );
  console.log(
    `feeds: ${c.feed.sockets} sockets, ${c.feed.reconnects} reconnects, ${c.feed.events} events (${top(c.feed.byType, 6)}); ` +
      `close codes ${top(c.feed.closes)}`,
  );
  console.log(`5xx and network errors: ${top(c.failuresAndNetworkErrors, 12) || "none"}`);
  if (c.workerLogOther.count)
    console.log(
      `other runtime log lines: ${Object.entries(c.workerLogOther.byShape)
        .sort((a, b) => b[1] - a[1])
        .slice(0, 4)
        .map(([k, n]) => `${n}× "${k}"`)
        .join("; ")}`,
    );
  console.log("");
  for (const i of r.invariants) {
    console.log(`${i.pass ? "PASS" : "FAIL"}  ${i.name}: ${i.summary}`);
    if (!i.pass) for (const s of i.samples.slice(0, 5)) console.log(`        ${JSON.stringify(s).slice(0, 400)}`);
  }
  console.log("");
  console.log(`soak: ${r.pass ? "PASS" : "FAIL"} in ${r.durationSeconds} s; details in ${path.relative(process.cwd(), OUT) || OUT}`);
}

// A watchdog in its own thread: whatever hangs, the run ends. At the deadline it asks this thread
// to stop (runtime disposed, exit 2). If this thread does not answer (blocked in a synchronous
// call into workerd), 10 s later it kills workerd, which unblocks it; 10 s after that it kills
// workerd again and this process.
function startWatchdog(seconds) {
  const code = `
    const { workerData, parentPort } = require("node:worker_threads");
    const fs = require("node:fs");
    const killChildren = () => {
      for (const pid of fs.readdirSync("/proc").filter((n) => /^\\d+$/.test(n))) {
        try {
          const stat = fs.readFileSync("/proc/" + pid + "/stat", "utf8");
          if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === workerData.pid) process.kill(Number(pid), "SIGKILL");
        } catch {}
      }
    };
    setTimeout(() => {
      fs.writeSync(2, "soak: watchdog: the run is still going after " + workerData.seconds + " s; stopping it\\n");
      parentPort.postMessage("deadline");
      setTimeout(killChildren, 10000);
      setTimeout(() => { killChildren(); process.kill(workerData.pid, "SIGKILL"); }, 20000);
    }, workerData.seconds * 1000);
  `;
  const w = new Worker(code, { eval: true, workerData: { pid: process.pid, seconds } });
  w.on("message", async () => {
    trafficOn = false;
    feedsOn = false;
    await Promise.race([rt?.stop(), sleep(8000)]);
    process.exit(2);
  });
  w.unref();
}
startWatchdog(Number(process.env.SOAK_WATCHDOG_SECONDS) || CHAOS_S + 480);
for (const sig of ["SIGINT", "SIGTERM"])
  process.on(sig, async () => {
    console.error(`soak: ${sig}, stopping`);
    trafficOn = false;
    feedsOn = false;
    await Promise.race([rt?.stop(), sleep(5000)]);
    process.exit(130);
  });

let code = 2;
try {
  code = (await main()) ? 0 : 1;
} catch (err) {
  console.error(`soak: the run broke: ${err?.stack ?? err}`);
  code = 2;
} finally {
  trafficOn = false;
  feedsOn = false;
  for (const ws of openSockets) ws.close(1000);
  await Promise.race([rt?.stop(), sleep(10_000)]);
  agent.destroy();
}
process.exit(code);
