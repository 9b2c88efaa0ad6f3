/**
 * Batch operations (POST /scheduler/batch/allocate, release, extend, query) against the real
 * Worker and objects: one result per item in request order, each the single route's answer
 * (value or error), failed and skipped items change nothing, continueOnError=false stops at
 * the first failure, quota and device exclusivity hold inside a batch and across concurrent
 * batches, and only a wrong envelope is a 400.
 */
import { describe, expect, it } from "vitest";
import { SERVICE_TOKEN, admin, call, registerDevice, tokenFor, uid, until, withoutGrant, withoutHolder } from "./helpers";
import { BATCH } from "../src/config";
import { SKIPPED_STATUS } from "../src/routes/batch";
import { AllocatedResult, AllocationView, ReleaseResult } from "../src/schemas";

type Op = "allocate" | "release" | "extend" | "query";
const batch = (op: Op, token: string, body: unknown) => call("POST", `/scheduler/batch/${op}`, { token, body });
const allocate = (token: string, body: Record<string, unknown>) => call("POST", "/scheduler/devices/allocate", { token, body });

interface Item {
  index: number;
  ok: boolean;
  status: number;
  skipped?: true;
  value?: any;
  error?: { code: string; message: string; details?: any };
}

/** A 200 batch answer, checked for its shape and counts; returns the results. */
function results(r: { status: number; body: any }, n: number): Item[] {
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect(Object.keys(r.body).sort()).toEqual(["failed", "results", "skipped", "succeeded"]);
  const items = r.body.results as Item[];
  expect(items.map((i) => i.index)).toEqual([...Array(n).keys()]);
  for (const i of items) {
    if (i.ok) expect(Object.keys(i).sort()).toEqual(["index", "ok", "status", "value"]);
    else {
      expect(Object.keys(i).sort()).toEqual(i.skipped ? ["error", "index", "ok", "skipped", "status"] : ["error", "index", "ok", "status"]);
      expect(["code,message", "code,details,message"]).toContain(Object.keys(i.error!).sort().join(","));
    }
  }
  expect(r.body.succeeded).toBe(items.filter((i) => i.ok).length);
  expect(r.body.failed).toBe(items.filter((i) => !i.ok && !i.skipped).length);
  expect(r.body.skipped).toBe(items.filter((i) => i.skipped).length);
  return items;
}

const quota = async (user: string, token: string) => {
  const r = await call("GET", `/quotas/user/${user}`, { token });
  expect(r.status).toBe(200);
  return r.body.usage as { devices: number; cpuCores: number; memoryMB: number; storageMB: number };
};
const allocations = async (user: string, token: string) => {
  const r = await call("GET", `/scheduler/allocations?userId=${user}`, { token });
  expect(r.status).toBe(200);
  return r.body.items as Array<{
    allocationId: string;
    deviceId: string;
    status: string;
    idempotencyKey: string | null;
    durationMinutes: number;
  }>;
};
const active = async (user: string, token: string) => (await allocations(user, token)).filter((a) => a.status === "active");
const availableIn = async (pool: string, token: string) => {
  const r = await call("GET", `/scheduler/devices/available?pool=${pool}`, { token });
  expect(r.status).toBe(200);
  return (r.body.items as Array<{ deviceId: string }>).map((d) => d.deviceId).sort();
};
/** The pool's index is told of ends right away; wait for it anyway rather than race it. */
const availableSettles = (pool: string, token: string, want: string[]) =>
  until(async () => JSON.stringify(await availableIn(pool, token)) === JSON.stringify([...want].sort()), 10_000);

async function poolOf(n: number, spec: Parameters<typeof registerDevice>[1] = {}) {
  const pool = uid("batch-pool");
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push((await registerDevice(pool, { deviceId: uid("batch-dev"), ...spec })).deviceId);
  return { pool, ids: ids.sort() };
}

describe("batch allocate", () => {
  it("mixed valid and invalid items: each gets its own result, the single route's error, and failures change nothing", async () => {
    const { pool, ids } = await poolOf(3);
    const user = uid("mix");
    const other = uid("mix-other");
    const token = await tokenFor(user);
    const requests = [
      { pool, durationMinutes: 5, idempotencyKey: "ok-1" }, // 0: ok
      { pool, spec: { cpuCores: -1 }, idempotencyKey: "bad-spec" }, // 1: invalid spec
      { pool, durationMinutes: 0, idempotencyKey: "bad-duration" }, // 2: invalid duration
      { pool, colour: "red", idempotencyKey: "bad-key" }, // 3: unknown key
      "not an object", // 4: not even an object
      { pool, spec: { cpuCores: 8 }, idempotencyKey: "over-per-device" }, // 5: free plan: at most 4 cores per device
      { pool, spec: { cpuCores: 3 }, idempotencyKey: "no-fit" }, // 6: fits the plan, but no 3-core device exists
      { pool, userId: other, idempotencyKey: "not-mine" }, // 7: a user acting for another
      { pool, durationMinutes: 10, idempotencyKey: "ok-2" }, // 8: ok (second device: the free plan's limit)
      { pool, idempotencyKey: "third" }, // 9: over the device count
      { pool, durationMinutes: 5, idleReleaseMinutes: 5, idleReleaseSeconds: 60, idempotencyKey: "both-idle" }, // 10: refine fails
    ];
    const r = await batch("allocate", token, { continueOnError: true, requests });
    const items = results(r, requests.length);
    expect(items.map((i) => (i.ok ? i.status : i.error!.code))).toEqual([
      201,
      "VALIDATION_FAILED",
      "VALIDATION_FAILED",
      "VALIDATION_FAILED",
      "VALIDATION_FAILED",
      "QUOTA_PER_DEVICE_EXCEEDED",
      "NO_DEVICE_AVAILABLE",
      "FORBIDDEN",
      201,
      "QUOTA_DEVICES_EXCEEDED",
      "VALIDATION_FAILED",
    ]);
    expect(r.body).toMatchObject({ succeeded: 2, failed: 9, skipped: 0 });
    const ok = [items[0]!, items[8]!];
    for (const i of ok) {
      AllocatedResult.strict().parse(i.value);
      expect(i.value).toMatchObject({ userId: user, pool });
      expect(ids).toContain(i.value.deviceId);
    }
    expect(ok[0]!.value.deviceId).not.toBe(ok[1]!.value.deviceId);
    expect([ok[0]!.value.durationMinutes, ok[1]!.value.durationMinutes]).toEqual([5, 10]);

    // Every failed item carries exactly what the single route answers for the same body (asked by a
    // user in the state the batch user was in at that item: items 5 and 6 came before the second device).
    const fresh = await tokenFor(uid("mix-fresh"));
    for (const i of items.filter((x) => !x.ok)) {
      const single = await allocate(i.index === 5 || i.index === 6 ? fresh : token, requests[i.index] as Record<string, unknown>);
      expect(single.status, `item ${i.index}`).toBe(i.status);
      if (i.error!.code === "NO_DEVICE_AVAILABLE")
        expect(single.body.error.code).toBe(i.error!.code); // details name what was tried
      else expect(single.body, `item ${i.index}`).toEqual({ error: i.error });
    }
    const bad = items[1]!.error!;
    expect(bad.details.issues).toEqual([{ path: "spec.cpuCores", message: expect.any(String) }]);
    expect(bad.message).toBe(`spec.cpuCores: ${bad.details.issues[0].message}`);
    expect(items[3]!.error!.details.issues[0].message).toMatch(/colour/);

    // Nothing but the two successes happened: quota, allocations, the pool.
    expect(await quota(user, token)).toMatchObject({ devices: 2, cpuCores: 4 });
    const mine = await allocations(user, token);
    expect(mine.map((a) => a.allocationId).sort()).toEqual(ok.map((i) => i.value.allocationId).sort());
    expect(mine.map((a) => a.idempotencyKey).sort()).toEqual(["ok-1", "ok-2"]);
    expect(await availableIn(pool, token)).toEqual(ids.filter((d) => !ok.some((i) => i.value.deviceId === d)));
    expect((await quota(other, await tokenFor(other))).devices).toBe(0);
    expect(await allocations(other, await admin())).toEqual([]);
  });

  it("continueOnError=false (the default) runs in order and stops at the first failure; skipped items allocate nothing", async () => {
    const { pool, ids } = await poolOf(4);
    const user = uid("stop");
    const token = await tokenFor(user);
    // The default: an object's refusal stops the batch.
    const requests = [
      { pool, durationMinutes: 5, idempotencyKey: "s-0" },
      { pool, spec: { cpuCores: 3 }, idempotencyKey: "s-1" },
      { pool, durationMinutes: 5, idempotencyKey: "s-2" },
      { pool, spec: { bogus: 1 }, idempotencyKey: "s-3" },
    ];
    const r = await batch("allocate", token, { requests });
    const items = results(r, 4);
    expect(items[0]).toMatchObject({ ok: true, status: 201 });
    expect(items[1]).toMatchObject({ ok: false, status: 409, error: { code: "NO_DEVICE_AVAILABLE" } });
    for (const i of [2, 3])
      expect(items[i]).toEqual({
        index: i,
        ok: false,
        skipped: true,
        status: SKIPPED_STATUS,
        error: { code: "SKIPPED", message: expect.stringContaining("item 1"), details: { failedIndex: 1 } },
      });
    expect(r.body).toMatchObject({ succeeded: 1, failed: 1, skipped: 2 });
    expect((await allocations(user, token)).map((a) => a.idempotencyKey)).toEqual(["s-0"]);
    expect((await quota(user, token)).devices).toBe(1);
    expect(await availableIn(pool, token)).toEqual(ids.filter((d) => d !== items[0]!.value.deviceId));

    // Explicitly false, failing on the first item's validation: nothing at all runs.
    const r2 = await batch("allocate", token, {
      continueOnError: false,
      requests: [
        { pool, durationMinutes: -5 },
        { pool, idempotencyKey: "s-5" },
        { pool, idempotencyKey: "s-6" },
      ],
    });
    const items2 = results(r2, 3);
    expect(items2[0]).toMatchObject({ ok: false, status: 400, error: { code: "VALIDATION_FAILED" } });
    expect(items2.slice(1).every((i) => i.skipped && i.error!.code === "SKIPPED" && i.error!.details.failedIndex === 0)).toBe(true);
    expect(r2.body).toMatchObject({ succeeded: 0, failed: 1, skipped: 2 });
    expect((await allocations(user, token)).map((a) => a.idempotencyKey)).toEqual(["s-0"]);
    expect((await quota(user, token)).devices).toBe(1);
    expect((await availableIn(pool, token)).length).toBe(3);

    // A skipped item's idempotency key was never used: the same request now allocates afresh.
    const again = await allocate(token, { pool, durationMinutes: 5, idempotencyKey: "s-2" });
    expect(again.status).toBe(201);
    expect(again.body.allocationId).not.toBe(items[0]!.value.allocationId);
  });

  it("quota holds inside a batch: a free-plan user asking for 4 devices gets exactly 2", async () => {
    const { pool } = await poolOf(6);
    for (const continueOnError of [true, false]) {
      const user = uid("quota");
      const token = await tokenFor(user);
      const r = await batch("allocate", token, {
        continueOnError,
        requests: Array.from({ length: 4 }, () => ({ pool, durationMinutes: 5 })),
      });
      const items = results(r, 4);
      // One user's items run in request order, so the first two win.
      expect(items.slice(0, 2).every((i) => i.ok && i.status === 201)).toBe(true);
      expect(items[2]).toMatchObject({
        ok: false,
        status: 409,
        error: { code: "QUOTA_DEVICES_EXCEEDED", details: { limit: 2, used: 2 } },
      });
      expect(items[3]).toMatchObject(
        continueOnError
          ? { ok: false, status: 409, error: { code: "QUOTA_DEVICES_EXCEEDED" } }
          : { skipped: true, error: { code: "SKIPPED" } },
      );
      expect(r.body.succeeded).toBe(2);
      expect((await quota(user, token)).devices).toBe(2);
      expect((await active(user, token)).length).toBe(2);
    }
    expect((await availableIn(pool, await tokenFor(uid("look")))).length).toBe(2);
  });

  it("a repeated idempotencyKey inside a batch answers the first item's allocation", async () => {
    const { pool } = await poolOf(3);
    const user = uid("idem");
    const token = await tokenFor(user);
    const body = { pool, durationMinutes: 5, idempotencyKey: "twice" };
    const items = results(
      await batch("allocate", token, {
        continueOnError: true,
        requests: [body, body, { ...body, durationMinutes: 6 }],
      }),
      3,
    );
    expect(items[0]!.ok && items[1]!.ok).toBe(true);
    // The same allocation; each answer signs its own access grant.
    expect(withoutGrant(items[1]!.value)).toEqual(withoutGrant(items[0]!.value));
    expect(items[2]).toMatchObject({ ok: false, status: 409, error: { code: "IDEMPOTENCY_KEY_REUSED" } });
    expect((await quota(user, token)).devices).toBe(1);
  });

  it("never hands a device out twice, inside one batch or across two concurrent batches", async () => {
    const { pool, ids } = await poolOf(10);
    const adminToken = await admin();
    const users = (tag: string) => Array.from({ length: 5 }, () => uid(`conc-${tag}`));
    const [ua, ub] = [users("a"), users("b")];
    // 20 requests for 10 devices, every user asking twice (within the free plan's 2).
    const body = (us: string[]) => ({
      continueOnError: true,
      requests: us.flatMap((u) => [
        { pool, userId: u, durationMinutes: 5 },
        { pool, userId: u, durationMinutes: 5 },
      ]),
    });
    const [ra, rb] = await Promise.all([batch("allocate", adminToken, body(ua)), batch("allocate", adminToken, body(ub))]);
    const all = [...results(ra, 10), ...results(rb, 10)];
    const won = all.filter((i) => i.ok);
    expect(won.length).toBe(10);
    expect(new Set(won.map((i) => i.value.deviceId)).size).toBe(10);
    expect(won.map((i) => i.value.deviceId).sort()).toEqual(ids);
    for (const i of all.filter((x) => !x.ok)) expect(i).toMatchObject({ status: 409, error: { code: "NO_DEVICE_AVAILABLE" } });
    // Every winner holds exactly what the batch said, and nobody holds what they were refused.
    let held = 0;
    for (const u of [...ua, ...ub]) {
      const mine = await active(u, adminToken);
      const said = won.filter((i) => i.value.userId === u);
      expect(mine.map((a) => a.deviceId).sort()).toEqual(said.map((i) => i.value.deviceId).sort());
      expect((await quota(u, adminToken)).devices).toBe(said.length);
      held += mine.length;
    }
    expect(held).toBe(10);
    expect(await availableIn(pool, adminToken)).toEqual([]);
  });
});

describe("admin batches across users", () => {
  it("allocate, extend, query and release for several users in one request each; a user may not name another", async () => {
    const { pool, ids } = await poolOf(5);
    const adminToken = await admin();
    const [u1, u2, u3] = [uid("adm-1"), uid("adm-2"), uid("adm-3")];
    const r = await batch("allocate", adminToken, {
      userId: u1,
      continueOnError: true,
      requests: [
        { pool, durationMinutes: 20 },
        { pool, userId: u2, durationMinutes: 20 },
        { pool, userId: u3, durationMinutes: 20 },
        { pool, durationMinutes: 20 },
      ],
    });
    const items = results(r, 4);
    expect(items.every((i) => i.ok && i.status === 201)).toBe(true);
    expect(items.map((i) => i.value.userId)).toEqual([u1, u2, u3, u1]);
    expect(new Set(items.map((i) => i.value.deviceId)).size).toBe(4);
    expect([(await quota(u1, adminToken)).devices, (await quota(u2, adminToken)).devices, (await quota(u3, adminToken)).devices]).toEqual([
      2, 1, 1,
    ]);
    const allocIds = items.map((i) => i.value.allocationId);

    const ext = results(
      await batch("extend", adminToken, {
        requests: allocIds.map((allocationId) => ({ allocationId, additionalMinutes: 10 })),
      }),
      4,
    );
    expect(ext.every((i) => i.ok && i.status === 200 && i.value.durationMinutes === 30 && i.value.extendCount === 1)).toBe(true);

    const q = results(await batch("query", adminToken, { allocationIds: allocIds }), 4);
    expect(q.map((i) => [i.value.userId, i.value.status, i.value.durationMinutes])).toEqual([
      [u1, "active", 30],
      [u2, "active", 30],
      [u3, "active", 30],
      [u1, "active", 30],
    ]);

    const rel = results(
      await batch("release", adminToken, {
        userId: u1,
        continueOnError: true,
        requests: [
          { deviceId: items[0]!.value.deviceId },
          { deviceId: items[1]!.value.deviceId, userId: u2 },
          { deviceId: items[2]!.value.deviceId, userId: u3 },
          { deviceId: items[3]!.value.deviceId },
        ],
      }),
      4,
    );
    expect(rel.every((i) => i.ok && i.status === 200 && i.value.reason === "released")).toBe(true);
    expect(rel.map((i) => i.value.allocationId)).toEqual(allocIds);
    for (const u of [u1, u2, u3]) expect((await quota(u, adminToken)).devices).toBe(0);
    await availableSettles(pool, adminToken, ids);

    // A user naming another user, in the envelope or in an item: each such item is FORBIDDEN, and nothing happens to either account.
    const mallory = uid("mallory");
    const mt = await tokenFor(mallory);
    const forged = results(
      await batch("allocate", mt, {
        userId: u1,
        continueOnError: true,
        requests: [{ pool }, { pool, userId: u2 }, { pool, userId: mallory, durationMinutes: 5 }],
      }),
      3,
    );
    expect(forged.map((i) => (i.ok ? i.status : `${i.status} ${i.error!.code}`))).toEqual(["403 FORBIDDEN", "403 FORBIDDEN", 201]);
    expect(forged[0]!.error).toEqual((await allocate(mt, { pool, userId: u1 })).body.error);
    const forgedRelease = results(await batch("release", mt, { userId: u1, requests: [{ deviceId: forged[2]!.value.deviceId }] }), 1);
    expect(forgedRelease[0]).toMatchObject({ ok: false, status: 403, error: { code: "FORBIDDEN" } });
    expect((await quota(mallory, mt)).devices).toBe(1);
    for (const u of [u1, u2]) expect((await active(u, adminToken)).length).toBe(0);
  });
});

describe("batch release and extend", () => {
  it("release: each item on its own; another user's device, an unknown device and a bad item fail alone", async () => {
    const { pool, ids } = await poolOf(4);
    const user = uid("rel");
    const other = uid("rel-other");
    const [token, otherToken] = [await tokenFor(user), await tokenFor(other)];
    const mine = results(
      await batch("allocate", token, {
        requests: [
          { pool, durationMinutes: 10 },
          { pool, durationMinutes: 10 },
        ],
      }),
      2,
    ).map((i) => i.value);
    const theirs = (await allocate(otherToken, { pool, durationMinutes: 10 })).body;
    const requests = [
      { deviceId: mine[0].deviceId },
      { deviceId: theirs.deviceId }, // held by someone else
      { deviceId: "no-such-device" },
      { deviceId: "" }, // invalid
      { deviceId: mine[1].deviceId, userId: other }, // acting for another user
      { deviceId: mine[1].deviceId, extra: true }, // unknown key
      { deviceId: mine[1].deviceId },
      { deviceId: mine[0].deviceId }, // already released by item 0
    ];
    const items = results(await batch("release", token, { continueOnError: true, requests }), requests.length);
    expect(items.map((i) => (i.ok ? i.status : `${i.status} ${i.error!.code}`))).toEqual([
      200,
      "404 ALLOCATION_NOT_FOUND",
      "404 ALLOCATION_NOT_FOUND",
      "400 VALIDATION_FAILED",
      "403 FORBIDDEN",
      "400 VALIDATION_FAILED",
      200,
      "404 ALLOCATION_NOT_FOUND",
    ]);
    for (const [i, a] of [
      [0, mine[0]],
      [6, mine[1]],
    ] as const) {
      ReleaseResult.strict().parse(items[i]!.value);
      expect(items[i]!.value).toMatchObject({
        allocationId: a.allocationId,
        deviceId: a.deviceId,
        userId: user,
        reason: "released",
      });
    }
    for (const i of items.filter((x) => !x.ok)) {
      const single = await call("POST", "/scheduler/devices/release", { token, body: requests[i.index] });
      expect(single.status, `item ${i.index}`).toBe(i.status);
      expect(single.body, `item ${i.index}`).toEqual({ error: i.error });
    }
    // The other user's allocation is untouched; the user's devices are free again.
    expect((await active(other, otherToken)).map((a) => a.allocationId)).toEqual([theirs.allocationId]);
    expect((await quota(other, otherToken)).devices).toBe(1);
    expect((await quota(user, token)).devices).toBe(0);
    await availableSettles(
      pool,
      token,
      ids.filter((d) => d !== theirs.deviceId),
    );
  });

  it("extend: own allocations extended; another user's, an unknown and a malformed item each get their own error", async () => {
    const { pool } = await poolOf(3);
    const user = uid("ext");
    const other = uid("ext-other");
    const [token, otherToken] = [await tokenFor(user), await tokenFor(other)];
    const [a1, a2] = results(
      await batch("allocate", token, {
        requests: [
          { pool, durationMinutes: 10 },
          { pool, durationMinutes: 20 },
        ],
      }),
      2,
    ).map((i) => i.value);
    const theirs = (await allocate(otherToken, { pool, durationMinutes: 10 })).body;
    const unknownId = `${a1.allocationId.slice(0, -4)}zzzz`;
    const requests = [
      { allocationId: a1.allocationId, additionalMinutes: 10 },
      { allocationId: theirs.allocationId, additionalMinutes: 10 }, // another user's: 404, as if it did not exist
      { allocationId: unknownId, additionalMinutes: 10 },
      { allocationId: "garbage", additionalMinutes: 10 },
      { allocationId: a2.allocationId, additionalMinutes: 0 }, // invalid
      { allocationId: a2.allocationId }, // missing field
      { allocationId: a2.allocationId, additionalMinutes: 45 }, // over the free plan's 30 per extension
      { allocationId: a2.allocationId, additionalMinutes: 5 },
    ];
    const items = results(await batch("extend", token, { continueOnError: true, requests }), requests.length);
    expect(items.map((i) => (i.ok ? i.status : `${i.status} ${i.error!.code}`))).toEqual([
      200,
      "404 ALLOCATION_NOT_FOUND",
      "404 ALLOCATION_NOT_FOUND",
      "404 ALLOCATION_NOT_FOUND",
      "400 VALIDATION_FAILED",
      "400 VALIDATION_FAILED",
      "409 EXTEND_TOO_LONG",
      200,
    ]);
    expect(items[0]!.value).toMatchObject({
      allocationId: a1.allocationId,
      durationMinutes: 20,
      extendCount: 1,
      extendedMinutes: 10,
    });
    expect(items[7]!.value).toMatchObject({
      allocationId: a2.allocationId,
      durationMinutes: 25,
      extendCount: 1,
      extendedMinutes: 5,
    });
    expect(items[1]!.error).toEqual({
      code: "ALLOCATION_NOT_FOUND",
      message: "No such allocation.",
      details: { allocationId: theirs.allocationId },
    });
    // The single route says the same for the foreign and unknown ids (the others now hit the cooldown, so compare those that
    // cannot change).
    for (const i of [1, 2, 3, 4, 5]) {
      const { allocationId, ...rest } = requests[i] as { allocationId: string };
      const single = await call("PUT", `/scheduler/allocations/${encodeURIComponent(allocationId)}/extend`, {
        token,
        body: rest,
      });
      expect(single.status, `item ${i}`).toBe(items[i]!.status);
      expect(single.body, `item ${i}`).toEqual({ error: items[i]!.error });
    }
    // The other user's allocation was not extended.
    const t = (await call("GET", `/scheduler/allocations/${theirs.allocationId}`, { token: otherToken })).body;
    expect(t).toMatchObject({ durationMinutes: 10, extendCount: 0, extendedMinutes: 0 });
    const again = (await call("GET", `/scheduler/allocations/${a2.allocationId}`, { token })).body;
    expect(again).toMatchObject({ durationMinutes: 25, extendCount: 1 });
  });

  it("extend with continueOnError=false stops at an unknown allocation", async () => {
    const { pool } = await poolOf(2);
    const user = uid("ext-stop");
    const token = await tokenFor(user);
    const [a1, a2] = results(
      await batch("allocate", token, {
        requests: [
          { pool, durationMinutes: 10 },
          { pool, durationMinutes: 10 },
        ],
      }),
      2,
    ).map((i) => i.value);
    const items = results(
      await batch("extend", token, {
        requests: [
          { allocationId: a1.allocationId, additionalMinutes: 5 },
          { allocationId: "alc_nope_nope", additionalMinutes: 5 },
          { allocationId: a2.allocationId, additionalMinutes: 5 },
        ],
      }),
      3,
    );
    expect(items.map((i) => (i.ok ? i.status : i.error!.code))).toEqual([200, "ALLOCATION_NOT_FOUND", "SKIPPED"]);
    expect((await call("GET", `/scheduler/allocations/${a2.allocationId}`, { token })).body).toMatchObject({
      durationMinutes: 10,
      extendCount: 0,
    });
  });
});

describe("batch query", () => {
  it("own ids read as the single route does; foreign, unknown and malformed ids fail alone and do not leak", async () => {
    const { pool } = await poolOf(3);
    const user = uid("q");
    const other = uid("q-other");
    const [token, otherToken] = [await tokenFor(user), await tokenFor(other)];
    const [a1, a2] = results(
      await batch("allocate", token, {
        requests: [
          { pool, durationMinutes: 10 },
          { pool, durationMinutes: 10 },
        ],
      }),
      2,
    ).map((i) => i.value);
    await call("POST", "/scheduler/devices/release", { token, body: { deviceId: a2.deviceId } });
    const theirs = (await allocate(otherToken, { pool, durationMinutes: 10 })).body;
    const ids: unknown[] = [
      a1.allocationId,
      theirs.allocationId,
      a2.allocationId,
      "garbage",
      `${a1.allocationId}x`,
      "",
      42,
      null,
      "x".repeat(401),
      a1.allocationId,
    ];
    const items = results(await batch("query", token, { allocationIds: ids }), ids.length);
    expect(items.map((i) => (i.ok ? i.status : `${i.status} ${i.error!.code}`))).toEqual([
      200,
      "404 ALLOCATION_NOT_FOUND",
      200,
      "404 ALLOCATION_NOT_FOUND",
      "404 ALLOCATION_NOT_FOUND",
      "400 VALIDATION_FAILED",
      "400 VALIDATION_FAILED",
      "400 VALIDATION_FAILED",
      "400 VALIDATION_FAILED",
      200,
    ]);
    for (const i of [0, 2, 9]) {
      AllocationView.strict().parse(items[i]!.value);
      const single = await call("GET", `/scheduler/allocations/${ids[i]}`, { token });
      // The single route adds the holder's access fields; the batch read is the allocation alone.
      expect(items[i]!.value).toEqual(withoutHolder(single.body));
    }
    expect(items[0]!.value).toMatchObject({ status: "active", userId: user });
    expect(items[2]!.value).toMatchObject({ status: "released", reason: "released" });
    // The foreign id reads exactly like an id that does not exist.
    expect(items[1]!.error).toEqual({
      code: "ALLOCATION_NOT_FOUND",
      message: "No such allocation.",
      details: { allocationId: theirs.allocationId },
    });
    expect(items[4]!.error!.message).toBe(items[1]!.error!.message);
    for (const i of [1, 3, 4])
      expect((await call("GET", `/scheduler/allocations/${ids[i]}`, { token })).body).toEqual({
        error: items[i]!.error,
      });
    // The admin reads the foreign one.
    const asAdmin = results(await batch("query", await admin(), { allocationIds: [theirs.allocationId] }), 1);
    expect(asAdmin[0]).toMatchObject({
      ok: true,
      status: 200,
      value: { allocationId: theirs.allocationId, userId: other, status: "active" },
    });
  });

  it(`answers up to ${BATCH.maxItems} ids`, async () => {
    const token = await tokenFor(uid("q-many"));
    const items = results(
      await batch("query", token, { allocationIds: Array.from({ length: BATCH.maxItems }, (_, i) => `alc_x_${i}`) }),
      BATCH.maxItems,
    );
    expect(items.every((i) => i.status === 404 && i.error!.code === "ALLOCATION_NOT_FOUND")).toBe(true);
  });
});

describe("envelope errors", () => {
  it("a wrong envelope is one 400 in the one error shape, and nothing runs", async () => {
    const { pool, ids } = await poolOf(2);
    const user = uid("env");
    const token = await tokenFor(user);
    const item = { pool, durationMinutes: 5 };
    const expectError = (r: { status: number; body: any }, code: string, path?: string) => {
      expect(r.status, JSON.stringify(r.body)).toBe(400);
      expect(Object.keys(r.body)).toEqual(["error"]);
      expect(r.body.error.code).toBe(code);
      expect(typeof r.body.error.message).toBe("string");
      if (path !== undefined) expect(r.body.error.details.issues.map((i: { path: string }) => i.path)).toContain(path);
    };
    expectError(
      await batch("allocate", token, { requests: Array.from({ length: BATCH.maxItems + 1 }, () => item) }),
      "VALIDATION_FAILED",
      "requests",
    );
    expectError(await batch("allocate", token, { requests: [] }), "VALIDATION_FAILED", "requests");
    expectError(await batch("allocate", token, {}), "VALIDATION_FAILED", "requests");
    expectError(await batch("allocate", token, { requests: [item], dryRun: true }), "VALIDATION_FAILED");
    expectError(await batch("allocate", token, { requests: [item], continueOnError: "yes" }), "VALIDATION_FAILED", "continueOnError");
    expectError(await batch("allocate", token, { requests: item }), "VALIDATION_FAILED", "requests");
    expectError(await batch("allocate", token, [item]), "VALIDATION_FAILED");
    expectError(await batch("allocate", token, "requests"), "VALIDATION_FAILED");
    expectError(await batch("allocate", token, { userId: "../x", requests: [item] }), "VALIDATION_FAILED", "userId");
    expectError(
      await batch("release", token, {
        requests: Array.from({ length: BATCH.maxItems + 1 }, () => ({ deviceId: ids[0] })),
      }),
      "VALIDATION_FAILED",
      "requests",
    );
    expectError(
      await batch("extend", token, { userId: user, requests: [{ allocationId: "a", additionalMinutes: 1 }] }),
      "VALIDATION_FAILED",
    );
    expectError(await batch("query", token, { allocationIds: [] }), "VALIDATION_FAILED", "allocationIds");
    expectError(
      await batch("query", token, { allocationIds: Array.from({ length: BATCH.maxItems + 1 }, () => "alc_x") }),
      "VALIDATION_FAILED",
      "allocationIds",
    );
    // Not JSON: the same answer as the single route's.
    const junk = await call("POST", "/scheduler/batch/allocate", {
      token,
      rawBody: '{"requests": [',
      headers: { "Content-Type": "application/json" },
    });
    const single = await call("POST", "/scheduler/devices/allocate", {
      token,
      rawBody: '{"requests": [',
      headers: { "Content-Type": "application/json" },
    });
    expectError(junk, single.body.error.code);
    expect(junk.body).toEqual(single.body);
    const empty = await call("POST", "/scheduler/batch/allocate", {
      token,
      rawBody: "",
      headers: { "Content-Type": "application/json" },
    });
    expect(empty.status).toBe(400);
    expect(Object.keys(empty.body.error).sort()).toEqual(expect.arrayContaining(["code", "message"]));
    // Who may call is checked first, as on every /scheduler route.
    expect((await call("POST", "/scheduler/batch/allocate", { body: { requests: [item] } })).status).toBe(401);
    const svc = await call("POST", "/scheduler/batch/query", {
      service: SERVICE_TOKEN,
      body: { allocationIds: ["alc_x"] },
    });
    expect(svc.status).toBe(403);
    expect(svc.body.error.code).toBe("FORBIDDEN");
    // Nothing ran.
    expect((await quota(user, token)).devices).toBe(0);
    expect(await allocations(user, token)).toEqual([]);
    expect(await availableIn(pool, token)).toEqual(ids);
  });

  it("the four routes are in the OpenAPI document, and every schema they name exists (items: the single routes' schemas)", async () => {
    const doc = (await call("GET", "/openapi.json")).body;
    const refsIn = (v: unknown, out: string[] = []): string[] => {
      if (Array.isArray(v)) v.forEach((x) => refsIn(x, out));
      else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) k === "$ref" ? out.push(x as string) : refsIn(x, out);
      return out;
    };
    const pending: string[] = [];
    for (const op of ["allocate", "release", "extend", "query"]) {
      const p = doc.paths[`/scheduler/batch/${op}`]?.post;
      expect(p, op).toBeDefined();
      expect(Object.keys(p.responses)).toContain("200");
      pending.push(...refsIn(p));
    }
    const seen = new Set<string>();
    while (pending.length) {
      const ref = pending.pop()!;
      if (seen.has(ref)) continue;
      seen.add(ref);
      const schema = doc.components.schemas[ref.replace("#/components/schemas/", "")];
      expect(schema, ref).toBeDefined();
      pending.push(...refsIn(schema));
    }
    for (const name of ["AllocateRequest", "ReleaseRequest", "BatchExtendItem", "AllocationResult", "ReleaseResult", "Allocation"])
      expect(seen).toContain(`#/components/schemas/${name}`);
    const env = doc.components.schemas.BatchAllocateRequest;
    expect(env.properties.requests).toMatchObject({
      type: "array",
      minItems: 1,
      maxItems: BATCH.maxItems,
      items: { $ref: "#/components/schemas/AllocateRequest" },
    });
    expect(env.additionalProperties).toBe(false);
  });
});
