/**
 * Batch operations on allocations: up to `BATCH.maxItems` allocate, release, extend or query
 * items in one request. Each item is checked with the single route's schema and goes through
 * the very operation the single route runs (`plan*` in ./scheduler.ts: the same checks, the
 * same one call to the user's object), so each item is atomic on its own and answered as the
 * single route would answer it. There is no rollback across items.
 *
 * Order: with `continueOnError: false` (the default) items run one after another in request
 * order and the first failure stops the batch (the rest are reported as skipped, status 424,
 * code SKIPPED). With `continueOnError: true` every item is tried: one user's items run in
 * request order, different users' side by side (at most `BATCH.concurrency` users at a time).
 * Only a wrong envelope is a 400 for the whole request; anything wrong with an item (its
 * shape, acting for another user, what its object says) is that item's result.
 */
import { z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { AppEnv } from "../auth";
import { newApp, validationFailure } from "../app-factory";
import { HttpError, errorBody, internalFailure, type Result } from "../errors";
import { jsonBody, route } from "../openapi";
import { BATCH } from "../config";
import {
  AllocateBody,
  AllocationIdParam,
  AllocatedResult,
  AllocationView,
  BatchAllocateBody,
  BatchExtendBody,
  BatchExtendItem,
  BatchQueryBody,
  BatchReleaseBody,
  ReleaseBody,
  ReleaseResult,
  batchResult,
} from "../schemas";
import { ExtendResult, planAllocate, planExtend, planGetAllocation, planRelease, type Planned } from "./scheduler";

/** Status of a skipped item (424 Failed Dependency: not tried because an earlier item failed). */
export const SKIPPED_STATUS = 424;

const security = [{ bearer: [] }];

// ---- running a batch ------------------------------------------------------------------------------

type Ctx = Context<AppEnv>;
type ItemError = ReturnType<typeof errorBody>["error"];
type Outcome =
  | { index: number; ok: true; status: 200 | 201; value: unknown }
  | { index: number; ok: false; status: number; skipped?: true; error: ItemError };

/**
 * One item: checked with `schema` (an invalid item is VALIDATION_FAILED, as the single route
 * says it), then planned; a refusal thrown while planning (acting for another user) is the
 * item's failure.
 */
function item<S extends z.ZodType, T>(schema: S, plan: (value: z.infer<S>) => Planned<T>) {
  return (raw: unknown): Planned<T> => {
    const parsed = schema.safeParse(raw);
    if (!parsed.success) return validationFailure(parsed.error.issues);
    try {
      return plan(parsed.data);
    } catch (err) {
      if (err instanceof HttpError) return err.failure;
      throw err;
    }
  };
}

/**
 * Plans every item first (nothing has run yet, so a bug there changes nothing), then runs them:
 * in order, stopping at the first failure, or (continueOnError) every item, one lane per user.
 */
async function runBatch<T>(c: Ctx, raws: unknown[], okStatus: 200 | 201, continueOnError: boolean, plan: (raw: unknown) => Planned<T>) {
  const plans = raws.map(plan);
  const results: Outcome[] = new Array(plans.length);

  const settle = async (i: number): Promise<boolean> => {
    const p = plans[i]!;
    let r: Result<T>;
    if (!p.ok) r = p;
    else {
      try {
        r = await p.run();
      } catch (err) {
        r = thrown(c, err, i);
      }
    }
    results[i] = r.ok
      ? { index: i, ok: true, status: okStatus, value: r.value }
      : { index: i, ok: false, status: r.status, error: errorBody(r).error };
    return r.ok;
  };

  if (!continueOnError) {
    for (let i = 0; i < plans.length; i++) {
      if (await settle(i)) continue;
      for (let j = i + 1; j < plans.length; j++) results[j] = skipped(j, i);
      break;
    }
  } else {
    const lanes = new Map<string, number[]>();
    for (let i = 0; i < plans.length; i++) {
      const p = plans[i]!;
      if (!p.ok) await settle(i);
      else lanes.set(p.userId, [...(lanes.get(p.userId) ?? []), i]);
    }
    const queue = [...lanes.values()];
    let next = 0;
    const worker = async () => {
      while (next < queue.length) for (const i of queue[next++]!) await settle(i);
    };
    await Promise.all(Array.from({ length: Math.min(BATCH.concurrency, queue.length) }, worker));
  }

  const count = (f: (o: Outcome) => boolean) => results.filter(f).length;
  return c.json(
    {
      results,
      succeeded: count((o) => o.ok),
      failed: count((o) => !o.ok && !o.skipped),
      skipped: count((o) => !o.ok && !!o.skipped),
    },
    200,
  );
}

function skipped(index: number, failedIndex: number): Outcome {
  return {
    index,
    ok: false,
    skipped: true,
    status: SKIPPED_STATUS,
    error: {
      code: "SKIPPED",
      message: `Not tried: item ${failedIndex} failed and continueOnError is false.`,
      details: { failedIndex },
    },
  };
}

/** A call that threw (an object that did not answer): the item gets what the single route's 500 says. */
function thrown(c: Ctx, err: unknown, index: number) {
  if (err instanceof HttpError) return err.failure;
  return internalFailure(err, { requestId: c.get("requestId"), path: c.req.path, index });
}

// ---- routes ---------------------------------------------------------------------------------------

const described = (what: string) =>
  `${what} Answers 200 with one result per item, in request order: ` +
  "`{index, ok: true, status, value}` (value: what the single route returns) " +
  "or `{index, ok: false, status, error}` (the single route's error), or for an item not tried " +
  '`{index, ok: false, skipped: true, status: 424, error: {code: "SKIPPED"}}`. ' +
  "Each item is atomic; there is no rollback across items. " +
  `Only a wrong envelope (not an object, \`requests\` missing, empty or over ${BATCH.maxItems}, unknown keys) is a 400.`;

export function batchRoutes() {
  const app = newApp();
  // The item schemas the envelopes refer to by name (the single routes register the others).
  app.openAPIRegistry.register("BatchExtendItem", BatchExtendItem);

  app.openapi(
    route({
      method: "post",
      operationId: "batchAllocate",
      path: "/scheduler/batch/allocate",
      tags: ["allocation", "batch"],
      security,
      summary: `Allocate up to ${BATCH.maxItems} devices, each item as POST /scheduler/devices/allocate`,
      description: described(
        "Items name their own `userId` (admins only), or take the envelope's. " +
          "A repeated `idempotencyKey` answers the first item's result, as on the single route.",
      ),
      request: jsonBody(BatchAllocateBody),
      ok: {
        status: 200,
        schema: batchResult(AllocatedResult, "BatchAllocateResult"),
        description: "Per item: the allocation (status 201) or its error",
      },
    }),
    async (c) => {
      const b = c.req.valid("json");
      return runBatch(
        c,
        b.requests,
        201,
        b.continueOnError,
        item(AllocateBody, (i) => planAllocate(c, { ...i, userId: i.userId ?? b.userId })),
      );
    },
  );

  app.openapi(
    route({
      method: "post",
      operationId: "batchRelease",
      path: "/scheduler/batch/release",
      tags: ["allocation", "batch"],
      security,
      summary: `Release up to ${BATCH.maxItems} devices, each item as POST /scheduler/devices/release`,
      description: described("Items name their own `userId` (admins only), or take the envelope's."),
      request: jsonBody(BatchReleaseBody),
      ok: {
        status: 200,
        schema: batchResult(ReleaseResult, "BatchReleaseResult"),
        description: "Per item: the ended allocation or its error",
      },
    }),
    async (c) => {
      const b = c.req.valid("json");
      return runBatch(
        c,
        b.requests,
        200,
        b.continueOnError,
        item(ReleaseBody, (i) => planRelease(c, { ...i, userId: i.userId ?? b.userId })),
      );
    },
  );

  app.openapi(
    route({
      method: "post",
      operationId: "batchExtend",
      path: "/scheduler/batch/extend",
      tags: ["allocation", "batch"],
      security,
      summary: `Extend up to ${BATCH.maxItems} allocations, each item as PUT /scheduler/allocations/{id}/extend`,
      description: described("Another user's allocation id is a 404 ALLOCATION_NOT_FOUND for a non-admin, as on the single route."),
      request: jsonBody(BatchExtendBody),
      ok: {
        status: 200,
        schema: batchResult(ExtendResult, "BatchExtendResult"),
        description: "Per item: the extended allocation or its error",
      },
    }),
    async (c) => {
      const b = c.req.valid("json");
      return runBatch(
        c,
        b.requests,
        200,
        b.continueOnError,
        item(BatchExtendItem, (i) => planExtend(c, i.allocationId, i.additionalMinutes)),
      );
    },
  );

  app.openapi(
    route({
      method: "post",
      operationId: "batchQuery",
      path: "/scheduler/batch/query",
      tags: ["allocation", "batch"],
      security,
      summary: `Read up to ${BATCH.maxItems} allocations, each as GET /scheduler/allocations/{id}`,
      description: described(
        "Every id is answered (nothing is skipped); another user's id is a 404 ALLOCATION_NOT_FOUND for a non-admin, so ids do not leak.",
      ),
      request: jsonBody(BatchQueryBody),
      ok: {
        status: 200,
        schema: batchResult(AllocationView, "BatchQueryResult"),
        description: "Per id: the allocation or its error",
      },
    }),
    async (c) =>
      runBatch(
        c,
        c.req.valid("json").allocationIds,
        200,
        true,
        item(AllocationIdParam.shape.id, (id) => planGetAllocation(c, id)),
      ),
  );

  return app;
}
