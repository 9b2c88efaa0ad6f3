/**
 * The fleet (issue 20): device metadata (name, model, osVersion, labels) on registration and
 * update, kept by the Device and shown in its views and its pool's lists; GET /admin/devices over
 * every pool with each filter, natural order and cursor pages that cover the fleet once (also while
 * devices change between pages), served from the pools' indexes without asking any device.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { admin, call, registerDevice, tokenFor, uid } from "./helpers";

type Fleet = {
  deviceId: string;
  pool: string;
  node: string;
  status: string;
  name: string | null;
  model: string | null;
  osVersion: string | null;
  labels: Record<string, string>;
  userId: string | null;
};

const asAdmin = async (method: string, path: string, body?: unknown) => call(method, path, { token: await admin(), body });

async function fleet(query: string): Promise<{ items: Fleet[]; nextCursor: string | null }> {
  const r = await asAdmin("GET", `/admin/devices${query ? `?${query}` : ""}`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}

/** Every page of `query` (limit `limit`), and the ids in the order listed. */
async function walk(query: string, limit: number, between?: (page: number) => Promise<void>): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 1000; page++) {
    const p = await fleet(`${query}&limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    expect(p.items.length).toBeLessThanOrEqual(limit);
    ids.push(...p.items.map((d) => d.deviceId));
    if (!p.nextCursor) return ids;
    cursor = p.nextCursor;
    await between?.(page);
  }
  throw new Error("too many pages");
}

describe("device metadata", () => {
  it("is accepted on registration and update, kept by the device, and shown in every device view", async () => {
    const pool = uid("meta");
    const r = await asAdmin("POST", "/admin/devices", {
      deviceId: uid("meta-dev"),
      pool,
      cpuCores: 2,
      memoryMB: 4096,
      storageMB: 32768,
      name: "Pixel 8 #12",
      model: "Pixel 8",
      osVersion: "Android 14",
      labels: { tier: "gold", region: "eu-west" },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const id = r.body.deviceId as string;
    const meta = { name: "Pixel 8 #12", model: "Pixel 8", osVersion: "Android 14", labels: { region: "eu-west", tier: "gold" } };
    expect(r.body).toMatchObject(meta);
    // Keys in order, whatever order they were sent in.
    expect(Object.keys(r.body.labels)).toEqual(["region", "tier"]);
    expect((await asAdmin("GET", `/admin/devices/${id}`)).body).toMatchObject(meta);
    const listed = (await asAdmin("GET", `/admin/pools/${pool}/devices`)).body.items;
    expect(listed).toEqual([expect.objectContaining({ deviceId: id, ...meta })]);
    expect((await fleet(`pool=${pool}`)).items).toEqual([expect.objectContaining({ deviceId: id, pool, ...meta })]);

    // An update: null clears a text field, labels are replaced whole, absent fields stay.
    const u = await asAdmin("PATCH", `/admin/devices/${id}`, { name: null, labels: { rack: "r-7" } });
    expect(u.status, JSON.stringify(u.body)).toBe(200);
    const after = { name: null, model: "Pixel 8", osVersion: "Android 14", labels: { rack: "r-7" } };
    expect(u.body).toMatchObject(after);
    expect((await asAdmin("GET", `/admin/devices/${id}`)).body).toMatchObject(after);
    expect((await fleet(`pool=${pool}`)).items[0]).toMatchObject(after);

    // Metadata may change while the device is allocated (only pool and spec may not); the pool hears it.
    const user = uid("meta-user");
    const a = await call("POST", "/scheduler/devices/allocate", { token: await tokenFor(user), body: { pool } });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    const busy = await asAdmin("PATCH", `/admin/devices/${id}`, { osVersion: "Android 15" });
    expect(busy.status, JSON.stringify(busy.body)).toBe(200);
    expect((await fleet(`pool=${pool}`)).items[0]).toMatchObject({ osVersion: "Android 15", status: "allocated", userId: user });
    // A claim's answer carries no metadata; the index keeps what the device pushed.
    expect((await fleet(`pool=${pool}`)).items[0]).toMatchObject({ model: "Pixel 8", labels: { rack: "r-7" } });

    // A device registered without any: nulls and {}.
    const bare = await registerDevice(pool);
    expect((await asAdmin("GET", `/admin/devices/${bare.deviceId}`)).body).toMatchObject({
      name: null,
      model: null,
      osVersion: null,
      labels: {},
    });
  });

  it("refuses bad names, models, OS versions, labels and unknown keys with the failing paths, and changes nothing", async () => {
    const pool = uid("meta-bad");
    const base = { pool, cpuCores: 1, memoryMB: 1024, storageMB: 1024 };
    const tooMany = Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`k${i}`, "v"]));
    const cases: [Record<string, unknown>, string][] = [
      [{ name: "x".repeat(101) }, "name"],
      [{ name: "" }, "name"],
      [{ name: " padded" }, "name"],
      [{ name: "tab\there" }, "name"],
      [{ model: "bell\u0007" }, "model"],
      [{ osVersion: "v".repeat(51) }, "osVersion"],
      [{ labels: tooMany }, "labels"],
      [{ labels: { "bad key": "v" } }, "labels.bad key"],
      [{ labels: { "-lead": "v" } }, "labels.-lead"],
      [{ labels: { ["k".repeat(64)]: "v" } }, `labels.${"k".repeat(64)}`],
      [{ labels: { ok: "has space" } }, "labels.ok"],
      [{ labels: { ok: "" } }, "labels.ok"],
      [{ labels: { ok: "v".repeat(129) } }, "labels.ok"],
      [{ labels: { ok: 7 } }, "labels.ok"],
      [{ labels: ["a"] }, "labels"],
      [{ colour: "red" }, ""],
    ];
    for (const [extra, path] of cases) {
      const deviceId = uid("meta-bad-dev");
      const r = await asAdmin("POST", "/admin/devices", { deviceId, ...base, ...extra });
      expect(r.status, JSON.stringify(extra)).toBe(400);
      expect(r.body.error.code).toBe("VALIDATION_FAILED");
      expect(r.body.error.details.issues.map((i: { path: string }) => i.path)).toContain(path);
      if (path === "") expect(r.body.error.message).toMatch(/Unrecognized key/);
      expect((await asAdmin("GET", `/admin/devices/${deviceId}`)).status).toBe(404);
    }
    // Twenty labels at the longest are fine.
    const most = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`.padEnd(63, "x"), "v".repeat(128)]));
    const ok = await asAdmin("POST", "/admin/devices", { ...base, labels: most, name: "n".repeat(100) });
    expect(ok.status, JSON.stringify(ok.body)).toBe(201);
    // The same checks on update, and nothing changes.
    for (const [extra, path] of cases) {
      const r = await asAdmin("PATCH", `/admin/devices/${ok.body.deviceId}`, extra);
      expect(r.status, JSON.stringify(extra)).toBe(400);
      expect(r.body.error.details.issues.map((i: { path: string }) => i.path)).toContain(path);
    }
    expect((await asAdmin("GET", `/admin/devices/${ok.body.deviceId}`)).body).toMatchObject({ labels: most, name: "n".repeat(100) });
  });
});

describe("GET /admin/devices", () => {
  const run = uid("run").replace(/[^A-Za-z0-9]/g, "");
  const pools = [uid("fleet-a"), uid("fleet-b"), uid("fleet-c")];
  // Ids that sort differently as text and as numbers, spread over the pools.
  const numbers = [1, 2, 3, 9, 10, 11, 20, 100, 101];
  const ids = numbers.map((n) => `${run}-dev-${n}`);
  const user = uid("fleet-holder");
  let holding: string;

  beforeAll(async () => {
    await Promise.all(
      ids.map((deviceId, i) =>
        registerDevice(pools[i % 3]!, {
          deviceId,
          node: i % 2 ? "node-odd" : "node-even",
          ...({
            name: `Phone ${numbers[i]}`,
            model: i < 3 ? "Galaxy S24" : "Pixel 8",
            labels: { run, tier: i % 3 === 0 ? "gold" : "silver", region: i < 5 ? "eu" : "us" },
          } as object),
        }),
      ),
    );
    // One in maintenance, one held by `user`.
    expect((await asAdmin("POST", `/admin/devices/${ids[3]}/maintenance`)).status).toBe(200);
    const a = await call("POST", "/scheduler/devices/allocate", { token: await tokenFor(user), body: { pool: pools[1] } });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    holding = a.body.deviceId;
  });

  const mine = `label=run:${run}`;
  const listed = async (query: string) => (await fleet(`${mine}&limit=200&${query}`)).items.map((d) => d.deviceId);

  it("lists every pool's devices in natural order of their ids", async () => {
    const p = await fleet(`${mine}&limit=200`);
    expect(p.items.map((d) => d.deviceId)).toEqual(ids);
    expect(p.nextCursor).toBeNull();
    expect(new Set(p.items.map((d) => d.pool))).toEqual(new Set(pools));
    expect(p.items[0]).toMatchObject({ pool: pools[0], node: "node-even", name: "Phone 1", model: "Galaxy S24", status: "available" });
    // As text, 10 would come before 2.
    expect([...ids].sort()).not.toEqual(ids);
  });

  it("filters by pool, status, node, labels (all must match), holder and text", async () => {
    expect(await listed(`pool=${pools[0]}`)).toEqual(ids.filter((_, i) => i % 3 === 0));
    expect(await listed("status=maintenance")).toEqual([ids[3]]);
    expect(await listed("status=allocated")).toEqual([holding]);
    expect(await listed(`holder=${user}`)).toEqual([holding]);
    expect(await listed(`holder=${uid("nobody")}`)).toEqual([]);
    expect(await listed("node=node-odd")).toEqual(ids.filter((_, i) => i % 2 === 1));
    expect(await listed("label=tier:gold")).toEqual(ids.filter((_, i) => i % 3 === 0));
    expect(await listed("label=tier:gold&label=region:eu")).toEqual([ids[0], ids[3]]);
    expect(await listed("label=tier:platinum")).toEqual([]);
    // Text: in the id, the name or the model, any case.
    expect(await listed("q=galaxy")).toEqual(ids.slice(0, 3));
    expect(await listed("q=PHONE%2010")).toEqual([ids[4], ids[7], ids[8]]);
    expect(await listed(`q=${run}-DEV-2`)).toEqual([ids[1], ids[6]]);
    // Combined with a pool: one pool asked.
    expect(await listed(`pool=${pools[1]}&node=node-odd`)).toEqual(ids.filter((_, i) => i % 3 === 1 && i % 2 === 1));
  });

  it("pages with a cursor that covers the fleet once, across pools, also while devices change between pages", async () => {
    for (const limit of [1, 2, 4]) expect(await walk(mine, limit)).toEqual(ids);
    // Status changes between pages (one already listed, one still to come) move nothing in the order.
    const changed = await walk(mine, 2, async (page) => {
      if (page !== 0) return;
      expect((await asAdmin("POST", `/admin/devices/${ids[0]}/offline`)).status).toBe(200);
      expect((await asAdmin("POST", `/admin/devices/${ids[8]}/maintenance`)).status).toBe(200);
    });
    expect(changed).toEqual(ids);
    expect((await asAdmin("POST", `/admin/devices/${ids[0]}/online`)).status).toBe(200);
    expect((await asAdmin("POST", `/admin/devices/${ids[8]}/online`)).status).toBe(200);
    // The whole fleet (every test's devices here): each once, in natural order.
    const all = await walk("", 7);
    expect(new Set(all).size).toBe(all.length);
    expect(all.filter((id) => ids.includes(id))).toEqual(ids);
  });

  it("is served from the pools' indexes: no device object is asked", async () => {
    // Make one pool's index say something its device does not: the list shows the index's word.
    const stub = env.DEVICE_POOL.getByName(pools[2]!);
    await runInDurableObject(stub, (_instance, state) => {
      state.storage.sql.exec("UPDATE devices SET name = 'from the index' WHERE device_id = ?", ids[2]!);
    });
    const d = (await fleet(`${mine}&limit=200`)).items.find((x) => x.deviceId === ids[2]);
    expect(d?.name).toBe("from the index");
    // The device itself (GET one device asks it) still says its own.
    expect((await asAdmin("GET", `/admin/devices/${ids[2]}`)).body.name).toBe("Phone 3");
    // The next state the device pushes puts the index right again.
    expect((await asAdmin("PATCH", `/admin/devices/${ids[2]}`, { osVersion: "14" })).status).toBe(200);
    expect((await fleet(`${mine}&limit=200`)).items.find((x) => x.deviceId === ids[2])?.name).toBe("Phone 3");
  });

  it("refuses an unknown pool, a forged cursor and bad filters", async () => {
    const unknown = await asAdmin("GET", `/admin/devices?pool=${uid("nowhere")}`);
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe("POOL_NOT_FOUND");
    for (const q of [
      "cursor=abc",
      `cursor=n1.${btoa("../x")}`,
      "label=nocolon",
      "label=:v",
      "label=k:",
      "label=bad key:v",
      "status=removed",
      "limit=0",
      "limit=201",
      "q=",
      "colour=red",
      Array.from({ length: 21 }, (_, i) => `label=k${i}:v`).join("&"),
    ]) {
      const r = await asAdmin("GET", `/admin/devices?${q}`);
      expect(r.status, q).toBe(400);
      expect(r.body.error.code).toBe("VALIDATION_FAILED");
    }
    const user = await call("GET", "/admin/devices", { token: await tokenFor(uid("plain")) });
    expect(user.status).toBe(403);
  });
});
