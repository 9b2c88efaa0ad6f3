/**
 * Building blocks of several concerns' schemas (not exported by src/schemas.ts): a request's
 * instant, fields with a default, and the idle release grace.
 */
import { z } from "@hono/zod-openapi";
import { ALLOCATION, FEED } from "../config";

const ISO_EXAMPLE = "2026-01-31T09:30:00.000Z";
/** A time in a request: ISO 8601 only (one time format); epoch milliseconds are refused with a message saying so. */
export const Instant = z.iso
  .datetime({
    offset: true,
    error: (iss) =>
      typeof iss.input === "number"
        ? `an ISO 8601 time such as ${ISO_EXAMPLE} (epoch milliseconds are not accepted: ${iss.input} is ${isoOfMs(iss.input)})`
        : `an ISO 8601 time such as ${ISO_EXAMPLE}`,
  })
  .transform((s) => Date.parse(s))
  .openapi({ description: "ISO 8601 with an offset (`Z` for UTC); epoch milliseconds are refused", example: ISO_EXAMPLE });

function isoOfMs(n: number): string {
  const d = new Date(n);
  return Number.isNaN(d.getTime()) ? "not a time" : d.toISOString();
}

/**
 * A request field with a default: optional in the document, its default said in the
 * description and applied by validation. (A JSON Schema `default` would make generated clients
 * — openapi-typescript — require the field.)
 */
export function withDefault<T extends z.ZodType, V extends NonNullable<z.output<T>>>(
  schema: T,
  value: V | (() => V),
  description?: string,
) {
  const fill = typeof value === "function" ? (value as () => V) : () => value;
  const said = typeof value === "function" ? "" : ` Default: ${JSON.stringify(value)}.`;
  return schema
    .optional()
    .transform((v): V => (v ?? fill()) as V)
    .openapi({ description: `${description ?? ""}${said}`.trim() });
}

/** Idle release grace (per allocation or per pool). */
export const IdleMinutes = z.number().int().min(FEED.idleReleaseMinMinutes).max(FEED.idleReleaseMaxMinutes);
export const IdleSeconds = z
  .number()
  .int()
  .min(ALLOCATION.minShortSeconds)
  .max(FEED.idleReleaseMaxMinutes * 60);
