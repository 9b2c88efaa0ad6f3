/**
 * A device as its feed last described it: the hello's snapshot, moved on by each event, so a
 * view needs no second read. Watched from the moment its client is made (shared-feeds.ts), so
 * a hook that mounts late still sees the device as it is, not as it was at the hello.
 */
import type { FeedClient } from "../client/feed-client";
import type { DeviceFeedState, FeedEvent } from "../feed/protocol";

export class DeviceWatch {
  current: DeviceFeedState | null = null;
  private readonly listeners = new Set<() => void>();

  constructor(client: FeedClient) {
    // Registered before the client starts: every hello (each reconnect brings a fresh snapshot) and event, in order.
    client.onHello((hello) => this.set((hello.state as DeviceFeedState | undefined) ?? null));
    client.onEvent((event) => this.set(deviceAfter(this.current, event)));
  }

  /** For useSyncExternalStore. */
  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  private set(next: DeviceFeedState | null): void {
    if (next === this.current) return;
    this.current = next;
    for (const listener of this.listeners) listener();
  }
}

const watches = new WeakMap<FeedClient, DeviceWatch>();

/** The watch of a device feed's client (made once per client). */
export function watchDevice(client: FeedClient): DeviceWatch {
  let watch = watches.get(client);
  if (!watch) {
    watch = new DeviceWatch(client);
    watches.set(client, watch);
  }
  return watch;
}

export function deviceAfter(device: DeviceFeedState | null, event: FeedEvent, now = Date.now()): DeviceFeedState | null {
  if (!device || !("deviceId" in event.data) || event.data.deviceId !== device.deviceId) return device;
  switch (event.type) {
    case "device.allocated":
      return {
        ...device,
        status: "allocated",
        allocation: {
          allocationId: event.data.allocationId,
          userId: event.userId,
          state: "active",
          allocatedAt: event.data.allocatedAt,
          expiresAt: event.data.expiresAt,
          secondsLeft: secondsUntil(event.data.expiresAt, now),
        },
      };
    case "device.extended":
      if (device.allocation?.allocationId !== event.data.allocationId) return device;
      return {
        ...device,
        allocation: { ...device.allocation, expiresAt: event.data.expiresAt, secondsLeft: secondsUntil(event.data.expiresAt, now) },
      };
    case "device.released":
      if (device.allocation && device.allocation.allocationId !== event.data.allocationId) return device;
      // A release by maintenance or removal comes with its own device.status.
      return { ...device, status: device.status === "allocated" ? "available" : device.status, allocation: null };
    case "device.status": {
      const ended = event.data.endedAllocationId !== null && device.allocation?.allocationId === event.data.endedAllocationId;
      return {
        ...device,
        status: event.data.status,
        node: event.data.node,
        pool: event.data.pool,
        allocation: ended ? null : device.allocation,
      };
    }
    default:
      return device;
  }
}

const secondsUntil = (iso: string, now: number) => Math.max(0, Math.round((Date.parse(iso) - now) / 1000));
