/**
 * A reservation window booked on a device (composed into Device): the checks of `Device.reserve`
 * over its stores, with no await between them and the write.
 */
import { fail, ok, type Result } from "../../src/errors";
import type { DeviceStore, HoldRow, Window } from "../../src/stores/device";
import type { StatusDesk } from "./status-desk";

/**
 * Books [startAt, endAt) for a reservation of `w.pool`. Refused when the device has moved, is out
 * of service or draining, is allocated into the window, or has another window there. Idempotent.
 */
export function reserveWindow(
  store: DeviceStore,
  status: StatusDesk,
  current: HoldRow | null,
  w: Window & { pool: string },
): Result<{ deviceId: string }> {
  const d = store.registered();
  if (!d) return fail(409, "DEVICE_UNAVAILABLE", "The device is not registered.", { state: null });
  // The asking pool's index drops it (a "removed" state for that pool; the device's own pool is told by its outbox).
  if (d.pool !== w.pool)
    return fail(409, "DEVICE_UNAVAILABLE", "The device has moved to another pool.", { state: { ...store.state(d), status: "removed" } });
  if (store.hasWindow(w.reservationId)) return ok({ deviceId: d.device_id });
  if (d.status === "maintenance" || d.status === "offline")
    return fail(409, "DEVICE_UNAVAILABLE", "The device is not in service.", { state: store.state(d) });
  const drained = status.reserveRefusal(d);
  if (drained) return drained;
  if (current && current.expires_at > w.startAt)
    return fail(409, "DEVICE_BUSY", "The device is allocated into the window.", { state: store.state(d) });
  const now = Date.now();
  if (store.clash(w.startAt, w.endAt, now))
    return fail(409, "DEVICE_RESERVED", "The device has another reservation in the window.", { state: store.state(d) });
  store.reserve(w, now);
  return ok({ deviceId: d.device_id });
}
