/**
 * A Device's status changes, composed into the Device: maintenance, offline and back, with the
 * operator's reason kept, and the drain — a maintenance or offline that lets the running
 * allocation reach its end (no new claims, no extension past a deadline) and takes effect then.
 * Everything a change says goes out in the change's transaction: the device feed, the holder's
 * user feed (a drain), and the admin feed through the outbox.
 */
import type { EndedAllocation, DeviceInfo, DeviceStatus, EndReason } from "../../src/domain/types";
import { fail, ok, type Failure, type Result } from "../../src/errors";
import type { FeedEvents } from "../../src/feed/protocol";
import { iso } from "../../src/domain/time";
import type { FeedHub } from "../../src/objects/feed";
import type { OutboxItem } from "../../src/objects/outbox";
import type { Sql } from "../../src/objects/sql";
import type { DeviceRow, DeviceStore, HoldRow } from "../../src/stores/device";
import { statusView, type DrainTarget, type StatusNoteStore, type StatusView } from "../../src/stores/device-status-note";
import type { Messages } from "./messages";

/** What the desk sees of its Device. Types only, so the desk never imports the object. */
export interface DeviceContext {
  readonly sql: Sql;
  readonly store: DeviceStore;
  readonly notes: StatusNoteStore;
  readonly hub: FeedHub;
  current(): HoldRow | null;
  endTx(a: HoldRow, reason: EndReason, now: number): EndedAllocation;
  enqueue(...items: OutboxItem<Messages>[]): void;
  publishState(d: DeviceRow): Promise<void>;
}

export interface StatusChange {
  /** Let the running allocation reach its end first (maintenance and offline only). */
  drain?: boolean;
  reason?: string;
  /** With `drain`: the latest end an extension may reach (default: the allocation's end now). */
  deadline?: number;
}

export class StatusDesk {
  constructor(private readonly c: DeviceContext) {}

  /** maintenance / offline end an active allocation now, or with `drain` at its end; available brings it back. */
  async set(
    status: "available" | DrainTarget,
    change: StatusChange,
  ): Promise<Result<DeviceInfo & StatusView & { ended: EndedAllocation | null }>> {
    const d = this.c.store.registered();
    if (!d) return fail(404, "DEVICE_NOT_FOUND", "No such device.");
    const reason = change.reason ?? null;
    const now = Date.now();
    const held = this.c.current();
    let ended: EndedAllocation | null = null;
    this.c.sql.tx(() => {
      if (status !== "available" && change.drain && held) return this.drain(d, held, status, reason, change.deadline, now);
      const a = this.c.current();
      // The note first: a status change's events carry its reason.
      this.c.notes.changed(reason, now);
      if (a && status !== "available") ended = this.c.endTx(a, status, now);
      const newStatus: DeviceStatus = status === "available" ? (this.c.current() ? "allocated" : "available") : status;
      this.c.store.setStatus(newStatus, now);
      // A repeat (maintenance twice) is no change and says nothing.
      if (newStatus !== d.status) this.changed(d.status, ended);
    });
    const next = this.c.store.device()!;
    await this.c.publishState(next);
    return ok({ ...this.c.store.info(next), ...statusView(this.c.notes.get()), ended });
  }

  /** Inside the status change's transaction: the device feed and (via the outbox) the admin feed. */
  changed(previous: DeviceStatus, ended: EndedAllocation | null): void {
    const d = this.c.store.device()!;
    const holder = ended?.userId ?? "";
    const data: FeedEvents["device.status"] = {
      deviceId: d.device_id,
      pool: d.pool,
      node: d.node,
      status: d.status,
      previousStatus: previous,
      endedAllocationId: ended?.allocationId ?? null,
      reason: this.c.notes.get()?.reason ?? null,
    };
    this.c.hub.append(holder, "device.status", data);
    this.c.enqueue({
      kind: "admin_event",
      payload: { key: `device.status:${d.device_id}:${d.version}`, userId: holder, type: "device.status", data },
    });
  }

  /** The status a drained device takes when its allocation ends (null: no drain). */
  afterEnd(): DrainTarget | null {
    return this.c.notes.drain()?.status ?? null;
  }

  /** Inside endTx, after the allocation ended into `after` (a drain's target): it takes effect and is said. */
  drained(ended: EndedAllocation, now: number): void {
    this.c.notes.drained(now);
    this.changed("allocated", ended);
  }

  /** An extension a drain does not allow (null: allowed). */
  extendRefusal(expiresAt: number): Failure | null {
    const drain = this.c.notes.drain();
    if (!drain || expiresAt <= drain.deadline) return null;
    return fail(
      409,
      "DEVICE_DRAINING",
      `The device goes to ${drain.status} after this allocation; it can run until ${iso(drain.deadline)} at most.`,
      { status: drain.status, deadline: iso(drain.deadline), reason: this.c.notes.get()?.reason ?? null },
    );
  }

  /** A drained device takes no new reservation window. */
  reserveRefusal(d: DeviceRow): Failure | null {
    const drain = this.c.notes.drain();
    if (!drain) return null;
    return fail(409, "DEVICE_UNAVAILABLE", `The device is being drained for ${drain.status}.`, { state: this.c.store.state(d) });
  }

  private drain(d: DeviceRow, a: HoldRow, status: DrainTarget, reason: string | null, deadline: number | undefined, now: number): void {
    // The allocation may run to its end as it stands; a later deadline allows extending up to it.
    const until = Math.max(a.expires_at, deadline ?? a.expires_at);
    this.c.notes.draining(status, reason, until, now);
    const data: FeedEvents["device.draining"] = {
      deviceId: d.device_id,
      pool: d.pool,
      node: d.node,
      status,
      reason,
      allocationId: a.allocation_id,
      deadline: iso(until),
    };
    this.c.hub.append(a.user_id, "device.draining", data);
    this.c.enqueue(
      { kind: "user_event", payload: { userId: a.user_id, type: "device.draining", data } },
      { kind: "admin_event", payload: { key: `device.draining:${d.device_id}:${now}`, userId: a.user_id, type: "device.draining", data } },
    );
  }
}
