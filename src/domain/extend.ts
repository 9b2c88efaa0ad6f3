/** Extend (renew) policy by plan tier, pure. */
import type { ExtendPolicy } from "../config";
import { fail, type Failure } from "../errors";

export interface ExtendState {
  extendCount: number;
  extendedMinutes: number;
  lastExtendedAt: number | null;
}

export function checkExtend(policy: ExtendPolicy, state: ExtendState, additionalMinutes: number, now: number): Failure | null {
  if (policy.maxExtends !== null && state.extendCount >= policy.maxExtends)
    return fail(409, "EXTEND_LIMIT_REACHED", `Your plan allows ${policy.maxExtends} extensions per allocation; all are used.`, {
      maxExtends: policy.maxExtends,
    });
  if (additionalMinutes > policy.maxMinutesPerExtend)
    return fail(409, "EXTEND_TOO_LONG", `Your plan allows at most ${policy.maxMinutesPerExtend} minutes per extension.`, {
      maxMinutesPerExtend: policy.maxMinutesPerExtend,
      requested: additionalMinutes,
    });
  if (policy.maxTotalExtendMinutes !== null && state.extendedMinutes + additionalMinutes > policy.maxTotalExtendMinutes)
    return fail(
      409,
      "EXTEND_TOTAL_EXCEEDED",
      `Your plan allows ${policy.maxTotalExtendMinutes} extension minutes per allocation; ` +
        `${policy.maxTotalExtendMinutes - state.extendedMinutes} are left.`,
      {
        maxTotalExtendMinutes: policy.maxTotalExtendMinutes,
        used: state.extendedMinutes,
        requested: additionalMinutes,
      },
    );
  if (state.lastExtendedAt !== null && policy.cooldownSeconds > 0) {
    const readyAt = state.lastExtendedAt + policy.cooldownSeconds * 1000;
    if (now < readyAt)
      return fail(429, "EXTEND_COOLDOWN", `Wait ${Math.ceil((readyAt - now) / 1000)} s before extending again.`, {
        retryAfterSeconds: Math.ceil((readyAt - now) / 1000),
      });
  }
  return null;
}
