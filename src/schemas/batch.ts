// ---- batch operations (POST /scheduler/batch/*, src/routes/batch.ts) ----------------------------
// The envelopes are checked as a whole (a wrong one is a 400); each item is checked on its own
// in src/routes/batch.ts, with the single route's schema, so one bad item fails alone.
import { z } from "@hono/zod-openapi";
import { BATCH } from "../config";
import { AllocationIdParam, ExtendBody } from "./allocations";
import { ErrorItem, Id } from "./common";
import { withDefault } from "./parts";

/** An item of a batch extend: the single extend route's path id and body in one object. */
export const BatchExtendItem = z
  .object({ allocationId: AllocationIdParam.shape.id, additionalMinutes: ExtendBody.shape.additionalMinutes })
  .strict()
  .openapi("BatchExtendItem");

/** Per item, in request order: what the single route would have answered, as a value or an error. */
export const batchResult = <T extends z.ZodType>(value: T, name: string) =>
  z
    .object({
      results: z.array(
        z.union([
          z.object({
            index: z.number().int(),
            ok: z.literal(true),
            status: z.number().int().openapi({ description: "The single route's success status (201 allocate, 200 otherwise)" }),
            value,
          }),
          z.object({
            index: z.number().int(),
            ok: z.literal(false),
            status: z.number().int().openapi({ description: "The single route's error status; 424 for a skipped item" }),
            skipped: z.literal(true).optional().openapi({ description: "Not tried: an earlier item failed and continueOnError is false" }),
            error: ErrorItem,
          }),
        ]),
      ),
      succeeded: z.number().int(),
      failed: z.number().int().openapi({ description: "Items tried that failed (skipped ones not counted)" }),
      skipped: z.number().int(),
    })
    .openapi(name);

const requestsOf = (item: { $ref: string }) =>
  z
    .array(z.unknown())
    .min(1)
    .max(BATCH.maxItems)
    .openapi({
      items: item,
      description:
        `1 to ${BATCH.maxItems} items, in the order they are answered. ` +
        "Each is checked on its own: an invalid item gets its own VALIDATION_FAILED result.",
    });
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const continueOnError = withDefault(
  z.boolean(),
  false,
  "false: run the items in order and stop at the first failure (the rest are skipped). " +
    "true: try every item; one user's items run in order, different users' concurrently.",
);
export const BatchAllocateBody = z
  .object({
    userId: Id.optional().openapi({ description: "Admins only: the user of every item that names none." }),
    continueOnError,
    requests: requestsOf(ref("AllocateRequest")),
  })
  .strict()
  .openapi("BatchAllocateRequest");

export const BatchReleaseBody = z
  .object({
    userId: Id.optional().openapi({ description: "Admins only: the user of every item that names none." }),
    continueOnError,
    requests: requestsOf(ref("ReleaseRequest")),
  })
  .strict()
  .openapi("BatchReleaseRequest");

export const BatchExtendBody = z
  .object({ continueOnError, requests: requestsOf(ref("BatchExtendItem")) })
  .strict()
  .openapi("BatchExtendRequest");

export const BatchQueryBody = z
  .object({
    allocationIds: z
      .array(z.unknown())
      .min(1)
      .max(BATCH.maxItems)
      .openapi({
        items: { type: "string", minLength: 1, maxLength: 400 },
        description:
          `1 to ${BATCH.maxItems} allocation ids; each answered on its own ` +
          "(another user's id reads as 404, as on GET /scheduler/allocations/{id}).",
      }),
  })
  .strict()
  .openapi("BatchQueryRequest");
