/** Request and response schemas (zod), shared by validation and the OpenAPI document. */
import { z } from "@hono/zod-openapi";
import { ALLOCATION, IDS, PAGING, PLAN_TIERS, STRATEGIES } from "./config";

export const Id = z.string().min(1).max(IDS.maxLength).regex(IDS.pattern, "letters, digits and . _ : @ - only (max 128)");
const Count = (max: number) => z.number().int().min(0).max(max);

export const Spec = z
  .object({
    cpuCores: z.number().int().min(0).max(1024).optional(),
    memoryMB: z.number().int().min(0).max(16_777_216).optional(),
    storageMB: z.number().int().min(0).max(1_073_741_824).optional(),
  })
  .strict();

export const AllocateBody = z
  .object({
    userId: Id.optional().openapi({ description: "Admins only: allocate on behalf of this user." }),
    durationMinutes: z.number().int().min(ALLOCATION.minMinutes).max(ALLOCATION.maxMinutes).default(ALLOCATION.defaultMinutes),
    durationSeconds: z.number().int().min(ALLOCATION.minShortSeconds).max(ALLOCATION.maxMinutes * 60).optional()
      .openapi({ description: "Test-only short duration; refused unless ALLOW_SHORT_DURATIONS is set." }),
    pool: Id.optional(),
    spec: Spec.optional(),
    idempotencyKey: z.string().min(1).max(200).optional(),
  })
  .strict()
  .openapi("AllocateRequest");

export const AllocationResult = z
  .object({
    allocationId: z.string(), deviceId: z.string(), userId: z.string(), pool: z.string(), node: z.string(),
    cpuCores: z.number(), memoryMB: z.number(), storageMB: z.number(),
    allocatedAt: z.string(), expiresAt: z.string(), durationMinutes: z.number(),
  })
  .openapi("AllocationResult");

export const ReleaseBody = z.object({ deviceId: Id, userId: Id.optional() }).strict().openapi("ReleaseRequest");
export const ReleaseResult = z
  .object({
    allocationId: z.string(), deviceId: z.string(), userId: z.string(), allocatedAt: z.string(), releasedAt: z.string(),
    durationSeconds: z.number(), reason: z.string(),
  })
  .openapi("ReleaseResult");

export const ExtendBody = z.object({ additionalMinutes: z.number().int().min(1).max(ALLOCATION.maxMinutes) }).strict().openapi("ExtendRequest");

export const AllocationView = z
  .object({
    allocationId: z.string(), userId: z.string(), deviceId: z.string().nullable(), pool: z.string(), status: z.string(),
    cpuCores: z.number(), memoryMB: z.number(), storageMB: z.number(), allocatedAt: z.number().nullable(), expiresAt: z.number().nullable(),
    durationMinutes: z.number(), releasedAt: z.number().nullable(), durationSeconds: z.number().nullable(), reason: z.string().nullable(),
    extendCount: z.number(), extendedMinutes: z.number(), idempotencyKey: z.string().nullable(),
  })
  .openapi("Allocation");

export const Limit = z.coerce.number().int().min(1).max(PAGING.maxLimit).optional();

export const ListAllocationsQuery = z
  .object({
    userId: Id.optional(),
    status: z.enum(["pending", "active", "released"]).optional(),
    cursor: z.string().max(300).regex(/^\d+\..+$/, "a cursor from a previous page").optional(),
    limit: Limit,
  })
  .strict();

export const AllocationIdParam = z.object({ id: z.string().min(1).max(400) });
export const DeviceIdParam = z.object({ id: Id });
export const PoolParam = z.object({ pool: Id });

export const AvailableQuery = z.object({ pool: Id.optional(), cursor: Id.optional(), limit: Limit }).strict();

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
    deviceId: z.string(), pool: z.string(), node: z.string(), cpuCores: z.number(), memoryMB: z.number(), storageMB: z.number(),
    status: z.string(), createdAt: z.number(), updatedAt: z.number(),
  })
  .passthrough()
  .openapi("Device");

export const HistoryQuery = z.object({ cursor: z.coerce.number().int().min(0).optional(), limit: Limit }).strict();
export const PoolDevicesQuery = z
  .object({ status: z.enum(["available", "allocated", "maintenance", "offline"]).optional(), cursor: Id.optional(), limit: Limit })
  .strict();
export const StrategyBody = z.object({ strategy: z.enum(STRATEGIES) }).strict().openapi("PoolSettings");

const LimitsPatch = z
  .object({
    maxDevices: Count(100_000), maxCpuCores: Count(10_000_000), maxMemoryMB: Count(1e12), maxStorageMB: Count(1e13),
    maxCpuCoresPerDevice: Count(1024), maxMemoryMBPerDevice: Count(16_777_216), maxStorageMBPerDevice: Count(1_073_741_824),
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

export const RenewBody = z.object({ extensionDays: z.number().int().min(1).max(3650).default(30) }).strict().openapi("QuotaRenew");
export const UserParam = z.object({ userId: Id });

export const QuotaView = z
  .object({
    userId: z.string(), plan: z.string(), status: z.string(), suspended: z.boolean(), validUntil: z.number(),
    limits: z.record(z.string(), z.number()), periodStart: z.number(), usage: z.record(z.string(), z.number()), updatedAt: z.number(),
  })
  .openapi("Quota");

export const EventsQuery = z.object({ since: z.coerce.number().int().min(0).optional(), limit: Limit, userId: Id.optional() }).strict();

export const ErrorSchema = z
  .object({ error: z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() }) })
  .openapi("Error");
