/**
 * A user's profile: plan, limits, validity, the finished hours of the current period, and
 * since when the user has had no feed socket (idle release). One row, cached: only the
 * user's object writes it. Synchronous, over the object's SQL.
 */
import { PLAN_LIMITS, QUOTA_VALID_DAYS, type PlanTier, type QuotaLimits } from "../config";
import { periodStartFor, quotaStatus, type QuotaState } from "../domain/quota";
import type { Quota, QuotaUsage } from "../domain/types";
import { CachedRow, type Sql } from "../objects/sql";

export const PROFILE_SCHEMA = `CREATE TABLE profile (
    id INTEGER PRIMARY KEY CHECK (id = 1), user_id TEXT NOT NULL, plan TEXT NOT NULL, suspended INTEGER NOT NULL,
    valid_until INTEGER NOT NULL, limits TEXT NOT NULL, period_start INTEGER NOT NULL, hours_used REAL NOT NULL,
    exceeded INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL, sockets_gone_at INTEGER);`;

export interface ProfileRow {
  user_id: string;
  plan: PlanTier;
  suspended: number;
  valid_until: number;
  limits: string;
  period_start: number;
  hours_used: number;
  /** We said `quota.exceeded` for the current crossing. */
  exceeded: number;
  updated_at: number;
  /** When the user's last feed socket went (null: one is open, or never recorded). */
  sockets_gone_at: number | null;
}

export class ProfileStore {
  private readonly row: CachedRow<ProfileRow>;

  constructor(sql: Sql) {
    this.row = new CachedRow<ProfileRow>(sql, "SELECT * FROM profile WHERE id = 1");
  }

  /** The profile; the first call creates it with `plan`'s quota, and a new period starts with no finished hours. */
  get(userId: string, plan: PlanTier, now = Date.now()): ProfileRow {
    let p = this.row.get();
    if (!p) {
      this.row.write(
        `INSERT INTO profile (id, user_id, plan, suspended, valid_until, limits, period_start, hours_used, updated_at) VALUES (1, ?, ?,
         0, ?, ?, ?, 0, ?)`,
        userId,
        plan,
        now + QUOTA_VALID_DAYS * 86_400_000,
        JSON.stringify(PLAN_LIMITS[plan]),
        periodStartFor(now),
        now,
      );
      p = this.row.get()!;
    }
    // Active allocations keep their booking across the new period.
    const period = periodStartFor(now);
    if (p.period_start < period) {
      this.row.write("UPDATE profile SET period_start = ?, hours_used = 0 WHERE id = 1", period);
      p = { ...p, period_start: period, hours_used: 0 };
    }
    return p;
  }

  /** The user this object belongs to ("" before the first call, which always names them). */
  owner(): string {
    return this.row.get()?.user_id ?? "";
  }

  state(p: ProfileRow): QuotaState {
    return { suspended: p.suspended === 1, validUntil: p.valid_until, limits: JSON.parse(p.limits) as QuotaLimits };
  }

  /** The quota as the API shows it, with `usage` (see AllocationStore.usage). */
  quota(p: ProfileRow, usage: QuotaUsage): Quota {
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

  setExceeded(on: boolean): void {
    this.row.write("UPDATE profile SET exceeded = ? WHERE id = 1", on ? 1 : 0);
  }

  addHours(hours: number): void {
    this.row.write("UPDATE profile SET hours_used = hours_used + ? WHERE id = 1", hours);
  }

  update(u: { plan: PlanTier; limits: QuotaLimits; suspended: boolean; validUntil: number }, now: number): void {
    this.row.write(
      "UPDATE profile SET plan = ?, limits = ?, suspended = ?, valid_until = ?, updated_at = ? WHERE id = 1",
      u.plan,
      JSON.stringify(u.limits),
      u.suspended ? 1 : 0,
      u.validUntil,
      now,
    );
  }

  renew(validUntil: number, now: number): void {
    this.row.write("UPDATE profile SET valid_until = ?, updated_at = ? WHERE id = 1", validUntil, now);
  }

  /** The idle clock: `null` stops it (a socket is open); `since` starts it unless it runs already. */
  socketsGone(since: number | null): void {
    if (since === null) this.row.write("UPDATE profile SET sockets_gone_at = NULL WHERE id = 1");
    else this.row.write("UPDATE profile SET sockets_gone_at = COALESCE(sockets_gone_at, ?) WHERE id = 1", since);
  }

  /** Since when the user has had no socket, as stored (null: unknown or a socket is open). */
  goneAt(): number | null {
    return this.row.get()?.sockets_gone_at ?? null;
  }
}
