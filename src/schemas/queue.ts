/** The waiting queue and reservations (src/routes/queue.ts). */
import { z } from "@hono/zod-openapi";
import { ALLOCATION, QUEUE, RESERVATION } from "../config";
import { ErrorItem, Id, Int, Limit, Spec, orNull } from "./common";
import { Instant, withDefault } from "./parts";
import { QUEUE_STATUSES } from "../domain/queue";
import { RESERVATION_STATUSES } from "../domain/reservation";

const Duration = {
  durationMinutes: withDefault(z.number().int().min(ALLOCATION.minMinutes).max(ALLOCATION.maxMinutes), ALLOCATION.defaultMinutes),
  durationSeconds: z
    .number()
    .int()
    .min(ALLOCATION.minShortSeconds)
    .max(ALLOCATION.maxMinutes * 60)
    .optional()
    .openapi({ description: "Test-only short duration; refused unless ALLOW_SHORT_DURATIONS is set." }),
};

export const QueueJoinBody = z
  .object({
    userId: Id.optional().openapi({ description: "Admins only: queue on behalf of this user." }),
    ...Duration,
    pool: Id.optional(),
    spec: Spec.optional(),
    priority: z
      .number()
      .int()
      .min(0)
      .max(3)
      .optional()
      .openapi({
        description:
          "0 standard, 1 vip, 2 premium, 3 enterprise. Defaults to your plan's (free 0, basic 1, pro 2, enterprise 3); " +
          "you may ask for lower, only an admin for higher.",
      }),
    maxWaitMinutes: withDefault(z.number().int().min(1).max(QUEUE.maxMaxWaitMinutes), QUEUE.defaultMaxWaitMinutes),
    maxWaitSeconds: z
      .number()
      .int()
      .min(1)
      .max(QUEUE.maxMaxWaitMinutes * 60)
      .optional()
      .openapi({ description: "Test-only short wait; refused unless ALLOW_SHORT_DURATIONS is set." }),
    idempotencyKey: z.string().min(1).max(200).optional().openapi({
      description: "A repeat with the same key answers the first entry (the same request only; else 409 IDEMPOTENCY_KEY_REUSED).",
    }),
  })
  .strict()
  .openapi("QueueJoinRequest");

export const QueueEntryIdParam = z.object({ id: z.string().min(1).max(400) });
const ListedPool = Id.optional().openapi({ description: "Only this pool (404 POOL_NOT_FOUND when unknown). Absent: every pool." });

export const QueueListQuery = z
  .object({
    pool: ListedPool,
    userId: Id.optional(),
    status: z.enum(["waiting", "offered", "fulfilled", "expired", "cancelled", "failed"]).optional(),
    limit: Limit,
  })
  .strict();

/** The queue list's `waiting`: how busy the listed pools' queues are, not how many of the items wait. */
export const QueueWaiting = Int.openapi({
  description:
    "Entries waiting or offered a device in the pools listed, everyone's (not only the items shown): " +
    "the pool's count with `pool`, else the sum over every pool.",
});

export const QueueEntryView = z
  .object({
    entryId: z.string(),
    userId: z.string(),
    pool: z.string(),
    status: z.enum(QUEUE_STATUSES),
    priority: z.number(),
    priorityName: z.string(),
    spec: z.object({ cpuCores: z.number(), memoryMB: z.number(), storageMB: z.number() }),
    durationMinutes: z.number(),
    maxWaitMinutes: z.number(),
    joinedAt: z.string(),
    waitUntil: z.string(),
    position: z.number().nullable().openapi({ description: "1 = next in line; null once the entry stopped waiting." }),
    estimatedStartAt: z.string().nullable(),
    estimatedWaitSeconds: z.number().nullable(),
    allocationId: z.string().nullable(),
    deviceId: z.string().nullable(),
    error: orNull(ErrorItem),
    createdBy: z.string(),
  })
  .openapi("QueueEntry");

export const ReservationCheckBody = z
  .object({
    userId: Id.optional().openapi({ description: "Admins only: check for this user." }),
    startAt: Instant,
    ...Duration,
    pool: Id.optional(),
    spec: Spec.optional(),
  })
  .strict()
  .openapi("ReservationCheckRequest");

export const ReservationBody = z
  .object({
    userId: Id.optional().openapi({ description: "Admins only: reserve on behalf of this user." }),
    startAt: Instant,
    ...Duration,
    pool: Id.optional(),
    spec: Spec.optional(),
    reminderMinutes: withDefault(
      z.number().int().min(0).max(RESERVATION.maxReminderMinutes),
      RESERVATION.defaultReminderMinutes,
      "`reservation.reminder` on your feed this long before the start (0: none).",
    ),
    idempotencyKey: z.string().min(1).max(200).optional().openapi({
      description: "A repeat with the same key answers the first reservation (the same request only; else 409 IDEMPOTENCY_KEY_REUSED).",
    }),
  })
  .strict()
  .openapi("ReservationRequest");

export const ReservationIdParam = z.object({ id: z.string().min(1).max(400) });
export const ReservationListQuery = z
  .object({
    pool: ListedPool,
    userId: Id.optional(),
    status: z.enum(["pending", "confirmed", "executing", "completed", "cancelled", "expired", "failed"]).optional(),
    limit: Limit,
  })
  .strict();

export const ReservationView = z
  .object({
    reservationId: z.string(),
    userId: z.string(),
    pool: z.string(),
    deviceId: z.string().nullable(),
    status: z.enum(RESERVATION_STATUSES),
    spec: z.object({ cpuCores: z.number(), memoryMB: z.number(), storageMB: z.number() }),
    startAt: z.string(),
    endAt: z.string(),
    durationMinutes: z.number(),
    reminderMinutes: z.number(),
    remindAt: z.string().nullable(),
    allocationId: z.string().nullable(),
    error: orNull(ErrorItem),
    createdBy: z.string(),
    createdAt: z.string(),
  })
  .openapi("Reservation");

/** POST /scheduler/reservations/check: would the window be bookable, and the caller's own reservations overlapping it. */
export const ReservationCheck = z
  .object({
    pool: z.string(),
    startAt: z.string(),
    endAt: z.string(),
    available: z.boolean().openapi({ description: "A booking now would get a device." }),
    matchingDevices: Int,
    freeDevices: Int,
    overlapping: z.array(ReservationView),
  })
  .openapi("ReservationCheck");
