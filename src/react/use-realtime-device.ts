/**
 * `useRealtimeDevice`: the old admin frontend's device hook. With `deviceId` it watches that
 * device's own feed (its holder or an admin may open it), whose hello carries the device and
 * its allocation; without, the signed-in user's feed (their own allocations). An admin may
 * pass `feed: "admin"` for every device's status changes.
 */
import { useSyncExternalStore } from "react";
import type { DeviceFeedState } from "../feed/protocol";
import { watchDevice } from "./device-state";
import { useFeedEvents, type EventCallback, type FeedEventsResult } from "./use-feed-events";

export const DEVICE_EVENT_TYPES = [
  "device.allocated",
  "device.extended",
  "device.expiring",
  "device.released",
  "device.status",
  "device.draining",
] as const;
export type DeviceEventType = (typeof DEVICE_EVENT_TYPES)[number];

export interface RealtimeDeviceOptions {
  /** Keep only events about this device; also picks its feed unless `feed` says otherwise. */
  deviceId?: string;
  /** Keep only this user's events: their allocations, and status changes that ended one of them. */
  userId?: string;
  /** Which feed: default `device` with a `deviceId`, else `user`; `admin` (admins): status changes of every device. */
  feed?: "user" | "device" | "admin";
  onDeviceAllocated?: EventCallback<"device.allocated">;
  onDeviceExtended?: EventCallback<"device.extended">;
  onDeviceExpiring?: EventCallback<"device.expiring">;
  onDeviceReleased?: EventCallback<"device.released">;
  onDeviceStatusChanged?: EventCallback<"device.status">;
  /** An operator drains the device: it goes to maintenance or offline at the allocation's end (no counterpart in the old hook). */
  onDeviceDraining?: EventCallback<"device.draining">;
  /** Every device event that passed the filters (e.g. to invalidate cached device lists). */
  onEvent?: (event: FeedEventsResult<DeviceEventType>["events"][number]) => void;
  /** How many of the latest events to keep (default 50). */
  maxEvents?: number;
}

export interface RealtimeDeviceResult extends FeedEventsResult<DeviceEventType> {
  /** Device feed only: the device and its allocation, from the hello and every event since (null elsewhere). */
  device: DeviceFeedState | null;
}

export function useRealtimeDevice(options: RealtimeDeviceOptions = {}): RealtimeDeviceResult {
  const feed = options.feed ?? (options.deviceId !== undefined ? "device" : "user");
  if (feed === "device" && options.deviceId === undefined) throw new Error('useRealtimeDevice: feed "device" needs a deviceId');
  const result = useFeedEvents({
    target: feed === "device" ? { feed, deviceId: options.deviceId } : { feed },
    types: DEVICE_EVENT_TYPES,
    userId: options.userId,
    deviceId: options.deviceId,
    maxEvents: options.maxEvents,
    callbacks: {
      "device.allocated": options.onDeviceAllocated,
      "device.extended": options.onDeviceExtended,
      "device.expiring": options.onDeviceExpiring,
      "device.released": options.onDeviceReleased,
      "device.status": options.onDeviceStatusChanged,
      "device.draining": options.onDeviceDraining,
    },
    onEvent: options.onEvent,
  });
  const device = useDeviceState(feed === "device" ? result : null);
  return { ...result, device };
}

const nothing = () => () => undefined;

/** The device as its feed's client has folded it (device-state.ts), re-rendered on each change. */
function useDeviceState(result: FeedEventsResult<DeviceEventType> | null): DeviceFeedState | null {
  const watch = result?.client ? watchDevice(result.client) : null;
  return useSyncExternalStore(watch?.subscribe ?? nothing, () => watch?.current ?? null);
}
