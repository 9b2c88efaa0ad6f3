/**
 * A user's balance as their object sees it: read from D1 (the account opens with its starting
 * credit on first use) and reused for `BILLING.balanceReuseMs`, less the price of every
 * allocation that ended since (its charge cannot be in that balance yet; charges are never
 * less). A D1 read is the largest single cost of an allocation, and a short D1 outage then does
 * not stop users whose balance is known. Top-ups, adjustments and plan changes forget it at once.
 * The cache is in memory: a restarted object reads D1 again.
 */
import { ALLOCATION, BILLING, billingAllowOnError } from "../config";
import { dbOf } from "../db/client";
import { checkFunds, estimateOf, priceOf } from "../domain/pricing";
import type { DeviceSpec } from "../domain/types";
import type { Env } from "../env";
import { fail, ok, type Failure, type Result } from "../errors";
import { log } from "../log";
import { fundsFor, type Funds } from "./ledger";
import { specOf } from "../domain/spec";

/** The user's funds for a check, and whether they are a balance read earlier and reused. */
export interface KnownFunds {
  /** null: unknown but allowed (BILLING_ALLOW_ON_ERROR is on and D1 did not answer). */
  funds: Funds | null;
  reused: boolean;
}

type Ended = { cpu: number; mem: number; storage: number; duration_seconds: number };
type Open = { cpu: number; mem: number; storage: number; duration_ms: number };

/** The funds refusal of a new cost on top of what open allocations may still cost (null: allowed, or unknown but allowed). */
export function fundsRefusal(f: Funds | null, open: Open[], spec: DeviceSpec, durationMs: number): Failure | null {
  if (!f) return null;
  const committed = open.reduce((sum, r) => sum + estimateOf(f, specOf(r), r.duration_ms), 0);
  return checkFunds(f, committed, estimateOf(f, spec, durationMs));
}

export class Balance {
  private seen: { funds: Funds; at: number; spent: number } | null = null;

  /** `endedSince`: the user's billable allocations that ended at or after a time (from their object's rows). */
  constructor(
    private readonly env: Env,
    private readonly endedSince: (since: number) => Ended[],
  ) {}

  /** The funds: a balance read recently is reused unless `fresh` (a refusal is never based on a remembered one). */
  async funds(userId: string, fresh = false): Promise<Result<KnownFunds>> {
    const s = this.seen;
    if (!fresh && s && Date.now() - s.at < BILLING.balanceReuseMs)
      return ok({ funds: { ...s.funds, balance: s.funds.balance - s.spent }, reused: true });
    try {
      const at = Date.now();
      const funds = await fundsFor(dbOf(this.env), this.env, userId);
      // Allocations that ended from just before the read on are counted (`spend` adds later ones);
      // clocks of two objects may differ a little, and a margin only ever counts more.
      const ended = this.endedSince(at - ALLOCATION.clockMarginMs);
      this.seen = { funds, at, spent: ended.reduce((sum, r) => sum + priceOf(funds, specOf(r), r.duration_seconds), 0) };
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

  /**
   * The one "check funds, read again if refused" loop: `check` runs on the funds (`first`, or a
   * read); a refusal for the balance on a remembered one reads D1 and checks again. With
   * `keepRefusal`, a re-read that fails answers the refusal rather than the read's error.
   */
  async checked(
    userId: string,
    check: (f: Funds | null) => Failure | null,
    opts: { first?: KnownFunds; keepRefusal?: boolean } = {},
  ): Promise<Result<KnownFunds>> {
    let refused: Failure | null = null;
    for (let fresh = false; ; fresh = true) {
      const funds = !fresh && opts.first ? ok(opts.first) : await this.funds(userId, fresh);
      if (!funds.ok) return refused && opts.keepRefusal ? refused : funds;
      refused = check(funds.value.funds);
      if (!refused) return funds;
      if (refused.code === "INSUFFICIENT_BALANCE" && funds.value.reused && !fresh) continue;
      return refused;
    }
  }

  /** Billing moved the balance or plan: read D1 next time. */
  forget(): void {
    this.seen = null;
  }

  /** An allocation ended: a remembered balance read before its end counts its price. */
  spend(spec: DeviceSpec, durationSeconds: number, releasedAt: number): void {
    const s = this.seen;
    if (s && releasedAt >= s.at - ALLOCATION.clockMarginMs) s.spent += priceOf(s.funds, spec, durationSeconds);
  }
}
