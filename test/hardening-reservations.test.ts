/**
 * Hardening, reservations: a booking counts against the user's plan for its window (device
 * count and totals, with what they hold and have booked then) and against their balance
 * (committed like a running allocation), at booking. Refusals change nothing; cancelling gives
 * the capacity and the funds back; the plan bounds open reservations and waiting entries per pool.
 */
import { describe, expect, it } from "vitest";
import { PLAN_BOUNDS } from "../src/config";
import { admin, call, registerDevice, tokenFor, uid, until } from "./helpers";

const HOUR = 3_600_000;
const reserve = (token: string, body: Record<string, unknown>) => call("POST", "/scheduler/reservations", { token, body });
const allocate = (token: string, body: Record<string, unknown>) => call("POST", "/scheduler/devices/allocate", { token, body });
const at = (ms: number) => new Date(ms).toISOString();
const list = async (token: string, pool: string) =>
  (await call("GET", `/scheduler/reservations?pool=${pool}`, { token })).body.items as { reservationId: string; status: string }[];

async function fleet(n: number, spec: Record<string, number> = {}) {
  const pool = uid("hr-pool");
  for (let i = 0; i < n; i++) await registerDevice(pool, spec);
  return pool;
}

describe("reservations count against the plan for their window", () => {
  it("a free-plan user cannot book more devices for one window than the plan's 2; a later window is fine", async () => {
    const pool = await fleet(4);
    const token = await tokenFor(uid("hr-devices"));
    const start = Date.now() + 2 * HOUR;
    const a = await reserve(token, { pool, startAt: at(start), durationMinutes: 60 });
    const b = await reserve(token, { pool, startAt: at(start + 30 * 60_000), durationMinutes: 60 });
    expect([a.status, b.status]).toEqual([201, 201]);
    // Overlaps both: a third device at once.
    const c = await reserve(token, { pool, startAt: at(start + 45 * 60_000), durationMinutes: 30 });
    expect(c.status).toBe(409);
    expect(c.body.error).toMatchObject({ code: "QUOTA_DEVICES_EXCEEDED", details: { limit: 2, used: 2 } });
    expect((await list(token, pool)).length).toBe(2);
    // Overlaps only the second (the first has ended by then): two at once, allowed.
    const d = await reserve(token, { pool, startAt: at(start + 60 * 60_000), durationMinutes: 20 });
    expect(d.status).toBe(201);
    // The other devices stay bookable by others for that window.
    const other = await tokenFor(uid("hr-other"));
    expect((await reserve(other, { pool, startAt: at(start + 45 * 60_000), durationMinutes: 30 })).status).toBe(201);
  });

  it("a running allocation counts in the windows it reaches into", async () => {
    const pool = await fleet(3);
    const token = await tokenFor(uid("hr-running"));
    expect((await allocate(token, { pool, durationMinutes: 120 })).status).toBe(201);
    const start = Date.now() + HOUR;
    expect((await reserve(token, { pool, startAt: at(start), durationMinutes: 30 })).status).toBe(201);
    const third = await reserve(token, { pool, startAt: at(start), durationMinutes: 30 });
    expect(third.body.error?.code).toBe("QUOTA_DEVICES_EXCEEDED");
    // After the allocation will have expired, the device count is free again.
    expect((await reserve(token, { pool, startAt: at(Date.now() + 3 * HOUR), durationMinutes: 30 })).status).toBe(201);
  });

  it("the plan's totals apply to the window (cores over all bookings then)", async () => {
    const pool = await fleet(4, { cpuCores: 4 });
    const user = uid("hr-totals");
    const token = await tokenFor(user);
    const set = await call("PUT", `/quotas/user/${user}?create=true`, {
      token: await admin(),
      body: { limits: { maxDevices: 10, maxCpuCores: 8 } },
    });
    expect(set.status).toBe(200);
    const start = Date.now() + 2 * HOUR;
    const book = () => reserve(token, { pool, startAt: at(start), durationMinutes: 30, spec: { cpuCores: 4 } });
    expect((await book()).status).toBe(201);
    expect((await book()).status).toBe(201);
    const over = await book();
    expect(over.status).toBe(409);
    expect(over.body.error).toMatchObject({ code: "QUOTA_TOTAL_EXCEEDED", details: { field: "cpuCores", limit: 8, used: 8 } });
  });

  it("under a storm of concurrent bookings by one user, the plan still holds", async () => {
    const pool = await fleet(6);
    const token = await tokenFor(uid("hr-storm"));
    const start = Date.now() + 2 * HOUR;
    const results = await Promise.all(Array.from({ length: 6 }, () => reserve(token, { pool, startAt: at(start), durationMinutes: 30 })));
    expect(results.filter((r) => r.status === 201)).toHaveLength(2);
    // Refused by the plan's devices, or (bookings still in flight count as open) by its bound on open reservations.
    for (const r of results.filter((r) => r.status !== 201))
      expect(["QUOTA_DEVICES_EXCEEDED", "RESERVATION_LIMIT"]).toContain(r.body.error.code);
    expect(results.some((r) => r.body.error?.code === "QUOTA_DEVICES_EXCEEDED")).toBe(true);
    expect((await list(token, pool)).length).toBe(2);
  });
});

describe("reservations commit the balance like running allocations", () => {
  it("a day-long booking takes its price out of what else can be booked or allocated; cancelling gives it back", async () => {
    // About 0.245 USD per hour for this device: a day is about 5.90 of the 10.00 starting credit.
    const pool = await fleet(3);
    const token = await tokenFor(uid("hr-funds"));
    const first = await reserve(token, { pool, startAt: at(Date.now() + HOUR), durationMinutes: 1440 });
    expect(first.status).toBe(201);
    // A second day, even in another window (no device limit in the way), is not covered.
    const second = await reserve(token, { pool, startAt: at(Date.now() + 30 * HOUR), durationMinutes: 1440 });
    expect(second.status).toBe(402);
    expect(second.body.error.code).toBe("INSUFFICIENT_BALANCE");
    // Nor is a day-long allocation now; an hour is.
    expect((await allocate(token, { pool, durationMinutes: 1440 })).body.error?.code).toBe("INSUFFICIENT_BALANCE");
    const hour = await allocate(token, { pool, durationMinutes: 60 });
    expect(hour.status).toBe(201);
    expect((await call("POST", "/scheduler/devices/release", { token, body: { deviceId: hour.body.deviceId } })).status).toBe(200);
    // Cancelled, the booking's funds are free again (its event reaches the user's object).
    expect((await call("DELETE", `/scheduler/reservations/${first.body.reservationId}`, { token })).status).toBe(200);
    const again = await until(async () => {
      const r = await reserve(token, { pool, startAt: at(Date.now() + 30 * HOUR), durationMinutes: 1440 });
      return r.status === 201 && r;
    });
    expect(again.body.status).toBe("confirmed");
  });

  it("a refused booking holds nothing: the refusal leaves the user's capacity as it was", async () => {
    const pool = await fleet(2);
    const token = await tokenFor(uid("hr-nothing"));
    const start = Date.now() + 2 * HOUR;
    // No device is free for a window this long in the future? It is; but this one cannot be paid.
    const big = await reserve(token, { pool, startAt: at(start), durationMinutes: 1440 * 2 });
    expect(big.status).toBe(400);
    for (let i = 0; i < 3; i++) {
      const unpaid = await reserve(token, { pool, startAt: at(start + i * 25 * HOUR), durationMinutes: 1440 });
      if (i > 0) expect(unpaid.body.error?.code).toBe("INSUFFICIENT_BALANCE");
    }
    // Two short windows at once still fit the plan: the refusals held no device.
    expect((await reserve(token, { pool, startAt: at(start + 80 * HOUR), durationMinutes: 30 })).status).toBe(201);
    expect((await reserve(token, { pool, startAt: at(start + 80 * HOUR), durationMinutes: 30 })).status).toBe(201);
  });
});

describe("per-plan bounds", () => {
  it("a free user may have PLAN_BOUNDS.free.openReservations open in a pool and waitingEntries waiting", async () => {
    const pool = await fleet(1);
    const token = await tokenFor(uid("hr-bounds"));
    const { openReservations, waitingEntries } = PLAN_BOUNDS.free;
    const start = Date.now() + 2 * HOUR;
    for (let i = 0; i < openReservations; i++)
      expect((await reserve(token, { pool, startAt: at(start + i * HOUR), durationMinutes: 10 })).status).toBe(201);
    const over = await reserve(token, { pool, startAt: at(start + openReservations * HOUR), durationMinutes: 10 });
    expect(over.status).toBe(409);
    expect(over.body.error).toMatchObject({ code: "RESERVATION_LIMIT", details: { limit: openReservations } });
    // The queue: the device is held by someone else, so entries wait.
    const holder = await tokenFor(uid("hr-holder"));
    expect((await allocate(holder, { pool, durationMinutes: 30 })).status).toBe(201);
    const waiter = await tokenFor(uid("hr-waiter"));
    for (let i = 0; i < waitingEntries; i++)
      expect((await call("POST", "/scheduler/queue/join", { token: waiter, body: { pool, durationMinutes: 5 } })).status).toBe(201);
    const more = await call("POST", "/scheduler/queue/join", { token: waiter, body: { pool, durationMinutes: 5 } });
    expect(more.status).toBe(409);
    expect(more.body.error).toMatchObject({ code: "QUEUE_LIMIT", details: { limit: waitingEntries } });
  });
});
