/**
 * Waiting-queue rules, pure. The pool object owns the entries and their order (higher
 * priority first, then arrival); these functions decide priority and the wait estimate.
 */
import { QUEUE, type PlanTier } from "../config";
import { fail, type Failure } from "../errors";
import { fits } from "./strategy";
import type { DeviceSpec } from "./types";

/** A queue entry's statuses: waiting, offered a device (being handed it), then one end state. */
export const QUEUE_STATUSES = ["waiting", "offered", "fulfilled", "expired", "cancelled", "failed"] as const;
export type QueueStatus = (typeof QUEUE_STATUSES)[number];

export type Priority = 0 | 1 | 2 | 3;
export type PriorityName = (typeof QUEUE.priorities)[number];

const PLAN_PRIORITY: Record<PlanTier, Priority> = { free: 0, basic: 1, pro: 2, enterprise: 3 };

/** The priority a user's plan gives: standard, vip, premium, enterprise. */
export function planPriority(plan: PlanTier): Priority {
  return PLAN_PRIORITY[plan];
}

export const priorityName = (p: number): PriorityName => QUEUE.priorities[Math.max(0, Math.min(3, p))]!;

/**
 * The priority an entry gets. A user may ask for their plan's priority or lower, never
 * higher; an admin (acting on behalf of a user) may set any.
 */
export function entryPriority(plan: PlanTier, requested: number | undefined, byAdmin: boolean): Priority | Failure {
  const own = planPriority(plan);
  if (requested === undefined) return own;
  if (requested > own && !byAdmin)
    return fail(
      403,
      "PRIORITY_NOT_ALLOWED",
      `Your plan (${plan}) queues at priority ${own} (${priorityName(own)}); only an operator can set a higher one.`,
      {
        plan,
        allowed: own,
        requested,
      },
    );
  return requested as Priority;
}

export interface EstimateDevice extends DeviceSpec {
  /** When it is free: now for a free device, its allocation's expiry for a busy one; null when out of service. */
  freeAt: number | null;
}
export interface EstimateEntry {
  min: DeviceSpec;
  max: DeviceSpec;
  durationMs: number;
}

/**
 * When the entry `me` can expect a device: the entries ahead of it, in queue order, each take
 * the fitting device that frees first and hold it for their duration; `me` gets the first
 * fitting device left after them. Real expiry times, not "position × 30 minutes". Null when
 * no device in service fits. (Extensions and early releases move it; it is an estimate.)
 */
export function estimateStart(
  devices: EstimateDevice[],
  ahead: EstimateEntry[],
  me: Omit<EstimateEntry, "durationMs">,
  now: number,
): number | null {
  const free = devices.filter((d) => d.freeAt !== null).map((d) => ({ spec: d as DeviceSpec, at: Math.max(now, d.freeAt!) }));
  if (!free.some((d) => fits(d.spec, me.min, me.max))) return null;
  for (const e of ahead) {
    let best: { spec: DeviceSpec; at: number } | null = null;
    for (const d of free) if (fits(d.spec, e.min, e.max) && (!best || d.at < best.at)) best = d;
    if (best) best.at += e.durationMs;
  }
  let mine: number | null = null;
  for (const d of free) if (fits(d.spec, me.min, me.max) && (mine === null || d.at < mine)) mine = d.at;
  return mine;
}

/** What a repeated idempotency key of a join must match: the request as made (priority resolved). */
export function joinHash(j: {
  priority: number;
  min: DeviceSpec;
  durationMinutes: number;
  durationSeconds?: number;
  maxWaitMinutes: number;
  maxWaitSeconds?: number;
}): string {
  return JSON.stringify([j.priority, j.min, j.durationMinutes, j.durationSeconds ?? null, j.maxWaitMinutes, j.maxWaitSeconds ?? null]);
}
