/**
 * deviceAfter (src/react/device-state.ts): how useRealtimeDevice moves a device feed's hello
 * snapshot on with each event. The browser test drives extend, release and status changes on a
 * real feed; these are the cases it cannot arrange at will (a new allocation while watched,
 * another device's or another allocation's event). Exact expected values.
 */
import { describe, expect, it } from "vitest";
import type { DeviceFeedState, FeedEvent } from "../../src/feed/protocol";
import { deviceAfter } from "../../src/react/device-state";

const NOW = Date.parse("2026-03-01T10:00:00.000Z");
const free: DeviceFeedState = { deviceId: "d1", pool: "default", node: "n1", status: "available", allocation: null };
const spec = { pool: "default", node: "n1", cpuCores: 2, memoryMB: 4096, storageMB: 32768 };

function event<K extends FeedEvent["type"]>(type: K, userId: string, data: Extract<FeedEvent, { type: K }>["data"]): FeedEvent {
  return { seq: 1, type, userId, data, timestamp: new Date(NOW).toISOString() } as FeedEvent;
}

const allocated = event("device.allocated", "alice", {
  allocationId: "a1",
  deviceId: "d1",
  ...spec,
  allocatedAt: "2026-03-01T10:00:00.000Z",
  expiresAt: "2026-03-01T10:30:00.000Z",
  durationMinutes: 30,
});
const held = deviceAfter(free, allocated, NOW)!;

describe("deviceAfter", () => {
  it("an allocation makes the device allocated, held by the event's user until its end", () => {
    expect(held).toEqual({
      ...free,
      status: "allocated",
      allocation: {
        allocationId: "a1",
        userId: "alice",
        state: "active",
        allocatedAt: "2026-03-01T10:00:00.000Z",
        expiresAt: "2026-03-01T10:30:00.000Z",
        secondsLeft: 1800,
      },
    });
  });

  it("an extend of that allocation moves its end; of another allocation, nothing", () => {
    const ext = (allocationId: string) =>
      event("device.extended", "alice", {
        ...(allocated.data as Extract<FeedEvent, { type: "device.allocated" }>["data"]),
        allocationId,
        expiresAt: "2026-03-01T10:40:00.000Z",
        additionalMinutes: 10,
        extendCount: 1,
        extendedMinutes: 10,
      });
    expect(deviceAfter(held, ext("a1"), NOW)!.allocation).toMatchObject({ expiresAt: "2026-03-01T10:40:00.000Z", secondsLeft: 2400 });
    expect(deviceAfter(held, ext("a0"), NOW)).toBe(held);
  });

  it("a release frees it; a release of an earlier allocation leaves the current one", () => {
    const rel = (allocationId: string) =>
      event("device.released", "alice", {
        allocationId,
        deviceId: "d1",
        pool: "default",
        allocatedAt: "2026-03-01T10:00:00.000Z",
        releasedAt: "2026-03-01T10:05:00.000Z",
        durationSeconds: 300,
        reason: "released",
      });
    expect(deviceAfter(held, rel("a1"), NOW)).toEqual(free);
    expect(deviceAfter(held, rel("a0"), NOW)).toBe(held);
  });

  it("a status change sets the status, and ends the allocation it names", () => {
    const status = (endedAllocationId: string | null) =>
      event("device.status", "alice", {
        deviceId: "d1",
        pool: "default",
        node: "n1",
        status: "maintenance",
        previousStatus: "allocated",
        endedAllocationId,
        reason: null,
      });
    expect(deviceAfter(held, status("a1"), NOW)).toEqual({ ...free, status: "maintenance" });
    expect(deviceAfter(free, status(null), NOW)).toEqual({ ...free, status: "maintenance" });
  });

  it("another device's events, events without a device and no snapshot yet change nothing", () => {
    const other = event("device.released", "bob", {
      allocationId: "a1",
      deviceId: "d2",
      allocatedAt: "2026-03-01T10:00:00.000Z",
      releasedAt: "2026-03-01T10:05:00.000Z",
      durationSeconds: 300,
      reason: "released",
    });
    expect(deviceAfter(held, other, NOW)).toBe(held);
    expect(deviceAfter(held, event("quota.renewed", "alice", { validUntil: "2026-04-01T00:00:00.000Z", extensionDays: 30 }), NOW)).toBe(
      held,
    );
    expect(deviceAfter(null, allocated, NOW)).toBeNull();
  });
});
