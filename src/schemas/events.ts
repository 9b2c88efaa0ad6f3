/** App events from other services (POST /api/internal/events) and the operators' event list (src/routes/events.ts). */
import { z } from "@hono/zod-openapi";
import { APP_EVENTS } from "../config";
import { ErrorItem, Id, Limit, Time } from "./common";
import { FEED_SINCE } from "./feed";
import { withDefault } from "./parts";
import { APP_EVENT_TYPES, FEED_EVENT_TYPES } from "../feed/protocol";

/** Free text shown to users: bounded, no control characters (tab and newline allowed in `reason`). */
const Text = (max: number, multiline = false) =>
  z
    .string()
    .min(1)
    .max(max)
    .regex(multiline ? /^[^\u0000-\u0008\u000b-\u001f\u007f]*$/ : /^[^\u0000-\u001f\u007f]*$/, "no control characters");

/** ISO 8601 with a zone, stored as UTC ISO; absent means "now" (as the old system did). */
const EventTime = withDefault(
  z.iso.datetime({ offset: true }).transform((s) => new Date(s).toISOString()),
  () => new Date().toISOString(),
  "ISO 8601 with Z or an offset; default: when received. Stored as UTC.",
);

const appFields = { userId: Id, appId: Text(APP_EVENTS.maxName), appName: Text(APP_EVENTS.maxName), deviceId: Id };
const EventId = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[A-Za-z0-9._:@-]+$/, "letters, digits and . _ : @ - only")
  .openapi({ description: "The sender's id of this event: a retried send with the same id is shown once." });

const appEvent = <T extends string, D extends z.ZodRawShape>(type: T, data: D) =>
  z.object({ type: z.literal(type), eventId: EventId.optional(), data: z.object(data).strict() }).strict();

export const AppEvent = z
  .discriminatedUnion("type", [
    appEvent("app.installed", {
      ...appFields,
      deviceName: Text(APP_EVENTS.maxName).optional(),
      version: Text(APP_EVENTS.maxVersion),
      installedAt: EventTime,
    }),
    appEvent("app.install_failed", {
      ...appFields,
      deviceName: Text(APP_EVENTS.maxName).optional(),
      reason: Text(APP_EVENTS.maxReason, true),
      failedAt: EventTime,
    }),
    appEvent("app.updated", {
      ...appFields,
      oldVersion: Text(APP_EVENTS.maxVersion),
      newVersion: Text(APP_EVENTS.maxVersion),
      updatedAt: EventTime,
    }),
  ])
  .openapi("AppEvent");

export const AppEventBatch = z
  .object({ events: z.array(AppEvent).min(1).max(APP_EVENTS.maxBatch) })
  .strict()
  .openapi("AppEventBatch");
export const AppEventsBody = z
  .union([AppEvent, AppEventBatch])
  .openapi("AppEventsBody", { description: "One event, or `{events: [...]}` (1 to 100)" });

const AppEventOutcome = z.object({
  eventId: z.string().nullable(),
  type: z.enum(APP_EVENT_TYPES),
  userId: z.string(),
  seq: z.number().optional().openapi({ description: "The event's seq on the user's feed" }),
  duplicate: z.boolean().optional().openapi({ description: "True when this eventId was shown before (nothing new was sent)" }),
  error: ErrorItem.optional().openapi({ description: "Batches only: this item was not written; send it again" }),
});
export const AppEventsResult = z
  .object({ accepted: z.number(), duplicates: z.number(), failed: z.number(), results: z.array(AppEventOutcome) })
  .openapi("AppEventsResult");

export const AdminEventsQuery = z
  .object({
    since: z.string().regex(FEED_SINCE, "the last seq you received, a whole number ≥ 0").transform(Number).optional(),
    limit: Limit,
  })
  .strict();

/** One logged event of a feed, as the event lists show it: the same envelope as the WebSocket frames. */
export const FeedEventView = z
  .object({
    seq: z.number().int().openapi({ description: "The event's place in its feed (1, 2, 3…); pass the last one you have as `since`" }),
    type: z.enum(FEED_EVENT_TYPES),
    userId: z.string().openapi({ description: "The user the event is about" }),
    data: z.record(z.string(), z.unknown()).openapi({
      description:
        "Free-form per `type`: each type's fields are listed in docs/feeds.md and typed in src/feed/protocol.ts (FeedEvents). " +
        "The one object the document leaves open.",
    }),
    timestamp: Time.openapi({
      description: "When the event was logged, ISO 8601 UTC (the envelope is the WebSocket frame's, byte for byte)",
    }),
  })
  .openapi("FeedEvent");

export const UserEventsPage = z
  .object({
    events: z.array(FeedEventView).openapi({ description: "Oldest first" }),
    oldestSeq: z.number().int().nullable().openapi({ description: "Oldest seq still kept (null: the log is empty)" }),
    lastSeq: z.number().int().openapi({ description: "The newest seq of the feed (0: none yet)" }),
  })
  .openapi("UserEventsPage");

export const AdminEventsPage = UserEventsPage.extend({
  nextSince: z.number().int().nullable().openapi({ description: "Pass as `since` for the next page (null: you are at the end)" }),
}).openapi("AdminEventsPage");
