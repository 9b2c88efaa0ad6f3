/**
 * The fleet's pure rules (GET /admin/devices, POST /admin/devices/bulk): the natural order of
 * device ids, the list's cursor, merging the pools' pages, labels in one spelling, and what a bulk
 * item changes on an existing device.
 */
import type { DeviceInfo, DeviceMeta, DevicePatch, DeviceSpec } from "./types";

/**
 * The key device ids sort by, so that `us-std-2` comes before `us-std-10`: each run of digits
 * becomes its length (three digits) and its digits without leading zeros. Compared as plain text
 * (SQLite's BINARY), keys order the numbers by value and everything else as the id does; ids whose
 * keys are equal (`d-7`, `d-007`) are ordered by the id itself.
 */
export function naturalKey(id: string): string {
  return id.replace(/\d+/g, (run) => {
    const digits = run.replace(/^0+(?=\d)/, "");
    return String(digits.length).padStart(3, "0") + digits;
  });
}

/** Natural order of two names (`dev-2` before `dev-10`): natural key, then the name itself. */
export function naturalOrder(a: string, b: string): number {
  const ka = naturalKey(a);
  const kb = naturalKey(b);
  if (ka !== kb) return ka < kb ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The fleet order (the API's, the console's and the CLI's): natural order of the device ids. */
export const byNaturalId = (a: { deviceId: string }, b: { deviceId: string }): number => naturalOrder(a.deviceId, b.deviceId);

// ---- the cursor ---------------------------------------------------------------------------------

const CURSOR_PREFIX = "n1.";
const ID = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

/** The cursor after `deviceId`: opaque to clients (the id, base64url, with a version prefix). */
export function fleetCursor(deviceId: string): string {
  const b64 = btoa(deviceId).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return `${CURSOR_PREFIX}${b64}`;
}

/** The device id a cursor continues after (null: not a cursor of this list). */
export function cursorId(cursor: string): string | null {
  if (!cursor.startsWith(CURSOR_PREFIX)) return null;
  const body = cursor.slice(CURSOR_PREFIX.length);
  if (!/^[A-Za-z0-9_-]{1,200}$/.test(body)) return null;
  let id: string;
  try {
    id = atob(body.replace(/-/g, "+").replace(/_/g, "/"));
  } catch {
    return null;
  }
  return ID.test(id) && fleetCursor(id) === cursor ? id : null;
}

// ---- merging the pools' pages --------------------------------------------------------------------

/** A pool's page: its first devices after the cursor, in fleet order, and whether it has more. */
export interface PoolPage<T> {
  items: T[];
  more: boolean;
}

/**
 * One page over every pool: the pools' items in fleet order, cut to `limit`. Each pool answers
 * its first `limit` after the cursor, so the first `limit` of the union are the fleet's. A device
 * listed by two pools (it moved, and the old pool has not heard yet) is listed once, as the
 * newer version says. `nextCursor` is null once no pool has more.
 */
export function mergeFleet<T extends { deviceId: string; version: number }>(
  pages: PoolPage<T>[],
  limit: number,
): { items: T[]; nextCursor: string | null } {
  const newest = new Map<string, T>();
  for (const item of pages.flatMap((p) => p.items)) {
    const seen = newest.get(item.deviceId);
    if (!seen || item.version > seen.version) newest.set(item.deviceId, item);
  }
  const all = [...newest.values()].sort(byNaturalId);
  const items = all.slice(0, limit);
  const more = all.length > limit || pages.some((p) => p.more);
  return { items, nextCursor: more && items.length > 0 ? fleetCursor(items[items.length - 1]!.deviceId) : null };
}

// ---- labels and filters -------------------------------------------------------------------------

/** Labels in one spelling: keys in order (so equal maps are equal text). */
export function canonicalLabels(labels: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** `key:value` (the query's `label`) as its parts: the key ends at the first colon (keys have none). */
export function labelFilter(s: string): { key: string; value: string } {
  const i = s.indexOf(":");
  return { key: s.slice(0, i), value: s.slice(i + 1) };
}

// ---- bulk -------------------------------------------------------------------------------------------

/** A bulk item: what the device should be; fields it leaves out stay as they are on an existing device. */
export type BulkDevice = { deviceId: string; pool: string; node?: string } & DeviceSpec & Partial<DeviceMeta>;

/** What `item` changes on `current` (null: nothing; the item is already true). */
export function changesTo(current: DeviceInfo, item: BulkDevice): DevicePatch | null {
  const patch: DevicePatch = {};
  if (item.pool !== current.pool) patch.pool = item.pool;
  if (item.node !== undefined && item.node !== current.node) patch.node = item.node;
  if (item.cpuCores !== current.cpuCores) patch.cpuCores = item.cpuCores;
  if (item.memoryMB !== current.memoryMB) patch.memoryMB = item.memoryMB;
  if (item.storageMB !== current.storageMB) patch.storageMB = item.storageMB;
  if (item.name !== undefined && item.name !== current.name) patch.name = item.name;
  if (item.model !== undefined && item.model !== current.model) patch.model = item.model;
  if (item.osVersion !== undefined && item.osVersion !== current.osVersion) patch.osVersion = item.osVersion;
  if (item.labels !== undefined && !sameLabels(item.labels, current.labels)) patch.labels = item.labels;
  return Object.keys(patch).length > 0 ? patch : null;
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  return JSON.stringify(canonicalLabels(a)) === JSON.stringify(canonicalLabels(b));
}
