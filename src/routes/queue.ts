/**
 * Waiting queue and reservations. Both live on the pool object (see durable-objects/DevicePool.ts);
 * joining and booking go through the user's object first, which checks quota and balance.
 * Entry and reservation ids name their pool, so a route finds the object from the id alone.
 */
import { z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { actingUser, readableUser, requireUser, type AppEnv } from "../auth";
import { defaultPool, PAGING } from "../config";
import type { Env } from "../env";
import { durationMsOf, minutesOf } from "../domain/duration";
import { byStart, mergeInOrder, newestJoinedFirst } from "../domain/listing";
import { fail, ok, type Result } from "../errors";
import { newApp } from "../app-factory";
import { jsonBody, route } from "../openapi";
import { scopeOfId } from "../ids";
import { missingPool, poolNames } from "../registry";
import { take } from "../rpc";
import type { QueueEntryView as QueueItem, ReservationView as ReservationItem, Viewer } from "../contracts";
import {
  QueueEntryIdParam,
  QueueEntryView,
  QueueJoinBody,
  QueueListQuery,
  QueueWaiting,
  ReservationBody,
  ReservationCheck,
  ReservationCheckBody,
  ReservationIdParam,
  ReservationListQuery,
  ReservationView,
} from "../schemas";
import { inPool, pool, reply, requestSpec, stored, testOnlyRefusal } from "./helpers";

const security = [{ bearer: [] }];

function viewer(c: Context<AppEnv>): Viewer {
  const p = requireUser(c);
  return { userId: p.userId, admin: p.role === "admin" };
}

/** The admin acting for another user, or null when the caller acts for themself. */
function byAdmin(c: Context<AppEnv>, userId: string): string | null {
  const p = requireUser(c);
  return p.userId === userId ? null : p.userId;
}

/** Whose records a list shows: `userId` must be the caller's own unless an admin asks (an admin without it: everyone's). */
function listedUser(c: Context<AppEnv>, userId: string | undefined): string | undefined {
  return userId === undefined ? undefined : readableUser(c, userId);
}

const NOT_FOUND = {
  que: (id: string) => fail(404, "QUEUE_ENTRY_NOT_FOUND", "No such queue entry.", { entryId: id }),
  rsv: (id: string) => fail(404, "RESERVATION_NOT_FOUND", "No such reservation.", { reservationId: id }),
};

/** Runs `fn` on the pool an entry or reservation id names; a malformed or forged id names nothing (404). */
async function byId<T>(
  c: Context<AppEnv>,
  kind: keyof typeof NOT_FOUND,
  id: string,
  fn: (p: ReturnType<typeof pool>, id: string) => Promise<Result<T>>,
) {
  const name = scopeOfId(kind, id);
  // An id naming a pool that does not exist is as unknown as a malformed one.
  if (!name || (await missingPool(c.env, name))) return reply(c, NOT_FOUND[kind](id));
  return reply(c, await take(fn(pool(c.env, name), id)));
}

/**
 * A list's part from each pool it covers: `asked` alone (404 when unknown), else every registered
 * pool, by name. The first refusal answers for the whole list.
 */
async function fromPools<T>(
  env: Env,
  asked: string | undefined,
  fn: (p: ReturnType<typeof pool>) => PromiseLike<Result<T>>,
): Promise<Result<T[]>> {
  if (asked !== undefined) {
    const missing = await missingPool(env, asked);
    if (missing) return missing;
  }
  const names = asked !== undefined ? [asked] : await stored(() => poolNames(env));
  const parts = await Promise.all(names.map((name) => take(fn(pool(env, name)))));
  const values: T[] = [];
  for (const r of parts) {
    if (!r.ok) return r;
    values.push(r.value);
  }
  return ok(values);
}

export function queueRoutes() {
  const app = newApp();

  // ---- waiting queue ----------------------------------------------------------------------

  app.openapi(
    route({
      method: "post",
      operationId: "joinQueue",
      path: "/scheduler/queue/join",
      tags: ["queue"],
      security,
      summary: "Wait for a device: the head of the queue gets the next fitting device that frees",
      description:
        "Priority first (from your plan), then arrival. " +
        "Quota and balance are checked now and again when the device is handed over. " +
        "If a fitting device is free the entry is served before this returns (status `fulfilled`). " +
        "Your feed says `queue.fulfilled` (with `device.allocated`), `queue.expired` after `maxWaitMinutes`, " +
        "or `queue.failed` with the refusal.",
      request: jsonBody(QueueJoinBody),
      ok: { status: 201, schema: QueueEntryView, description: "The entry, with its position and estimated start" },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const refused =
        testOnlyRefusal(c.env, { durationSeconds: b.durationSeconds }, "durationMinutes") ??
        testOnlyRefusal(c.env, { maxWaitSeconds: b.maxWaitSeconds }, "maxWaitMinutes");
      if (refused) return reply(c, refused);
      const userId = actingUser(c, b.userId);
      const name = b.pool ?? defaultPool(c.env);
      return reply(
        c,
        await inPool(c.env, name, (p) =>
          p.join({
            userId,
            pool: name,
            durationMinutes: minutesOf(b.durationMinutes, b.durationSeconds),
            durationSeconds: b.durationSeconds,
            spec: requestSpec(b.spec),
            priority: b.priority,
            maxWaitMinutes: minutesOf(b.maxWaitMinutes, b.maxWaitSeconds),
            maxWaitSeconds: b.maxWaitSeconds,
            byAdmin: byAdmin(c, userId),
            idempotencyKey: b.idempotencyKey,
          }),
        ),
        201,
      );
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "listQueueEntries",
      path: "/scheduler/queue",
      tags: ["queue"],
      security,
      summary: "Your queue entries in every pool (or `pool`), newest first (admins: anyone's, or `userId`'s)",
      description:
        "Without `pool` the list covers every pool: the pools' entries merged newest first, `limit` applied to the merged list. " +
        "Each entry names its pool.",
      request: { query: QueueListQuery },
      ok: {
        status: 200,
        schema: z.object({ items: z.array(QueueEntryView), waiting: QueueWaiting }),
        description: "Entries",
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const who = viewer(c);
      const opts = { userId: listedUser(c, q.userId), status: q.status, limit: q.limit };
      const r = await fromPools<{ items: QueueItem[]; waiting: number }>(c.env, q.pool, (p) => p.listQueue(who, opts));
      if (!r.ok) return reply(c, r);
      return reply(
        c,
        ok({
          items: mergeInOrder(
            r.value.map((l) => l.items),
            newestJoinedFirst,
            q.limit ?? PAGING.defaultLimit,
          ),
          waiting: r.value.reduce((n, l) => n + l.waiting, 0),
        }),
      );
    },
  );

  const entryRoute = (method: "get" | "delete", operationId: string, path: string, summary: string, description: string) =>
    route({
      method,
      operationId,
      path,
      tags: ["queue"],
      security,
      summary,
      request: { params: QueueEntryIdParam },
      ok: { status: 200, schema: QueueEntryView, description },
    });

  app.openapi(
    entryRoute(
      "get",
      "getQueueEntry",
      "/scheduler/queue/{id}",
      "One queue entry, with position and estimated start while it waits",
      "The entry",
    ),
    (c) => byId(c, "que", c.req.valid("param").id, (p, id) => p.queueEntry(id, viewer(c))),
  );
  app.openapi(
    entryRoute(
      "get",
      "getQueuePosition",
      "/scheduler/queue/{id}/position",
      "Position and estimated start (the same view as GET /scheduler/queue/{id})",
      "The entry",
    ),
    (c) => byId(c, "que", c.req.valid("param").id, (p, id) => p.queueEntry(id, viewer(c))),
  );
  app.openapi(
    entryRoute("delete", "leaveQueue", "/scheduler/queue/{id}", "Leave the queue (an entry not yet served)", "The cancelled entry"),
    (c) => byId(c, "que", c.req.valid("param").id, (p, id) => p.cancelEntry(id, viewer(c))),
  );

  // ---- reservations ------------------------------------------------------------------------

  app.openapi(
    route({
      method: "post",
      operationId: "createReservation",
      path: "/scheduler/reservations",
      tags: ["reservations"],
      security,
      summary: "Reserve a device for a future window",
      description:
        "One matching device is held for the window " +
        "(no two reservations share a device's window; allocations and extends that would run into it are refused). " +
        "Your feed gets `reservation.reminder` `reminderMinutes` before the start; " +
        "at `startAt` the device is allocated to you (`reservation.started` and `device.allocated`; quota and balance are checked then) " +
        "until the window ends. Statuses: pending, confirmed, executing, completed, cancelled, expired, failed.",
      request: jsonBody(ReservationBody),
      ok: { status: 201, schema: ReservationView, description: "The reservation (confirmed)" },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const refused = testOnlyRefusal(c.env, { durationSeconds: b.durationSeconds }, "durationMinutes");
      if (refused) return reply(c, refused);
      const userId = actingUser(c, b.userId);
      const name = b.pool ?? defaultPool(c.env);
      return reply(
        c,
        await inPool(c.env, name, (p) =>
          p.book({
            userId,
            pool: name,
            startAt: b.startAt,
            durationMinutes: minutesOf(b.durationMinutes, b.durationSeconds),
            durationSeconds: b.durationSeconds,
            spec: requestSpec(b.spec),
            reminderMinutes: b.reminderMinutes,
            byAdmin: byAdmin(c, userId),
            idempotencyKey: b.idempotencyKey,
          }),
        ),
        201,
      );
    },
  );

  app.openapi(
    route({
      method: "post",
      operationId: "checkReservationWindow",
      path: "/scheduler/reservations/check",
      tags: ["reservations"],
      security,
      summary: "Would this window be bookable? Free matching devices, and your own reservations that overlap it",
      request: jsonBody(ReservationCheckBody),
      ok: {
        status: 200,
        description: "The check",
        schema: ReservationCheck,
      },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const refused = testOnlyRefusal(c.env, { durationSeconds: b.durationSeconds }, "durationMinutes");
      if (refused) return reply(c, refused);
      const userId = actingUser(c, b.userId);
      const durationMs = durationMsOf(b.durationMinutes, b.durationSeconds);
      const name = b.pool ?? defaultPool(c.env);
      return reply(
        c,
        await inPool(c.env, name, (p) =>
          p.checkWindow({
            userId,
            pool: name,
            spec: requestSpec(b.spec),
            startAt: b.startAt,
            endAt: b.startAt + durationMs,
          }),
        ),
      );
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "listReservations",
      path: "/scheduler/reservations",
      tags: ["reservations"],
      security,
      summary: "Your reservations in every pool (or `pool`) by start time (admins: anyone's, or `userId`'s)",
      description:
        "Without `pool` the list covers every pool: the pools' reservations merged by start time, `limit` applied to the merged list. " +
        "Each reservation names its pool.",
      request: { query: ReservationListQuery },
      ok: { status: 200, schema: z.object({ items: z.array(ReservationView) }), description: "Reservations" },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const who = viewer(c);
      const opts = { userId: listedUser(c, q.userId), status: q.status, limit: q.limit };
      const r = await fromPools<{ items: ReservationItem[] }>(c.env, q.pool, (p) => p.listReservations(who, opts));
      if (!r.ok) return reply(c, r);
      return reply(
        c,
        ok({
          items: mergeInOrder(
            r.value.map((l) => l.items),
            byStart,
            q.limit ?? PAGING.defaultLimit,
          ),
        }),
      );
    },
  );

  const reservationRoute = (method: "get" | "delete", summary: string, description: string) =>
    route({
      method,
      operationId: method === "get" ? "getReservation" : "cancelReservation",
      path: "/scheduler/reservations/{id}",
      tags: ["reservations"],
      security,
      summary,
      request: { params: ReservationIdParam },
      ok: { status: 200, schema: ReservationView, description },
    });

  app.openapi(reservationRoute("get", "One reservation", "The reservation"), (c) =>
    byId(c, "rsv", c.req.valid("param").id, (p, id) => p.reservation(id, viewer(c))),
  );
  app.openapi(
    reservationRoute(
      "delete",
      "Cancel a reservation that has not started (its device is free for the window again)",
      "The cancelled reservation",
    ),
    (c) => byId(c, "rsv", c.req.valid("param").id, (p, id) => p.cancelReservation(id, viewer(c))),
  );

  return app;
}
