/**
 * DevicePool: one per pool. Keeps an index of its devices' availability and a per-node
 * summary, picks a device by the pool's strategy and asks that device to claim itself. The
 * index is a cache: the Device object is the truth, answers a stale pick with its real state,
 * and pushes every change here (ordered by a version number).
 *
 * It is also the front door of the pool's waiting queue (./pool/queue-desk.ts) and
 * reservations (./pool/reservation-desk.ts), because both are about the order in which this
 * pool's devices are handed out; both hand a device over by the protocol's steps
 * (./pool/handover.ts), with the entry's or reservation's id as the idempotency key. Feed
 * events for users and windows given back to devices go through the outbox.
 *
 * Pool feed (`GET /ws/pools/:pool`, admins): every change the index applies is logged as a
 * `pool.device` event in the same transaction, and the hello carries the pool's devices, so an
 * operator's view is live without polling. The same changes are counted for the metrics
 * (allocations, releases by reason, expiry lag; see src/metrics.ts).
 */
import { ALLOCATION, FEED, PAGING, type Strategy } from "../src/config";
import type {
  Claimed,
  ClaimRequest,
  DeviceState,
  PickRequest,
  Picked,
  FleetEntry,
  FleetFilter,
  PoolDevice,
  PoolSummary,
  QueueEntryView,
  QueueJoinInput,
  QueueStatus,
  ReservationView,
  ReserveInput,
  Viewer,
  WindowCheck,
} from "../src/contracts";
import type { ReservationStatus } from "../src/domain/reservation";
import { roomRefusal } from "../src/domain/quota";
import { UNBOUNDED } from "../src/domain/spec";
import type { DeviceSpec } from "../src/domain/types";
import type { DeviceStatus } from "../src/domain/types";
import type { Env } from "../src/env";
import { fail, ok, type Result } from "../src/errors";
import { FeedHub, feedLeanLog, feedSchema, refuseSocket, type FeedRequest } from "../src/objects/feed";
import { CLOSE, type PoolFeedState } from "../src/feed/protocol";
import { countChange, type CounterRow } from "../src/metrics";
import { ServiceObject } from "../src/objects/base";
import { socketReporter } from "../src/objects/operators";
import { OUTBOX_SCHEMA, Outbox } from "../src/objects/outbox";
import { Schedule, earliest } from "../src/objects/schedule";
import { take } from "../src/rpc";
import type { ClassCount } from "../src/domain/catalogue";
import {
  INDEX_SCHEMA,
  IndexStore,
  NODE_INDEX_LEAN,
  SIZE_ORDER_SCHEMA,
  deviceView,
  indexState,
  type Previous,
} from "../src/stores/pool-index";
import { QUEUE_SCHEMA, QueueStore } from "../src/stores/pool-queue";
import { FLEET_SCHEMA, FleetStore } from "../src/stores/pool-fleet";
import { RESERVATIONS_SCHEMA, ReservationStore } from "../src/stores/pool-reservations";
import type { PoolContext, PoolMessages } from "./pool/context";
import { HandOver } from "./pool/handover";
import { QueueDesk } from "./pool/queue-desk";
import { ReservationDesk } from "./pool/reservation-desk";

const MIGRATIONS = [
  { name: "1-pool", sql: [INDEX_SCHEMA, QUEUE_SCHEMA, RESERVATIONS_SCHEMA, OUTBOX_SCHEMA, feedSchema("events")].join("\n") },
  { name: "2-pool-size-order", sql: SIZE_ORDER_SCHEMA },
  { name: "3-pool-fleet", sql: FLEET_SCHEMA },
  { name: "4-lean-feed-log", sql: feedLeanLog("events") },
  { name: "5-lean-node-index", sql: NODE_INDEX_LEAN },
];

export class DevicePool extends ServiceObject {
  protected readonly hub: FeedHub;
  protected override readonly schedule: Schedule;
  private readonly index: IndexStore;
  private readonly fleetStore: FleetStore;
  private readonly queue: QueueStore;
  private readonly reservations: ReservationStore;
  private readonly outbox: Outbox<PoolMessages>;
  private readonly handOver: HandOver;
  private readonly queueDesk: QueueDesk;
  private readonly reservationDesk: ReservationDesk;
  /**
   * When each node was last picked (the spread strategy's order). Kept here during a claim and
   * stored with the claim's result, so a claim writes once, after the device answered: a
   * write before the call would cost a commit of its own.
   */
  private readonly picked = new Map<string, number>();
  /** Devices a pick handed out → until when no other pick gets them (or until their state arrives). */
  private readonly leased = new Map<string, number>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.index = new IndexStore(this.sql);
    this.fleetStore = new FleetStore(this.sql);
    this.queue = new QueueStore(this.sql);
    this.reservations = new ReservationStore(this.sql);
    this.hub = new FeedHub(ctx, this.sql, {
      table: "events",
      limit: FEED.poolHistoryLimit,
      maxSockets: FEED.maxSocketsPerPool,
      onSockets: socketReporter(this.env, ctx, "pool"),
    });
    // Receivers are idempotent by key.
    this.outbox = new Outbox<PoolMessages>(this.sql, {
      retryMs: ALLOCATION.notifyRetryMs,
      deliver: {
        unreserve: async (m) => (await take(this.env.DEVICE.getByName(m.deviceId).unreserve(m.reservationId)), true),
        user_event: async (m) => (
          await take(this.env.USER_QUOTA.getByName(m.userId).externalEvent(m.userId, m.key, m.type, m.data as never)),
          true
        ),
        booking: async (m) => (await take(this.env.USER_QUOTA.getByName(m.userId).bookingSettled(m.userId, m.booking, m.booked)), true),
      },
    });
    // What the composed helpers see of this object.
    const parts: PoolContext = {
      env: this.env,
      state: ctx,
      sql: this.sql,
      clock: this.clock,
      index: this.index,
      queue: this.queue,
      reservations: this.reservations,
      outbox: this.outbox,
      pool: () => this.index.pool(),
      notify: (userId, key, type, data) => this.outbox.add({ kind: "user_event", payload: { userId, key, type, data } }),
      claim: (req) => this.claim(req),
      learn: (deviceId, refusal) => this.learn(deviceId, refusal),
      dispatch: () => this.queueDesk.dispatch(),
      rearm: () => this.schedule.rearm(),
      runAlarm: () => this.runAlarm(),
    };
    this.handOver = new HandOver(parts);
    this.queueDesk = new QueueDesk(parts, this.handOver);
    this.reservationDesk = new ReservationDesk(parts, this.handOver);
    const r = this.reservations;
    const desk = this.reservationDesk;
    this.schedule = new Schedule(
      this.clock,
      [
        { due: () => r.nextStale(), run: (now) => desk.dropStale(now) },
        { due: () => r.nextReminder(), run: (now) => desk.remind(now) },
        // Starts, and hand-overs that did not finish (a restart, a user object that did not answer): same key again.
        { due: () => earliest(r.nextStart(), this.queue.nextRetry()), run: (now) => this.handOvers(now) },
        // Waits that end and waiting entries' retries: served by the dispatch that ends every alarm.
        { due: () => this.queue.nextWait() },
      ],
      { outbox: this.outbox },
    );
    this.start(MIGRATIONS);
  }

  private pool(): string {
    return this.index.pool();
  }

  private dispatch(): Promise<void> {
    return this.queueDesk.dispatch();
  }

  private rearm(): Promise<void> {
    return this.schedule.rearm();
  }

  // ---- claims and the index -------------------------------------------------------------------

  /**
   * Picks, claims and returns a device; a stale pick is corrected and the next one tried.
   * A queue entry's claim takes only the device offered to it; a reservation's claim takes its
   * reserved device, or another free one if that one is not free at the start.
   */
  async claim(req: ClaimRequest): Promise<Result<Claimed>> {
    const missing = this.index.missing(req.pool);
    if (missing) return missing;
    const { strategy, idleReleaseSeconds } = this.index.settings(req.pool);
    const tried = new Set<string>();
    const done = (r: Result<Claimed>) => (r.ok ? ok({ ...r.value, idleReleaseSeconds }) : r);
    if (req.via?.kind === "queue") {
      const e = this.queue.row(req.via.id);
      if (e?.status !== "offered" || e.device_id !== req.via.deviceId || !req.via.deviceId)
        return fail(409, "QUEUE_OFFER_GONE", "The device offered to this queue entry is no longer offered to it.");
      return done(await this.claimOn(req.via.deviceId, req));
    }
    if (req.via?.kind === "reservation" && req.via.deviceId) {
      tried.add(req.via.deviceId);
      const r = await this.claimOn(req.via.deviceId, req);
      if (r.ok) return done(r);
    }
    return done(await this.claimPicked(req, strategy, tried));
  }

  private async claimPicked(req: ClaimRequest, strategy: Strategy, tried: Set<string>): Promise<Result<Claimed>> {
    const own = req.via?.kind === "reservation" ? req.via.id : null;
    // A reservation's allocation ends with its window (the device caps it there too).
    const span = req.via?.until !== undefined ? Math.max(0, Math.min(req.durationMs, req.via.until - Date.now())) : req.durationMs;
    for (let attempt = 0; attempt < ALLOCATION.claimAttempts; attempt++) {
      const skip = new Set([...this.queueDesk.inFlight, ...this.leased.keys(), ...tried]);
      const pick = this.index.pick(strategy, req, skip, this.picked, span, own);
      if (!pick) break;
      tried.add(pick.device_id);
      const r = await this.claimOn(pick.device_id, req, pick.node);
      if (r.ok) return r;
    }
    return this.nothingFree(req, new Set([...this.queueDesk.inFlight, ...tried]), span);
  }

  /** Why no device was picked: the quota's room (when free devices all exceed it), else none free. */
  private nothingFree(req: { pool: string; min: DeviceSpec; max: DeviceSpec }, skip: Set<string>, span: number): Result<never> {
    const above = req.max === UNBOUNDED ? { smallest: null, count: 0 } : this.index.freeAboveMax(req, skip, span);
    if (above.smallest) return roomRefusal("free", req.pool, req.min, req.max, above.count, above.smallest);
    const soonest = this.index.soonestExpiry();
    return fail(409, "NO_DEVICE_AVAILABLE", `No free device in pool "${req.pool}" matches the request.`, {
      pool: req.pool,
      spec: req.min,
      nextExpiryAt: soonest ? new Date(soonest).toISOString() : null,
    });
  }

  /**
   * A direct allocation's first step (src/allocate.ts): the device to claim, read from the index
   * with no write. It is kept from other picks for `pickLeaseMs` or until its claim's state
   * arrives from the device; states that refused claims reported come with the next pick.
   */
  async pick(req: PickRequest): Promise<Result<Picked>> {
    const missing = this.index.missing(req.pool);
    if (missing) return missing;
    for (const state of req.learned ?? []) this.apply(state);
    const { strategy, idleReleaseSeconds } = this.index.settings(req.pool);
    const now = Date.now();
    for (const [id, until] of this.leased) if (until <= now) this.leased.delete(id);
    const skip = new Set([...this.queueDesk.inFlight, ...this.leased.keys(), ...(req.exclude ?? [])]);
    const bounds = { pool: req.pool, min: req.min, max: req.max ?? UNBOUNDED };
    const pick = this.index.pick(strategy, bounds, skip, this.picked, req.durationMs, null);
    const row = pick && this.index.device(pick.device_id);
    // Why not: devices only leased to other picks still count as free there.
    if (!row) return this.nothingFree(bounds, new Set([...this.queueDesk.inFlight, ...(req.exclude ?? [])]), req.durationMs);
    this.leased.set(row.device_id, now + ALLOCATION.pickLeaseMs);
    this.picked.set(row.node, now);
    return ok({
      deviceId: row.device_id,
      node: row.node,
      cpuCores: row.cpu,
      memoryMB: row.mem,
      storageMB: row.storage,
      idleReleaseSeconds,
    });
  }

  /** Asks one device to claim itself; the index learns its answer either way. */
  private async claimOn(deviceId: string, req: ClaimRequest, node = this.index.device(deviceId)?.node): Promise<Result<Claimed>> {
    const inFlight = this.queueDesk.inFlight;
    inFlight.add(deviceId);
    const pickedAt = Date.now();
    if (node) this.picked.set(node, pickedAt);
    let r: Result<Claimed>;
    try {
      r = (await take(this.env.DEVICE.getByName(deviceId).claim(req))) as Result<Claimed>;
    } finally {
      inFlight.delete(deviceId);
    }
    if (!r.ok) {
      this.learn(deviceId, r);
      return r;
    }
    this.apply(r.value.state);
    return r;
  }

  /** What a device's refusal says of its state: applied, or (not registered) the device dropped. */
  private learn(deviceId: string, refusal: Result<never>): void {
    if (refusal.ok) return;
    const state = (refusal.details as { state?: DeviceState | null } | undefined)?.state;
    if (state) this.apply(state);
    else if (refusal.code === "DEVICE_UNAVAILABLE") this.drop(deviceId);
  }

  /** A device reports its state (directly or from its outbox). Older versions are ignored. */
  async deviceState(pool: string, state: DeviceState): Promise<void> {
    this.index.settings(pool);
    this.apply(state);
  }

  private apply(s: DeviceState): void {
    this.leased.delete(s.deviceId);
    const changed = this.sql.tx(() => {
      // A claim's state: its node's pick time is stored with it (the spread strategy's order), in the same write.
      const pickedAt = s.status === "allocated" ? (this.picked.get(s.node) ?? Date.now()) : undefined;
      const prev = this.index.apply(s, pickedAt);
      if (prev === undefined) return false;
      this.reservationDesk.allocationEnded(s);
      this.observe(prev, s);
      return true;
    });
    // A device freed (release, expiry, back in service): the queue's head gets it now.
    if (changed && s.status === "available" && this.queue.anyWaiting()) void this.dispatch();
    else if (this.outbox.waiting) this.ctx.waitUntil(this.outbox.flush().then(() => this.rearm()));
  }

  private drop(deviceId: string): void {
    this.sql.tx(() => {
      const prev = this.index.drop(deviceId);
      if (prev) this.observe({ status: prev.status, allocationId: prev.allocation_id }, { ...indexState(prev), status: "removed" });
    });
  }

  /** Inside the change's transaction: the pool feed's event and the metrics counters. */
  private observe(prev: Previous | null, next: DeviceState): void {
    // A device that left this pool holds nothing here (a moved device's allocation is its new pool's).
    const s = next.status === "removed" ? { ...next, allocationId: null, userId: null, expiresAt: null } : next;
    const reason = s.ended?.reason ?? null;
    this.hub.append(s.userId ?? "", "pool.device", { pool: this.pool(), ...deviceView(s), previousStatus: prev?.status ?? null, reason });
    this.index.count(countChange(prev, s));
  }

  // ---- the queue and reservations (see ./pool/) -------------------------------------------------

  async join(input: QueueJoinInput): Promise<Result<QueueEntryView>> {
    return this.queueDesk.join(input);
  }

  async queueEntry(entryId: string, viewer: Viewer): Promise<Result<QueueEntryView>> {
    return this.queueDesk.entry(entryId, viewer);
  }

  async listQueue(viewer: Viewer, opts: { userId?: string; status?: QueueStatus; limit?: number }) {
    return this.queueDesk.list(viewer, opts);
  }

  async cancelEntry(entryId: string, viewer: Viewer): Promise<Result<QueueEntryView>> {
    return this.queueDesk.cancel(entryId, viewer);
  }

  async book(input: ReserveInput): Promise<Result<ReservationView>> {
    return this.reservationDesk.book(input);
  }

  async checkWindow(input: Pick<ReserveInput, "userId" | "pool" | "startAt" | "spec"> & { endAt: number }): Promise<Result<WindowCheck>> {
    return this.reservationDesk.check(input);
  }

  async reservation(reservationId: string, viewer: Viewer): Promise<Result<ReservationView>> {
    return this.reservationDesk.get(reservationId, viewer);
  }

  async listReservations(viewer: Viewer, opts: { userId?: string; status?: ReservationStatus; limit?: number }) {
    return this.reservationDesk.list(viewer, opts);
  }

  async cancelReservation(reservationId: string, viewer: Viewer): Promise<Result<ReservationView>> {
    return this.reservationDesk.cancel(reservationId, viewer);
  }

  // ---- the alarm ----------------------------------------------------------------------------------

  /** The due tasks, then a dispatch round (which also delivers the outbox and re-arms). */
  protected override async onAlarm(): Promise<void> {
    await this.schedule.runDue();
    await this.dispatch();
  }

  private async handOvers(now: number): Promise<void> {
    const stuck = this.queue.stuck(now).filter((e) => !this.handOver.busy.has(e.entry_id));
    await Promise.all([...this.reservationDesk.starts(now), ...stuck.map((e) => this.queueDesk.handOverEntry(e))]);
  }

  // ---- pool feed, metrics, reads and settings -------------------------------------------------------

  /** Admins watch a pool; the hello carries its devices. */
  protected openFeed(f: FeedRequest): Response {
    if (f.feed !== "pool" || f.role !== "admin") return refuseSocket(CLOSE.forbidden, "FORBIDDEN", "The pool feed needs the admin role.");
    const pool = this.index.pool();
    if (!pool || !this.index.exists() || pool !== f.pool)
      return refuseSocket(CLOSE.notFound, "POOL_NOT_FOUND", `Pool "${f.pool}" has no devices.`);
    const state: PoolFeedState = { pool, ...this.index.snapshot() };
    return this.hub.admit(f, state);
  }

  /** Counters since the pool began, and gauges as of now (GET /admin/metrics). */
  async metrics(): Promise<{ counters: CounterRow[]; devices: Record<string, number>; queueWaiting: number; reservationsOpen: number }> {
    return {
      counters: this.index.counters(),
      devices: this.index.byStatus(),
      queueWaiting: this.queue.open(),
      reservationsOpen: this.reservations.open(),
    };
  }

  async list(opts: {
    pool: string;
    status?: DeviceStatus;
    cursor?: string;
    limit?: number;
    withHolders?: boolean;
  }): Promise<Result<{ items: PoolDevice[]; nextCursor: string | null }>> {
    const missing = this.index.missing(opts.pool);
    if (missing) return missing;
    return ok(this.index.list({ ...opts, limit: Math.min(opts.limit ?? PAGING.defaultLimit, PAGING.maxLimit) }));
  }

  /** The pool's part of the fleet list (GET /admin/devices), from the index alone (no device is asked); none without devices. */
  async fleet(filter: FleetFilter): Promise<{ items: FleetEntry[]; more: boolean }> {
    return this.fleetStore.page(this.index.pool(), filter);
  }

  async summary(pool: string): Promise<Result<PoolSummary>> {
    return this.index.missing(pool) ?? ok(this.index.summary(this.index.settings(pool)));
  }

  /** What the pool offers: its strategy and device classes (GET /scheduler/pools). */
  async catalogue(pool: string): Promise<Result<{ pool: string; strategy: Strategy; classes: ClassCount[] }>> {
    const missing = this.index.missing(pool);
    if (missing) return missing;
    return ok({ pool, strategy: this.index.settings(pool).strategy, classes: this.index.classes() });
  }

  /** Strategy and idle release grace; an absent field is unchanged, `idleReleaseSeconds: null` turns it off. */
  async setSettings(pool: string, patch: { strategy?: Strategy; idleReleaseSeconds?: number | null }): Promise<Result<PoolSummary>> {
    const missing = this.index.missing(pool);
    if (missing) return missing;
    const s = this.index.settings(pool);
    const idle = patch.idleReleaseSeconds === undefined ? s.idleReleaseSeconds : patch.idleReleaseSeconds;
    this.index.setSettings({ ...s, strategy: patch.strategy ?? s.strategy, idleReleaseSeconds: idle });
    return this.summary(pool);
  }
}
