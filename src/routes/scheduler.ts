/** User-facing allocation routes (paths kept from the old system). */
import { z } from "@hono/zod-openapi";
import { actingUser, readableUser, requireUser } from "../auth";
import { defaultPool, shortDurationsAllowed } from "../config";
import { fail, ok, type Result } from "../errors";
import { newApp } from "../app-factory";
import { jsonBody, route } from "../openapi";
import { userOfAllocationId } from "../../durable-objects/UserQuota";
import {
  AllocateBody, AllocationIdParam, AllocationResult, AllocationView, AvailableQuery, EventsQuery, ExtendBody,
  ListAllocationsQuery, ReleaseBody, ReleaseResult,
} from "../schemas";
import { pool, reply, userQuota } from "./helpers";

const security = [{ bearer: [] }];

export function schedulerRoutes() {
  const app = newApp();

  app.openapi(
    route({
      method: "post", path: "/scheduler/devices/allocate", tags: ["allocation"], security,
      summary: "Allocate a device for a number of minutes",
      description: "With `idleReleaseMinutes` (or a pool setting) the allocation is released, reason `idle`, once you have had no user feed socket open for that long; it is billed like any release.",
      request: jsonBody(AllocateBody),
      ok: { status: 201, schema: AllocationResult, description: "The allocation" },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const userId = actingUser(c, b.userId);
      if (b.durationSeconds !== undefined && !shortDurationsAllowed(c.env))
        return reply(c, fail(400, "SHORT_DURATION_DISABLED", "`durationSeconds` is a test-only switch and is off here; use durationMinutes."));
      if (b.idleReleaseSeconds !== undefined && !shortDurationsAllowed(c.env))
        return reply(c, fail(400, "SHORT_DURATION_DISABLED", "`idleReleaseSeconds` is a test-only switch and is off here; use idleReleaseMinutes."));
      const r = await userQuota(c.env, userId).allocate({
        userId,
        pool: b.pool ?? defaultPool(c.env),
        durationMinutes: b.durationSeconds !== undefined ? Math.ceil(b.durationSeconds / 60) : b.durationMinutes,
        durationSeconds: b.durationSeconds,
        spec: { cpuCores: b.spec?.cpuCores ?? 0, memoryMB: b.spec?.memoryMB ?? 0, storageMB: b.spec?.storageMB ?? 0 },
        idempotencyKey: b.idempotencyKey,
        idleReleaseMinutes: b.idleReleaseMinutes,
        idleReleaseSeconds: b.idleReleaseSeconds,
      });
      return reply(c, r, 201);
    },
  );

  app.openapi(
    route({
      method: "post", path: "/scheduler/devices/release", tags: ["allocation"], security,
      summary: "Release a device you hold",
      request: jsonBody(ReleaseBody),
      ok: { status: 200, schema: ReleaseResult, description: "The ended allocation" },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const userId = actingUser(c, b.userId);
      return reply(c, await userQuota(c.env, userId).release(userId, b.deviceId));
    },
  );

  app.openapi(
    route({
      method: "put", path: "/scheduler/allocations/{id}/extend", tags: ["allocation"], security,
      summary: "Extend an active allocation (extend policy of your plan)",
      request: { params: AllocationIdParam, ...jsonBody(ExtendBody) },
      ok: { status: 200, schema: AllocationResult.extend({ extendCount: z.number(), extendedMinutes: z.number() }), description: "The extended allocation" },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const owner = ownerOf(c, id);
      if (!owner) return reply(c, fail(404, "ALLOCATION_NOT_FOUND", "No such allocation.", { allocationId: id }));
      return reply(c, await userQuota(c.env, owner).extend(owner, id, c.req.valid("json").additionalMinutes));
    },
  );

  app.openapi(
    route({
      method: "get", path: "/scheduler/allocations", tags: ["allocation"], security,
      summary: "List a user's allocations, newest first (paged)",
      request: { query: ListAllocationsQuery },
      ok: { status: 200, schema: z.object({ items: z.array(AllocationView), nextCursor: z.string().nullable() }), description: "A page" },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const userId = readableUser(c, q.userId);
      return reply(c, await userQuota(c.env, userId).listAllocations(userId, { status: q.status, cursor: q.cursor, limit: q.limit }));
    },
  );

  app.openapi(
    route({
      method: "get", path: "/scheduler/allocations/{id}", tags: ["allocation"], security,
      summary: "One allocation",
      request: { params: AllocationIdParam },
      ok: { status: 200, schema: AllocationView, description: "The allocation" },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const owner = ownerOf(c, id);
      if (!owner) return reply(c, fail(404, "ALLOCATION_NOT_FOUND", "No such allocation.", { allocationId: id }));
      return reply(c, await userQuota(c.env, owner).getAllocation(owner, id));
    },
  );

  app.openapi(
    route({
      method: "get", path: "/scheduler/devices/available", tags: ["allocation"], security,
      summary: "Free devices of a pool",
      request: { query: AvailableQuery },
      ok: { status: 200, schema: z.object({ pool: z.string(), items: z.array(z.object({}).passthrough()), nextCursor: z.string().nullable() }), description: "Free devices" },
    }),
    async (c) => {
      requireUser(c);
      const q = c.req.valid("query");
      const name = q.pool ?? defaultPool(c.env);
      const r = await pool(c.env, name).list({ pool: name, status: "available", cursor: q.cursor, limit: q.limit });
      return reply(c, r.ok ? ok({ pool: name, ...r.value }) : (r as Result<never>));
    },
  );

  app.openapi(
    route({
      method: "get", path: "/scheduler/events", tags: ["events"], security,
      summary: "Your event log after `since` (the feed's history)",
      request: { query: EventsQuery },
      ok: { status: 200, schema: z.object({ events: z.array(z.object({}).passthrough()), oldestSeq: z.number().nullable(), lastSeq: z.number() }), description: "Events" },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const userId = readableUser(c, q.userId);
      return c.json(await userQuota(c.env, userId).events(userId, q.since, q.limit));
    },
  );

  return app;
}

/** The user an allocation id belongs to, if the caller may touch it (else null → 404, not 403: ids do not leak). */
function ownerOf(c: Parameters<typeof requireUser>[0], id: string): string | null {
  const p = requireUser(c);
  const owner = userOfAllocationId(id);
  if (!owner) return null;
  if (owner !== p.userId && p.role !== "admin") return null;
  return owner;
}
