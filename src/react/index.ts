/**
 * React hooks for the live feed, under the old admin frontend's names (docs/react.md). React
 * is a peer dependency; the Worker never imports this folder.
 */
export { RealtimeProvider, useFeedConnection, type FeedConnection, type RealtimeProviderProps } from "./provider";
export { useRealtimeQuota, QUOTA_EVENT_TYPES, type RealtimeQuotaOptions, type RealtimeQuotaResult } from "./use-realtime-quota";
export { useRealtimeBilling, BILLING_EVENT_TYPES, type RealtimeBillingOptions, type RealtimeBillingResult } from "./use-realtime-billing";
export { useRealtimeApp, type RealtimeAppOptions, type RealtimeAppResult } from "./use-realtime-app";
export { useRealtimeDevice, DEVICE_EVENT_TYPES, type RealtimeDeviceOptions, type RealtimeDeviceResult } from "./use-realtime-device";
export { useFeedEvents, type EventCallback, type FeedEventsResult, type Watch } from "./use-feed-events";
export type { FeedTarget } from "./shared-feeds";
