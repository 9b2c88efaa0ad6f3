/**
 * POST /admin/devices/bulk (issue 20): 500 registrations in one request, a repeat that changes
 * nothing, updates of what differs, a body validated whole first (one bad item: nothing done,
 * every failing path named), and a partial failure (an allocated device's spec) that fails alone.
 */
import { describe, expect, it } from "vitest";
import { admin, call, tokenFor, uid } from "./helpers";

const asAdmin = async (method: string, path: string, body?: unknown) => call(method, path, { token: await admin(), body });
const bulk = (devices: unknown[]) => asAdmin("POST", "/admin/devices/bulk", { devices });

type Result = { index: number; deviceId: string; ok: boolean; status: number; outcome?: string; changed?: string[]; error?: any };

const item = (run: string, pool: string, n: number) => ({
  deviceId: `${run}-${n}`,
  pool,
  node: `node-${n % 4}`,
  cpuCores: 2,
  memoryMB: 4096,
  storageMB: 32768,
  name: `Bulk phone number ${n}`,
  model: n % 2 ? "Pixel 8 Pro" : "Galaxy S24 Ultra",
  osVersion: "Android 14",
  labels: { run, rack: `rack-${n % 10}`, shelf: `shelf-${n % 7}` },
});

async function walkAll(query: string): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const r = await asAdmin("GET", `/admin/devices?${query}&limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    ids.push(...r.body.items.map((d: { deviceId: string }) => d.deviceId));
    cursor = r.body.nextCursor;
  } while (cursor);
  return ids;
}

describe("POST /admin/devices/bulk", () => {
  it("registers 500 devices over pools in one request, and a repeat changes nothing", async () => {
    const run = uid("bulk").replace(/[^A-Za-z0-9-]/g, "");
    const pools = [uid("bulk-a"), uid("bulk-b")];
    const devices = Array.from({ length: 500 }, (_, n) => item(run, pools[n % 2]!, n));
    // Over the 64 KB every other body is held to.
    expect(JSON.stringify({ devices }).length).toBeGreaterThan(64 * 1024);

    const started = Date.now();
    const r = await bulk(devices);
    const ms = Date.now() - started;
    expect(r.status, JSON.stringify(r.body).slice(0, 500)).toBe(200);
    expect(r.body).toMatchObject({ created: 500, updated: 0, unchanged: 0, failed: 0 });
    expect(r.body.results.map((x: Result) => x.deviceId)).toEqual(devices.map((d) => d.deviceId));
    expect(r.body.results[0]).toEqual({ index: 0, deviceId: `${run}-0`, ok: true, status: 201, outcome: "created", changed: [] });
    expect(ms).toBeLessThan(30_000);

    // Every one is registered, with its metadata, and listed by the fleet in natural order.
    const one = (await asAdmin("GET", `/admin/devices/${run}-7`)).body;
    expect(one).toMatchObject({ pool: pools[1], node: "node-3", name: "Bulk phone number 7", labels: devices[7]!.labels });
    const listed = await walkAll(`label=run:${run}`);
    expect(listed).toEqual(devices.map((d) => d.deviceId));
    expect((await asAdmin("GET", `/admin/pools/${pools[0]}`)).body.devices).toBe(250);

    // The same request again: no error, nothing changed.
    const again = await bulk(devices);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ created: 0, updated: 0, unchanged: 500, failed: 0 });
    expect(again.body.results.every((x: Result) => x.ok && x.status === 200 && x.outcome === "unchanged")).toBe(true);
    expect((await asAdmin("GET", `/admin/devices/${run}-7`)).body.updatedAt).toBe(one.updatedAt);

    // Audited once per device created, none for the repeat.
    const audit = await asAdmin("GET", `/admin/audit?target=device:${run}-7`);
    expect(audit.body.items.map((a: { action: string }) => a.action)).toEqual(["device.register"]);
  });

  it("updates what differs and leaves out what the item leaves out; a new device beside them is created", async () => {
    const run = uid("bulk-upd");
    const pool = uid("bulk-upd-pool");
    const other = uid("bulk-upd-other");
    const first = [0, 1, 2].map((n) => item(run, pool, n));
    expect((await bulk(first)).body).toMatchObject({ created: 3 });

    const { node: _node, name: _name, model: _model, osVersion: _os, labels: _labels, ...bare } = first[2]!;
    const r = await bulk([
      { ...first[0], labels: { run, rack: "rack-9" }, osVersion: "Android 15" },
      { ...first[1], pool: other, cpuCores: 4 },
      bare,
      item(run, pool, 3),
    ]);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ created: 1, updated: 2, unchanged: 1, failed: 0 });
    expect(r.body.results.map((x: Result) => [x.outcome, x.changed])).toEqual([
      ["updated", ["osVersion", "labels"]],
      ["updated", ["pool", "cpuCores"]],
      ["unchanged", []],
      ["created", []],
    ]);
    expect((await asAdmin("GET", `/admin/devices/${run}-0`)).body).toMatchObject({
      osVersion: "Android 15",
      labels: { rack: "rack-9", run },
    });
    expect((await asAdmin("GET", `/admin/devices/${run}-1`)).body).toMatchObject({ pool: other, cpuCores: 4 });
    // The fields the bare item left out stayed.
    expect((await asAdmin("GET", `/admin/devices/${run}-2`)).body).toMatchObject({ node: "node-2", name: first[2]!.name });
    // The moved device is listed by its new pool, once.
    expect(await walkAll(`label=run:${run}`)).toEqual([0, 1, 2, 3].map((n) => `${run}-${n}`));
    expect((await asAdmin("GET", `/admin/devices?pool=${other}`)).body.items.map((d: { deviceId: string }) => d.deviceId)).toEqual([
      `${run}-1`,
    ]);
    const audit = await asAdmin("GET", `/admin/audit?target=device:${run}-1`);
    expect(audit.body.items[0]).toMatchObject({ action: "device.update", change: { pool: other, cpuCores: 4, bulk: true } });
  });

  it("validates the whole body first: one bad item refuses the request with every failing path, and nothing is done", async () => {
    const run = uid("bulk-bad");
    const pool = uid("bulk-bad-pool");
    const devices: unknown[] = Array.from({ length: 6 }, (_, n) => item(run, pool, n));
    devices[1] = { ...(devices[1] as object), labels: { "bad key": "v" } };
    devices[3] = { ...(devices[3] as object), colour: "red" };
    devices[4] = { ...(devices[4] as object), cpuCores: 0 };
    devices.push({ ...(devices[0] as object) });
    const r = await bulk(devices);
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe("VALIDATION_FAILED");
    const paths = r.body.error.details.issues.map((i: { path: string }) => i.path);
    expect(paths).toEqual(expect.arrayContaining(["devices.1.labels.bad key", "devices.3", "devices.4.cpuCores", "devices.6.deviceId"]));
    for (let n = 0; n < 6; n++) expect((await asAdmin("GET", `/admin/devices/${run}-${n}`)).status).toBe(404);
    expect((await asAdmin("GET", `/admin/pools/${pool}`)).status).toBe(404);

    for (const body of [
      {},
      { devices: [] },
      { devices: Array.from({ length: 501 }, (_, n) => item(run, pool, n)) },
      { devices: [], x: 1 },
    ]) {
      const e = await asAdmin("POST", "/admin/devices/bulk", body);
      expect(e.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect(e.body.error.code).toBe("VALIDATION_FAILED");
    }
    // A user may not; nobody without a token.
    expect((await call("POST", "/admin/devices/bulk", { token: await tokenFor(uid("u")), body: { devices: [] } })).status).toBe(403);
    expect((await call("POST", "/admin/devices/bulk", { body: { devices: [] } })).status).toBe(401);
  });

  it("a partial failure: the item the device refuses fails alone, the others are done", async () => {
    const run = uid("bulk-part");
    const pool = uid("bulk-part-pool");
    expect((await bulk([item(run, pool, 0)])).body).toMatchObject({ created: 1 });
    const user = uid("bulk-holder");
    const a = await call("POST", "/scheduler/devices/allocate", { token: await tokenFor(user), body: { pool } });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    const r = await bulk([{ ...item(run, pool, 0), cpuCores: 8 }, item(run, pool, 1), { ...item(run, pool, 2), name: "Third" }]);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ created: 2, updated: 0, unchanged: 0, failed: 1 });
    expect(r.body.results[0]).toMatchObject({ index: 0, deviceId: `${run}-0`, ok: false, status: 409, error: { code: "DEVICE_BUSY" } });
    expect(r.body.results[0].error.message).toMatch(/allocated/);
    expect(r.body.results.slice(1).map((x: Result) => x.outcome)).toEqual(["created", "created"]);
    // The refused item changed nothing; the allocation runs on.
    expect((await asAdmin("GET", `/admin/devices/${run}-0`)).body).toMatchObject({ cpuCores: 2, status: "allocated" });
    // Metadata of an allocated device may change (as with PATCH).
    const meta = await bulk([{ ...item(run, pool, 0), name: "Renamed while held" }]);
    expect(meta.body.results[0]).toMatchObject({ ok: true, outcome: "updated", changed: ["name"] });
  });
});
