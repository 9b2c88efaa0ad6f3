/**
 * DevicePool: one per pool shard. Keeps an index of its devices' availability and a
 * per-node summary, picks a device by the pool's strategy and asks that device to claim
 * itself. The index is a cache: the Device object is the truth, answers a stale pick with
 * its real state, and pushes every change here (ordered by a version number).
 *
 * It also holds the pool's waiting queue and reservations, because both are about the order
 * in which this pool's devices are handed out:
 * - Queue: an entry waits (priority, then arrival) until a fitting device frees. The device
 *   is then offered to the head entry (no other claim may pick it) and allocated by the
 *   allocation protocol's steps: the entry's user object checks and holds the quota, this
 *   pool claims the device, the user object records it (see handOverAllocation). The entry's
 *   id is the idempotency key, so a retry never allocates twice.
 * - Reservations: a booking takes one fitting device whose window is free (checked and
 *   written with no await between, so two bookings never get one window), and the device
 *   itself records the window, refusing claims and extends that would run into it. The
 *   alarm reminds, and at the start allocates the device by the same steps.
 * Feed events for users go through an outbox (`notices`) that the alarm retries.
 *
 * Pool feed (`GET /ws/pools/:pool`, admins): every change the index applies is logged as a
 * `pool.device` event in the same transaction, and the hello carries the pool's devices, so an
 * operator's view is live without polling. The same changes are counted for the metrics
 * (allocations, releases by reason, expiry lag; see src/metrics.ts).
 */
import { FeedObject } from "./FeedObject";
import { ALLOCATION, DEFAULT_STRATEGY, FEED, PAGING, QUEUE, RESERVATION, type Strategy } from "../src/config";
import type { Env } from "../src/env";
import { fail, ok, type Failure, type Result } from "../src/errors";
import { compareFit, fits, orderNodes, type NodeLoad } from "../src/domain/strategy";
import { estimateStart, joinHash, priorityName, type EstimateDevice } from "../src/domain/queue";
import { bookingHash, checkWindow, reminderAt, type ReservationStatus } from "../src/domain/reservation";
import type { DeviceSpec, DeviceStatus } from "../src/domain/types";
import { durationMsOf } from "../src/domain/duration";
import {
  CLOSE,
  type FeedEvents,
  type FeedEventType,
  type PoolDeviceView,
  type PoolFeedState,
  type QueueEventData,
  type ReservationEventData,
} from "../src/feed/protocol";
import { FeedHub, feedRequestOf, feedSchema, feedSocketsSchema, refuseSocket } from "../src/feed/hub";
import { countChange, type CounterRow } from "../src/metrics";
import { socketReporter } from "../src/objects/operators";
import { newScopedId } from "../src/ids";
import { AlarmClock, CachedRow, Sql, deliverOutbox } from "../src/sql";
import { log } from "../src/log";
import { take } from "../src/rpc";
import type {
  DeviceState,
  ClaimRequest,
  Claimed,
  PoolDevice,
  QueueStatus,
  Viewer,
  QueueJoin,
  QueueEntryView,
  ReservationBooking,
  ReservationView,
  WindowCheck,
  PoolSummary,
  AllocateInput,
  AllocationResult,
} from "../src/contracts";

const SCHEMA = [
  `CREATE TABLE settings (id INTEGER PRIMARY KEY CHECK (id = 1), pool TEXT NOT NULL, strategy TEXT NOT NULL);
   CREATE TABLE devices (
     device_id TEXT PRIMARY KEY, node TEXT NOT NULL, cpu INTEGER NOT NULL, mem INTEGER NOT NULL, storage INTEGER NOT NULL,
     status TEXT NOT NULL, version INTEGER NOT NULL, allocation_id TEXT, user_id TEXT, expires_at INTEGER);
   CREATE INDEX devices_node_status ON devices(node, status, cpu, mem, storage);
   CREATE INDEX devices_status_expires ON devices(status, expires_at);
   CREATE TABLE nodes (node TEXT PRIMARY KEY, busy INTEGER NOT NULL, total INTEGER NOT NULL, free INTEGER NOT NULL, last_picked_at INTEGER NOT NULL DEFAULT 0);`,
  // Idle release grace for the pool's allocations (null: off); the user's object applies it.
  `ALTER TABLE settings ADD COLUMN idle_release_seconds INTEGER;`,
  // Waiting queue, reservations, and the outbox of what users and devices must hear.
  `CREATE TABLE queue (
     entry_id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, user_id TEXT NOT NULL, priority INTEGER NOT NULL,
     cpu_min INTEGER NOT NULL, mem_min INTEGER NOT NULL, storage_min INTEGER NOT NULL,
     cpu_max INTEGER NOT NULL, mem_max INTEGER NOT NULL, storage_max INTEGER NOT NULL,
     duration_minutes INTEGER NOT NULL, duration_seconds INTEGER, duration_ms INTEGER NOT NULL,
     max_wait_minutes INTEGER NOT NULL, wait_until INTEGER NOT NULL, status TEXT NOT NULL,
     device_id TEXT, allocation_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, retry_at INTEGER,
     error TEXT, created_by TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
   CREATE INDEX queue_order ON queue(status, priority DESC, seq);
   CREATE INDEX queue_user ON queue(user_id, created_at);
   CREATE TABLE reservations (
     reservation_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, device_id TEXT, status TEXT NOT NULL,
     cpu_min INTEGER NOT NULL, mem_min INTEGER NOT NULL, storage_min INTEGER NOT NULL,
     cpu_max INTEGER NOT NULL, mem_max INTEGER NOT NULL, storage_max INTEGER NOT NULL,
     start_at INTEGER NOT NULL, end_at INTEGER NOT NULL, duration_minutes INTEGER NOT NULL,
     reminder_minutes INTEGER NOT NULL, remind_at INTEGER, exec_from INTEGER, retry_at INTEGER,
     allocation_id TEXT, error TEXT, created_by TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
   CREATE INDEX reservations_device ON reservations(device_id, status, start_at);
   CREATE INDEX reservations_user ON reservations(user_id, start_at);
   CREATE INDEX reservations_status ON reservations(status, start_at);
   CREATE TABLE notices (
     id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, target TEXT NOT NULL, key TEXT NOT NULL,
     type TEXT NOT NULL, data TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL);`,
  // Idempotency keys of joins and bookings (per user), with the request they were first used for.
  `ALTER TABLE queue ADD COLUMN idem_key TEXT;
   ALTER TABLE queue ADD COLUMN idem_hash TEXT;
   CREATE UNIQUE INDEX queue_idem ON queue(user_id, idem_key) WHERE idem_key IS NOT NULL;
   ALTER TABLE reservations ADD COLUMN idem_key TEXT;
   ALTER TABLE reservations ADD COLUMN idem_hash TEXT;
   CREATE UNIQUE INDEX reservations_idem ON reservations(user_id, idem_key) WHERE idem_key IS NOT NULL;`,
  // Notices keep their last delivery error, as the devices' outbox rows do (one delivery mechanism: deliverOutbox).
  `ALTER TABLE notices ADD COLUMN last_error TEXT;`,
  // The pool feed (its log, event keys, ticket nonces, reported socket count) and the metrics counters.
  `${feedSchema("events")}
   ${feedSocketsSchema("events")}
   CREATE TABLE metrics (name TEXT NOT NULL, label TEXT NOT NULL DEFAULT '', value REAL NOT NULL, PRIMARY KEY (name, label));
   CREATE TABLE gone (device_id TEXT PRIMARY KEY, version INTEGER NOT NULL);`,
];

interface Settings {
  pool: string;
  strategy: Strategy;
  idleReleaseSeconds: number | null;
}

interface IndexRow {
  device_id: string;
  node: string;
  cpu: number;
  mem: number;
  storage: number;
  status: DeviceStatus;
  version: number;
  allocation_id: string | null;
  user_id: string | null;
  expires_at: number | null;
}

interface Bounds {
  cpu_min: number;
  mem_min: number;
  storage_min: number;
  cpu_max: number;
  mem_max: number;
  storage_max: number;
}
/** Columns a queue entry and a reservation share: who made it, when, its last error, its idempotency key. */
interface Tracked {
  error: string | null;
  created_by: string;
  created_at: number;
  updated_at: number;
  idem_key: string | null;
  idem_hash: string | null;
}
interface QueueRow extends Bounds, Tracked {
  entry_id: string;
  seq: number;
  user_id: string;
  priority: number;
  duration_minutes: number;
  duration_seconds: number | null;
  duration_ms: number;
  max_wait_minutes: number;
  wait_until: number;
  status: QueueStatus;
  device_id: string | null;
  allocation_id: string | null;
  attempts: number;
  retry_at: number | null;
}
interface ReservationRow extends Bounds, Tracked {
  reservation_id: string;
  user_id: string;
  device_id: string | null;
  status: ReservationStatus;
  start_at: number;
  end_at: number;
  duration_minutes: number;
  reminder_minutes: number;
  remind_at: number | null;
  exec_from: number | null;
  retry_at: number | null;
  allocation_id: string | null;
}
type Notice =
  | { kind: "user_event"; target: string; key: string; type: FeedEventType; data: unknown }
  | { kind: "unreserve"; target: string; key: string };

/** Hand-over failures that mean the device was not there after all: wait for the next one at once. */
const DEVICE_RACES = new Set([
  "DEVICE_BUSY",
  "DEVICE_RESERVED",
  "DEVICE_UNAVAILABLE",
  "NO_DEVICE_AVAILABLE",
  "QUEUE_OFFER_GONE",
  "DEVICE_UNFIT",
]);
/** Refusals of the user's own account: the entry or reservation fails with them. */
const isFinalRefusal = (f: Failure) =>
  f.status === 402 || f.status === 403 || f.code.startsWith("QUOTA_") || f.code === "IDEMPOTENCY_KEY_REUSED" || f.code === "POOL_NOT_FOUND";

export class DevicePool extends FeedObject {
  private readonly sql: Sql;
  /** Devices with a claim in flight: in memory on purpose, the device itself is the truth. */
  private readonly inFlight = new Set<string>();
  /**
   * When each node was last picked (the spread strategy's order). Kept here during a claim and
   * stored with the claim's result, so a claim writes once, after the device answered: a
   * write before the call would cost a commit of its own.
   */
  private readonly picked = new Map<string, number>();
  /** The settings row (only this class writes it). */
  private readonly cfg: CachedRow<Settings>;
  private readonly clock: AlarmClock;
  /** The running queue dispatch, and whether something changed while it ran (run again). */
  private dispatching = false;
  private dispatchAgain = false;
  /** Callers waiting for the next dispatch round to finish. */
  private readonly roundWaiters: (() => void)[] = [];
  /** Entries and reservations whose hand-over call is running (the alarm leaves them alone). */
  private readonly handing = new Set<string>();
  /** A notice was written since the last delivery (so a path without its own delivery starts one). */
  private noticesWaiting = false;
  /** Devices an entry's hand-over found not free after all (the index was behind), passed over for that entry a while. */
  private readonly raced = new Map<string, Map<string, number>>();
  /** The running alarm work (a second call waits for it instead of running beside it). */
  private ticking: Promise<void> | null = null;
  protected readonly hub: FeedHub;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = new Sql(ctx.storage);
    this.cfg = new CachedRow<Settings>(
      this.sql,
      "SELECT pool, strategy, idle_release_seconds AS idleReleaseSeconds FROM settings WHERE id = 1",
    );
    this.clock = new AlarmClock(ctx.storage);
    this.hub = new FeedHub(ctx, this.sql, {
      table: "events",
      limit: FEED.poolHistoryLimit,
      maxSockets: FEED.maxSocketsPerPool,
      onSockets: socketReporter(env, ctx, "pool"),
    });
    ctx.blockConcurrencyWhile(async () => {
      this.sql.migrate(SCHEMA);
      this.hub.start();
      await this.clock.load();
      await this.rearm();
    });
  }

  private settings(pool: string): Settings {
    const s = this.cfg.get();
    if (s) return s;
    this.cfg.write("INSERT INTO settings (id, pool, strategy) VALUES (1, ?, ?)", pool, DEFAULT_STRATEGY);
    return { pool, strategy: DEFAULT_STRATEGY, idleReleaseSeconds: null };
  }

  private exists(): boolean {
    return this.sql.one("SELECT 1 AS x FROM devices LIMIT 1") !== null;
  }

  /**
   * Picks, claims and returns a device; a stale pick is corrected and the next one tried.
   * A queue entry's claim takes only the device offered to it; a reservation's claim takes its
   * reserved device, or another free one if that one is not free at the start.
   */
  async claim(req: ClaimRequest): Promise<Result<Claimed>> {
    return this.claimFor(req);
  }

  private async claimFor(req: ClaimRequest): Promise<Result<Claimed>> {
    if (!this.exists()) return fail(404, "POOL_NOT_FOUND", `Pool "${req.pool}" has no devices.`, { pool: req.pool });
    const { strategy, idleReleaseSeconds } = this.settings(req.pool);
    const tried = new Set<string>();
    const done = (r: Result<Claimed>) => (r.ok ? ok({ ...r.value, idleReleaseSeconds }) : r);
    if (req.via?.kind === "queue") {
      const e = this.sql.one<{ status: QueueStatus; device_id: string | null }>(
        "SELECT status, device_id FROM queue WHERE entry_id = ?",
        req.via.id,
      );
      if (e?.status !== "offered" || e.device_id !== req.via.deviceId || !req.via.deviceId)
        return fail(409, "QUEUE_OFFER_GONE", "The device offered to this queue entry is no longer offered to it.");
      return done(await this.claimOn(req.via.deviceId, req));
    }
    if (req.via?.kind === "reservation" && req.via.deviceId) {
      tried.add(req.via.deviceId);
      const r = await this.claimOn(req.via.deviceId, req);
      if (r.ok) return done(r);
    }
    const own = req.via?.kind === "reservation" ? req.via.id : null;
    // A reservation's allocation ends with its window (the device caps it there too).
    const span = req.via?.until !== undefined ? Math.max(0, Math.min(req.durationMs, req.via.until - Date.now())) : req.durationMs;
    for (let attempt = 0; attempt < ALLOCATION.claimAttempts; attempt++) {
      const pick = this.pick(strategy, req.min, req.max, tried, span, own);
      if (!pick) break;
      tried.add(pick.device_id);
      const r = await this.claimOn(pick.device_id, req, pick.node);
      if (r.ok) return done(r);
    }
    return this.noDevice(req);
  }

  /** Asks one device to claim itself; the index learns its answer either way. */
  private async claimOn(
    deviceId: string,
    req: ClaimRequest,
    node = this.sql.one<{ node: string }>("SELECT node FROM devices WHERE device_id = ?", deviceId)?.node,
  ): Promise<Result<Claimed>> {
    this.inFlight.add(deviceId);
    const pickedAt = Date.now();
    if (node) this.picked.set(node, pickedAt);
    let r: Result<Claimed>;
    try {
      r = (await take(this.env.DEVICE.getByName(deviceId).claim(req))) as Result<Claimed>;
    } finally {
      this.inFlight.delete(deviceId);
    }
    if (r.ok) {
      this.apply(r.value.state);
      this.sql.exec("UPDATE nodes SET last_picked_at = MAX(last_picked_at, ?) WHERE node = ?", pickedAt, r.value.node);
      return r;
    }
    const state = (r.details as { state?: DeviceState | null } | undefined)?.state;
    if (state) this.apply(state);
    else if (r.code === "DEVICE_UNAVAILABLE") this.drop(deviceId);
    return r;
  }

  /**
   * The best free device for a claim: not in flight, not offered to a queue entry, and with no
   * reservation window (other than `ownReservation`) before the claim would end.
   */
  private pick(
    strategy: Strategy,
    min: DeviceSpec,
    max: DeviceSpec,
    skip: Set<string>,
    durationMs: number,
    ownReservation: string | null,
  ): Pick<IndexRow, "device_id" | "node"> | null {
    const nodes = this.sql.all<{ node: string; busy: number; total: number; free: number; last_picked_at: number }>(
      "SELECT node, busy, total, free, last_picked_at FROM nodes WHERE free > 0",
    );
    const now = Date.now();
    const ordered = orderNodes(
      strategy,
      nodes.map((n): NodeLoad => ({
        node: n.node,
        busy: n.busy,
        total: n.total,
        free: n.free,
        lastPickedAt: Math.max(n.last_picked_at, this.picked.get(n.node) ?? 0),
      })),
    );
    for (const n of ordered) {
      // Indexed lookup per node, smallest fitting first; a few extra rows cover in-flight claims.
      const rows = this.sql.all<Pick<IndexRow, "device_id" | "node" | "cpu" | "mem" | "storage">>(
        `SELECT device_id, node, cpu, mem, storage FROM devices WHERE node = ? AND status = 'available'
           AND ${FITS_SQL}
           AND device_id NOT IN (SELECT device_id FROM queue WHERE status = 'offered' AND device_id IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.device_id = devices.device_id AND r.status IN ('pending','confirmed')
                             AND r.start_at < ? AND r.end_at > ? AND r.reservation_id != ?)
         ORDER BY cpu, mem, storage, device_id LIMIT ?`,
        n.node,
        ...boundsArgs(min, max),
        now + durationMs,
        now,
        ownReservation ?? "",
        this.inFlight.size + skip.size + 1,
      );
      const candidates = rows
        .filter((r) => !this.inFlight.has(r.device_id) && !skip.has(r.device_id))
        .sort((a, b) => compareFit({ deviceId: a.device_id, ...spec(a) }, { deviceId: b.device_id, ...spec(b) }));
      if (candidates[0]) return candidates[0];
    }
    return null;
  }

  private noDevice(req: ClaimRequest): Result<never> {
    const soonest = this.sql.one<{ t: number | null }>("SELECT MIN(expires_at) AS t FROM devices WHERE status = 'allocated'");
    return fail(409, "NO_DEVICE_AVAILABLE", `No free device in pool "${req.pool}" matches the request.`, {
      pool: req.pool,
      spec: req.min,
      nextExpiryAt: soonest?.t ? new Date(soonest.t).toISOString() : null,
    });
  }

  /** A device reports its state (directly or from its outbox). Older versions are ignored. */
  async deviceState(pool: string, state: DeviceState): Promise<void> {
    this.settings(pool);
    this.apply(state);
  }

  private apply(s: DeviceState): void {
    const changed = this.sql.tx(() => {
      const prev = this.sql.one<{ version: number; node: string; status: DeviceStatus; allocation_id: string | null }>(
        "SELECT version, node, status, allocation_id FROM devices WHERE device_id = ?",
        s.deviceId,
      );
      if (prev && prev.version >= s.version) return false;
      // A device that left (removed, or moved to another pool) is remembered with its version,
      // so an older state arriving late does not bring it back.
      const gone = prev ? null : this.sql.one<{ version: number }>("SELECT version FROM gone WHERE device_id = ?", s.deviceId);
      if (gone && gone.version >= s.version) return false;
      if (s.status === "removed") {
        this.sql.exec("DELETE FROM devices WHERE device_id = ?", s.deviceId);
        this.sql.exec("INSERT OR REPLACE INTO gone (device_id, version) VALUES (?, ?)", s.deviceId, s.version);
        if (!prev) return false;
      } else {
        if (gone) this.sql.exec("DELETE FROM gone WHERE device_id = ?", s.deviceId);
        this.sql.exec(
          `INSERT INTO devices (device_id, node, cpu, mem, storage, status, version, allocation_id, user_id, expires_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(device_id) DO UPDATE SET node = excluded.node, cpu = excluded.cpu, mem = excluded.mem, storage = excluded.storage,
             status = excluded.status, version = excluded.version, allocation_id = excluded.allocation_id,
             user_id = excluded.user_id, expires_at = excluded.expires_at`,
          s.deviceId,
          s.node,
          s.cpuCores,
          s.memoryMB,
          s.storageMB,
          s.status,
          s.version,
          s.allocationId,
          s.userId,
          s.expiresAt,
        );
      }
      if (prev && prev.node !== s.node) this.refreshNode(prev.node);
      // Node counts only move with a device's status or node (a spec change or re-registration keeps them).
      if (!prev || prev.node !== s.node || prev.status !== s.status || s.status === "removed") this.refreshNode(s.node);
      this.reservationAllocationEnded(s);
      this.observe(prev ? { status: prev.status, allocationId: prev.allocation_id } : null, s);
      return true;
    });
    // A device freed (release, expiry, back in service): the queue's head gets it now.
    if (changed && s.status === "available" && this.sql.one("SELECT 1 AS x FROM queue WHERE status = 'waiting' LIMIT 1"))
      void this.dispatch();
    else if (this.noticesWaiting) this.ctx.waitUntil(this.flushNotices().then(() => this.rearm()));
  }

  /** Inside `apply`'s transaction: the pool feed's event and the metrics counters of a change. */
  private observe(prev: { status: DeviceStatus; allocationId: string | null } | null, next: DeviceState): void {
    const pool = this.cfg.get()?.pool ?? "";
    // A device that left this pool holds nothing here (a moved device's allocation is its new pool's).
    const s = next.status === "removed" ? { ...next, allocationId: null, userId: null, expiresAt: null } : next;
    this.hub.append(s.userId ?? "", "pool.device", {
      pool,
      ...deviceView(s),
      previousStatus: prev?.status ?? null,
      reason: s.ended?.reason ?? null,
    });
    this.count(countChange(prev, s));
  }

  private count(rows: CounterRow[]): void {
    for (const r of rows)
      this.sql.exec(
        "INSERT INTO metrics (name, label, value) VALUES (?, ?, ?) ON CONFLICT(name, label) DO UPDATE SET value = value + excluded.value",
        r.name,
        r.label,
        r.value,
      );
  }

  private drop(deviceId: string): void {
    this.sql.tx(() => {
      const prev = this.sql.one<IndexRow>("SELECT * FROM devices WHERE device_id = ?", deviceId);
      this.sql.exec("DELETE FROM devices WHERE device_id = ?", deviceId);
      if (!prev) return;
      this.refreshNode(prev.node);
      this.observe({ status: prev.status, allocationId: prev.allocation_id }, { ...indexState(prev), status: "removed" });
    });
  }

  private refreshNode(node: string): void {
    const c = this.sql.one<{ total: number; busy: number; free: number }>(
      `SELECT COUNT(*) AS total, SUM(status = 'allocated') AS busy, SUM(status = 'available') AS free FROM devices WHERE node = ?`,
      node,
    )!;
    if (!c.total) this.sql.exec("DELETE FROM nodes WHERE node = ?", node);
    else
      this.sql.exec(
        `INSERT INTO nodes (node, busy, total, free) VALUES (?, ?, ?, ?)
         ON CONFLICT(node) DO UPDATE SET busy = excluded.busy, total = excluded.total, free = excluded.free`,
        node,
        c.busy ?? 0,
        c.total,
        c.free ?? 0,
      );
  }

  // ---- waiting queue ----------------------------------------------------------------------

  /** A new entry; if a fitting device is free it is handed over before this returns. */
  async join(j: QueueJoin): Promise<Result<QueueEntryView>> {
    if (!this.exists()) return fail(404, "POOL_NOT_FOUND", `Pool "${j.pool}" has no devices.`, { pool: j.pool });
    this.settings(j.pool);
    if (this.matching(j.min, j.max, true) === 0)
      return fail(
        409,
        "NO_MATCHING_DEVICE",
        `No device in pool "${j.pool}" that is in service matches the request within your quota, so waiting would never end.`,
        { pool: j.pool, spec: j.min },
      );
    const before = this.repeatOrLimit("queue", j.userId, j.idempotencyKey && { key: j.idempotencyKey, hash: joinHash(j) });
    if (before) return before as Result<QueueEntryView>;
    const now = Date.now();
    const entryId = newScopedId("que", j.pool);
    const seq = (this.sql.one<{ s: number | null }>("SELECT MAX(seq) AS s FROM queue")?.s ?? 0) + 1;
    const durationMs = durationMsOf(j.durationMinutes, j.durationSeconds);
    const waitUntil = now + durationMsOf(j.maxWaitMinutes, j.maxWaitSeconds);
    this.sql.exec(
      `INSERT INTO queue (entry_id, seq, user_id, priority, cpu_min, mem_min, storage_min, cpu_max, mem_max, storage_max,
         duration_minutes, duration_seconds, duration_ms, max_wait_minutes, wait_until, status, created_by, created_at, updated_at, idem_key, idem_hash)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'waiting', ?, ?, ?, ?, ?)`,
      entryId,
      seq,
      j.userId,
      j.priority,
      ...boundsArgs(j.min, j.max),
      j.durationMinutes,
      j.durationSeconds ?? null,
      durationMs,
      j.maxWaitMinutes,
      waitUntil,
      j.createdBy,
      now,
      now,
      j.idempotencyKey ?? null,
      j.idempotencyKey ? joinHash(j) : null,
    );
    await this.clock.arm(waitUntil);
    await this.dispatch();
    return ok(this.entryView(this.entryRow(entryId)!));
  }

  async queueEntry(entryId: string, viewer: Viewer): Promise<Result<QueueEntryView>> {
    const row = this.entryRow(entryId);
    if (!row || !sees(viewer, row.user_id)) return fail(404, "QUEUE_ENTRY_NOT_FOUND", "No such queue entry.", { entryId });
    return ok(this.entryView(row));
  }

  /** A user's entries (an admin without `userId`: everyone's), newest first; waiting ones carry their position. */
  async listQueue(
    viewer: Viewer,
    opts: { userId?: string; status?: QueueStatus; limit?: number },
  ): Promise<Result<{ items: QueueEntryView[]; waiting: number }>> {
    const who = viewer.admin ? opts.userId : viewer.userId;
    const limit = Math.min(opts.limit ?? PAGING.defaultLimit, PAGING.maxLimit);
    const rows = this.sql.all<QueueRow>(
      `SELECT * FROM queue WHERE 1 = 1 ${who ? "AND user_id = ?" : ""} ${opts.status ? "AND status = ?" : ""} ORDER BY created_at DESC, seq DESC LIMIT ?`,
      ...[...(who ? [who] : []), ...(opts.status ? [opts.status] : []), limit],
    );
    const waiting = this.sql.one<{ n: number }>("SELECT COUNT(*) AS n FROM queue WHERE status IN ('waiting','offered')")!.n;
    return ok({ items: rows.map((r) => this.entryView(r)), waiting });
  }

  /**
   * The entry or reservation a repeated idempotency key made (null: the key is new). Asked by
   * the user's object before its own checks, so a repeat answers the first result even when
   * that first request has since taken the user's last free quota.
   */
  async priorRequest(
    kind: "queue" | "reservation",
    userId: string,
    key: string,
    hash: string,
  ): Promise<Result<QueueEntryView | ReservationView> | null> {
    return this.prior(kind, userId, key, hash);
  }

  /** Before a new entry or booking: a repeated key's first answer, or the refusal of one too many open ones; null to go on. */
  private repeatOrLimit(
    kind: "queue" | "reservation",
    userId: string,
    keyed: { key: string; hash: string } | undefined | "",
  ): Result<QueueEntryView | ReservationView> | null {
    if (keyed) {
      const prior = this.prior(kind, userId, keyed.key, keyed.hash);
      if (prior) return prior;
    }
    const [sql, limit, code, what] =
      kind === "queue"
        ? ([
            "SELECT COUNT(*) AS n FROM queue WHERE user_id = ? AND status IN ('waiting','offered')",
            QUEUE.maxWaitingPerUser,
            "QUEUE_LIMIT",
            "entries waiting",
          ] as const)
        : ([
            "SELECT COUNT(*) AS n FROM reservations WHERE user_id = ? AND status IN ('pending','confirmed')",
            RESERVATION.maxOpenPerUser,
            "RESERVATION_LIMIT",
            "open reservations",
          ] as const);
    const open = this.sql.one<{ n: number }>(sql, userId)!.n;
    return open >= limit
      ? fail(409, code, `You already have ${open} ${what} in pool "${this.cfg.get()?.pool ?? ""}" (at most ${limit}).`, { limit })
      : null;
  }

  private prior(kind: "queue" | "reservation", userId: string, key: string, hash: string): Result<QueueEntryView | ReservationView> | null {
    const row =
      kind === "queue"
        ? this.sql.one<QueueRow>("SELECT * FROM queue WHERE user_id = ? AND idem_key = ?", userId, key)
        : this.sql.one<ReservationRow>("SELECT * FROM reservations WHERE user_id = ? AND idem_key = ?", userId, key);
    if (!row) return null;
    if (row.idem_hash !== hash)
      return fail(409, "IDEMPOTENCY_KEY_REUSED", "This idempotency key was used for a different request.", {
        idempotencyKey: key,
      });
    return ok("entry_id" in row ? this.entryView(row) : this.reservationView(row));
  }

  /** Leaves the queue. An entry whose hand-over call is running right now cannot be cancelled (release the device instead). */
  async cancelEntry(entryId: string, viewer: Viewer): Promise<Result<QueueEntryView>> {
    const row = this.entryRow(entryId);
    if (!row || !sees(viewer, row.user_id)) return fail(404, "QUEUE_ENTRY_NOT_FOUND", "No such queue entry.", { entryId });
    if (this.handing.has(entryId))
      return fail(
        409,
        "QUEUE_ENTRY_BUSY",
        "A device is being handed to this entry right now; release it once allocated if you no longer need it.",
        { entryId },
      );
    if (row.status !== "waiting" && row.status !== "offered")
      return fail(409, "QUEUE_ENTRY_CLOSED", `The entry is already ${row.status}.`, { entryId, status: row.status });
    this.sql.exec(
      "UPDATE queue SET status = 'cancelled', device_id = NULL, retry_at = NULL, updated_at = ? WHERE entry_id = ? AND status IN ('waiting','offered')",
      Date.now(),
      entryId,
    );
    // An offered device is free for the next entry.
    if (row.status === "offered") await this.dispatch();
    return ok(this.entryView(this.entryRow(entryId)!));
  }

  private entryRow(entryId: string): QueueRow | null {
    return this.sql.one<QueueRow>("SELECT * FROM queue WHERE entry_id = ?", entryId);
  }

  private entryView(r: QueueRow): QueueEntryView {
    const now = Date.now();
    const open = r.status === "waiting" || r.status === "offered";
    let position: number | null = null;
    let estimate: number | null = null;
    if (open) {
      const ahead = this.sql.all<QueueRow>(
        "SELECT * FROM queue WHERE status IN ('waiting','offered') AND (priority > ? OR (priority = ? AND seq < ?)) ORDER BY priority DESC, seq LIMIT 1000",
        r.priority,
        r.priority,
        r.seq,
      );
      position = ahead.length + 1;
      const devices = this.sql.all<IndexRow>(
        "SELECT device_id, cpu, mem, storage, status, expires_at FROM devices WHERE status IN ('available','allocated')",
      );
      estimate =
        r.status === "offered"
          ? now
          : estimateStart(
              devices.map((d): EstimateDevice => ({
                ...spec(d),
                freeAt: d.status === "available" ? now : d.status === "allocated" ? (d.expires_at ?? now) : null,
              })),
              ahead.map((a) => ({ ...bounds(a), durationMs: a.duration_ms })),
              bounds(r),
              now,
            );
    }
    return {
      entryId: r.entry_id,
      userId: r.user_id,
      pool: this.cfg.get()?.pool ?? "",
      status: r.status,
      priority: r.priority,
      priorityName: priorityName(r.priority),
      spec: bounds(r).min,
      durationMinutes: r.duration_minutes,
      maxWaitMinutes: r.max_wait_minutes,
      joinedAt: iso(r.created_at),
      waitUntil: iso(r.wait_until),
      position,
      estimatedStartAt: estimate === null ? null : iso(estimate),
      estimatedWaitSeconds: estimate === null ? null : Math.max(0, Math.round((estimate - now) / 1000)),
      allocationId: r.allocation_id,
      deviceId: r.status === "fulfilled" ? r.device_id : null,
      error: parseError(r.error),
      createdBy: r.created_by,
    };
  }

  /**
   * Offers free devices to waiting entries in queue order (priority, then arrival), then hands
   * them over, in rounds: one round runs at a time, and a call during a round asks for another.
   * The promise resolves when a round that started after the call has finished (so a join sees
   * its own hand-over). A busy pool may always have another round to run: after a few in one
   * go the rest continue from the alarm, so no single invocation of the object runs for ever.
   */
  private dispatch(): Promise<void> {
    const done = new Promise<void>((resolve) => this.roundWaiters.push(resolve));
    this.dispatchAgain = true;
    if (!this.dispatching) {
      this.dispatching = true;
      // Kept alive by the runtime until the rounds end (a few at most: see dispatchRounds).
      this.ctx.waitUntil(this.dispatchRounds());
    }
    return done;
  }

  private async dispatchRounds(): Promise<void> {
    try {
      for (let round = 0; this.dispatchAgain; round++) {
        if (round === QUEUE.roundsPerInvocation) {
          // Handed on: the alarm runs the next round. Callers still waiting are let go now (they may
          // be the alarm itself, which must end before the next alarm can run).
          for (const resolve of this.roundWaiters.splice(0)) resolve();
          await this.clock.arm(Date.now());
          return;
        }
        this.dispatchAgain = false;
        const waiting = this.roundWaiters.splice(0);
        try {
          // Notices first: a window given back (unreserve) must reach its device before the device is offered.
          await this.flushNotices();
          const offers = this.offer();
          if (offers.length) await Promise.all(offers.map((e) => this.handOver(e)));
          await this.flushNotices();
          await this.rearm();
        } catch (err) {
          // The alarm (re-armed by the constructor after a restart) drives what is still due.
          log("error", "queue dispatch failed", { pool: this.cfg.get()?.pool, error: String(err).slice(0, 500) });
          await this.clock.arm(Date.now() + QUEUE.offerRetryMs).catch(() => {});
        } finally {
          for (const resolve of waiting) resolve();
        }
      }
    } finally {
      this.dispatching = false;
    }
  }

  /**
   * Synchronous (one commit): expires entries past their wait, then matches the free devices
   * to waiting entries in queue order; each entry gets the smallest free device it fits that
   * has no reservation window before its allocation would end. Marks each offer.
   */
  private offer(): QueueRow[] {
    const now = Date.now();
    this.expireWaiting(now);
    const free = this.sql
      .all<IndexRow>(
        `SELECT * FROM devices WHERE status = 'available'
         AND device_id NOT IN (SELECT device_id FROM queue WHERE status = 'offered' AND device_id IS NOT NULL)
       ORDER BY cpu, mem, storage, device_id LIMIT 1000`,
      )
      .filter((d) => !this.inFlight.has(d.device_id));
    if (free.length === 0) return [];
    const waiting = this.sql.all<QueueRow>(
      "SELECT * FROM queue WHERE status = 'waiting' AND (retry_at IS NULL OR retry_at <= ?) ORDER BY priority DESC, seq LIMIT 2000",
      now,
    );
    if (waiting.length === 0) return [];
    // The earliest window on each device that has not ended (one in progress blocks it now).
    const windowAt = new Map(
      this.sql
        .all<{ device_id: string; t: number }>(
          "SELECT device_id, MIN(start_at) AS t FROM reservations WHERE status IN ('pending','confirmed') AND end_at > ? GROUP BY device_id",
          now,
        )
        .map((w) => [w.device_id, w.t]),
    );
    const offers: QueueRow[] = [];
    for (const e of waiting) {
      const b = bounds(e);
      const skip = this.racedFor(e.entry_id, now);
      const i = free.findIndex(
        (d) => fits(spec(d), b.min, b.max) && !skip.has(d.device_id) && (windowAt.get(d.device_id) ?? Infinity) >= now + e.duration_ms,
      );
      if (i < 0) continue;
      const [d] = free.splice(i, 1);
      this.sql.exec(
        "UPDATE queue SET status = 'offered', device_id = ?, retry_at = ?, updated_at = ? WHERE entry_id = ?",
        d!.device_id,
        now + QUEUE.offerRetryMs,
        now,
        e.entry_id,
      );
      offers.push({ ...e, status: "offered", device_id: d!.device_id });
      if (free.length === 0) break;
    }
    return offers;
  }

  /** Devices this entry is passing over for now (each for `QUEUE.raceSkipMs` after its hand-over found it taken). */
  private racedFor(entryId: string, now: number): Set<string> {
    const m = this.raced.get(entryId);
    if (!m) return new Set();
    for (const [d, until] of m) if (until <= now) m.delete(d);
    if (m.size === 0) this.raced.delete(entryId);
    return new Set(m.keys());
  }

  private expireWaiting(now: number): void {
    const due = this.sql.all<QueueRow>("SELECT * FROM queue WHERE status = 'waiting' AND wait_until <= ?", now);
    for (const e of due) {
      this.sql.tx(() => {
        this.sql.exec("UPDATE queue SET status = 'expired', updated_at = ? WHERE entry_id = ? AND status = 'waiting'", now, e.entry_id);
        this.notify(e.user_id, `queue.expired:${e.entry_id}`, "queue.expired", {
          ...this.queueEventData(e),
          maxWaitMinutes: e.max_wait_minutes,
        });
      });
    }
  }

  /** The offered device is allocated to the entry's user (quota and balance checked by their object), and the outcome recorded. */
  private async handOver(e: QueueRow): Promise<void> {
    const r = await this.handOverAllocation(e.entry_id, this.queueAllocation(e));
    if (!r) return;
    const now = Date.now();
    const row = this.entryRow(e.entry_id);
    if (row?.status !== "offered") return;
    this.sql.tx(() => {
      if (r.ok) {
        this.sql.exec(
          "UPDATE queue SET status = 'fulfilled', device_id = ?, allocation_id = ?, retry_at = NULL, updated_at = ? WHERE entry_id = ?",
          r.value.deviceId,
          r.value.allocationId,
          now,
          e.entry_id,
        );
        this.notify(e.user_id, `queue.fulfilled:${e.entry_id}`, "queue.fulfilled", {
          ...this.queueEventData(row),
          allocationId: r.value.allocationId,
          deviceId: r.value.deviceId,
          waitedSeconds: Math.round((now - row.created_at) / 1000),
        });
        this.raced.delete(e.entry_id);
      } else if (isFinalRefusal(r)) {
        this.sql.exec(
          "UPDATE queue SET status = 'failed', device_id = NULL, retry_at = NULL, error = ?, updated_at = ? WHERE entry_id = ?",
          errorText(r),
          now,
          e.entry_id,
        );
        this.notify(e.user_id, `queue.failed:${e.entry_id}`, "queue.failed", {
          ...this.queueEventData(row),
          error: { code: r.code, message: r.message },
        });
        this.raced.delete(e.entry_id);
        this.dispatchAgain = true; // the device goes to the next entry
      } else if (DEVICE_RACES.has(r.code)) {
        // The device was not free for this entry after all (the index was behind, a window the pool
        // has not heard is gone yet, the user's quota shrank): wait for another, passing this one over a while.
        const m = this.raced.get(e.entry_id) ?? new Map<string, number>();
        m.set(row.device_id ?? "", now + QUEUE.raceSkipMs);
        this.raced.set(e.entry_id, m);
        this.sql.exec(
          "UPDATE queue SET status = 'waiting', device_id = NULL, retry_at = NULL, error = ?, updated_at = ? WHERE entry_id = ?",
          errorText(r),
          now,
          e.entry_id,
        );
        this.dispatchAgain = true;
      } else if (row.attempts + 1 >= QUEUE.offerAttempts) {
        // Transient failures (the user's object or billing did not answer) that go on: the device goes
        // back to the queue and the entry waits again (a later hand-over uses the same key, so an
        // allocation the user's object did make is the one it gets).
        this.sql.exec(
          "UPDATE queue SET status = 'waiting', device_id = NULL, attempts = 0, retry_at = ?, error = ?, updated_at = ? WHERE entry_id = ?",
          now + QUEUE.offerRetryMs,
          errorText(r),
          now,
          e.entry_id,
        );
        this.dispatchAgain = true;
      } else {
        // Transient: the alarm drives it again, same key.
        this.sql.exec(
          "UPDATE queue SET attempts = attempts + 1, retry_at = ?, error = ?, updated_at = ? WHERE entry_id = ?",
          now + QUEUE.offerRetryMs,
          errorText(r),
          now,
          e.entry_id,
        );
      }
    });
  }

  /**
   * An allocation for a queue entry or a reservation: the user's object checks and holds the
   * quota (step 1), this pool claims the device itself (step 2), the user's object records and
   * confirms it (steps 3-4). The pool never waits on a call that calls back into it.
   */
  private async handOverAllocation(
    key: string,
    input: AllocateInput & { via: NonNullable<ClaimRequest["via"]> },
  ): Promise<Result<AllocationResult> | null> {
    // One hand-over per entry or reservation at a time (the alarm may find it due while it runs).
    if (this.handing.has(key)) return null;
    this.handing.add(key);
    try {
      return await this.handOverSteps(input);
    } catch (err) {
      return fail(503, "USER_UNAVAILABLE", "The user's object did not answer.", { cause: String(err).slice(0, 200) });
    } finally {
      this.handing.delete(key);
    }
  }

  private async handOverSteps(input: AllocateInput & { via: NonNullable<ClaimRequest["via"]> }): Promise<Result<AllocationResult>> {
    const user = this.env.USER_QUOTA.getByName(input.userId);
    const begun = (await take(user.beginHandOver(input))) as
      Result<AllocationResult> | { begun: { allocationId: string; durationMs: number; max: DeviceSpec } };
    if (!("begun" in begun)) return begun;
    const b = begun.begun;
    let claimed: Result<Claimed>;
    try {
      claimed = await this.claimFor({
        allocationId: b.allocationId,
        userId: input.userId,
        pool: input.pool,
        min: input.spec,
        max: b.max,
        durationMs: b.durationMs,
        via: input.via,
      });
    } catch (err) {
      // A device that did not answer may hold it: it asks the user's object later and frees itself.
      claimed = fail(503, "DEVICE_UNAVAILABLE", "The device did not answer.", { cause: String(err).slice(0, 200) });
    }
    return (await take(user.finishHandOver(input, b.allocationId, claimed))) as Result<AllocationResult>;
  }

  private queueAllocation(e: QueueRow): AllocateInput & { via: NonNullable<ClaimRequest["via"]> } {
    return {
      userId: e.user_id,
      pool: this.cfg.get()!.pool,
      durationMinutes: e.duration_minutes,
      durationSeconds: e.duration_seconds ?? undefined,
      spec: bounds(e).min,
      idempotencyKey: `queue:${e.entry_id}`,
      via: { kind: "queue", id: e.entry_id, deviceId: e.device_id },
    };
  }

  private queueEventData(e: QueueRow): QueueEventData {
    return { entryId: e.entry_id, pool: this.cfg.get()?.pool ?? "", priority: e.priority, joinedAt: iso(e.created_at) };
  }

  // ---- reservations ---------------------------------------------------------------------------

  /** Devices that match and are free for the whole window (not allocated into it, no other reservation in it). */
  private freeForWindow(min: DeviceSpec, max: DeviceSpec, startAt: number, endAt: number, skip: Set<string>): IndexRow[] {
    return this.sql
      .all<IndexRow>(
        `SELECT * FROM devices d WHERE (status = 'available' OR (status = 'allocated' AND expires_at <= ?))
         AND ${FITS_SQL}
         AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.device_id = d.device_id AND r.status IN ('pending','confirmed','executing')
                           AND r.start_at < ? AND r.end_at > ?)
       ORDER BY cpu, mem, storage, device_id LIMIT ?`,
        startAt,
        ...boundsArgs(min, max),
        endAt,
        startAt,
        skip.size + 50,
      )
      .filter((d) => !skip.has(d.device_id));
  }

  /**
   * Books a window. The device is chosen and the row written in one synchronous step, so a
   * concurrent booking sees it taken; then the device records the window (and may refuse,
   * e.g. extended into it meanwhile: the next device is tried).
   */
  async book(b: ReservationBooking): Promise<Result<ReservationView>> {
    if (!this.exists()) return fail(404, "POOL_NOT_FOUND", `Pool "${b.pool}" has no devices.`, { pool: b.pool });
    this.settings(b.pool);
    const now = Date.now();
    const bad = checkWindow(b.startAt, b.endAt, now);
    if (bad) return bad;
    const before = this.repeatOrLimit("reservation", b.userId, b.idempotencyKey && { key: b.idempotencyKey, hash: bookingHash(b) });
    if (before) return before as Result<ReservationView>;
    const reservationId = newScopedId("rsv", b.pool);
    this.handing.add(reservationId);
    try {
      return await this.bookOn(reservationId, b);
    } finally {
      this.handing.delete(reservationId);
    }
  }

  private async bookOn(reservationId: string, b: ReservationBooking): Promise<Result<ReservationView>> {
    const tried = new Set<string>();
    for (let attempt = 0; attempt < ALLOCATION.claimAttempts; attempt++) {
      const device = this.freeForWindow(b.min, b.max, b.startAt, b.endAt, tried)[0];
      if (!device) break;
      tried.add(device.device_id);
      const t = Date.now();
      if (attempt === 0)
        this.sql.exec(
          `INSERT INTO reservations (reservation_id, user_id, device_id, status, cpu_min, mem_min, storage_min, cpu_max, mem_max, storage_max,
             start_at, end_at, duration_minutes, reminder_minutes, created_by, created_at, updated_at, idem_key, idem_hash)
           VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          reservationId,
          b.userId,
          device.device_id,
          ...boundsArgs(b.min, b.max),
          b.startAt,
          b.endAt,
          b.durationMinutes,
          b.reminderMinutes,
          b.createdBy,
          t,
          t,
          b.idempotencyKey ?? null,
          b.idempotencyKey ? bookingHash(b) : null,
        );
      else
        this.sql.exec("UPDATE reservations SET device_id = ?, updated_at = ? WHERE reservation_id = ?", device.device_id, t, reservationId);
      let r: Result<{ deviceId: string }>;
      try {
        r = (await take(
          this.env.DEVICE.getByName(device.device_id).reserve({
            reservationId,
            userId: b.userId,
            pool: b.pool,
            startAt: b.startAt,
            endAt: b.endAt,
          }),
        )) as Result<{ deviceId: string }>;
      } catch (err) {
        // Unknown whether the device wrote the window: give it back through the outbox, book nothing.
        this.sql.tx(() => {
          this.sql.exec("DELETE FROM reservations WHERE reservation_id = ?", reservationId);
          this.enqueueNotice({ kind: "unreserve", target: device.device_id, key: reservationId });
        });
        await this.dispatch(); // delivers the unreserve (or arms its retry)
        return fail(503, "DEVICE_UNAVAILABLE", "The device did not answer; nothing was booked. Try again.", {
          cause: String(err).slice(0, 200),
        });
      }
      if (r.ok) {
        const remindAt = reminderAt(b.startAt, b.reminderMinutes, Date.now());
        this.sql.exec(
          "UPDATE reservations SET status = 'confirmed', remind_at = ?, updated_at = ? WHERE reservation_id = ? AND status = 'pending'",
          remindAt,
          Date.now(),
          reservationId,
        );
        await this.clock.arm(Math.min(remindAt ?? b.startAt, b.startAt));
        if (remindAt !== null && remindAt <= Date.now()) void this.tick().catch(() => {});
        // A crash before this point leaves a pending row: the alarm drops it after pendingTimeoutMs.
        return ok(this.reservationView(this.reservationRow(reservationId)!));
      }
      const state = (r.details as { state?: DeviceState | null } | undefined)?.state;
      if (state) this.apply(state);
      else if (r.code === "DEVICE_UNAVAILABLE") this.drop(device.device_id);
    }
    this.sql.exec("DELETE FROM reservations WHERE reservation_id = ? AND status = 'pending'", reservationId);
    return fail(409, "NO_CAPACITY", `No device in pool "${b.pool}" matching the request is free for the whole window.`, {
      pool: b.pool,
      startAt: iso(b.startAt),
      endAt: iso(b.endAt),
      matchingDevices: this.matching(b.min, b.max),
    });
  }

  /** Devices of the pool that match the bounds (only those in service: available or allocated). */
  private matching(min: DeviceSpec, max: DeviceSpec, inServiceOnly = false): number {
    return this.sql.one<{ n: number }>(
      `SELECT COUNT(*) AS n FROM devices WHERE ${FITS_SQL} ${inServiceOnly ? "AND status IN ('available','allocated')" : ""}`,
      ...boundsArgs(min, max),
    )!.n;
  }

  /** Would a booking of this window get a device now? Also the caller's own reservations that overlap it. */
  async checkWindow(b: Omit<ReservationBooking, "durationMinutes" | "reminderMinutes" | "createdBy">): Promise<Result<WindowCheck>> {
    if (!this.exists()) return fail(404, "POOL_NOT_FOUND", `Pool "${b.pool}" has no devices.`, { pool: b.pool });
    const bad = checkWindow(b.startAt, b.endAt, Date.now());
    if (bad) return bad;
    const free = this.freeForWindow(b.min, b.max, b.startAt, b.endAt, new Set()).length;
    const mine = this.sql.all<ReservationRow>(
      `SELECT * FROM reservations WHERE user_id = ? AND status IN ('pending','confirmed','executing') AND start_at < ? AND end_at > ? ORDER BY start_at`,
      b.userId,
      b.endAt,
      b.startAt,
    );
    return ok({
      pool: b.pool,
      startAt: iso(b.startAt),
      endAt: iso(b.endAt),
      available: free > 0,
      matchingDevices: this.matching(b.min, b.max),
      freeDevices: free,
      overlapping: mine.map((r) => this.reservationView(r)),
    });
  }

  async reservation(reservationId: string, viewer: Viewer): Promise<Result<ReservationView>> {
    const row = this.reservationRow(reservationId);
    if (!row || !sees(viewer, row.user_id)) return fail(404, "RESERVATION_NOT_FOUND", "No such reservation.", { reservationId });
    return ok(this.reservationView(row));
  }

  async listReservations(
    viewer: Viewer,
    opts: { userId?: string; status?: ReservationStatus; limit?: number },
  ): Promise<Result<{ items: ReservationView[] }>> {
    const who = viewer.admin ? opts.userId : viewer.userId;
    const limit = Math.min(opts.limit ?? PAGING.defaultLimit, PAGING.maxLimit);
    const rows = this.sql.all<ReservationRow>(
      `SELECT * FROM reservations WHERE 1 = 1 ${who ? "AND user_id = ?" : ""} ${opts.status ? "AND status = ?" : ""} ORDER BY start_at, reservation_id LIMIT ?`,
      ...[...(who ? [who] : []), ...(opts.status ? [opts.status] : []), limit],
    );
    return ok({ items: rows.map((r) => this.reservationView(r)) });
  }

  /** Cancels a reservation that has not started; its device's window is freed (through the outbox). */
  async cancelReservation(reservationId: string, viewer: Viewer): Promise<Result<ReservationView>> {
    const row = this.reservationRow(reservationId);
    if (!row || !sees(viewer, row.user_id)) return fail(404, "RESERVATION_NOT_FOUND", "No such reservation.", { reservationId });
    if (row.status === "executing")
      return fail(409, "RESERVATION_EXECUTING", "The reservation has started; release its allocation instead.", {
        reservationId,
        allocationId: row.allocation_id,
      });
    if ((row.status !== "pending" && row.status !== "confirmed") || this.handing.has(reservationId))
      return fail(409, "RESERVATION_CLOSED", `The reservation is already ${row.status === "confirmed" ? "starting" : row.status}.`, {
        reservationId,
        status: row.status,
      });
    this.endReservation(row, "cancelled", null);
    // The window is given back to the device, and a waiting entry may now take it.
    await this.dispatch();
    return ok(this.reservationView(this.reservationRow(reservationId)!));
  }

  /** Moves a reservation that has not started to an end state: the device's window goes, the user hears. */
  private endReservation(row: ReservationRow, status: "cancelled" | "expired" | "failed", error: Failure | null): void {
    this.sql.tx(() => {
      this.sql.exec(
        "UPDATE reservations SET status = ?, error = ?, retry_at = NULL, remind_at = NULL, updated_at = ? WHERE reservation_id = ?",
        status,
        error ? errorText(error) : null,
        Date.now(),
        row.reservation_id,
      );
      if (row.device_id) this.enqueueNotice({ kind: "unreserve", target: row.device_id, key: row.reservation_id });
      this.notify(row.user_id, `reservation.${status}:${row.reservation_id}`, `reservation.${status}`, {
        ...this.reservationEventData({ ...row, status }),
        ...(error ? { error: { code: error.code, message: error.message } } : {}),
      });
    });
  }

  /** The allocation made for an executing reservation has ended (seen in the device's new state): completed. */
  private reservationAllocationEnded(s: DeviceState): void {
    const done = this.sql.all<ReservationRow>(
      "SELECT * FROM reservations WHERE status = 'executing' AND device_id = ? AND allocation_id IS NOT NULL AND allocation_id IS NOT ?",
      s.deviceId,
      s.allocationId,
    );
    for (const row of done) {
      this.sql.exec(
        "UPDATE reservations SET status = 'completed', updated_at = ? WHERE reservation_id = ?",
        Date.now(),
        row.reservation_id,
      );
      this.notify(
        row.user_id,
        `reservation.completed:${row.reservation_id}`,
        "reservation.completed",
        this.reservationEventData({ ...row, status: "completed" }),
      );
    }
  }

  /** At the start: the user's object allocates the reserved device (another free one if it is still busy). */
  private async startReservation(row: ReservationRow): Promise<void> {
    if (this.handing.has(row.reservation_id)) return;
    const execFrom = row.exec_from ?? Date.now();
    if (row.exec_from === null)
      this.sql.exec("UPDATE reservations SET exec_from = ? WHERE reservation_id = ?", execFrom, row.reservation_id);
    // The duration is fixed at the first attempt, so a retry is the same request (same idempotency key).
    const seconds = Math.max(1, Math.ceil((row.end_at - execFrom) / 1000));
    const r = await this.handOverAllocation(row.reservation_id, {
      userId: row.user_id,
      pool: this.cfg.get()!.pool,
      durationMinutes: Math.ceil(seconds / 60),
      durationSeconds: seconds,
      spec: bounds(row).min,
      idempotencyKey: `reservation:${row.reservation_id}`,
      via: { kind: "reservation", id: row.reservation_id, deviceId: row.device_id, until: row.end_at },
    });
    if (!r) return;
    const now = Date.now();
    const cur = this.reservationRow(row.reservation_id);
    if (!cur || cur.status !== "confirmed") return;
    if (r.ok) {
      const alloc = r.value;
      this.sql.tx(() => {
        this.sql.exec(
          "UPDATE reservations SET status = 'executing', device_id = ?, allocation_id = ?, retry_at = NULL, remind_at = NULL, error = NULL, updated_at = ? WHERE reservation_id = ?",
          alloc.deviceId,
          alloc.allocationId,
          now,
          row.reservation_id,
        );
        // Handed a different device: the reserved one's window is free again.
        if (cur.device_id && cur.device_id !== alloc.deviceId)
          this.enqueueNotice({ kind: "unreserve", target: cur.device_id, key: row.reservation_id });
        this.notify(row.user_id, `reservation.started:${row.reservation_id}`, "reservation.started", {
          ...this.reservationEventData({ ...cur, status: "executing", device_id: alloc.deviceId }),
          allocationId: alloc.allocationId,
        });
      });
      // The allocation may have ended already (a very short window): the index knows.
      const dev = this.sql.one<{ allocation_id: string | null; status: DeviceStatus; version: number }>(
        "SELECT allocation_id, status, version FROM devices WHERE device_id = ?",
        alloc.deviceId,
      );
      if (dev && dev.allocation_id !== alloc.allocationId && dev.status !== "allocated")
        this.reservationAllocationEnded({ deviceId: alloc.deviceId, allocationId: dev.allocation_id } as DeviceState);
    } else if (isFinalRefusal(r) || now >= row.start_at + RESERVATION.startGraceMs || now >= row.end_at) {
      this.endReservation(cur, "failed", r);
    } else {
      this.sql.exec(
        "UPDATE reservations SET retry_at = ?, error = ?, updated_at = ? WHERE reservation_id = ?",
        now + RESERVATION.startRetryMs,
        errorText(r),
        now,
        row.reservation_id,
      );
    }
  }

  private reservationRow(id: string): ReservationRow | null {
    return this.sql.one<ReservationRow>("SELECT * FROM reservations WHERE reservation_id = ?", id);
  }

  private reservationView(r: ReservationRow): ReservationView {
    return {
      reservationId: r.reservation_id,
      userId: r.user_id,
      pool: this.cfg.get()?.pool ?? "",
      deviceId: r.device_id,
      status: r.status,
      spec: bounds(r).min,
      startAt: iso(r.start_at),
      endAt: iso(r.end_at),
      durationMinutes: r.duration_minutes,
      reminderMinutes: r.reminder_minutes,
      remindAt: r.remind_at === null ? null : iso(r.remind_at),
      allocationId: r.allocation_id,
      error: parseError(r.error),
      createdBy: r.created_by,
      createdAt: iso(r.created_at),
    };
  }

  private reservationEventData(r: ReservationRow): ReservationEventData {
    return {
      reservationId: r.reservation_id,
      pool: this.cfg.get()?.pool ?? "",
      deviceId: r.device_id,
      startAt: iso(r.start_at),
      endAt: iso(r.end_at),
      status: r.status,
    };
  }

  // ---- alarm: queue expiry and retries, reminders, starts, the outbox -------------------------

  override async alarm(): Promise<void> {
    this.clock.fired();
    await this.tick();
  }

  /** Everything due now (one run at a time: a second caller waits for the running one). */
  private tick(): Promise<void> {
    if (!this.ticking)
      this.ticking = this.runDue().finally(() => {
        this.ticking = null;
      });
    return this.ticking;
  }

  private async runDue(): Promise<void> {
    const now = Date.now();
    // Bookings whose request crashed before the device confirmed: never confirmed to anyone, dropped.
    for (const r of this.sql.all<ReservationRow>(
      "SELECT * FROM reservations WHERE status = 'pending' AND created_at <= ?",
      now - RESERVATION.pendingTimeoutMs,
    )) {
      if (this.handing.has(r.reservation_id)) continue;
      this.sql.tx(() => {
        this.sql.exec("DELETE FROM reservations WHERE reservation_id = ? AND status = 'pending'", r.reservation_id);
        if (r.device_id) this.enqueueNotice({ kind: "unreserve", target: r.device_id, key: r.reservation_id });
      });
    }
    // Reminders first (a reminder never comes after its start).
    for (const r of this.sql.all<ReservationRow>(
      "SELECT * FROM reservations WHERE status = 'confirmed' AND remind_at IS NOT NULL AND remind_at <= ?",
      now,
    )) {
      this.sql.tx(() => {
        this.sql.exec("UPDATE reservations SET remind_at = NULL WHERE reservation_id = ?", r.reservation_id);
        this.notify(r.user_id, `reservation.reminder:${r.reservation_id}`, "reservation.reminder", {
          ...this.reservationEventData(r),
          minutesBefore: Math.max(0, Math.round((r.start_at - now) / 60_000)),
        });
      });
    }
    const starts = this.sql
      .all<ReservationRow>(
        "SELECT * FROM reservations WHERE status = 'confirmed' AND start_at <= ? AND (retry_at IS NULL OR retry_at <= ?) ORDER BY start_at LIMIT 50",
        now,
        now,
      )
      .filter((r) => !this.handing.has(r.reservation_id));
    const run: Promise<void>[] = [];
    for (const r of starts) {
      if (r.end_at <= now)
        this.endReservation(r, "expired", null); // the whole window passed (e.g. the pool was down)
      else run.push(this.startReservation(r));
    }
    // Hand-overs that did not finish (a restart, a user object that did not answer): same key again.
    const stuck = this.sql
      .all<QueueRow>("SELECT * FROM queue WHERE status = 'offered' AND retry_at <= ?", now)
      .filter((e) => !this.handing.has(e.entry_id));
    run.push(...stuck.map((e) => this.handOver(e)));
    await Promise.all(run);
    await this.dispatch(); // also expires waits, delivers notices and re-arms
  }

  private async rearm(): Promise<void> {
    const t = this.sql.one<Record<string, number | null>>(
      `SELECT (SELECT MIN(wait_until) FROM queue WHERE status = 'waiting') AS wait,
              (SELECT MIN(retry_at) FROM queue WHERE status IN ('waiting','offered') AND retry_at IS NOT NULL) AS retry,
              (SELECT MIN(remind_at) FROM reservations WHERE status = 'confirmed' AND remind_at IS NOT NULL) AS remind,
              (SELECT MIN(MAX(start_at, COALESCE(retry_at, 0))) FROM reservations WHERE status = 'confirmed') AS start,
              (SELECT MIN(created_at) + ${RESERVATION.pendingTimeoutMs} FROM reservations WHERE status = 'pending') AS stale,
              (SELECT MIN(next_at) FROM notices) AS notice`,
    )!;
    const times = Object.values(t).filter((x): x is number => x !== null);
    if (times.length) await this.clock.arm(Math.min(...times));
  }

  // ---- notices: what users and devices must hear, retried until delivered ----------------------

  private notify<K extends FeedEventType>(userId: string, key: string, type: K, data: FeedEvents[K]): void {
    this.enqueueNotice({ kind: "user_event", target: userId, key, type, data });
  }

  private enqueueNotice(n: Notice): void {
    this.noticesWaiting = true;
    this.sql.exec(
      "INSERT INTO notices (kind, target, key, type, data, next_at) VALUES (?, ?, ?, ?, ?, ?)",
      n.kind,
      n.target,
      n.key,
      n.kind === "user_event" ? n.type : "",
      n.kind === "user_event" ? JSON.stringify(n.data) : "null",
      Date.now(),
    );
  }

  /** Delivers the due notices (see deliverOutbox); receivers are idempotent by key. */
  private async flushNotices(): Promise<void> {
    this.noticesWaiting = false;
    await deliverOutbox<{
      id: number;
      kind: Notice["kind"];
      target: string;
      key: string;
      type: string;
      data: string;
      attempts: number;
    }>(this.sql, "notices", ALLOCATION.notifyRetryMs, async (n) => {
      if (n.kind === "unreserve") await take(this.env.DEVICE.getByName(n.target).unreserve(n.key));
      else
        await take(
          this.env.USER_QUOTA.getByName(n.target).externalEvent(n.target, n.key, n.type as FeedEventType, JSON.parse(n.data) as never),
        );
      return true;
    });
  }

  // ---- pool feed and metrics ---------------------------------------------------------------

  /** A pool feed socket (the Worker checked the ticket and the admin role; single use is checked here). */
  override async fetch(request: Request): Promise<Response> {
    const f = feedRequestOf(request);
    if (f instanceof Response) return f;
    if (f.feed !== "pool" || f.role !== "admin") return refuseSocket(CLOSE.forbidden, "FORBIDDEN", "The pool feed needs the admin role.");
    const pool = this.cfg.get()?.pool;
    if (!pool || !this.exists() || pool !== f.pool)
      return refuseSocket(CLOSE.notFound, "POOL_NOT_FOUND", `Pool "${f.pool}" has no devices.`);
    const rows = this.sql.all<IndexRow>("SELECT * FROM devices ORDER BY device_id LIMIT ?", FEED.poolSnapshotLimit + 1);
    const state: PoolFeedState = {
      pool,
      devices: rows.slice(0, FEED.poolSnapshotLimit).map((r) => deviceView(indexState(r))),
      truncated: rows.length > FEED.poolSnapshotLimit,
    };
    return this.hub.admit(f, state);
  }

  /** Counters since the pool began, and gauges as of now (GET /admin/metrics). */
  async metrics(): Promise<{
    counters: CounterRow[];
    devices: Record<string, number>;
    queueWaiting: number;
    reservationsOpen: number;
  }> {
    const counters = this.sql.all<CounterRow>("SELECT name, label, value FROM metrics ORDER BY name, label");
    const devices = Object.fromEntries(
      this.sql.all<{ status: string; n: number }>("SELECT status, COUNT(*) AS n FROM devices GROUP BY status").map((r) => [r.status, r.n]),
    );
    const q = this.sql.one<{ waiting: number; open: number }>(
      "SELECT (SELECT COUNT(*) FROM queue WHERE status IN ('waiting','offered')) AS waiting, (SELECT COUNT(*) FROM reservations WHERE status IN ('pending','confirmed','executing')) AS open",
    )!;
    return { counters, devices, queueWaiting: q.waiting, reservationsOpen: q.open };
  }

  // ---- reads and settings ----------------------------------------------------------------

  async list(opts: {
    pool: string;
    status?: DeviceStatus;
    cursor?: string;
    limit?: number;
    withHolders?: boolean;
  }): Promise<Result<{ items: PoolDevice[]; nextCursor: string | null }>> {
    if (!this.exists()) return fail(404, "POOL_NOT_FOUND", `Pool "${opts.pool}" has no devices.`, { pool: opts.pool });
    const limit = Math.min(opts.limit ?? PAGING.defaultLimit, PAGING.maxLimit);
    const rows = this.sql.all<IndexRow>(
      `SELECT * FROM devices WHERE device_id > ? ${opts.status ? "AND status = ?" : ""} ORDER BY device_id LIMIT ?`,
      ...[opts.cursor ?? "", ...(opts.status ? [opts.status] : []), limit + 1],
    );
    const items = rows.slice(0, limit).map((r) => {
      const d: PoolDevice = { deviceId: r.device_id, node: r.node, ...spec(r), status: r.status };
      return opts.withHolders ? { ...d, allocationId: r.allocation_id, userId: r.user_id, expiresAt: r.expires_at } : d;
    });
    return ok({ items, nextCursor: rows.length > limit ? items[items.length - 1]!.deviceId : null });
  }

  async summary(pool: string): Promise<Result<PoolSummary>> {
    if (!this.exists()) return fail(404, "POOL_NOT_FOUND", `Pool "${pool}" has no devices.`, { pool });
    const { strategy, idleReleaseSeconds } = this.settings(pool);
    const c = this.sql.one<Record<string, number>>(
      `SELECT COUNT(*) AS devices, SUM(status='available') AS available, SUM(status='allocated') AS allocated,
              SUM(status='maintenance') AS maintenance, SUM(status='offline') AS offline, COUNT(DISTINCT node) AS nodes FROM devices`,
    )!;
    return ok({
      pool,
      strategy,
      idleReleaseMinutes: idleReleaseSeconds === null ? null : idleReleaseSeconds / 60,
      idleReleaseSeconds,
      devices: c.devices ?? 0,
      available: c.available ?? 0,
      allocated: c.allocated ?? 0,
      maintenance: c.maintenance ?? 0,
      offline: c.offline ?? 0,
      nodes: c.nodes ?? 0,
    });
  }

  /** Strategy and idle release grace; an absent field is unchanged, `idleReleaseSeconds: null` turns it off. */
  async setSettings(pool: string, patch: { strategy?: Strategy; idleReleaseSeconds?: number | null }): Promise<Result<PoolSummary>> {
    if (!this.exists()) return fail(404, "POOL_NOT_FOUND", `Pool "${pool}" has no devices.`, { pool });
    const s = this.settings(pool);
    this.cfg.write(
      "UPDATE settings SET strategy = ?, idle_release_seconds = ? WHERE id = 1",
      patch.strategy ?? s.strategy,
      patch.idleReleaseSeconds === undefined ? s.idleReleaseSeconds : patch.idleReleaseSeconds,
    );
    return this.summary(pool);
  }
}

/** The SQL form of `fits` on a device row (min ≤ spec ≤ max), with its arguments from `boundsArgs`. */
const FITS_SQL = "cpu >= ? AND mem >= ? AND storage >= ? AND cpu <= ? AND mem <= ? AND storage <= ?";
/** Bounds in the order FITS_SQL and the rows' cpu_min…storage_max columns take them. */
const boundsArgs = (min: DeviceSpec, max: DeviceSpec) => [
  min.cpuCores,
  min.memoryMB,
  min.storageMB,
  max.cpuCores,
  max.memoryMB,
  max.storageMB,
];

const spec = (r: { device_id: string; cpu: number; mem: number; storage: number }) => ({
  cpuCores: r.cpu,
  memoryMB: r.mem,
  storageMB: r.storage,
});

const iso = (t: number) => new Date(t).toISOString();

/** An index row as the device state it was written from (for the pool feed's snapshot). */
const indexState = (r: IndexRow): DeviceState => ({
  deviceId: r.device_id,
  node: r.node,
  ...spec(r),
  status: r.status,
  version: r.version,
  allocationId: r.allocation_id,
  userId: r.user_id,
  expiresAt: r.expires_at,
});

const deviceView = (s: DeviceState): PoolDeviceView => ({
  deviceId: s.deviceId,
  node: s.node,
  status: s.status,
  cpuCores: s.cpuCores,
  memoryMB: s.memoryMB,
  storageMB: s.storageMB,
  allocationId: s.allocationId,
  userId: s.userId,
  expiresAt: s.expiresAt === null ? null : iso(s.expiresAt),
});

const sees = (v: Viewer, owner: string) => v.admin || v.userId === owner;

const bounds = (r: Bounds) => ({
  min: { cpuCores: r.cpu_min, memoryMB: r.mem_min, storageMB: r.storage_min },
  max: { cpuCores: r.cpu_max, memoryMB: r.mem_max, storageMB: r.storage_max },
});

const errorText = (f: Failure) => JSON.stringify({ code: f.code, message: f.message });

function parseError(text: string | null): { code: string; message: string } | null {
  return text ? (JSON.parse(text) as { code: string; message: string }) : null;
}
