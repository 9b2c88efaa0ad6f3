/** User-facing allocation routes (paths kept from the old system). */
import { allocate } from "../allocate";
import { z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { actingUser, readableUser, requireUser, type AppEnv } from "../auth";
import { defaultPool } from "../config";
import { minutesOf } from "../domain/duration";
import { fail, mapOk, ok, type Failure, type Result } from "../errors";
import { newApp } from "../app-factory";
import { jsonBody, route } from "../openapi";
import type { AllocateInput } from "../contracts";
import { userOfAllocationId } from "../ids";
import {
  AllocatedResult,
  AllocationDetail,
  AllocateBody,
  AllocationIdParam,
  AllocationResult,
  AllocationView,
  AvailableQuery,
  EventsQuery,
  ExtendBody,
  FreeDevicesPage,
  ListAllocationsQuery,
  ReleaseBody,
  ReleaseResult,
  UserEventsPage,
} from "../schemas";
import { allocationView, freeDeviceView } from "../views";
import { device, inPool, reply, requestSpec, testOnlyRefusal, userQuota } from "./helpers";
import { holderFields } from "../access";
import type { Env } from "../env";
import { missingPool } from "../registry";
import { take } from "../rpc";

const security = [{ bearer: [] }];

/** What extend answers (also per item of a batch extend). */
export const ExtendResult = AllocationResult.extend({ extendCount: z.number(), extendedMinutes: z.number() });

export function schedulerRoutes() {
  const app = newApp();

  app.openapi(
    route({
      method: "post",
      operationId: "allocate",
      path: "/scheduler/devices/allocate",
      tags: ["allocation"],
      security,
      summary: "Allocate a device for a number of minutes",
      description:
        "With `idleReleaseMinutes` (or a pool setting) the allocation is released, reason `idle`, once you have had no " +
        "user feed socket open for that long; it is billed like any release.",
      request: jsonBody(AllocateBody),
      ok: { status: 201, schema: AllocatedResult, description: "The allocation, with how to reach the device" },
    }),
    async (c) => reply(c, await run(planAllocate(c, c.req.valid("json"))), 201),
  );

  app.openapi(
    route({
      method: "post",
      operationId: "release",
      path: "/scheduler/devices/release",
      tags: ["allocation"],
      security,
      summary: "Release a device you hold",
      request: jsonBody(ReleaseBody),
      ok: { status: 200, schema: ReleaseResult, description: "The ended allocation" },
    }),
    async (c) => reply(c, await run(planRelease(c, c.req.valid("json")))),
  );

  app.openapi(
    route({
      method: "put",
      operationId: "extendAllocation",
      path: "/scheduler/allocations/{id}/extend",
      tags: ["allocation"],
      security,
      summary: "Extend an active allocation (extend policy of your plan)",
      request: { params: AllocationIdParam, ...jsonBody(ExtendBody) },
      ok: { status: 200, schema: ExtendResult, description: "The extended allocation" },
    }),
    async (c) => reply(c, await run(planExtend(c, c.req.valid("param").id, c.req.valid("json").additionalMinutes))),
  );

  app.openapi(
    route({
      method: "get",
      operationId: "listAllocations",
      path: "/scheduler/allocations",
      tags: ["allocation"],
      security,
      summary: "List a user's allocations, newest first (paged)",
      request: { query: ListAllocationsQuery },
      ok: {
        status: 200,
        schema: z.object({ items: z.array(AllocationView), nextCursor: z.string().nullable() }).openapi("AllocationsPage"),
        description: "A page",
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const userId = readableUser(c, q.userId);
      const r = await take(userQuota(c.env, userId).listAllocations(userId, { status: q.status, cursor: q.cursor, limit: q.limit }));
      return reply(
        c,
        mapOk(r, (p) => ({ items: p.items.map(allocationView), nextCursor: p.nextCursor })),
      );
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "getAllocation",
      path: "/scheduler/allocations/{id}",
      tags: ["allocation"],
      security,
      summary: "One allocation",
      request: { params: AllocationIdParam },
      ok: {
        status: 200,
        schema: AllocationDetail,
        description: "The allocation (with how to reach the device, for its holder while it runs)",
      },
    }),
    async (c) => reply(c, await run(planGetAllocationDetail(c, c.req.valid("param").id))),
  );

  app.openapi(
    route({
      method: "get",
      operationId: "listAvailableDevices",
      path: "/scheduler/devices/available",
      tags: ["allocation"],
      security,
      summary: "Free devices of a pool",
      request: { query: AvailableQuery },
      ok: { status: 200, schema: FreeDevicesPage, description: "Free devices" },
    }),
    async (c) => {
      requireUser(c);
      const q = c.req.valid("query");
      const name = q.pool ?? defaultPool(c.env);
      const r = await inPool(c.env, name, (p) => p.list({ pool: name, status: "available", cursor: q.cursor, limit: q.limit }));
      if (!r.ok) return reply(c, r);
      return reply(c, ok({ pool: name, items: r.value.items.map(freeDeviceView), nextCursor: r.value.nextCursor }));
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "listEvents",
      path: "/scheduler/events",
      tags: ["events"],
      security,
      summary: "Your event log after `since` (the feed's history)",
      request: { query: EventsQuery },
      ok: { status: 200, schema: UserEventsPage, description: "Events, oldest first" },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const userId = readableUser(c, q.userId);
      return c.json(await take(userQuota(c.env, userId).events(userId, q.since, q.limit)));
    },
  );

  return app;
}

// ---- the operations, shared by the routes above and the batch routes (src/routes/batch.ts) ----

type Ctx = Context<AppEnv>;

/**
 * One operation, checked and ready to run: the user whose object it goes to (a batch runs one
 * user's operations in order) and the one call to that object (atomic there). A refusal known
 * before any call is a `Failure`; acting for another user as a non-admin throws `HttpError` 403
 * (`actingUser`), as on every route.
 */
export type Planned<T> = { ok: true; userId: string; run: () => Promise<Result<T>> } | Failure;

/** Runs a planned operation, or passes its refusal on. */
export const run = <T>(p: Planned<T>): Promise<Result<T>> => (p.ok ? p.run() : Promise.resolve(p));

const planned = <T>(userId: string, call: () => Promise<Result<T>>): Planned<T> => ({
  ok: true,
  userId,
  run: () => take(call()),
});

/** The user an allocation id belongs to, if the caller may touch it (else null → 404, not 403: ids do not leak). */
export function ownerOf(c: Parameters<typeof requireUser>[0], id: string): string | null {
  const p = requireUser(c);
  const owner = userOfAllocationId(id);
  if (!owner) return null;
  if (owner !== p.userId && p.role !== "admin") return null;
  return owner;
}

export const allocationNotFound = (id: string) => fail(404, "ALLOCATION_NOT_FOUND", "No such allocation.", { allocationId: id });

/** Allocate: a parsed allocate body becomes the `UserQuota.allocate` input (test-only switches refused where off). */
export function planAllocate(c: Ctx, b: z.infer<typeof AllocateBody>) {
  const userId = actingUser(c, b.userId);
  const refused =
    testOnlyRefusal(c.env, { durationSeconds: b.durationSeconds }, "durationMinutes") ??
    testOnlyRefusal(c.env, { idleReleaseSeconds: b.idleReleaseSeconds }, "idleReleaseMinutes");
  if (refused) return refused;
  const input: AllocateInput = {
    userId,
    pool: b.pool ?? defaultPool(c.env),
    durationMinutes: minutesOf(b.durationMinutes, b.durationSeconds),
    durationSeconds: b.durationSeconds,
    spec: requestSpec(b.spec),
    idempotencyKey: b.idempotencyKey,
    idleReleaseMinutes: b.idleReleaseMinutes,
    idleReleaseSeconds: b.idleReleaseSeconds,
  };
  // The pool is checked here, before the user's object would address it (an unknown name creates nothing).
  return planned(userId, async () => {
    const r = (await missingPool(c.env, input.pool)) ?? (await allocate(c.env, input, (work) => c.executionCtx.waitUntil(work)));
    if (!r.ok) return r;
    const { access, ...result } = r.value;
    // A repeated key's answer comes from the stored row, which never holds the access: the device says.
    const known = access ?? (await accessOf(c.env, result.deviceId, result.allocationId, userId));
    return ok({ ...result, ...(await holderFields(c.env, claimsOf(result, userId), known)) });
  });
}

/** The device's access for the holder of `allocationId` while it runs (null otherwise). */
async function accessOf(env: Env, deviceId: string, allocationId: string, userId: string): Promise<Record<string, string> | null> {
  const r = await take(device(env, deviceId).accessFor(allocationId, userId));
  return r.ok ? (r.value?.access ?? null) : null;
}

const claimsOf = (a: { deviceId: string; allocationId: string; expiresAt: string }, userId: string) => ({
  userId,
  deviceId: a.deviceId,
  allocationId: a.allocationId,
  expiresAt: Date.parse(a.expiresAt),
});

/** Release the device the acting user holds. */
export function planRelease(c: Ctx, b: z.infer<typeof ReleaseBody>) {
  const userId = actingUser(c, b.userId);
  return planned(userId, () => userQuota(c.env, userId).release(userId, b.deviceId));
}

/** Extend an allocation of the caller's (any user's for an admin). */
export function planExtend(c: Ctx, id: string, additionalMinutes: number) {
  const owner = ownerOf(c, id);
  if (!owner) return allocationNotFound(id);
  return planned(owner, () => userQuota(c.env, owner).extend(owner, id, additionalMinutes));
}

/** Read an allocation of the caller's (any user's for an admin). */
export function planGetAllocation(c: Ctx, id: string) {
  const owner = ownerOf(c, id);
  if (!owner) return allocationNotFound(id);
  return planned(owner, async () => mapOk(await take(userQuota(c.env, owner).getAllocation(owner, id)), allocationView));
}

/** One allocation with the holder's fields: filled for its holder while it runs, null for an admin reading another's. */
function planGetAllocationDetail(c: Ctx, id: string) {
  const p = planGetAllocation(c, id);
  if (!p.ok) return p;
  const holder = p.userId === requireUser(c).userId;
  return planned(p.userId, async () => {
    const r = await p.run();
    if (!r.ok) return r;
    const a = r.value;
    const live = holder && a.status === "active" && a.deviceId ? await accessOf(c.env, a.deviceId, a.allocationId, p.userId) : null;
    const fields = await holderFields(
      c.env,
      claimsOf({ ...a, deviceId: a.deviceId ?? "", expiresAt: a.expiresAt ?? new Date(0).toISOString() }, p.userId),
      live,
    );
    return ok({ ...a, ...fields });
  });
}
