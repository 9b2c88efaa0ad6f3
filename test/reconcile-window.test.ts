/**
 * Issue 20: an operator's POST /admin/billing/reconcile without a window checks every account
 * over the 31 days up to the grace (10 minutes) before now, and says so (`from`, `to`,
 * `defaulted`). Before, `{}` ran the cron's pass (each account from its watermark, less an hour),
 * so an account's older allocations were not checked and the answer's `from` was null.
 *
 * The ended allocations are written into the user's object as a lost usage record leaves them:
 * ended there, with nothing in D1.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { admin, call, tokenFor, uid } from "./helpers";

const MIN = 60_000;
const GRACE = 10 * MIN;
const LOOKBACK = 31 * 86_400_000;

/** An allocation of `userId` that ended at `releasedAt` (60 s long), known to their object only. */
async function endedInObject(userId: string, releasedAt: number): Promise<string> {
  const allocationId = uid("alc-lost");
  await runInDurableObject(env.USER_QUOTA.getByName(userId), (_i, state) => {
    state.storage.sql.exec(
      `INSERT INTO allocations (allocation_id, device_id, pool, status, cpu, mem, storage, allocated_at, expires_at, duration_minutes,
         duration_ms, booked_hours, released_at, duration_seconds, reason, created_at)
       VALUES (?, 'dev-lost', 'default', 'released', 1, 1024, 1024, ?, ?, 1, 60000, 0, ?, 60, 'released', ?)`,
      allocationId,
      releasedAt - MIN,
      releasedAt,
      releasedAt,
      releasedAt - MIN,
    );
  });
  return allocationId;
}

const booked = async (ids: string[]) =>
  (
    await env.DB.prepare(`SELECT allocation_id FROM usage_records WHERE allocation_id IN (${ids.map(() => "?").join(",")})`)
      .bind(...ids)
      .all<{ allocation_id: string }>()
  ).results
    .map((r) => r.allocation_id)
    .sort();

describe("reconcile's default window", () => {
  it("{} finds differences beyond the grace (one older than the cron's window), not inside it; the answer names the window", async () => {
    const user = uid("recon-window");
    // The account opens now (its watermark: now).
    expect((await call("GET", `/billing/users/${user}/balance`, { token: await tokenFor(user) })).status).toBe(200);
    const now = Date.now();
    const twoHours = await endedInObject(user, now - 2 * 60 * MIN);
    const aMinuteBeyond = await endedInObject(user, now - GRACE - MIN);
    const aMinuteInside = await endedInObject(user, now - GRACE + MIN);
    const justNow = await endedInObject(user, now - 1_000);
    const watermark = await env.DB.prepare("SELECT reconciled_through AS t FROM accounts WHERE user_id = ?").bind(user).first("t");

    const before = Date.now();
    const r = await call("POST", "/admin/billing/reconcile", { token: await admin(), body: {} });
    const after = Date.now();
    expect(r.status).toBe(200);
    expect(r.body.defaulted).toEqual(["from", "to"]);
    const to = Date.parse(r.body.to);
    expect(to).toBeGreaterThanOrEqual(before - GRACE);
    expect(to).toBeLessThanOrEqual(after - GRACE);
    expect(Date.parse(r.body.from)).toBe(to - LOOKBACK);
    expect(r.body).toMatchObject({ users: 1, checked: 2, missingUsage: 2, healed: 2, stillMissing: 0 });
    expect(r.body.differences).toHaveLength(1);
    expect(r.body.differences[0]).toMatchObject({ userId: user, from: r.body.from, to: r.body.to });
    expect([...r.body.differences[0].missingUsage].sort()).toEqual([twoHours, aMinuteBeyond].sort());

    // Healed through the usual booking path; what ended within the grace is left to the queue.
    expect(await booked([twoHours, aMinuteBeyond, aMinuteInside, justNow])).toEqual([twoHours, aMinuteBeyond].sort());
    // An operator's window moves no watermark (the cron's pass keeps its own).
    expect(await env.DB.prepare("SELECT reconciled_through AS t FROM accounts WHERE user_id = ?").bind(user).first("t")).toBe(watermark);

    // A later `to` (only `from` defaulted: 31 days before it) finds the two inside the grace.
    const later = new Date(Date.now() + MIN).toISOString();
    const dry = await call("POST", "/admin/billing/reconcile", { token: await admin(), body: { to: later, heal: false } });
    expect(dry.body).toMatchObject({ to: later, defaulted: ["from"], missingUsage: 2, healed: 0 });
    expect(Date.parse(dry.body.from)).toBe(Date.parse(later) - LOOKBACK);
    expect([...dry.body.differences[0].missingUsage].sort()).toEqual([aMinuteInside, justNow].sort());

    // Both ends given: nothing defaulted, exactly that window.
    const given = { from: new Date(now - 3 * 60 * MIN).toISOString(), to: new Date(now - 60 * MIN).toISOString() };
    const exact = await call("POST", "/admin/billing/reconcile", { token: await admin(), body: { ...given, heal: false } });
    expect(exact.body).toMatchObject({ from: given.from, to: given.to, defaulted: [], checked: 1, missingUsage: 0 });
  });

  it("with userId only: that user over the same default window", async () => {
    const user = uid("recon-one");
    expect((await call("GET", `/billing/users/${user}/balance`, { token: await tokenFor(user) })).status).toBe(200);
    const old = await endedInObject(user, Date.now() - 3 * 86_400_000);
    const r = await call("POST", "/admin/billing/reconcile", { token: await admin(), body: { userId: user, heal: false } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ users: 1, defaulted: ["from", "to"], missingUsage: 1 });
    expect(r.body.differences[0].missingUsage).toEqual([old]);
    expect(Date.parse(r.body.to) - Date.parse(r.body.from)).toBe(LOOKBACK);
  });

  it("a `from` after the default `to` is 400, naming the window with its defaults filled in", async () => {
    const from = new Date(Date.now() - MIN).toISOString();
    const r = await call("POST", "/admin/billing/reconcile", { token: await admin(), body: { from } });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: "VALIDATION_FAILED", details: { given: { from, to: null } } });
  });
});
