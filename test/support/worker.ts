/**
 * The Worker the workers projects run (vitest.config.ts `main`): the real entry, with every
 * HTTP answer held against the OpenAPI document (test/support/answers.ts) before the test
 * reads it. The objects, the queue consumer and the cron are the entry's own.
 */
import entry from "../../src/index";
import type { Env } from "../../src/env";
import { checkAnswer } from "./answers";

export { UserQuota, Device, DevicePool, AdminFeed } from "../../src/index";

export default {
  ...entry,
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const { method, url } = request;
    const response = await entry.fetch(request, env, ctx);
    await checkAnswer(method, url, response);
    return response;
  },
} satisfies ExportedHandler<Env, unknown>;
