/**
 * A pool's index of its devices: a cache of what each Device object reported (the device is the
 * truth and answers a stale pick with its real state), ordered by the device's version; a
 * per-node summary for the pick; the pool's settings; and its metrics counters. The picker and
 * the window search read the queue's offers and the reservations' windows too, since both
 * decide which free device may be handed out. Synchronous, over the pool's SQL.
 */
import { DEFAULT_STRATEGY, FEED, type Strategy } from "../config";
import type { DeviceState, PoolDevice, PoolSummary } from "../contracts";
import type { EstimateDevice } from "../domain/queue";
import { orderNodes, sizeFirst, type NodeLoad } from "../domain/strategy";
import type { DeviceSpec, DeviceStatus } from "../domain/types";
import type { ClassCount } from "../domain/catalogue";
import { iso } from "../domain/time";
import { fail, type Failure } from "../errors";
import type { PoolDeviceView } from "../feed/protocol";
import type { CounterRow } from "../metrics";
import { CachedRow, type Sql } from "../objects/sql";
import { UNBOUNDED, specOf } from "../domain/spec";
import { naturalKey } from "../domain/fleet";
import { metaColumns, metaOf, type MetaColumns } from "./device-meta";

export const INDEX_SCHEMA = `CREATE TABLE settings (
    id INTEGER PRIMARY KEY CHECK (id = 1), pool TEXT NOT NULL, strategy TEXT NOT NULL,
    -- Idle release grace of the pool's allocations (null: off); the user's object applies it.
    idle_release_seconds INTEGER);
  CREATE TABLE devices (
    device_id TEXT PRIMARY KEY, node TEXT NOT NULL, cpu INTEGER NOT NULL, mem INTEGER NOT NULL, storage INTEGER NOT NULL,
    status TEXT NOT NULL, version INTEGER NOT NULL, allocation_id TEXT, user_id TEXT, expires_at INTEGER);
  CREATE INDEX devices_node_status ON devices(node, status, cpu, mem, storage);
  CREATE INDEX devices_status_expires ON devices(status, expires_at);
  CREATE TABLE nodes (node TEXT PRIMARY KEY, busy INTEGER NOT NULL, total INTEGER NOT NULL, free INTEGER NOT NULL,
    last_picked_at INTEGER NOT NULL DEFAULT 0);
  -- Devices that left (removed, or moved to another pool), with their version, so a late older state does not bring them back.
  CREATE TABLE gone (device_id TEXT PRIMARY KEY, version INTEGER NOT NULL);
  CREATE TABLE metrics (name TEXT NOT NULL, label TEXT NOT NULL DEFAULT '', value REAL NOT NULL, PRIMARY KEY (name, label));`;

/**
 * Migration 5: the index by node holds only the node, and there is none by expiry. With the
 * status in them, every allocation and release rewrote both (rows written are billed); a node's
 * devices are few (its smallest free device and its counts are read from its rows), and the
 * soonest expiry is read only for a refusal's hint or the catalogue.
 */
export const NODE_INDEX_LEAN =
  "DROP INDEX devices_node_status; DROP INDEX devices_status_expires; CREATE INDEX devices_node ON devices(node);";

/** Migration 2: the pick looks for the smallest free class that fits, across nodes. */
export const SIZE_ORDER_SCHEMA = "CREATE INDEX devices_status_spec ON devices(status, cpu, mem, storage);";

export interface Settings {
  pool: string;
  strategy: Strategy;
  idleReleaseSeconds: number | null;
}

/** A device's index row (the metadata columns and `sort_key` come with migration 3, src/stores/pool-fleet.ts). */
export interface IndexRow extends Partial<MetaColumns> {
  device_id: string;
  node: string;
  cpu: number;
  mem: number;
  storage: number;
  status: DeviceStatus;
  version: number;
  allocation_id: string | null;
  user_id: string | null;
  expires_at: number | null;
  sort_key?: string | null;
}

/** A node's summary row. */
interface NodeRow {
  node: string;
  busy: number;
  total: number;
  free: number;
  last_picked_at: number;
}

/** A device's previous index entry, as a change to it sees it. */
export interface Previous {
  status: DeviceStatus;
  allocationId: string | null;
}

/** The SQL form of `fits` on a device row (min ≤ spec ≤ max), with its arguments from `boundsArgs`. */
export const FITS_SQL = "cpu >= ? AND mem >= ? AND storage >= ? AND cpu <= ? AND mem <= ? AND storage <= ?";
/** Bounds in the order FITS_SQL and the rows' cpu_min…storage_max columns take them. */
export const boundsArgs = (min: DeviceSpec, max: DeviceSpec) => [
  min.cpuCores,
  min.memoryMB,
  min.storageMB,
  max.cpuCores,
  max.memoryMB,
  max.storageMB,
];

/** An index row as the device state it was written from. */
export const indexState = (r: IndexRow): DeviceState => ({
  deviceId: r.device_id,
  node: r.node,
  ...specOf(r),
  status: r.status,
  version: r.version,
  allocationId: r.allocation_id,
  userId: r.user_id,
  expiresAt: r.expires_at,
  ...(r.labels == null ? {} : { meta: metaOf(r) }),
});

export const deviceView = (s: DeviceState): PoolDeviceView => ({
  deviceId: s.deviceId,
  node: s.node,
  status: s.status,
  cpuCores: s.cpuCores,
  memoryMB: s.memoryMB,
  storageMB: s.storageMB,
  allocationId: s.allocationId,
  userId: s.userId,
  expiresAt: s.expiresAt === null ? null : iso(s.expiresAt),
});

export class IndexStore {
  private readonly row: CachedRow<Settings>;

  constructor(private readonly sql: Sql) {
    this.row = new CachedRow<Settings>(sql, "SELECT pool, strategy, idle_release_seconds AS idleReleaseSeconds FROM settings WHERE id = 1");
  }

  // ---- settings ----------------------------------------------------------------------------

  /** The pool's name ("" before its first device reported). */
  pool(): string {
    return this.row.get()?.pool ?? "";
  }

  /** The settings, written with the defaults on first use. */
  settings(pool: string): Settings {
    const s = this.row.get();
    if (s) return s;
    this.row.write("INSERT INTO settings (id, pool, strategy) VALUES (1, ?, ?)", pool, DEFAULT_STRATEGY);
    return { pool, strategy: DEFAULT_STRATEGY, idleReleaseSeconds: null };
  }

  setSettings(s: Settings): void {
    this.row.write("UPDATE settings SET strategy = ?, idle_release_seconds = ? WHERE id = 1", s.strategy, s.idleReleaseSeconds);
  }

  // ---- the index -----------------------------------------------------------------------------

  /** The pool has a device (a name no device reported is not a pool). */
  exists(): boolean {
    return this.sql.one("SELECT 1 AS x FROM devices LIMIT 1") !== null;
  }

  /** The one guard of every pool request: `POOL_NOT_FOUND` while no device has reported to the pool named `pool`. */
  missing(pool: string): Failure | null {
    return this.exists() ? null : fail(404, "POOL_NOT_FOUND", `Pool "${pool}" has no devices.`, { pool });
  }

  device(deviceId: string): IndexRow | null {
    return this.sql.one<IndexRow>("SELECT * FROM devices WHERE device_id = ?", deviceId);
  }

  /**
   * Applies a device's state unless an equal or newer version is known (`undefined`: ignored).
   * Returns the entry it replaced (null: a new device). Call inside a transaction.
   */
  apply(s: DeviceState, pickedAt?: number): Previous | null | undefined {
    const prev = this.sql.one<
      { version: number; node: string; status: DeviceStatus; allocation_id: string | null } & Pick<IndexRow, "cpu" | "mem" | "storage"> &
        MetaColumns
    >(
      "SELECT version, node, status, allocation_id, cpu, mem, storage, name, model, os_version, labels FROM devices WHERE device_id = ?",
      s.deviceId,
    );
    if (prev && prev.version >= s.version) return undefined;
    const gone = prev ? null : this.sql.one<{ version: number }>("SELECT version FROM gone WHERE device_id = ?", s.deviceId);
    if (gone && gone.version >= s.version) return undefined;
    if (s.status === "removed") {
      this.sql.exec("DELETE FROM devices WHERE device_id = ?", s.deviceId);
      this.sql.exec("INSERT OR REPLACE INTO gone (device_id, version) VALUES (?, ?)", s.deviceId, s.version);
      if (!prev) return undefined;
    } else if (prev && sameShape(prev, s)) {
      // An allocation's change: only what it moves, so only the indexes on status are rewritten (rows written are billed).
      this.sql.exec(
        "UPDATE devices SET status = ?, version = ?, allocation_id = ?, user_id = ?, expires_at = ? WHERE device_id = ?",
        s.status,
        s.version,
        s.allocationId,
        s.userId,
        s.expiresAt,
        s.deviceId,
      );
    } else {
      if (gone) this.sql.exec("DELETE FROM gone WHERE device_id = ?", s.deviceId);
      // A state without metadata (a claim's answer) keeps what the row has: its labels come as NULL.
      const m = s.meta ? metaColumns(s.meta) : { name: null, model: null, os_version: null, labels: null };
      this.sql.exec(
        `INSERT INTO devices (device_id, node, cpu, mem, storage, status, version, allocation_id, user_id, expires_at,
           name, model, os_version, labels, sort_key)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(device_id) DO UPDATE SET node = excluded.node, cpu = excluded.cpu, mem = excluded.mem, storage = excluded.storage,
           status = excluded.status, version = excluded.version, allocation_id = excluded.allocation_id,
           user_id = excluded.user_id, expires_at = excluded.expires_at, sort_key = excluded.sort_key,
           name = IIF(excluded.labels IS NULL, devices.name, excluded.name),
           model = IIF(excluded.labels IS NULL, devices.model, excluded.model),
           os_version = IIF(excluded.labels IS NULL, devices.os_version, excluded.os_version),
           labels = coalesce(excluded.labels, devices.labels)`,
        s.deviceId,
        s.node,
        s.cpuCores,
        s.memoryMB,
        s.storageMB,
        s.status,
        s.version,
        s.allocationId,
        s.userId,
        s.expiresAt,
        m.name,
        m.model,
        m.os_version,
        m.labels,
        naturalKey(s.deviceId),
      );
    }
    if (prev && prev.node !== s.node) this.refreshNode(prev.node);
    // Node counts only move with a device's status or node (a spec change or re-registration keeps them).
    if (!prev || prev.node !== s.node || prev.status !== s.status || s.status === "removed") this.refreshNode(s.node, pickedAt);
    else if (pickedAt !== undefined) this.picked(s.node, pickedAt);
    return prev ? { status: prev.status, allocationId: prev.allocation_id } : null;
  }

  /** Drops a device the device itself says is not registered; returns the entry it was. */
  drop(deviceId: string): IndexRow | null {
    const prev = this.device(deviceId);
    this.sql.exec("DELETE FROM devices WHERE device_id = ?", deviceId);
    if (prev) this.refreshNode(prev.node);
    return prev;
  }

  /** The node's counts again, and (a claim's state) when it was last picked, in one write. */
  private refreshNode(node: string, pickedAt = 0): void {
    const c = this.sql.one<{ total: number; busy: number; free: number }>(
      `SELECT COUNT(*) AS total, SUM(status = 'allocated') AS busy, SUM(status = 'available') AS free FROM devices WHERE node = ?`,
      node,
    )!;
    if (!c.total) this.sql.exec("DELETE FROM nodes WHERE node = ?", node);
    else
      this.sql.exec(
        `INSERT INTO nodes (node, busy, total, free, last_picked_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(node) DO UPDATE SET busy = excluded.busy, total = excluded.total, free = excluded.free,
           last_picked_at = MAX(nodes.last_picked_at, excluded.last_picked_at)`,
        node,
        c.busy ?? 0,
        c.total,
        c.free ?? 0,
        pickedAt,
      );
  }

  /** A claim on a device of `node` that was picked at `at` succeeded (the spread strategy's order). */
  picked(node: string, at: number): void {
    this.sql.exec("UPDATE nodes SET last_picked_at = MAX(last_picked_at, ?) WHERE node = ?", at, node);
  }

  // ---- the pick ------------------------------------------------------------------------------

  /**
   * The best free device for a claim: not in `skip`, not offered to a queue entry, and with no
   * reservation window (other than `ownReservation`) before the claim would end. The smallest
   * fitting class first, then the strategy's node among those holding one (load-first: the
   * node first, then its smallest). `pickedAt` holds picks not yet stored (claims in flight), by node.
   */
  pick(
    strategy: Strategy,
    bounds: { min: DeviceSpec; max: DeviceSpec },
    skip: Set<string>,
    pickedAt: Map<string, number>,
    durationMs: number,
    ownReservation: string | null,
  ): Pick<IndexRow, "device_id" | "node"> | null {
    const now = Date.now();
    const free = this.claimable(bounds, skip, now + durationMs, now, ownReservation);
    const loadOf = (n: { node: string; busy: number; total: number; free: number; last_picked_at: number }): NodeLoad => ({
      node: n.node,
      busy: n.busy,
      total: n.total,
      free: n.free,
      lastPickedAt: Math.max(n.last_picked_at, pickedAt.get(n.node) ?? 0),
    });
    if (!sizeFirst(strategy)) {
      const nodes = this.sql.all<NodeRow>("SELECT node, busy, total, free, last_picked_at FROM nodes WHERE free > 0");
      for (const n of orderNodes(strategy, nodes.map(loadOf))) {
        const row = this.sql.one<Pick<IndexRow, "device_id" | "node">>(
          `SELECT device_id, node FROM devices WHERE node = ? AND ${free.sql} ORDER BY cpu, mem, storage, device_id LIMIT 1`,
          n.node,
          ...free.args,
        );
        if (row) return row;
      }
      return null;
    }
    const smallest = this.sql.one<Pick<IndexRow, "cpu" | "mem" | "storage">>(
      `SELECT cpu, mem, storage FROM devices WHERE ${free.sql} ORDER BY cpu, mem, storage LIMIT 1`,
      ...free.args,
    );
    if (!smallest) return null;
    // One device of that class per node (the first by id), and the nodes' load for the strategy.
    const byNode = this.sql.all<Pick<IndexRow, "device_id" | "node"> & Omit<NodeRow, "node">>(
      `SELECT devices.node, MIN(device_id) AS device_id, n.busy, n.total, n.free, n.last_picked_at
         FROM devices JOIN nodes n ON n.node = devices.node
        WHERE cpu = ? AND mem = ? AND storage = ? AND ${free.sql} GROUP BY devices.node`,
      smallest.cpu,
      smallest.mem,
      smallest.storage,
      ...free.args,
    );
    const first = orderNodes(strategy, byNode.map(loadOf))[0];
    return byNode.find((r) => r.node === first?.node) ?? byNode[0] ?? null;
  }

  /**
   * Why nothing was picked, when the quota is the reason: the free devices that meet the
   * request's floor but are all larger than `max` (the user's room per device), smallest first.
   */
  freeAboveMax(
    bounds: { min: DeviceSpec; max: DeviceSpec },
    skip: Set<string>,
    durationMs: number,
  ): { count: number; smallest: DeviceSpec | null } {
    const now = Date.now();
    const free = this.claimable({ min: bounds.min, max: UNBOUNDED }, skip, now + durationMs, now, null);
    const count = this.sql.one<{ n: number }>(`SELECT COUNT(*) AS n FROM devices WHERE ${free.sql}`, ...free.args)!.n;
    const smallest = this.sql.one<Pick<IndexRow, "cpu" | "mem" | "storage">>(
      `SELECT cpu, mem, storage FROM devices WHERE ${free.sql} ORDER BY cpu, mem, storage LIMIT 1`,
      ...free.args,
    );
    return { count, smallest: smallest ? specOf(smallest) : null };
  }

  /** The condition a claimable device row meets (free, fits, not offered, no window in the way, not skipped). */
  private claimable(bounds: { min: DeviceSpec; max: DeviceSpec }, skip: Set<string>, until: number, now: number, own: string | null) {
    return {
      sql: `status = 'available' AND ${FITS_SQL}
           AND device_id NOT IN (SELECT device_id FROM queue WHERE status = 'offered' AND device_id IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.device_id = devices.device_id AND r.status IN ('pending','confirmed')
                             AND r.start_at < ? AND r.end_at > ? AND r.reservation_id != ?)
           AND device_id NOT IN (SELECT value FROM json_each(?))`,
      args: [...boundsArgs(bounds.min, bounds.max), until, now, own ?? "", JSON.stringify([...skip])],
    };
  }

  /** When the first allocated device is due to free (for a refusal's hint). */
  soonestExpiry(): number | null {
    return this.sql.one<{ t: number | null }>("SELECT MIN(expires_at) AS t FROM devices WHERE status = 'allocated'")?.t ?? null;
  }

  /** Free devices not offered to a queue entry, smallest first (the queue's offer round). */
  freeForQueue(): IndexRow[] {
    return this.sql.all<IndexRow>(
      `SELECT * FROM devices WHERE status = 'available'
         AND device_id NOT IN (SELECT device_id FROM queue WHERE status = 'offered' AND device_id IS NOT NULL)
       ORDER BY cpu, mem, storage, device_id LIMIT 1000`,
    );
  }

  /** Devices that match and are free for the whole window (not allocated into it, no other reservation in it). */
  freeForWindow(bounds: { min: DeviceSpec; max: DeviceSpec }, startAt: number, endAt: number, skip: Set<string>): IndexRow[] {
    return this.sql
      .all<IndexRow>(
        `SELECT * FROM devices d WHERE (status = 'available' OR (status = 'allocated' AND expires_at <= ?))
           AND ${FITS_SQL}
           AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.device_id = d.device_id AND r.status IN ('pending','confirmed','executing')
                             AND r.start_at < ? AND r.end_at > ?)
         ORDER BY cpu, mem, storage, device_id LIMIT ?`,
        startAt,
        ...boundsArgs(bounds.min, bounds.max),
        endAt,
        startAt,
        skip.size + 50,
      )
      .filter((d) => !skip.has(d.device_id));
  }

  /** Devices in service (available or allocated) that meet `min` with no upper bound: how many, and the smallest. */
  inServiceAbove(min: DeviceSpec): { count: number; smallest: DeviceSpec | null } {
    const where = `${FITS_SQL} AND status IN ('available','allocated')`;
    const args = boundsArgs(min, UNBOUNDED);
    const count = this.sql.one<{ n: number }>(`SELECT COUNT(*) AS n FROM devices WHERE ${where}`, ...args)!.n;
    const smallest = this.sql.one<Pick<IndexRow, "cpu" | "mem" | "storage">>(
      `SELECT cpu, mem, storage FROM devices WHERE ${where} ORDER BY cpu, mem, storage LIMIT 1`,
      ...args,
    );
    return { count, smallest: smallest ? specOf(smallest) : null };
  }

  /** Devices of the pool that match the bounds (`inServiceOnly`: available or allocated). */
  matching(min: DeviceSpec, max: DeviceSpec, inServiceOnly = false): number {
    return this.sql.one<{ n: number }>(
      `SELECT COUNT(*) AS n FROM devices WHERE ${FITS_SQL} ${inServiceOnly ? "AND status IN ('available','allocated')" : ""}`,
      ...boundsArgs(min, max),
    )!.n;
  }

  /**
   * The pool's device classes (one per spec) in service: how many, how many free now, and when
   * the first held one is due to free (the catalogue, GET /scheduler/pools).
   */
  classes(): ClassCount[] {
    return this.sql
      .all<{ cpu: number; mem: number; storage: number; devices: number; free: number; next: number | null }>(
        `SELECT cpu, mem, storage, COUNT(*) AS devices, SUM(status = 'available') AS free,
                MIN(CASE WHEN status = 'allocated' THEN expires_at END) AS next
           FROM devices WHERE status IN ('available', 'allocated') GROUP BY cpu, mem, storage ORDER BY cpu, mem, storage`,
      )
      .map((r) => ({ cpuCores: r.cpu, memoryMB: r.mem, storageMB: r.storage, devices: r.devices, free: r.free, nextFreeAt: r.next }));
  }

  /** Devices in service, with when each is free (a queue entry's estimate). */
  estimateDevices(now: number): EstimateDevice[] {
    return this.sql
      .all<IndexRow>("SELECT device_id, cpu, mem, storage, status, expires_at FROM devices WHERE status IN ('available','allocated')")
      .map((d) => ({ ...specOf(d), freeAt: d.status === "available" ? now : (d.expires_at ?? now) }));
  }

  // ---- reads ----------------------------------------------------------------------------------

  list(opts: { status?: DeviceStatus; cursor?: string; limit: number; withHolders?: boolean }): {
    items: PoolDevice[];
    nextCursor: string | null;
  } {
    const rows = this.sql.all<IndexRow>(
      `SELECT * FROM devices WHERE device_id > ? ${opts.status ? "AND status = ?" : ""} ORDER BY device_id LIMIT ?`,
      ...[opts.cursor ?? "", ...(opts.status ? [opts.status] : []), opts.limit + 1],
    );
    const items = rows.slice(0, opts.limit).map((r) => {
      const d: PoolDevice = { deviceId: r.device_id, node: r.node, ...specOf(r), status: r.status };
      return opts.withHolders ? { ...d, allocationId: r.allocation_id, userId: r.user_id, expiresAt: r.expires_at, meta: metaOf(r) } : d;
    });
    return { items, nextCursor: rows.length > opts.limit ? items[items.length - 1]!.deviceId : null };
  }

  summary(s: Settings): PoolSummary {
    const c = this.sql.one<Record<string, number>>(
      `SELECT COUNT(*) AS devices, SUM(status='available') AS available, SUM(status='allocated') AS allocated,
              SUM(status='maintenance') AS maintenance, SUM(status='offline') AS offline, COUNT(DISTINCT node) AS nodes FROM devices`,
    )!;
    return {
      pool: s.pool,
      strategy: s.strategy,
      idleReleaseMinutes: s.idleReleaseSeconds === null ? null : s.idleReleaseSeconds / 60,
      idleReleaseSeconds: s.idleReleaseSeconds,
      devices: c.devices ?? 0,
      available: c.available ?? 0,
      allocated: c.allocated ?? 0,
      maintenance: c.maintenance ?? 0,
      offline: c.offline ?? 0,
      nodes: c.nodes ?? 0,
    };
  }

  /** The pool feed's hello: its devices (the first `FEED.poolSnapshotLimit`), and whether there are more. */
  snapshot(): { devices: PoolDeviceView[]; truncated: boolean } {
    const rows = this.sql.all<IndexRow>("SELECT * FROM devices ORDER BY device_id LIMIT ?", FEED.poolSnapshotLimit + 1);
    return {
      devices: rows.slice(0, FEED.poolSnapshotLimit).map((r) => deviceView(indexState(r))),
      truncated: rows.length > FEED.poolSnapshotLimit,
    };
  }

  // ---- metrics ---------------------------------------------------------------------------------

  count(rows: CounterRow[]): void {
    for (const r of rows)
      this.sql.exec(
        "INSERT INTO metrics (name, label, value) VALUES (?, ?, ?) ON CONFLICT(name, label) DO UPDATE SET value = value + excluded.value",
        r.name,
        r.label,
        r.value,
      );
  }

  counters(): CounterRow[] {
    return this.sql.all<CounterRow>("SELECT name, label, value FROM metrics ORDER BY name, label");
  }

  byStatus(): Record<string, number> {
    return Object.fromEntries(
      this.sql.all<{ status: string; n: number }>("SELECT status, COUNT(*) AS n FROM devices GROUP BY status").map((r) => [r.status, r.n]),
    );
  }
}

/** A state that changes only what an allocation moves (status, version, holder, expiry): node, spec and metadata as the row has them. */
function sameShape(row: Pick<IndexRow, "node" | "cpu" | "mem" | "storage"> & MetaColumns, s: DeviceState): boolean {
  if (row.node !== s.node || row.cpu !== s.cpuCores || row.mem !== s.memoryMB || row.storage !== s.storageMB) return false;
  const m = s.meta && metaColumns(s.meta);
  return !m || (row.name === m.name && row.model === m.model && row.os_version === m.os_version && row.labels === m.labels);
}
