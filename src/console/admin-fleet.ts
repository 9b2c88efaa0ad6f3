/** "Fleet" (admins): every pool's devices, loaded from the API and kept live by each pool's feed. */
import type { ApiClient, PoolDevice } from "../client/api-client";
import { FeedClient } from "../client/feed-client";
import type { PoolDeviceView, PoolFeedState } from "../feed/protocol";
import { act, card, countdown, fill, h, pill, refresher, scrollTable, shortId, showError, syncRows } from "./dom";
import { fmtSpec, toMs } from "./format";
import { bindFeedState } from "./feed-ui";

interface DeviceRow extends Omit<PoolDeviceView, "expiresAt"> {
  expiresAt: number | null;
}

const STATUSES = ["available", "allocated", "maintenance", "offline"] as const;
/** While a pool's feed is not open, its devices are read again this often. */
const POLL_MS = 10_000;
const MAX_DEVICE_PAGES = 10;

const rowOf = (d: PoolDeviceView | PoolDevice): DeviceRow => ({
  deviceId: d.deviceId,
  node: d.node,
  status: d.status,
  cpuCores: d.cpuCores,
  memoryMB: d.memoryMB,
  storageMB: d.storageMB,
  allocationId: d.allocationId ?? null,
  userId: d.userId ?? null,
  expiresAt: toMs(d.expiresAt ?? null),
});

/** One pool: its devices, loaded from the API and kept live by the pool feed. */
class PoolPanel {
  readonly el: HTMLElement;
  private readonly devices = new Map<string, DeviceRow>();
  /** When the feed last changed a device (a list asked for before that is older). */
  private readonly touched = new Map<string, number>();
  private readonly body: HTMLElement;
  private readonly counts: HTMLElement;
  private readonly state: HTMLElement;
  private readonly msg: HTMLElement;
  private feed: FeedClient | null = null;
  private poller: ReturnType<typeof setInterval> | null = null;
  private readonly reload = refresher(() => this.load());

  constructor(
    private readonly api: ApiClient,
    readonly pool: string,
    private readonly baseUrl: string,
    private readonly token: () => string,
  ) {
    this.body = h("tbody", { "data-pool": pool });
    this.counts = h("span", { class: "counts" });
    this.state = h("span", { class: "feed-state pool-feed-state", "data-pool": pool });
    this.msg = h("p", { class: "msg" });
    const refresh = h("button", { type: "button", class: "small-btn", title: `Read ${pool}'s devices again` }, "Reload");
    refresh.addEventListener("click", () => void act(refresh, this.msg, () => this.load(true)));
    this.el = h(
      "section",
      { class: "pool", "data-pool": pool, "aria-label": `Pool ${pool}` },
      h("header", null, h("h3", null, pool), this.counts, this.state, refresh),
      scrollTable(["Device", "Node", "Status", "Spec", "Holder", "Allocation", "Time left"], this.body, "No devices.", "fleet-table stack"),
      this.msg,
    );
  }

  start(): void {
    this.reload();
    const feed = new FeedClient({ baseUrl: this.baseUrl, token: this.token, feed: "pool", pool: this.pool });
    this.feed = feed;
    bindFeedState(this.state, feed, "live");
    feed.onHello((hello) => {
      const s = hello.state as PoolFeedState | undefined;
      if (!s || !Array.isArray(s.devices)) return this.reload();
      // The snapshot is the truth as of now; a truncated one only adds to what the API listed.
      if (!s.truncated) this.devices.clear();
      const now = performance.now();
      for (const d of s.devices) {
        this.devices.set(d.deviceId, rowOf(d));
        this.touched.set(d.deviceId, now);
      }
      this.render();
      if (s.truncated) this.reload();
    });
    feed.on("pool.device", ({ data: d }) => {
      this.touched.set(d.deviceId, performance.now());
      if (d.status === "removed") this.devices.delete(d.deviceId);
      else this.devices.set(d.deviceId, rowOf(d));
      this.render();
    });
    feed.start().catch(() => {
      /* the state badge says why; the poller below keeps the list current */
    });
    // While the pool feed is not open (connecting, reconnecting, refused), read the list now and then.
    this.poller = setInterval(() => {
      if (feed.state !== "open") this.reload();
    }, POLL_MS);
  }

  stop(): void {
    this.feed?.close();
    if (this.poller) clearInterval(this.poller);
  }

  async load(throwErrors = false): Promise<void> {
    const asked = performance.now();
    try {
      const rows: DeviceRow[] = [];
      let cursor: string | undefined;
      for (let i = 0; i < MAX_DEVICE_PAGES; i++) {
        const page = await this.api.poolDevices(this.pool, { limit: 200, cursor });
        rows.push(...page.items.map(rowOf));
        if (!page.nextCursor) break;
        cursor = page.nextCursor;
      }
      // A device the feed changed while the list was on its way keeps the feed's newer view.
      const newer = new Map([...this.devices].filter(([id]) => (this.touched.get(id) ?? 0) > asked));
      const removed = new Set([...this.touched].filter(([id, at]) => at > asked && !this.devices.has(id)).map(([id]) => id));
      this.devices.clear();
      for (const r of rows) if (!removed.has(r.deviceId)) this.devices.set(r.deviceId, newer.get(r.deviceId) ?? r);
      for (const [id, d] of newer) this.devices.set(id, d);
      showError(this.msg, null);
      this.render();
    } catch (err) {
      if (throwErrors) throw err;
      showError(this.msg, err);
    }
  }

  private render(): void {
    const items = [...this.devices.values()].sort((a, b) => a.deviceId.localeCompare(b.deviceId));
    syncRows(
      this.body,
      items,
      (d) => d.deviceId,
      (d) =>
        h(
          "tr",
          { "data-device-id": d.deviceId, "data-status": d.status },
          h("td", { class: "mono" }, d.deviceId),
          h("td", null, d.node),
          h("td", null, pill(d.status)),
          h("td", { class: "small" }, fmtSpec(d)),
          h("td", { class: "mono" }, d.userId ?? "—"),
          h("td", null, shortId(d.allocationId, 16)),
          h("td", null, d.status === "allocated" && d.expiresAt ? countdown(d.expiresAt) : "—"),
        ),
    );
    const by = (s: string) => items.filter((d) => d.status === s).length;
    fill(
      this.counts,
      `${items.length} devices: `,
      STATUSES.map((s) => h("span", { class: `count s-${s}`, "data-status": s }, `${by(s)} ${s}`)),
    );
  }
}

/** The fleet card: a panel per pool (the pools read again on "Reload pools"). */
export class FleetCard {
  readonly el: HTMLElement;
  private panels: PoolPanel[] = [];

  constructor(
    private readonly api: ApiClient,
    private readonly baseUrl: string,
    private readonly token: () => string,
  ) {
    const reloadPools = h("button", { type: "button", id: "pools-reload" }, "Reload pools");
    reloadPools.addEventListener("click", () => void act(reloadPools, this.el.querySelector("#fleet-msg"), () => this.loadPools(true)));
    this.el = card(
      "Fleet",
      { id: "fleet-card", cls: "wide", extra: reloadPools },
      h("div", { id: "fleet" }, h("p", { class: "muted" }, "Loading pools…")),
      h("p", { class: "msg", id: "fleet-msg" }),
    );
  }

  async loadPools(throwErrors = false): Promise<void> {
    const fleet = this.el.querySelector<HTMLElement>("#fleet")!;
    try {
      const { items } = await this.api.pools();
      showError(this.el.querySelector("#fleet-msg"), null);
      for (const p of this.panels) p.stop();
      this.panels = items.map((s) => new PoolPanel(this.api, s.pool, this.baseUrl, this.token));
      fill(
        fleet,
        this.panels.length
          ? this.panels.map((p) => p.el)
          : h("p", { class: "muted" }, "No pools yet: register a device (POST /admin/devices)."),
      );
      for (const p of this.panels) p.start();
    } catch (err) {
      if (throwErrors) throw err;
      showError(this.el.querySelector("#fleet-msg"), err);
    }
  }
}
