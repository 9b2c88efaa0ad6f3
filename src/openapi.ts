/** Route declarations carry their schemas; this adds the shared error responses. */
import { createRoute, type RouteConfig } from "@hono/zod-openapi";
import type { ZodType } from "zod";
import { ErrorSchema } from "./schemas";

const errorResponses = Object.fromEntries(
  [
    [400, "Invalid input"],
    [401, "Not signed in"],
    [402, "Balance too low"],
    [403, "Not allowed"],
    [404, "Not found"],
    [409, "Conflict with current state"],
    [413, "Body too large"],
    [415, "Body is not JSON"],
    [429, "Too soon"],
    [500, "Unexpected; nothing was changed that the answer does not say (details.requestId for an operator)"],
    [503, "A dependency did not answer; nothing changed"],
  ].map(([s, d]) => [s, { description: d as string, content: { "application/json": { schema: ErrorSchema } } }]),
);

/** Every operation names its success answer and a stable operationId (what generated clients call it). */
type Ok = {
  operationId: string;
  /** `repeat`: a 201 route that answers 200 with the same shape when the request was done before (idempotency). */
  ok: { status: 200 | 201 | 202; schema: ZodType; description: string; repeat?: string };
};

/** Keeps the request types of `o` (so `c.req.valid` is typed) and documents the responses. */
export function route<R extends Omit<RouteConfig, "responses">>(o: R & Ok): R & { responses: RouteConfig["responses"] } {
  const { ok, ...rest } = o;
  const answer = (description: string) => ({ description, content: { "application/json": { schema: ok.schema } } });
  return createRoute({
    ...rest,
    responses: {
      [ok.status]: answer(ok.description),
      ...(ok.repeat ? { 200: answer(ok.repeat) } : {}),
      ...errorResponses,
    },
  } as unknown as R & { responses: RouteConfig["responses"] });
}

export const jsonBody = <T extends ZodType>(schema: T, required = true) => ({
  body: { required, content: { "application/json": { schema } } },
});
