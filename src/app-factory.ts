/** Every router is made here, so validation failures get the one error shape everywhere. */
import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "./auth";
import { errorBody, fail, type Failure } from "./errors";

/**
 * The one VALIDATION_FAILED failure for zod issues: each issue as `{path, message}` (path
 * dot-joined), the message all of them joined. Batch routes use it per item.
 */
export function validationFailure(zodIssues: readonly { path: readonly PropertyKey[]; message: string }[]): Failure {
  const issues = zodIssues.map((i) => ({ path: i.path.map(String).join("."), message: i.message }));
  const message = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join("; ");
  return fail(400, "VALIDATION_FAILED", message, { issues });
}

export function newApp() {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (!result.success) return c.json(errorBody(validationFailure(result.error.issues)), 400);
    },
  });
}
