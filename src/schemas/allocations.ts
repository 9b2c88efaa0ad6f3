/** Allocations (src/routes/scheduler.ts): allocate, release, extend, the allocation and its list, free devices, events. */
import { z } from "@hono/zod-openapi";
import { ALLOCATION, PAGING } from "../config";
import { Id, Limit, Spec, Time } from "./common";
import { IdleMinutes, IdleSeconds, withDefault } from "./parts";
import { END_REASONS, LISTED_ALLOCATION_STATUSES } from "../domain/types";

export const AllocateBody = z
  .object({
    userId: Id.optional().openapi({ description: "Admins only: allocate on behalf of this user." }),
    durationMinutes: withDefault(z.number().int().min(ALLOCATION.minMinutes).max(ALLOCATION.maxMinutes), ALLOCATION.defaultMinutes),
    durationSeconds: z
      .number()
      .int()
      .min(ALLOCATION.minShortSeconds)
      .max(ALLOCATION.maxMinutes * 60)
      .optional()
      .openapi({ description: "Test-only short duration; refused unless ALLOW_SHORT_DURATIONS is set." }),
    pool: Id.optional(),
    spec: Spec.optional(),
    idempotencyKey: z.string().min(1).max(200).optional(),
    idleReleaseMinutes: IdleMinutes.optional().openapi({
      description:
        "Idle release: the allocation ends (reason `idle`, billed as usual) once you have had " +
        "no user feed socket (GET /ws) open for this many minutes. " +
        "The clock starts when your last socket closes (or at allocation when none is open) and stops when one opens again. " +
        "If the pool also sets one, the shorter applies.",
    }),
    idleReleaseSeconds: IdleSeconds.optional().openapi({
      description: "Test-only idle release grace in seconds; refused unless ALLOW_SHORT_DURATIONS is set.",
    }),
  })
  .strict()
  .refine((b) => b.idleReleaseMinutes === undefined || b.idleReleaseSeconds === undefined, {
    message: "name idleReleaseMinutes or idleReleaseSeconds, not both",
    path: ["idleReleaseSeconds"],
  })
  .openapi("AllocateRequest");

export const AllocationResult = z
  .object({
    allocationId: z.string(),
    deviceId: z.string(),
    userId: z.string(),
    pool: z.string(),
    node: z.string(),
    cpuCores: z.number(),
    memoryMB: z.number(),
    storageMB: z.number(),
    allocatedAt: Time,
    expiresAt: Time,
    durationMinutes: z.number(),
    idleReleaseSeconds: z.number().optional().openapi({
      description:
        "Present when the allocation has an idle release grace: the one that applies (its own or its pool's, the shorter), in seconds.",
    }),
  })
  .openapi("AllocationResult");

export const ReleaseBody = z.object({ deviceId: Id, userId: Id.optional() }).strict().openapi("ReleaseRequest");
export const ReleaseResult = z
  .object({
    allocationId: z.string(),
    deviceId: z.string(),
    userId: z.string(),
    allocatedAt: Time,
    releasedAt: Time,
    durationSeconds: z.number(),
    reason: z.enum(END_REASONS),
  })
  .openapi("ReleaseResult", { description: "An allocation that ended: when it started and ended, how long it ran, why it ended" });

export const ExtendBody = z
  .object({ additionalMinutes: z.number().int().min(1).max(ALLOCATION.maxMinutes) })
  .strict()
  .openapi("ExtendRequest");

export const AllocationView = z
  .object({
    allocationId: z.string(),
    userId: z.string(),
    deviceId: z.string().nullable(),
    pool: z.string(),
    status: z.enum(LISTED_ALLOCATION_STATUSES),
    cpuCores: z.number(),
    memoryMB: z.number(),
    storageMB: z.number(),
    allocatedAt: Time.nullable().openapi({ description: "null while pending" }),
    expiresAt: Time.nullable().openapi({ description: "null while pending" }),
    durationMinutes: z.number(),
    releasedAt: Time.nullable().openapi({ description: "null until it ends" }),
    durationSeconds: z.number().nullable(),
    reason: z.enum(END_REASONS).nullable().openapi({ description: "Why it ended (null until it ends)" }),
    extendCount: z.number(),
    extendedMinutes: z.number(),
    idempotencyKey: z.string().nullable(),
    idleReleaseSeconds: z
      .number()
      .nullable()
      .openapi({ description: "Idle release grace that applies, in seconds (null: no idle release)." }),
  })
  .openapi("Allocation");

export const ListAllocationsQuery = z
  .object({
    userId: Id.optional(),
    status: z.enum(LISTED_ALLOCATION_STATUSES).optional(),
    cursor: z
      .string()
      .max(300)
      .regex(/^\d+\..+$/, "a cursor from a previous page")
      .optional(),
    limit: Limit,
  })
  .strict();

export const AllocationIdParam = z.object({ id: z.string().min(1).max(400) });

export const AvailableQuery = z.object({ pool: Id.optional(), cursor: Id.optional(), limit: Limit }).strict();

export const EventsQuery = z.object({ since: z.coerce.number().int().min(0).optional(), limit: Limit, userId: Id.optional() }).strict();
