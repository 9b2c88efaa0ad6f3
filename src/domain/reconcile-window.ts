/**
 * The window an operator's reconciliation checks (POST /admin/billing/reconcile): allocations
 * that ended in [from, to). An end not given is filled in: `to` is now less the grace (what ended
 * more recently may still be on its way through the queue), `from` the lookback before `to`.
 * The answer names the ends that were filled in, so "no differences" says over which window.
 */

export type WindowEnd = "from" | "to";

export interface ReconcileWindow {
  from: number;
  to: number;
  /** The ends the service chose (in this order); empty when both were given. */
  defaulted: WindowEnd[];
}

export function reconcileWindow(
  asked: { from?: number; to?: number },
  now: number,
  rules: { graceMs: number; lookbackMs: number },
): ReconcileWindow {
  const to = asked.to ?? now - rules.graceMs;
  const from = asked.from ?? to - rules.lookbackMs;
  const defaulted: WindowEnd[] = [];
  if (asked.from === undefined) defaulted.push("from");
  if (asked.to === undefined) defaulted.push("to");
  return { from, to, defaulted };
}
