/**
 * Schemas every concern uses: ids, the device spec, page sizes, the path params of a user and a
 * device, times and money in answers, the error shape.
 */
import { z } from "@hono/zod-openapi";
import { IDS, PAGING } from "../config";
import { ERROR_CODES } from "../errors";

export const Id = z.string().min(1).max(IDS.maxLength).regex(IDS.pattern, "letters, digits and . _ : @ - only (max 128)");

export const Spec = z
  .object({
    cpuCores: z.number().int().min(0).max(1024).optional(),
    memoryMB: z.number().int().min(0).max(16_777_216).optional(),
    storageMB: z.number().int().min(0).max(1_073_741_824).optional(),
  })
  .strict();

export const Limit = z.coerce.number().int().min(1).max(PAGING.maxLimit).optional();

/** A whole number in an answer (counts, sizes, seconds). */
export const Int = z.number().int();

/** Every time in an answer: ISO 8601 in UTC (`2026-01-31T09:30:00.000Z`). */
export const Time = z.iso.datetime().openapi({ description: "ISO 8601, UTC" });
/** Every amount of money: integer minor units of the `currency` beside it; its field name ends in `Minor`. */
export const Minor = z.number().int().openapi({ description: "Integer minor units of `currency` (cents for USD)" });

export const UserParam = z.object({ userId: Id });
/**
 * The query of an admin's write naming a user: an unknown user is `404 USER_NOT_FOUND` unless
 * `create=true` (src/routes/addressed-user.ts).
 */
export const CreateQuery = z
  .object({
    create: z
      .enum(["true", "false"])
      .optional()
      .transform((v) => v === "true")
      .openapi({
        description:
          "`true`: a user who does not exist yet is created (their billing account opened). " +
          "Otherwise an unknown user is 404 USER_NOT_FOUND. Default: false.",
      }),
  })
  .strict();
export const DeviceIdParam = z.object({ id: Id });

/** What a client switches on: every code the service answers. */
export const ErrorCode = z.enum(ERROR_CODES).openapi("ErrorCode");

export const ErrorDetails = z
  .object({
    issues: z
      .array(z.object({ path: z.string(), message: z.string() }))
      .optional()
      .openapi({
        description:
          "VALIDATION_FAILED: every failing field, with its path (dot-joined; inside a batch it starts with the item's index, " +
          "e.g. `records.2.tenantId`) and what is wrong with it.",
      }),
    retryAfterSeconds: z.number().int().optional().openapi({ description: "RATE_LIMITED: when to try again (also in Retry-After)" }),
    requestId: z.string().optional().openapi({ description: "INTERNAL: quote it to an operator; the log has the rest" }),
    problems: z.array(z.string()).optional().openapi({ description: "SERVICE_MISCONFIGURED: what an operator must fix" }),
  })
  .catchall(z.unknown())
  .openapi("ErrorDetails", {
    description:
      "Context for the code. The keys above are stable; any other key is free-form context of that code " +
      "(for example the balance and the cost of INSUFFICIENT_BALANCE), shown to help a person, not a contract.",
  });

/**
 * A registered schema or null. (`.nullable()` on a registered schema is documented as
 * `allOf: [ref, {type: [object, null]}]`, which `null` does not satisfy.)
 */
export const orNull = <T extends z.ZodType>(schema: T, description?: string) =>
  description ? z.union([schema, z.null()]).openapi({ description }) : z.union([schema, z.null()]);

/** An error as items of batches and stored outcomes carry it. */
export const ErrorItem = z.object({ code: ErrorCode, message: z.string(), details: ErrorDetails.optional() }).openapi("ErrorItem");

export const ErrorSchema = z.object({ error: ErrorItem }).openapi("Error");
