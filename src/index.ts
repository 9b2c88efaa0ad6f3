/** Worker entry: HTTP (Hono), the usage queue consumers and the cron trigger. */
import { createApp } from "./app";
import type { Env } from "./env";
import { handleUsageBatch } from "./queue";
import { runBillingCron } from "./billing/cron";
import { metered, meterFrom, meteredFetch } from "./meter";

export { UserQuota } from "../durable-objects/UserQuota";
export { Device } from "../durable-objects/Device";
export { DevicePool } from "../durable-objects/DevicePool";
export { AdminFeed } from "../durable-objects/AdminFeed";

const app = createApp();

// With METER on (the benchmarks only) every entry counts what it costs (src/meter.ts).
export default {
  fetch(request: Request, env: Env, ctx: ExecutionContext): Response | Promise<Response> {
    if (!meterFrom(env)) return app.fetch(request, env, ctx);
    return meteredFetch(request, async () => app.fetch(request, metered(env), ctx));
  },
  async queue(batch: MessageBatch<unknown>, env: Env): Promise<void> {
    // Usage is booked; dead letters are kept in `failed_usage` for replay.
    await handleUsageBatch(batch, metered(env));
  },
  async scheduled(controller: ScheduledController, env: Env): Promise<void> {
    // Expiry needs no cron (alarms); billing housekeeping does.
    await runBillingCron(metered(env), controller.scheduledTime);
  },
} satisfies ExportedHandler<Env, unknown>;
