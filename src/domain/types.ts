/** Shapes shared by the objects, routes and pure rules. */
import type { PlanTier, QuotaLimits } from "../config";

export interface DeviceSpec {
  cpuCores: number;
  memoryMB: number;
  storageMB: number;
}

export const DEVICE_STATUSES = ["available", "allocated", "maintenance", "offline", "removed"] as const;
export type DeviceStatus = (typeof DEVICE_STATUSES)[number];

/** What a device says of itself beside its spec (limits: DEVICE_META in src/config.ts). null: not given. */
export interface DeviceMeta {
  name: string | null;
  model: string | null;
  osVersion: string | null;
  /** Key-value labels (`{}`: none), keys in order. */
  labels: Record<string, string>;
}

/** A change to a device (PATCH /admin/devices/{id}, a bulk item): an absent field is unchanged, a null clears it. */
export type DevicePatch = Partial<DeviceSpec> & Partial<DeviceMeta> & { node?: string; pool?: string };

export interface DeviceInfo extends DeviceSpec, DeviceMeta {
  deviceId: string;
  pool: string;
  node: string;
  status: DeviceStatus;
  createdAt: number;
  updatedAt: number;
}

export const QUOTA_STATUSES = ["active", "exceeded", "suspended", "expired"] as const;
export type QuotaStatus = (typeof QUOTA_STATUSES)[number];

export interface QuotaUsage {
  devices: number;
  cpuCores: number;
  memoryMB: number;
  storageMB: number;
  /** Device-hours of the current period: finished use plus what active allocations booked. */
  deviceHours: number;
}

export interface Quota {
  userId: string;
  plan: PlanTier;
  status: QuotaStatus;
  /** Set by an admin; an expired `validUntil` reads as status `expired`. */
  suspended: boolean;
  validUntil: number;
  limits: QuotaLimits;
  periodStart: number;
  usage: QuotaUsage;
  updatedAt: number;
}

export const ALLOCATION_STATUSES = ["pending", "active", "released", "aborted"] as const;
export type AllocationStatus = (typeof ALLOCATION_STATUSES)[number];
/** The statuses the API shows and filters by (an aborted allocation never existed for the user). */
export const LISTED_ALLOCATION_STATUSES = ["pending", "active", "released"] as const satisfies readonly AllocationStatus[];
/** Why an allocation ended (the one word for each way it stops). */
export const END_REASONS = ["released", "expired", "force_released", "maintenance", "offline", "removed", "orphaned", "idle"] as const;
export type EndReason = (typeof END_REASONS)[number];

/** What the API returns for an allocation. */
export interface Allocation {
  allocationId: string;
  userId: string;
  deviceId: string | null;
  pool: string;
  status: AllocationStatus;
  cpuCores: number;
  memoryMB: number;
  storageMB: number;
  allocatedAt: number | null;
  expiresAt: number | null;
  durationMinutes: number;
  releasedAt: number | null;
  durationSeconds: number | null;
  reason: EndReason | null;
  extendCount: number;
  extendedMinutes: number;
  idempotencyKey: string | null;
}

/** The record every ended allocation yields (billing consumes it). */
export interface UsageRecord extends DeviceSpec {
  allocationId: string;
  deviceId: string;
  userId: string;
  tenantId?: string;
  durationSeconds: number;
  allocatedAt: number;
  releasedAt: number;
  reason: EndReason;
}

/** What a device reports when an allocation on it ends. */
export interface EndedAllocation {
  allocationId: string;
  deviceId: string;
  userId: string;
  allocatedAt: number;
  releasedAt: number;
  durationSeconds: number;
  reason: EndReason;
}
