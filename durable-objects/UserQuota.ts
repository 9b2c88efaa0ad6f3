/**
 * UserQuota: one per user. Serializes the user's allocations so quota can never be overrun:
 * the check and the write of a `pending` row happen with no await between them, and pending
 * rows count as usage (derived from the rows, never a counter that could drift). The
 * allocation protocol's steps are in ./user/allocator.ts. An ended allocation is reported by
 * the device's outbox (`deviceEnded`), and an active row past its expiry is checked with the
 * device by this object's alarm. The pool's queue and reservations ask it to check requests.
 *
 * Idle release: an allocation with an idle grace (its own or its pool's) is released with
 * reason `idle` once the user has had no feed socket open for that long. When the last
 * socket went is stored (`profile.sockets_gone_at`), so it survives hibernation and restarts.
 */
import {
  ALLOCATION,
  DEFAULT_RENEW_DAYS,
  EXTEND_POLICIES,
  FEED,
  PAGING,
  PLAN_BOUNDS,
  PLAN_LIMITS,
  defaultPlan,
  type QuotaLimits,
} from "../src/config";
import type {
  AllocateInput,
  HandOverBegun,
  AllocationResult,
  Claimed,
  Picked,
  QueueJoinInput,
  QuotaUpdate,
  ReleaseResult,
  ReserveInput,
  Verdict,
} from "../src/contracts";
import { Balance } from "../src/billing/balance";
import type { Funds } from "../src/billing/ledger";
import { checkExtend } from "../src/domain/extend";
import { idleSchedule } from "../src/domain/idle";
import { checkAllocation, checkExtraHours, deviceHeadroom, renewedUntil } from "../src/domain/quota";
import type { Allocation, AllocationStatus, DeviceSpec, EndReason, EndedAllocation, Quota, UsageRecord } from "../src/domain/types";
import type { Env } from "../src/env";
import { fail, ok, type Failure, type Result } from "../src/errors";
import { FeedHub, feedLeanLog, feedSchema, refuseSocket, type FeedHistory, type FeedRequest } from "../src/objects/feed";
import { CLOSE, type FeedEvents, type FeedEventType } from "../src/feed/protocol";

import { log } from "../src/log";
import { ServiceObject } from "../src/objects/base";
import { socketReporter } from "../src/objects/operators";
import { Schedule, earliest } from "../src/objects/schedule";
import { take } from "../src/rpc";
import { Allocator } from "./user/allocator";
import { Extender } from "./user/extender";
import {
  ALLOCATIONS_LEAN,
  ALLOCATIONS_SCHEMA,
  AllocationStore,
  allocationNotFound,
  eventData,
  extendInfo,
  orphanedEnd,
  releaseResult,
  resultOf,
  viewOf,
  type AllocationRow,
} from "../src/stores/allocations";
import { PROFILE_SCHEMA, ProfileStore, type ProfileRow } from "../src/stores/profile";
import { BOOKINGS_SCHEMA, BookingStore, type Booking } from "../src/stores/bookings";
import { PoolChecks } from "./user/pool-checks";
import type { UserContext } from "./user/context";
import { iso } from "../src/domain/time";
import { quotaView } from "../src/views";
import { specOf } from "../src/domain/spec";
import type { DeviceUserEvent } from "./device/messages";

const MIGRATIONS = [
  { name: "1-user", sql: `${PROFILE_SCHEMA}\n${ALLOCATIONS_SCHEMA}\n${feedSchema("events")}` },
  { name: "2-bookings", sql: BOOKINGS_SCHEMA },
  { name: "3-lean-feed-log", sql: feedLeanLog("events") },
  { name: "4-lean-allocations", sql: ALLOCATIONS_LEAN },
];

export class UserQuota extends ServiceObject {
  /** The user's event log and feed sockets. */
  protected readonly hub: FeedHub;
  protected override readonly schedule: Schedule;
  private readonly profiles: ProfileStore;
  private readonly allocations: AllocationStore;
  private readonly balance: Balance;
  private readonly allocator: Allocator;
  private readonly extender: Extender;
  private readonly checks: PoolChecks;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.profiles = new ProfileStore(this.sql);
    this.allocations = new AllocationStore(this.sql);
    this.balance = new Balance(this.env, (since) => this.allocations.endedSince(since));
    this.hub = new FeedHub(ctx, this.sql, {
      table: "events",
      limit: FEED.historyLimit,
      maxSockets: FEED.maxSocketsPerUser,
      onSockets: socketReporter(this.env, ctx, "user"),
    });
    const a = this.allocations;
    this.schedule = new Schedule(
      this.clock,
      [
        // Step 1 never completed (a crash, a pool that never reported back): the quota is let go.
        {
          due: () => a.firstDeadline(),
          run: (now) => a.stalePending(now).forEach((id) => this.allocator.inFlight.has(id) || a.abortPending(id)),
        },
        // Active past its expiry, or recorded beside a claim that may have failed: checked with the device.
        {
          due: () => a.firstOverdue(ALLOCATION.overdueGraceMs),
          run: (now) => this.checkWithDevices(a.overdue(now - ALLOCATION.overdueGraceMs)),
        },
        { due: () => a.firstRecordCheck(), run: (now) => this.checkWithDevices(a.recordChecksDue(now)) },
        { due: (now) => earliest(...this.idleDeadlines(now).map((x) => x.at)), run: () => this.releaseIdle() },
      ],
      // What is still due after an alarm failed (e.g. the device did not answer): retried shortly, not in a tight loop.
      { retryMs: ALLOCATION.notifyRetryMs },
    );
    const parts: UserContext = {
      env: this.env,
      sql: this.sql,
      clock: this.clock,
      schedule: this.schedule,
      profiles: this.profiles,
      allocations: this.allocations,
      balance: this.balance,
      profile: (userId) => this.profile(userId),
      allocationCheck: (...args) => this.allocationCheck(...args),
      noteQuotaStatus: (p) => this.noteQuotaStatus(p),
      emit: (userId, type, data) => this.emit(userId, type, data),
    };
    this.checks = new PoolChecks(parts, new BookingStore(this.sql));
    this.allocator = new Allocator(parts);
    this.extender = new Extender(parts, this.checks);
    this.start(MIGRATIONS);
  }

  // ---- profile and usage ---------------------------------------------------------------

  /** A user appears by their token: the first call creates the default plan's quota. */
  private profile(userId: string): ProfileRow {
    return this.profiles.get(userId, defaultPlan(this.env));
  }

  private quota(p: ProfileRow): Quota {
    return this.profiles.quota(p, this.allocations.usage(p.hours_used));
  }

  /** `quota.exceeded` once per crossing: a flag remembers we said it. */
  private noteQuotaStatus(p: ProfileRow): void {
    const q = this.quota(p);
    const over = q.status === "exceeded";
    if (over && !p.exceeded) {
      this.profiles.setExceeded(true);
      this.emit(p.user_id, "quota.exceeded", { limits: q.limits, usage: q.usage });
    } else if (!over && p.exceeded) this.profiles.setExceeded(false);
  }

  /**
   * The quota and funds check of a new allocation (or hand-over) of `spec` for `durationMs`
   * (`refusal` null: allowed), and the largest device the quota allows beside what is held.
   */
  private allocationCheck(userId: string, spec: DeviceSpec, durationMs: number, f: Funds | null, excluding?: string, reservation?: string) {
    const p = this.profile(userId);
    const usage = this.allocations.usage(p.hours_used, excluding);
    const st = this.profiles.state(p);
    // Bookings are committed funds too (not the one this allocation starts).
    const refusal =
      checkAllocation(st, usage, spec, durationMs / 3_600_000, Date.now()) ??
      this.checks.fundsRefusal(f, spec, durationMs, { allocation: excluding, reservation });
    return { refusal, max: deviceHeadroom(st.limits, usage) };
  }

  // ---- allocation (steps in ./user/allocator.ts) ----------------------------------------------

  async allocate(input: AllocateInput): Promise<Result<AllocationResult>> {
    return this.allocator.allocate(input);
  }

  /** A direct allocation, recorded beside its device's claim (see Allocator.record, src/allocate.ts). */
  async record(input: AllocateInput, allocationId: string, device: Picked, at: number): Promise<Result<AllocationResult>> {
    return this.allocator.record(input, allocationId, device, at);
  }

  /** Before a direct allocation's answer that nothing is free: the quota's own refusal comes first. */
  async allocationRefusal(input: AllocateInput): Promise<Failure | null> {
    return this.allocator.refusal(input);
  }

  /** Its device's claim failed: the recorded allocation never was. Idempotent. */
  async abortRecord(allocationId: string): Promise<boolean> {
    return this.allocator.abortRecord(allocationId);
  }

  /** A pool handing over a device (a queue entry, a reservation's start), step 1 (see Allocator.beginHandOver). */
  async beginHandOver(input: AllocateInput): Promise<Result<AllocationResult> | { begun: HandOverBegun }> {
    return this.allocator.beginHandOver(input);
  }

  /** A pool's hand-over, step 2 reported: the device it claimed (or why not). Steps 3 and 4 as for `allocate`. */
  async finishHandOver(input: AllocateInput, allocationId: string, claimed: Result<Claimed>): Promise<Result<AllocationResult>> {
    return this.allocator.finishHandOver(input, allocationId, claimed);
  }

  /** Billing moved this user's balance or plan (top-up, adjustment, plan change): read it again next time. */
  async fundsChanged(): Promise<void> {
    this.balance.forget();
  }

  /** Asked by a device about a claim it holds: does this user know the allocation? */
  async verify(allocationId: string, deviceId: string): Promise<Verdict> {
    const row = this.allocations.row(allocationId);
    if (!row || row.status === "aborted") return "unknown";
    if (row.status === "pending") {
      if (row.deadline !== null && row.deadline > Date.now()) return "pending";
      this.allocations.abortPending(allocationId);
      return "unknown";
    }
    if (row.device_id !== deviceId) return "unknown";
    return row.status === "active" ? "active" : "ended";
  }

  // ---- checks for the pool's queue and reservations -------------------------------------------

  /** Before a queue entry (see ./user/pool-checks.ts). */
  async queueCheck(input: QueueJoinInput): Promise<Result<{ priority: number; max: DeviceSpec; bound: number; refusal: Failure | null }>> {
    return this.checks.queue(input);
  }

  /** Before a booking: the per-device limits, and the quota status and funds verdict now (everything again at the start). */
  async bookingCheck(input: ReserveInput): Promise<Result<{ max: DeviceSpec; bound: number; refusal: Failure | null }>> {
    return this.checks.booking(input, await this.perDeviceMax(input.userId));
  }

  /** A pool about to book a window: held if the limits for that window and the balance allow (see ./user/bookings.ts). */
  async bookingHold(userId: string, b: Booking): Promise<Result<null>> {
    return this.checks.hold(userId, b);
  }

  /** The pool booked the held window, or did not (through its outbox; idempotent). */
  async bookingSettled(userId: string, b: Booking, booked: boolean): Promise<void> {
    this.checks.settle(userId, b, booked);
  }

  /** The largest single device this user may hold. */
  async perDeviceMax(userId: string): Promise<DeviceSpec> {
    const L = this.profiles.state(this.profile(userId)).limits;
    return { cpuCores: L.maxCpuCoresPerDevice, memoryMB: L.maxMemoryMBPerDevice, storageMB: L.maxStorageMBPerDevice };
  }

  // ---- release, end, extend ------------------------------------------------------------------

  async release(userId: string, deviceId: string, reason: EndReason = "released"): Promise<Result<ReleaseResult>> {
    this.profile(userId);
    const row = this.allocations.activeOn(deviceId);
    if (!row) return fail(404, "ALLOCATION_NOT_FOUND", `You hold no active allocation on device ${deviceId}.`, { deviceId });
    const r = await this.endOnDevice(row, reason);
    return r.ok ? ok(releaseResult(r.value)) : r;
  }

  /** Ends an active allocation at its device, then here (release and idle release). */
  private async endOnDevice(row: AllocationRow, reason: EndReason): Promise<Result<EndedAllocation>> {
    let r: Result<EndedAllocation>;
    try {
      r = (await take(this.env.DEVICE.getByName(row.device_id!).end(row.allocation_id, reason, true))) as Result<EndedAllocation>;
    } catch (err) {
      return fail(503, "DEVICE_UNAVAILABLE", "The device did not answer; the allocation is unchanged. Try again.", { cause: String(err) });
    }
    if (!r.ok) {
      if (r.code === "ALLOCATION_NOT_FOUND") this.markEnded(orphanedEnd(row, this.profiles.owner(), Date.now()));
      return r;
    }
    this.markEnded(r.value);
    return r;
  }

  /** From a device (its outbox): an allocation ended. Idempotent. */
  async deviceEnded(ended: EndedAllocation): Promise<void> {
    this.profile(ended.userId);
    this.markEnded(ended);
  }

  /** From a device: an event about an allocation of this user (e.g. `device.expiring`). */
  async deviceEvent(e: DeviceUserEvent): Promise<void> {
    const row = this.allocations.row(e.data.allocationId);
    // A warning (or a drain) for an allocation already over says nothing useful.
    if (row && row.status !== "active") return;
    this.emit(this.profiles.owner(), e.type, e.data as never);
  }

  private markEnded(e: EndedAllocation): void {
    const ended = this.sql.tx(() => {
      const row = this.allocations.markReleased(e);
      if (!row) return null;
      this.profiles.addHours(e.durationSeconds / 3600);
      this.emit(e.userId, "device.released", {
        allocationId: e.allocationId,
        deviceId: e.deviceId,
        pool: row.pool,
        allocatedAt: iso(e.allocatedAt),
        releasedAt: iso(e.releasedAt),
        durationSeconds: e.durationSeconds,
        reason: e.reason,
      });
      this.noteQuotaStatus(this.profile(e.userId));
      return row;
    });
    if (!ended) return;
    const { allocationId, deviceId, reason, durationSeconds } = e;
    log("info", "allocation ended", { userId: e.userId, allocationId, deviceId, pool: ended.pool, reason, durationSeconds });
    // Its charge is not in a balance read before now: a reused balance counts it.
    if (reason !== "orphaned") this.balance.spend(specOf(ended), durationSeconds, e.releasedAt);
  }

  async extend(
    userId: string,
    allocationId: string,
    additionalMinutes: number,
  ): Promise<Result<AllocationResult & { extendCount: number; extendedMinutes: number }>> {
    return this.extender.extend(userId, allocationId, additionalMinutes);
  }

  // ---- events from other parts of the service ---------------------------------------------

  /**
   * A billing or app event for this user's feed. Senders deliver at least once; `key` makes the
   * feed show each once. Returns the event's seq (the first one's, for a repeat).
   */
  async externalEvent<K extends FeedEventType>(
    userId: string,
    key: string,
    type: K,
    data: FeedEvents[K],
  ): Promise<{ seq: number; duplicate: boolean }> {
    this.profile(userId);
    this.checks.noteEvent(type, data);
    return this.hub.appendOnce(key, userId, type, data);
  }

  /**
   * Allocations that ended (and are billable) with `releasedAt` in [from, to), oldest first,
   * as the usage records they must have produced. Reconciliation compares them with D1.
   */
  async endedAllocations(
    userId: string,
    from: number,
    to: number,
    after?: string,
    limit = 500,
  ): Promise<{ records: UsageRecord[]; next: string | null }> {
    this.profile(userId);
    return this.allocations.usageRecords(userId, from, to, after, limit);
  }

  // ---- reads --------------------------------------------------------------------------------

  async getAllocation(userId: string, allocationId: string): Promise<Result<Allocation>> {
    this.profile(userId);
    const row = this.allocations.row(allocationId);
    if (!row || row.status === "aborted") return allocationNotFound(allocationId);
    return ok(viewOf(userId, row));
  }

  async listAllocations(
    userId: string,
    opts: { status?: AllocationStatus; cursor?: string; limit?: number },
  ): Promise<Result<{ items: Allocation[]; nextCursor: string | null }>> {
    this.profile(userId);
    const page = this.allocations.page({ ...opts, limit: Math.min(opts.limit ?? PAGING.defaultLimit, PAGING.maxLimit) });
    return ok({ items: page.rows.map((r) => viewOf(userId, r)), nextCursor: page.nextCursor });
  }

  async getQuota(userId: string): Promise<Quota> {
    return this.quota(this.profile(userId));
  }

  async events(userId: string, since = 0, limit = 100): Promise<FeedHistory> {
    this.profile(userId);
    return this.hub.history(since, limit);
  }

  // ---- the feed ----------------------------------------------------------------------------------

  /** The user's own tickets open their feed, and an admin's ticket naming them (watching, not present). */
  protected openFeed(f: FeedRequest): Response {
    const owner = this.profile(f.watching ?? f.userId).user_id;
    const allowed = f.watching === undefined || f.watching === f.userId ? owner === f.userId : f.role === "admin" && owner === f.watching;
    if (f.feed !== "user" || !allowed) return refuseSocket(CLOSE.forbidden, "FORBIDDEN", "This ticket is not for this feed.");
    const res = this.hub.admit(f);
    // The user is back: no idle clock runs while a socket of theirs is open (the alarm finds nothing due).
    if (this.hub.openBy(owner).length > 0) this.profiles.socketsGone(null);
    return res;
  }

  /** The user's last socket went: the idle clock of idle-release allocations starts now (an admin's socket is no presence). */
  protected override async socketClosed(ws: WebSocket): Promise<void> {
    const owner = this.profiles.owner();
    if (this.hub.watcherOf(ws)?.userId !== owner || this.hub.openBy(owner, ws).length > 0) return;
    this.profiles.socketsGone(Date.now());
    await this.schedule.rearm();
  }

  // ---- admin -----------------------------------------------------------------------------------

  async updateQuota(userId: string, update: QuotaUpdate): Promise<Result<Quota>> {
    const p = this.profile(userId);
    const plan = update.plan ?? p.plan;
    // A plan change without explicit limits takes that plan's limits.
    const base: QuotaLimits = update.plan && update.plan !== p.plan ? PLAN_LIMITS[plan] : (JSON.parse(p.limits) as QuotaLimits);
    const limits = { ...base, ...update.limits };
    this.sql.tx(() => {
      const suspended = update.suspended ?? p.suspended === 1;
      this.profiles.update({ plan, limits, suspended, validUntil: update.validUntil ?? p.valid_until }, Date.now());
      const next = this.profile(userId);
      this.emit(userId, "quota.updated", quotaView(this.quota(next)));
      this.noteQuotaStatus(next);
    });
    return ok(this.quota(this.profile(userId)));
  }

  async renew(userId: string, days = DEFAULT_RENEW_DAYS): Promise<Result<Quota>> {
    const p = this.profile(userId);
    const validUntil = renewedUntil(p.valid_until, days, Date.now());
    this.sql.tx(() => {
      this.profiles.renew(validUntil, Date.now());
      this.emit(userId, "quota.renewed", { validUntil: iso(validUntil), extensionDays: days });
    });
    return ok(this.quota(this.profile(userId)));
  }

  // ---- schedule handlers -------------------------------------------------------------------------

  /** Active allocations the device is asked about (past their expiry, or a record's check): ended, or held until when. */
  private async checkWithDevices(rows: AllocationRow[]): Promise<void> {
    const now = Date.now();
    for (const row of rows) {
      try {
        type Checked = { state: "active"; expiresAt: number } | { state: "ended"; ended: EndedAllocation };
        const r = (await take(this.env.DEVICE.getByName(row.device_id!).check(row.allocation_id))) as Result<Checked>;
        if (r.ok && r.value.state === "ended") this.markEnded(r.value.ended);
        else if (r.ok && r.value.state === "active") {
          const expiresAt = r.value.expiresAt;
          this.sql.tx(() => {
            this.allocations.setExpires(row.allocation_id, expiresAt);
            this.allocations.recordChecked(row.allocation_id);
          });
        } else if (!r.ok && r.code === "ALLOCATION_NOT_FOUND") this.markEnded(orphanedEnd(row, this.profiles.owner(), now));
      } catch {
        // Device unreachable: the next alarm tries again.
      }
    }
  }

  /** Idle releases that are due, re-checked before each one: a socket that opened meanwhile stops the rest. */
  private async releaseIdle(): Promise<void> {
    const tried = new Set<string>();
    for (;;) {
      const due = this.idleDeadlines(Date.now()).find((x) => !x.recheck && x.at <= Date.now() && !tried.has(x.row.allocation_id));
      if (!due) break;
      tried.add(due.row.allocation_id);
      // Same path as a release; a failure leaves it active and the next alarm tries again.
      await this.endOnDevice(due.row, "idle");
    }
  }

  /** Active idle-release allocations and when each is due (see idleSchedule). */
  private idleDeadlines(now: number): { row: AllocationRow; at: number; recheck?: true }[] {
    const rows = this.allocations.idleReleasable();
    if (rows.length === 0) return [];
    const openSockets = this.hub.openBy(this.profiles.owner()).length;
    let goneAt = this.profiles.goneAt();
    if (openSockets === 0 && goneAt === null) {
      // No socket and no record of when it went (a restart dropped them): the clock starts now.
      goneAt = now;
      this.profiles.socketsGone(now);
    }
    return idleSchedule(rows, openSockets, goneAt, now);
  }

  /** Appends to the user's feed (bounded log, sent to open sockets once the write is done). */
  private emit<K extends FeedEventType>(userId: string, type: K, data: FeedEvents[K]) {
    return this.hub.append(userId, type, data);
  }
}
