/**
 * Extending an allocation, composed into UserQuota: the plan's extend policy, the month's hours
 * and the funds checked, the extra time booked (quota held), then the device's alarm moved; the
 * booking is undone if the device refuses.
 */
import { EXTEND_POLICIES } from "../../src/config";
import type { AllocationResult } from "../../src/contracts";
import { checkExtend } from "../../src/domain/extend";
import { checkExtraHours } from "../../src/domain/quota";
import { specOf } from "../../src/domain/spec";
import { fail, ok, type Result } from "../../src/errors";
import { take } from "../../src/rpc";
import { eventData, extendInfo, resultOf, type AllocationRow } from "../../src/stores/allocations";
import type { UserContext } from "./context";
import type { PoolChecks } from "./pool-checks";

export class Extender {
  constructor(
    private readonly u: UserContext,
    private readonly checks: PoolChecks,
  ) {}

  async extend(
    userId: string,
    allocationId: string,
    additionalMinutes: number,
  ): Promise<Result<AllocationResult & { extendCount: number; extendedMinutes: number }>> {
    this.u.profile(userId);
    const found = this.u.allocations.active(allocationId);
    if (!found.ok) return found;
    let row!: AllocationRow;
    let now!: number;
    const funds = await this.u.balance.checked(userId, (f) => {
      const p = this.u.profile(userId);
      const current = this.u.allocations.active(allocationId);
      if (!current.ok) return current;
      row = current.value;
      now = Date.now();
      const done = { extendCount: row.extend_count, extendedMinutes: row.extended_minutes, lastExtendedAt: row.last_extended_at };
      return (
        checkExtend(EXTEND_POLICIES[p.plan], done, additionalMinutes, now) ??
        checkExtraHours(this.u.profiles.state(p), this.u.allocations.usage(p.hours_used), additionalMinutes / 60, now) ??
        this.checks.fundsRefusal(f, specOf(row), additionalMinutes * 60_000)
      );
    });
    if (!funds.ok) return funds;
    const expiresAt = row.expires_at! + additionalMinutes * 60_000;
    // Book first (quota held), then move the device's alarm; undo the booking if the device refuses.
    this.u.allocations.extend(allocationId, expiresAt, additionalMinutes, now);
    let r: Result<{ expiresAt: number }>;
    const info = extendInfo(row, additionalMinutes);
    try {
      r = (await take(this.u.env.DEVICE.getByName(row.device_id!).extend(allocationId, expiresAt, info))) as Result<{ expiresAt: number }>;
    } catch (err) {
      r = fail(503, "DEVICE_UNAVAILABLE", "The device did not answer; the allocation is unchanged. Try again.", { cause: String(err) });
    }
    if (!r.ok) {
      this.u.allocations.restore(row);
      return r;
    }
    await this.u.schedule.rearm();
    const next = this.u.allocations.row(allocationId)!;
    const counts = { extendCount: next.extend_count, extendedMinutes: next.extended_minutes };
    this.u.emit(userId, "device.extended", { ...eventData(next), additionalMinutes, ...counts });
    this.u.noteQuotaStatus(this.u.profile(userId));
    return ok({ ...resultOf(userId, next), ...counts });
  }
}
