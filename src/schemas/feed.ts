/** The live feed (src/routes/feed.ts): tickets, and the `since` of a feed URL. */
import { z } from "@hono/zod-openapi";
import { Id } from "./common";
import { withDefault } from "./parts";

export const TicketBody = z
  .object({
    feed: withDefault(
      z.enum(["user", "admin", "device", "pool"]),
      "user",
      "Which feed the ticket opens: your own (`user`; with `userId`, that user's, admins only), " +
        "the operators' (`admin`, admins only), a device you hold (`device`) or a pool's devices (`pool`, admins only).",
    ),
    userId: Id.optional().openapi({
      description: 'With `feed: "user"`: whose feed to watch (admins only; your own id is the same as none).',
    }),
    deviceId: Id.optional().openapi({ description: 'With `feed: "device"`: the device to watch.' }),
    pool: Id.optional().openapi({ description: 'With `feed: "pool"`: the pool to watch.' }),
  })
  .strict()
  .superRefine((b, ctx) => {
    if (b.feed === "device" && !b.deviceId)
      ctx.addIssue({ code: "custom", path: ["deviceId"], message: "a device ticket names its deviceId" });
    if (b.feed !== "device" && b.deviceId)
      ctx.addIssue({ code: "custom", path: ["deviceId"], message: 'deviceId goes with feed "device" only' });
    if (b.feed !== "user" && b.userId) ctx.addIssue({ code: "custom", path: ["userId"], message: 'userId goes with feed "user" only' });
    if (b.feed === "pool" && !b.pool) ctx.addIssue({ code: "custom", path: ["pool"], message: "a pool ticket names its pool" });
    if (b.feed !== "pool" && b.pool) ctx.addIssue({ code: "custom", path: ["pool"], message: 'pool goes with feed "pool" only' });
  })
  .openapi("TicketRequest");

export const TicketResult = z
  .object({
    ticket: z.string(),
    expiresAt: z.string(),
    feed: z.enum(["user", "admin", "device", "pool"]),
    url: z.string().openapi({ description: "Path to open as a WebSocket (add `&since=<last seq>` to resume)." }),
  })
  .openapi("Ticket");

/** `since` on a feed URL: a plain decimal seq (checked by hand: a bad one closes the socket with 4400). */
export const FEED_SINCE = /^(0|[1-9][0-9]{0,14})$/;
