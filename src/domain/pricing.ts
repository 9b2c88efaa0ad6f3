/**
 * Pricing and money rules, pure. Amounts are integer minor units (cents); rates are integer
 * micro-units of a minor unit per second, so prices below a cent per second need no floats.
 *
 * Rounding: the exact cost of one usage record is computed with integers (BigInt), then
 * rounded once, up, to a whole minor unit: any use costs at least a cent, so many short
 * allocations are never free. Memory and storage are priced per GB of 1024 MB, pro rata.
 * Invoices add up the already-rounded ledger lines, so an invoice always equals the sum of
 * its charges.
 */
import { fail, type Failure } from "../errors";
import type { DeviceSpec } from "./types";

export const MICROS_PER_MINOR = 1_000_000;

export interface Rates {
  basePerSecond: number;
  cpuCorePerSecond: number;
  memoryGBPerSecond: number;
  storageGBPerSecond: number;
}

/** Cost of holding a device of `spec` for `seconds` (whole seconds), in minor units rounded up. */
export function priceOf(rates: Rates, spec: DeviceSpec, seconds: number): number {
  // Everything times 1024 so per-MB shares of a GB rate stay integers.
  const perSecondX1024 =
    BigInt(rates.basePerSecond) * 1024n +
    BigInt(rates.cpuCorePerSecond) * BigInt(spec.cpuCores) * 1024n +
    BigInt(rates.memoryGBPerSecond) * BigInt(spec.memoryMB) +
    BigInt(rates.storageGBPerSecond) * BigInt(spec.storageMB);
  const denominator = 1024n * BigInt(MICROS_PER_MINOR);
  const exact = perSecondX1024 * BigInt(Math.max(0, Math.round(seconds)));
  return Number((exact + denominator - 1n) / denominator);
}

/** What an allocation of `durationMs` may cost at most (whole seconds, rounded up). */
export function estimateOf(rates: Rates, spec: DeviceSpec, durationMs: number): number {
  return priceOf(rates, spec, Math.ceil(durationMs / 1000));
}

/**
 * May the user commit `required` more? `committed` is what their pending and active
 * allocations may still cost (charged only when they end), so the balance is never promised twice.
 */
export function checkFunds(funds: { balance: number; currency: string }, committed: number, required: number): Failure | null {
  const available = funds.balance - committed;
  if (available >= required) return null;
  return fail(402, "INSUFFICIENT_BALANCE", "Your balance does not cover this; top up or ask for a shorter time.", {
    balance: funds.balance,
    committed,
    available,
    required,
    currency: funds.currency,
  });
}

/** A money amount for people: 1234 → "12.34 USD". */
export function formatMoney(minor: number, currency: string): string {
  const sign = minor < 0 ? "-" : "";
  const abs = Math.abs(minor);
  return `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")} ${currency}`;
}

// ---- billing periods (calendar months, UTC) -------------------------------------------------

const PERIOD = /^(\d{4})-(0[1-9]|1[0-2])$/;

/** `YYYY-MM` of the month containing `t`. */
export function periodOf(t: number): string {
  const d = new Date(t);
  return `${String(d.getUTCFullYear()).padStart(4, "0")}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

/** Start of month `month` (0-based, may overflow into the next year) of `year`, in epoch ms (UTC).
 *  Not `Date.UTC`, which reads years 0-99 as 1900-1999. */
function monthStart(year: number, month: number): number {
  const d = new Date(0);
  d.setUTCFullYear(year, month, 1);
  return d.getTime();
}

/** [start, end) of a `YYYY-MM` period in epoch ms, or null if it is not one. */
export function periodBounds(period: string): { start: number; end: number } | null {
  const m = PERIOD.exec(period);
  if (!m) return null;
  const y = Number(m[1]);
  const mo = Number(m[2]) - 1;
  return { start: monthStart(y, mo), end: monthStart(y, mo + 1) };
}

/** The last month that has fully ended at `now`. */
export function previousPeriod(now: number): string {
  const d = new Date(now);
  return periodOf(monthStart(d.getUTCFullYear(), d.getUTCMonth()) - 1);
}

// ---- invoices ---------------------------------------------------------------------------------

export interface LedgerLine {
  kind: "starting_credit" | "top_up" | "charge" | "adjustment";
  amount: number;
}

export interface InvoiceTotals {
  openingBalance: number;
  charges: number;
  credits: number;
  debits: number;
  closingBalance: number;
}

/** Totals of one period: charges as a positive sum, other credits and debits apart. */
export function invoiceTotals(openingBalance: number, lines: LedgerLine[]): InvoiceTotals {
  let charges = 0;
  let credits = 0;
  let debits = 0;
  for (const l of lines) {
    if (l.kind === "charge") charges -= l.amount;
    else if (l.amount >= 0) credits += l.amount;
    else debits -= l.amount;
  }
  return { openingBalance, charges, credits, debits, closingBalance: openingBalance - charges + credits - debits };
}
