/**
 * The live feed's HTTP side: tickets, and the WebSocket upgrades for the user, admin and
 * device feeds. The Worker checks the ticket (signature, expiry, which feed) before any
 * object wakes, then forwards the upgrade to the object that holds the feed, which checks
 * single use and accepts the socket for hibernation. Refusals of an upgrade are sent as a
 * close code with a `feed.error` frame (a browser never sees an HTTP status of a failed
 * handshake); a plain HTTP request gets the usual JSON error.
 */
import type { Context } from "hono";
import { requireUser, type AppEnv } from "../auth";
import { newApp } from "../app-factory";
import { IDS } from "../config";
import type { Env } from "../env";
import { errorBody, fail, ok, type ErrorCode, type Failure } from "../errors";
import { FEED_HEADER, refuseSocket, type FeedRequest } from "../objects/feed";
import { CLOSE, type FeedKind } from "../feed/protocol";
import { mintTicket, readTicket, scopeOf } from "../feed/tickets";
import { jsonBody, route } from "../openapi";
import { ErrorSchema, FEED_SINCE, Id, TicketBody, TicketResult } from "../schemas";
import { z } from "@hono/zod-openapi";
import { device, pool, reply, userQuota } from "./helpers";
import { adminFeed } from "../objects/operators";
import { missingDevice, missingPool } from "../registry";
import { userExists } from "./addressed-user";

const security = [{ bearer: [] }];

export function feedRoutes() {
  const app = newApp();

  app.openapi(
    route({
      method: "post",
      operationId: "createFeedTicket",
      path: "/ws/ticket",
      tags: ["feed"],
      security,
      summary: "A single-use ticket (60 s) to open a feed as a WebSocket",
      description:
        "Open `url` as a WebSocket within 60 seconds. Frames are `{seq, type, userId, data, timestamp}`; " +
        "send `ping` to keep it alive (answered `pong`). " +
        "Reconnect with `&since=<last seq>` and a new ticket to get what you missed.",
      request: jsonBody(TicketBody, false),
      ok: { status: 201, schema: TicketResult, description: "The ticket" },
    }),
    async (c) => {
      const p = requireUser(c);
      // No body means the caller's own feed.
      const b = (c.req.valid("json") ?? {}) as { feed?: FeedKind; deviceId?: string; pool?: string; userId?: string };
      const feed = b.feed ?? "user";
      // The one thing a ticket names besides its feed (your own id names your own feed).
      const name = feed === "pool" ? b.pool : feed === "device" ? b.deviceId : b.userId === p.userId ? undefined : b.userId;
      if (needsAdmin(feed, name) && p.role !== "admin")
        return reply(
          c,
          fail(403, "FORBIDDEN", feed === "user" ? "Another user's feed needs the admin role." : `The ${feed} feed needs the admin role.`),
        );
      // A ticket names a device, pool or user that exists (so its feed can open).
      const missing = await missingTarget(c.env, feed, name);
      if (missing) return reply(c, missing);
      const t = await mintTicket(c.env, p, scopeOf(feed, name));
      return reply(
        c,
        ok({
          ticket: t.ticket,
          expiresAt: new Date(t.expiresAt).toISOString(),
          feed,
          url: `${feedPath(feed, name)}?ticket=${encodeURIComponent(t.ticket)}`,
        }),
        201,
      );
    },
  );

  // The upgrade paths are documented for readers (OpenAPI has no WebSocket operations; they carry `x-websocket`).
  for (const [path, summary, operationId, name] of [
    ["/ws", 'Your feed (ticket from POST /ws/ticket with feed "user")', "openUserFeed", null],
    [
      "/ws/users/{userId}",
      'A user\'s feed, watched by an admin (ticket with feed "user" and their userId): their events as they see them',
      "watchUserFeed",
      "userId",
    ],
    ["/ws/admin", "The operators' feed (admin ticket)", "openAdminFeed", null],
    ["/ws/devices/{deviceId}", "A device you hold (device ticket); admins may watch any device", "openDeviceFeed", "deviceId"],
    [
      "/ws/pools/{pool}",
      "A pool's devices, live (pool ticket, admins): the hello's state is the pool's devices, then `pool.device` on every change",
      "openPoolFeed",
      "pool",
    ],
  ] as const) {
    app.openAPIRegistry.registerPath({
      method: "get",
      path,
      operationId,
      tags: ["feed"],
      summary,
      description:
        "WebSocket upgrade. Query: `ticket` (required, single use), `since` (last seq you received; replays what you missed). " +
        "Refusals close the socket: 4400 bad query, 4401 ticket invalid/used/expired, 4403 not allowed, " +
        "4404 no such device, pool or user, 4429 too many sockets or messages. A plain GET gets 426.",
      "x-websocket": true,
      "x-close-codes": CLOSE,
      security: [{ ticket: [] }],
      request: {
        params: name ? z.object({ [name]: Id }) : undefined,
        query: z.object({ since: z.string().regex(FEED_SINCE).optional().openapi({ description: "The last seq you received" }) }),
      },
      responses: {
        101: { description: "Switching protocols" },
        426: { description: "Not a WebSocket upgrade", content: { "application/json": { schema: ErrorSchema } } },
      },
    } as never);
  }
  app.get("/ws", (c) => open(c, "user"));
  app.get("/ws/users/:userId", (c) => open(c, "user", c.req.param("userId")));
  app.get("/ws/admin", (c) => open(c, "admin"));
  app.get("/ws/devices/:deviceId", (c) => open(c, "device", c.req.param("deviceId")));
  app.get("/ws/pools/:pool", (c) => open(c, "pool", c.req.param("pool")));

  return app;
}

/** `name`: the device of a device feed, the pool of a pool feed, the watched user of an admin's user feed. */
async function open(c: Context<AppEnv>, feed: FeedKind, name?: string): Promise<Response> {
  const upgrade = c.req.header("Upgrade")?.toLowerCase() === "websocket";
  const refuse = (status: 400 | 401 | 403 | 404, close: number, code: ErrorCode, message: string) =>
    upgrade ? refuseSocket(close, code, message) : c.json(errorBody(fail(status, code, message)), status);
  if (!upgrade)
    return c.json(
      errorBody(fail(426, "UPGRADE_REQUIRED", "Open this path as a WebSocket (get a ticket from POST /ws/ticket first).")),
      426,
    );
  const q = c.req.query();
  const unknown = Object.keys(q).filter((k) => k !== "ticket" && k !== "since");
  if (unknown.length)
    return refuse(400, CLOSE.badRequest, "VALIDATION_FAILED", `Unknown query parameter: ${unknown.join(", ")}. Use ticket and since.`);
  if (q.since !== undefined && !FEED_SINCE.test(q.since))
    return refuse(400, CLOSE.badRequest, "VALIDATION_FAILED", "since: the last seq you received, a whole number ≥ 0.");
  if (name !== undefined && !IDS.pattern.test(name))
    return feed === "pool"
      ? refuse(404, CLOSE.notFound, "POOL_NOT_FOUND", "No such pool.")
      : feed === "user"
        ? refuse(404, CLOSE.notFound, "USER_NOT_FOUND", "No such user.")
        : refuse(404, CLOSE.notFound, "DEVICE_NOT_FOUND", "No such device.");
  const t = await readTicket(c.env, q.ticket, scopeOf(feed, name));
  if (!t)
    return refuse(
      401,
      CLOSE.unauthorized,
      "TICKET_INVALID",
      "The ticket is missing, expired or for another feed; get a new one from POST /ws/ticket.",
    );
  // Checked again at the object; a role inside a signed ticket cannot be forged.
  if (needsAdmin(feed, name) && t.role !== "admin")
    return refuse(403, CLOSE.forbidden, "FORBIDDEN", `The ${feed} feed needs the admin role.`);
  // Addressing an unknown device or pool would create its object: the registry is asked first
  // (a user a ticket names was checked when it was minted, a minute ago at most).
  const missing = feed === "user" ? null : await missingTarget(c.env, feed, name);
  if (missing) return refuse(404, CLOSE.notFound, missing.code, missing.message);
  const f: FeedRequest = {
    userId: t.userId,
    role: t.role,
    feed,
    nonce: t.nonce,
    ticketExpiresAt: t.expiresAt,
    since: q.since === undefined ? undefined : Number(q.since),
    ...(feed === "pool" ? { pool: name } : feed === "user" ? { watching: name } : { deviceId: name }),
  };
  return feedObject(c.env, f).fetch("https://feed.internal/ws", {
    headers: { Upgrade: "websocket", [FEED_HEADER]: JSON.stringify(f) },
  });
}

/** The admin's feed, the pool feed and another user's feed are for admins. */
function needsAdmin(feed: FeedKind, name: string | undefined): boolean {
  return feed === "admin" || feed === "pool" || (feed === "user" && name !== undefined);
}

async function missingTarget(env: Env, feed: FeedKind, name: string | undefined): Promise<Failure | null> {
  if (feed === "device") return missingDevice(env, name!);
  if (feed === "pool") return missingPool(env, name!);
  if (feed === "user" && name !== undefined && !(await userExists(env, name)))
    return fail(404, "USER_NOT_FOUND", `No user "${name}": nobody with this id has used the service.`, { userId: name });
  return null;
}

function feedPath(feed: FeedKind, name: string | undefined): string {
  if (feed === "admin") return "/ws/admin";
  if (feed === "user") return name === undefined ? "/ws" : `/ws/users/${encodeURIComponent(name)}`;
  return `/ws/${feed === "pool" ? "pools" : "devices"}/${encodeURIComponent(name!)}`;
}

function feedObject(env: Env, f: FeedRequest) {
  if (f.feed === "user") return userQuota(env, f.watching ?? f.userId);
  if (f.feed === "device") return device(env, f.deviceId!);
  if (f.feed === "pool") return pool(env, f.pool!);
  return adminFeed(env);
}
