/**
 * `useRealtimeApp`: the old admin frontend's app hook on this service's user feed. The app
 * service posts these events (POST /api/internal/events) with the old payloads; each reaches
 * only the feed of the user it names.
 */
import {
  APP_EVENT_TYPES,
  type AppEventType,
  type AppInstalledEventData,
  type AppInstallFailedEventData,
  type AppUpdatedEventData,
} from "../feed/protocol";
import { useFeedEvents, type EventCallback, type FeedEventsResult } from "./use-feed-events";

export interface RealtimeAppOptions {
  /** Keep only this user's events (a user feed carries only its own user's). */
  userId?: string;
  /** Keep only events about this device. */
  deviceId?: string;
  onAppInstalled?: EventCallback<"app.installed">;
  onAppInstallFailed?: EventCallback<"app.install_failed">;
  onAppUpdated?: EventCallback<"app.updated">;
  /** Every app event that passed the filters (e.g. to invalidate cached app lists). */
  onEvent?: (event: FeedEventsResult<AppEventType>["events"][number]) => void;
  /** How many of the latest events to keep (default 50). */
  maxEvents?: number;
}

export interface RealtimeAppResult extends FeedEventsResult<AppEventType> {
  lastInstalled: AppInstalledEventData | null;
  lastInstallFailed: AppInstallFailedEventData | null;
  lastUpdated: AppUpdatedEventData | null;
}

export function useRealtimeApp(options: RealtimeAppOptions = {}): RealtimeAppResult {
  const result = useFeedEvents({
    target: { feed: "user" },
    types: APP_EVENT_TYPES,
    userId: options.userId,
    deviceId: options.deviceId,
    maxEvents: options.maxEvents,
    callbacks: {
      "app.installed": options.onAppInstalled,
      "app.install_failed": options.onAppInstallFailed,
      "app.updated": options.onAppUpdated,
    },
    onEvent: options.onEvent,
  });
  return {
    ...result,
    lastInstalled: result.latest["app.installed"]?.data ?? null,
    lastInstallFailed: result.latest["app.install_failed"]?.data ?? null,
    lastUpdated: result.latest["app.updated"]?.data ?? null,
  };
}
