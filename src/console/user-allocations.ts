/**
 * "Active allocations": the user's allocations with a live countdown, extend and release.
 * Kept from the list, the API's answers and the feed's events; a list fetched before an answer
 * or an event does not undo it.
 */
import type { Allocation, AllocationResult, ApiClient, ExtendResult } from "../client/api-client";
import type { AllocationEventData, ExtendedEventData } from "../feed/protocol";
import { card, countdown, errorText, h, refresher, shortId, showError, syncRows, table } from "./dom";
import { fmtDateTime, fmtSpec, toMs } from "./format";

/** An allocation as this view keeps it: the event's fields, with times as epoch ms (lists give ms, events ISO). */
type AllocRow = Omit<AllocationEventData, "allocatedAt" | "expiresAt" | "durationMinutes"> & {
  allocatedAt: number | null;
  expiresAt: number | null;
};

export interface AllocationsHooks {
  /** The user released an allocation here (its device is free; its usage is on its way). */
  released(allocationId: string): void;
}

export class AllocationsPanel {
  readonly el: HTMLElement;
  readonly refresh = refresher(() => this.load());
  private readonly allocs = new Map<string, AllocRow>();
  private readonly expiring = new Set<string>();
  /** Released here or by an event: a list fetched before that must not bring them back. */
  private readonly ended = new Set<string>();
  /** When an answer or event last changed an allocation here (a list asked for before that is older). */
  private readonly touched = new Map<string, number>();
  /** Allocations whose expiry passed without a release event yet (looked up once). */
  private readonly overdueChecked = new Set<string>();
  /** Each row's status line (its last extend or release: a confirmation or the API's error), kept across redraws. */
  private readonly rowStatus = new Map<string, { ok: boolean; text: string }>();
  /** Rows whose extend or release is on its way (their buttons are disabled). */
  private readonly busy = new Set<string>();
  /** The minutes typed into a row's extend field, kept across redraws. */
  private readonly minutesTyped = new Map<string, string>();

  constructor(
    private readonly api: ApiClient,
    private readonly hooks: AllocationsHooks,
  ) {
    const allocBody = h("tbody", { id: "allocations" });
    this.el = card(
      "Active allocations",
      {
        id: "allocations-card",
        cls: "wide",
        extra: h("span", { class: "head-extra muted", id: "allocations-count" }),
      },
      h(
        "div",
        { class: "scroll" },
        table(["Device", "Pool / node", "Spec", "Allocated", "Time left", "Extend", ""], allocBody, "allocs stack"),
      ),
      h("p", { class: "empty muted", id: "allocations-empty" }, "No active allocations."),
      h("p", { class: "msg", id: "allocations-msg" }),
    );
  }

  /** Every second: an expiry that no event closed is looked up once. */
  onTick(now: number): void {
    for (const a of this.allocs.values()) {
      if (a.expiresAt !== null && now > a.expiresAt + 5_000 && !this.overdueChecked.has(a.allocationId)) {
        this.overdueChecked.add(a.allocationId);
        this.refresh();
      }
    }
  }

  /** The API's answer to an allocate. */
  allocated(r: AllocationResult): void {
    this.upsert(fromResult(r));
  }

  /** `device.allocated` on the feed. */
  onAllocated(d: AllocationEventData): void {
    this.upsert(fromEvent(d));
  }

  /** `device.extended` on the feed. */
  onExtended(d: ExtendedEventData): void {
    this.expiring.delete(d.allocationId);
    this.upsert(fromEvent(d));
  }

  /** `device.expiring` on the feed. */
  onExpiring(allocationId: string): void {
    this.expiring.add(allocationId);
    this.render();
  }

  /** `device.released` on the feed. */
  onReleased(allocationId: string): void {
    this.ended.add(allocationId);
    this.remove(allocationId);
  }

  private async load(): Promise<void> {
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
      }
      this.allocs.clear();
      for (const [k, v] of next) this.allocs.set(k, v);
      this.render();
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
    this.render();
  }

  private remove(allocationId: string): void {
    this.allocs.delete(allocationId);
    this.expiring.delete(allocationId);
    this.rowStatus.delete(allocationId);
    this.minutesTyped.delete(allocationId);
    this.render();
  }

  private render(): void {
    const items = [...this.allocs.values()].sort((a, b) => (a.expiresAt ?? Infinity) - (b.expiresAt ?? Infinity));
    syncRows(
      this.el.querySelector("#allocations")!,
      items,
      (a) => a.allocationId,
      (a) => this.row(a),
      (a) => JSON.stringify([a, this.expiring.has(a.allocationId)]),
    );
    this.el.querySelector<HTMLElement>("#allocations-empty")!.hidden = items.length > 0;
    this.el.querySelector("#allocations-count")!.textContent = items.length ? `${items.length} active` : "";
  }

  /**
   * A row's action: its old status goes, its buttons wait, and the outcome (`fn`'s confirmation,
   * or the API's error) becomes the row's status line.
   */
  private async run(allocationId: string, fn: () => Promise<string | null>): Promise<void> {
    if (this.busy.has(allocationId)) return;
    this.busy.add(allocationId);
    this.rowStatus.delete(allocationId);
    this.paint(allocationId);
    try {
      const text = await fn();
      if (text) this.rowStatus.set(allocationId, { ok: true, text });
    } catch (err) {
      this.rowStatus.set(allocationId, { ok: false, text: errorText(err) });
    } finally {
      this.busy.delete(allocationId);
      this.paint(allocationId);
    }
  }

  /** Shows a row's busy state and status line in place (a redraw would take the focus and the typed minutes). */
  private paint(allocationId: string): void {
    const tr = this.el.querySelector<HTMLElement>(`tr[data-allocation-id="${CSS.escape(allocationId)}"]`);
    if (!tr) return;
    const busy = this.busy.has(allocationId);
    for (const b of Array.from(tr.querySelectorAll("button"))) {
      b.disabled = busy;
      if (busy) b.setAttribute("aria-busy", "true");
      else b.removeAttribute("aria-busy");
    }
    const status = this.rowStatus.get(allocationId);
    const msg = tr.querySelector(".row-msg");
    if (!msg) return;
    msg.textContent = status?.text ?? "";
    msg.classList.toggle("ok", status?.ok === true);
    msg.classList.toggle("error", status?.ok === false);
  }

  private row(a: AllocRow): HTMLElement {
    const status = this.rowStatus.get(a.allocationId);
    const busy = this.busy.has(a.allocationId);
    const msg = h("span", { class: `msg row-msg${status ? (status.ok ? " ok" : " error") : ""}`, role: "status" }, status?.text ?? "");
    const minutes = h("input", {
      type: "number",
      name: "additionalMinutes",
      min: 1,
      max: 1440,
      value: this.minutesTyped.get(a.allocationId) ?? 15,
      class: "mini",
      "aria-label": `Minutes to add to ${a.deviceId ?? a.allocationId}`,
    });
    minutes.addEventListener("input", () => this.minutesTyped.set(a.allocationId, minutes.value));
    const extend = h("button", { type: "button", class: "extend", disabled: busy }, "Extend");
    const release = h("button", { type: "button", class: "release danger", disabled: busy }, "Release");
    extend.addEventListener("click", () => {
      const n = Number(minutes.value);
      void this.run(a.allocationId, async () => {
        const r = await this.api.extend(a.allocationId, n);
        this.expiring.delete(a.allocationId);
        this.upsert(fromResult(r));
        return `Extended by ${n} min: until ${fmtDateTime(r.expiresAt)}.`;
      });
    });
    const connect = h("button", { type: "button", class: "connect", disabled: busy }, "Connect");
    connect.addEventListener("click", () => {
      // A fresh grant each time (it lasts an hour at most): the endpoints and the grant's end.
      void this.run(a.allocationId, async () => {
        const r = await this.api.renewAccess(a.allocationId);
        const endpoints = Object.entries(r.access).map(([name, value]) => `${name} ${value}`);
        const grant = r.accessGrantExpiresAt ? `access grant until ${fmtDateTime(r.accessGrantExpiresAt)}` : "no access grant";
        return `${endpoints.length ? endpoints.join(" · ") : "No endpoints registered"} — ${grant}.`;
      });
    });
    release.addEventListener("click", () => {
      void this.run(a.allocationId, async () => {
        if (!a.deviceId) throw new Error("this allocation has no device yet");
        await this.api.release(a.deviceId);
        this.ended.add(a.allocationId);
        this.remove(a.allocationId);
        this.hooks.released(a.allocationId);
        return null;
      });
    });
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
      h("td", { class: "small" }, fmtDateTime(a.allocatedAt)),
      h("td", null, countdown(a.expiresAt)),
      h("td", { class: "nowrap actions-cell" }, minutes, " ", extend),
      h("td", { class: "actions-cell" }, connect, " ", release, msg),
    );
  }
}

const fromView = (a: Allocation): AllocRow => ({
  allocationId: a.allocationId,
  deviceId: a.deviceId,
  pool: a.pool,
  node: null,
  cpuCores: a.cpuCores,
  memoryMB: a.memoryMB,
  storageMB: a.storageMB,
  allocatedAt: toMs(a.allocatedAt),
  expiresAt: toMs(a.expiresAt),
});

const fromResult = (a: AllocationResult | ExtendResult): AllocRow => ({
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
