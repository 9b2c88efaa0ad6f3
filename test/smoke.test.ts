import { describe, expect, it } from "vitest";
import { call, registerDevice, tokenFor, uid } from "./helpers";

describe("allocate → release", () => {
  it("allocates a device and releases it", async () => {
    const pool = uid("pool");
    const dev = await registerDevice(pool);
    const token = await tokenFor(uid("user"));
    const a = await call("POST", "/scheduler/devices/allocate", { token, body: { pool, durationMinutes: 5 } });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    expect(a.body.deviceId).toBe(dev.deviceId);
    const r = await call("POST", "/scheduler/devices/release", { token, body: { deviceId: dev.deviceId } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.allocationId).toBe(a.body.allocationId);
  });
});
