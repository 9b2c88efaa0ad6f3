/**
 * The renter's calls that the shared typed client (src/client/api-client.ts) does not have yet:
 * the catalogue, the event history, and booking a reservation with its check. They go through
 * that client's one `request`, so errors, the token and the base URL are handled as for every
 * other call; the types come from the server's schemas (`import type` only).
 */
import type { z } from "@hono/zod-openapi";
import type { ApiClient, Reservation } from "../client/api-client";
import type { Catalogue as CatalogueSchema, ReservationBody, UserEventsPage } from "../schemas";

export type Catalogue = z.infer<typeof CatalogueSchema>;
export type PoolOffer = Catalogue["items"][number];
export type DeviceOffer = PoolOffer["classes"][number];
export type EventsPage = z.infer<typeof UserEventsPage>;
export type BookingRequest = z.input<typeof ReservationBody>;
export type WindowCheckRequest = Omit<BookingRequest, "reminderMinutes" | "idempotencyKey">;

/** `POST /scheduler/reservations/check` (its schema is declared in the route, src/routes/queue.ts). */
export interface WindowCheck {
  pool: string;
  startAt: string;
  endAt: string;
  /** A booking would get a device now. */
  available: boolean;
  matchingDevices: number;
  freeDevices: number;
  /** The caller's own reservations overlapping the window. */
  overlapping: Reservation[];
}

/** `GET /scheduler/pools`: every pool's device classes, free counts, prices and the quota's verdict. */
export const catalogue = (api: ApiClient): Promise<Catalogue> => api.request("GET", "/scheduler/pools");

/** `GET /scheduler/events`: the user's feed log after `since`, oldest first, with its bounds. */
export const events = (api: ApiClient, q: { since?: number; limit?: number } = {}): Promise<EventsPage> =>
  api.request("GET", "/scheduler/events", { query: q });

export const checkWindow = (api: ApiClient, body: WindowCheckRequest): Promise<WindowCheck> =>
  api.request("POST", "/scheduler/reservations/check", { body });

export const book = (api: ApiClient, body: BookingRequest): Promise<Reservation> =>
  api.request("POST", "/scheduler/reservations", { body });
