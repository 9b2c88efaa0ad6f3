/**
 * Object answers (epoch ms, as the objects and D1 keep them) become HTTP answers (ISO 8601 UTC,
 * src/schemas/): the one place the routes convert. Each function's return type is its schema's.
 */
import type { z } from "@hono/zod-openapi";
import type { CurrentAllocation, PoolDevice } from "./contracts";
import { iso, isoOrNull } from "./domain/time";
import type { Allocation, DeviceInfo, EndedAllocation, Quota } from "./domain/types";
import type * as Http from "./schemas";

type Of<T extends z.ZodType> = z.infer<T>;
/** The quota as the API answers it (also the data of `quota.updated`). */
export type QuotaAnswer = Of<typeof Http.QuotaView>;

export const deviceView = (d: DeviceInfo): Of<typeof Http.DeviceView> => ({
  deviceId: d.deviceId,
  pool: d.pool,
  node: d.node,
  cpuCores: d.cpuCores,
  memoryMB: d.memoryMB,
  storageMB: d.storageMB,
  status: d.status,
  createdAt: iso(d.createdAt),
  updatedAt: iso(d.updatedAt),
});

const deviceAllocationView = (a: CurrentAllocation): Of<typeof Http.DeviceAllocationView> => ({
  allocationId: a.allocationId,
  userId: a.userId,
  confirmed: a.confirmed,
  allocatedAt: iso(a.allocatedAt),
  expiresAt: iso(a.expiresAt),
});

export const deviceDetailView = (d: DeviceInfo & { allocation: CurrentAllocation | null }): Of<typeof Http.DeviceDetailView> => ({
  ...deviceView(d),
  allocation: d.allocation ? deviceAllocationView(d.allocation) : null,
});

/** An ended allocation (release, force-release, a device's history, what a status change or removal ended). */
export const endedView = (e: EndedAllocation): Of<typeof Http.ReleaseResult> => ({
  allocationId: e.allocationId,
  deviceId: e.deviceId,
  userId: e.userId,
  allocatedAt: iso(e.allocatedAt),
  releasedAt: iso(e.releasedAt),
  durationSeconds: e.durationSeconds,
  reason: e.reason,
});

export const freeDeviceView = (d: PoolDevice): Of<typeof Http.FreeDeviceView> => ({
  deviceId: d.deviceId,
  node: d.node,
  cpuCores: d.cpuCores,
  memoryMB: d.memoryMB,
  storageMB: d.storageMB,
  status: d.status,
});

export const poolDeviceView = (d: PoolDevice): Of<typeof Http.PoolDeviceView> => ({
  ...freeDeviceView(d),
  allocationId: d.allocationId ?? null,
  userId: d.userId ?? null,
  expiresAt: isoOrNull(d.expiresAt),
});

export const quotaView = (q: Quota): QuotaAnswer => ({
  userId: q.userId,
  tier: q.plan,
  status: q.status,
  suspended: q.suspended,
  validUntil: iso(q.validUntil),
  limits: { ...q.limits },
  periodStart: iso(q.periodStart),
  usage: { ...q.usage },
  updatedAt: iso(q.updatedAt),
});

export const allocationView = (a: Allocation & { idleReleaseSeconds?: number | null }): Of<typeof Http.AllocationView> => ({
  allocationId: a.allocationId,
  userId: a.userId,
  deviceId: a.deviceId,
  pool: a.pool,
  // The object never answers an aborted allocation (it reads as not found, and lists leave it out).
  status: a.status as Of<typeof Http.AllocationView>["status"],
  cpuCores: a.cpuCores,
  memoryMB: a.memoryMB,
  storageMB: a.storageMB,
  allocatedAt: isoOrNull(a.allocatedAt),
  expiresAt: isoOrNull(a.expiresAt),
  durationMinutes: a.durationMinutes,
  releasedAt: isoOrNull(a.releasedAt),
  durationSeconds: a.durationSeconds,
  reason: a.reason,
  extendCount: a.extendCount,
  extendedMinutes: a.extendedMinutes,
  idempotencyKey: a.idempotencyKey,
  idleReleaseSeconds: a.idleReleaseSeconds ?? null,
});
