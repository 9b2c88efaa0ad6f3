/**
 * Usage queue consumer: writes usage records into D1, idempotent on `allocationId`.
 * Each message is acked or retried on its own (with backoff by attempt), so one bad
 * record never holds back the batch. Pricing and charges come with billing.
 */
import { drizzle } from "drizzle-orm/d1";
import type { Env } from "./config";
import { usageRecords } from "./db/schema";
import type { UsageRecord } from "./domain/types";

export async function handleUsageBatch(batch: MessageBatch<UsageRecord>, env: Env): Promise<void> {
  const db = drizzle(env.DB);
  for (const msg of batch.messages) {
    try {
      const r = msg.body;
      await db
        .insert(usageRecords)
        .values({
          allocationId: r.allocationId, deviceId: r.deviceId, userId: r.userId, tenantId: r.tenantId ?? null,
          durationSeconds: r.durationSeconds, cpuCores: r.cpuCores, memoryMB: r.memoryMB, storageMB: r.storageMB,
          allocatedAt: r.allocatedAt, releasedAt: r.releasedAt, reason: r.reason, receivedAt: Date.now(),
        })
        .onConflictDoNothing();
      msg.ack();
    } catch (err) {
      console.error(JSON.stringify({ level: "error", msg: "usage write failed", allocationId: msg.body?.allocationId, attempts: msg.attempts, error: String(err) }));
      msg.retry({ delaySeconds: Math.min(300, 2 ** msg.attempts) });
    }
  }
}
