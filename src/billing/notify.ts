/**
 * Delivers billing events (written to `notifications` in the same batch as the change they
 * report) to the user's object, which appends them to the feed once per key. Anything not
 * delivered now is picked up by the cron, so an event is late at worst, never lost.
 * Low balances also go to the operators' feed, under the same key, before the row is marked.
 */
import { and, asc, eq, inArray, isNull, sql } from "drizzle-orm";
import { BILLING } from "../config";
import type { Env } from "../env";
import { notifications } from "../db/schema";
import { dbOf } from "../db/client";
import type { FeedEvents, FeedEventType } from "../feed/protocol";
import { adminFeed } from "../objects/operators";
import { log } from "../log";
import { take } from "../rpc";

/**
 * An operator event that is a by-product of something already stored (a dead letter, a
 * reconciliation report): the stored record stays the truth, so a failure is logged, not thrown.
 */
export async function notifyOperators<K extends FeedEventType>(
  env: Env,
  key: string,
  type: K,
  userId: string,
  data: FeedEvents[K],
): Promise<boolean> {
  try {
    await take(adminFeed(env).publish(key, type, userId, data));
    return true;
  } catch (err) {
    log("warn", "operator event not published", { userId, key, type, error: String(err) });
    return false;
  }
}

export async function deliverNotifications(
  env: Env,
  userIds?: string[],
  limit: number = BILLING.notificationsPerRun,
): Promise<{ delivered: number; failed: number }> {
  const db = dbOf(env);
  let delivered = 0;
  let failed = 0;
  try {
    const pending = await db
      .select()
      .from(notifications)
      .where(and(isNull(notifications.deliveredAt), userIds ? inArray(notifications.userId, userIds.slice(0, 90)) : undefined))
      .orderBy(asc(notifications.createdAt), asc(notifications.key))
      .limit(limit);
    const byUser = new Map<string, typeof pending>();
    for (const n of pending) byUser.set(n.userId, [...(byUser.get(n.userId) ?? []), n]);
    await Promise.all(
      [...byUser].map(async ([userId, items]) => {
        const stub = env.USER_QUOTA.getByName(userId);
        for (const n of items) {
          try {
            const data = JSON.parse(n.data) as Record<string, unknown>;
            await take(stub.externalEvent(userId, n.key, n.type as FeedEventType, data as never));
            // Operators see low balances too; a failure here leaves the row pending, and the retry is deduplicated on both feeds.
            if (n.type === "billing.low_balance")
              await take(
                adminFeed(env).publish(n.key, "billing.low_balance", userId, {
                  ...data,
                  userId,
                } as FeedEvents["billing.low_balance"]),
              );
            await db.update(notifications).set({ deliveredAt: Date.now() }).where(eq(notifications.key, n.key));
            delivered++;
          } catch (err) {
            failed++;
            await db
              .update(notifications)
              .set({ attempts: sql`${notifications.attempts} + 1` })
              .where(eq(notifications.key, n.key))
              .catch(() => {});
            log("warn", "billing event not delivered yet", { userId, key: n.key, error: String(err) });
            return; // keep this user's events in order: the rest wait for the next run
          }
        }
      }),
    );
  } catch (err) {
    log("warn", "billing events could not be read", { error: String(err) });
  }
  return { delivered, failed };
}
