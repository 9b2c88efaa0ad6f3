/**
 * The fleet, for operators (admin role only, gated by /admin/*):
 *
 * - GET /admin/devices: every pool's devices (pool names from D1 `pools`), filtered, in natural
 *   order of the device id, paged with an opaque cursor. Served from the pools' indexes: one call
 *   per pool per page (at most FLEET.poolConcurrency at once), never one per device, so no device
 *   object is woken. Each pool answers its first `limit` after the cursor; the Worker merges them
 *   (`mergeFleet`). The cursor is the last device id listed, and the order is by id alone, so
 *   pages cover the fleet once whatever the devices do between them (a status change, a move).
 * - POST /admin/devices/bulk: see ./fleet-bulk.ts.
 */
import { newApp } from "../app-factory";
import { FLEET, PAGING } from "../config";
import type { FleetFilter } from "../contracts";
import { cursorId, labelFilter, mergeFleet } from "../domain/fleet";
import { ok } from "../errors";
import { jsonBody, route } from "../openapi";
import { mapBounded } from "../bounded";
import { missingPool, poolNames } from "../registry";
import { take } from "../rpc";
import { BulkDevicesBody, BulkResult, FleetPage, FleetQuery } from "../schemas";
import { fleetDeviceView } from "../views";
import { runBulk } from "./fleet-bulk";
import { pool, reply, stored } from "./helpers";

const security = [{ bearer: [] }];

export function fleetRoutes() {
  const app = newApp();

  app.openapi(
    route({
      method: "get",
      operationId: "listFleet",
      path: "/admin/devices",
      tags: ["fleet"],
      security,
      summary: "Every pool's devices, filtered, in natural order of their ids",
      description:
        "From the pools' indexes (what each device last pushed to its pool): one call per pool per page, " +
        "never one per device. `pool` narrows it to one pool (one call). Filters combine (all must match); " +
        "`label` repeats. Devices sort by id with digit runs as numbers (`us-std-2` before `us-std-10`). " +
        "Page with `nextCursor`: pages cover the fleet once, also while devices change between them.",
      request: { query: FleetQuery },
      ok: { status: 200, schema: FleetPage, description: "A page" },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const limit = Math.min(q.limit ?? PAGING.defaultLimit, PAGING.maxLimit);
      if (q.pool !== undefined) {
        const missing = await missingPool(c.env, q.pool);
        if (missing) return reply(c, missing);
      }
      const names = q.pool !== undefined ? [q.pool] : await stored(() => poolNames(c.env));
      const labels = q.label === undefined ? [] : typeof q.label === "string" ? [q.label] : q.label;
      const filter: FleetFilter = {
        status: q.status,
        node: q.node,
        holder: q.holder,
        q: q.q,
        labels: labels.map(labelFilter),
        after: q.cursor === undefined ? undefined : cursorId(q.cursor)!,
        limit,
      };
      const pages = await mapBounded(names, FLEET.poolConcurrency, async (name) => {
        const page = await take(pool(c.env, name).fleet(filter));
        return { more: page.more, items: page.items.map((d) => ({ ...d, pool: name })) };
      });
      const merged = mergeFleet(pages, limit);
      return reply(c, ok({ items: merged.items.map(fleetDeviceView), nextCursor: merged.nextCursor }));
    },
  );

  app.openapi(
    route({
      method: "post",
      operationId: "bulkDevices",
      path: "/admin/devices/bulk",
      tags: ["fleet"],
      security,
      summary: `Register or update up to ${FLEET.bulkMaxItems} devices, idempotent by deviceId`,
      description:
        "Each item says what the device should be: a new one is registered (201), an existing one updated to what " +
        "differs (200 `updated`, with the fields it `changed`) or left alone (200 `unchanged`); fields an item leaves " +
        "out (node, name, model, osVersion, labels) stay as they are. The whole body is validated first: one invalid " +
        "item (or a deviceId repeated) is a 400 VALIDATION_FAILED naming every failing path (`devices.3.labels`), " +
        "and nothing is done. Then each item runs on its own (at most " +
        `${FLEET.bulkConcurrency} at a time) with the single routes' rules: an item the device refuses ` +
        "(409 DEVICE_BUSY, a pool or spec change while allocated) fails alone, the others are done. " +
        `Bodies up to ${FLEET.bulkMaxBodyBytes / 1024} KB; counted once against the operator rate limit.`,
      request: jsonBody(BulkDevicesBody),
      ok: { status: 200, schema: BulkResult, description: "One result per item, in request order" },
    }),
    async (c) => reply(c, ok(await runBulk(c, c.req.valid("json").devices))),
  );

  return app;
}
