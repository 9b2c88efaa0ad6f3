/**
 * The pool's side of the fleet list (GET /admin/devices): its index's devices, filtered, in the
 * fleet's natural order (a stored sort key, `naturalKey` of the id), after a cursor. Read from the
 * index alone: no device object is asked. The index's rows get the metadata columns and the sort
 * key from the pool's migration 3; `IndexStore.apply` writes them with every state a device pushes.
 * Synchronous, over the pool's SQL.
 */
import type { FleetEntry, FleetFilter } from "../contracts";
import { naturalKey } from "../domain/fleet";
import type { Sql } from "../objects/sql";
import { metaOf, type MetaColumns } from "./device-meta";
import type { IndexRow } from "./pool-index";

/**
 * Pool migration 3: the devices' metadata (labels NULL: not heard yet; a row before this
 * migration has none until its device next reports) and the natural sort key (NULL for rows
 * before it: filled in by `FleetStore.backfill` before the first list).
 */
export const FLEET_SCHEMA = `ALTER TABLE devices ADD COLUMN name TEXT;
  ALTER TABLE devices ADD COLUMN model TEXT;
  ALTER TABLE devices ADD COLUMN os_version TEXT;
  ALTER TABLE devices ADD COLUMN labels TEXT;
  ALTER TABLE devices ADD COLUMN sort_key TEXT;
  CREATE INDEX devices_sort ON devices(sort_key, device_id);`;

/** An index row with its metadata columns (this migration's). */
type FleetRow = IndexRow & MetaColumns;

export class FleetStore {
  constructor(private readonly sql: Sql) {}

  /** Rows written before migration 3 get their sort key (a no-op once every row has one). */
  backfill(): void {
    const rows = this.sql.all<{ device_id: string }>("SELECT device_id FROM devices WHERE sort_key IS NULL");
    for (const r of rows) this.sql.exec("UPDATE devices SET sort_key = ? WHERE device_id = ?", naturalKey(r.device_id), r.device_id);
  }

  /** The first `limit` devices after `after` that pass every filter, in natural order, and whether there are more. */
  page(pool: string, f: FleetFilter): { items: FleetEntry[]; more: boolean } {
    this.backfill();
    const where: string[] = ["(sort_key, device_id) > (?, ?)"];
    const args: (string | number)[] = f.after === undefined ? ["", ""] : [naturalKey(f.after), f.after];
    if (f.status) (where.push("status = ?"), args.push(f.status));
    if (f.node) (where.push("node = ?"), args.push(f.node));
    if (f.holder) (where.push("user_id = ?"), args.push(f.holder));
    if (f.q) {
      const q = f.q.toLowerCase();
      where.push("(instr(lower(device_id), ?) > 0 OR instr(lower(coalesce(name, '')), ?) > 0 OR instr(lower(coalesce(model, '')), ?) > 0)");
      args.push(q, q, q);
    }
    for (const l of f.labels ?? []) {
      where.push("EXISTS (SELECT 1 FROM json_each(devices.labels) WHERE key = ? AND value = ?)");
      args.push(l.key, l.value);
    }
    const rows = this.sql.all<FleetRow>(
      `SELECT device_id, node, cpu, mem, storage, status, version, allocation_id, user_id, expires_at, name, model, os_version, labels
         FROM devices WHERE ${where.join(" AND ")} ORDER BY sort_key, device_id LIMIT ?`,
      ...args,
      f.limit + 1,
    );
    return { items: rows.slice(0, f.limit).map((r) => entry(pool, r)), more: rows.length > f.limit };
  }
}

const entry = (pool: string, r: FleetRow): FleetEntry => ({
  deviceId: r.device_id,
  pool,
  node: r.node,
  cpuCores: r.cpu,
  memoryMB: r.mem,
  storageMB: r.storage,
  status: r.status,
  ...metaOf(r),
  version: r.version,
  allocationId: r.allocation_id,
  userId: r.user_id,
  expiresAt: r.expires_at,
});
