/**
 * Why a device's status last changed (the operator's `reason`, kept and shown), and a pending
 * drain: a maintenance or offline that waits for the running allocation to reach its end (no new
 * claims, no extension past `deadline`), then takes effect. One row; the Device owns it.
 */
import { iso } from "../domain/time";
import type { Sql } from "../objects/sql";

export type DrainTarget = "maintenance" | "offline";

export interface StatusNote {
  reason: string | null;
  /** When the note (the change, or the drain) was made, epoch ms. */
  since: number;
  /** A drain still waiting for the allocation's end (null: none). */
  drain: { status: DrainTarget; deadline: number } | null;
}

/** A device as its status shows it: the reason of the last change, and a drain under way. */
export interface StatusView {
  statusReason: string | null;
  statusSince: string | null;
  drain: { status: DrainTarget; deadline: string } | null;
}

export const statusView = (n: StatusNote | null): StatusView => ({
  statusReason: n?.reason ?? null,
  statusSince: n ? iso(n.since) : null,
  drain: n?.drain ? { status: n.drain.status, deadline: iso(n.drain.deadline) } : null,
});

/** Device migration 3. */
export const STATUS_NOTE_SCHEMA = `CREATE TABLE status_note (
    id INTEGER PRIMARY KEY CHECK (id = 1), reason TEXT, since INTEGER NOT NULL,
    drain_status TEXT, drain_deadline INTEGER);`;

interface NoteRow {
  reason: string | null;
  since: number;
  drain_status: DrainTarget | null;
  drain_deadline: number | null;
}

export class StatusNoteStore {
  constructor(private readonly sql: Sql) {}

  get(): StatusNote | null {
    const r = this.sql.one<NoteRow>("SELECT reason, since, drain_status, drain_deadline FROM status_note WHERE id = 1");
    if (!r) return null;
    const drain = r.drain_status && r.drain_deadline !== null ? { status: r.drain_status, deadline: r.drain_deadline } : null;
    return { reason: r.reason, since: r.since, drain };
  }

  /** The drain waiting for the allocation's end, if any. */
  drain(): StatusNote["drain"] {
    return this.get()?.drain ?? null;
  }

  /** A status change made now (any pending drain is over: done, or replaced by this change). */
  changed(reason: string | null, now: number): void {
    this.write(reason, now, null);
  }

  /** A drain: `status` once the allocation ends; no extension past `deadline`. */
  draining(status: DrainTarget, reason: string | null, deadline: number, now: number): void {
    this.write(reason, now, { status, deadline });
  }

  /** The drained allocation ended: the change takes effect, the reason stays. */
  drained(now: number): void {
    this.sql.exec("UPDATE status_note SET drain_status = NULL, drain_deadline = NULL, since = ? WHERE id = 1", now);
  }

  private write(reason: string | null, now: number, drain: StatusNote["drain"]): void {
    this.sql.exec(
      `INSERT INTO status_note (id, reason, since, drain_status, drain_deadline) VALUES (1, ?, ?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET reason = excluded.reason, since = excluded.since,
         drain_status = excluded.drain_status, drain_deadline = excluded.drain_deadline`,
      reason,
      now,
      drain?.status ?? null,
      drain?.deadline ?? null,
    );
  }
}
