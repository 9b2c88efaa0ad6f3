/**
 * `billing.charged` on the user's feed: one event per booked usage record, with the ledger's
 * charge and the balance after it; nothing for a repeat, a record that fails to book, or anyone else.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { UsageRecord } from "../src/domain/types";
import type { Envelope } from "../src/feed/protocol";
import { runBillingCron } from "../src/billing/cron";
import { call, deliverBatch, registerDevice, sleep, tokenFor, uid, until } from "./helpers";
import { rawFeed, ticket } from "./feed-helpers";

const userEvents = async (token: string): Promise<Envelope<Record<string, any>>[]> =>
  (await call("GET", "/scheduler/events?limit=200", { token })).body.events;
const chargedOf = async (token: string) => (await userEvents(token)).filter((e) => e.type === "billing.charged");

const chargedRows = async (userId: string) =>
  (
    await env.DB.prepare("SELECT key, delivered_at FROM notifications WHERE user_id = ? AND type = 'billing.charged'")
      .bind(userId)
      .all<{ key: string; delivered_at: number | null }>()
  ).results;

const record = (userId: string, durationSeconds = 3600): UsageRecord => ({
  allocationId: uid("alc-ch"),
  deviceId: "dev-ch",
  userId,
  durationSeconds,
  cpuCores: 2,
  memoryMB: 4096,
  storageMB: 32768,
  allocatedAt: 1_000,
  releasedAt: 1_000 + durationSeconds * 1000,
  reason: "released",
});

describe("billing.charged", () => {
  it("allocate and release: one billing.charged on the holder's feed, with the ledger's charge and the balance after it", async () => {
    const pool = uid("charged");
    const dev = await registerDevice(pool, { cpuCores: 2, memoryMB: 4096, storageMB: 32768 });
    const user = uid("payer");
    const other = uid("bystander");
    const token = await tokenFor(user);
    const otherToken = await tokenFor(other);
    const mine = await rawFeed(`/ws?ticket=${encodeURIComponent(await ticket(token))}`);
    const theirs = await rawFeed(`/ws?ticket=${encodeURIComponent(await ticket(otherToken))}`);
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationSeconds: 3 } });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    await sleep(1100);
    expect((await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } })).status).toBe(200);

    const live = (await until(async () => mine.frames.find((f) => f.type === "billing.charged"))) as Envelope<Record<string, any>>;
    const ledger = (await call("GET", `/billing/users/${user}/ledger`, { token })).body.items;
    expect(ledger[0]).toMatchObject({ kind: "charge", allocationId: a.body.allocationId });
    const balance = (await call("GET", `/billing/users/${user}/balance`, { token })).body;
    const usage = await env.DB.prepare("SELECT duration_seconds FROM usage_records WHERE allocation_id = ?")
      .bind(a.body.allocationId)
      .first<{ duration_seconds: number }>();
    expect(live.userId).toBe(user);
    expect(live.data).toEqual({
      allocationId: a.body.allocationId,
      deviceId: dev.deviceId,
      amount: -ledger[0].amountMinor,
      newBalance: ledger[0].balanceAfterMinor,
      currency: "USD",
      durationSeconds: usage!.duration_seconds,
    });
    expect(live.data.amount).toBeGreaterThan(0);
    expect(live.data.newBalance).toBe(balance.balanceMinor);
    // The event log (the feed's history) has it once, after the release.
    const logged = await userEvents(token);
    expect(logged.filter((e) => e.type === "billing.charged")).toHaveLength(1);
    const types = logged.map((e) => e.type);
    expect(types.indexOf("billing.charged")).toBeGreaterThan(types.indexOf("device.released"));

    // The same record again (a redelivery) books nothing and sends nothing.
    const again: UsageRecord = {
      allocationId: a.body.allocationId,
      deviceId: dev.deviceId,
      userId: user,
      durationSeconds: usage!.duration_seconds,
      cpuCores: 2,
      memoryMB: 4096,
      storageMB: 32768,
      allocatedAt: Date.parse(a.body.allocatedAt),
      releasedAt: Date.now(),
      reason: "released",
    };
    expect((await deliverBatch("device-usage", [again, again])).explicitAcks.sort()).toEqual(["m0", "m1"]);
    const kept = await env.DB.prepare("SELECT COUNT(*) AS n FROM failed_usage WHERE allocation_id = ?").bind(a.body.allocationId).first();
    expect(kept!.n, "the redelivery was read as a duplicate, not kept as invalid").toBe(0);
    await runBillingCron(env as never, Date.now());
    await sleep(200);
    expect(await chargedOf(token)).toHaveLength(1);
    expect(mine.frames.filter((f) => f.type === "billing.charged")).toHaveLength(1);
    expect(await chargedRows(user)).toHaveLength(1);
    // Nobody else hears of it.
    expect(theirs.frames.filter((f) => f.seq !== null)).toEqual([]);
    expect(await chargedOf(otherToken)).toEqual([]);
    expect(await chargedRows(other)).toEqual([]);
    mine.ws.close(1000);
    theirs.ws.close(1000);
  });

  it("two records of one user in one batch: one event each, each with the running balance after its charge", async () => {
    const user = uid("two");
    const token = await tokenFor(user);
    const first = record(user);
    const second = record(user);
    const r = await deliverBatch("device-usage", [first, second, first]);
    expect(r.explicitAcks.sort()).toEqual(["m0", "m1", "m2"]);
    const got = await until(async () => {
      const e = await chargedOf(token);
      return e.length === 2 && e;
    });
    // An hour of 2 cores, 4 GB, 32 GB is 25 cents; the starting credit is 1000.
    expect(got.map((e) => e.data)).toEqual([
      { allocationId: first.allocationId, deviceId: "dev-ch", amount: 25, newBalance: 975, currency: "USD", durationSeconds: 3600 },
      { allocationId: second.allocationId, deviceId: "dev-ch", amount: 25, newBalance: 950, currency: "USD", durationSeconds: 3600 },
    ]);
    await deliverBatch("device-usage", [second]);
    expect(await chargedOf(token)).toHaveLength(2);
  });

  it("a record that fails to book sends nothing; its booking later sends one, and the others in its batch get theirs", async () => {
    const user = uid("stuck");
    const token = await tokenFor(user);
    const stuck = record(user);
    const fine = record(user, 1800);
    await env.DB.exec(
      `CREATE TRIGGER refuse_charged BEFORE INSERT ON usage_records WHEN NEW.allocation_id = '${stuck.allocationId}' BEGIN ` +
        `SELECT RAISE(ABORT, 'injected'); END`,
    );
    try {
      const r = await deliverBatch("device-usage", [stuck, fine]);
      expect(r.retryMessages.map((m) => m.msgId)).toEqual(["m0"]);
      expect(r.explicitAcks).toEqual(["m1"]);
    } finally {
      await env.DB.exec("DROP TRIGGER refuse_charged");
    }
    const once = await until(async () => {
      const e = await chargedOf(token);
      return e.length === 1 && e;
    });
    // 1800 s of that device: 12.276 cents → 13.
    expect(once[0]!.data).toMatchObject({ allocationId: fine.allocationId, amount: 13, newBalance: 987 });
    expect((await chargedRows(user)).map((n) => n.key)).toEqual([`billing.charged:charge:${fine.allocationId}`]);
    expect((await deliverBatch("device-usage", [stuck])).explicitAcks).toEqual(["m0"]);
    const both = await until(async () => {
      const e = await chargedOf(token);
      return e.length === 2 && e;
    });
    expect(both[1]!.data).toMatchObject({ allocationId: stuck.allocationId, amount: 25, newBalance: 962 });
  });
});
