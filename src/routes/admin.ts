/** Operator routes: the device fleet, pools, force-release and the users list. Admin role only. */
import { drizzle } from "drizzle-orm/d1";

import { newApp } from "../app-factory";
import { accounts, pools, pricingPlans, tokenRevocations } from "../db/schema";
import { asc, eq, gt } from "drizzle-orm";
import { PAGING } from "../config";
import { DEFAULT_NODE, shortDurationsAllowed } from "../config";
import { fail, mapOk, ok } from "../errors";
import { jsonBody, route } from "../openapi";

import {
  AdminUsersPage,
  DeviceDetailView,
  DeviceHistoryPage,
  DeviceIdParam,
  DeviceStatusView,
  DeviceView,
  HistoryQuery,
  PoolDevicesPage,
  PoolDevicesQuery,
  PoolList,
  PoolParam,
  PoolView,
  RegisterDeviceBody,
  ReleaseResult,
  RemovedDeviceView,
  StatusChangeBody,
  StrategyBody,
  UpdateDeviceBody,
  UsersQuery,
} from "../schemas";
import { deviceDetailView, deviceStatusView, deviceView, endedView, poolDeviceView, quotaView } from "../views";
import { device, inPool, onDevice, pool, reply, userQuota } from "./helpers";
import { dropDevice, enterDevice, moveDevice } from "../registry";
import { take } from "../rpc";
import { auditFrom } from "../audit";
import type { EndedAllocation } from "../domain/types";
import { isoOrNull } from "../domain/time";

const security = [{ bearer: [] }];

export function adminRoutes() {
  const app = newApp();
  app.openapi(
    route({
      method: "post",
      operationId: "registerDevice",
      path: "/admin/devices",
      tags: ["fleet"],
      security,
      summary: "Register a device (a new pool comes into being with its first device)",
      request: jsonBody(RegisterDeviceBody),
      ok: { status: 201, schema: DeviceView, description: "The device" },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const deviceId = b.deviceId ?? `dev-${crypto.randomUUID().slice(0, 8)}`;
      // Entered before its object is first addressed, so the registry always knows every device object.
      await enterDevice(c.env, deviceId, b.pool);
      const r = await take(device(c.env, deviceId).register({ ...b, deviceId, node: b.node ?? DEFAULT_NODE }));
      if (r.ok) await auditFrom(c, "device.register", `device:${deviceId}`, { ...b, deviceId, node: r.value.node });
      return reply(c, mapOk(r, deviceView), 201);
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "getDevice",
      path: "/admin/devices/{id}",
      tags: ["fleet"],
      security,
      summary: "A device and its current allocation",
      request: { params: DeviceIdParam },
      ok: { status: 200, schema: DeviceDetailView, description: "The device and the allocation it holds" },
    }),
    async (c) => reply(c, mapOk(await onDevice(c.env, c.req.valid("param").id, (d) => d.get()), deviceDetailView)),
  );

  app.openapi(
    route({
      method: "patch",
      operationId: "updateDevice",
      path: "/admin/devices/{id}",
      tags: ["fleet"],
      security,
      summary: "Update pool, node or spec (not while allocated), or name, model, osVersion and labels (any time)",
      request: { params: DeviceIdParam, ...jsonBody(UpdateDeviceBody) },
      ok: { status: 200, schema: DeviceView, description: "The device" },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const { id } = c.req.valid("param");
      const r = await onDevice(c.env, id, (d) => d.update(b));
      if (r.ok && b.pool) await moveDevice(c.env, id, b.pool);
      if (r.ok) await auditFrom(c, "device.update", `device:${id}`, { ...b });
      return reply(c, mapOk(r, deviceView));
    },
  );

  for (const status of ["maintenance", "offline", "online"] as const) {
    app.openapi(
      route({
        method: "post",
        operationId: `setDeviceStatus${status[0]!.toUpperCase()}${status.slice(1)}`,
        path: `/admin/devices/{id}/${status}`,
        tags: ["fleet"],
        security,
        summary:
          status === "online"
            ? "Back in service (a drain under way is cancelled)"
            : `Put in ${status}: no new allocations; an active one ends now and is billed, or with \`drain\` reaches its end first`,
        request: { params: DeviceIdParam, ...jsonBody(StatusChangeBody, false) },
        ok: { status: 200, schema: DeviceStatusView, description: "The device, the allocation the change ended, and a drain under way" },
      }),
      async (c) => {
        const { id } = c.req.valid("param");
        const b = c.req.valid("json") ?? {};
        const misplaced =
          status === "online" && b.drain
            ? { path: "drain", message: "for maintenance and offline only" }
            : b.deadline !== undefined && !b.drain
              ? { path: "deadline", message: "needs drain: true" }
              : null;
        if (misplaced) return reply(c, fail(400, "VALIDATION_FAILED", `${misplaced.path}: ${misplaced.message}`, { issues: [misplaced] }));
        const r = await onDevice(c.env, id, (d) =>
          d.setStatus(status === "online" ? "available" : status, { drain: b.drain, reason: b.reason, deadline: b.deadline }),
        );
        if (r.ok)
          await auditFrom(c, "device.set_status", `device:${id}`, {
            status,
            after: r.value.status,
            reason: b.reason ?? null,
            drain: r.value.drain,
            ended: r.value.ended ? endedOf(r.value.ended) : null,
          });
        return reply(c, mapOk(r, deviceStatusView));
      },
    );
  }

  app.openapi(
    route({
      method: "delete",
      operationId: "removeDevice",
      path: "/admin/devices/{id}",
      tags: ["fleet"],
      security,
      summary: "Remove a device (an active allocation ends and is billed)",
      request: { params: DeviceIdParam },
      ok: { status: 200, schema: RemovedDeviceView, description: "Removed" },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const r = await onDevice(c.env, id, (d) => d.remove());
      if (r.ok) await dropDevice(c.env, id);
      if (r.ok) await auditFrom(c, "device.remove", `device:${id}`, { ended: r.value.ended ? endedOf(r.value.ended) : null });
      return reply(
        c,
        mapOk(r, (x) => ({ deviceId: x.deviceId, ended: x.ended ? endedView(x.ended) : null })),
      );
    },
  );

  app.openapi(
    route({
      method: "post",
      operationId: "forceReleaseDevice",
      path: "/admin/devices/{id}/force-release",
      tags: ["fleet"],
      security,
      summary: "End the device's allocation now",
      request: { params: DeviceIdParam },
      ok: { status: 200, schema: ReleaseResult, description: "The ended allocation" },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const r = await onDevice(c.env, id, (d) => d.forceRelease());
      if (!r.ok) return reply(c, r);
      await auditFrom(c, "device.force_release", `device:${id}`, { ended: endedOf(r.value) });
      return reply(c, ok(endedView(r.value)));
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "getDeviceHistory",
      path: "/admin/devices/{id}/history",
      tags: ["fleet"],
      security,
      summary: "Ended allocations of a device, newest first",
      request: { params: DeviceIdParam, query: HistoryQuery },
      ok: { status: 200, schema: DeviceHistoryPage, description: "A page" },
    }),
    async (c) => {
      const r = await onDevice(c.env, c.req.valid("param").id, (d) => d.history(c.req.valid("query")));
      return reply(
        c,
        mapOk(r, (p) => ({ items: p.items.map(endedView), nextCursor: p.nextCursor })),
      );
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "listPools",
      path: "/admin/pools",
      tags: ["fleet"],
      security,
      summary: "Pools and their counts",
      ok: { status: 200, schema: PoolList, description: "Pools" },
    }),
    async (c) => {
      const names = await drizzle(c.env.DB).select().from(pools).orderBy(pools.name);
      const items = await Promise.all(
        names.map(async (p) => {
          const s = await take(pool(c.env, p.name).summary(p.name));
          return s.ok ? s.value : null;
        }),
      );
      return reply(c, ok({ items: items.filter((x) => x !== null) }));
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "getPool",
      path: "/admin/pools/{pool}",
      tags: ["fleet"],
      security,
      summary: "One pool's counts and strategy",
      request: { params: PoolParam },
      ok: { status: 200, schema: PoolView, description: "Pool" },
    }),
    async (c) => {
      const name = c.req.valid("param").pool;
      return reply(c, await inPool(c.env, name, (p) => p.summary(name)));
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "listPoolDevices",
      path: "/admin/pools/{pool}/devices",
      tags: ["fleet"],
      security,
      summary: "A pool's devices with holders",
      request: { params: PoolParam, query: PoolDevicesQuery },
      ok: { status: 200, schema: PoolDevicesPage, description: "A page" },
    }),
    async (c) => {
      const name = c.req.valid("param").pool;
      const r = await inPool(c.env, name, (p) => p.list({ pool: name, ...c.req.valid("query"), withHolders: true }));
      return reply(
        c,
        mapOk(r, (p) => ({ items: p.items.map(poolDeviceView), nextCursor: p.nextCursor })),
      );
    },
  );

  app.openapi(
    route({
      method: "put",
      operationId: "updatePool",
      path: "/admin/pools/{pool}",
      tags: ["fleet"],
      security,
      summary: "Set the pool's scheduling strategy and idle release",
      description:
        "Name at least one field. `idleReleaseMinutes` applies to allocations made from now on (`null` turns it off); " +
        "an allocation's own idleReleaseMinutes applies if shorter.",
      request: { params: PoolParam, ...jsonBody(StrategyBody) },
      ok: { status: 200, schema: PoolView, description: "Pool" },
    }),
    async (c) => {
      const name = c.req.valid("param").pool;
      const b = c.req.valid("json");
      if (b.idleReleaseSeconds !== undefined && !shortDurationsAllowed(c.env))
        return reply(
          c,
          fail(400, "SHORT_DURATION_DISABLED", "`idleReleaseSeconds` is a test-only switch and is off here; use idleReleaseMinutes."),
        );
      const idleReleaseSeconds =
        b.idleReleaseSeconds !== undefined
          ? b.idleReleaseSeconds
          : b.idleReleaseMinutes == null
            ? b.idleReleaseMinutes
            : b.idleReleaseMinutes * 60;
      const r = await inPool(c.env, name, (p) => p.setSettings(name, { strategy: b.strategy, idleReleaseSeconds }));
      if (r.ok) await auditFrom(c, "pool.update", `pool:${name}`, { ...b });
      return reply(c, r);
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "listUsers",
      path: "/admin/users",
      tags: ["quota"],
      security,
      summary: "Users with a billing account: pricing plan, balance and quota, by user id",
      description:
        "A user appears here once they have a billing account (their first allocation or balance read opens it). " +
        "Page with `cursor` = the last userId. `tokensNotBefore`: their tokens issued before it are refused (null: never revoked).",
      request: { query: UsersQuery },
      ok: { status: 200, schema: AdminUsersPage, description: "A page" },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const limit = Math.min(q.limit ?? PAGING.defaultLimit, PAGING.maxLimit);
      const rows = await drizzle(c.env.DB)
        .select({
          userId: accounts.userId,
          pricingPlanId: accounts.planId,
          balanceMinor: accounts.balance,
          currency: pricingPlans.currency,
          tokensNotBefore: tokenRevocations.notBefore,
        })
        .from(accounts)
        .leftJoin(pricingPlans, eq(pricingPlans.planId, accounts.planId))
        .leftJoin(tokenRevocations, eq(tokenRevocations.userId, accounts.userId))
        .where(q.cursor ? gt(accounts.userId, q.cursor) : undefined)
        .orderBy(asc(accounts.userId))
        .limit(limit + 1);
      const page = rows.slice(0, limit);
      const items = await Promise.all(
        page.map(async (r) => ({
          ...r,
          tokensNotBefore: isoOrNull(r.tokensNotBefore),
          quota: quotaView(await take(userQuota(c.env, r.userId).getQuota(r.userId))),
        })),
      );
      return reply(c, ok({ items, nextCursor: rows.length > limit ? page[page.length - 1]!.userId : null }));
    },
  );

  return app;
}

/** The allocation an admin's action ended, as its audit row names it. */
const endedOf = (e: EndedAllocation) => ({ allocationId: e.allocationId, userId: e.userId, durationSeconds: e.durationSeconds });
