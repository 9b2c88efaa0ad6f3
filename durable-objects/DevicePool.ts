/**
 * DevicePool: one per pool shard. Keeps an index of its devices' availability and a
 * per-node summary, picks a device by the pool's strategy and asks that device to claim
 * itself. The index is a cache: the Device object is the truth, answers a stale pick with
 * its real state, and pushes every change here (ordered by a version number).
 */
import { DurableObject } from "cloudflare:workers";
import { ALLOCATION, DEFAULT_STRATEGY, PAGING, type Env, type Strategy } from "../src/config";
import { fail, ok, type Result } from "../src/errors";
import { compareFit, orderNodes, type NodeLoad } from "../src/domain/strategy";
import type { DeviceSpec, DeviceStatus } from "../src/domain/types";
import { CachedRow, Sql } from "../src/sql";
import type { ClaimRequest, Claimed, DeviceState } from "./Device";

const SCHEMA = [
  `CREATE TABLE settings (id INTEGER PRIMARY KEY CHECK (id = 1), pool TEXT NOT NULL, strategy TEXT NOT NULL);
   CREATE TABLE devices (
     device_id TEXT PRIMARY KEY, node TEXT NOT NULL, cpu INTEGER NOT NULL, mem INTEGER NOT NULL, storage INTEGER NOT NULL,
     status TEXT NOT NULL, version INTEGER NOT NULL, allocation_id TEXT, user_id TEXT, expires_at INTEGER);
   CREATE INDEX devices_node_status ON devices(node, status, cpu, mem, storage);
   CREATE INDEX devices_status_expires ON devices(status, expires_at);
   CREATE TABLE nodes (node TEXT PRIMARY KEY, busy INTEGER NOT NULL, total INTEGER NOT NULL, free INTEGER NOT NULL, last_picked_at INTEGER NOT NULL DEFAULT 0);`,
  // Idle release grace for the pool's allocations (null: off); the user's object applies it.
  `ALTER TABLE settings ADD COLUMN idle_release_seconds INTEGER;`,
];

interface Settings {
  pool: string;
  strategy: Strategy;
  idleReleaseSeconds: number | null;
}

interface IndexRow {
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
}

export interface PoolDevice extends DeviceSpec {
  deviceId: string;
  node: string;
  status: DeviceStatus;
  allocationId?: string | null;
  userId?: string | null;
  expiresAt?: number | null;
}

export interface PoolSummary {
  pool: string;
  strategy: Strategy;
  /** Idle release grace of the pool (null: off); minutes may be fractional when set in seconds (tests). */
  idleReleaseMinutes: number | null;
  idleReleaseSeconds: number | null;
  devices: number;
  available: number;
  allocated: number;
  maintenance: number;
  offline: number;
  nodes: number;
}

export class DevicePool extends DurableObject<Env> {
  private readonly sql: Sql;
  /** Devices with a claim in flight: in memory on purpose, the device itself is the truth. */
  private readonly inFlight = new Set<string>();
  /**
   * When each node was last picked (the spread strategy's order). Kept here during a claim and
   * stored with the claim's result, so a claim writes once, after the device answered: a
   * write before the call would cost a commit of its own.
   */
  private readonly picked = new Map<string, number>();
  /** The settings row (only this class writes it). */
  private readonly cfg: CachedRow<Settings>;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = new Sql(ctx.storage);
    this.cfg = new CachedRow<Settings>(this.sql, "SELECT pool, strategy, idle_release_seconds AS idleReleaseSeconds FROM settings WHERE id = 1");
    ctx.blockConcurrencyWhile(async () => this.sql.migrate(SCHEMA));
  }

  private settings(pool: string): Settings {
    const s = this.cfg.get();
    if (s) return s;
    this.cfg.write("INSERT INTO settings (id, pool, strategy) VALUES (1, ?, ?)", pool, DEFAULT_STRATEGY);
    return { pool, strategy: DEFAULT_STRATEGY, idleReleaseSeconds: null };
  }

  private exists(): boolean {
    return this.sql.one("SELECT 1 AS x FROM devices LIMIT 1") !== null;
  }

  /** Picks, claims and returns a device; a stale pick is corrected and the next one tried. */
  async claim(req: ClaimRequest): Promise<Result<Claimed>> {
    if (!this.exists()) return fail(404, "POOL_NOT_FOUND", `Pool "${req.pool}" has no devices.`, { pool: req.pool });
    const { strategy, idleReleaseSeconds } = this.settings(req.pool);
    const tried = new Set<string>();
    for (let attempt = 0; attempt < ALLOCATION.claimAttempts; attempt++) {
      const pick = this.pick(strategy, req.min, req.max, tried);
      if (!pick) break;
      tried.add(pick.device_id);
      this.inFlight.add(pick.device_id);
      const pickedAt = Date.now();
      this.picked.set(pick.node, pickedAt);
      let r: Result<Claimed>;
      try {
        r = (await this.env.DEVICE.getByName(pick.device_id).claim(req)) as Result<Claimed>;
      } finally {
        this.inFlight.delete(pick.device_id);
      }
      if (r.ok) {
        this.apply(r.value.state);
        this.sql.exec("UPDATE nodes SET last_picked_at = MAX(last_picked_at, ?) WHERE node = ?", pickedAt, pick.node);
        // The user's object keeps the grace with the allocation (it watches the user's sockets).
        return ok({ ...r.value, idleReleaseSeconds });
      }
      const state = (r.details as { state?: DeviceState | null } | undefined)?.state;
      if (state) this.apply(state);
      else if (r.code === "DEVICE_UNAVAILABLE") this.drop(pick.device_id);
    }
    return this.noDevice(req);
  }

  private pick(strategy: Strategy, min: DeviceSpec, max: DeviceSpec, skip: Set<string>): Pick<IndexRow, "device_id" | "node"> | null {
    const nodes = this.sql.all<{ node: string; busy: number; total: number; free: number; last_picked_at: number }>(
      "SELECT node, busy, total, free, last_picked_at FROM nodes WHERE free > 0",
    );
    const ordered = orderNodes(strategy, nodes.map((n): NodeLoad => ({ node: n.node, busy: n.busy, total: n.total, free: n.free, lastPickedAt: Math.max(n.last_picked_at, this.picked.get(n.node) ?? 0) })));
    for (const n of ordered) {
      // Indexed lookup per node, smallest fitting first; a few extra rows cover in-flight claims.
      const rows = this.sql.all<Pick<IndexRow, "device_id" | "node" | "cpu" | "mem" | "storage">>(
        `SELECT device_id, node, cpu, mem, storage FROM devices WHERE node = ? AND status = 'available'
           AND cpu >= ? AND mem >= ? AND storage >= ? AND cpu <= ? AND mem <= ? AND storage <= ?
         ORDER BY cpu, mem, storage, device_id LIMIT ?`,
        n.node, min.cpuCores, min.memoryMB, min.storageMB, max.cpuCores, max.memoryMB, max.storageMB, this.inFlight.size + skip.size + 1,
      );
      const candidates = rows
        .filter((r) => !this.inFlight.has(r.device_id) && !skip.has(r.device_id))
        .sort((a, b) => compareFit({ deviceId: a.device_id, ...spec(a) }, { deviceId: b.device_id, ...spec(b) }));
      if (candidates[0]) return candidates[0];
    }
    return null;
  }

  private noDevice(req: ClaimRequest): Result<never> {
    const soonest = this.sql.one<{ t: number | null }>("SELECT MIN(expires_at) AS t FROM devices WHERE status = 'allocated'");
    return fail(409, "NO_DEVICE_AVAILABLE", `No free device in pool "${req.pool}" matches the request.`, {
      pool: req.pool,
      spec: req.min,
      nextExpiryAt: soonest?.t ? new Date(soonest.t).toISOString() : null,
    });
  }

  /** A device reports its state (directly or from its outbox). Older versions are ignored. */
  async deviceState(pool: string, state: DeviceState): Promise<void> {
    this.settings(pool);
    this.apply(state);
  }

  private apply(s: DeviceState): void {
    this.sql.tx(() => {
      const prev = this.sql.one<{ version: number; node: string; status: DeviceStatus }>("SELECT version, node, status FROM devices WHERE device_id = ?", s.deviceId);
      if (prev && prev.version >= s.version) return;
      if (s.status === "removed") {
        this.sql.exec("DELETE FROM devices WHERE device_id = ?", s.deviceId);
      } else {
        this.sql.exec(
          `INSERT INTO devices (device_id, node, cpu, mem, storage, status, version, allocation_id, user_id, expires_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(device_id) DO UPDATE SET node = excluded.node, cpu = excluded.cpu, mem = excluded.mem, storage = excluded.storage,
             status = excluded.status, version = excluded.version, allocation_id = excluded.allocation_id,
             user_id = excluded.user_id, expires_at = excluded.expires_at`,
          s.deviceId, s.node, s.cpuCores, s.memoryMB, s.storageMB, s.status, s.version, s.allocationId, s.userId, s.expiresAt,
        );
      }
      if (prev && prev.node !== s.node) this.refreshNode(prev.node);
      // Node counts only move with a device's status or node (a spec change or re-registration keeps them).
      if (!prev || prev.node !== s.node || prev.status !== s.status || s.status === "removed") this.refreshNode(s.node);
    });
  }

  private drop(deviceId: string): void {
    this.sql.tx(() => {
      const prev = this.sql.one<{ node: string }>("SELECT node FROM devices WHERE device_id = ?", deviceId);
      this.sql.exec("DELETE FROM devices WHERE device_id = ?", deviceId);
      if (prev) this.refreshNode(prev.node);
    });
  }

  private refreshNode(node: string): void {
    const c = this.sql.one<{ total: number; busy: number; free: number }>(
      `SELECT COUNT(*) AS total, SUM(status = 'allocated') AS busy, SUM(status = 'available') AS free FROM devices WHERE node = ?`,
      node,
    )!;
    if (!c.total) this.sql.exec("DELETE FROM nodes WHERE node = ?", node);
    else
      this.sql.exec(
        `INSERT INTO nodes (node, busy, total, free) VALUES (?, ?, ?, ?)
         ON CONFLICT(node) DO UPDATE SET busy = excluded.busy, total = excluded.total, free = excluded.free`,
        node, c.busy ?? 0, c.total, c.free ?? 0,
      );
  }

  // ---- reads and settings ----------------------------------------------------------------

  async list(opts: { pool: string; status?: DeviceStatus; cursor?: string; limit?: number; withHolders?: boolean }): Promise<Result<{ items: PoolDevice[]; nextCursor: string | null }>> {
    if (!this.exists()) return fail(404, "POOL_NOT_FOUND", `Pool "${opts.pool}" has no devices.`, { pool: opts.pool });
    const limit = Math.min(opts.limit ?? PAGING.defaultLimit, PAGING.maxLimit);
    const rows = this.sql.all<IndexRow>(
      `SELECT * FROM devices WHERE device_id > ? ${opts.status ? "AND status = ?" : ""} ORDER BY device_id LIMIT ?`,
      ...[opts.cursor ?? "", ...(opts.status ? [opts.status] : []), limit + 1],
    );
    const items = rows.slice(0, limit).map((r) => {
      const d: PoolDevice = { deviceId: r.device_id, node: r.node, ...spec(r), status: r.status };
      return opts.withHolders ? { ...d, allocationId: r.allocation_id, userId: r.user_id, expiresAt: r.expires_at } : d;
    });
    return ok({ items, nextCursor: rows.length > limit ? items[items.length - 1]!.deviceId : null });
  }

  async summary(pool: string): Promise<Result<PoolSummary>> {
    if (!this.exists()) return fail(404, "POOL_NOT_FOUND", `Pool "${pool}" has no devices.`, { pool });
    const { strategy, idleReleaseSeconds } = this.settings(pool);
    const c = this.sql.one<Record<string, number>>(
      `SELECT COUNT(*) AS devices, SUM(status='available') AS available, SUM(status='allocated') AS allocated,
              SUM(status='maintenance') AS maintenance, SUM(status='offline') AS offline, COUNT(DISTINCT node) AS nodes FROM devices`,
    )!;
    return ok({
      pool, strategy, idleReleaseMinutes: idleReleaseSeconds === null ? null : idleReleaseSeconds / 60, idleReleaseSeconds, devices: c.devices ?? 0, available: c.available ?? 0, allocated: c.allocated ?? 0,
      maintenance: c.maintenance ?? 0, offline: c.offline ?? 0, nodes: c.nodes ?? 0,
    });
  }

  /** Strategy and idle release grace; an absent field is unchanged, `idleReleaseSeconds: null` turns it off. */
  async setSettings(pool: string, patch: { strategy?: Strategy; idleReleaseSeconds?: number | null }): Promise<Result<PoolSummary>> {
    if (!this.exists()) return fail(404, "POOL_NOT_FOUND", `Pool "${pool}" has no devices.`, { pool });
    const s = this.settings(pool);
    this.cfg.write(
      "UPDATE settings SET strategy = ?, idle_release_seconds = ? WHERE id = 1",
      patch.strategy ?? s.strategy, patch.idleReleaseSeconds === undefined ? s.idleReleaseSeconds : patch.idleReleaseSeconds,
    );
    return this.summary(pool);
  }
}

const spec = (r: { device_id: string; cpu: number; mem: number; storage: number }) => ({
  cpuCores: r.cpu, memoryMB: r.mem, storageMB: r.storage,
});
