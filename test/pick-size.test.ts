/**
 * The spec is a floor and the renter pays for the device they get (issue 19): the pool takes the
 * smallest fitting class first and its strategy chooses the node among those holding one, unless
 * the pool's strategy is `load-first`. When the quota's room per device, not the fleet, rules
 * out the free devices, allocate and the queue say so (NO_DEVICE_WITHIN_QUOTA).
 */
import { describe, expect, it } from "vitest";
import { admin, call, registerDevice, tokenFor, uid } from "./helpers";

const TWO = { cpuCores: 2, memoryMB: 4096, storageMB: 32768 };
const FOUR = { cpuCores: 4, memoryMB: 8192, storageMB: 32768 };
const EIGHT = { cpuCores: 8, memoryMB: 16384, storageMB: 65536 };

const allocate = async (pool: string, spec: Record<string, number>, token?: string) =>
  call("POST", "/scheduler/devices/allocate", { token: token ?? (await tokenFor(uid("u"))), body: { pool, spec } });

/** Node "quiet" holds one free 4-core device; node "busy" one free 2-core device and two held ones. */
async function fleet(strategy?: string) {
  const pool = uid("fit");
  // Two 2-core devices on "busy", both held, make it the more loaded node.
  for (let i = 0; i < 2; i++) await registerDevice(pool, { ...TWO, node: "busy" });
  for (let i = 0; i < 2; i++) expect((await allocate(pool, { cpuCores: 2 })).status).toBe(201);
  const big = await registerDevice(pool, { ...FOUR, node: "quiet" });
  const small = await registerDevice(pool, { ...TWO, node: "busy" });
  if (strategy) expect((await call("PUT", `/admin/pools/${pool}`, { token: await admin(), body: { strategy } })).status).toBe(200);
  return { pool, big, small };
}

describe("the pick: smallest fitting device first", () => {
  it("a 2-core request gets the free 2-core device on the busier node, not the 4-core one on the quiet node", async () => {
    for (const strategy of [undefined, "spread", "bin-pack"]) {
      const { pool, small } = await fleet(strategy);
      const r = await allocate(pool, { cpuCores: 2 });
      expect(r.status, `${strategy}: ${JSON.stringify(r.body)}`).toBe(201);
      expect(r.body.deviceId, strategy).toBe(small.deviceId);
      expect(r.body.spec?.cpuCores ?? r.body.cpuCores).toBe(2);
    }
  });

  it("load-first puts the node before size: the quiet node's 4-core device", async () => {
    const { pool, big } = await fleet("load-first");
    const r = await allocate(pool, { cpuCores: 2 });
    expect(r.status).toBe(201);
    expect(r.body.deviceId).toBe(big.deviceId);
  });

  it("asking for more than the small class takes the next size up", async () => {
    const { pool, big } = await fleet();
    const r = await allocate(pool, { cpuCores: 3 });
    expect(r.status).toBe(201);
    expect(r.body.deviceId).toBe(big.deviceId);
  });
});

describe("when the quota, not the fleet, rules out the free devices", () => {
  it("allocate answers NO_DEVICE_WITHIN_QUOTA with the room per device and the smallest free device", async () => {
    const pool = uid("fit");
    await registerDevice(pool, EIGHT);
    await registerDevice(pool, EIGHT);
    // A new user is on the free tier: at most 4 cores per device.
    const r = await allocate(pool, { cpuCores: 2 });
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe("NO_DEVICE_WITHIN_QUOTA");
    expect(r.body.error.message).toContain(`2 devices free match your request in pool "${pool}"`);
    expect(r.body.error.message).toContain("at most 4 cores");
    expect(r.body.error.message).toContain("the smallest is 8 cores, 16384 MB memory, 65536 MB storage");
    expect(r.body.error.details).toMatchObject({ pool, devices: 2, room: { cpuCores: 4 }, smallest: EIGHT, spec: { cpuCores: 2 } });
  });

  it("with every fitting device held it is still NO_DEVICE_AVAILABLE (the fleet is the reason)", async () => {
    const pool = uid("fit");
    await registerDevice(pool, TWO);
    expect((await allocate(pool, { cpuCores: 2 })).status).toBe(201);
    const r = await allocate(pool, { cpuCores: 2 });
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe("NO_DEVICE_AVAILABLE");
  });

  it("joining the queue: NO_DEVICE_WITHIN_QUOTA when only larger devices are in service, NO_MATCHING_DEVICE when none match", async () => {
    const pool = uid("fit");
    await registerDevice(pool, EIGHT);
    const token = await tokenFor(uid("u"));
    const join = (spec: Record<string, number>) => call("POST", "/scheduler/queue/join", { token, body: { pool, spec } });
    const tooBig = await join({ cpuCores: 2 });
    expect(tooBig.status).toBe(409);
    expect(tooBig.body.error.code).toBe("NO_DEVICE_WITHIN_QUOTA");
    expect(tooBig.body.error.message).toContain("1 device in service matches your request");
    expect(tooBig.body.error.message).toContain("waiting would never give you one");
    const none = await join({ cpuCores: 16 });
    // 16 cores is over the free tier's per-device limit itself: the quota refuses before the pool looks.
    expect(none.body.error.code).toBe("QUOTA_PER_DEVICE_EXCEEDED");
    const other = uid("fit");
    await registerDevice(other, TWO);
    const bigger = await call("POST", "/scheduler/queue/join", { token, body: { pool: other, spec: { cpuCores: 3 } } });
    expect(bigger.status).toBe(409);
    expect(bigger.body.error.code).toBe("NO_MATCHING_DEVICE");
    expect(bigger.body.error.message).toBe(
      `No device in pool "${other}" that is in service matches the request, so waiting would never end.`,
    );
  });
});
