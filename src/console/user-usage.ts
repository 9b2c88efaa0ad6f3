/** "Usage this month": the user's booked usage records, and the wait for those of allocations just ended. */
import type { ApiClient, UsageReport } from "../client/api-client";
import { card, fmtDuration, fmtMoney, fmtSpec, fmtTime, h, refresher, scrollTable, shortId, showError, syncRows } from "./dom";
import type { EventList } from "./feed-ui";

const USAGE_WAIT_MS = 30_000;

export class UsagePanel {
  readonly el: HTMLElement;
  readonly refresh = refresher(async () => void (await this.load()), 50);
  /** allocationId → give up waiting for its usage record at this time. */
  private readonly awaitingUsage = new Map<string, number>();
  private usageTimer: ReturnType<typeof setTimeout> | null = null;

  /** `booked` is called when a record waited for shows (it was charged: the balance moved). */
  constructor(
    private readonly api: ApiClient,
    private readonly userId: string,
    private readonly events: EventList,
    private readonly booked: () => void,
  ) {
    const usageBody = h("tbody", { id: "usage" });
    this.el = card(
      "Usage this month",
      { id: "usage-card", cls: "wide", extra: h("span", { class: "head-extra muted", id: "usage-totals" }) },
      h("p", { class: "muted", id: "usage-waiting", hidden: true }),
      scrollTable(
        ["Allocation", "Device", "Spec", "Duration", "Charge", "Released", "Reason"],
        usageBody,
        "No usage booked this month yet.",
      ),
      h("p", { class: "msg", id: "usage-msg" }),
    );
  }

  private async load(): Promise<UsageReport | null> {
    const slot = this.el.querySelector<HTMLElement>("#usage-msg");
    try {
      const r = await this.api.usage(this.userId, { limit: 20 });
      showError(slot, null);
      this.el.querySelector("#usage-totals")!.textContent =
        `${r.totals.records} record(s) · ${r.totals.deviceHours} device-hours · ${fmtMoney(r.totals.chargesMinor, r.totals.currency)}`;
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
            h("td", { class: "num" }, fmtMoney(u.chargeMinor, u.currency)),
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
  awaitUsage(allocationId: string): void {
    this.awaitingUsage.set(allocationId, Date.now() + USAGE_WAIT_MS);
    this.showAwaiting();
    if (!this.usageTimer) this.usageTimer = setTimeout(() => void this.pollUsage(), 1_000);
  }

  private async pollUsage(): Promise<void> {
    this.usageTimer = null;
    const r = await this.load();
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
    if (gotOne) this.booked();
    this.showAwaiting();
    if (this.awaitingUsage.size) this.usageTimer = setTimeout(() => void this.pollUsage(), 1_000);
  }

  private showAwaiting(): void {
    const el = this.el.querySelector<HTMLElement>("#usage-waiting")!;
    el.hidden = this.awaitingUsage.size === 0;
    el.textContent = this.awaitingUsage.size ? `Booking usage of ${[...this.awaitingUsage.keys()].join(", ")}…` : "";
  }
}
