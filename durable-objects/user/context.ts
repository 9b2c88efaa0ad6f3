/**
 * What the user's composed helper (the allocator) sees of its UserQuota: its stores, balance,
 * bindings and the quota rules that stay in the object. Types only, so the helper never imports
 * the object.
 */
import type { Balance } from "../../src/billing/balance";
import type { Funds } from "../../src/billing/ledger";
import type { DeviceSpec } from "../../src/domain/types";
import type { Env } from "../../src/env";
import type { Failure } from "../../src/errors";
import type { FeedEvents, FeedEventType } from "../../src/feed/protocol";
import type { AlarmClock } from "../../src/objects/clock";
import type { Schedule } from "../../src/objects/schedule";
import type { Sql } from "../../src/objects/sql";
import type { AllocationStore } from "../../src/stores/allocations";
import type { ProfileRow, ProfileStore } from "../../src/stores/profile";

export interface UserContext {
  readonly env: Env;
  readonly sql: Sql;
  readonly clock: AlarmClock;
  readonly schedule: Schedule;
  readonly profiles: ProfileStore;
  readonly allocations: AllocationStore;
  readonly balance: Balance;
  /** The profile (created with the default plan on first use). */
  profile(userId: string): ProfileRow;
  /**
   * The quota and funds check of `spec` for `durationMs` (`refusal` null: allowed), and the largest device the quota allows;
   * `excluding` an allocation being decided, `reservation` the booking it starts.
   */
  allocationCheck(
    userId: string,
    spec: DeviceSpec,
    durationMs: number,
    f: Funds | null,
    excluding?: string,
    reservation?: string,
  ): { refusal: Failure | null; max: DeviceSpec };
  /** `quota.exceeded` once per crossing. */
  noteQuotaStatus(p: ProfileRow): void;
  /** Appends to the user's feed. */
  emit<K extends FeedEventType>(userId: string, type: K, data: FeedEvents[K]): unknown;
}
