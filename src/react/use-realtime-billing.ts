/**
 * `useRealtimeBilling`: the old admin frontend's billing hook. Billing events keep the old
 * notification service's names in their data (`amount`, `newBalance`, `paymentId`, …; money in
 * minor units). On the user feed: the signed-in user's low balance, payments, invoices and
 * charges; on the admin feed (`feed: "admin"`, admins): every user's low balance, which
 * `userId` narrows to one.
 */
import type { ChargedEventData, InvoiceGeneratedEventData, LowBalanceEventData, PaymentSuccessEventData } from "../feed/protocol";
import { useFeedEvents, type EventCallback, type FeedEventsResult } from "./use-feed-events";

export const BILLING_EVENT_TYPES = [
  "billing.low_balance",
  "billing.payment_success",
  "billing.invoice_generated",
  "billing.charged",
] as const;
export type BillingEventType = (typeof BILLING_EVENT_TYPES)[number];

export interface RealtimeBillingOptions {
  /** Keep only this user's events. On the user feed a check (it carries only its own user's); on the admin feed a choice. */
  userId?: string;
  /** Default `user`; `admin` (admins only) carries low balances of every user, not payments, invoices or charges. */
  feed?: "user" | "admin";
  onLowBalance?: EventCallback<"billing.low_balance">;
  onPaymentSuccess?: EventCallback<"billing.payment_success">;
  onInvoiceGenerated?: EventCallback<"billing.invoice_generated">;
  /** A usage record was booked and charged: `{allocationId, deviceId, amount, newBalance, currency, durationSeconds}`. */
  onCharged?: EventCallback<"billing.charged">;
  /** Every billing event that passed the filter (e.g. to invalidate cached balance and payment queries). */
  onEvent?: (event: FeedEventsResult<BillingEventType>["events"][number]) => void;
  /** How many of the latest events to keep (default 50). */
  maxEvents?: number;
}

export interface RealtimeBillingResult extends FeedEventsResult<BillingEventType> {
  /**
   * The balance (minor units) the newest event named: a payment's or charge's `newBalance`, a
   * low balance's `balance`. Null until one arrives, and on the admin feed without `userId`
   * (the events are many users').
   */
  balance: number | null;
  lowBalance: LowBalanceEventData | null;
  lastPayment: PaymentSuccessEventData | null;
  lastInvoice: InvoiceGeneratedEventData | null;
  lastCharge: ChargedEventData | null;
}

export function useRealtimeBilling(options: RealtimeBillingOptions = {}): RealtimeBillingResult {
  const feed = options.feed ?? "user";
  const result = useFeedEvents({
    target: { feed },
    types: BILLING_EVENT_TYPES,
    userId: options.userId,
    maxEvents: options.maxEvents,
    callbacks: {
      "billing.low_balance": options.onLowBalance,
      "billing.payment_success": options.onPaymentSuccess,
      "billing.invoice_generated": options.onInvoiceGenerated,
      "billing.charged": options.onCharged,
    },
    onEvent: options.onEvent,
  });
  const oneUser = feed === "user" || options.userId !== undefined;
  return {
    ...result,
    balance: oneUser ? balanceOf(result.events) : null,
    lowBalance: result.latest["billing.low_balance"]?.data ?? null,
    lastPayment: result.latest["billing.payment_success"]?.data ?? null,
    lastInvoice: result.latest["billing.invoice_generated"]?.data ?? null,
    lastCharge: result.latest["billing.charged"]?.data ?? null,
  };
}

/** The newest balance any of the events names (they are newest first). */
function balanceOf(events: FeedEventsResult<BillingEventType>["events"]): number | null {
  for (const e of events) {
    if (e.type === "billing.low_balance" && typeof e.data.balance === "number") return e.data.balance;
    if ((e.type === "billing.payment_success" || e.type === "billing.charged") && typeof e.data.newBalance === "number")
      return e.data.newBalance;
  }
  return null;
}
