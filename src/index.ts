/** Worker entry: HTTP (Hono), the usage queue consumer and the cron trigger. */
import { createApp } from "./app";
import type { Env } from "./config";
import { handleUsageBatch } from "./queue";

export { UserQuota } from "../durable-objects/UserQuota";
export { Device } from "../durable-objects/Device";
export { DevicePool } from "../durable-objects/DevicePool";

const app = createApp();

export default {
  fetch: app.fetch,
  async queue(batch: MessageBatch<unknown>, env: Env): Promise<void> {
    // Usage is booked; dead letters are kept in `failed_usage` for replay.
    await handleUsageBatch(batch, env);
  },
  async scheduled(): Promise<void> {
    // Reconciliation and invoices arrive with billing; expiry needs no cron (alarms).
  },
} satisfies ExportedHandler<Env, unknown>;
