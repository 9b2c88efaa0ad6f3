/** Worker entry: HTTP (Hono), the usage queue consumers and the cron trigger. */
import { createApp } from "./app";
import type { Env } from "./env";
import { handleUsageBatch } from "./queue";
import { runBillingCron } from "./billing/cron";

export { UserQuota } from "../durable-objects/UserQuota";
export { Device } from "../durable-objects/Device";
export { DevicePool } from "../durable-objects/DevicePool";
export { AdminFeed } from "../durable-objects/AdminFeed";

const app = createApp();

export default {
  fetch: app.fetch,
  async queue(batch: MessageBatch<unknown>, env: Env): Promise<void> {
    // Usage is booked; dead letters are kept in `failed_usage` for replay.
    await handleUsageBatch(batch, env);
  },
  async scheduled(controller: ScheduledController, env: Env): Promise<void> {
    // Expiry needs no cron (alarms); billing housekeeping does.
    await runBillingCron(env, controller.scheduledTime);
  },
} satisfies ExportedHandler<Env, unknown>;
