/**
 * GET /scheduler/queue and /scheduler/reservations cover every pool unless `pool` narrows them:
 * the pools' items merged in the list's order, `limit` on the merged list, each item naming its
 * pool, filters as before, nobody else's items, and admins' `userId`.
 */
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, sleep, tokenFor, uid } from "./helpers";
import { iso } from "../src/domain/time";

const HOUR = 3_600_000;
type Item = { pool: string; userId: string; status: string };
type Entry = Item & { entryId: string; joinedAt: string };
type Booking = Item & { reservationId: string; startAt: string };

const entries = async (token: string, query = "") => {
  const r = await call("GET", `/scheduler/queue${query}`, { token });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body as { items: Entry[]; waiting: number };
};
const bookings = async (token: string, query = "") => {
  const r = await call("GET", `/scheduler/reservations${query}`, { token });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return (r.body as { items: Booking[] }).items;
};

describe("reservations over all pools", () => {
  it("lists a user's reservations of every pool by start; `pool` narrows, `limit` and `status` apply to the merged list", async () => {
    const [a, b] = [uid("list-a"), uid("list-b")];
    await Promise.all([registerDevice(a), registerDevice(b)]);
    const user = uid("lister");
    const other = uid("other");
    const [token, otherToken, adminToken] = await Promise.all([tokenFor(user), tokenFor(other), admin()]);
    const start = Date.now() + HOUR;
    const book = async (t: string, pool: string, at: number) => {
      const r = await call("POST", "/scheduler/reservations", { token: t, body: { pool, startAt: iso(at), durationMinutes: 30 } });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      return r.body.reservationId as string;
    };
    const a1 = await book(token, a, start + HOUR);
    const b1 = await book(token, b, start);
    const a2 = await book(token, a, start + 2 * HOUR);
    const theirs = await book(otherToken, b, start + HOUR / 2);

    const all = await bookings(token);
    expect(all.map((r) => [r.reservationId, r.pool])).toEqual([
      [b1, b],
      [a1, a],
      [a2, a],
    ]);
    expect(all.every((r) => r.userId === user)).toBe(true);
    expect((await bookings(token, "?limit=2")).map((r) => r.reservationId)).toEqual([b1, a1]);
    expect((await bookings(token, `?pool=${a}`)).map((r) => r.reservationId)).toEqual([a1, a2]);
    expect((await bookings(token, `?pool=${b}`)).map((r) => r.reservationId)).toEqual([b1]);
    expect((await bookings(otherToken)).map((r) => r.reservationId)).toEqual([theirs]);

    expect((await call("DELETE", `/scheduler/reservations/${a1}`, { token })).status).toBe(200);
    expect((await bookings(token, "?status=cancelled")).map((r) => r.reservationId)).toEqual([a1]);
    expect((await bookings(token, "?status=confirmed")).map((r) => r.reservationId)).toEqual([b1, a2]);

    // Admins: one user's over all pools, or everyone's.
    expect((await bookings(adminToken, `?userId=${user}`)).map((r) => r.reservationId)).toEqual([b1, a1, a2]);
    expect((await bookings(adminToken, `?userId=${other}`)).map((r) => r.reservationId)).toEqual([theirs]);
    const ours = new Set([a1, a2, b1, theirs]);
    expect((await bookings(adminToken, "?limit=200")).filter((r) => ours.has(r.reservationId)).map((r) => r.reservationId)).toEqual([
      b1,
      theirs,
      a1,
      a2,
    ]);

    const nosy = await call("GET", `/scheduler/reservations?userId=${other}`, { token });
    expect(nosy.status).toBe(403);
    const unknown = await call("GET", `/scheduler/reservations?pool=${uid("nowhere")}`, { token });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe("POOL_NOT_FOUND");
  });
});

describe("queue over all pools", () => {
  it("lists a user's entries of every pool newest first, `waiting` summed over the pools; `pool` narrows", async () => {
    const [a, b, c] = [uid("q-list-a"), uid("q-list-b"), uid("q-list-c")];
    await Promise.all([registerDevice(a), registerDevice(b), registerDevice(c)]);
    // a's and b's only devices are held for an hour, so entries there wait; c's is free.
    const holder = await tokenFor(uid("holder"));
    for (const pool of [a, b]) {
      const held = await call("POST", "/scheduler/devices/allocate", { token: holder, body: { pool, durationMinutes: 60 } });
      expect(held.status, JSON.stringify(held.body)).toBe(201);
    }
    const user = uid("q-lister");
    const other = uid("q-other");
    const [token, otherToken, adminToken] = await Promise.all([tokenFor(user), tokenFor(other), admin()]);
    const before = (await entries(token)).waiting;
    const join = async (t: string, pool: string) => {
      const r = await call("POST", "/scheduler/queue/join", { token: t, body: { pool, durationMinutes: 10 } });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      // Distinct join times, so newest first is one order.
      await sleep(5);
      return r.body as Entry & { status: string };
    };
    const a1 = await join(token, a);
    const b1 = await join(token, b);
    const theirs = await join(otherToken, b);
    const a2 = await join(token, a);
    const c1 = await join(token, c);
    expect([a1.status, b1.status, theirs.status, a2.status, c1.status]).toEqual(["waiting", "waiting", "waiting", "waiting", "fulfilled"]);

    const all = await entries(token);
    expect(all.items.map((e) => [e.entryId, e.pool])).toEqual([
      [c1.entryId, c],
      [a2.entryId, a],
      [b1.entryId, b],
      [a1.entryId, a],
    ]);
    expect(all.items.every((e) => e.userId === user)).toBe(true);
    // Everyone's waiting entries in every pool: this test added four (the other user's among them).
    expect(all.waiting).toBe(before + 4);
    const inB = await entries(token, `?pool=${b}`);
    expect(inB.items.map((e) => e.entryId)).toEqual([b1.entryId]);
    expect(inB.waiting).toBe(2);
    expect((await entries(token, `?pool=${c}`)).waiting).toBe(0);
    expect((await entries(token, "?limit=2")).items.map((e) => e.entryId)).toEqual([c1.entryId, a2.entryId]);
    expect((await entries(token, "?status=waiting")).items.map((e) => e.entryId)).toEqual([a2.entryId, b1.entryId, a1.entryId]);
    expect((await entries(token, "?status=fulfilled")).items.map((e) => e.entryId)).toEqual([c1.entryId]);
    expect((await entries(otherToken)).items.map((e) => e.entryId)).toEqual([theirs.entryId]);

    expect((await entries(adminToken, `?userId=${user}`)).items.map((e) => e.entryId)).toEqual([
      c1.entryId,
      a2.entryId,
      b1.entryId,
      a1.entryId,
    ]);
    expect((await entries(adminToken, `?userId=${other}`)).items.map((e) => e.entryId)).toEqual([theirs.entryId]);
    const ours = new Set([a1, b1, theirs, a2, c1].map((e) => e.entryId));
    expect((await entries(adminToken, "?limit=200")).items.filter((e) => ours.has(e.entryId)).map((e) => e.entryId)).toEqual([
      c1.entryId,
      a2.entryId,
      theirs.entryId,
      b1.entryId,
      a1.entryId,
    ]);

    expect((await call("GET", `/scheduler/queue?userId=${other}`, { token })).status).toBe(403);
    const unknown = await call("GET", `/scheduler/queue?pool=${uid("nowhere")}`, { token });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe("POOL_NOT_FOUND");
  });
});
