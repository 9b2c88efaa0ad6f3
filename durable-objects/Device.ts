/**
 * Device: the single source of truth for one device. It holds at most one allocation (checked
 * and written with no await in between, so concurrent claims cannot both win), ends it at
 * `expiresAt` by alarm, and writes what others must hear of an allocation ending (the user's
 * object, the pool index, the usage queue) to its outbox in the same transaction; the alarm
 * retries delivery until it succeeds, so nothing is lost across crashes or restarts.
 *
 * Claim protocol: a claim arrives from the pool as `held`; the user's object confirms it
 * once it has recorded the allocation. A claim still unconfirmed after
 * `ALLOCATION.claimConfirmMs` is checked with the user's object, and freed if the user
 * does not know it (a crash between steps leaves no device held for nobody).
 *
 * Device feed (`GET /ws/devices/:deviceId`): admins and the allocation's holder watch the
 * device live. Events are logged in the same transaction as the change they describe; when
 * an allocation ends its holder's sockets get the release and are closed, so a later
 * holder's events never reach them. Status changes also go to the admin feed via the outbox.
 */
import { ALLOCATION, FEED, PAGING } from "../src/config";
import type { Claimed, ClaimRequest, CurrentAllocation, DeviceState, ExtendInfo, Verdict } from "../src/contracts";
import { expiryWarningAt } from "../src/domain/expiry";
import { fits } from "../src/domain/strategy";
import type { DeviceInfo, DevicePatch, DeviceStatus, EndReason, EndedAllocation, UsageRecord } from "../src/domain/types";
import type { Env } from "../src/env";
import { fail, ok, type Result } from "../src/errors";
import { FeedHub, feedLeanLog, feedSchema, refuseSocket, type FeedRequest } from "../src/objects/feed";
import { CLOSE, type FeedEvents } from "../src/feed/protocol";

import { ServiceObject } from "../src/objects/base";
import { socketReporter } from "../src/objects/operators";
import { OUTBOX_SCHEMA, Outbox, type OutboxItem } from "../src/objects/outbox";
import { Schedule } from "../src/objects/schedule";
import { take } from "../src/rpc";
import {
  DEVICE_ALLOCATIONS_LEAN,
  DEVICE_SCHEMA,
  DeviceStore,
  type DeviceRow,
  type HoldRow,
  type Registration,
  type Window,
} from "../src/stores/device";
import { ACCESS_SCHEMA, AccessStore, type AccessMap } from "../src/stores/device-access";
import { DEVICE_META_SCHEMA } from "../src/stores/device-meta";
import { signGrant } from "../src/access";
import { deliveries, type Messages } from "./device/messages";
import { StatusDesk, type DeviceContext, type StatusChange } from "./device/status-desk";
import { reserveWindow } from "./device/windows";
import { STATUS_NOTE_SCHEMA, StatusNoteStore, statusView, type StatusView } from "../src/stores/device-status-note";
import { iso } from "../src/domain/time";

const MIGRATIONS = [
  { name: "1-device", sql: `${DEVICE_SCHEMA}\n${OUTBOX_SCHEMA}\n${feedSchema("feed")}` },
  { name: "2-device-access", sql: ACCESS_SCHEMA },
  { name: "3-device-status-note", sql: STATUS_NOTE_SCHEMA },
  { name: "4-device-meta", sql: DEVICE_META_SCHEMA },
  { name: "5-lean-feed-log", sql: feedLeanLog("feed") },
  { name: "6-lean-allocations", sql: DEVICE_ALLOCATIONS_LEAN },
];

export class Device extends ServiceObject {
  protected readonly hub: FeedHub;
  private readonly store: DeviceStore;
  private readonly notes: StatusNoteStore;
  private readonly access: AccessStore;
  private readonly status: StatusDesk;
  private readonly outbox: Outbox<Messages>;
  protected override readonly schedule: Schedule;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.store = new DeviceStore(this.sql);
    this.access = new AccessStore(this.sql);
    this.notes = new StatusNoteStore(this.sql);
    this.hub = new FeedHub(ctx, this.sql, {
      table: "feed",
      limit: FEED.deviceHistoryLimit,
      maxSockets: FEED.maxSocketsPerDevice,
      onSockets: socketReporter(this.env, ctx, "device"),
    });
    this.outbox = new Outbox<Messages>(this.sql, {
      retryMs: ALLOCATION.notifyRetryMs,
      deliver: deliveries(this.env),
      logAs: () => ({ deviceId: this.store.device()?.device_id }),
    });
    // One task: the allocation the device holds, due at the earliest of its expiry, its claim's
    // confirm deadline and its one `device.expiring` warning (one read for all three).
    this.schedule = new Schedule(this.clock, [{ due: () => holdDue(this.store.current()), run: (now) => this.holdDueNow(now) }], {
      outbox: this.outbox,
    });
    this.status = new StatusDesk(this.context());
    this.start(MIGRATIONS);
  }

  /** What the status desk sees of this object. */
  private context(): DeviceContext {
    return {
      sql: this.sql,
      store: this.store,
      notes: this.notes,
      hub: this.hub,
      current: () => this.current(),
      endTx: (a, reason, now) => this.endTx(a, reason, now),
      enqueue: (...items) => this.enqueue(...items),
      publishState: (d) => this.publishState(d),
    };
  }

  // ---- reads ---------------------------------------------------------------------------

  /** The allocation the device holds (held or active), if any. */
  private current(): HoldRow | null {
    return this.store.current();
  }

  async get(): Promise<Result<DeviceInfo & StatusView & { allocation: CurrentAllocation | null }>> {
    const d = this.store.registered();
    return d ? ok({ ...this.store.info(d), ...statusView(this.notes.get()), allocation: this.store.currentView() }) : notFound();
  }

  async history(opts: { cursor?: number; limit?: number }): Promise<Result<{ items: EndedAllocation[]; nextCursor: number | null }>> {
    if (!this.store.device()) return notFound();
    return ok(this.store.history(opts.cursor, Math.min(opts.limit ?? PAGING.defaultLimit, PAGING.maxLimit)));
  }

  /** How to reach the device, for the current holder of `allocationId` while it runs (null: to anyone else, or after). */
  async accessFor(allocationId: string, userId: string): Promise<Result<{ access: AccessMap; expiresAt: number } | null>> {
    const a = this.current();
    const holds = a?.allocation_id === allocationId && a.user_id === userId && a.expires_at > Date.now();
    return ok(holds ? { access: this.access.map(), expiresAt: a.expires_at } : null);
  }

  // ---- lifecycle (admin) -----------------------------------------------------------------

  /** Operators (or the device-service) register how to reach the device: the map is replaced whole. */
  async setAccess(access: AccessMap): Promise<Result<{ deviceId: string; endpoints: string[] }>> {
    const d = this.store.registered();
    if (!d) return notFound();
    this.access.replace(access, Date.now());
    return ok({ deviceId: d.device_id, endpoints: this.access.names() });
  }

  async register(input: Registration): Promise<Result<DeviceInfo>> {
    const existing = this.store.registered();
    if (existing) return fail(409, "DEVICE_EXISTS", `Device ${input.deviceId} is already registered (pool ${existing.pool}).`);
    this.sql.tx(() => this.store.register(input, Date.now()));
    const d = this.store.device()!;
    await this.publishState(d);
    return ok(this.store.info(d));
  }

  async update(patch: DevicePatch): Promise<Result<DeviceInfo>> {
    const d = this.store.registered();
    if (!d) return notFound();
    const moves = patch.pool !== undefined || patch.cpuCores !== undefined || patch.memoryMB !== undefined || patch.storageMB !== undefined;
    if (this.current() && moves)
      return fail(409, "DEVICE_BUSY", "The device is allocated; change its pool or spec after the allocation ends.");
    if (patch.pool !== undefined && patch.pool !== d.pool) {
      const w = this.store.openWindows(Date.now());
      if (w.n > 0)
        return fail(
          409,
          "DEVICE_RESERVED",
          `The device has ${w.n} reservation window(s) in pool ${d.pool}; cancel them before moving it.`,
          {
            reservations: w.n,
            firstStartsAt: iso(w.first!),
          },
        );
    }
    this.store.update(d, patch, Date.now());
    const next = this.store.device()!;
    // Leave the old pool's index: it sees a "removed" state for this device.
    if (next.pool !== d.pool)
      this.enqueue({ kind: "pool_state", payload: { pool: d.pool, state: { ...this.store.state(next), status: "removed" } } });
    await this.publishState(next);
    return ok(this.store.info(next));
  }

  /** maintenance / offline end an active allocation now, or with `drain` at its end; available brings it back. */
  async setStatus(status: "available" | "maintenance" | "offline", change: StatusChange = {}) {
    return this.status.set(status, change);
  }

  async remove(): Promise<Result<{ deviceId: string; ended: EndedAllocation | null }>> {
    const d = this.store.registered();
    if (!d) return notFound();
    let ended: EndedAllocation | null = null;
    this.sql.tx(() => {
      const a = this.current();
      this.notes.changed(null, Date.now()); // a drain under way is over: the device goes
      if (a) ended = this.endTx(a, "removed", Date.now());
      this.store.setStatus("removed", Date.now());
      this.status.changed(d.status, ended);
    });
    // Everyone, the holder included, hears the device is gone for good (after the events above).
    this.hub.closeWhere(() => true, CLOSE.deviceRemoved, "device removed");
    await this.publishState(this.store.device()!);
    return ok({ deviceId: d.device_id, ended });
  }

  // ---- allocation protocol -----------------------------------------------------------------

  /** Called by the pool. No await between the check and the write: one claim wins. */
  async claim(req: ClaimRequest): Promise<Result<Claimed>> {
    const d = this.store.registered();
    if (!d) return fail(409, "DEVICE_UNAVAILABLE", "The device is not registered.", { state: null });
    const state = () => this.store.state(d);
    if (d.pool !== req.pool)
      return fail(409, "DEVICE_UNAVAILABLE", "The device has moved to another pool.", { state: { ...state(), status: "removed" } });
    const spec = { cpuCores: d.cpu, memoryMB: d.mem, storageMB: d.storage };
    if (d.status !== "available" || this.current())
      return fail(409, "DEVICE_BUSY", "The device is already allocated or not in service.", { state: state() });
    if (!fits(spec, req.min, req.max)) return fail(409, "DEVICE_UNFIT", "The device does not match the request.", { state: state() });
    // The caller's start (a direct allocation's user object and device share it), unless the clocks disagree.
    const now = req.at !== undefined && Math.abs(req.at - Date.now()) < ALLOCATION.clockMarginMs ? req.at : Date.now();
    // A reservation's allocation ends with its window, never later (the next window may start right then).
    const expiresAt = req.via?.until !== undefined ? Math.min(now + req.durationMs, req.via.until) : now + req.durationMs;
    if (expiresAt <= now) return fail(409, "RESERVATION_WINDOW_OVER", "The reservation's window has ended.", { state: state() });
    const reservationId = req.via?.kind === "reservation" ? req.via.id : null;
    const window = this.store.windowBefore(expiresAt, now, reservationId);
    if (window)
      return fail(409, "DEVICE_RESERVED", `The device is reserved from ${iso(window.start_at)}.`, {
        state: state(),
        reservedFrom: iso(window.start_at),
      });
    const confirmAt = now + ALLOCATION.claimConfirmMs;
    const warnAt = expiryWarningAt(now, expiresAt);
    const holds = { allocationId: req.allocationId, userId: req.userId, expiresAt };
    this.sql.tx(() => this.store.hold({ ...holds, confirmAt, warnAt, reservationId }, now));
    // In the same turn as the writes (one commit): the claim's earliest deadline.
    await this.clock.arm(Math.min(expiresAt, confirmAt, warnAt));
    const after: DeviceState = { deviceId: d.device_id, node: d.node, ...spec, status: "allocated", version: d.version + 1, ...holds };
    // A pool's own claim learns this from the answer; a direct allocation's (it names its start) pool hears it after the answer.
    if (req.at !== undefined) this.ctx.waitUntil(this.tellPool(d.pool, after));
    const access = this.access.map();
    return ok({ deviceId: d.device_id, pool: d.pool, node: d.node, ...spec, allocatedAt: now, expiresAt, state: after, access });
  }

  /** The user's object has recorded the allocation. */
  async confirm(allocationId: string): Promise<Result<{ confirmed: true }>> {
    const a = this.store.allocation(allocationId);
    if (!a || a.state === "ended") return fail(409, "ALLOCATION_ENDED", "The allocation has already ended.");
    if (a.state === "held") this.sql.tx(() => this.activate(a));
    // The claim armed its deadlines; confirming only drops one, so nothing comes earlier.
    return ok({ confirmed: true });
  }

  /** Gives back a claim its user never recorded (no usage: the user never had it). */
  async abort(allocationId: string): Promise<Result<{ aborted: boolean }>> {
    const a = this.store.allocation(allocationId);
    if (!a || a.state === "ended") return ok({ aborted: false });
    this.sql.tx(() => this.endTx(a, "orphaned", Date.now()));
    await this.settle();
    return ok({ aborted: true });
  }

  /**
   * Ends the allocation (idempotent: a repeat returns the first result). Asked by its user's
   * object (`byUser`), the answer is what the user records, so it goes unsent, and the pool and
   * the usage queue hear after the answer; otherwise everyone has heard when it answers.
   */
  async end(allocationId: string, reason: EndReason, byUser = false): Promise<Result<EndedAllocation>> {
    const a = this.store.allocation(allocationId);
    if (!a) return fail(404, "ALLOCATION_NOT_FOUND", "No such allocation on this device.");
    if (a.state === "ended") return ok(this.store.ended(a));
    const ended = this.sql.tx(() => this.endTx(a, reason, Date.now(), byUser));
    if (byUser) this.ctx.waitUntil(this.settle());
    else await this.settle();
    return ok(ended);
  }

  /** Admin force-release of whatever the device holds. */
  async forceRelease(): Promise<Result<EndedAllocation>> {
    if (!this.store.registered()) return notFound();
    const a = this.current();
    if (!a) return fail(409, "DEVICE_NOT_ALLOCATED", "The device holds no allocation.");
    return this.end(a.allocation_id, "force_released");
  }

  async extend(allocationId: string, expiresAt: number, info: ExtendInfo): Promise<Result<{ expiresAt: number }>> {
    const a = this.store.allocation(allocationId);
    if (!a || a.state === "ended") return fail(409, "ALLOCATION_ENDED", "The allocation has already ended.");
    const draining = this.status.extendRefusal(expiresAt);
    if (draining) return draining;
    const window = this.store.windowBefore(expiresAt, Date.now(), a.reservation_id);
    const from = window && iso(window.start_at);
    if (from)
      return fail(409, "DEVICE_RESERVED", `The device is reserved from ${from}; the allocation can run until then at most.`, {
        reservedFrom: from,
        expiresAt: iso(a.expires_at),
      });
    this.sql.tx(() => {
      this.store.extend(allocationId, expiresAt, Date.now());
      this.hub.append(a.user_id, "device.extended", { ...this.store.allocationData({ ...a, expires_at: expiresAt }), ...info });
    });
    await this.rearm();
    return ok({ expiresAt });
  }

  /** The user's object asks about an allocation it thinks is overdue. Ends it if it is. */
  async check(allocationId: string): Promise<Result<{ state: "active"; expiresAt: number } | { state: "ended"; ended: EndedAllocation }>> {
    const a = this.store.allocation(allocationId);
    if (!a) return fail(404, "ALLOCATION_NOT_FOUND", "No such allocation on this device.");
    if (a.state !== "ended" && a.expires_at <= Date.now()) {
      const ended = this.sql.tx(() => this.endTx(a, "expired", Date.now()));
      await this.settle();
      return ok({ state: "ended", ended });
    }
    if (a.state === "ended") return ok({ state: "ended", ended: this.store.ended(a) });
    return ok({ state: "active", expiresAt: a.expires_at });
  }

  // ---- reservation windows ---------------------------------------------------------------

  /** The pool books a window on this device for a reservation (see ./device/windows.ts). */
  async reserve(w: Window & { pool: string }): Promise<Result<{ deviceId: string }>> {
    return reserveWindow(this.store, this.status, this.current(), w);
  }

  /** The reservation was cancelled or ended: its window no longer holds the device. Idempotent. */
  async unreserve(reservationId: string): Promise<void> {
    this.store.unreserve(reservationId);
  }

  // ---- schedule handlers -----------------------------------------------------------------------

  /** What is due of the allocation held: it expires; or its claim is checked with its user, then warned of. */
  private async holdDueNow(now: number): Promise<void> {
    const a = this.store.current();
    if (!a) return;
    if (a.expires_at <= now) return void this.sql.tx(() => this.endTx(a, "expired", now));
    if (a.state === "held" && a.confirm_at !== null && a.confirm_at <= now) await this.verifyClaim(a);
    const still = this.store.current();
    if (still && !still.warned && still.warn_at !== null && still.warn_at <= now) this.warn(still, now);
  }

  private async verifyClaim(a: HoldRow): Promise<void> {
    const d = this.store.device()!;
    let answer: Verdict;
    try {
      answer = await take(this.env.USER_QUOTA.getByName(a.user_id).verify(a.allocation_id, d.device_id));
    } catch {
      this.store.confirmBy(a.allocation_id, Date.now() + ALLOCATION.notifyRetryMs);
      return;
    }
    const now = Date.now();
    const fresh = this.store.allocation(a.allocation_id);
    if (!fresh || fresh.state !== "held") return; // confirmed or ended meanwhile
    if (answer === "active" || answer === "ended") this.sql.tx(() => this.activate(fresh));
    else if (answer === "pending") this.store.confirmBy(a.allocation_id, now + ALLOCATION.notifyRetryMs);
    else this.sql.tx(() => this.endTx(fresh, "orphaned", now));
  }

  private warn(a: HoldRow, now: number): void {
    const data: FeedEvents["device.expiring"] = {
      allocationId: a.allocation_id,
      deviceId: this.store.device()!.device_id,
      expiresAt: iso(a.expires_at),
      secondsLeft: Math.max(0, Math.round((a.expires_at - now) / 1000)),
    };
    this.sql.tx(() => {
      this.store.warned(a.allocation_id);
      this.enqueue({ kind: "user_event", payload: { userId: a.user_id, type: "device.expiring", data } });
      this.hub.append(a.user_id, "device.expiring", data);
    });
  }

  // ---- internals -------------------------------------------------------------------------

  /** Ends an allocation inside a transaction and queues everything others must hear. */
  private endTx(a: HoldRow, reason: EndReason, now: number, byUser = false): EndedAllocation {
    const d = this.store.device()!;
    const after = this.status.afterEnd();
    const { ended, state } = this.store.end(a, reason, now, after ?? undefined);
    const record: UsageRecord = { ...ended, cpuCores: a.cpu, memoryMB: a.mem, storageMB: a.storage };
    this.enqueue(
      ...(byUser ? [] : [{ kind: "user_ended", payload: ended } as const]),
      ...(reason !== "orphaned" ? [{ kind: "usage", payload: { record, confirmed: a.state === "active" } } as const] : []),
      { kind: "pool_state", payload: { pool: d.pool, state } },
    );
    this.hub.append(a.user_id, "device.released", {
      allocationId: a.allocation_id,
      deviceId: d.device_id,
      pool: d.pool,
      allocatedAt: iso(a.allocated_at),
      releasedAt: iso(ended.releasedAt),
      durationSeconds: ended.durationSeconds,
      reason,
    });
    if (after) this.status.drained(ended, now);
    // Once the transaction is over: the holder's sockets get the release, then are closed.
    queueMicrotask(() => this.closeHolder(a.allocation_id, a.user_id));
    return ended;
  }

  /** held → active: the user's object knows the allocation; the device feed says so. */
  private activate(a: HoldRow): void {
    this.store.activate(a.allocation_id);
    this.hub.append(a.user_id, "device.allocated", this.store.allocationData(a));
  }

  /** The holder of an ended allocation stops watching (admins keep their sockets). */
  private closeHolder(allocationId: string, userId: string): void {
    // A transaction that rolled back ended nothing.
    if (this.store.allocation(allocationId)?.state !== "ended") return;
    this.hub.closeWhere((w) => w.role !== "admin" && w.userId === userId, CLOSE.normal, "allocation ended");
  }

  // ---- the device feed ------------------------------------------------------------------------

  /** Who may watch: admins and the device's current holder, whose hello also says how to reach the device. */
  protected async openFeed(f: FeedRequest): Promise<Response> {
    if (f.feed !== "device") return refuseSocket(CLOSE.forbidden, "FORBIDDEN", "This ticket is not for a device feed.");
    const d = this.store.registered();
    if (!d || (f.deviceId !== undefined && f.deviceId !== d.device_id))
      return refuseSocket(CLOSE.notFound, "DEVICE_NOT_FOUND", "No such device.");
    const a = this.current();
    if (f.role !== "admin" && a?.user_id !== f.userId)
      return refuseSocket(CLOSE.forbidden, "FORBIDDEN", "Only the device's current holder (or an admin) may watch it.");
    const grant = a?.user_id === f.userId ? await signGrant(this.env, { ...holdOf(a, d), userId: f.userId }) : null;
    // Signing awaited: the allocation may have ended meanwhile; decide again.
    if (a && this.current()?.allocation_id !== a.allocation_id) return this.openFeed(f);
    const holder = a?.user_id === f.userId ? { access: this.access.map(), accessGrant: grant?.token ?? null } : {};
    return this.hub.admit(f, { ...this.store.snapshot(d, a), ...holder });
  }

  // ---- outbox and alarm ---------------------------------------------------------------------

  /**
   * A newer state for a pool replaces the ones still waiting for it (the pool keeps only the
   * newest version anyway, and items go out side by side, in any order). An allocation's end is
   * carried over, so the pool still learns why it ended (its feed and metrics).
   */
  private enqueue(...items: OutboxItem<Messages>[]): void {
    for (const item of items) {
      if (item.kind !== "pool_state") continue;
      item.key = `pool_state:${item.payload.pool}`;
      const ended = this.outbox
        .supersede<"pool_state">(item.key)
        .map((p) => p.state.ended)
        .filter((e) => e !== undefined)
        .pop();
      if (ended && !item.payload.state.ended) item.payload.state.ended = ended;
    }
    this.outbox.add(...items);
  }

  /** A claim's state to its pool, after the claim answered; the outbox carries it if the call fails. */
  private async tellPool(pool: string, state: DeviceState): Promise<void> {
    try {
      await take(this.env.DEVICE_POOL.getByName(pool).deviceState(pool, state));
    } catch {
      this.enqueue({ kind: "pool_state", payload: { pool, state } });
      await this.settle();
    }
  }

  /** Tells the pool now (so a registered device is allocatable at once); the outbox retries failures. */
  private async publishState(d: DeviceRow): Promise<void> {
    this.enqueue({ kind: "pool_state", payload: { pool: d.pool, state: this.store.state(d) } });
    await this.settle();
  }

  /**
   * After a change on a request path: the outbox goes out now (the pool hears before the
   * release returns, the user's object and the usage queue too); what fails waits for the alarm.
   * In the same turn as the change's writes, an alarm is made sure to come within
   * `outboxSafetyMs`, for rows a crash in mid-delivery would leave behind.
   */
  private async settle(): Promise<void> {
    const safety = this.clock.arm(Date.now() + ALLOCATION.outboxSafetyMs);
    await this.outbox.flush();
    await safety;
    await this.rearm();
  }

  /** The alarm at the earliest time something is due. */
  private rearm(): Promise<void> {
    return this.schedule.rearm();
  }
}

/** When the held allocation next needs the alarm (null: nothing held). */
function holdDue(a: HoldRow | null): number | null {
  if (!a) return null;
  return Math.min(a.expires_at, a.confirm_at ?? Infinity, !a.warned && a.warn_at !== null ? a.warn_at : Infinity);
}

const holdOf = (a: HoldRow, d: DeviceRow) => ({ deviceId: d.device_id, allocationId: a.allocation_id, expiresAt: a.expires_at });

function notFound() {
  return fail(404, "DEVICE_NOT_FOUND", "No such device.");
}
