/** The fleet: GET /admin/devices (every pool's devices, filtered) and POST /admin/devices/bulk (src/routes/fleet.ts). */
import { z } from "@hono/zod-openapi";
import { FLEET } from "../config";
import { cursorId } from "../domain/fleet";
import { DEVICE_STATUSES } from "../domain/types";
import { PoolDeviceView, RegisterDeviceBody } from "./admin";
import { ErrorItem, Id, Int, Limit } from "./common";
import { LABEL_KEY, LABEL_VALUE } from "./device-meta";

const LabelFilter = z
  .string()
  .max(200)
  .refine((s) => {
    const i = s.indexOf(":");
    return i > 0 && LABEL_KEY.test(s.slice(0, i)) && LABEL_VALUE.test(s.slice(i + 1));
  }, "a label as key:value (a label key, a colon, a label value)");

export const FleetQuery = z
  .object({
    pool: Id.optional().openapi({ description: "Only this pool (an unknown one is 404 POOL_NOT_FOUND); one call instead of one per pool" }),
    status: z.enum(DEVICE_STATUSES).exclude(["removed"]).optional(),
    node: Id.optional(),
    label: z
      .union([LabelFilter, z.array(LabelFilter).max(FLEET.maxLabelFilters)])
      .optional()
      .openapi({
        description: `\`key:value\`; repeat it (at most ${FLEET.maxLabelFilters}) and a device must carry every one`,
        example: "region:eu-west",
      }),
    holder: Id.optional().openapi({ description: "The user id of the allocation the device holds now" }),
    q: z
      .string()
      .min(1)
      .max(100)
      .optional()
      .openapi({ description: "Text found in the device id, name or model (ASCII letters in any case)" }),
    cursor: z
      .string()
      .max(300)
      .refine((c) => cursorId(c) !== null, "not a cursor of this list (pass nextCursor as it came)")
      .optional()
      .openapi({ description: "The previous page's nextCursor (opaque)" }),
    limit: Limit,
  })
  .strict();

export const FleetDeviceView = PoolDeviceView.extend({
  pool: z.string(),
}).openapi("FleetDevice");

export const FleetPage = z
  .object({
    items: z.array(FleetDeviceView),
    nextCursor: z.string().nullable().openapi({ description: "Pass as `cursor` for the next page (opaque); null on the last" }),
  })
  .openapi("FleetPage");

/** A bulk item: a registration whose `deviceId` is required (the key the import is idempotent by). */
export const BulkDeviceItem = z
  .object({ ...RegisterDeviceBody.shape, deviceId: Id })
  .strict()
  .openapi("BulkDevice", {
    description:
      "What the device should be. A new device is registered (node default `node-1`); an existing one is updated to " +
      "what differs, and fields left out (node, name, model, osVersion, labels) stay as they are.",
  });

export const BulkDevicesBody = z
  .object({ devices: z.array(BulkDeviceItem).min(1).max(FLEET.bulkMaxItems) })
  .strict()
  .superRefine(
    (b, ctx) => {
      const first = new Map<string, number>();
      (b.devices as unknown[]).forEach((d, i) => {
        const id = (d as { deviceId?: unknown } | null)?.deviceId;
        if (typeof id !== "string") return;
        const seen = first.get(id);
        if (seen === undefined) first.set(id, i);
        else ctx.addIssue({ code: "custom", path: ["devices", i, "deviceId"], message: `repeats item ${seen}'s deviceId` });
      });
    },
    // Also when items failed: every failing path is named in one answer.
    { when: (p) => Array.isArray((p.value as { devices?: unknown } | null)?.devices) },
  )
  .openapi("BulkDevicesRequest");

export const BULK_OUTCOMES = ["created", "updated", "unchanged"] as const;

export const BulkResult = z
  .object({
    results: z.array(
      z.union([
        z.object({
          index: Int,
          deviceId: z.string(),
          ok: z.literal(true),
          status: Int.openapi({ description: "201 created, 200 updated or unchanged" }),
          outcome: z.enum(BULK_OUTCOMES),
          changed: z.array(z.string()).openapi({ description: "The fields an update changed ([] when created or unchanged)" }),
        }),
        z.object({
          index: Int,
          deviceId: z.string(),
          ok: z.literal(false),
          status: Int.openapi({ description: "What the single route would answer (409 DEVICE_BUSY, …)" }),
          error: ErrorItem,
        }),
      ]),
    ),
    created: Int,
    updated: Int,
    unchanged: Int,
    failed: Int,
  })
  .openapi("BulkDevicesResult");
