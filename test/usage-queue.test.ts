/**
 * The usage consumers, driven with hand-made batches: per-message ack/retry, idempotency,
 * malformed records and dead letters kept in `failed_usage`.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { UsageRecord } from "../src/domain/types";
import { deliverBatch as deliver, uid } from "./helpers";

const record = (allocationId: string, userId = uid("user-q")): UsageRecord => ({
  allocationId,
  deviceId: "dev-q",
  userId,
  durationSeconds: 3600,
  cpuCores: 2,
  memoryMB: 4096,
  storageMB: 32768,
  allocatedAt: 1_000,
  releasedAt: 3_601_000,
  reason: "released",
});

const count = async (sql: string, ...args: unknown[]) =>
  (await env.DB.prepare(sql)
    .bind(...args)
    .first<{ n: number }>())!.n;

describe("usage consumer", () => {
  it("duplicates inside a batch and across batches leave one row and one charge, and are all acked", async () => {
    const id = uid("alc-q");
    const r = record(id);
    const first = await deliver("device-usage", [r, r]);
    expect(first.explicitAcks.sort()).toEqual(["m0", "m1"]);
    expect(first.retryMessages).toEqual([]);
    const second = await deliver("device-usage", [r]);
    expect(second.explicitAcks).toEqual(["m0"]);
    expect(await count("SELECT COUNT(*) AS n FROM usage_records WHERE allocation_id = ?", id)).toBe(1);
    expect(await count("SELECT COUNT(*) AS n FROM ledger WHERE allocation_id = ?", id)).toBe(1);
    // 1 hour of 2 cores, 4 GB, 32 GB: 24.552 cents → 25; starting credit 1000.
    const acct = await env.DB.prepare("SELECT balance FROM accounts WHERE user_id = ?").bind(r.userId).first<{ balance: number }>();
    expect(acct!.balance).toBe(975);
  });

  it("a malformed record is kept as `invalid` and acked (retrying cannot fix it); the rest of the batch is booked", async () => {
    const good = record(uid("alc-good"));
    const badId = uid("alc-bad");
    const bad = { ...record(badId), deviceId: null, durationSeconds: -5 };
    const r = await deliver("device-usage", [bad, good, "not even an object"]);
    expect(r.explicitAcks.sort()).toEqual(["m0", "m1", "m2"]);
    expect(r.retryMessages).toEqual([]);
    const kept = await env.DB.prepare("SELECT status, error FROM failed_usage WHERE allocation_id = ?")
      .bind(badId)
      .first<{ status: string; error: string }>();
    expect(kept!.status).toBe("invalid");
    expect(kept!.error).toMatch(/deviceId/);
    expect(await count("SELECT COUNT(*) AS n FROM usage_records WHERE allocation_id = ?", good.allocationId)).toBe(1);
    expect(await count("SELECT COUNT(*) AS n FROM failed_usage WHERE allocation_id = 'message:m2'")).toBe(1);
  });

  it("a record D1 refuses is retried with backoff, the others in its batch are booked", async () => {
    const stuck = record(uid("alc-stuck"));
    const fine = record(uid("alc-fine"));
    await env.DB.exec(
      `CREATE TRIGGER refuse_one BEFORE INSERT ON usage_records WHEN NEW.allocation_id = '${stuck.allocationId}' BEGIN ` +
        `SELECT RAISE(ABORT, 'injected'); END`,
    );
    try {
      const r = await deliver("device-usage", [stuck, fine], 3);
      expect(r.explicitAcks).toEqual(["m1"]);
      expect(r.retryMessages.map((m) => m.msgId)).toEqual(["m0"]);
      expect(await count("SELECT COUNT(*) AS n FROM ledger WHERE allocation_id = ?", stuck.allocationId)).toBe(0);
      expect(await count("SELECT COUNT(*) AS n FROM ledger WHERE allocation_id = ?", fine.allocationId)).toBe(1);
    } finally {
      await env.DB.exec("DROP TRIGGER refuse_one");
    }
  });

  it("a dead letter is kept in failed_usage once (counted), not booked, until replayed", async () => {
    const r = record(uid("alc-dlq"));
    expect((await deliver("device-usage-dlq", [r], 11)).explicitAcks).toEqual(["m0"]);
    expect((await deliver("device-usage-dlq", [r], 11)).explicitAcks).toEqual(["m0"]);
    const kept = await env.DB.prepare("SELECT status, attempts FROM failed_usage WHERE allocation_id = ?")
      .bind(r.allocationId)
      .first<{ status: string; attempts: number }>();
    expect(kept).toEqual({ status: "failed", attempts: 22 });
    expect(await count("SELECT COUNT(*) AS n FROM usage_records WHERE allocation_id = ?", r.allocationId)).toBe(0);
  });
});
