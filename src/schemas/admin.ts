/** The operators' devices, pools and users (src/routes/admin.ts). */
import { z } from "@hono/zod-openapi";
import { STRATEGIES } from "../config";
import { Id, Limit } from "./common";
import { IdleMinutes, IdleSeconds } from "./parts";

export const PoolParam = z.object({ pool: Id });

export const RegisterDeviceBody = z
  .object({
    deviceId: Id.optional(),
    pool: Id,
    node: Id.optional(),
    cpuCores: z.number().int().min(1).max(1024),
    memoryMB: z.number().int().min(1).max(16_777_216),
    storageMB: z.number().int().min(1).max(1_073_741_824),
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
  })
  .strict()
  .refine((b) => Object.keys(b).length > 0, "name at least one field to change")
  .openapi("UpdateDevice");

export const DeviceView = z
  .object({
    deviceId: z.string(),
    pool: z.string(),
    node: z.string(),
    cpuCores: z.number(),
    memoryMB: z.number(),
    storageMB: z.number(),
    status: z.string(),
    createdAt: z.number(),
    updatedAt: z.number(),
  })
  .passthrough()
  .openapi("Device");

export const HistoryQuery = z.object({ cursor: z.coerce.number().int().min(0).optional(), limit: Limit }).strict();
export const PoolDevicesQuery = z
  .object({
    status: z.enum(["available", "allocated", "maintenance", "offline"]).optional(),
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
