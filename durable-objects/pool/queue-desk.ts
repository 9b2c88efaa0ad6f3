/**
 * The pool's waiting queue, composed into DevicePool: joins (the pool is the front door: the
 * user's object only checks the request), reads and cancels, and the dispatch that offers freed
 * devices to waiting entries in queue order and hands them over. Rows live in QueueStore.
 */
import { PAGING, QUEUE } from "../../src/config";
import type { QueueEntryView, QueueJoin, QueueJoinInput, QueueStatus, Viewer } from "../../src/contracts";
import { joinHash } from "../../src/domain/queue";
import { roomRefusal } from "../../src/domain/quota";
import type { DeviceSpec } from "../../src/domain/types";
import { fail, ok, type Failure, type Result } from "../../src/errors";
import type { QueueEventData } from "../../src/feed/protocol";
import { log } from "../../src/log";
import { take } from "../../src/rpc";
import { iso } from "../../src/domain/time";
import { boundsOf, type QueueRow } from "../../src/stores/pool-queue";
import type { PoolContext } from "./context";
import { DEVICE_RACES, isFinalRefusal, type HandOver } from "./handover";

/** Who asks: a user sees only their own entries and reservations (others' are "not found"). */
export const sees = (v: Viewer, owner: string) => v.admin || v.userId === owner;

export class QueueDesk {
  /** The running dispatch, and whether something changed while it ran (run again). */
  private dispatching = false;
  private again = false;
  /** Callers waiting for the next dispatch round to finish. */
  private readonly waiters: (() => void)[] = [];
  /** Devices with a claim in flight (the offer round leaves them alone). */
  readonly inFlight = new Set<string>();

  constructor(
    private readonly p: PoolContext,
    private readonly handOver: HandOver,
  ) {}

  /**
   * A new entry. The user's object checks it first (priority from the plan, quota and balance;
   * all again at hand-over); a repeated idempotency key answers the first entry before any of
   * those refusals. If a fitting device is free it is handed over before this returns.
   */
  async join(input: QueueJoinInput): Promise<Result<QueueEntryView>> {
    const checked = (await take(this.p.env.USER_QUOTA.getByName(input.userId).queueCheck(input))) as Result<{
      priority: number;
      max: DeviceSpec;
      bound: number;
      refusal: Failure | null;
    }>;
    if (!checked.ok) return checked;
    const { priority, max, bound, refusal } = checked.value;
    const j: QueueJoin = {
      ...input,
      priority,
      min: input.spec,
      max,
      createdBy: input.byAdmin ?? input.userId,
    };
    const keyed = input.idempotencyKey ? { key: input.idempotencyKey, hash: joinHash(j) } : null;
    const prior = keyed && this.prior(input.userId, keyed.key, keyed.hash);
    if (prior) return prior;
    if (refusal) return refusal;
    const missing = this.p.index.missing(j.pool);
    if (missing) return missing;
    this.p.index.settings(j.pool);
    if (this.p.index.matching(j.min, j.max, true) === 0) {
      // Devices that match but are all above the quota's room per device: the quota is the reason.
      const above = this.p.index.inServiceAbove(j.min);
      if (above.smallest) return roomRefusal("in service", j.pool, j.min, j.max, above.count, above.smallest);
      return fail(
        409,
        "NO_MATCHING_DEVICE",
        `No device in pool "${j.pool}" that is in service matches the request, so waiting would never end.`,
        { pool: j.pool, spec: j.min },
      );
    }
    const before = (keyed && this.prior(input.userId, keyed.key, keyed.hash)) || this.limit(input.userId, bound);
    if (before) return before;
    const { entryId, waitUntil } = this.p.queue.insert(j, Date.now());
    await this.p.clock.arm(waitUntil);
    await this.dispatch();
    return ok(this.view(this.p.queue.row(entryId)!));
  }

  /** A repeated idempotency key's first entry (or the refusal of a key used for another request); null: new. */
  private prior(userId: string, key: string, hash: string): Result<QueueEntryView> | null {
    const row = this.p.queue.byKey(userId, key);
    if (!row) return null;
    if (row.idem_hash !== hash)
      return fail(409, "IDEMPOTENCY_KEY_REUSED", "This idempotency key was used for a different request.", { idempotencyKey: key });
    return ok(this.view(row));
  }

  /** At most `max` waiting entries per user in this pool (their plan's PLAN_BOUNDS). */
  private limit(userId: string, max: number): Failure | null {
    const open = this.p.queue.openFor(userId);
    return open >= max
      ? fail(409, "QUEUE_LIMIT", `You already have ${open} entries waiting in pool "${this.p.pool()}" (at most ${max}).`, { limit: max })
      : null;
  }

  entry(entryId: string, viewer: Viewer): Result<QueueEntryView> {
    const row = this.p.queue.row(entryId);
    if (!row || !sees(viewer, row.user_id)) return fail(404, "QUEUE_ENTRY_NOT_FOUND", "No such queue entry.", { entryId });
    return ok(this.view(row));
  }

  /** A user's entries (an admin without `userId`: everyone's), newest first; waiting ones carry their position. */
  list(
    viewer: Viewer,
    opts: { userId?: string; status?: QueueStatus; limit?: number },
  ): Result<{ items: QueueEntryView[]; waiting: number }> {
    const who = viewer.admin ? opts.userId : viewer.userId;
    const rows = this.p.queue.list(who, opts.status, Math.min(opts.limit ?? PAGING.defaultLimit, PAGING.maxLimit));
    return ok({ items: rows.map((r) => this.view(r)), waiting: this.p.queue.open() });
  }

  /** Leaves the queue. An entry whose hand-over call is running right now cannot be cancelled (release the device instead). */
  async cancel(entryId: string, viewer: Viewer): Promise<Result<QueueEntryView>> {
    const row = this.p.queue.row(entryId);
    if (!row || !sees(viewer, row.user_id)) return fail(404, "QUEUE_ENTRY_NOT_FOUND", "No such queue entry.", { entryId });
    if (this.handOver.busy.has(entryId))
      return fail(
        409,
        "QUEUE_ENTRY_BUSY",
        "A device is being handed to this entry right now; release it once allocated if you no longer need it.",
        {
          entryId,
        },
      );
    if (row.status !== "waiting" && row.status !== "offered")
      return fail(409, "QUEUE_ENTRY_CLOSED", `The entry is already ${row.status}.`, { entryId, status: row.status });
    this.p.queue.cancel(entryId, Date.now());
    // An offered device is free for the next entry.
    if (row.status === "offered") await this.dispatch();
    return ok(this.view(this.p.queue.row(entryId)!));
  }

  view(r: QueueRow): QueueEntryView {
    return this.p.queue.view(r, this.p.pool(), () => this.p.index.estimateDevices(Date.now()));
  }

  // ---- dispatch -----------------------------------------------------------------------------

  /**
   * Offers free devices to waiting entries in queue order (priority, then arrival), then hands
   * them over, in rounds: one round runs at a time, and a call during a round asks for another.
   * The promise resolves when a round that started after the call has finished (so a join sees
   * its own hand-over). A busy pool may always have another round to run: after a few in one
   * go the rest continue from the alarm, so no single invocation of the object runs for ever.
   */
  dispatch(): Promise<void> {
    const done = new Promise<void>((resolve) => this.waiters.push(resolve));
    this.again = true;
    if (!this.dispatching) {
      this.dispatching = true;
      // Kept alive by the runtime until the rounds end (a few at most: see rounds).
      this.p.state.waitUntil(this.rounds());
    }
    return done;
  }

  private async rounds(): Promise<void> {
    try {
      for (let round = 0; this.again; round++) {
        if (round === QUEUE.roundsPerInvocation) {
          // Handed on: the alarm runs the next round. Callers still waiting are let go now (they may
          // be the alarm itself, which must end before the next alarm can run).
          for (const resolve of this.waiters.splice(0)) resolve();
          await this.p.clock.arm(Date.now());
          return;
        }
        this.again = false;
        const waiting = this.waiters.splice(0);
        try {
          // The outbox first: a window given back (unreserve) must reach its device before the device is offered.
          await this.p.outbox.flush();
          const offers = this.offer();
          if (offers.length) await Promise.all(offers.map((e) => this.handOverEntry(e)));
          await this.p.outbox.flush();
          await this.p.rearm();
        } catch (err) {
          // The alarm (re-armed by the constructor after a restart) drives what is still due.
          log("error", "queue dispatch failed", { pool: this.p.pool(), error: String(err).slice(0, 500) });
          await this.p.clock.arm(Date.now() + QUEUE.offerRetryMs).catch(() => {});
        } finally {
          for (const resolve of waiting) resolve();
        }
      }
    } finally {
      this.dispatching = false;
    }
  }

  /** Synchronous (one commit): expires entries past their wait, then marks an offer for each entry a free device fits. */
  private offer(): QueueRow[] {
    const now = Date.now();
    for (const e of this.p.queue.pastWait(now)) {
      this.p.sql.tx(() => {
        this.p.queue.expire(e.entry_id, now);
        this.p.notify(e.user_id, `queue.expired:${e.entry_id}`, "queue.expired", {
          ...this.eventData(e),
          maxWaitMinutes: e.max_wait_minutes,
        });
      });
    }
    const free = this.p.index.freeForQueue().filter((d) => !this.inFlight.has(d.device_id));
    if (free.length === 0) return [];
    return this.p.queue.offer(free, this.p.reservations.windowStarts(now), now);
  }

  /** The offered device is allocated to the entry's user (quota and balance checked by their object), and the outcome recorded. */
  async handOverEntry(e: QueueRow): Promise<void> {
    const via = { kind: "queue" as const, id: e.entry_id, deviceId: e.device_id };
    const input = {
      userId: e.user_id,
      pool: this.p.pool(),
      durationMinutes: e.duration_minutes,
      durationSeconds: e.duration_seconds ?? undefined,
      spec: boundsOf(e).min,
      idempotencyKey: `queue:${e.entry_id}`,
      via,
    };
    const r = await this.handOver.run(e.entry_id, input);
    if (!r) return;
    const now = Date.now();
    const row = this.p.queue.row(e.entry_id);
    if (row?.status !== "offered") return;
    const q = this.p.queue;
    this.p.sql.tx(() => {
      if (r.ok) {
        q.fulfilled(e.entry_id, r.value.allocationId, r.value.deviceId, now);
        const waitedSeconds = Math.round((now - row.created_at) / 1000);
        const { allocationId, deviceId } = r.value;
        this.p.notify(e.user_id, `queue.fulfilled:${e.entry_id}`, "queue.fulfilled", {
          ...this.eventData(row),
          allocationId,
          deviceId,
          waitedSeconds,
        });
      } else if (isFinalRefusal(r)) {
        q.failed(e.entry_id, r, now);
        this.p.notify(e.user_id, `queue.failed:${e.entry_id}`, "queue.failed", {
          ...this.eventData(row),
          error: { code: r.code, message: r.message },
        });
        this.again = true; // the device goes to the next entry
      } else if (DEVICE_RACES.has(r.code)) {
        // The device was not free for this entry after all (the index was behind, a window the pool
        // has not heard is gone yet, the user's quota shrank): wait for another, passing this one over a while.
        q.raceLost(row, r, now);
        this.again = true;
      } else if (row.attempts + 1 >= QUEUE.offerAttempts) {
        // Transient failures (the user's object or billing did not answer) that go on: the device goes
        // back to the queue and the entry waits again (a later hand-over uses the same key, so an
        // allocation the user's object did make is the one it gets).
        q.requeue(e.entry_id, r, now);
        this.again = true;
      } else {
        // Transient: the alarm drives it again, same key.
        q.retryLater(e.entry_id, r, now);
      }
    });
  }

  private eventData(e: QueueRow): QueueEventData {
    return { entryId: e.entry_id, pool: this.p.pool(), priority: e.priority, joinedAt: iso(e.created_at) };
  }
}
