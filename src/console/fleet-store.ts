/**
 * The fleet as the Operations view knows it: every pool's devices, read from the fleet list
 * (`GET /admin/devices`) and kept live by each pool's feed (`pool.device`), and each device's status note (the operator's reason,
 * a drain under way) from the operators' feed (`device.status`, `device.draining`), its history,
 * and the answers to this console's own actions. The cards draw from it; it draws nothing.
 */
import type { ApiClient, DeviceDetail, DeviceStatusChange, FleetDevice as ListedDevice, PoolSummary } from "../client/api-client";
import { FeedClient } from "../client/feed-client";
import type { DeviceStatusEventData, DrainingEventData, Envelope, PoolDeviceView, PoolFeedState } from "../feed/protocol";
import { refresher } from "./dom";
import { naturalCompare } from "./fleet-filter";
import { toMs } from "./format";

export interface FleetDevice {
  deviceId: string;
  pool: string;
  node: string;
  status: string;
  cpuCores: number;
  memoryMB: number;
  storageMB: number;
  allocationId: string | null;
  userId: string | null;
  /** Epoch ms. */
  expiresAt: number | null;
  name: string | null;
  model: string | null;
  osVersion: string | null;
  labels: Record<string, string>;
}

/** Why a device's status last changed, and a drain under way (null: none known). */
export interface StatusNote {
  reason: string | null;
  drain: { status: "maintenance" | "offline"; deadline: number } | null;
}

/** A device as the fleet list or a pool feed tells it; the list carries its name, model and labels, a feed may not. */
type Listed = (PoolDeviceView | ListedDevice) & Partial<Pick<FleetDevice, "name" | "model" | "osVersion" | "labels">>;

/** While a pool's feed is not open, its devices are read again this often. */
const POLL_MS = 10_000;
const MAX_PAGES = 25;
/** At most this many devices out of service have their reason read when the page opens. */
const MAX_NOTE_READS = 40;

export class FleetStore {
  readonly devices = new Map<string, FleetDevice>();
  readonly notes = new Map<string, StatusNote>();
  pools: PoolSummary[] = [];
  readonly feeds = new Map<string, FeedClient>();
  /** When a feed or an answer last changed a device (a list asked for before that is older). */
  private readonly touched = new Map<string, number>();
  private readonly listeners = new Set<() => void>();
  private readonly deviceListeners = new Set<(d: FleetDevice, previous: FleetDevice | undefined) => void>();
  private poller: ReturnType<typeof setInterval> | null = null;
  private readonly notesAsked = new Set<string>();
  readonly reload = refresher(() => this.load());

  constructor(
    private readonly api: ApiClient,
    private readonly baseUrl: string,
    private readonly token: () => string,
  ) {}

  /** Something changed: redraw. */
  onChange(fn: () => void): void {
    this.listeners.add(fn);
  }
  /** One device changed (from a feed or an answer). */
  onDevice(fn: (d: FleetDevice, previous: FleetDevice | undefined) => void): void {
    this.deviceListeners.add(fn);
  }

  /** Devices in fleet order (pool, then device id, both natural). */
  sorted(): FleetDevice[] {
    return [...this.devices.values()].sort((a, b) => naturalCompare(a.pool, b.pool) || naturalCompare(a.deviceId, b.deviceId));
  }

  pool(name: string): PoolSummary | undefined {
    return this.pools.find((p) => p.pool === name);
  }

  /** Reads the pools and their devices, and opens a feed for each pool not watched yet. */
  async load(): Promise<void> {
    const asked = performance.now();
    const { items } = await this.api.pools();
    this.pools = items.sort((a, b) => naturalCompare(a.pool, b.pool));
    this.merge(await this.listFleet(), asked);
    for (const p of this.pools) if (!this.feeds.has(p.pool)) this.watch(p.pool);
    this.poller ??= setInterval(() => {
      if ([...this.feeds.values()].some((f) => f.state !== "open")) this.reload();
    }, POLL_MS);
    this.readMissingNotes();
    this.changed();
  }

  /** A pool's summary after its settings changed. */
  poolChanged(p: PoolSummary): void {
    this.pools = this.pools.map((x) => (x.pool === p.pool ? p : x));
    this.changed();
  }

  /** The whole fleet, page by page (`GET /admin/devices`: one list over every pool, from the pools' indexes). */
  private async listFleet(): Promise<FleetDevice[]> {
    const rows: FleetDevice[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < MAX_PAGES; i++) {
      const page = await this.api.fleet({ limit: 200, cursor });
      rows.push(...page.items.map((d) => this.rowOf(d, d.pool)));
      if (!page.nextCursor) break;
      cursor = page.nextCursor;
    }
    return rows;
  }

  /** A list's rows, except devices a feed or answer changed after the list was asked for. */
  private merge(rows: FleetDevice[], asked: number): void {
    const newer = new Map([...this.devices].filter(([id]) => (this.touched.get(id) ?? 0) > asked));
    const gone = new Set([...this.touched].filter(([id, at]) => at > asked && !this.devices.has(id)).map(([id]) => id));
    this.devices.clear();
    for (const r of rows) if (!gone.has(r.deviceId)) this.devices.set(r.deviceId, newer.get(r.deviceId) ?? r);
    for (const [id, d] of newer) this.devices.set(id, d);
  }

  private watch(pool: string): void {
    const feed = new FeedClient({ baseUrl: this.baseUrl, token: this.token, feed: "pool", pool });
    this.feeds.set(pool, feed);
    feed.onHello((hello) => {
      const s = hello.state as PoolFeedState | undefined;
      if (!s || !Array.isArray(s.devices)) return this.reload();
      const now = performance.now();
      // Rows first (a snapshot without names keeps the list's), then what the snapshot no longer has goes.
      const rows = s.devices.map((d) => this.rowOf(d, pool));
      const listed = new Set(rows.map((r) => r.deviceId));
      // The snapshot is the pool as of now; a truncated one only adds to what the lists said.
      if (!s.truncated) for (const [id, d] of this.devices) if (d.pool === pool && !listed.has(id)) this.devices.delete(id);
      for (const r of rows) {
        this.devices.set(r.deviceId, r);
        this.touched.set(r.deviceId, now);
      }
      if (s.truncated) this.reload();
      this.changed();
    });
    feed.on("pool.device", ({ data: d }) => this.put(d.status === "removed" ? null : this.rowOf(d, d.pool), d.deviceId));
    feed.onState(() => this.changed());
    feed.start().catch(() => {
      /* the pool's badge says why; the poller keeps its list current */
    });
  }

  /** A device's new state (null: it left the fleet), from a feed or an answer. */
  put(d: FleetDevice | null, deviceId: string): void {
    this.touched.set(deviceId, performance.now());
    const previous = this.devices.get(deviceId);
    if (d) this.devices.set(deviceId, d);
    else this.devices.delete(deviceId);
    // A device back in service, or gone, has no drain any more; the reason stays until the next change.
    const note = this.notes.get(deviceId);
    if (!d) this.notes.delete(deviceId);
    else if (note?.drain && (d.status === note.drain.status || !d.allocationId)) this.notes.set(deviceId, { ...note, drain: null });
    if (d) for (const fn of this.deviceListeners) fn(d, previous);
    this.changed();
  }

  /** The operators' feed (live or its history): reasons and drains. */
  onAdminEvent(e: Envelope): void {
    if (e.type === "device.status") {
      const d = e.data as DeviceStatusEventData;
      if (d.status === "removed") this.notes.delete(d.deviceId);
      else this.notes.set(d.deviceId, { reason: d.reason, drain: null });
      this.notesAsked.add(d.deviceId);
      this.changed();
    } else if (e.type === "device.draining") {
      const d = e.data as DrainingEventData;
      this.notes.set(d.deviceId, { reason: d.reason, drain: { status: d.status, deadline: toMs(d.deadline) ?? Date.now() } });
      this.notesAsked.add(d.deviceId);
      this.changed();
    }
  }

  /** What `GET /admin/devices/{id}` or a status change answered: the note, and the device's state. */
  detailed(d: DeviceDetail | DeviceStatusChange): void {
    const deadline = d.drain ? toMs(d.drain.deadline) : null;
    this.notes.set(d.deviceId, { reason: d.statusReason, drain: d.drain && deadline ? { status: d.drain.status, deadline } : null });
    this.notesAsked.add(d.deviceId);
    const known = this.devices.get(d.deviceId);
    // The allocation it holds: a detail names it, a status change says whether it ended one.
    const held = "allocation" in d ? d.allocation : d.ended ? null : undefined;
    if (known && (known.status !== d.status || held !== undefined)) {
      const next = { ...known, status: d.status };
      if (held !== undefined) {
        next.allocationId = held?.allocationId ?? null;
        next.userId = held?.userId ?? null;
        next.expiresAt = held ? toMs(held.expiresAt) : null;
      }
      this.put(next, d.deviceId);
    } else this.changed();
  }

  /** Devices out of service whose reason no event told: read once each (a few, not the fleet). */
  private readMissingNotes(): void {
    const missing = this.sorted()
      .filter((d) => (d.status === "maintenance" || d.status === "offline") && !this.notesAsked.has(d.deviceId))
      .slice(0, MAX_NOTE_READS);
    for (const d of missing) {
      this.notesAsked.add(d.deviceId);
      this.api.device(d.deviceId).then(
        (detail) => this.detailed(detail),
        () => {
          /* the row shows no reason; the device's dialog reads it again */
        },
      );
    }
  }

  private rowOf(d: Listed, pool: string): FleetDevice {
    const known = this.devices.get(d.deviceId);
    return {
      deviceId: d.deviceId,
      pool,
      node: d.node,
      status: d.status,
      cpuCores: d.cpuCores,
      memoryMB: d.memoryMB,
      storageMB: d.storageMB,
      allocationId: d.allocationId ?? null,
      userId: d.userId ?? null,
      expiresAt: toMs(d.expiresAt ?? null),
      // A feed event without them keeps what a list said.
      name: d.name !== undefined ? d.name : (known?.name ?? null),
      model: d.model !== undefined ? d.model : (known?.model ?? null),
      osVersion: d.osVersion !== undefined ? d.osVersion : (known?.osVersion ?? null),
      labels: d.labels ?? known?.labels ?? {},
    };
  }

  private changed(): void {
    for (const fn of this.listeners) fn();
  }
}
