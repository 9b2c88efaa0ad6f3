/**
 * "Fleet" (admins): every device by pool in natural order, one compact row each, live from the
 * pool feeds (through FleetStore); search and filters over the whole fleet; each pool collapses
 * (remembered for the tab); a row's status says why (the operator's reason) and whether a drain
 * is under way; "Manage" opens the device's dialog with its actions.
 */
import type { ApiClient } from "../client/api-client";
import { act, card, countdown, h, pill, scrollTable, showOk, syncRows } from "./dom";
import { DeviceDialog } from "./device-dialog";
import { bindFeedState } from "./feed-ui";
import { FleetFilter, isFiltered, labelPairs, matches } from "./fleet-filter";
import type { FleetDevice, FleetStore, StatusNote } from "./fleet-store";
import { fmtDateTime, fmtSpec } from "./format";

const STATUSES = ["available", "allocated", "maintenance", "offline"] as const;
const COLLAPSED_KEY = "eda.console.fleet.collapsed";

/** One pool's section: a header that collapses it, its counts and feed, and its rows. */
class PoolSection {
  readonly el: HTMLElement;
  feedBound = false;
  readonly body: HTMLElement;
  private readonly toggle: HTMLButtonElement;
  private readonly counts: HTMLElement;
  private readonly settings: HTMLElement;
  private readonly table: HTMLElement;

  constructor(
    readonly pool: string,
    collapsed: boolean,
    onToggle: (open: boolean) => void,
  ) {
    const bodyId = `pool-body-${pool.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    this.toggle = h(
      "button",
      { type: "button", class: "pool-toggle", "aria-controls": bodyId, "aria-expanded": String(!collapsed) },
      h("span", { class: "chev", "aria-hidden": "true" }),
      h("h3", null, pool),
    );
    this.toggle.addEventListener("click", () => {
      const open = this.toggle.getAttribute("aria-expanded") !== "true";
      this.setOpen(open);
      onToggle(open);
    });
    this.counts = h("span", { class: "counts" });
    this.settings = h("span", { class: "pool-settings muted small" });
    this.body = h("tbody", { "data-pool": pool });
    this.table = h(
      "div",
      { id: bodyId, class: "pool-body" },
      scrollTable(["Device", "Node", "Status", "Spec", "Holder", "Time left", ""], this.body, "No devices match.", "fleet-table"),
    );
    this.el = h(
      "section",
      { class: "pool", "data-pool": pool, "aria-label": `Pool ${pool}` },
      h(
        "header",
        null,
        this.toggle,
        this.counts,
        this.settings,
        h("span", { class: "feed-state pool-feed-state", "data-pool": pool }, "live: connecting"),
      ),
      this.table,
    );
    this.setOpen(!collapsed);
  }

  get open(): boolean {
    return this.toggle.getAttribute("aria-expanded") === "true";
  }

  setOpen(open: boolean): void {
    this.toggle.setAttribute("aria-expanded", String(open));
    this.el.dataset.collapsed = String(!open);
    this.table.hidden = !open;
  }

  show(all: FleetDevice[], shown: number, filtered: boolean, settings: string): void {
    const by = (s: string) => all.filter((d) => d.status === s).length;
    this.counts.replaceChildren(
      filtered ? `${shown} of ${all.length} match: ` : `${all.length} devices: `,
      ...STATUSES.map((s) => h("span", { class: `count s-${s}`, "data-status": s }, `${by(s)} ${s}`)),
    );
    this.settings.textContent = settings;
  }
}

export class FleetCard {
  readonly el: HTMLElement;
  readonly dialog: DeviceDialog;
  private readonly filter: FleetFilter;
  private readonly list: HTMLElement;
  private readonly msg: HTMLElement;
  private readonly sections = new Map<string, PoolSection>();
  private readonly collapsed: Set<string>;
  private drawing: ReturnType<typeof setTimeout> | null = null;

  constructor(
    api: ApiClient,
    private readonly store: FleetStore,
  ) {
    this.collapsed = new Set<string>(JSON.parse(sessionStorage.getItem(COLLAPSED_KEY) ?? "[]") as string[]);
    this.msg = h("p", { class: "msg", id: "fleet-msg", role: "status" });
    this.dialog = new DeviceDialog(api, store, (text) => showOk(this.msg, text));
    this.filter = new FleetFilter(() => {
      // A new search opens the pools it finds devices in (each can be collapsed again).
      if (isFiltered(this.filter.query)) for (const s of this.sections.values()) this.openIfFound(s);
      this.draw();
    });
    this.list = h("div", { id: "fleet" }, h("p", { class: "muted" }, "Loading pools…"));
    const reload = h("button", { type: "button", id: "pools-reload", class: "small-btn" }, "Reload");
    reload.addEventListener("click", () => void act(reload, this.msg, () => this.store.load()));
    const collapseAll = h("button", { type: "button", id: "fleet-collapse-all", class: "small-btn" }, "Collapse all");
    const expandAll = h("button", { type: "button", id: "fleet-expand-all", class: "small-btn" }, "Expand all");
    collapseAll.addEventListener("click", () => this.setAll(false));
    expandAll.addEventListener("click", () => this.setAll(true));
    this.el = card(
      "Fleet",
      { id: "fleet-card", cls: "wide", extra: h("span", { class: "head-extra" }, collapseAll, " ", expandAll, " ", reload) },
      this.filter.el,
      this.list,
      this.msg,
      this.dialog.el,
    );
    this.list.addEventListener("click", (ev) => {
      const button = (ev.target as Element).closest<HTMLButtonElement>("button.manage");
      const id = button?.closest<HTMLElement>("tr[data-device-id]")?.dataset.deviceId;
      if (id) this.dialog.open(id);
    });
    store.onChange(() => this.draw());
  }

  /** Reads the fleet and opens the pools' feeds (the first time the view is shown). */
  async start(): Promise<void> {
    await act(null, this.msg, () => this.store.load());
  }

  private setAll(open: boolean): void {
    for (const s of this.sections.values()) {
      s.setOpen(open);
      this.remember(s.pool, open);
    }
  }

  private remember(pool: string, open: boolean): void {
    if (open) this.collapsed.delete(pool);
    else this.collapsed.add(pool);
    sessionStorage.setItem(COLLAPSED_KEY, JSON.stringify([...this.collapsed]));
  }

  private openIfFound(s: PoolSection): void {
    const q = this.filter.query;
    if (!s.open && [...this.store.devices.values()].some((d) => d.pool === s.pool && matches(d, q))) {
      s.setOpen(true);
      this.remember(s.pool, true);
    }
  }

  /** Redraws at most once per turn of the event loop (a pool's hello brings every device at once). */
  private draw(): void {
    this.drawing ??= setTimeout(() => {
      this.drawing = null;
      this.render();
    }, 0);
  }

  private render(): void {
    const all = this.store.sorted();
    const q = this.filter.query;
    const filtered = isFiltered(q);
    this.filter.offer(all);
    const pools = this.store.pools.map((p) => p.pool);
    for (const d of all) if (!pools.includes(d.pool)) pools.push(d.pool);
    let shownTotal = 0;
    const sections: HTMLElement[] = [];
    for (const pool of pools) {
      let s = this.sections.get(pool);
      if (!s) {
        s = new PoolSection(pool, this.collapsed.has(pool), (open) => this.remember(pool, open));
        this.sections.set(pool, s);
      }
      // The pool's feed may open after its section was drawn (the list is still being read).
      const feed = this.store.feeds.get(pool);
      if (feed && !s.feedBound) {
        bindFeedState(s.el.querySelector(".pool-feed-state")!, feed, "live");
        s.feedBound = true;
      }
      const mine = all.filter((d) => d.pool === pool);
      const shown = mine.filter((d) => matches(d, q));
      shownTotal += shown.length;
      const p = this.store.pool(pool);
      const settings = p ? `${p.strategy} · idle release ${p.idleReleaseMinutes === null ? "off" : `${p.idleReleaseMinutes} min`}` : "";
      s.show(mine, shown.length, filtered, settings);
      // A filter hides the pools it finds nothing in.
      s.el.hidden = filtered && shown.length === 0;
      syncRows(
        s.body,
        shown,
        (d) => d.deviceId,
        (d) => this.row(d, this.store.notes.get(d.deviceId)),
        (d) => JSON.stringify([d, this.store.notes.get(d.deviceId) ?? null]),
      );
      sections.push(s.el);
    }
    for (const [pool, s] of this.sections) if (!pools.includes(pool)) this.sections.delete(pool);
    if (sections.length) this.list.replaceChildren(...sections);
    else this.list.replaceChildren(h("p", { class: "muted" }, "No pools yet: register a device below."));
    if (filtered && shownTotal === 0 && all.length) this.list.append(h("p", { class: "muted", id: "fleet-none" }, "No device matches."));
    this.filter.showCount(shownTotal, all.length);
  }

  private row(d: FleetDevice, note: StatusNote | undefined): HTMLElement {
    const meta = [d.name, d.model, d.osVersion].filter(Boolean).join(" · ");
    const labels = labelPairs(d.labels);
    const left = d.status === "allocated" && d.expiresAt !== null;
    return h(
      "tr",
      { "data-device-id": d.deviceId, "data-status": d.status, "data-draining": note?.drain ? "true" : null },
      h(
        "td",
        { class: "dev" },
        h("span", { class: "mono" }, d.deviceId),
        meta ? h("span", { class: "dev-meta muted small" }, meta) : null,
        labels.length
          ? h(
              "span",
              { class: "labels" },
              labels.map((l) => h("span", { class: "label-chip" }, l)),
            )
          : null,
      ),
      h("td", { class: "node" }, d.node),
      h("td", { class: "st" }, pill(d.status), noteText(note)),
      h("td", { class: "small spec" }, fmtSpec(d)),
      h(
        "td",
        { class: "holder" },
        d.userId ? h("a", { href: `#user=${encodeURIComponent(d.userId)}`, class: "mono" }, d.userId) : h("span", { class: "muted" }, "—"),
      ),
      h("td", { class: "left" }, left ? countdown(d.expiresAt) : h("span", { class: "muted" }, "—")),
      h(
        "td",
        { class: "act" },
        h(
          "button",
          { type: "button", class: "manage small-btn", "aria-label": `Manage ${d.deviceId}`, "aria-haspopup": "dialog" },
          "Manage",
        ),
      ),
      // A narrow card shows this line instead of the four cells above it and the name in the first (CSS shows one
      // or the other, so a screen reader reads each once).
      h(
        "td",
        { class: "info" },
        [d.node, fmtSpec(d)].join(" · "),
        d.userId ? [" · ", h("a", { href: `#user=${encodeURIComponent(d.userId)}`, class: "mono" }, d.userId)] : null,
        left ? [" · ", countdown(d.expiresAt)] : null,
        meta || labels.length ? h("span", { class: "info-meta" }, [meta, ...labels].filter(Boolean).join(" · ")) : null,
      ),
    );
  }
}

/** The row's note: a drain under way (to what, until when), else why the status last changed. */
function noteText(note: StatusNote | undefined): HTMLElement | null {
  if (note?.drain)
    return h(
      "span",
      { class: "note drain small", title: note.reason ?? "" },
      `draining → ${note.drain.status}, ends by ${fmtDateTime(note.drain.deadline)}${note.reason ? `: ${note.reason}` : ""}`,
    );
  if (note?.reason) return h("span", { class: "note small" }, note.reason);
  return null;
}
