/**
 * What the pool's composed helpers (the queue desk, the reservation desk, the hand-over) see of
 * their DevicePool: its stores, outbox and bindings, and the few steps that stay in the object.
 * Types only, so the helpers never import the object.
 */
import type { Claimed, ClaimRequest } from "../../src/contracts";
import type { Env } from "../../src/env";
import type { Booking } from "../../src/stores/bookings";
import type { Result } from "../../src/errors";
import type { FeedEvents, FeedEventType } from "../../src/feed/protocol";
import type { AlarmClock } from "../../src/objects/clock";
import type { Outbox } from "../../src/objects/outbox";
import type { Sql } from "../../src/objects/sql";
import type { IndexStore } from "../../src/stores/pool-index";
import type { QueueStore } from "../../src/stores/pool-queue";
import type { ReservationStore } from "../../src/stores/pool-reservations";

/** What the pool's outbox carries: feed events for users, windows given back to devices, bookings settled for users. */
export interface PoolMessages {
  user_event: { userId: string; key: string; type: FeedEventType; data: unknown };
  unreserve: { deviceId: string; reservationId: string };
  booking: { userId: string; booking: Booking; booked: boolean };
}

export interface PoolContext {
  readonly env: Env;
  readonly state: DurableObjectState;
  readonly sql: Sql;
  readonly clock: AlarmClock;
  readonly index: IndexStore;
  readonly queue: QueueStore;
  readonly reservations: ReservationStore;
  readonly outbox: Outbox<PoolMessages>;
  /** The pool's name ("" before its first device reported). */
  pool(): string;
  /** A user's feed event, through the outbox (call inside the change's transaction). */
  notify<K extends FeedEventType>(userId: string, key: string, type: K, data: FeedEvents[K]): void;
  /** Picks, claims and returns a device (see DevicePool.claim). */
  claim(req: ClaimRequest): Promise<Result<Claimed>>;
  /** What a device's refusal says of its state, into the index. */
  learn(deviceId: string, refusal: Result<never>): void;
  /** The next queue dispatch round (see the queue desk). */
  dispatch(): Promise<void>;
  /** The alarm for the earliest due time (see DevicePool's schedule). */
  rearm(): Promise<void>;
  /** The alarm's work now (one run at a time). */
  runAlarm(): Promise<void>;
}
