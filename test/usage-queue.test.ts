/** The usage consumer: idempotent on allocationId, and the dead-letter queue writes too. */
import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../src/index";
import type { UsageRecord } from "../src/domain/types";
import { uid } from "./helpers";

const record = (allocationId: string): UsageRecord => ({
  allocationId, deviceId: "dev-q", userId: "user-q", durationSeconds: 61, cpuCores: 2, memoryMB: 2048, storageMB: 1000,
  allocatedAt: 1_000, releasedAt: 62_000, reason: "released",
});

async function deliver(queue: string, bodies: UsageRecord[]) {
  const batch = createMessageBatch<UsageRecord>(queue, bodies.map((body, i) => ({ id: `m${i}`, timestamp: new Date(), attempts: 1, body })));
  const ctx = createExecutionContext();
  await worker.queue(batch, env as never);
  return getQueueResult(batch, ctx);
}

describe("usage consumer", () => {
  it("redelivered and duplicated records leave exactly one row, and are acked", async () => {
    const id = uid("alc-q");
    const first = await deliver("device-usage", [record(id), record(id)]);
    expect(first.explicitAcks.sort()).toEqual(["m0", "m1"]);
    expect(first.retryMessages).toEqual([]);
    await deliver("device-usage", [record(id)]);
    const n = await env.DB.prepare("SELECT COUNT(*) AS n, MAX(duration_seconds) AS d FROM usage_records WHERE allocation_id = ?").bind(id).first<{ n: number; d: number }>();
    expect(n).toEqual({ n: 1, d: 61 });
  });

  it("a dead letter is written by the same idempotent insert", async () => {
    const id = uid("alc-dlq");
    const r = await deliver("device-usage-dlq", [record(id)]);
    expect(r.explicitAcks).toEqual(["m0"]);
    const n = await env.DB.prepare("SELECT COUNT(*) AS n FROM usage_records WHERE allocation_id = ?").bind(id).first<{ n: number }>();
    expect(n!.n).toBe(1);
  });

  it("a record that cannot be written is retried, not acked", async () => {
    const bad = { ...record(uid("alc-bad")), deviceId: null } as unknown as UsageRecord; // violates NOT NULL
    const r = await deliver("device-usage", [bad]);
    expect(r.explicitAcks).toEqual([]);
    expect(r.retryMessages.map((m) => m.msgId)).toEqual(["m0"]);
  });
});
