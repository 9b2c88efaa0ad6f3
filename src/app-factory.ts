/** Every router is made here, so validation failures get the one error shape everywhere. */
import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "./auth";
import { errorBody, fail } from "./errors";

export function newApp() {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (!result.success) {
        const issues = result.error.issues.map((i) => ({ path: i.path.join("."), message: i.message }));
        const message = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join("; ");
        return c.json(errorBody(fail(400, "VALIDATION_FAILED", message, { issues })), 400);
      }
    },
  });
}
