/** The operators' devices, pools and users (src/routes/admin.ts). */
import { z } from "@hono/zod-openapi";
import { STRATEGIES } from "../config";
import { DEVICE_STATUSES } from "../domain/types";
import { ReleaseResult } from "./allocations";
import { Id, Int, Limit, Minor, Time, orNull } from "./common";
import { IdleMinutes, IdleSeconds, Instant } from "./parts";
import { QuotaView } from "./quotas";
import { metaFields, metaPatchFields, metaViewFields } from "./device-meta";

export const PoolParam = z.object({ pool: Id });

export const RegisterDeviceBody = z
  .object({
    deviceId: Id.optional(),
    pool: Id,
    node: Id.optional(),
    cpuCores: z.number().int().min(1).max(1024),
    memoryMB: z.number().int().min(1).max(16_777_216),
    storageMB: z.number().int().min(1).max(1_073_741_824),
    ...metaFields,
  })
  .strict()
  .openapi("RegisterDevice");

export const UpdateDeviceBody = z
  .object({
    pool: Id.optional(),
    node: Id.optional(),
    cpuCores: z.number().int().min(1).max(1024).optional(),
    memoryMB: z.number().int().min(1).max(16_777_216).optional(),
    storageMB: z.number().int().min(1).max(1_073_741_824).optional(),
    ...metaPatchFields,
  })
  .strict()
  .refine((b) => Object.keys(b).length > 0, "name at least one field to change")
  .openapi("UpdateDevice");

const DeviceStatus = z.enum(DEVICE_STATUSES);

export const DeviceView = z
  .object({
    deviceId: z.string(),
    pool: z.string(),
    node: z.string(),
    cpuCores: Int,
    memoryMB: Int,
    storageMB: Int,
    status: DeviceStatus,
    ...metaViewFields,
    createdAt: Time,
    updatedAt: Time,
  })
  .openapi("Device");

export const DeviceAllocationView = z
  .object({
    allocationId: z.string(),
    userId: z.string(),
    confirmed: z.boolean().openapi({ description: "false while the user's side has not yet confirmed the claim" }),
    allocatedAt: Time,
    expiresAt: Time,
  })
  .openapi("DeviceAllocation");

/** Why the status last changed, and a drain under way (GET one device, a status change's answer). */
const statusNote = {
  statusReason: orNull(z.string(), "The operator's reason for the last status change (null: none given)."),
  statusSince: orNull(Time, "When the status last changed, or the drain began (null: never changed)."),
  drain: orNull(
    z
      .object({
        status: z.enum(["maintenance", "offline"]),
        deadline: Time.openapi({ description: "The allocation may run (and be extended) until then at most." }),
      })
      .openapi("Drain"),
    "A maintenance or offline waiting for the running allocation's end (null: none).",
  ),
};

export const DeviceDetailView = DeviceView.extend({
  allocation: orNull(DeviceAllocationView, "The allocation it holds now (null: none)"),
  ...statusNote,
}).openapi("DeviceDetail");

export const DeviceStatusView = DeviceView.extend({
  ended: orNull(ReleaseResult, "The allocation this change ended (null: none)"),
  ...statusNote,
}).openapi("DeviceStatusChange");

/** POST /admin/devices/{id}/maintenance | offline | online. */
export const StatusChangeBody = z
  .object({
    reason: z.string().min(1).max(500).optional().openapi({ description: "Kept, shown, sent on the admin feed and audited." }),
    drain: z
      .boolean()
      .optional()
      .openapi({
        description:
          "maintenance/offline only: let the running allocation reach its end first (no new claims; no extension past " +
          "`deadline`), then change. Without an allocation the change is immediate.",
      }),
    deadline: Instant.optional().openapi({
      description: "With `drain`: the latest end an extension may reach (default: the allocation's end now; an earlier one is that end).",
    }),
  })
  .strict()
  .openapi("DeviceStatusRequest");

export const RemovedDeviceView = z
  .object({
    deviceId: z.string(),
    ended: orNull(ReleaseResult, "The allocation the removal ended (null: none)"),
  })
  .openapi("RemovedDevice");

export const DeviceHistoryPage = z
  .object({
    items: z.array(ReleaseResult),
    nextCursor: Int.nullable().openapi({ description: "Pass as `cursor` for the next (older) page; null on the last" }),
  })
  .openapi("DeviceHistoryPage");

export const PoolView = z
  .object({
    pool: z.string(),
    strategy: z.enum(STRATEGIES),
    idleReleaseMinutes: z
      .number()
      .nullable()
      .openapi({ description: "Idle release of the pool's allocations (null: off); fractional when set in seconds (tests)" }),
    idleReleaseSeconds: Int.nullable(),
    devices: Int,
    available: Int,
    allocated: Int,
    maintenance: Int,
    offline: Int,
    nodes: Int,
  })
  .openapi("Pool");

export const PoolList = z.object({ items: z.array(PoolView) }).openapi("PoolList");

/** A device as its pool lists it (free devices, GET /scheduler/devices/available). */
export const FreeDeviceView = z
  .object({ deviceId: z.string(), node: z.string(), cpuCores: Int, memoryMB: Int, storageMB: Int, status: DeviceStatus })
  .openapi("FreeDevice");

export const FreeDevicesPage = z
  .object({ pool: z.string(), items: z.array(FreeDeviceView), nextCursor: z.string().nullable() })
  .openapi("FreeDevicesPage");

/** A device as its pool lists it for operators: with who holds it. */
export const PoolDeviceView = FreeDeviceView.extend({
  allocationId: z.string().nullable(),
  userId: z.string().nullable(),
  expiresAt: Time.nullable().openapi({ description: "When the allocation it holds ends (null: none)" }),
  ...metaViewFields,
}).openapi("PoolDevice");

export const PoolDevicesPage = z
  .object({
    items: z.array(PoolDeviceView),
    nextCursor: z.string().nullable().openapi({ description: "Pass as `cursor` for the next page (the last deviceId); null on the last" }),
  })
  .openapi("PoolDevicesPage");

export const AdminUserView = z
  .object({
    userId: z.string(),
    pricingPlanId: z.string().openapi({ description: "The pricing plan of the user's billing account" }),
    balanceMinor: Minor.openapi({ description: "The account's balance, integer minor units of `currency`" }),
    currency: z.string().nullable().openapi({ description: "The pricing plan's currency (null: the plan is gone)" }),
    tokensNotBefore: Time.nullable().openapi({ description: "Their tokens issued before it are refused (null: never revoked)" }),
    quota: QuotaView,
  })
  .openapi("AdminUser");

export const AdminUsersPage = z
  .object({
    items: z.array(AdminUserView),
    nextCursor: z.string().nullable().openapi({ description: "Pass as `cursor` for the next page (the last userId); null on the last" }),
  })
  .openapi("AdminUsersPage");

export const HistoryQuery = z.object({ cursor: z.coerce.number().int().min(0).optional(), limit: Limit }).strict();
export const PoolDevicesQuery = z
  .object({
    status: z.enum(DEVICE_STATUSES).exclude(["removed"]).optional(),
    cursor: Id.optional(),
    limit: Limit,
  })
  .strict();
export const UsersQuery = z.object({ cursor: Id.optional(), limit: Limit }).strict();
export const StrategyBody = z
  .object({
    strategy: z.enum(STRATEGIES).optional().openapi({ description: "How the pool picks a device." }),
    idleReleaseMinutes: IdleMinutes.nullable()
      .optional()
      .openapi({
        description:
          "Idle release for every allocation in the pool: it ends (reason `idle`, billed) " +
          "once its holder has had no user feed socket open this long. " +
          "`null` turns it off. An allocation's own idleReleaseMinutes applies if shorter.",
      }),
    idleReleaseSeconds: IdleSeconds.nullable().optional().openapi({
      description: "Test-only idle release grace in seconds; refused unless ALLOW_SHORT_DURATIONS is set.",
    }),
  })
  .strict()
  .refine((b) => Object.keys(b).length > 0, "name at least one field to change")
  .refine((b) => b.idleReleaseMinutes === undefined || b.idleReleaseSeconds === undefined, {
    message: "name idleReleaseMinutes or idleReleaseSeconds, not both",
    path: ["idleReleaseSeconds"],
  })
  .openapi("PoolSettings");
