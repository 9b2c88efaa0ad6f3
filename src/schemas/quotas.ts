/** Quotas (src/routes/quotas.ts): what an operator may change, a renewal, and the quota as read. */
import { z } from "@hono/zod-openapi";
import { PLAN_TIERS } from "../config";
import { QUOTA_STATUSES } from "../domain/types";
import { Int, Time } from "./common";
import { withDefault } from "./parts";

const Count = (max: number) => z.number().int().min(0).max(max);

const LimitsPatch = z
  .object({
    maxDevices: Count(100_000),
    maxCpuCores: Count(10_000_000),
    maxMemoryMB: Count(1e12),
    maxStorageMB: Count(1e13),
    maxCpuCoresPerDevice: Count(1024),
    maxMemoryMBPerDevice: Count(16_777_216),
    maxStorageMBPerDevice: Count(1_073_741_824),
    maxDeviceHoursPerPeriod: Count(1e9),
  })
  .partial()
  .strict();

export const QuotaUpdateBody = z
  .object({
    tier: z.enum(PLAN_TIERS).optional().openapi({ description: "The quota tier; without `limits`, a new tier brings its own limits." }),
    limits: LimitsPatch.optional(),
    suspended: z.boolean().optional(),
    validUntil: z.iso.datetime({ offset: true }).optional(),
  })
  .strict()
  .refine((b) => Object.keys(b).length > 0, "name at least one field to change")
  .openapi("QuotaUpdate");

export const RenewBody = z
  .object({ extensionDays: withDefault(z.number().int().min(1).max(3650), 30) })
  .strict()
  .openapi("QuotaRenew");

export const QuotaLimitsView = z
  .object({
    maxDevices: Int,
    maxCpuCores: Int,
    maxMemoryMB: Int,
    maxStorageMB: Int,
    maxCpuCoresPerDevice: Int.openapi({ description: "Largest single device a user may hold" }),
    maxMemoryMBPerDevice: Int,
    maxStorageMBPerDevice: Int,
    maxDeviceHoursPerPeriod: Int.openapi({ description: "Device-hours per quota period (calendar month, UTC)" }),
  })
  .openapi("QuotaLimits");

export const QuotaUsageView = z
  .object({
    devices: Int,
    cpuCores: Int,
    memoryMB: Int,
    storageMB: Int,
    deviceHours: z
      .number()
      .openapi({ description: "Device-hours of the current period: finished use plus what active allocations booked" }),
  })
  .openapi("QuotaUsage");

export const QuotaView = z
  .object({
    userId: z.string(),
    tier: z.enum(PLAN_TIERS).openapi({ description: "The quota tier (not the pricing plan, which is billing's `planId`)" }),
    status: z.enum(QUOTA_STATUSES).openapi({ description: "`expired` once validUntil has passed; `suspended` when an admin set it" }),
    suspended: z.boolean(),
    validUntil: Time,
    limits: QuotaLimitsView,
    periodStart: Time.openapi({ description: "Start of the current period (calendar month, UTC)" }),
    usage: QuotaUsageView,
    updatedAt: Time,
  })
  .openapi("Quota");
