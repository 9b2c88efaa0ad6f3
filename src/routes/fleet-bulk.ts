/**
 * POST /admin/devices/bulk: up to FLEET.bulkMaxItems registrations or updates in one request,
 * idempotent by deviceId. The body was validated whole before this runs (one bad item refuses the
 * request: nothing of an import with a typo is applied). Then:
 *
 * 1. one D1 query finds which devices are registered, and one D1 batch enters the new ones and
 *    their pools (before their objects are first addressed, as the single route does);
 * 2. each item, at most FLEET.bulkConcurrency at a time, is one call to its device when new
 *    (register) and two when it exists (read, then update only what differs: `changesTo`): the
 *    Device stays the one truth and applies the single routes' rules (a pool or spec change of an
 *    allocated device is that item's 409 DEVICE_BUSY);
 * 3. one D1 batch writes an audit row per device created or updated.
 *
 * Each item is atomic on its own; there is no rollback across items. A device registered by a
 * concurrent request between steps 1 and 2 answers DEVICE_EXISTS and is then handled as existing.
 */
import type { Context } from "hono";
import type { AppEnv } from "../auth";
import { auditEntry, recordAudits, type AuditEntry } from "../audit";
import { DEFAULT_NODE, FLEET } from "../config";
import { mapBounded } from "../bounded";
import { changesTo, type BulkDevice } from "../domain/fleet";
import type { DeviceInfo, DevicePatch } from "../domain/types";
import { HttpError, errorBody, internalFailure, type Result } from "../errors";
import { enterDevices, moveDevice, registeredDevices } from "../registry";
import { take } from "../rpc";
import { device, stored } from "./helpers";

type Outcome = "created" | "updated" | "unchanged";
type ItemResult =
  | { index: number; deviceId: string; ok: true; status: 200 | 201; outcome: Outcome; changed: string[] }
  | { index: number; deviceId: string; ok: false; status: number; error: ReturnType<typeof errorBody>["error"] };

export interface BulkAnswer {
  results: ItemResult[];
  created: number;
  updated: number;
  unchanged: number;
  failed: number;
}

type Done = { outcome: Outcome; patch: DevicePatch | null; device: DeviceInfo };

export async function runBulk(c: Context<AppEnv>, items: BulkDevice[]): Promise<BulkAnswer> {
  const env = c.env;
  const known = await stored(() =>
    registeredDevices(
      env,
      items.map((i) => i.deviceId),
    ),
  );
  await stored(() =>
    enterDevices(
      env,
      items.filter((i) => !known.has(i.deviceId)),
    ),
  );
  const audits: AuditEntry[] = [];
  const results = await mapBounded(items, FLEET.bulkConcurrency, async (item, index): Promise<ItemResult> => {
    let r: Result<Done>;
    try {
      r = await upsert(c, item, known.has(item.deviceId));
    } catch (err) {
      r = err instanceof HttpError ? err.failure : internalFailure(err, { requestId: c.get("requestId"), path: c.req.path, index });
    }
    if (!r.ok) return { index, deviceId: item.deviceId, ok: false, status: r.status, error: errorBody(r).error };
    const { outcome, patch, device: d } = r.value;
    if (outcome === "created")
      audits.push(auditEntry(c, "device.register", `device:${item.deviceId}`, { ...item, node: d.node, bulk: true }));
    if (outcome === "updated") audits.push(auditEntry(c, "device.update", `device:${item.deviceId}`, { ...patch, bulk: true }));
    const changed = patch ? Object.keys(patch) : [];
    return { index, deviceId: item.deviceId, ok: true, status: outcome === "created" ? 201 : 200, outcome, changed };
  });
  await recordAudits(env, audits);
  const count = (o: Outcome) => results.filter((x) => x.ok && x.outcome === o).length;
  return {
    results,
    created: count("created"),
    updated: count("updated"),
    unchanged: count("unchanged"),
    failed: results.filter((x) => !x.ok).length,
  };
}

/** One item: registered when new, else brought to what the item says (fields it leaves out stay). */
async function upsert(c: Context<AppEnv>, item: BulkDevice, existing: boolean): Promise<Result<Done>> {
  const stub = device(c.env, item.deviceId);
  if (!existing) {
    const r = (await take(stub.register({ ...item, node: item.node ?? DEFAULT_NODE }))) as Result<DeviceInfo>;
    if (r.ok) return { ok: true, value: { outcome: "created", patch: null, device: r.value } };
    if (r.code !== "DEVICE_EXISTS") return r;
  }
  const now = (await take(stub.get())) as Result<DeviceInfo>;
  // Registered in D1 but gone from its object (a removal finishing): register it again.
  if (!now.ok && now.code === "DEVICE_NOT_FOUND") return existing ? upsert(c, item, false) : now;
  if (!now.ok) return now;
  const patch = changesTo(now.value, item);
  if (!patch) return { ok: true, value: { outcome: "unchanged", patch: null, device: now.value } };
  const u = (await take(stub.update(patch))) as Result<DeviceInfo>;
  if (!u.ok) return u;
  if (patch.pool !== undefined) await stored(() => moveDevice(c.env, item.deviceId, patch.pool!));
  return { ok: true, value: { outcome: "updated", patch, device: u.value } };
}
