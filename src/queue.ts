/**
 * Queue consumers. The usage queue books each record (usage row + charge, idempotent on
 * `allocationId`); each message is acked or retried on its own with exponential backoff,
 * so one bad record never holds back the batch and a redelivered one changes nothing.
 * After its retries a message goes to the dead-letter queue, whose consumer keeps it in
 * `failed_usage` for an operator to replay (reconciliation would heal it too), and tells
 * the operators' feed (best effort: `failed_usage` is the durable list).
 */
import { sql } from "drizzle-orm";
import { usageRetryDelay } from "./config";
import type { Env } from "./env";
import { failedUsage } from "./db/schema";
import type { UsageRecord } from "./domain/types";
import { dbOf } from "./db/client";
import { applyUsage } from "./billing/usage";
import { notifyOperators } from "./billing/notify";
import { UsageRecordMessage } from "./schemas";
import { log } from "./log";
import { addCounters } from "./counters";

export const USAGE_QUEUE = "device-usage";
export const USAGE_DLQ = "device-usage-dlq";

export async function handleUsageBatch(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  if (batch.queue === USAGE_DLQ) return handleDeadLetters(batch, env);
  const valid: Message<unknown>[] = [];
  const records: UsageRecord[] = [];
  let invalid = 0;
  for (const msg of batch.messages) {
    const parsed = UsageRecordMessage.safeParse(msg.body);
    if (parsed.success) {
      valid.push(msg);
      records.push(parsed.data);
    } else {
      // Retrying cannot fix a malformed record: keep it for an operator and move on.
      if (
        await keepFailed(
          env,
          msg,
          "invalid",
          `invalid usage record: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`,
        )
      )
        invalid++;
    }
  }
  let outcomes;
  try {
    outcomes = await applyUsage(env, records, "device");
  } catch (err) {
    // Accounts could not be read (D1 down?): every record waits and tries again.
    log("error", "usage batch failed", { queue: batch.queue, size: valid.length, error: String(err) });
    for (const msg of valid) msg.retry({ delaySeconds: usageRetryDelay(env, msg.attempts) });
    await addCounters(env, {
      usage_reports_sent: 0,
      usage_reports_failed: valid.length,
      usage_reports_dead_lettered: invalid,
    });
    return;
  }
  let failed = 0;
  outcomes.forEach((o, i) => {
    const msg = valid[i]!;
    if (o.status === "failed") {
      failed++;
      log("error", "usage write failed", {
        userId: records[i]!.userId,
        allocationId: o.allocationId,
        deviceId: records[i]!.deviceId,
        attempts: msg.attempts,
        error: o.error,
      });
      msg.retry({ delaySeconds: usageRetryDelay(env, msg.attempts) });
    } else {
      msg.ack();
    }
  });
  // A malformed record is kept for an operator at once (retrying cannot fix it): dead-lettered.
  await addCounters(env, {
    usage_reports_sent: valid.length - failed,
    usage_reports_failed: failed,
    usage_reports_dead_lettered: invalid,
  });
}

async function handleDeadLetters(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  let kept = 0;
  for (const msg of batch.messages) {
    const parsed = UsageRecordMessage.safeParse(msg.body);
    if (
      await keepFailed(
        env,
        msg,
        parsed.success ? "failed" : "invalid",
        parsed.success ? "usage queue retries exhausted" : "invalid usage record",
      )
    )
      kept++;
  }
  await addCounters(env, { usage_reports_sent: 0, usage_reports_failed: 0, usage_reports_dead_lettered: kept });
}

/** Stores a message in `failed_usage` (idempotent per allocation), then acks (true); retries if D1 refuses (false). */
async function keepFailed(env: Env, msg: Message<unknown>, status: "failed" | "invalid", error: string): Promise<boolean> {
  const body = msg.body as Partial<UsageRecord> | null;
  const allocationId = typeof body?.allocationId === "string" && body.allocationId ? body.allocationId.slice(0, 300) : `message:${msg.id}`;
  const now = Date.now();
  let kept: { status: string } | undefined;
  try {
    [kept] = await dbOf(env)
      .insert(failedUsage)
      .values({
        allocationId,
        userId: typeof body?.userId === "string" ? body.userId.slice(0, 128) : null,
        record: JSON.stringify(msg.body ?? null).slice(0, 100_000),
        error,
        attempts: msg.attempts,
        status,
        firstFailedAt: now,
        lastFailedAt: now,
      })
      .onConflictDoUpdate({
        target: failedUsage.allocationId,
        set: {
          attempts: sql`${failedUsage.attempts} + excluded.attempts`,
          lastFailedAt: now,
          error,
          // A record replayed or healed before stays so; a new failure of an open one is counted.
          status: sql`CASE WHEN ${failedUsage.status} IN ('replayed','resolved') THEN ${failedUsage.status} ELSE excluded.status END`,
        },
      })
      .returning({ status: failedUsage.status });
    msg.ack();
  } catch (err) {
    log("error", "dead letter could not be stored", { allocationId, attempts: msg.attempts, error: String(err) });
    msg.retry({ delaySeconds: usageRetryDelay(env, msg.attempts) });
    return false;
  }
  log("warn", "usage report kept as failed", {
    userId: typeof body?.userId === "string" ? body.userId : null,
    allocationId,
    attempts: msg.attempts,
    status: kept?.status,
    error,
  });
  // A late copy of a record already replayed or healed is no news. The key is per message, so a
  // redelivered message shows once; a new failure of the same allocation shows again.
  if (kept?.status !== "failed" && kept?.status !== "invalid") return true;
  const str = (v: unknown) => (typeof v === "string" ? v.slice(0, 128) : "");
  await notifyOperators(env, `usage_failed:${allocationId}:${msg.id}`, "billing.usage_failed", str(body?.userId), {
    allocationId,
    userId: str(body?.userId),
    deviceId: str(body?.deviceId),
    status: kept.status,
    error,
  });
  return true;
}
