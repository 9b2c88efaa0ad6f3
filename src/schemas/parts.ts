/**
 * Building blocks of several concerns' schemas (not exported by src/schemas.ts): a request's
 * instant, fields with a default, and the idle release grace.
 */
import { z } from "@hono/zod-openapi";
import { ALLOCATION, FEED } from "../config";

/** A time in a request: ISO 8601 with `Z` or an offset (the one time format), read as epoch ms. */
export const Instant = z.iso
  .datetime({ offset: true, error: "an ISO 8601 time with Z or an offset, e.g. 2026-01-31T09:30:00Z" })
  .transform((v) => Date.parse(v))
  .openapi({ description: "ISO 8601 with `Z` or an offset" });

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
