/** Quotas (src/routes/quotas.ts): what an operator may change, a renewal, and the quota as read. */
import { z } from "@hono/zod-openapi";
import { PLAN_TIERS } from "../config";

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
    plan: z.enum(PLAN_TIERS).optional(),
    limits: LimitsPatch.optional(),
    suspended: z.boolean().optional(),
    validUntil: z.iso.datetime({ offset: true }).optional(),
  })
  .strict()
  .refine((b) => Object.keys(b).length > 0, "name at least one field to change")
  .openapi("QuotaUpdate");

export const RenewBody = z
  .object({ extensionDays: z.number().int().min(1).max(3650).default(30) })
  .strict()
  .openapi("QuotaRenew");

export const QuotaView = z
  .object({
    userId: z.string(),
    plan: z.string(),
    status: z.string(),
    suspended: z.boolean(),
    validUntil: z.number(),
    limits: z.record(z.string(), z.number()),
    periodStart: z.number(),
    usage: z.record(z.string(), z.number()),
    updatedAt: z.number(),
  })
  .openapi("Quota");
