/**
 * Events from outside the allocation path: app events reported by other services (to the
 * user's feed) and the operators' feed history. Who may call is gated in app.ts
 * (`/api/internal/*`: service token; `/admin/*`: admin).
 */
import { z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { AppEnv } from "../auth";
import { newApp, validationFailure } from "../app-factory";
import { PAGING } from "../config";
import { overLimit, rateLimited, retryAfter } from "../limits";
import type { Env } from "../env";
import { errorBody, fail, type ErrorCode } from "../errors";
import { adminFeed } from "../objects/operators";
import type { AppEventType, FeedEvents } from "../feed/protocol";
import { jsonBody, route } from "../openapi";
import { AdminEventsPage, AdminEventsQuery, AppEvent, AppEventBatch, AppEventsBody, AppEventsResult } from "../schemas";
import { userQuota } from "./helpers";
import type { FeedHistory } from "../objects/feed";
import { log } from "../log";
import { take } from "../rpc";

type AppEventInput = z.infer<typeof AppEvent>;
// The schema and the feed protocol must name the same app events.
const sameTypes: [AppEventInput["type"], AppEventType] extends [AppEventType, AppEventInput["type"]] ? true : never = true;
void sameTypes;

interface Outcome {
  eventId: string | null;
  type: string;
  userId: string;
  seq?: number;
  duplicate?: boolean;
  error?: { code: ErrorCode; message: string };
}

/**
 * A union's issues only say "Invalid input"; checking the body against the one shape it
 * claims to be (a batch has `events`) names the field that is wrong.
 */
function appEventsHook(result: { success: boolean }, c: Context<AppEnv>) {
  if (result.success) return;
  // On failure the validator passes the body as received in `data`.
  const raw = (result as { data?: unknown }).data;
  const isBatch = typeof raw === "object" && raw !== null && !Array.isArray(raw) && "events" in raw;
  const again = (isBatch ? AppEventBatch : AppEvent).safeParse(raw);
  return c.json(
    errorBody(validationFailure(again.success ? [{ path: [], message: "Send one event or {events: [...]}" }] : again.error.issues)),
    400,
  );
}

/** Appends each event to its user's feed; one user's events in order, users in parallel. */
async function deliver(env: Env, events: AppEventInput[]): Promise<Outcome[]> {
  const out: Outcome[] = new Array(events.length);
  const byUser = new Map<string, number[]>();
  events.forEach((e, i) => byUser.set(e.data.userId, [...(byUser.get(e.data.userId) ?? []), i]));
  await Promise.all(
    [...byUser].map(async ([userId, indexes]) => {
      const stub = userQuota(env, userId);
      for (const i of indexes) {
        const e = events[i]!;
        const base = { eventId: e.eventId ?? null, type: e.type, userId };
        // Each user's feed takes so many app events per period, whoever sends them.
        const limited = await overLimit(env, "target", userId);
        if (limited) {
          out[i] = { ...base, error: { code: limited.code, message: limited.message } };
          continue;
        }
        // Without an eventId the sender gives up retry safety: every send is a new event.
        const key = `app:${e.eventId ?? `anon:${crypto.randomUUID()}`}`;
        try {
          const r = await take(stub.externalEvent(userId, key, e.type, e.data as FeedEvents[typeof e.type]));
          out[i] = { ...base, seq: r.seq, duplicate: r.duplicate };
        } catch (err) {
          log("warn", "app event not delivered", {
            userId,
            eventId: e.eventId ?? null,
            type: e.type,
            error: String(err),
          });
          out[i] = {
            ...base,
            error: {
              code: "FEED_UNAVAILABLE",
              message: "The user's feed did not answer; nothing was written for this event. Send it again (with its eventId).",
            },
          };
        }
      }
    }),
  );
  return out;
}

export function eventRoutes() {
  const app = newApp();

  app.openapi(
    route({
      method: "post",
      operationId: "reportAppEvents",
      path: "/api/internal/events",
      tags: ["internal"],
      security: [{ service: [] }],
      summary: "Report app events (app.installed, app.install_failed, app.updated) to the user each names",
      description:
        "One event `{type, eventId?, data}` or `{events: [...]}` (1 to 100). Each goes to the feed of `data.userId` only. " +
        "With an `eventId` a retried send is shown once (`duplicate: true`, same `seq`; the first send's data stands). " +
        "The whole body is validated before anything is written. A single event whose user's feed does not answer gets 503; " +
        "in a batch, such an item carries its own `error` and the others are written.",
      request: jsonBody(AppEventsBody),
      ok: { status: 202, schema: AppEventsResult, description: "Accepted: per event, its seq on the user's feed" },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const batch = "events" in b;
      const events = batch ? b.events : [b];
      const results = await deliver(c.env, events);
      const count = (f: (o: Outcome) => boolean) => results.filter(f).length;
      const body = {
        accepted: count((o) => o.seq !== undefined && !o.duplicate),
        duplicates: count((o) => o.duplicate === true),
        failed: count((o) => !!o.error),
        results,
      };
      const refused = !batch ? results[0]!.error : undefined;
      if (refused?.code === "RATE_LIMITED") {
        retryAfter(c, "target");
        return c.json(errorBody(rateLimited("target")), 429);
      }
      if (refused) return c.json(errorBody(fail(503, refused.code, refused.message, { eventId: results[0]!.eventId })), 503);
      // A batch with items over a user's limit says when to send those again.
      if (results.some((o) => o.error?.code === "RATE_LIMITED")) retryAfter(c, "target");
      return c.json(body, 202);
    },
    (result, c) => appEventsHook(result, c),
  );

  app.openapi(
    route({
      method: "get",
      operationId: "listAdminEvents",
      path: "/admin/events",
      tags: ["events"],
      security: [{ bearer: [] }],
      summary: "The operators' feed history after `since` (low balances, failed usage, reconciliation differences)",
      request: { query: AdminEventsQuery },
      ok: {
        status: 200,
        schema: AdminEventsPage,
        description: "Events, oldest first; pass `nextSince` as `since` for the next page (null: you are at the end)",
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const since = q.since ?? 0;
      // The RPC stub types `unknown` event data as not serializable; the object returns plain JSON.
      const h = (await take(
        adminFeed(c.env).events(since, Math.min(q.limit ?? PAGING.defaultLimit, PAGING.maxLimit)),
      )) as unknown as FeedHistory;
      const last = h.events.length ? h.events[h.events.length - 1]!.seq! : since;
      return c.json({ ...h, nextSince: last < h.lastSeq ? last : null }, 200);
    },
  );

  return app;
}
