/** Worker entry: HTTP (Hono), the usage queue consumer and the cron trigger. */
import { createApp } from "./app";
import type { Env } from "./config";
import type { UsageRecord } from "./domain/types";
import { handleUsageBatch } from "./queue";

export { UserQuota } from "../durable-objects/UserQuota";
export { Device } from "../durable-objects/Device";
export { DevicePool } from "../durable-objects/DevicePool";

const app = createApp();

export default {
  fetch: app.fetch,
  async queue(batch: MessageBatch<UsageRecord>, env: Env): Promise<void> {
    // Both the usage queue and its dead-letter queue write the same idempotent row: a record
    // that exhausted its retries gets another, slower round instead of being dropped.
    // (Storing dead letters for replay, `failed_usage`, comes with billing.)
    await handleUsageBatch(batch, env);
  },
  async scheduled(): Promise<void> {
    // Reconciliation and invoices arrive with billing; expiry needs no cron (alarms).
  },
} satisfies ExportedHandler<Env, UsageRecord>;
