/**
 * The contracts between the parts of the service: what the objects take and answer over RPC,
 * and what routes pass them. Types only; each store keeps its own row shapes. Shapes that are
 * also HTTP answers are derived from their zod schemas (src/schemas/), the one definition.
 */
import type { PlanTier, QuotaLimits, Strategy } from "./config";
import type { DeviceMeta, DeviceSpec, DeviceStatus, EndReason } from "./domain/types";
import type { ReservationStatus } from "./domain/reservation";
import type { z } from "@hono/zod-openapi";
import type * as Http from "./schemas";
import type { AccessMap } from "./stores/device-access";
export type { QueueStatus } from "./domain/queue";

// ---- answers that are also HTTP answers: their zod schemas are the one definition ----------------

/** An allocation's answer; a direct allocation's fresh answer also carries how to reach the device (the route signs its grant). */
export type AllocationResult = z.infer<typeof Http.AllocationResult> & { access?: AccessMap };
export type ReleaseResult = z.infer<typeof Http.ReleaseResult>;
export type QueueEntryView = z.infer<typeof Http.QueueEntryView>;
export type ReservationView = z.infer<typeof Http.ReservationView>;

/** The user's object's answer to a device asking about a claim it holds. */
export type Verdict = "active" | "ended" | "pending" | "unknown";

// ---- device -------------------------------------------------------------------------------

/** What the pool index keeps of a device; `version` orders updates that race. */
export interface DeviceState extends DeviceSpec {
  deviceId: string;
  node: string;
  status: DeviceStatus;
  version: number;
  allocationId: string | null;
  userId: string | null;
  expiresAt: number | null;
  /** The device's name, model, OS version and labels (absent, as in a claim's answer: the index keeps what it has). */
  meta?: DeviceMeta;
  /** Set by the change that ended an allocation: why, and (expiry) how late the alarm was. For the pool's feed and metrics. */
  ended?: { allocationId: string; reason: EndReason; lagMs: number | null };
}

export interface ClaimRequest {
  allocationId: string;
  userId: string;
  pool: string;
  min: DeviceSpec;
  max: DeviceSpec;
  durationMs: number;
  /** Where the request came from when not a direct allocation: its queue entry or reservation. */
  via?: { kind: "queue" | "reservation"; id: string; deviceId: string | null; until?: number };
  /** A direct allocation's start (unix ms), which its user's object records too; the device then tells its pool itself. */
  at?: number;
}

/** A direct allocation's first step (src/allocate.ts): which device of the pool to claim. */
export interface PickRequest {
  pool: string;
  min: DeviceSpec;
  /** The largest device the user's quota allows, when known (a second pick after a room refusal). */
  max?: DeviceSpec;
  durationMs: number;
  /** Devices already tried for this allocation. */
  exclude?: string[];
  /** States that refused claims reported (the pool's index learns them). */
  learned?: DeviceState[];
}

/** The device a pick chose, and the pool's idle release grace. */
export interface Picked extends DeviceSpec {
  deviceId: string;
  node: string;
  idleReleaseSeconds: number | null;
}

export interface Claimed extends DeviceSpec {
  deviceId: string;
  pool: string;
  node: string;
  allocatedAt: number;
  expiresAt: number;
  state: DeviceState;
  /** How to reach the device (its registered endpoints), for the new holder's answer only: never stored by the user's object. */
  access: AccessMap;
  /** The pool's idle release grace (set by the pool, not the device). */
  idleReleaseSeconds?: number | null;
}

/** What the user's object knows of an extension, for the `device.extended` event. */
export interface ExtendInfo {
  additionalMinutes: number;
  extendCount: number;
  extendedMinutes: number;
  durationMinutes: number;
}

export interface CurrentAllocation {
  allocationId: string;
  userId: string;
  confirmed: boolean;
  allocatedAt: number;
  expiresAt: number;
}

// ---- pool: index, queue, reservations -------------------------------------------------------

export interface PoolDevice extends DeviceSpec {
  deviceId: string;
  node: string;
  status: DeviceStatus;
  allocationId?: string | null;
  userId?: string | null;
  expiresAt?: number | null;
  /** In the operators' lists (with holders). */
  meta?: DeviceMeta;
}

/** A device as a pool lists it for the fleet (GET /admin/devices): from its index, with its version (to merge pools). */
export interface FleetEntry extends Omit<DeviceState, "meta" | "ended">, DeviceMeta {
  pool: string;
}

/** What the fleet list asks each pool: its filters, and the device id to continue after. */
export interface FleetFilter {
  status?: DeviceStatus;
  node?: string;
  holder?: string;
  labels?: { key: string; value: string }[];
  /** Text to find in the id, name or model (ASCII letters in any case). */
  q?: string;
  after?: string;
  limit: number;
}

/** Who asks: a user sees only their own entries and reservations (others' are "not found"). */
export interface Viewer {
  userId: string;
  admin: boolean;
}

export interface QueueJoin {
  userId: string;
  pool: string;
  priority: number;
  min: DeviceSpec;
  /** The largest device the user's quota allowed at join (checked again at hand-over). */
  max: DeviceSpec;
  durationMinutes: number;
  durationSeconds?: number;
  maxWaitMinutes: number;
  /** Test-only override of maxWaitMinutes (ALLOW_SHORT_DURATIONS). */
  maxWaitSeconds?: number;
  /** The user, or the admin acting for them. */
  createdBy: string;
  /** A repeat with the same key answers the first entry instead of joining again. */
  idempotencyKey?: string;
}

export interface ReservationBooking {
  userId: string;
  pool: string;
  min: DeviceSpec;
  max: DeviceSpec;
  startAt: number;
  endAt: number;
  durationMinutes: number;
  reminderMinutes: number;
  createdBy: string;
  /** A repeat with the same key answers the first reservation instead of booking again. */
  idempotencyKey?: string;
}

export interface WindowCheck {
  pool: string;
  startAt: string;
  endAt: string;
  /** A booking now would get a device. */
  available: boolean;
  /** Devices of the pool that match the spec, and how many of them are free for the window. */
  matchingDevices: number;
  freeDevices: number;
  /** The caller's own reservations in this pool that overlap the window. */
  overlapping: ReservationView[];
}

export interface PoolSummary {
  pool: string;
  strategy: Strategy;
  /** Idle release grace of the pool (null: off); minutes may be fractional when set in seconds (tests). */
  idleReleaseMinutes: number | null;
  idleReleaseSeconds: number | null;
  devices: number;
  available: number;
  allocated: number;
  maintenance: number;
  offline: number;
  nodes: number;
}

// ---- user: allocations and quota ------------------------------------------------------------

export interface AllocateInput {
  userId: string;
  pool: string;
  durationMinutes: number;
  /** Test-only override (ALLOW_SHORT_DURATIONS); the route refuses it otherwise. */
  durationSeconds?: number;
  spec: DeviceSpec;
  idempotencyKey?: string;
  /** Release when the user's feed sockets have all been gone this long (or the pool's, if shorter). */
  idleReleaseMinutes?: number;
  /** Test-only override of idleReleaseMinutes (ALLOW_SHORT_DURATIONS). */
  idleReleaseSeconds?: number;
  /** Set by the pool when it hands over a device for a queue entry or a reservation. */
  via?: ClaimRequest["via"];
}

export interface QueueJoinInput {
  userId: string;
  pool: string;
  durationMinutes: number;
  durationSeconds?: number;
  spec: DeviceSpec;
  priority?: number;
  maxWaitMinutes: number;
  /** Test-only override of maxWaitMinutes (ALLOW_SHORT_DURATIONS). */
  maxWaitSeconds?: number;
  /** The admin acting for the user (may set any priority), or null. */
  byAdmin: string | null;
  idempotencyKey?: string;
}

export interface ReserveInput {
  userId: string;
  pool: string;
  startAt: number;
  durationMinutes: number;
  durationSeconds?: number;
  spec: DeviceSpec;
  reminderMinutes: number;
  byAdmin: string | null;
  idempotencyKey?: string;
}

export interface QuotaUpdate {
  plan?: PlanTier;
  limits?: Partial<QuotaLimits>;
  suspended?: boolean;
  validUntil?: number;
}

/** Step 1 of a hand-over, as the pool gets it back: the pending allocation and the largest device its quota allows. */
export interface HandOverBegun {
  allocationId: string;
  durationMs: number;
  max: DeviceSpec;
}
