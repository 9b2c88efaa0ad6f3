/** The Hono app: middleware, one error shape, the routes and the OpenAPI document. */
import { newApp } from "./app-factory";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import type { Context, MiddlewareHandler } from "hono";
import { requireAdmin, requireAdminOrService, requireService, requireUser, type AppEnv } from "./auth";
import { FLEET, MAX_BODY_BYTES, secretProblems } from "./config";
import { HttpError, errorBody, fail, internalFailure, type ErrorStatus } from "./errors";
import { identify } from "./limits";
import { log } from "./log";
import { adminRoutes } from "./routes/admin";
import { accessRoutes } from "./routes/access";
import { auditRoutes } from "./routes/audit";
import { tokenRoutes } from "./routes/tokens";
import { billingRoutes } from "./routes/billing";
import { quotaRoutes } from "./routes/quotas";
import { schedulerRoutes } from "./routes/scheduler";
import { catalogueRoutes } from "./routes/catalogue";
import { queueRoutes } from "./routes/queue";
import { feedRoutes } from "./routes/feed";
import { eventRoutes } from "./routes/events";
import { batchRoutes } from "./routes/batch";
import { metricsRoutes } from "./routes/metrics";
import { fleetRoutes } from "./routes/fleet";

/** The OpenAPI document's own fields (the paths come from the routes); test/unit/openapi.test.ts lints the result. */
export const DOCUMENT = {
  openapi: "3.1.0",
  // Relative: the document describes the deployment that serves it.
  servers: [{ url: "/", description: "This deployment" }],
  info: {
    title: "Edge device allocator",
    version: "0.1.0",
    description: "Device allocation, quota and metering on Durable Objects.",
  },
};

export function createApp() {
  const app = newApp();

  // One log line per request: who, what, the outcome, and the allocation it touched (never the
  // query string: feed tickets travel there).
  app.use("*", async (c, next) => {
    const started = Date.now();
    c.set("requestId", c.req.header("cf-ray") ?? crypto.randomUUID());
    await next();
    c.header("X-Request-Id", c.get("requestId"));
    const p = c.get("principal");
    const status = c.res.status;
    log(status >= 500 ? "error" : "info", "request", {
      requestId: c.get("requestId"),
      userId: p?.kind === "user" ? p.userId : null,
      allocationId: c.get("allocationId"),
      method: c.req.method,
      path: c.req.path,
      status,
      ms: Date.now() - started,
      ...(p?.kind === "service" ? { caller: "service" } : {}),
    });
  });
  // API answers are never sniffed into another content type.
  app.use("*", async (c, next) => {
    await next();
    c.header("X-Content-Type-Options", "nosniff");
  });
  // A Worker without sound secrets serves nothing (its tokens and feed tickets could be forged).
  app.use("*", async (c, next) => {
    const problems = secretProblems(c.env);
    if (problems.length === 0) return next();
    log("error", "refusing to serve: the secrets are not configured", { problems });
    const message = "The service is not configured: its secrets are missing or unsafe. An operator must set them.";
    return c.json(errorBody(fail(503, "SERVICE_MISCONFIGURED", message, { problems })), 503);
  });
  const limitTo = (maxSize: number) =>
    bodyLimit({
      maxSize,
      onError: (c) => c.json(errorBody(fail(413, "PAYLOAD_TOO_LARGE", `Request bodies are limited to ${maxSize} bytes.`)), 413),
    });
  // A bulk import of the fleet may be larger than any other body.
  const bodies = limitTo(MAX_BODY_BYTES);
  const bulkBodies = limitTo(FLEET.bulkMaxBodyBytes);
  app.use("*", (c, next) => (c.req.method === "POST" && /^\/admin\/devices\/bulk\/?$/.test(c.req.path) ? bulkBodies : bodies)(c, next));
  // Who calls, and fair use (src/limits.ts): counted by who calls, before any object is reached.
  app.use("*", identify);
  // Who may call is checked here, before any body is validated, so a stranger or a
  // non-admin learns nothing from 400s. Handlers still check the acting user.
  const gate =
    (check: (c: Context<AppEnv>) => unknown): MiddlewareHandler<AppEnv> =>
    async (c, next) => {
      check(c);
      await next();
    };
  app.use("/scheduler/*", gate(requireUser));
  app.use("/quotas/*", gate(requireUser));
  app.use("/admin/*", gate(requireAdmin));
  app.on("PUT", "/quotas/user/*", gate(requireAdmin));
  app.on("POST", "/quotas/renew/*", gate(requireAdmin));
  // Top-ups come from an operator or a payment service; the rest of /billing is for users.
  app.use(
    "/billing/*",
    gate((c) =>
      c.req.method === "POST" && /^\/billing\/users\/[^/]+\/top-ups\/?$/.test(c.req.path) ? requireAdminOrService(c) : requireUser(c),
    ),
  );
  app.use("/metering/*", gate(requireUser));
  app.use("/metering/devices/*", gate(requireAdmin));
  app.use("/api/internal/*", gate(requireService));
  app.use("/ws/ticket", gate(requireUser));

  app.get("/", (c) => c.json({ service: "edge-device-allocator", docs: "/openapi.json", reference: "/docs/", console: "/console/" }));
  app.route("/", schedulerRoutes());
  app.route("/", catalogueRoutes());
  app.route("/", queueRoutes());
  app.route("/", quotaRoutes());
  app.route("/", adminRoutes());
  // GET /admin/devices (the fleet) and POST /admin/devices/bulk (gated by /admin/* above: admins only)
  app.route("/", fleetRoutes());
  // Device access: PUT /admin/… and /api/internal/devices/{id}/access (gated above), the holder's
  // renewal, and GET /.well-known/jwks.json (public)
  app.route("/", accessRoutes());
  // GET /admin/audit and POST /admin/users/{userId}/tokens/revoke (gated by /admin/* above: admins only)
  app.route("/", auditRoutes());
  app.route("/", tokenRoutes());
  app.route("/", billingRoutes());
  app.route("/", feedRoutes());
  app.route("/", eventRoutes());
  // batch: POST /scheduler/batch/* (gated by /scheduler/* above: users and admins)
  app.route("/", batchRoutes());
  // GET /admin/metrics (gated by /admin/* above: admins only)
  app.route("/", metricsRoutes());

  app.doc31("/openapi.json", DOCUMENT);
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "ticket", {
    type: "apiKey",
    in: "query",
    name: "ticket",
    description: "A single-use feed ticket from POST /ws/ticket (60 s).",
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "service", {
    type: "apiKey",
    in: "header",
    name: "X-Service-Token",
  });

  app.notFound((c) => c.json(errorBody(fail(404, "ROUTE_NOT_FOUND", `No route for ${c.req.method} ${new URL(c.req.url).pathname}.`)), 404));

  app.onError((err, c) => {
    if (err instanceof HttpError) return c.json(errorBody(err.failure), err.failure.status);
    if (err instanceof HTTPException) {
      const status = err.status as ErrorStatus;
      const code =
        status === 415 ? "UNSUPPORTED_MEDIA_TYPE" : status === 413 ? "PAYLOAD_TOO_LARGE" : status === 400 ? "INVALID_JSON" : "BAD_REQUEST";
      const message = status === 415 ? "Send the body as application/json." : err.message || "Bad request.";
      return c.json(errorBody(fail(status, code, message)), status < 500 ? status : 400);
    }
    return c.json(errorBody(internalFailure(err, { requestId: c.get("requestId"), path: c.req.path })), 500);
  });
  return app;
}
