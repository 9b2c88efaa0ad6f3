/**
 * Building blocks of several concerns' schemas (not exported by src/schemas.ts): an instant
 * given as ISO or epoch ms, and the idle release grace.
 */
import { z } from "@hono/zod-openapi";
import { ALLOCATION, FEED } from "../config";

export const Instant = z
  .union([z.iso.datetime({ offset: true }), z.number().int().min(0).max(8.64e15)])
  .transform((v) => (typeof v === "number" ? v : Date.parse(v)))
  .openapi({ description: "ISO 8601 time or epoch milliseconds" });

/** Idle release grace (per allocation or per pool). */
export const IdleMinutes = z.number().int().min(FEED.idleReleaseMinMinutes).max(FEED.idleReleaseMaxMinutes);
export const IdleSeconds = z
  .number()
  .int()
  .min(ALLOCATION.minShortSeconds)
  .max(FEED.idleReleaseMaxMinutes * 60);
