/**
 * What a Device must tell others, by kind, and how each is delivered: the device writes them to
 * its outbox in the transaction of the change they describe, and the outbox calls these until
 * they succeed (see src/objects/outbox.ts), so nothing is lost across crashes or restarts.
 */
import type { DeviceState } from "../../src/contracts";
import type { EndedAllocation, UsageRecord } from "../../src/domain/types";
import type { Env } from "../../src/env";
import type { FeedEvents } from "../../src/feed/protocol";
import { adminFeed } from "../../src/objects/operators";
import { take } from "../../src/rpc";

export interface Messages {
  user_ended: EndedAllocation;
  user_event: { userId: string } & DeviceUserEvent;
  pool_state: { pool: string; state: DeviceState };
  usage: { record: UsageRecord; confirmed: boolean };
  admin_event: { key: string; userId: string } & (
    { type: "device.status"; data: FeedEvents["device.status"] } | { type: "device.draining"; data: FeedEvents["device.draining"] }
  );
}

/** What a device tells its holder's user feed: the expiry warning, and a drain of the device they hold. */
export type DeviceUserEvent =
  { type: "device.expiring"; data: FeedEvents["device.expiring"] } | { type: "device.draining"; data: FeedEvents["device.draining"] };

/** One handler per outbox kind: true when delivered; false to try again later without counting a failure. */
export function deliveries(env: Env): { [K in keyof Messages]: (payload: Messages[K]) => Promise<boolean> } {
  const user = (id: string) => env.USER_QUOTA.getByName(id);
  return {
    user_ended: async (p) => (await take(user(p.userId).deviceEnded(p)), true),
    user_event: async (p) => (await take(user(p.userId).deviceEvent(p)), true),
    pool_state: async (p) => (await take(env.DEVICE_POOL.getByName(p.pool).deviceState(p.pool, p.state)), true),
    // The key makes a redelivery show once on the admin feed.
    admin_event: async (p) => (await take(adminFeed(env).publish(p.key, p.type, p.userId, p.data)), true),
    usage: async (p) => {
      if (!p.confirmed) {
        // Ended before its user confirmed it: bill only if the user knows the allocation.
        const answer = await take(user(p.record.userId).verify(p.record.allocationId, p.record.deviceId));
        if (answer === "pending") return false;
        if (answer === "unknown") return true; // never the user's: nothing to bill
      }
      await env.USAGE_QUEUE.send(p.record, { contentType: "json" });
      return true;
    },
  };
}
