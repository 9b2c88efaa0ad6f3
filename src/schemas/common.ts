/**
 * Schemas every concern uses: ids, the device spec, page sizes, the path params of a user and a
 * device, times and money in answers, the error shape.
 */
import { z } from "@hono/zod-openapi";
import { IDS, PAGING } from "../config";

export const Id = z.string().min(1).max(IDS.maxLength).regex(IDS.pattern, "letters, digits and . _ : @ - only (max 128)");

export const Spec = z
  .object({
    cpuCores: z.number().int().min(0).max(1024).optional(),
    memoryMB: z.number().int().min(0).max(16_777_216).optional(),
    storageMB: z.number().int().min(0).max(1_073_741_824).optional(),
  })
  .strict();

export const Limit = z.coerce.number().int().min(1).max(PAGING.maxLimit).optional();

/** Every time in an answer: ISO 8601 in UTC (`2026-01-31T09:30:00.000Z`). */
export const Time = z.iso.datetime().openapi({ description: "ISO 8601, UTC" });
/** Every amount of money: integer minor units of the `currency` beside it; its field name ends in `Minor`. */
export const Minor = z.number().int().openapi({ description: "Integer minor units of `currency` (cents for USD)" });

export const UserParam = z.object({ userId: Id });
export const DeviceIdParam = z.object({ id: Id });

export const ErrorSchema = z
  .object({ error: z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() }) })
  .openapi("Error");
