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
    // The dead-letter queue is drained by billing (issue: billing); until then its messages are kept by retrying.
    if (batch.queue.endsWith("-dlq")) {
      batch.retryAll({ delaySeconds: 3600 });
      return;
    }
    await handleUsageBatch(batch, env);
  },
  async scheduled(): Promise<void> {
    // Reconciliation and invoices arrive with billing; expiry needs no cron (alarms).
  },
} satisfies ExportedHandler<Env, UsageRecord>;
