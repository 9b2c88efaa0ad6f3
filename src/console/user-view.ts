/**
 * "My account": quota, balance, active allocations with a live countdown, usage, queue
 * entries and reservations, and the user's live feed. Everything refreshes from the feed's
 * events; a reconnect that missed events reloads it all.
 */
import {
  ApiClient,
  type Allocation,
  type AllocationResult,
  type QueueEntry,
  type Reservation,
  type UsageReport,
} from "../client/api-client";
import { FeedClient } from "../client/feed-client";
import type { AllocationEventData, Envelope, ExtendedEventData, FeedEvent } from "../feed/protocol";
import {
  act,
  card,
  countdown,
  fill,
  fmtDateTime,
  fmtDuration,
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
import type { Identity } from "./session";

/** An allocation as this view keeps it: the event's fields, with times as epoch ms (lists give ms, events ISO). */
type AllocRow = Omit<AllocationEventData, "allocatedAt" | "expiresAt" | "durationMinutes"> & {
  allocatedAt: number | null;
  expiresAt: number | null;
};

const USAGE_WAIT_MS = 30_000;

export class UserView {
  readonly el: HTMLElement;
  readonly feed: FeedClient;
  private readonly allocs = new Map<string, AllocRow>();
  private readonly expiring = new Set<string>();
  /** Released here or by an event: a list fetched before that must not bring them back. */
  private readonly ended = new Set<string>();
  /** When an answer or event last changed an allocation here (a list asked for before that is older). */
  private readonly touched = new Map<string, number>();
  /** Allocations whose expiry passed without a release event yet (looked up once). */
  private readonly overdueChecked = new Set<string>();
  /** allocationId → give up waiting for its usage record at this time. */
  private readonly awaitingUsage = new Map<string, number>();
  private usageTimer: ReturnType<typeof setTimeout> | null = null;
  /**
   * Pools whose queue and reservations are listed (the API lists them per pool, and a user
   * cannot list pools): the default, and every pool this user used in this browser.
   */
  private readonly pools: Set<string>;
  private events!: EventList;
  private helloCount = 0;

  private readonly refreshQuota = refresher(() => this.loadQuota());
  private readonly refreshBalance = refresher(() => this.loadBalance());
  private readonly refreshAllocations = refresher(() => this.loadAllocations());
  private readonly refreshUsage = refresher(async () => void (await this.loadUsage()), 50);
  private readonly refreshQueue = refresher(() => this.loadQueue());

  constructor(
    private readonly api: ApiClient,
    private readonly me: Identity,
    baseUrl: string,
    private readonly feedStateEl: HTMLElement,
  ) {
    this.feed = new FeedClient({ baseUrl, token: () => me.token, feed: "user" });
    this.pools = new Set(["default", ...readPools(me.userId)]);
    this.el = this.build();
  }

  // ---- layout -----------------------------------------------------------------------------

  private build(): HTMLElement {
    const poolList = h("datalist", { id: "known-pools" });
    const form = h(
      "form",
      { id: "allocate-form", class: "form-grid", "aria-label": "Allocate a device" },
      h(
        "label",
        null,
        "Pool",
        h("input", {
          name: "pool",
          value: "default",
          required: true,
          list: "known-pools",
          autocomplete: "off",
          spellcheck: "false",
        }),
      ),
      h("label", null, "Minutes", h("input", { name: "durationMinutes", type: "number", min: 1, max: 1440, value: 30, required: true })),
      h("label", null, "CPU cores", h("input", { name: "cpuCores", type: "number", min: 0, max: 1024, placeholder: "any" })),
      h("label", null, "Memory MB", h("input", { name: "memoryMB", type: "number", min: 0, step: 1024, placeholder: "any" })),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "submit", id: "allocate-submit", class: "primary" }, "Allocate"),
        h("button", { type: "button", id: "queue-join", title: "Wait for a fitting device if none is free" }, "Wait in queue"),
      ),
      h("p", { class: "msg", role: "status", id: "allocate-msg" }),
      poolList,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.allocate(form, form.querySelector<HTMLButtonElement>("#allocate-submit"));
    });
    form
      .querySelector<HTMLButtonElement>("#queue-join")!
      .addEventListener("click", (ev) => void this.joinQueue(form, ev.currentTarget as HTMLButtonElement));

    const allocBody = h("tbody", { id: "allocations" });
    const usageBody = h("tbody", { id: "usage" });
    const queueBody = h("tbody", { id: "queue-entries" });
    const rsvBody = h("tbody", { id: "reservations" });
    const events = h("ol", { id: "events", class: "events" });
    this.events = new EventList(events);

    return h(
      "div",
      { class: "grid", id: "view-user" },
      card(
        "Quota",
        { id: "quota-card", extra: h("span", { class: "head-extra", id: "quota-status" }) },
        h("div", { id: "quota" }, h("p", { class: "muted" }, "Loading…")),
        h("p", { class: "msg", id: "quota-msg" }),
      ),
      card(
        "Balance",
        { id: "balance-card" },
        h("div", { id: "balance" }, h("p", { class: "muted" }, "Loading…")),
        h("p", { class: "msg", id: "balance-msg" }),
      ),
      card("Allocate a device", { id: "allocate-card" }, form),
      card(
        "Active allocations",
        {
          id: "allocations-card",
          cls: "wide",
          extra: h("span", { class: "head-extra muted", id: "allocations-count" }),
        },
        h(
          "div",
          { class: "scroll" },
          table(["Device", "Pool / node", "Spec", "Allocated", "Time left", "Extend", ""], allocBody, "allocs"),
        ),
        h("p", { class: "empty muted", id: "allocations-empty" }, "No active allocations."),
        h("p", { class: "msg", id: "allocations-msg" }),
      ),
      card(
        "Usage this month",
        { id: "usage-card", cls: "wide", extra: h("span", { class: "head-extra muted", id: "usage-totals" }) },
        h("p", { class: "muted", id: "usage-waiting", hidden: true }),
        scrollTable(
          ["Allocation", "Device", "Spec", "Duration", "Charge", "Released", "Reason"],
          usageBody,
          "No usage booked this month yet.",
        ),
        h("p", { class: "msg", id: "usage-msg" }),
      ),
      card(
        "Queue and reservations",
        { id: "queue-card", cls: "wide" },
        h("h3", null, "Waiting queue"),
        scrollTable(["Entry", "Pool", "Status", "Position", "Estimated start", "Joined", ""], queueBody, "No queue entries."),
        h("h3", null, "Reservations"),
        scrollTable(["Reservation", "Pool", "Device", "Status", "Window", ""], rsvBody, "No reservations."),
        h("p", { class: "msg", id: "queue-msg" }),
      ),
      card(
        "Live events",
        { id: "events-card", cls: "wide" },
        events,
        h("p", { class: "empty muted" }, "Events of your feed appear here as they happen."),
      ),
    );
  }

  private usePool(pool: string): void {
    if (this.pools.has(pool)) return;
    this.pools.add(pool);
    // A pool seen for the first time may hold entries and reservations of this user.
    this.refreshQueue();
    try {
      localStorage.setItem(poolsKey(this.me.userId), JSON.stringify([...this.pools].slice(-20)));
    } catch {
      /* storage full or off: this page still knows */
    }
  }

  // ---- start ------------------------------------------------------------------------------

  start(): void {
    bindFeedState(this.feedStateEl, this.feed, "feed");
    this.feed.onEvent((e) => this.onEvent(e));
    this.feed.onHello((hello) => {
      this.helloCount += 1;
      if (hello.missed) this.events.note(`${hello.missed.count} event(s) were missed and are no longer kept; everything was reloaded.`);
      // A reconnect may have missed events: reload what they would have changed.
      if (this.helloCount > 1) this.refreshAll();
    });
    this.feed.start().catch(() => {
      /* shown by the state badge */
    });
    this.refreshAll();
  }

  private refreshAll(): void {
    this.refreshQuota();
    this.refreshBalance();
    this.refreshAllocations();
    this.refreshUsage();
    this.refreshQueue();
  }

  /** Called every second: countdowns are updated by the page; here, expiries that no event closed. */
  onTick(now: number): void {
    for (const a of this.allocs.values()) {
      if (a.expiresAt !== null && now > a.expiresAt + 5_000 && !this.overdueChecked.has(a.allocationId)) {
        this.overdueChecked.add(a.allocationId);
        this.refreshAllocations();
      }
    }
  }

  // ---- feed -------------------------------------------------------------------------------

  private onEvent(e: FeedEvent): void {
    this.events.add(e as Envelope);
    switch (e.type) {
      case "device.allocated":
        this.upsert(fromEvent(e.data));
        this.refreshQuota();
        break;
      case "device.extended":
        this.expiring.delete(e.data.allocationId);
        this.upsert(fromEvent(e.data as ExtendedEventData));
        this.refreshQuota();
        break;
      case "device.expiring":
        this.expiring.add(e.data.allocationId);
        this.renderAllocations();
        break;
      case "device.released":
        this.ended.add(e.data.allocationId);
        this.remove(e.data.allocationId);
        this.refreshQuota();
        this.awaitUsage(e.data.allocationId);
        break;
      default:
        if (e.type.startsWith("quota.")) this.refreshQuota();
        else if (e.type.startsWith("billing.")) this.refreshBalance();
        else if (e.type.startsWith("queue.") || e.type.startsWith("reservation.")) {
          const pool = (e.data as { pool?: string }).pool;
          if (pool) this.usePool(pool);
          this.refreshQueue();
        }
    }
  }

  // ---- quota and balance ------------------------------------------------------------------

  private async loadQuota(): Promise<void> {
    const slot = this.el.querySelector<HTMLElement>("#quota-msg");
    try {
      const q = await this.api.quota(this.me.userId);
      showError(slot, null);
      const l = q.limits;
      const u = q.usage;
      const row = (label: string, used: number | undefined, max: number | undefined, fmt: (n: number) => string = String) => {
        const usedN = used ?? 0;
        const ratio = max ? Math.min(1, usedN / max) : 0;
        return h(
          "tr",
          { "data-limit": label },
          h("th", { scope: "row" }, label),
          h("td", { class: "num" }, fmt(Math.round(usedN * 1000) / 1000)),
          h("td", { class: "num" }, max === undefined ? "—" : fmt(max)),
          h(
            "td",
            { class: "meter-cell" },
            h("meter", {
              min: 0,
              max: 1,
              low: 0.7,
              high: 0.9,
              optimum: 0,
              value: ratio,
              "aria-label": `${label} used`,
            }),
          ),
        );
      };
      fill(this.el.querySelector("#quota-status")!, pill(q.status));
      fill(
        this.el.querySelector("#quota")!,
        h(
          "dl",
          { class: "kv" },
          h("dt", null, "Plan"),
          h("dd", { id: "quota-plan" }, q.plan),
          h("dt", null, "Valid until"),
          h("dd", null, fmtDateTime(q.validUntil)),
          h("dt", null, "Period from"),
          h("dd", null, fmtDateTime(q.periodStart)),
        ),
        table(
          ["", "Used", "Limit", ""],
          h(
            "tbody",
            null,
            row("Devices", u.devices, l.maxDevices),
            row("CPU cores", u.cpuCores, l.maxCpuCores),
            row("Memory", u.memoryMB, l.maxMemoryMB, fmtMB),
            row("Storage", u.storageMB, l.maxStorageMB, fmtMB),
            row("Device-hours", u.deviceHours, l.maxDeviceHoursPerPeriod),
          ),
          "compact",
        ),
        h(
          "p",
          { class: "muted small" },
          `Per device at most ${l.maxCpuCoresPerDevice} cpu · ${fmtMB(l.maxMemoryMBPerDevice)} · ${fmtMB(l.maxStorageMBPerDevice)}`,
        ),
      );
    } catch (err) {
      showError(slot, err);
    }
  }

  private async loadBalance(): Promise<void> {
    const slot = this.el.querySelector<HTMLElement>("#balance-msg");
    try {
      const b = await this.api.balance(this.me.userId);
      showError(slot, null);
      fill(
        this.el.querySelector("#balance")!,
        h("p", { class: `big ${b.balance <= 0 ? "neg" : ""}`, id: "balance-amount" }, fmtMoney(b.balance, b.currency)),
        b.lowBalance ? h("p", null, pill("low_balance"), ` below ${fmtMoney(b.lowBalanceThreshold, b.currency)}`) : null,
        h(
          "dl",
          { class: "kv" },
          h("dt", null, "Pricing plan"),
          h("dd", null, b.planId),
          h("dt", null, "Low at"),
          h("dd", null, fmtMoney(b.lowBalanceThreshold, b.currency)),
        ),
      );
    } catch (err) {
      showError(slot, err);
    }
  }

  // ---- allocations ------------------------------------------------------------------------

  private async loadAllocations(): Promise<void> {
    const slot = this.el.querySelector<HTMLElement>("#allocations-msg");
    const asked = performance.now();
    try {
      const page = await this.api.allocations({ status: "active", limit: 200 });
      showError(slot, null);
      const next = new Map<string, AllocRow>();
      // What an answer or an event brought while the list was on its way is newer than the list.
      for (const [id, at] of this.touched) if (at > asked && this.allocs.has(id)) next.set(id, this.allocs.get(id)!);
      for (const a of page.items) {
        if (this.ended.has(a.allocationId)) continue;
        if (next.has(a.allocationId)) continue;
        const row = fromView(a);
        const known = this.allocs.get(a.allocationId);
        if (known?.node && !row.node) row.node = known.node;
        next.set(row.allocationId, row);
        this.usePool(row.pool);
      }
      this.allocs.clear();
      for (const [k, v] of next) this.allocs.set(k, v);
      this.renderAllocations();
    } catch (err) {
      showError(slot, err);
    }
  }

  private upsert(row: AllocRow): void {
    if (this.ended.has(row.allocationId)) return;
    const known = this.allocs.get(row.allocationId);
    if (known?.node && !row.node) row.node = known.node;
    this.allocs.set(row.allocationId, row);
    this.touched.set(row.allocationId, performance.now());
    this.usePool(row.pool);
    this.renderAllocations();
  }

  private remove(allocationId: string): void {
    this.allocs.delete(allocationId);
    this.expiring.delete(allocationId);
    this.renderAllocations();
  }

  private renderAllocations(): void {
    const items = [...this.allocs.values()].sort((a, b) => (a.expiresAt ?? Infinity) - (b.expiresAt ?? Infinity));
    syncRows(
      this.el.querySelector("#allocations")!,
      items,
      (a) => a.allocationId,
      (a) => this.allocationRow(a),
      (a) => JSON.stringify([a, this.expiring.has(a.allocationId)]),
    );
    this.el.querySelector<HTMLElement>("#allocations-empty")!.hidden = items.length > 0;
    this.el.querySelector("#allocations-count")!.textContent = items.length ? `${items.length} active` : "";
    fill(
      this.el.querySelector("#known-pools")!,
      [...this.pools].map((p) => h("option", { value: p })),
    );
  }

  private allocationRow(a: AllocRow): HTMLElement {
    const msg = h("span", { class: "msg row-msg", role: "status" });
    const minutes = h("input", {
      type: "number",
      name: "additionalMinutes",
      min: 1,
      max: 1440,
      value: 15,
      class: "mini",
      "aria-label": `Minutes to add to ${a.deviceId ?? a.allocationId}`,
    });
    const extend = h("button", { type: "button", class: "extend" }, "Extend");
    const release = h("button", { type: "button", class: "release danger" }, "Release");
    extend.addEventListener(
      "click",
      () =>
        void act(extend, msg, async () => {
          const r = await this.api.extend(a.allocationId, Number(minutes.value));
          this.expiring.delete(a.allocationId);
          this.upsert(fromResult(r));
        }),
    );
    release.addEventListener(
      "click",
      () =>
        void act(release, msg, async () => {
          if (!a.deviceId) throw new Error("this allocation has no device yet");
          await this.api.release(a.deviceId);
          this.ended.add(a.allocationId);
          this.remove(a.allocationId);
          this.refreshQuota();
          this.awaitUsage(a.allocationId);
        }),
    );
    return h(
      "tr",
      {
        "data-allocation-id": a.allocationId,
        "data-device-id": a.deviceId ?? "",
        class: this.expiring.has(a.allocationId) ? "expiring" : "",
      },
      h("td", null, h("strong", { class: "mono" }, a.deviceId ?? "—"), h("div", { class: "muted small" }, shortId(a.allocationId, 18))),
      h("td", null, a.pool, h("div", { class: "muted small" }, a.node ?? "")),
      h("td", { class: "small" }, fmtSpec(a)),
      h("td", { class: "small" }, fmtTime(a.allocatedAt)),
      h("td", null, countdown(a.expiresAt)),
      h("td", { class: "nowrap" }, minutes, " ", extend),
      h("td", { class: "nowrap" }, release, msg),
    );
  }

  private async allocate(form: HTMLFormElement, button: HTMLButtonElement | null): Promise<void> {
    const slot = form.querySelector<HTMLElement>("#allocate-msg");
    const r = await act(button, slot, () =>
      this.api.allocate({
        pool: fieldOf(form, "pool") || undefined,
        durationMinutes: Number(fieldOf(form, "durationMinutes")),
        spec: specOf(form),
      }),
    );
    if (!r) return;
    this.upsert(fromResult(r));
    this.refreshQuota();
    showOk(slot, `Allocated ${r.deviceId} (${r.pool}/${r.node}) until ${fmtTime(r.expiresAt)}.`);
  }

  private async joinQueue(form: HTMLFormElement, button: HTMLButtonElement): Promise<void> {
    const slot = form.querySelector<HTMLElement>("#allocate-msg");
    const pool = fieldOf(form, "pool") || undefined;
    const r = await act(button, slot, () =>
      this.api.joinQueue({ pool, durationMinutes: Number(fieldOf(form, "durationMinutes")), spec: specOf(form) }),
    );
    if (!r) return;
    this.usePool(r.pool);
    this.refreshQueue();
    showOk(slot, r.status === "fulfilled" ? `Served at once: ${r.deviceId}.` : `In the queue of ${r.pool}, position ${r.position ?? "—"}.`);
  }

  // ---- usage ------------------------------------------------------------------------------

  private async loadUsage(): Promise<UsageReport | null> {
    const slot = this.el.querySelector<HTMLElement>("#usage-msg");
    try {
      const r = await this.api.usage(this.me.userId, { limit: 20 });
      showError(slot, null);
      this.el.querySelector("#usage-totals")!.textContent =
        `${r.totals.records} record(s) · ${r.totals.deviceHours} device-hours · ${fmtMoney(r.totals.charges, r.currency)}`;
      syncRows(
        this.el.querySelector("#usage")!,
        r.items,
        (u) => u.allocationId,
        (u) =>
          h(
            "tr",
            { "data-allocation-id": u.allocationId },
            h("td", null, shortId(u.allocationId, 18)),
            h("td", { class: "mono" }, u.deviceId),
            h("td", { class: "small" }, fmtSpec(u)),
            h("td", null, fmtDuration(u.durationSeconds)),
            h("td", { class: "num" }, fmtMoney(u.charge, r.currency)),
            h("td", { class: "small" }, fmtTime(u.releasedAt)),
            h("td", null, u.reason),
          ),
      );
      return r;
    } catch (err) {
      showError(slot, err);
      return null;
    }
  }

  /** Usage is booked asynchronously (queue → D1): look again every second until it shows, at most 30 s. */
  private awaitUsage(allocationId: string): void {
    this.awaitingUsage.set(allocationId, Date.now() + USAGE_WAIT_MS);
    this.showAwaiting();
    if (!this.usageTimer) this.usageTimer = setTimeout(() => void this.pollUsage(), 1_000);
  }

  private async pollUsage(): Promise<void> {
    this.usageTimer = null;
    const r = await this.loadUsage();
    const booked = new Set(r?.items.map((u) => u.allocationId) ?? []);
    const now = Date.now();
    let gotOne = false;
    for (const [id, until] of this.awaitingUsage) {
      if (booked.has(id)) {
        this.awaitingUsage.delete(id);
        gotOne = true;
      } else if (now > until) {
        this.awaitingUsage.delete(id);
        this.events.note(`The usage of ${id} was not booked within ${USAGE_WAIT_MS / 1000} s; it shows once billing catches up.`);
      }
    }
    // A booked record is charged: the balance moved.
    if (gotOne) this.refreshBalance();
    this.showAwaiting();
    if (this.awaitingUsage.size) this.usageTimer = setTimeout(() => void this.pollUsage(), 1_000);
  }

  private showAwaiting(): void {
    const el = this.el.querySelector<HTMLElement>("#usage-waiting")!;
    el.hidden = this.awaitingUsage.size === 0;
    el.textContent = this.awaitingUsage.size ? `Booking usage of ${[...this.awaitingUsage.keys()].join(", ")}…` : "";
  }

  // ---- queue and reservations -------------------------------------------------------------

  private async loadQueue(): Promise<void> {
    const slot = this.el.querySelector<HTMLElement>("#queue-msg");
    // The lists are per pool: ask every pool this page has seen the user use.
    const pools = [...this.pools];
    try {
      const [queues, reservations] = await Promise.all([
        Promise.all(pools.map((pool) => this.api.queue({ pool, userId: this.me.userId, limit: 20 }).catch(notFoundAsEmpty))),
        Promise.all(pools.map((pool) => this.api.reservations({ pool, userId: this.me.userId, limit: 20 }).catch(notFoundAsEmpty))),
      ]);
      showError(slot, null);
      const entries = queues
        .flatMap((q) => q.items)
        .sort((a, b) => b.joinedAt.localeCompare(a.joinedAt))
        .slice(0, 20);
      const rsvs = reservations
        .flatMap((r) => r.items)
        .sort((a, b) => b.startAt.localeCompare(a.startAt))
        .slice(0, 20);
      syncRows(
        this.el.querySelector("#queue-entries")!,
        entries,
        (q) => q.entryId,
        (q) => this.queueRow(q),
      );
      syncRows(
        this.el.querySelector("#reservations")!,
        rsvs,
        (r) => r.reservationId,
        (r) => this.reservationRow(r),
      );
    } catch (err) {
      showError(slot, err);
    }
  }

  /** A row's last cell: its cancel button (when `show`) and message slot; the lists are read again after. */
  private cancelCell(show: boolean, label: string, cancel: () => Promise<unknown>): HTMLElement {
    const msg = h("span", { class: "msg row-msg" });
    const button = show ? h("button", { type: "button", class: "cancel" }, label) : null;
    button?.addEventListener(
      "click",
      () =>
        void act(button, msg, async () => {
          await cancel();
          this.refreshQueue();
        }),
    );
    return h("td", { class: "nowrap" }, button, msg);
  }

  private queueRow(q: QueueEntry): HTMLElement {
    return h(
      "tr",
      { "data-entry-id": q.entryId, "data-status": q.status },
      h("td", null, shortId(q.entryId, 18)),
      h("td", null, q.pool),
      h("td", null, pill(q.status), q.error ? h("div", { class: "small error" }, `${q.error.code}: ${q.error.message}`) : null),
      h("td", { class: "num" }, q.position ?? "—"),
      h("td", { class: "small" }, q.estimatedStartAt ? fmtTime(q.estimatedStartAt) : "—"),
      h("td", { class: "small" }, fmtTime(q.joinedAt)),
      this.cancelCell(q.status === "waiting" || q.status === "offered", "Leave", () => this.api.cancelQueueEntry(q.entryId)),
    );
  }

  private reservationRow(r: Reservation): HTMLElement {
    return h(
      "tr",
      { "data-reservation-id": r.reservationId, "data-status": r.status },
      h("td", null, shortId(r.reservationId, 18)),
      h("td", null, r.pool),
      h("td", { class: "mono" }, r.deviceId ?? "—"),
      h("td", null, pill(r.status), r.error ? h("div", { class: "small error" }, `${r.error.code}: ${r.error.message}`) : null),
      h("td", { class: "small" }, windowText(r.startAt, r.endAt)),
      this.cancelCell(r.status === "pending" || r.status === "confirmed", "Cancel", () => this.api.cancelReservation(r.reservationId)),
    );
  }
}

// ---- helpers --------------------------------------------------------------------------------

/** `2026-12-03 09:00 – 10:00` (the end's date only when it is another day). */
function windowText(start: string, end: string): string {
  const a = fmtDateTime(start);
  const b = fmtDateTime(end);
  return `${a} – ${a.slice(0, 10) === b.slice(0, 10) ? b.slice(11) : b}`;
}

const poolsKey = (userId: string) => `eda.console.pools.${userId}`;

function readPools(userId: string): string[] {
  try {
    const v = JSON.parse(localStorage.getItem(poolsKey(userId)) ?? "[]") as unknown;
    return Array.isArray(v) ? v.filter((p): p is string => typeof p === "string") : [];
  } catch {
    return [];
  }
}

const fieldOf = (form: HTMLFormElement, name: string) => (form.elements.namedItem(name) as HTMLInputElement | null)?.value.trim() ?? "";

function specOf(form: HTMLFormElement): { cpuCores?: number; memoryMB?: number } | undefined {
  const spec: { cpuCores?: number; memoryMB?: number } = {};
  const cpu = fieldOf(form, "cpuCores");
  const mem = fieldOf(form, "memoryMB");
  if (cpu) spec.cpuCores = Number(cpu);
  if (mem) spec.memoryMB = Number(mem);
  return Object.keys(spec).length ? spec : undefined;
}

/** A pool that has no devices yet has no queue: nothing to show, not an error. */
function notFoundAsEmpty(err: unknown): { items: never[]; waiting: number } {
  if ((err as { status?: number })?.status === 404) return { items: [], waiting: 0 };
  throw err;
}

const fromView = (a: Allocation): AllocRow => ({
  allocationId: a.allocationId,
  deviceId: a.deviceId,
  pool: a.pool,
  node: null,
  cpuCores: a.cpuCores,
  memoryMB: a.memoryMB,
  storageMB: a.storageMB,
  allocatedAt: a.allocatedAt,
  expiresAt: a.expiresAt,
});

const fromResult = (a: AllocationResult): AllocRow => ({
  allocationId: a.allocationId,
  deviceId: a.deviceId,
  pool: a.pool,
  node: a.node,
  cpuCores: a.cpuCores,
  memoryMB: a.memoryMB,
  storageMB: a.storageMB,
  allocatedAt: toMs(a.allocatedAt),
  expiresAt: toMs(a.expiresAt),
});

const fromEvent = (d: AllocationEventData): AllocRow => ({
  allocationId: d.allocationId,
  deviceId: d.deviceId,
  pool: d.pool,
  node: d.node,
  cpuCores: d.cpuCores,
  memoryMB: d.memoryMB,
  storageMB: d.storageMB,
  allocatedAt: toMs(d.allocatedAt),
  expiresAt: toMs(d.expiresAt),
});
