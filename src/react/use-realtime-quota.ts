/**
 * `useRealtimeQuota`: the old admin frontend's quota hook on this service's user feed.
 * `quota.updated` carries the whole quota (as GET /quotas/user/{userId} answers it),
 * `quota.exceeded` the limits and usage at the crossing, `quota.renewed` the new end of validity.
 */
import type { QuotaEventData, QuotaRenewedEventData, QuotaUpdatedEventData } from "../feed/protocol";
import { useFeedEvents, type EventCallback, type FeedEventsResult } from "./use-feed-events";

export const QUOTA_EVENT_TYPES = ["quota.updated", "quota.exceeded", "quota.renewed"] as const;
export type QuotaEventType = (typeof QUOTA_EVENT_TYPES)[number];

export interface RealtimeQuotaOptions {
  /** Keep only this user's events. A user feed carries only its own user's, so this is a check, not a choice. */
  userId?: string;
  onQuotaUpdated?: EventCallback<"quota.updated">;
  onQuotaExceeded?: EventCallback<"quota.exceeded">;
  onQuotaRenewed?: EventCallback<"quota.renewed">;
  /** Every quota event (e.g. to invalidate cached quota queries). */
  onEvent?: (event: FeedEventsResult<QuotaEventType>["events"][number]) => void;
  /** How many of the latest events to keep (default 50). */
  maxEvents?: number;
}

export interface RealtimeQuotaResult extends FeedEventsResult<QuotaEventType> {
  /** The quota as the last `quota.updated` said it (null until one arrives). */
  quota: QuotaUpdatedEventData | null;
  /** The last crossing of a limit. */
  exceeded: QuotaEventData | null;
  /** The last renewal. */
  renewed: QuotaRenewedEventData | null;
}

export function useRealtimeQuota(options: RealtimeQuotaOptions = {}): RealtimeQuotaResult {
  const result = useFeedEvents({
    target: { feed: "user" },
    types: QUOTA_EVENT_TYPES,
    userId: options.userId,
    maxEvents: options.maxEvents,
    callbacks: {
      "quota.updated": options.onQuotaUpdated,
      "quota.exceeded": options.onQuotaExceeded,
      "quota.renewed": options.onQuotaRenewed,
    },
    onEvent: options.onEvent,
  });
  return {
    ...result,
    quota: result.latest["quota.updated"]?.data ?? null,
    exceeded: result.latest["quota.exceeded"]?.data ?? null,
    renewed: result.latest["quota.renewed"]?.data ?? null,
  };
}
