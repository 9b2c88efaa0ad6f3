/**
 * UserQuota: one per user. Serializes the user's allocations so quota can never be
 * overrun: the check and the write of a `pending` row happen with no await between them,
 * and pending rows count as usage. Usage is always derived from the user's pending and
 * active rows, never kept as a separate counter that could drift.
 *
 * Allocation protocol (each step heals if the next never happens):
 *   1. write `pending` (quota held) with a deadline          → alarm aborts it at the deadline
 *   2. pool picks, device claims as `held`                    → device asks `verify` later, frees if unknown
 *   3. re-read row; `active` + event                          → aborted meanwhile: give the device back
 *   4. device.confirm                                          → missing: device's `verify` says active
 * A direct allocation runs all four from here (`allocate`). A pool handing over a device (a
 * queue entry, a reservation's start) runs step 1 here (`beginHandOver`), step 2 itself, and
 * steps 3-4 here (`finishHandOver`), so it never waits on a call that calls back into it.
 * An ended allocation is reported by the device's outbox (`deviceEnded`), and an active row
 * past its expiry is checked with the device by this object's alarm.
 *
 * Idle release: an allocation with an idle grace (its own or its pool's) is released with
 * reason `idle` once the user has had no feed socket open for that long. When the last
 * socket went is stored (`profile.sockets_gone_at`), so it survives hibernation and restarts.
 */
import { FeedObject } from "./FeedObject";
import {
  ALLOCATION,
  BILLING,
  DEFAULT_RENEW_DAYS,
  FEED,
  EXTEND_POLICIES,
  PAGING,
  PLAN_LIMITS,
  QUOTA_VALID_DAYS,
  billingAllowOnError,
  defaultPlan,
  type PlanTier,
  type QuotaLimits,
} from "../src/config";
import type { Env } from "../src/env";
import { fail, ok, type Failure, type Result } from "../src/errors";
import {
  checkAllocation,
  checkExtraHours,
  deviceHeadroom,
  periodStartFor,
  quotaStatus,
  renewedUntil,
  type QuotaState,
} from "../src/domain/quota";
import { checkExtend } from "../src/domain/extend";
import { durationMsOf } from "../src/domain/duration";
import { entryPriority, joinHash } from "../src/domain/queue";
import { bookingHash, checkReservation, checkWindow } from "../src/domain/reservation";
import { checkFunds, estimateOf, priceOf } from "../src/domain/pricing";
import { effectiveIdleGraceMs, idleDeadline, requestedIdleGraceMs } from "../src/domain/idle";
import { fundsFor, type Funds } from "../src/billing/ledger";
import { dbOf } from "../src/db/client";
import type {
  Allocation,
  AllocationStatus,
  DeviceSpec,
  EndReason,
  EndedAllocation,
  Quota,
  QuotaUsage,
  UsageRecord,
} from "../src/domain/types";
import { FeedHub, feedRequestOf, feedSocketsSchema, refuseSocket, type FeedHistory } from "../src/feed/hub";
import { socketReporter } from "../src/objects/operators";
import { CLOSE, type AllocationEventData, type Envelope, type FeedEvents, type FeedEventType } from "../src/feed/protocol";
import { AlarmClock, CachedRow, Sql } from "../src/sql";
import { decodeCursor, encodeCursor } from "../src/cursor";
import { newAllocationId } from "../src/ids";
import { log } from "../src/log";
import { take } from "../src/rpc";
import type {
  Verdict,
  Claimed,
  QueueEntryView,
  ReservationView,
  WindowCheck,
  AllocateInput,
  QueueJoinInput,
  ReserveInput,
  AllocationResult,
  ReleaseResult,
  QuotaUpdate,
} from "../src/contracts";

const SCHEMA = [
  `CREATE TABLE profile (
     id INTEGER PRIMARY KEY CHECK (id = 1), user_id TEXT NOT NULL, plan TEXT NOT NULL, suspended INTEGER NOT NULL,
     valid_until INTEGER NOT NULL, limits TEXT NOT NULL, period_start INTEGER NOT NULL, hours_used REAL NOT NULL,
     exceeded INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL);
   CREATE TABLE allocations (
     allocation_id TEXT PRIMARY KEY, device_id TEXT, pool TEXT NOT NULL, node TEXT, status TEXT NOT NULL,
     cpu INTEGER NOT NULL, mem INTEGER NOT NULL, storage INTEGER NOT NULL,
     allocated_at INTEGER, expires_at INTEGER, duration_minutes INTEGER NOT NULL, duration_ms INTEGER NOT NULL,
     booked_hours REAL NOT NULL, released_at INTEGER, duration_seconds INTEGER, reason TEXT,
     extend_count INTEGER NOT NULL DEFAULT 0, extended_minutes INTEGER NOT NULL DEFAULT 0, last_extended_at INTEGER,
     idem_key TEXT UNIQUE, idem_hash TEXT, deadline INTEGER, created_at INTEGER NOT NULL);
   CREATE INDEX allocations_status ON allocations(status, created_at);
   CREATE INDEX allocations_device ON allocations(device_id, status);
   CREATE INDEX allocations_created ON allocations(created_at);
   CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, data TEXT NOT NULL, ts INTEGER NOT NULL);`,
  // Billing events arrive at least once; their keys make the feed show each once.
  `CREATE TABLE event_keys (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts INTEGER NOT NULL);
   CREATE INDEX event_keys_ts ON event_keys(ts);
   CREATE INDEX allocations_released ON allocations(status, released_at);`,
  // The live feed: events carry their user (see src/feed/hub.ts); accepted ticket nonces.
  `ALTER TABLE events ADD COLUMN user_id TEXT NOT NULL DEFAULT '';
   CREATE INDEX events_user ON events(user_id, seq);
   ALTER TABLE event_keys RENAME TO events_keys;
   CREATE TABLE events_tickets (nonce TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);`,
  // Idle release: each allocation's grace (null: off); since when the user has had no feed socket.
  `ALTER TABLE allocations ADD COLUMN idle_ms INTEGER;
   ALTER TABLE profile ADD COLUMN sockets_gone_at INTEGER;`,
  // The open socket count last reported to the operators' metrics.
  feedSocketsSchema("events"),
];

interface ProfileRow {
  user_id: string;
  plan: PlanTier;
  suspended: number;
  valid_until: number;
  limits: string;
  period_start: number;
  hours_used: number;
  exceeded: number;
  updated_at: number;
  sockets_gone_at: number | null;
}
interface AllocRow {
  allocation_id: string;
  device_id: string | null;
  pool: string;
  node: string | null;
  status: AllocationStatus;
  cpu: number;
  mem: number;
  storage: number;
  allocated_at: number | null;
  expires_at: number | null;
  duration_minutes: number;
  duration_ms: number;
  booked_hours: number;
  released_at: number | null;
  duration_seconds: number | null;
  reason: EndReason | null;
  extend_count: number;
  extended_minutes: number;
  last_extended_at: number | null;
  idem_key: string | null;
  idem_hash: string | null;
  deadline: number | null;
  created_at: number;
  idle_ms: number | null;
}

/** An allocation past step 1: its pending row, the largest device its quota allows, the funds it was checked against. */
interface Begun {
  allocationId: string;
  durationMs: number;
  max: DeviceSpec;
  known: KnownFunds;
}

/** The user's funds for a check, and whether they are a balance read earlier and reused (see funds()). */
interface KnownFunds {
  funds: Funds | null;
  reused: boolean;
}

export class UserQuota extends FeedObject {
  private readonly sql: Sql;
  /** The user's event log and feed sockets. */
  protected readonly hub: FeedHub;
  /** Allocations still in steps 2-4, so a repeated idempotency key waits for the first. */
  private readonly inFlight = new Map<string, Promise<Result<AllocationResult>>>();
  private readonly clock: AlarmClock;
  /** The balance as last read from D1, when, and what allocations that ended since cost (see funds()). */
  private fundsSeen: { funds: Funds; at: number; spent: number } | null = null;
  /** The profile row (only this class writes it). */
  private readonly prof: CachedRow<ProfileRow>;
  /** Funds known at step 1 of hand-overs whose pool has not reported back yet. */
  private readonly handOvers = new Map<string, KnownFunds>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = new Sql(ctx.storage);
    this.prof = new CachedRow<ProfileRow>(this.sql, "SELECT * FROM profile WHERE id = 1");
    this.clock = new AlarmClock(ctx.storage);
    this.hub = new FeedHub(ctx, this.sql, {
      table: "events",
      limit: FEED.historyLimit,
      maxSockets: FEED.maxSocketsPerUser,
      defaultUserId: () => this.ownerId(),
      onSockets: socketReporter(env, ctx, "user"),
    });
    ctx.blockConcurrencyWhile(async () => {
      this.sql.migrate(SCHEMA);
      this.hub.start();
      await this.clock.load();
      await this.rearm();
    });
  }

  // ---- profile and usage ---------------------------------------------------------------

  /** A user appears by their token: the first call creates the default plan's quota. */
  private profile(userId: string): ProfileRow {
    let p = this.prof.get();
    const now = Date.now();
    if (!p) {
      const plan = defaultPlan(this.env);
      this.prof.write(
        "INSERT INTO profile (id, user_id, plan, suspended, valid_until, limits, period_start, hours_used, updated_at) VALUES (1, ?, ?, 0, ?, ?, ?, 0, ?)",
        userId,
        plan,
        now + QUOTA_VALID_DAYS * 86_400_000,
        JSON.stringify(PLAN_LIMITS[plan]),
        periodStartFor(now),
        now,
      );
      p = this.prof.get()!;
    }
    // A new period starts with no finished hours (active allocations keep their booking).
    const period = periodStartFor(now);
    if (p.period_start < period) {
      this.prof.write("UPDATE profile SET period_start = ?, hours_used = 0 WHERE id = 1", period);
      p = { ...p, period_start: period, hours_used: 0 };
    }
    return p;
  }

  private state(p: ProfileRow): QuotaState {
    return { suspended: p.suspended === 1, validUntil: p.valid_until, limits: JSON.parse(p.limits) as QuotaLimits };
  }

  /** Usage = the sum of pending and active allocations (+ finished hours of the period). */
  private usage(p: ProfileRow, excluding?: string): QuotaUsage {
    const u = this.sql.one<{
      n: number;
      cpu: number | null;
      mem: number | null;
      storage: number | null;
      hours: number | null;
    }>(
      `SELECT COUNT(*) AS n, SUM(cpu) AS cpu, SUM(mem) AS mem, SUM(storage) AS storage, SUM(booked_hours) AS hours
       FROM allocations WHERE status IN ('pending','active') AND allocation_id != ?`,
      excluding ?? "",
    )!;
    return {
      devices: u.n,
      cpuCores: u.cpu ?? 0,
      memoryMB: u.mem ?? 0,
      storageMB: u.storage ?? 0,
      deviceHours: p.hours_used + (u.hours ?? 0),
    };
  }

  private quota(p: ProfileRow): Quota {
    const usage = this.usage(p);
    const st = this.state(p);
    return {
      userId: p.user_id,
      plan: p.plan,
      status: quotaStatus(st, usage, Date.now()),
      suspended: st.suspended,
      validUntil: p.valid_until,
      limits: st.limits,
      periodStart: p.period_start,
      usage: { ...usage, deviceHours: Math.round(usage.deviceHours * 1000) / 1000 },
      updatedAt: p.updated_at,
    };
  }

  /** `quota.exceeded` once per crossing: a flag remembers we said it. */
  private noteQuotaStatus(p: ProfileRow): void {
    const q = this.quota(p);
    const over = q.status === "exceeded";
    if (over && !p.exceeded) {
      this.prof.write("UPDATE profile SET exceeded = 1 WHERE id = 1");
      this.emit(p.user_id, "quota.exceeded", { limits: q.limits, usage: q.usage });
    } else if (!over && p.exceeded) {
      this.prof.write("UPDATE profile SET exceeded = 0 WHERE id = 1");
    }
  }

  // ---- allocation --------------------------------------------------------------------------

  async allocate(input: AllocateInput): Promise<Result<AllocationResult>> {
    const begun = await this.begin(input);
    if (!("allocationId" in begun)) return begun;
    const run = this.completeAllocation(begun, input);
    this.inFlight.set(begun.allocationId, run);
    try {
      return await run;
    } finally {
      this.inFlight.delete(begun.allocationId);
    }
  }

  /**
   * A pool handing over a device (a queue entry, a reservation's start), step 1: the same checks
   * and pending row as an allocation; the pool then claims the device itself and reports with
   * `finishHandOver`. (Were the pool to call `allocate`, the claim would call back into the pool
   * mid-call.) A repeated key answers its first result, as for `allocate`.
   */
  async beginHandOver(
    input: AllocateInput,
  ): Promise<Result<AllocationResult> | { begun: { allocationId: string; durationMs: number; max: DeviceSpec } }> {
    const begun = await this.begin(input);
    if (!("allocationId" in begun)) return begun;
    this.handOvers.set(begun.allocationId, begun.known);
    // The pool may never report back: the pending row's deadline then aborts it (as after a crash).
    await this.clock.arm(Date.now() + ALLOCATION.intentTimeoutMs);
    return { begun: { allocationId: begun.allocationId, durationMs: begun.durationMs, max: begun.max } };
  }

  /** A pool's hand-over, step 2: the device it claimed (or why not). Steps 3 and 4 as for `allocate`. */
  async finishHandOver(input: AllocateInput, allocationId: string, claimed: Result<Claimed>): Promise<Result<AllocationResult>> {
    this.profile(input.userId);
    let known = this.handOvers.get(allocationId);
    this.handOvers.delete(allocationId);
    if (!known) {
      // Restarted since step 1: read the balance again.
      const funds = await this.funds(input.userId);
      known = funds.ok ? funds.value : { funds: null, reused: false };
    }
    const row = this.sql.one<AllocRow>("SELECT duration_ms FROM allocations WHERE allocation_id = ?", allocationId);
    return this.finishAllocation({ allocationId, durationMs: row?.duration_ms ?? 0, known }, input, claimed);
  }

  /**
   * Step 1 of an allocation: a repeated key's answer, a refusal, or the checks passed and the
   * pending row written (quota held) with no await between them.
   */
  private async begin(input: AllocateInput): Promise<Result<AllocationResult> | Begun> {
    this.profile(input.userId);
    const hash = requestHash(input);
    const replay = this.replayOf(input, hash);
    if (replay) return replay;
    let fresh = false;
    let funds: Result<KnownFunds>;
    let p: ProfileRow, now: number, st: QuotaState, usage: QuotaUsage;
    const durationMs = durationMsOf(input.durationMinutes, input.durationSeconds);
    const hours = durationMs / 3_600_000;
    for (;;) {
      // The balance is known before the synchronous check-and-write below (an await in
      // between would let other requests interleave), then everything is re-read.
      funds = await this.funds(input.userId, fresh);
      if (!funds.ok) return funds;
      const again = this.replayOf(input, hash);
      if (again) return again;
      p = this.profile(input.userId);
      now = Date.now();
      st = this.state(p);
      usage = this.usage(p);
      const refused = checkAllocation(st, usage, input.spec, hours, now) ?? this.fundsRefusal(funds.value.funds, input.spec, durationMs);
      if (!refused) break;
      // Never refused on a balance remembered from earlier: read it again and check again.
      if (refused.code === "INSUFFICIENT_BALANCE" && funds.value.reused && !fresh) {
        fresh = true;
        continue;
      }
      this.noteQuotaStatus(p);
      return refused;
    }
    const allocationId = newAllocationId(input.userId);
    this.sql.exec(
      `INSERT INTO allocations (allocation_id, pool, status, cpu, mem, storage, duration_minutes, duration_ms, booked_hours, idem_key, idem_hash, deadline, created_at, idle_ms)
       VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      allocationId,
      input.pool,
      input.spec.cpuCores,
      input.spec.memoryMB,
      input.spec.storageMB,
      input.durationMinutes,
      durationMs,
      hours,
      input.idempotencyKey ?? null,
      hash,
      now + ALLOCATION.intentTimeoutMs,
      now,
      requestedIdleGraceMs(input.idleReleaseMinutes, input.idleReleaseSeconds),
    );
    return { allocationId, durationMs, max: deviceHeadroom(st.limits, usage), known: funds.value };
  }

  /** A repeated idempotency key: the first request's answer, or null for a new request. */
  private replayOf(input: AllocateInput, hash: string): Result<AllocationResult> | Promise<Result<AllocationResult>> | null {
    if (!input.idempotencyKey) return null;
    const prior = this.sql.one<AllocRow>("SELECT * FROM allocations WHERE idem_key = ?", input.idempotencyKey);
    if (!prior) return null;
    if (prior.idem_hash !== hash)
      return fail(409, "IDEMPOTENCY_KEY_REUSED", "This idempotency key was used for a different request.", {
        idempotencyKey: input.idempotencyKey,
      });
    if (prior.status === "active" || prior.status === "released") return ok(this.result(input.userId, prior));
    const running = this.inFlight.get(prior.allocation_id);
    if (running) return running;
    return fail(409, "ALLOCATION_IN_PROGRESS", "An allocation with this idempotency key is still being set up; retry shortly.");
  }

  // ---- balance -----------------------------------------------------------------------------

  /**
   * The user's funds (the account opens with its starting credit on first use). A balance read
   * from D1 within `BILLING.balanceReuseMs` is used again, less the price of every allocation
   * that ended since (its charge cannot be in that balance yet; charges are never less): a D1
   * read is the largest single cost of an allocation, and a short D1 outage then does not stop
   * users whose balance is known. Top-ups, adjustments and plan changes forget it at once
   * (`fundsChanged`). `fresh` reads D1 (a refusal is never based on a remembered balance).
   * `funds: null` means unknown but allowed: BILLING_ALLOW_ON_ERROR is on and D1 did not answer.
   */
  private async funds(userId: string, fresh = false): Promise<Result<KnownFunds>> {
    const seen = this.fundsSeen;
    if (!fresh && seen && Date.now() - seen.at < BILLING.balanceReuseMs)
      return ok({ funds: { ...seen.funds, balance: seen.funds.balance - seen.spent }, reused: true });
    try {
      const at = Date.now();
      const funds = await fundsFor(dbOf(this.env), this.env, userId);
      // Allocations that ended from just before the read on are counted (markEnded adds later
      // ones); clocks of two objects may differ a little, and a margin only ever counts more.
      const ended = this.sql.all<{ cpu: number; mem: number; storage: number; duration_seconds: number }>(
        "SELECT cpu, mem, storage, duration_seconds FROM allocations WHERE status = 'released' AND reason != 'orphaned' AND released_at >= ?",
        at - ALLOCATION.clockMarginMs,
      );
      const spent = ended.reduce((sum, r) => sum + priceOf(funds, specOf(r), r.duration_seconds), 0);
      this.fundsSeen = { funds, at, spent };
      return ok({ funds, reused: false });
    } catch (err) {
      if (billingAllowOnError(this.env)) {
        log("warn", "balance unreadable; allowed by BILLING_ALLOW_ON_ERROR", { userId, error: String(err) });
        return ok({ funds: null, reused: false });
      }
      return fail(503, "BILLING_UNAVAILABLE", "Your balance could not be read, so nothing was changed. Try again shortly.", {
        cause: String(err).slice(0, 200),
      });
    }
  }

  /** Billing moved this user's balance or plan (top-up, adjustment, plan change): read it again next time. */
  async fundsChanged(): Promise<void> {
    this.fundsSeen = null;
  }

  /** What the user's pending and active allocations may still cost (charged when they end). */
  private committed(f: Funds, excluding?: string): number {
    const rows = this.sql.all<{ cpu: number; mem: number; storage: number; duration_ms: number }>(
      "SELECT cpu, mem, storage, duration_ms FROM allocations WHERE status IN ('pending','active') AND allocation_id != ?",
      excluding ?? "",
    );
    return rows.reduce((sum, r) => sum + estimateOf(f, specOf(r), r.duration_ms), 0);
  }

  private fundsRefusal(f: Funds | null, spec: DeviceSpec, durationMs: number, excluding?: string): Failure | null {
    return f ? checkFunds(f, this.committed(f, excluding), estimateOf(f, spec, durationMs)) : null;
  }

  private async completeAllocation(b: Begun, input: AllocateInput): Promise<Result<AllocationResult>> {
    // No alarm for the pending row's deadline: while this runs the alarm leaves the row alone
    // (inFlight), and after a crash the constructor re-arms for it. (An alarm write costs a commit.)
    let claimed: Result<Claimed>;
    try {
      claimed = (await take(
        this.env.DEVICE_POOL.getByName(input.pool).claim({
          allocationId: b.allocationId,
          userId: input.userId,
          pool: input.pool,
          min: input.spec,
          max: b.max,
          durationMs: b.durationMs,
          via: input.via,
        }),
      )) as Result<Claimed>;
    } catch (err) {
      // We cannot know whether a device holds it: abort, and a device holding it frees itself on `verify`.
      this.abortPending(b.allocationId);
      return fail(503, "POOL_UNAVAILABLE", "The device pool did not answer; nothing was allocated. Try again.", {
        cause: String(err),
      });
    }
    return this.finishAllocation(b, input, claimed);
  }

  /** Steps 3 and 4: the claimed device is recorded (quota and funds checked on its real spec) and confirmed. */
  private async finishAllocation(
    { allocationId, durationMs, known }: Omit<Begun, "max">,
    input: AllocateInput,
    claimed: Result<Claimed>,
  ): Promise<Result<AllocationResult>> {
    if (!claimed.ok) {
      this.sql.exec("DELETE FROM allocations WHERE allocation_id = ? AND status = 'pending'", allocationId);
      return claimed;
    }
    const c = claimed.value;
    // Step 3: state may have moved while we awaited (deadline passed, device ended it).
    // The chosen device may be larger than asked for: quota and funds are checked on its real spec.
    const recheck = (funds: Funds | null) => {
      const p = this.profile(input.userId);
      const row = this.sql.one<AllocRow>("SELECT * FROM allocations WHERE allocation_id = ?", allocationId);
      const refused =
        row?.status === "pending"
          ? (checkAllocation(this.state(p), this.usage(p, allocationId), c, durationMs / 3_600_000, Date.now()) ??
            this.fundsRefusal(funds, c, durationMs, allocationId))
          : null;
      return { row, refused };
    };
    let { row, refused: recheckRefused } = recheck(known.funds);
    if (recheckRefused?.code === "INSUFFICIENT_BALANCE" && known.reused) {
      // Not on a remembered balance: read it again (the device stays held meanwhile).
      const again = await this.funds(input.userId, true);
      if (again.ok) ({ row, refused: recheckRefused } = recheck(again.value.funds));
    }
    if (!row || row.status !== "pending" || recheckRefused) {
      this.abortPending(allocationId);
      await this.giveBack(c.deviceId, allocationId);
      return (
        recheckRefused ??
        fail(503, "ALLOCATION_ABORTED", "The allocation could not be completed in time; nothing was allocated. Try again.")
      );
    }
    const idleMs = effectiveIdleGraceMs(row.idle_ms, c.idleReleaseSeconds == null ? null : c.idleReleaseSeconds * 1000);
    const done: AllocRow = {
      ...row,
      status: "active",
      device_id: c.deviceId,
      node: c.node,
      cpu: c.cpuCores,
      mem: c.memoryMB,
      storage: c.storageMB,
      allocated_at: c.allocatedAt,
      expires_at: c.expiresAt,
      deadline: null,
      idle_ms: idleMs,
    };
    this.sql.tx(() => {
      this.sql.exec(
        `UPDATE allocations SET status = 'active', device_id = ?, node = ?, cpu = ?, mem = ?, storage = ?, allocated_at = ?, expires_at = ?, deadline = NULL, idle_ms = ?
         WHERE allocation_id = ?`,
        c.deviceId,
        c.node,
        c.cpuCores,
        c.memoryMB,
        c.storageMB,
        c.allocatedAt,
        c.expiresAt,
        idleMs,
        allocationId,
      );
      this.emit(input.userId, "device.allocated", this.eventData(done));
      this.noteQuotaStatus(this.profile(input.userId));
    });
    log("info", "allocation active", {
      userId: input.userId,
      allocationId,
      deviceId: c.deviceId,
      pool: c.pool,
      expiresAt: iso(c.expiresAt),
    });
    // The overdue check of this allocation (an idle grace needs the full computation).
    if (idleMs === null) await this.clock.arm(c.expiresAt + ALLOCATION.overdueGraceMs);
    else await this.rearm();
    try {
      await take(this.env.DEVICE.getByName(c.deviceId).confirm(allocationId));
    } catch {
      // The device asks `verify` at its confirm deadline and learns the same.
    }
    return ok(this.result(input.userId, done));
  }

  private abortPending(allocationId: string): void {
    this.sql.exec(
      "UPDATE allocations SET status = 'aborted', deadline = NULL, idem_key = NULL WHERE allocation_id = ? AND status = 'pending'",
      allocationId,
    );
  }

  private async giveBack(deviceId: string, allocationId: string): Promise<void> {
    try {
      await take(this.env.DEVICE.getByName(deviceId).abort(allocationId));
    } catch {
      // The device's own confirm check frees it.
    }
  }

  /** Asked by a device about a claim it holds: does this user know the allocation? */
  async verify(allocationId: string, deviceId: string): Promise<Verdict> {
    const row = this.sql.one<AllocRow>("SELECT * FROM allocations WHERE allocation_id = ?", allocationId);
    if (!row || row.status === "aborted") return "unknown";
    if (row.status === "pending") {
      if (row.deadline !== null && row.deadline > Date.now()) return "pending";
      this.abortPending(allocationId);
      return "unknown";
    }
    if (row.device_id !== deviceId) return "unknown";
    return row.status === "active" ? "active" : "ended";
  }

  // ---- waiting queue and reservations (held by the pool; checked here first) -------------------

  /**
   * Joins the pool's waiting queue. The same checks as an allocation run now (a request that
   * would be refused at hand-over is refused at once) and again when a device is handed over.
   */
  async joinQueue(input: QueueJoinInput): Promise<Result<QueueEntryView>> {
    const p = this.profile(input.userId);
    const priority = entryPriority(p.plan, input.priority, input.byAdmin !== null);
    if (typeof priority !== "number") return priority;
    const pool = this.env.DEVICE_POOL.getByName(input.pool);
    // A repeat answers the first entry, before any check (the first may have taken the last free quota).
    if (input.idempotencyKey) {
      const prior = await take(
        pool.priorRequest("queue", input.userId, input.idempotencyKey, joinHash({ ...input, priority, min: input.spec })),
      );
      if (prior) return prior as Result<QueueEntryView>;
    }
    const durationMs = durationMsOf(input.durationMinutes, input.durationSeconds);
    let max: DeviceSpec = input.spec;
    const funds = await this.checkedFunds(input.userId, (f) => {
      const now = this.profile(input.userId);
      const usage = this.usage(now);
      max = deviceHeadroom(this.state(now).limits, usage);
      return (
        checkAllocation(this.state(now), usage, input.spec, durationMs / 3_600_000, Date.now()) ??
        this.fundsRefusal(f, input.spec, durationMs)
      );
    });
    if (!funds.ok) return funds;
    return (await take(
      pool.join({
        userId: input.userId,
        pool: input.pool,
        priority,
        min: input.spec,
        max,
        durationMinutes: input.durationMinutes,
        durationSeconds: input.durationSeconds,
        maxWaitMinutes: input.maxWaitMinutes,
        maxWaitSeconds: input.maxWaitSeconds,
        createdBy: input.byAdmin ?? input.userId,
        idempotencyKey: input.idempotencyKey,
      }),
    )) as Result<QueueEntryView>;
  }

  /** Books a future window in the pool (quota status, per-device limits and balance checked now; everything again at the start). */
  async reserve(input: ReserveInput): Promise<Result<ReservationView>> {
    this.profile(input.userId);
    const durationMs = durationMsOf(input.durationMinutes, input.durationSeconds);
    const pool = this.env.DEVICE_POOL.getByName(input.pool);
    const booking = {
      min: input.spec,
      startAt: input.startAt,
      endAt: input.startAt + durationMs,
      durationMinutes: input.durationMinutes,
      reminderMinutes: input.reminderMinutes,
    };
    // A repeat answers the first reservation, before any check (its start may have passed since).
    if (input.idempotencyKey) {
      const prior = await take(pool.priorRequest("reservation", input.userId, input.idempotencyKey, bookingHash(booking)));
      if (prior) return prior as Result<ReservationView>;
    }
    const badWindow = checkWindow(input.startAt, input.startAt + durationMs, Date.now());
    if (badWindow) return badWindow;
    const funds = await this.checkedFunds(
      input.userId,
      (f) =>
        checkReservation(this.state(this.profile(input.userId)), input.spec, durationMs / 3_600_000, input.startAt) ??
        this.fundsRefusal(f, input.spec, durationMs),
    );
    if (!funds.ok) return funds;
    return (await take(
      pool.book({
        ...booking,
        userId: input.userId,
        pool: input.pool,
        max: this.perDeviceMax(input.userId),
        createdBy: input.byAdmin ?? input.userId,
        idempotencyKey: input.idempotencyKey,
      }),
    )) as Result<ReservationView>;
  }

  /** Would a booking of this window get a device (within this user's per-device limits)? */
  async checkReservationWindow(
    input: Pick<ReserveInput, "userId" | "pool" | "startAt" | "spec"> & { endAt: number },
  ): Promise<Result<WindowCheck>> {
    return (await take(
      this.env.DEVICE_POOL.getByName(input.pool).checkWindow({
        userId: input.userId,
        pool: input.pool,
        min: input.spec,
        max: this.perDeviceMax(input.userId),
        startAt: input.startAt,
        endAt: input.endAt,
      }),
    )) as Result<WindowCheck>;
  }

  private perDeviceMax(userId: string): DeviceSpec {
    const L = this.state(this.profile(userId)).limits;
    return { cpuCores: L.maxCpuCoresPerDevice, memoryMB: L.maxMemoryMBPerDevice, storageMB: L.maxStorageMBPerDevice };
  }

  /** Funds for a check that may refuse: a refusal on a remembered balance reads it again first. */
  private async checkedFunds(userId: string, check: (f: Funds | null) => Failure | null): Promise<Result<KnownFunds>> {
    for (let fresh = false; ; fresh = true) {
      const funds = await this.funds(userId, fresh);
      if (!funds.ok) return funds;
      const refused = check(funds.value.funds);
      if (!refused) return funds;
      if (refused.code === "INSUFFICIENT_BALANCE" && funds.value.reused && !fresh) continue;
      return refused;
    }
  }

  // ---- release, end, extend ------------------------------------------------------------------

  async release(userId: string, deviceId: string, reason: EndReason = "released"): Promise<Result<ReleaseResult>> {
    this.profile(userId);
    const row = this.sql.one<AllocRow>("SELECT * FROM allocations WHERE device_id = ? AND status = 'active'", deviceId);
    if (!row) return fail(404, "ALLOCATION_NOT_FOUND", `You hold no active allocation on device ${deviceId}.`, { deviceId });
    const r = await this.endOnDevice(row, reason);
    return r.ok ? ok(releaseResult(r.value)) : r;
  }

  /** Ends an active allocation at its device, then here (release and idle release). */
  private async endOnDevice(row: AllocRow, reason: EndReason): Promise<Result<EndedAllocation>> {
    let r: Result<EndedAllocation>;
    try {
      r = (await take(this.env.DEVICE.getByName(row.device_id!).end(row.allocation_id, reason))) as Result<EndedAllocation>;
    } catch (err) {
      return fail(503, "DEVICE_UNAVAILABLE", "The device did not answer; the allocation is unchanged. Try again.", {
        cause: String(err),
      });
    }
    if (!r.ok) {
      if (r.code === "ALLOCATION_NOT_FOUND")
        this.markEnded({
          allocationId: row.allocation_id,
          deviceId: row.device_id!,
          userId: this.ownerId(),
          allocatedAt: row.allocated_at!,
          releasedAt: Date.now(),
          durationSeconds: 0,
          reason: "orphaned",
        });
      return r;
    }
    this.markEnded(r.value);
    return r;
  }

  /** From a device (outbox or admin path): an allocation ended. Idempotent. */
  async deviceEnded(ended: EndedAllocation): Promise<void> {
    this.profile(ended.userId);
    this.markEnded(ended);
  }

  /** From a device: an event about an allocation of this user (e.g. `device.expiring`). */
  async deviceEvent(type: "device.expiring", data: FeedEvents["device.expiring"]): Promise<void> {
    const row = this.sql.one<AllocRow>("SELECT status FROM allocations WHERE allocation_id = ?", data.allocationId);
    // A warning for an allocation already over says nothing useful.
    if (row && row.status !== "active") return;
    this.emit(this.ownerId(), type, data);
  }

  /** The user this object belongs to (set by the first call, which always names them). */
  private ownerId(): string {
    return this.sql.one<{ user_id: string }>("SELECT user_id FROM profile WHERE id = 1")?.user_id ?? "";
  }

  private markEnded(e: EndedAllocation): void {
    const ended = this.sql.tx(() => {
      const row = this.sql.one<Pick<AllocRow, "status" | "pool" | "cpu" | "mem" | "storage">>(
        "SELECT status, pool, cpu, mem, storage FROM allocations WHERE allocation_id = ?",
        e.allocationId,
      );
      if (!row) return null;
      if (row.status === "pending") {
        this.abortPending(e.allocationId);
        return null;
      }
      if (row.status !== "active") return null;
      this.sql.exec(
        "UPDATE allocations SET status = 'released', released_at = ?, duration_seconds = ?, reason = ?, booked_hours = 0 WHERE allocation_id = ?",
        e.releasedAt,
        e.durationSeconds,
        e.reason,
        e.allocationId,
      );
      this.prof.write("UPDATE profile SET hours_used = hours_used + ? WHERE id = 1", e.durationSeconds / 3600);
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
    if (ended)
      log("info", "allocation ended", {
        userId: e.userId,
        allocationId: e.allocationId,
        deviceId: e.deviceId,
        pool: ended.pool,
        reason: e.reason,
        durationSeconds: e.durationSeconds,
      });
    // Its charge is not in a balance read before now: a reused balance counts it (see funds()).
    const seen = this.fundsSeen;
    if (ended && seen && e.reason !== "orphaned" && e.releasedAt >= seen.at - ALLOCATION.clockMarginMs)
      seen.spent += priceOf(seen.funds, specOf(ended), e.durationSeconds);
  }

  async extend(
    userId: string,
    allocationId: string,
    additionalMinutes: number,
  ): Promise<Result<AllocationResult & { extendCount: number; extendedMinutes: number }>> {
    this.profile(userId);
    const found = this.activeRow(allocationId);
    if (!found.ok) return found;
    let row!: AllocRow;
    let now!: number;
    const funds = await this.checkedFunds(userId, (f) => {
      const p = this.profile(userId);
      const current = this.activeRow(allocationId);
      if (!current.ok) return current;
      row = current.value;
      now = Date.now();
      return (
        checkExtend(
          EXTEND_POLICIES[p.plan],
          {
            extendCount: row.extend_count,
            extendedMinutes: row.extended_minutes,
            lastExtendedAt: row.last_extended_at,
          },
          additionalMinutes,
          now,
        ) ??
        checkExtraHours(this.state(p), this.usage(p), additionalMinutes / 60, now) ??
        (f ? checkFunds(f, this.committed(f), estimateOf(f, specOf(row), additionalMinutes * 60_000)) : null)
      );
    });
    if (!funds.ok) return funds;
    const expiresAt = row.expires_at! + additionalMinutes * 60_000;
    // Book first (quota held), then move the device's alarm; undo the booking if the device refuses.
    this.sql.exec(
      `UPDATE allocations SET expires_at = ?, duration_minutes = duration_minutes + ?, duration_ms = duration_ms + ?, booked_hours = booked_hours + ?,
         extend_count = extend_count + 1, extended_minutes = extended_minutes + ?, last_extended_at = ? WHERE allocation_id = ?`,
      expiresAt,
      additionalMinutes,
      additionalMinutes * 60_000,
      additionalMinutes / 60,
      additionalMinutes,
      now,
      allocationId,
    );
    let r: Result<{ expiresAt: number }>;
    const info = {
      additionalMinutes,
      extendCount: row.extend_count + 1,
      extendedMinutes: row.extended_minutes + additionalMinutes,
      durationMinutes: row.duration_minutes + additionalMinutes,
    };
    try {
      r = (await take(this.env.DEVICE.getByName(row.device_id!).extend(allocationId, expiresAt, info))) as Result<{
        expiresAt: number;
      }>;
    } catch (err) {
      r = fail(503, "DEVICE_UNAVAILABLE", "The device did not answer; the allocation is unchanged. Try again.", {
        cause: String(err),
      });
    }
    if (!r.ok) {
      this.sql.exec(
        `UPDATE allocations SET expires_at = ?, duration_minutes = ?, duration_ms = ?, booked_hours = ?, extend_count = ?, extended_minutes = ?, last_extended_at = ?
         WHERE allocation_id = ? AND status = 'active'`,
        row.expires_at,
        row.duration_minutes,
        row.duration_ms,
        row.booked_hours,
        row.extend_count,
        row.extended_minutes,
        row.last_extended_at,
        allocationId,
      );
      return r;
    }
    await this.rearm();
    const next = this.sql.one<AllocRow>("SELECT * FROM allocations WHERE allocation_id = ?", allocationId)!;
    this.emit(userId, "device.extended", {
      ...this.eventData(next),
      additionalMinutes,
      extendCount: next.extend_count,
      extendedMinutes: next.extended_minutes,
    });
    this.noteQuotaStatus(this.profile(userId));
    return ok({ ...this.result(userId, next), extendCount: next.extend_count, extendedMinutes: next.extended_minutes });
  }

  private activeRow(allocationId: string): Result<AllocRow> {
    const row = this.sql.one<AllocRow>("SELECT * FROM allocations WHERE allocation_id = ?", allocationId);
    if (!row || row.status === "aborted" || row.status === "pending") return allocationNotFound(allocationId);
    if (row.status !== "active") return fail(409, "ALLOCATION_ENDED", "The allocation has already ended.", { allocationId });
    return ok(row);
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
    const [aAt, aId] = after ? decodeCursor(after) : [from, ""];
    const rows = this.sql.all<AllocRow>(
      `SELECT * FROM allocations WHERE status = 'released' AND reason != 'orphaned' AND released_at < ?
         AND (released_at > ? OR (released_at = ? AND allocation_id > ?)) ORDER BY released_at, allocation_id LIMIT ?`,
      to,
      aAt,
      aAt,
      aId,
      limit + 1,
    );
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return {
      records: page.map((r) => ({
        allocationId: r.allocation_id,
        deviceId: r.device_id!,
        userId,
        durationSeconds: r.duration_seconds ?? 0,
        cpuCores: r.cpu,
        memoryMB: r.mem,
        storageMB: r.storage,
        allocatedAt: r.allocated_at!,
        releasedAt: r.released_at!,
        reason: r.reason!,
      })),
      next: rows.length > limit && last ? encodeCursor(last.released_at!, last.allocation_id) : null,
    };
  }

  // ---- reads --------------------------------------------------------------------------------

  async getAllocation(userId: string, allocationId: string): Promise<Result<Allocation>> {
    this.profile(userId);
    const row = this.sql.one<AllocRow>("SELECT * FROM allocations WHERE allocation_id = ?", allocationId);
    if (!row || row.status === "aborted") return allocationNotFound(allocationId);
    return ok(this.view(userId, row));
  }

  async listAllocations(
    userId: string,
    opts: { status?: AllocationStatus; cursor?: string; limit?: number },
  ): Promise<Result<{ items: Allocation[]; nextCursor: string | null }>> {
    this.profile(userId);
    const limit = Math.min(opts.limit ?? PAGING.defaultLimit, PAGING.maxLimit);
    const [cAt, cId] = decodeCursor(opts.cursor);
    const rows = this.sql.all<AllocRow>(
      `SELECT * FROM allocations WHERE status != 'aborted' ${opts.status ? "AND status = ?" : ""}
         AND (created_at < ? OR (created_at = ? AND allocation_id < ?)) ORDER BY created_at DESC, allocation_id DESC LIMIT ?`,
      ...[...(opts.status ? [opts.status] : []), cAt, cAt, cId, limit + 1],
    );
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return ok({
      items: page.map((r) => this.view(userId, r)),
      nextCursor: rows.length > limit && last ? encodeCursor(last.created_at, last.allocation_id) : null,
    });
  }

  async getQuota(userId: string): Promise<Quota> {
    return this.quota(this.profile(userId));
  }

  async events(userId: string, since = 0, limit = 100): Promise<FeedHistory> {
    this.profile(userId);
    return this.hub.history(since, limit);
  }

  // ---- the feed ----------------------------------------------------------------------------------

  /** A feed socket for this user (the Worker checked the ticket; single use is checked here). */
  override async fetch(request: Request): Promise<Response> {
    const f = feedRequestOf(request);
    if (f instanceof Response) return f;
    const owner = this.profile(f.userId).user_id;
    if (f.feed !== "user" || owner !== f.userId) return refuseSocket(CLOSE.forbidden, "FORBIDDEN", "This ticket is not for this feed.");
    const res = this.hub.admit(f);
    // The user is back: no idle clock runs while a socket is open (the alarm finds nothing due).
    if (this.hub.open("user").length > 0) this.prof.write("UPDATE profile SET sockets_gone_at = NULL WHERE id = 1");
    return res;
  }

  /** The last socket went: the idle clock of idle-release allocations starts now. */
  protected override async socketClosed(ws: WebSocket): Promise<void> {
    if (this.hub.open("user", ws).length > 0) return;
    this.prof.write("UPDATE profile SET sockets_gone_at = COALESCE(sockets_gone_at, ?) WHERE id = 1", Date.now());
    await this.rearm();
  }

  // ---- admin -----------------------------------------------------------------------------------

  async updateQuota(userId: string, update: QuotaUpdate): Promise<Result<Quota>> {
    const p = this.profile(userId);
    const plan = update.plan ?? p.plan;
    // A plan change without explicit limits takes that plan's limits.
    const base: QuotaLimits = update.plan && update.plan !== p.plan ? PLAN_LIMITS[plan] : (JSON.parse(p.limits) as QuotaLimits);
    const limits = { ...base, ...update.limits };
    this.sql.tx(() => {
      this.prof.write(
        "UPDATE profile SET plan = ?, limits = ?, suspended = ?, valid_until = ?, updated_at = ? WHERE id = 1",
        plan,
        JSON.stringify(limits),
        update.suspended === undefined ? p.suspended : update.suspended ? 1 : 0,
        update.validUntil ?? p.valid_until,
        Date.now(),
      );
      const next = this.profile(userId);
      this.emit(userId, "quota.updated", { ...this.quota(next) });
      this.noteQuotaStatus(next);
    });
    return ok(this.quota(this.profile(userId)));
  }

  async renew(userId: string, days = DEFAULT_RENEW_DAYS): Promise<Result<Quota>> {
    const p = this.profile(userId);
    const validUntil = renewedUntil(p.valid_until, days, Date.now());
    this.sql.tx(() => {
      this.prof.write("UPDATE profile SET valid_until = ?, updated_at = ? WHERE id = 1", validUntil, Date.now());
      this.emit(userId, "quota.renewed", { validUntil: iso(validUntil), extensionDays: days });
    });
    return ok(this.quota(this.profile(userId)));
  }

  // ---- alarm: aborts stale pending rows, checks overdue active ones ------------------------------

  override async alarm(): Promise<void> {
    this.clock.fired();
    const now = Date.now();
    const stale = this.sql.all<{ allocation_id: string }>(
      "SELECT allocation_id FROM allocations WHERE status = 'pending' AND deadline <= ?",
      now,
    );
    for (const s of stale) if (!this.inFlight.has(s.allocation_id)) this.abortPending(s.allocation_id);
    const overdue = this.sql.all<AllocRow>(
      "SELECT * FROM allocations WHERE status = 'active' AND expires_at <= ? LIMIT 50",
      now - ALLOCATION.overdueGraceMs,
    );
    for (const row of overdue) {
      try {
        const r = (await take(this.env.DEVICE.getByName(row.device_id!).check(row.allocation_id))) as Result<
          { state: "active"; expiresAt: number } | { state: "ended"; ended: EndedAllocation }
        >;
        if (r.ok && r.value.state === "ended") this.markEnded(r.value.ended);
        else if (r.ok && r.value.state === "active")
          this.sql.exec(
            "UPDATE allocations SET expires_at = ? WHERE allocation_id = ? AND status = 'active'",
            r.value.expiresAt,
            row.allocation_id,
          );
        else if (!r.ok && r.code === "ALLOCATION_NOT_FOUND")
          this.markEnded({
            allocationId: row.allocation_id,
            deviceId: row.device_id!,
            userId: this.ownerId(),
            allocatedAt: row.allocated_at!,
            releasedAt: now,
            durationSeconds: 0,
            reason: "orphaned",
          });
      } catch {
        // Device unreachable: the next alarm tries again.
      }
    }
    // Re-checked before each one: a socket that opened meanwhile stops the rest.
    const tried = new Set<string>();
    for (;;) {
      const due = this.idleDeadlines(Date.now()).find((x) => !x.recheck && x.at <= Date.now() && !tried.has(x.row.allocation_id));
      if (!due) break;
      tried.add(due.row.allocation_id);
      // Same path as a release; a failure leaves it active and the next alarm tries again.
      await this.endOnDevice(due.row, "idle");
    }
    await this.rearm(true);
  }

  /**
   * Active idle-release allocations and when each is due. While a socket is open nothing is
   * due, but the alarm looks again one grace later: a restart can drop sockets without a
   * close event, and then only a wake-up notices they are gone (release ≤ 2 graces late).
   */
  private idleDeadlines(now: number): { row: AllocRow; at: number; recheck?: true }[] {
    const rows = this.sql.all<AllocRow>("SELECT * FROM allocations WHERE status = 'active' AND idle_ms IS NOT NULL");
    if (rows.length === 0) return [];
    const openSockets = this.hub.open("user").length;
    let goneAt = this.sql.one<{ t: number | null }>("SELECT sockets_gone_at AS t FROM profile WHERE id = 1")?.t ?? null;
    if (openSockets === 0 && goneAt === null) {
      // No socket and no record of when it went (a restart dropped them): the clock starts now.
      goneAt = now;
      this.prof.write("UPDATE profile SET sockets_gone_at = ? WHERE id = 1", now);
    }
    return rows.flatMap((row) => {
      if (openSockets > 0)
        return row.idle_ms && now + row.idle_ms < row.expires_at! ? [{ row, at: now + row.idle_ms, recheck: true as const }] : [];
      const at = idleDeadline({
        openSockets,
        goneAt,
        allocatedAt: row.allocated_at!,
        expiresAt: row.expires_at!,
        graceMs: row.idle_ms,
        now,
      });
      return at === null ? [] : [{ row, at }];
    });
  }

  private async rearm(fromAlarm = false): Promise<void> {
    const now = Date.now();
    const t = this.sql.one<{ pending: number | null; active: number | null }>(
      `SELECT (SELECT MIN(deadline) FROM allocations WHERE status = 'pending') AS pending,
              (SELECT MIN(expires_at) FROM allocations WHERE status = 'active') AS active`,
    )!;
    const times = [t.pending, t.active === null ? null : t.active + ALLOCATION.overdueGraceMs, ...this.idleDeadlines(now).map((x) => x.at)]
      .filter((x): x is number => x !== null)
      // From the alarm, what is still due failed (e.g. the device did not answer): retry shortly, not in a tight loop.
      .map((x) => (fromAlarm && x <= now ? now + ALLOCATION.notifyRetryMs : x));
    if (times.length === 0) return;
    await this.clock.arm(Math.min(...times));
  }

  // ---- events and views ----------------------------------------------------------------------

  /** Appends to the user's feed (bounded log, sent to open sockets once the write is done). */
  protected emit<K extends FeedEventType>(userId: string, type: K, data: FeedEvents[K]) {
    return this.hub.append(userId, type, data);
  }

  private eventData(r: AllocRow): AllocationEventData {
    return {
      allocationId: r.allocation_id,
      deviceId: r.device_id,
      pool: r.pool,
      node: r.node,
      cpuCores: r.cpu,
      memoryMB: r.mem,
      storageMB: r.storage,
      allocatedAt: iso(r.allocated_at!),
      expiresAt: iso(r.expires_at!),
      durationMinutes: r.duration_minutes,
    };
  }

  private result(userId: string, r: AllocRow): AllocationResult {
    return {
      allocationId: r.allocation_id,
      deviceId: r.device_id!,
      userId,
      pool: r.pool,
      node: r.node ?? "",
      cpuCores: r.cpu,
      memoryMB: r.mem,
      storageMB: r.storage,
      allocatedAt: iso(r.allocated_at!),
      expiresAt: iso(r.expires_at!),
      durationMinutes: r.duration_minutes,
      ...(r.idle_ms === null ? {} : { idleReleaseSeconds: r.idle_ms / 1000 }),
    };
  }

  private view(userId: string, r: AllocRow): Allocation & { idleReleaseSeconds: number | null } {
    return {
      allocationId: r.allocation_id,
      userId,
      deviceId: r.device_id,
      pool: r.pool,
      status: r.status,
      cpuCores: r.cpu,
      memoryMB: r.mem,
      storageMB: r.storage,
      allocatedAt: r.allocated_at,
      expiresAt: r.expires_at,
      durationMinutes: r.duration_minutes,
      releasedAt: r.released_at,
      durationSeconds: r.duration_seconds,
      reason: r.reason,
      extendCount: r.extend_count,
      extendedMinutes: r.extended_minutes,
      idempotencyKey: r.idem_key,
      idleReleaseSeconds: r.idle_ms === null ? null : r.idle_ms / 1000,
    };
  }
}

const iso = (t: number) => new Date(t).toISOString();

/** The spec an allocation row holds. */
const specOf = (r: { cpu: number; mem: number; storage: number }): DeviceSpec => ({
  cpuCores: r.cpu,
  memoryMB: r.mem,
  storageMB: r.storage,
});

function releaseResult(e: EndedAllocation): ReleaseResult {
  return {
    allocationId: e.allocationId,
    deviceId: e.deviceId,
    userId: e.userId,
    allocatedAt: iso(e.allocatedAt),
    releasedAt: iso(e.releasedAt),
    durationSeconds: e.durationSeconds,
    reason: e.reason,
  };
}

function allocationNotFound(allocationId: string): Failure {
  return fail(404, "ALLOCATION_NOT_FOUND", "No such allocation.", { allocationId });
}

/** Same request ⇔ same hash, so a reused key with other parameters is caught. */
function requestHash(i: AllocateInput): string {
  const idle = requestedIdleGraceMs(i.idleReleaseMinutes, i.idleReleaseSeconds);
  // Without an idle grace the hash is what it was before the field existed (stored keys still match).
  return JSON.stringify([
    i.pool,
    i.durationMinutes,
    i.durationSeconds ?? null,
    i.spec.cpuCores,
    i.spec.memoryMB,
    i.spec.storageMB,
    ...(idle === null ? [] : [idle]),
  ]);
}
