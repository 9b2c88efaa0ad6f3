/**
 * "Operations" (admins): the fleet by pool, live from each pool's feed; users and their
 * quotas; failed billing with replay; reconciliation; the operators' feed.
 */
import type { AdminUser, ApiClient, FailedUsage, PoolDevice, Quota, ReconcileResult } from "../client/api-client";
import { FeedClient } from "../client/feed-client";
import type { Envelope, FeedEvent, PoolDeviceView, PoolFeedState, ReconcileDifferencesEventData } from "../feed/protocol";
import {
  act,
  card,
  countdown,
  fill,
  fmtDateTime,
  fmtMB,
  fmtMoney,
  fmtSpec,
  fmtTime,
  h,
  pill,
  refresher,
  scrollTable,
  shortId,
  showError,
  showOk,
  syncRows,
  table,
  toMs,
} from "./dom";
import { EventList, bindFeedState } from "./feed-ui";

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
      scrollTable(["Device", "Node", "Status", "Spec", "Holder", "Allocation", "Time left"], this.body, "No devices.", "fleet-table"),
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

export class AdminView {
  readonly el: HTMLElement;
  readonly feed: FeedClient;
  private panels: PoolPanel[] = [];
  private events!: EventList;
  private started = false;
  private usersCursor: string | null = null;
  /** Accounts the user list showed (a look-up of one of them keeps its balance). */
  private readonly accounts = new Map<string, AdminUser>();
  private failed: FailedUsage[] = [];
  private readonly refreshFailed = refresher(() => this.loadFailed());

  constructor(
    private readonly api: ApiClient,
    private readonly baseUrl: string,
    private readonly token: () => string,
  ) {
    this.feed = new FeedClient({ baseUrl, token, feed: "admin" });
    this.el = this.build();
  }

  private build(): HTMLElement {
    const events = h("ol", { id: "admin-events", class: "events" });
    this.events = new EventList(events);

    const reloadPools = h("button", { type: "button", id: "pools-reload" }, "Reload pools");
    reloadPools.addEventListener("click", () => void act(reloadPools, this.el.querySelector("#fleet-msg"), () => this.loadPools(true)));

    const lookup = h(
      "form",
      { id: "user-lookup", class: "inline-form", "aria-label": "Look up a user" },
      h("label", null, "User id ", h("input", { name: "userId", required: true, autocomplete: "off", spellcheck: "false" })),
      h("button", { type: "submit" }, "Look up"),
    );
    lookup.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.lookupUser(lookup);
    });
    const more = h("button", { type: "button", id: "users-more", hidden: true }, "More");
    more.addEventListener("click", () => void act(more, this.el.querySelector("#users-msg"), () => this.loadUsers(true)));

    const status = h(
      "select",
      { id: "failed-status", "aria-label": "Status" },
      ["failed", "invalid", "replayed", "resolved", ""].map((s) => h("option", { value: s }, s || "any status")),
    );
    status.addEventListener("change", () => this.refreshFailed());
    const replayAll = h("button", { type: "button", id: "replay-shown" }, "Replay all shown");
    replayAll.addEventListener(
      "click",
      () =>
        void this.replay(
          replayAll,
          this.failed.filter((f) => f.status === "failed" || f.status === "invalid").map((f) => f.allocationId),
        ),
    );
    const reloadFailed = h("button", { type: "button" }, "Reload");
    reloadFailed.addEventListener(
      "click",
      () => void act(reloadFailed, this.el.querySelector("#failed-load-msg"), () => this.loadFailed(true)),
    );

    const rec = h(
      "form",
      { id: "reconcile-form", class: "form-grid", "aria-label": "Reconcile" },
      h("label", null, "User id", h("input", { name: "userId", placeholder: "every account", autocomplete: "off" })),
      h("label", null, "From", h("input", { name: "from", type: "datetime-local" })),
      h("label", null, "To", h("input", { name: "to", type: "datetime-local" })),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", id: "reconcile-check" }, "Check (report only)"),
        h("button", { type: "button", id: "reconcile-heal", class: "primary" }, "Reconcile and heal"),
      ),
    );
    rec.addEventListener("submit", (ev) => ev.preventDefault());
    for (const [id, heal] of [
      ["#reconcile-check", false],
      ["#reconcile-heal", true],
    ] as const) {
      const b = rec.querySelector<HTMLButtonElement>(id)!;
      b.addEventListener("click", () => void this.reconcile(rec, b, heal));
    }

    return h(
      "div",
      { class: "grid", id: "view-admin" },
      card(
        "Fleet",
        { id: "fleet-card", cls: "wide", extra: reloadPools },
        h("div", { id: "fleet" }, h("p", { class: "muted" }, "Loading pools…")),
        h("p", { class: "msg", id: "fleet-msg" }),
      ),
      card(
        "Users and quotas",
        { id: "users-card", cls: "wide" },
        scrollTable(
          ["User", "Plan", "Status", "Devices", "CPU", "Memory", "Device-hours", "Valid until", "Balance", "Pricing"],
          h("tbody", { id: "users" }),
        ),
        more,
        lookup,
        h("p", { class: "msg", id: "users-msg" }),
      ),
      card(
        "Failed billing",
        {
          id: "failed-card",
          cls: "wide",
          extra: h("span", { class: "head-extra" }, status, " ", reloadFailed, " ", replayAll),
        },
        scrollTable(
          ["Allocation", "User", "Status", "Attempts", "Error", "Last failed", ""],
          h("tbody", { id: "failed-usage" }),
          "Nothing here.",
        ),
        h("p", { class: "msg", id: "failed-load-msg" }),
        h("p", { class: "msg", id: "failed-msg" }),
      ),
      card(
        "Reconciliation",
        { id: "reconcile-card" },
        rec,
        h("p", { class: "msg", id: "reconcile-msg" }),
        h("div", { id: "reconcile-result" }),
        h("h3", null, "Reported on the feed"),
        h("ol", { id: "reconcile-events", class: "events compact" }),
        h("p", { class: "muted small empty" }, "Differences the service finds (also on its own passes) show here."),
      ),
      card(
        "Operations feed",
        { id: "admin-events-card", extra: h("span", { class: "feed-state", id: "admin-feed-state" }) },
        events,
        h("p", { class: "empty muted" }, "Operator events appear here as they happen."),
      ),
    );
  }

  /** Starts the feeds and loads everything (the first time the view is shown). */
  start(): void {
    if (this.started) return;
    this.started = true;
    bindFeedState(this.el.querySelector("#admin-feed-state")!, this.feed, "feed");
    this.feed.onEvent((e) => this.onEvent(e));
    this.feed.start().catch(() => {
      /* shown by the state badge */
    });
    void this.loadPools();
    void this.loadUsers();
    this.refreshFailed();
  }

  private onEvent(e: FeedEvent): void {
    this.events.add(e as Envelope);
    if (e.type === "billing.usage_failed") this.refreshFailed();
    if (e.type === "billing.reconcile_differences") this.reconcileEvent(e as Envelope<ReconcileDifferencesEventData>);
  }

  // ---- fleet ------------------------------------------------------------------------------

  private async loadPools(throwErrors = false): Promise<void> {
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

  // ---- users ------------------------------------------------------------------------------

  private async loadUsers(more = false): Promise<void> {
    const body = this.el.querySelector<HTMLElement>("#users")!;
    const moreBtn = this.el.querySelector<HTMLButtonElement>("#users-more")!;
    try {
      const page = await this.api.adminUsers({ limit: 50, cursor: more ? (this.usersCursor ?? undefined) : undefined });
      if (!more) body.replaceChildren();
      for (const u of page.items) {
        this.accounts.set(u.userId, u);
        body.querySelector(`[data-user-id="${CSS.escape(u.userId)}"]`)?.remove();
      }
      body.append(...page.items.map((u) => this.userRow(u.userId, u.quota, u)));
      this.usersCursor = page.nextCursor;
      moreBtn.hidden = !page.nextCursor;
    } catch (err) {
      showError(this.el.querySelector("#users-msg"), err);
    }
  }

  private userRow(userId: string, q: Quota, account?: Pick<AdminUser, "balance" | "currency" | "planId">): HTMLElement {
    const l = q.limits;
    const u = q.usage;
    const of = (used: number | undefined, max: number | undefined, fmt: (n: number) => string = String) =>
      `${fmt(Math.round((used ?? 0) * 100) / 100)} / ${max === undefined ? "—" : fmt(max)}`;
    return h(
      "tr",
      { "data-user-id": userId, "data-status": q.status },
      h("td", { class: "mono" }, userId),
      h("td", null, q.plan),
      h("td", null, pill(q.status)),
      h("td", { class: "num" }, of(u.devices, l.maxDevices)),
      h("td", { class: "num" }, of(u.cpuCores, l.maxCpuCores)),
      h("td", { class: "num" }, of(u.memoryMB, l.maxMemoryMB, fmtMB)),
      h("td", { class: "num" }, of(u.deviceHours, l.maxDeviceHoursPerPeriod)),
      h("td", { class: "small" }, fmtDateTime(q.validUntil)),
      h("td", { class: "num" }, account ? fmtMoney(account.balance, account.currency) : "—"),
      h("td", null, account?.planId ?? "—"),
    );
  }

  private async lookupUser(form: HTMLFormElement): Promise<void> {
    const userId = (form.elements.namedItem("userId") as HTMLInputElement).value.trim();
    const button = form.querySelector<HTMLButtonElement>("button[type=submit]");
    await act(button, this.el.querySelector("#users-msg"), async () => {
      // Quota only: reading a balance opens an account (with its starting credit) for an id
      // never seen before, and a typo here must not do that.
      const q = await this.api.quota(userId);
      const body = this.el.querySelector<HTMLElement>("#users")!;
      body.querySelector(`[data-user-id="${CSS.escape(userId)}"]`)?.remove();
      body.prepend(this.userRow(userId, q, this.accounts.get(userId)));
    });
  }

  // ---- failed billing ---------------------------------------------------------------------

  private async loadFailed(throwErrors = false): Promise<void> {
    const status = (this.el.querySelector<HTMLSelectElement>("#failed-status")!.value || undefined) as "failed" | undefined;
    try {
      const page = await this.api.failedUsage({ status, limit: 100 });
      showError(this.el.querySelector("#failed-load-msg"), null);
      this.failed = page.items;
      syncRows(
        this.el.querySelector("#failed-usage")!,
        page.items,
        (f) => f.allocationId,
        (f) => this.failedRow(f),
      );
      const replayAll = this.el.querySelector<HTMLButtonElement>("#replay-shown")!;
      const n = page.items.filter((f) => f.status === "failed" || f.status === "invalid").length;
      replayAll.textContent = `Replay all shown (${n})`;
      replayAll.disabled = n === 0;
    } catch (err) {
      if (throwErrors) throw err;
      showError(this.el.querySelector("#failed-load-msg"), err);
    }
  }

  private failedRow(f: FailedUsage): HTMLElement {
    const replay = f.status === "failed" || f.status === "invalid" ? h("button", { type: "button", class: "replay" }, "Replay") : null;
    replay?.addEventListener("click", () => void this.replay(replay, [f.allocationId]));
    return h(
      "tr",
      { "data-allocation-id": f.allocationId, "data-status": f.status },
      h("td", null, shortId(f.allocationId, 20)),
      h("td", { class: "mono" }, f.userId ?? "—"),
      h("td", null, pill(f.status)),
      h("td", { class: "num" }, f.attempts),
      h("td", { class: "small clip", title: f.error }, f.error),
      h("td", { class: "small" }, fmtTime(f.lastFailedAt)),
      h("td", null, replay),
    );
  }

  private async replay(button: HTMLButtonElement, ids: string[]): Promise<void> {
    const slot = this.el.querySelector<HTMLElement>("#failed-msg");
    if (!ids.length) return;
    const r = await act(button, slot, () => this.api.replayFailedUsage({ allocationIds: ids.slice(0, 100) }));
    if (!r) return;
    const failures = r.results.filter((x) => x.status === "failed" || x.status === "invalid" || x.status === "not_found");
    const text = `Replayed ${r.replayed}, failed ${r.failed}, still open ${r.remaining}.`;
    if (failures.length) {
      showError(slot, null);
      slot!.textContent = `${text} ${failures.map((x) => `${x.allocationId}: ${x.status}${"error" in x && x.error ? ` — ${x.error}` : ""}`).join("; ")}`;
      slot!.classList.add("error");
    } else showOk(slot, text);
    this.refreshFailed();
  }

  // ---- reconciliation ---------------------------------------------------------------------

  private async reconcile(form: HTMLFormElement, button: HTMLButtonElement, heal: boolean): Promise<void> {
    const val = (n: string) => (form.elements.namedItem(n) as HTMLInputElement).value.trim();
    const iso = (v: string) => (v ? new Date(v).toISOString() : undefined);
    const body = { heal, userId: val("userId") || undefined, from: iso(val("from")), to: iso(val("to")) };
    const r = await act(button, this.el.querySelector("#reconcile-msg"), () => this.api.reconcile(body));
    if (r) this.renderReconcile(r, heal);
  }

  private renderReconcile(r: ReconcileResult, heal: boolean): void {
    const kv = (k: string, v: string | number) => [h("dt", null, k), h("dd", null, String(v))];
    const clean = r.differencesTotal === 0;
    fill(
      this.el.querySelector("#reconcile-result")!,
      h(
        "p",
        { class: clean ? "ok" : "error", "data-differences": r.differencesTotal },
        `${heal ? "Reconciled" : "Checked"} ${r.users} account(s), ${r.checked} allocation(s) ${r.from ? `from ${fmtDateTime(r.from)} ` : ""}to ${fmtDateTime(r.to)}: `,
        clean ? "no differences." : `${r.differencesTotal} account(s) with differences.`,
      ),
      h(
        "dl",
        { class: "kv cols" },
        kv("Missing usage", r.missingUsage),
        kv("Missing charges", r.missingCharges),
        kv("Mismatched", r.mismatched),
        kv("Balance drift", r.balanceDrift),
        kv("Healed", r.healed),
        kv("Still missing", r.stillMissing),
        kv("Dead letters resolved", r.resolvedDeadLetters),
        kv("More to check", r.remaining ? "yes" : "no"),
      ),
      r.differences.length
        ? table(
            ["User", "Missing usage", "Missing charges", "Mismatched", "Healed", "Still missing", "Drift"],
            h(
              "tbody",
              null,
              r.differences
                .slice(0, 20)
                .map((d) =>
                  h(
                    "tr",
                    { "data-user-id": d.userId },
                    h("td", { class: "mono" }, d.userId),
                    h("td", { class: "num" }, d.missingUsage.length),
                    h("td", { class: "num" }, d.missingCharges.length),
                    h("td", { class: "num" }, d.mismatched.length),
                    h("td", { class: "num" }, d.healed),
                    h("td", { class: "num" }, d.stillMissing.length),
                    h(
                      "td",
                      { class: "small" },
                      d.balanceDrift ? `${fmtMoney(d.balanceDrift.balance)} vs ledger ${fmtMoney(d.balanceDrift.ledgerSum)}` : "—",
                    ),
                  ),
                ),
            ),
            "compact",
          )
        : null,
    );
    if (!clean) this.refreshFailed();
  }

  private reconcileEvent(e: Envelope<ReconcileDifferencesEventData>): void {
    const list = this.el.querySelector<HTMLElement>("#reconcile-events")!;
    const d = e.data;
    const users = (d.sample as { userId?: string }[])
      .map((s) => s.userId)
      .filter(Boolean)
      .join(", ");
    list.prepend(
      h(
        "li",
        { "data-type": e.type, "data-seq": e.seq ?? "" },
        h("time", null, fmtTime(e.timestamp)),
        ` ${d.differences} difference(s), ${d.healed} healed`,
        users ? ` — ${users}` : "",
      ),
    );
    while (list.children.length > 20) list.lastElementChild?.remove();
    if (list.nextElementSibling?.classList.contains("empty")) list.nextElementSibling.remove();
  }
}
