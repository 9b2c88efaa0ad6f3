/**
 * Device: the single source of truth for one device. It holds at most one allocation
 * (checked and written with no await in between, so concurrent claims cannot both win),
 * ends it at `expiresAt` by alarm, and keeps an outbox of what others must hear about an
 * allocation ending (the user's object, the pool index, the usage queue). The outbox row
 * is written in the same transaction that ends the allocation, and the alarm retries
 * delivery until it succeeds, so nothing is lost across crashes or restarts.
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
import { FeedObject } from "./FeedObject";
import { ALLOCATION, FEED, PAGING } from "../src/config";
import type { Env } from "../src/env";
import { fail, ok, type Result } from "../src/errors";
import { fits } from "../src/domain/strategy";
import { expiryWarningAt } from "../src/domain/expiry";
import type { DeviceInfo, DeviceSpec, DeviceStatus, EndReason, EndedAllocation, UsageRecord } from "../src/domain/types";
import { AlarmClock, CachedRow, Sql, deliverOutbox } from "../src/sql";
import { FeedHub, feedRequestOf, feedSchema, feedSocketsSchema, refuseSocket } from "../src/feed/hub";
import { CLOSE, type AllocationEventData, type DeviceFeedState, type FeedEvents } from "../src/feed/protocol";
import { adminFeed, socketReporter } from "../src/objects/operators";
import { log } from "../src/log";
import { take } from "../src/rpc";
import type { Verdict, DeviceState, ClaimRequest, Claimed, ExtendInfo, CurrentAllocation } from "../src/contracts";

const SCHEMA = [
  `CREATE TABLE device (
     id INTEGER PRIMARY KEY CHECK (id = 1), device_id TEXT NOT NULL, pool TEXT NOT NULL, node TEXT NOT NULL,
     cpu INTEGER NOT NULL, mem INTEGER NOT NULL, storage INTEGER NOT NULL, status TEXT NOT NULL,
     version INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
   CREATE TABLE allocations (
     allocation_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, state TEXT NOT NULL,
     cpu INTEGER NOT NULL, mem INTEGER NOT NULL, storage INTEGER NOT NULL,
     allocated_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, confirm_at INTEGER,
     warn_at INTEGER, warned INTEGER NOT NULL DEFAULT 0,
     released_at INTEGER, duration_seconds INTEGER, reason TEXT);
   CREATE INDEX allocations_state ON allocations(state);
   CREATE INDEX allocations_alloc_at ON allocations(allocated_at);
   CREATE TABLE outbox (
     id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, payload TEXT NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL, last_error TEXT);`,
  // The device feed: its log, event keys, accepted ticket nonces.
  feedSchema("feed"),
  // Reservation windows booked on this device; an allocation made for one names it.
  `CREATE TABLE windows (reservation_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, start_at INTEGER NOT NULL, end_at INTEGER NOT NULL);
   CREATE INDEX windows_start ON windows(start_at, end_at);
   ALTER TABLE allocations ADD COLUMN reservation_id TEXT;`,
  // The open socket count last reported to the operators' metrics.
  feedSocketsSchema("feed"),
];

type AllocState = "held" | "active" | "ended";
interface AllocRow {
  allocation_id: string;
  user_id: string;
  state: AllocState;
  cpu: number;
  mem: number;
  storage: number;
  allocated_at: number;
  expires_at: number;
  confirm_at: number | null;
  warn_at: number | null;
  warned: number;
  released_at: number | null;
  duration_seconds: number | null;
  reason: EndReason | null;
  reservation_id: string | null;
}
interface DeviceRow {
  device_id: string;
  pool: string;
  node: string;
  cpu: number;
  mem: number;
  storage: number;
  status: DeviceStatus;
  version: number;
  created_at: number;
  updated_at: number;
}

type OutboxItem =
  | { kind: "user_ended"; payload: EndedAllocation }
  | { kind: "user_event"; payload: { userId: string; type: "device.expiring"; data: FeedEvents["device.expiring"] } }
  | { kind: "pool_state"; payload: { pool: string; state: DeviceState } }
  | { kind: "usage"; payload: { record: UsageRecord; confirmed: boolean } }
  | {
      kind: "admin_event";
      payload: { key: string; userId: string; type: "device.status"; data: FeedEvents["device.status"] };
    };

export class Device extends FeedObject {
  private readonly sql: Sql;
  /** The device feed: its log and watchers' sockets. */
  protected readonly hub: FeedHub;
  private readonly clock: AlarmClock;
  /** The device row (only this class writes it). */
  private readonly dev: CachedRow<DeviceRow>;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = new Sql(ctx.storage);
    this.dev = new CachedRow<DeviceRow>(this.sql, "SELECT * FROM device WHERE id = 1");
    this.clock = new AlarmClock(ctx.storage);
    this.hub = new FeedHub(ctx, this.sql, {
      table: "feed",
      limit: FEED.deviceHistoryLimit,
      maxSockets: FEED.maxSocketsPerDevice,
      onSockets: socketReporter(env, ctx, "device"),
    });
    ctx.blockConcurrencyWhile(async () => {
      this.sql.migrate(SCHEMA);
      this.hub.start();
      await this.clock.load();
      // Re-arm in case a due row outlived its alarm (e.g. an alarm deleted by a restart).
      await this.rearm();
    });
  }

  // ---- reads ---------------------------------------------------------------------------

  private row(): DeviceRow | null {
    return this.dev.get();
  }

  private current(): AllocRow | null {
    return this.sql.one<AllocRow>("SELECT * FROM allocations WHERE state IN ('held','active') LIMIT 1");
  }

  private info(d: DeviceRow): DeviceInfo {
    return {
      deviceId: d.device_id,
      pool: d.pool,
      node: d.node,
      cpuCores: d.cpu,
      memoryMB: d.mem,
      storageMB: d.storage,
      status: d.status,
      createdAt: d.created_at,
      updatedAt: d.updated_at,
    };
  }

  private state(d: DeviceRow): DeviceState {
    const a = this.current();
    return {
      deviceId: d.device_id,
      node: d.node,
      cpuCores: d.cpu,
      memoryMB: d.mem,
      storageMB: d.storage,
      status: d.status,
      version: d.version,
      allocationId: a?.allocation_id ?? null,
      userId: a?.user_id ?? null,
      expiresAt: a?.expires_at ?? null,
    };
  }

  async get(): Promise<Result<DeviceInfo & { allocation: CurrentAllocation | null }>> {
    const d = this.row();
    if (!d || d.status === "removed") return notFound();
    const a = this.current();
    return ok({
      ...this.info(d),
      allocation: a
        ? {
            allocationId: a.allocation_id,
            userId: a.user_id,
            confirmed: a.state === "active",
            allocatedAt: a.allocated_at,
            expiresAt: a.expires_at,
          }
        : null,
    });
  }

  async history(opts: { cursor?: number; limit?: number }): Promise<Result<{ items: EndedAllocation[]; nextCursor: number | null }>> {
    if (!this.row()) return notFound();
    const limit = Math.min(opts.limit ?? PAGING.defaultLimit, PAGING.maxLimit);
    const rows = this.sql.all<AllocRow>(
      "SELECT * FROM allocations WHERE state = 'ended' AND reason != 'orphaned' AND allocated_at < ? ORDER BY allocated_at DESC LIMIT ?",
      opts.cursor ?? Number.MAX_SAFE_INTEGER,
      limit + 1,
    );
    const items = rows.slice(0, limit).map((r) => this.ended(r));
    return ok({ items, nextCursor: rows.length > limit ? rows[limit - 1]!.allocated_at : null });
  }

  // ---- lifecycle (admin) -----------------------------------------------------------------

  async register(input: { deviceId: string; pool: string; node: string } & DeviceSpec): Promise<Result<DeviceInfo>> {
    const existing = this.row();
    if (existing && existing.status !== "removed")
      return fail(409, "DEVICE_EXISTS", `Device ${input.deviceId} is already registered (pool ${existing.pool}).`);
    const now = Date.now();
    this.sql.tx(() => {
      this.dev.write(
        `INSERT INTO device (id, device_id, pool, node, cpu, mem, storage, status, version, created_at, updated_at)
         VALUES (1, ?, ?, ?, ?, ?, ?, 'available', 1, ?, ?)
         ON CONFLICT(id) DO UPDATE SET device_id = excluded.device_id, pool = excluded.pool, node = excluded.node,
           cpu = excluded.cpu, mem = excluded.mem, storage = excluded.storage, status = 'available',
           version = device.version + 1, created_at = excluded.created_at, updated_at = excluded.updated_at`,
        input.deviceId,
        input.pool,
        input.node,
        input.cpuCores,
        input.memoryMB,
        input.storageMB,
        now,
        now,
      );
      // A device registered again starts with no windows (its old pool's reservations move elsewhere at their start).
      this.sql.exec("DELETE FROM windows");
    });
    const d = this.row()!;
    await this.publishState(d);
    return ok(this.info(d));
  }

  async update(patch: Partial<DeviceSpec> & { node?: string; pool?: string }): Promise<Result<DeviceInfo>> {
    const d = this.row();
    if (!d || d.status === "removed") return notFound();
    if (
      this.current() &&
      (patch.pool !== undefined || patch.cpuCores !== undefined || patch.memoryMB !== undefined || patch.storageMB !== undefined)
    )
      return fail(409, "DEVICE_BUSY", "The device is allocated; change its pool or spec after the allocation ends.");
    if (patch.pool !== undefined && patch.pool !== d.pool) {
      const w = this.sql.one<{ n: number; first: number | null }>(
        "SELECT COUNT(*) AS n, MIN(start_at) AS first FROM windows WHERE end_at > ?",
        Date.now(),
      )!;
      if (w.n > 0)
        return fail(
          409,
          "DEVICE_RESERVED",
          `The device has ${w.n} reservation window(s) in pool ${d.pool}; cancel them before moving it.`,
          { reservations: w.n, firstStartsAt: iso(w.first!) },
        );
    }
    const oldPool = d.pool;
    this.dev.write(
      "UPDATE device SET pool = ?, node = ?, cpu = ?, mem = ?, storage = ?, version = version + 1, updated_at = ? WHERE id = 1",
      patch.pool ?? d.pool,
      patch.node ?? d.node,
      patch.cpuCores ?? d.cpu,
      patch.memoryMB ?? d.mem,
      patch.storageMB ?? d.storage,
      Date.now(),
    );
    const next = this.row()!;
    if (next.pool !== oldPool) {
      // Leave the old pool's index: it sees a "removed" state for this device.
      this.enqueue({
        kind: "pool_state",
        payload: { pool: oldPool, state: { ...this.state(next), status: "removed" } },
      });
    }
    await this.publishState(next);
    return ok(this.info(next));
  }

  /** maintenance / offline end an active allocation cleanly; available brings it back. */
  async setStatus(status: "available" | "maintenance" | "offline"): Promise<Result<DeviceInfo & { ended: EndedAllocation | null }>> {
    const d = this.row();
    if (!d || d.status === "removed") return notFound();
    let ended: EndedAllocation | null = null;
    this.sql.tx(() => {
      const a = this.current();
      if (a && status !== "available") ended = this.endTx(a, status, Date.now());
      const newStatus: DeviceStatus = status === "available" ? (this.current() ? "allocated" : "available") : status;
      this.dev.write("UPDATE device SET status = ?, version = version + 1, updated_at = ? WHERE id = 1", newStatus, Date.now());
      // A repeat (maintenance twice) is no change and says nothing.
      if (newStatus !== d.status) this.statusChanged(d.status, ended);
    });
    const next = this.row()!;
    await this.publishState(next);
    return ok({ ...this.info(next), ended });
  }

  async remove(): Promise<Result<{ deviceId: string; ended: EndedAllocation | null }>> {
    const d = this.row();
    if (!d || d.status === "removed") return notFound();
    let ended: EndedAllocation | null = null;
    this.sql.tx(() => {
      const a = this.current();
      if (a) ended = this.endTx(a, "removed", Date.now());
      this.dev.write("UPDATE device SET status = 'removed', version = version + 1, updated_at = ? WHERE id = 1", Date.now());
      this.statusChanged(d.status, ended);
    });
    // Everyone, the holder included, hears the device is gone for good (after the events above).
    this.hub.closeWhere(() => true, CLOSE.deviceRemoved, "device removed");
    await this.publishState(this.row()!);
    return ok({ deviceId: d.device_id, ended });
  }

  // ---- allocation protocol -----------------------------------------------------------------

  /** Called by the pool. No await between the check and the write: one claim wins. */
  async claim(req: ClaimRequest): Promise<Result<Claimed>> {
    const d = this.row();
    if (!d || d.status === "removed") return fail(409, "DEVICE_UNAVAILABLE", "The device is not registered.", { state: null });
    if (d.pool !== req.pool)
      return fail(409, "DEVICE_UNAVAILABLE", "The device has moved to another pool.", {
        state: { ...this.state(d), status: "removed" },
      });
    const spec = { cpuCores: d.cpu, memoryMB: d.mem, storageMB: d.storage };
    if (d.status !== "available" || this.current())
      return fail(409, "DEVICE_BUSY", "The device is already allocated or not in service.", { state: this.state(d) });
    if (!fits(spec, req.min, req.max)) return fail(409, "DEVICE_UNFIT", "The device does not match the request.", { state: this.state(d) });
    const now = Date.now();
    // A reservation's allocation ends with its window, never later (the next window may start right then).
    const expiresAt = req.via?.until !== undefined ? Math.min(now + req.durationMs, req.via.until) : now + req.durationMs;
    if (expiresAt <= now) return fail(409, "RESERVATION_WINDOW_OVER", "The reservation's window has ended.", { state: this.state(d) });
    const reservationId = req.via?.kind === "reservation" ? req.via.id : null;
    const window = this.windowBefore(expiresAt, now, reservationId);
    if (window)
      return fail(409, "DEVICE_RESERVED", `The device is reserved from ${iso(window.start_at)}.`, {
        state: this.state(d),
        reservedFrom: iso(window.start_at),
      });
    const confirmAt = now + ALLOCATION.claimConfirmMs;
    const warnAt = expiryWarningAt(now, expiresAt);
    this.sql.tx(() => {
      this.sql.exec(
        `INSERT INTO allocations (allocation_id, user_id, state, cpu, mem, storage, allocated_at, expires_at, confirm_at, warn_at, reservation_id)
         VALUES (?, ?, 'held', ?, ?, ?, ?, ?, ?, ?, ?)`,
        req.allocationId,
        req.userId,
        d.cpu,
        d.mem,
        d.storage,
        now,
        expiresAt,
        confirmAt,
        warnAt,
        reservationId,
      );
      this.dev.write("UPDATE device SET status = 'allocated', version = version + 1, updated_at = ? WHERE id = 1", now);
    });
    // In the same turn as the writes (one commit): the claim's earliest deadline.
    await this.clock.arm(Math.min(expiresAt, confirmAt, warnAt));
    const state: DeviceState = {
      deviceId: d.device_id,
      node: d.node,
      ...spec,
      status: "allocated",
      version: d.version + 1,
      allocationId: req.allocationId,
      userId: req.userId,
      expiresAt,
    };
    return ok({ deviceId: d.device_id, pool: d.pool, node: d.node, ...spec, allocatedAt: now, expiresAt, state });
  }

  /** The user's object has recorded the allocation. */
  async confirm(allocationId: string): Promise<Result<{ confirmed: true }>> {
    const a = this.sql.one<AllocRow>("SELECT * FROM allocations WHERE allocation_id = ?", allocationId);
    if (!a || a.state === "ended") return fail(409, "ALLOCATION_ENDED", "The allocation has already ended.");
    if (a.state === "held") this.sql.tx(() => this.activate(a));
    // The claim armed its deadlines; confirming only drops one, so nothing comes earlier.
    return ok({ confirmed: true });
  }

  /** Gives back a claim its user never recorded (no usage: the user never had it). */
  async abort(allocationId: string): Promise<Result<{ aborted: boolean }>> {
    const a = this.sql.one<AllocRow>("SELECT * FROM allocations WHERE allocation_id = ?", allocationId);
    if (!a || a.state === "ended") return ok({ aborted: false });
    this.sql.tx(() => this.endTx(a, "orphaned", Date.now()));
    await this.settle();
    return ok({ aborted: true });
  }

  /** Ends the allocation (idempotent: a repeat returns the first result). */
  async end(allocationId: string, reason: EndReason): Promise<Result<EndedAllocation>> {
    const a = this.sql.one<AllocRow>("SELECT * FROM allocations WHERE allocation_id = ?", allocationId);
    if (!a) return fail(404, "ALLOCATION_NOT_FOUND", "No such allocation on this device.");
    if (a.state === "ended") return ok(this.ended(a));
    const ended = this.sql.tx(() => this.endTx(a, reason, Date.now()));
    await this.settle();
    return ok(ended);
  }

  /** Admin force-release of whatever the device holds. */
  async forceRelease(): Promise<Result<EndedAllocation>> {
    const d = this.row();
    if (!d || d.status === "removed") return notFound();
    const a = this.current();
    if (!a) return fail(409, "DEVICE_NOT_ALLOCATED", "The device holds no allocation.");
    return this.end(a.allocation_id, "force_released");
  }

  async extend(allocationId: string, expiresAt: number, info: ExtendInfo): Promise<Result<{ expiresAt: number }>> {
    const a = this.sql.one<AllocRow>("SELECT * FROM allocations WHERE allocation_id = ?", allocationId);
    if (!a || a.state === "ended") return fail(409, "ALLOCATION_ENDED", "The allocation has already ended.");
    const window = this.windowBefore(expiresAt, Date.now(), a.reservation_id);
    if (window)
      return fail(
        409,
        "DEVICE_RESERVED",
        `The device is reserved from ${iso(window.start_at)}; the allocation can run until then at most.`,
        {
          reservedFrom: iso(window.start_at),
          expiresAt: iso(a.expires_at),
        },
      );
    this.sql.tx(() => {
      this.sql.exec(
        "UPDATE allocations SET expires_at = ?, warn_at = ?, warned = 0 WHERE allocation_id = ?",
        expiresAt,
        expiryWarningAt(Date.now(), expiresAt),
        allocationId,
      );
      this.hub.append(a.user_id, "device.extended", {
        ...this.allocationData({ ...a, expires_at: expiresAt }),
        ...info,
      });
    });
    await this.rearm();
    return ok({ expiresAt });
  }

  /** The user's object asks about an allocation it thinks is overdue. Ends it if it is. */
  async check(allocationId: string): Promise<Result<{ state: "active"; expiresAt: number } | { state: "ended"; ended: EndedAllocation }>> {
    const a = this.sql.one<AllocRow>("SELECT * FROM allocations WHERE allocation_id = ?", allocationId);
    if (!a) return fail(404, "ALLOCATION_NOT_FOUND", "No such allocation on this device.");
    if (a.state !== "ended" && a.expires_at <= Date.now()) {
      const ended = this.sql.tx(() => this.endTx(a, "expired", Date.now()));
      await this.settle();
      return ok({ state: "ended", ended });
    }
    if (a.state === "ended") return ok({ state: "ended", ended: this.ended(a) });
    return ok({ state: "active", expiresAt: a.expires_at });
  }

  // ---- reservation windows ---------------------------------------------------------------

  /** A window booked by another reservation that starts before `until` and has not ended at `now`. */
  private windowBefore(until: number, now: number, own: string | null): { reservation_id: string; start_at: number } | null {
    return this.sql.one(
      "SELECT reservation_id, start_at FROM windows WHERE start_at < ? AND end_at > ? AND reservation_id != ? ORDER BY start_at LIMIT 1",
      until,
      now,
      own ?? "",
    );
  }

  /**
   * The pool books [startAt, endAt) on this device for a reservation. Refused when the device
   * is out of service, allocated into the window, or has another window there. Idempotent.
   */
  async reserve(w: {
    reservationId: string;
    userId: string;
    pool: string;
    startAt: number;
    endAt: number;
  }): Promise<Result<{ deviceId: string }>> {
    const d = this.row();
    if (!d || d.status === "removed") return fail(409, "DEVICE_UNAVAILABLE", "The device is not registered.", { state: null });
    // The asking pool's index drops it (a "removed" state for that pool; the device's own pool is told by its outbox).
    if (d.pool !== w.pool)
      return fail(409, "DEVICE_UNAVAILABLE", "The device has moved to another pool.", {
        state: { ...this.state(d), status: "removed" },
      });
    if (this.sql.one("SELECT 1 AS x FROM windows WHERE reservation_id = ?", w.reservationId)) return ok({ deviceId: d.device_id });
    if (d.status === "maintenance" || d.status === "offline")
      return fail(409, "DEVICE_UNAVAILABLE", "The device is not in service.", { state: this.state(d) });
    const a = this.current();
    if (a && a.expires_at > w.startAt)
      return fail(409, "DEVICE_BUSY", "The device is allocated into the window.", { state: this.state(d) });
    const now = Date.now();
    const clash = this.sql.one<{ start_at: number }>(
      "SELECT start_at FROM windows WHERE start_at < ? AND end_at > ? LIMIT 1",
      w.endAt,
      Math.max(w.startAt, now),
    );
    if (clash)
      return fail(409, "DEVICE_RESERVED", "The device has another reservation in the window.", {
        state: this.state(d),
      });
    this.sql.tx(() => {
      this.sql.exec("DELETE FROM windows WHERE end_at < ?", now);
      this.sql.exec(
        "INSERT INTO windows (reservation_id, user_id, start_at, end_at) VALUES (?, ?, ?, ?)",
        w.reservationId,
        w.userId,
        w.startAt,
        w.endAt,
      );
    });
    return ok({ deviceId: d.device_id });
  }

  /** The reservation was cancelled or ended: its window no longer holds the device. Idempotent. */
  async unreserve(reservationId: string): Promise<void> {
    this.sql.exec("DELETE FROM windows WHERE reservation_id = ?", reservationId);
  }

  // ---- alarm: expiry, warnings, claim checks, outbox delivery ---------------------------------

  override async alarm(): Promise<void> {
    this.clock.fired();
    const now = Date.now();
    const a = this.current();
    if (a && a.expires_at <= now) {
      this.sql.tx(() => this.endTx(a, "expired", now));
    } else if (a) {
      if (a.state === "held" && a.confirm_at !== null && a.confirm_at <= now) await this.verifyClaim(a);
      const still = this.current();
      if (still && !still.warned && still.warn_at !== null && still.warn_at <= now) {
        const data: FeedEvents["device.expiring"] = {
          allocationId: still.allocation_id,
          deviceId: this.row()!.device_id,
          expiresAt: iso(still.expires_at),
          secondsLeft: Math.max(0, Math.round((still.expires_at - now) / 1000)),
        };
        this.sql.tx(() => {
          this.sql.exec("UPDATE allocations SET warned = 1 WHERE allocation_id = ?", still.allocation_id);
          this.enqueue({ kind: "user_event", payload: { userId: still.user_id, type: "device.expiring", data } });
          this.hub.append(still.user_id, "device.expiring", data);
        });
      }
    }
    await this.flush();
    await this.rearm();
  }

  private async verifyClaim(a: AllocRow): Promise<void> {
    const d = this.row()!;
    let answer: Verdict;
    try {
      answer = await take(this.env.USER_QUOTA.getByName(a.user_id).verify(a.allocation_id, d.device_id));
    } catch {
      this.sql.exec(
        "UPDATE allocations SET confirm_at = ? WHERE allocation_id = ?",
        Date.now() + ALLOCATION.notifyRetryMs,
        a.allocation_id,
      );
      return;
    }
    const now = Date.now();
    const fresh = this.sql.one<AllocRow>("SELECT * FROM allocations WHERE allocation_id = ?", a.allocation_id);
    if (!fresh || fresh.state !== "held") return; // confirmed or ended meanwhile
    if (answer === "active" || answer === "ended") {
      this.sql.tx(() => this.activate(fresh));
    } else if (answer === "pending") {
      this.sql.exec("UPDATE allocations SET confirm_at = ? WHERE allocation_id = ?", now + ALLOCATION.notifyRetryMs, a.allocation_id);
    } else {
      this.sql.tx(() => this.endTx(fresh, "orphaned", now));
    }
  }

  /** Delivers the due outbox rows (see deliverOutbox: side by side, settled in one commit). */
  private flush(): Promise<void> {
    return deliverOutbox<{ id: number; kind: OutboxItem["kind"]; payload: string; attempts: number }>(
      this.sql,
      "outbox",
      ALLOCATION.notifyRetryMs,
      (row) => {
        const item = { kind: row.kind, payload: JSON.parse(row.payload) } as OutboxItem;
        return this.deliver(item).catch((err: unknown) => {
          // Retried by the alarm; the row keeps its last error too.
          const p = item.payload as { record?: UsageRecord; allocationId?: string; userId?: string };
          log("warn", "outbox delivery failed", {
            userId: p.record?.userId ?? p.userId,
            allocationId: p.record?.allocationId ?? p.allocationId,
            deviceId: this.row()?.device_id,
            kind: item.kind,
            attempts: row.attempts + 1,
            error: String(err).slice(0, 300),
          });
          throw err;
        });
      },
    );
  }

  /** true when delivered; false to try again later without counting a failure. */
  private async deliver(item: OutboxItem): Promise<boolean> {
    switch (item.kind) {
      case "user_ended":
        await take(this.env.USER_QUOTA.getByName(item.payload.userId).deviceEnded(item.payload));
        return true;
      case "user_event":
        await take(this.env.USER_QUOTA.getByName(item.payload.userId).deviceEvent(item.payload.type, item.payload.data));
        return true;
      case "pool_state":
        await take(this.env.DEVICE_POOL.getByName(item.payload.pool).deviceState(item.payload.pool, item.payload.state));
        return true;
      case "admin_event":
        // The key makes a redelivery show once on the admin feed.
        await take(adminFeed(this.env).publish(item.payload.key, item.payload.type, item.payload.userId, item.payload.data));
        return true;
      case "usage": {
        if (!item.payload.confirmed) {
          // Ended before its user confirmed it: bill only if the user knows the allocation.
          const r = item.payload.record;
          const answer = await take(this.env.USER_QUOTA.getByName(r.userId).verify(r.allocationId, r.deviceId));
          if (answer === "pending") return false;
          if (answer === "unknown") return true; // never the user's: nothing to bill
        }
        await this.env.USAGE_QUEUE.send(item.payload.record, { contentType: "json" });
        return true;
      }
    }
  }

  // ---- internals -------------------------------------------------------------------------

  /** Ends an allocation inside a transaction and queues everything others must hear. */
  private endTx(a: AllocRow, reason: EndReason, now: number): EndedAllocation {
    const d = this.row()!;
    // Expiry bills up to expiresAt, never the alarm's lag.
    const releasedAt = Math.max(a.allocated_at, reason === "expired" ? Math.min(now, a.expires_at) : now);
    const durationSeconds = Math.round((releasedAt - a.allocated_at) / 1000);
    this.sql.exec(
      "UPDATE allocations SET state = 'ended', released_at = ?, duration_seconds = ?, reason = ?, confirm_at = NULL WHERE allocation_id = ?",
      releasedAt,
      durationSeconds,
      reason,
      a.allocation_id,
    );
    // A reservation's allocation ended: its window holds the device no longer (others may take it).
    if (a.reservation_id) this.sql.exec("DELETE FROM windows WHERE reservation_id = ?", a.reservation_id);
    const status: DeviceStatus = d.status === "allocated" ? "available" : d.status;
    this.dev.write("UPDATE device SET status = ?, version = version + 1, updated_at = ? WHERE id = 1", status, now);
    const ended: EndedAllocation = {
      allocationId: a.allocation_id,
      deviceId: d.device_id,
      userId: a.user_id,
      allocatedAt: a.allocated_at,
      releasedAt,
      durationSeconds,
      reason,
    };
    // The device holds nothing now (one allocation at a time): its new state, without reading it back.
    const state: DeviceState = {
      deviceId: d.device_id,
      node: d.node,
      cpuCores: d.cpu,
      memoryMB: d.mem,
      storageMB: d.storage,
      status,
      version: d.version + 1,
      allocationId: null,
      userId: null,
      expiresAt: null,
      ended: {
        allocationId: a.allocation_id,
        reason,
        lagMs: reason === "expired" ? Math.max(0, now - a.expires_at) : null,
      },
    };
    const record: UsageRecord = { ...ended, cpuCores: a.cpu, memoryMB: a.mem, storageMB: a.storage };
    this.enqueue(
      { kind: "user_ended", payload: ended },
      ...(reason !== "orphaned" ? [{ kind: "usage", payload: { record, confirmed: a.state === "active" } } as const] : []),
      { kind: "pool_state", payload: { pool: d.pool, state } },
    );
    this.hub.append(a.user_id, "device.released", {
      allocationId: a.allocation_id,
      deviceId: d.device_id,
      pool: d.pool,
      allocatedAt: iso(a.allocated_at),
      releasedAt: iso(releasedAt),
      durationSeconds,
      reason,
    });
    // Once the transaction is over: the holder's sockets get the release, then are closed.
    queueMicrotask(() => this.closeHolder(a.allocation_id, a.user_id));
    return ended;
  }

  /** held → active: the user's object knows the allocation; the device feed says so. */
  private activate(a: AllocRow): void {
    this.sql.exec("UPDATE allocations SET state = 'active', confirm_at = NULL WHERE allocation_id = ?", a.allocation_id);
    this.hub.append(a.user_id, "device.allocated", this.allocationData(a));
  }

  private allocationData(a: AllocRow): AllocationEventData {
    const d = this.row()!;
    return {
      allocationId: a.allocation_id,
      deviceId: d.device_id,
      pool: d.pool,
      node: d.node,
      cpuCores: a.cpu,
      memoryMB: a.mem,
      storageMB: a.storage,
      allocatedAt: iso(a.allocated_at),
      expiresAt: iso(a.expires_at),
      durationMinutes: Math.ceil((a.expires_at - a.allocated_at) / 60_000),
    };
  }

  /** Inside the status change's transaction: the device feed and (via the outbox) the admin feed. */
  private statusChanged(previous: DeviceStatus, ended: EndedAllocation | null): void {
    const d = this.row()!;
    const holder = ended?.userId ?? "";
    const data: FeedEvents["device.status"] = {
      deviceId: d.device_id,
      pool: d.pool,
      node: d.node,
      status: d.status,
      previousStatus: previous,
      endedAllocationId: ended?.allocationId ?? null,
    };
    this.hub.append(holder, "device.status", data);
    this.enqueue({
      kind: "admin_event",
      payload: { key: `device.status:${d.device_id}:${d.version}`, userId: holder, type: "device.status", data },
    });
  }

  /** The holder of an ended allocation stops watching (admins keep their sockets). */
  private closeHolder(allocationId: string, userId: string): void {
    // A transaction that rolled back ended nothing.
    const a = this.sql.one<{ state: AllocState }>("SELECT state FROM allocations WHERE allocation_id = ?", allocationId);
    if (a?.state !== "ended") return;
    this.hub.closeWhere((w) => w.role !== "admin" && w.userId === userId, CLOSE.normal, "allocation ended");
  }

  // ---- the device feed ------------------------------------------------------------------------

  /** A device feed socket (the Worker checked the ticket; who may watch and single use are checked here). */
  override async fetch(request: Request): Promise<Response> {
    const f = feedRequestOf(request);
    if (f instanceof Response) return f;
    if (f.feed !== "device") return refuseSocket(CLOSE.forbidden, "FORBIDDEN", "This ticket is not for a device feed.");
    const d = this.row();
    if (!d || d.status === "removed" || (f.deviceId !== undefined && f.deviceId !== d.device_id))
      return refuseSocket(CLOSE.notFound, "DEVICE_NOT_FOUND", "No such device.");
    const a = this.current();
    if (f.role !== "admin" && a?.user_id !== f.userId)
      return refuseSocket(CLOSE.forbidden, "FORBIDDEN", "Only the device's current holder (or an admin) may watch it.");
    return this.hub.admit(f, this.snapshot(d, a));
  }

  private snapshot(d: DeviceRow, a: AllocRow | null): DeviceFeedState {
    return {
      deviceId: d.device_id,
      pool: d.pool,
      node: d.node,
      status: d.status,
      allocation: a
        ? {
            allocationId: a.allocation_id,
            userId: a.user_id,
            state: a.state === "active" ? "active" : "held",
            allocatedAt: iso(a.allocated_at),
            expiresAt: iso(a.expires_at),
            secondsLeft: Math.max(0, Math.round((a.expires_at - Date.now()) / 1000)),
          }
        : null,
    };
  }

  private ended(a: AllocRow): EndedAllocation {
    return {
      allocationId: a.allocation_id,
      deviceId: this.row()!.device_id,
      userId: a.user_id,
      allocatedAt: a.allocated_at,
      releasedAt: a.released_at!,
      durationSeconds: a.duration_seconds!,
      reason: a.reason!,
    };
  }

  private enqueue(...items: OutboxItem[]): void {
    const at = Date.now();
    for (const item of items) if (item.kind === "pool_state") this.supersedePoolStates(item.payload);
    this.sql.exec(
      `INSERT INTO outbox (kind, payload, next_at) VALUES ${items.map(() => "(?, ?, ?)").join(", ")}`,
      ...items.flatMap((item) => [item.kind, JSON.stringify(item.payload), at]),
    );
  }

  /**
   * A newer state for a pool replaces the ones still waiting for it (the pool keeps only the
   * newest version anyway, and rows go out side by side, in any order). An allocation's end is
   * carried over, so the pool still learns why it ended (its feed and metrics).
   */
  private supersedePoolStates(next: { pool: string; state: DeviceState }): void {
    const waiting = this.sql
      .all<{ id: number; payload: string }>("SELECT id, payload FROM outbox WHERE kind = 'pool_state'")
      .map((r) => ({ id: r.id, payload: JSON.parse(r.payload) as { pool: string; state: DeviceState } }))
      .filter((r) => r.payload.pool === next.pool && r.payload.state.version < next.state.version);
    if (!waiting.length) return;
    const ended = waiting
      .map((r) => r.payload.state.ended)
      .filter((e) => e !== undefined)
      .pop();
    if (ended && !next.state.ended) next.state.ended = ended;
    this.sql.exec(`DELETE FROM outbox WHERE id IN (${waiting.map(() => "?").join(",")})`, ...waiting.map((r) => r.id));
  }

  /** Tells the pool now (so a registered device is allocatable at once); the outbox retries failures. */
  private async publishState(d: DeviceRow): Promise<void> {
    this.enqueue({ kind: "pool_state", payload: { pool: d.pool, state: this.state(d) } });
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
    await this.flush();
    await safety;
    await this.rearm();
  }

  /** The alarm at the earliest time something is due (only ever moved earlier: see AlarmClock). */
  private async rearm(): Promise<void> {
    const a = this.current();
    const times: number[] = [];
    if (a) {
      times.push(a.expires_at);
      if (a.confirm_at !== null) times.push(a.confirm_at);
      if (!a.warned && a.warn_at !== null) times.push(a.warn_at);
    }
    const next = this.sql.one<{ t: number | null }>("SELECT MIN(next_at) AS t FROM outbox");
    if (next?.t != null) times.push(next.t);
    if (times.length === 0) return;
    await this.clock.arm(Math.min(...times));
  }
}

const iso = (t: number) => new Date(t).toISOString();

function notFound() {
  return fail(404, "DEVICE_NOT_FOUND", "No such device.");
}
