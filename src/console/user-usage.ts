/**
 * "Usage this month": the user's booked usage records. A record is booked asynchronously after
 * its allocation ends (queue → D1); the feed's `billing.charged` says when, so the list is read
 * then, once, instead of being polled.
 */
import type { ApiClient, UsageItem, UsageReport } from "../client/api-client";
import type { ChargedEventData } from "../feed/protocol";
import { card, h, refresher, scrollTable, shortId, showError, syncRows } from "./dom";
import { fmtDateTime, fmtDuration, fmtMoney, fmtSpec } from "./format";

/** How long the "booking usage" line waits for `billing.charged` before it says billing is behind. */
const USAGE_LATE_MS = 60_000;
/** The chart wants every record of the month; the table shows the newest. */
const PAGE = 200;
const MAX_PAGES = 5;
const TABLE_ROWS = 20;

/** The month's usage as read: every record (up to MAX_PAGES pages) and the totals. */
export interface MonthUsage {
  from: string;
  to: string;
  currency: string;
  totals: UsageReport["totals"];
  items: UsageItem[];
  /** More records than were read (the chart shows what was read, the totals are the API's). */
  partial: boolean;
}

export class UsagePanel {
  readonly el: HTMLElement;
  readonly refresh = refresher(() => this.load(), 50);
  /** Allocations that ended here and whose record has not been booked yet → since when. */
  private readonly awaiting = new Map<string, number>();
  private lateTimer: ReturnType<typeof setTimeout> | null = null;

  /** `read` gets every successful read (for the month's chart). */
  constructor(
    private readonly api: ApiClient,
    private readonly userId: string,
    private readonly read: (m: MonthUsage) => void,
  ) {
    const usageBody = h("tbody", { id: "usage" });
    this.el = card(
      "Usage this month",
      { id: "usage-card", cls: "wide", extra: h("span", { class: "head-extra muted", id: "usage-totals" }) },
      h("p", { class: "muted", id: "usage-waiting", role: "status", hidden: true }),
      scrollTable(
        ["Allocation", "Device", "Spec", "Duration", "Charge", "Released", "Reason"],
        usageBody,
        "No usage booked this month yet.",
        "stack",
      ),
      h("p", { class: "msg", id: "usage-msg" }),
    );
  }

  private async load(): Promise<void> {
    const slot = this.el.querySelector<HTMLElement>("#usage-msg");
    try {
      const first = await this.api.usage(this.userId, { limit: PAGE });
      const items = [...first.items];
      let cursor = first.nextCursor;
      for (let pages = 1; cursor && pages < MAX_PAGES; pages++) {
        const next = await this.api.usage(this.userId, { from: first.from, to: first.to, cursor, limit: PAGE });
        items.push(...next.items);
        cursor = next.nextCursor;
      }
      showError(slot, null);
      const t = first.totals;
      this.el.querySelector("#usage-totals")!.textContent =
        `${t.records} record(s) · ${t.deviceHours} device-hours · ${fmtMoney(t.chargesMinor, t.currency)}`;
      syncRows(this.el.querySelector("#usage")!, items.slice(0, TABLE_ROWS), (u) => u.allocationId, usageRow);
      for (const u of items) this.awaiting.delete(u.allocationId);
      this.showAwaiting();
      this.read({ from: first.from, to: first.to, currency: first.currency, totals: t, items, partial: cursor !== null });
    } catch (err) {
      showError(slot, err);
    }
  }

  /** An allocation ended here: its record is on its way (`billing.charged` will say when it is booked). */
  awaitUsage(allocationId: string): void {
    if (!this.awaiting.has(allocationId)) this.awaiting.set(allocationId, Date.now());
    this.showAwaiting();
  }

  /** `billing.charged` on the feed: the record is booked; read the list once. */
  charged(d: ChargedEventData): void {
    this.awaiting.delete(d.allocationId);
    this.showAwaiting();
    this.refresh();
  }

  private showAwaiting(): void {
    const el = this.el.querySelector<HTMLElement>("#usage-waiting")!;
    const now = Date.now();
    const ids = [...this.awaiting.keys()];
    const late = [...this.awaiting.values()].some((since) => now - since >= USAGE_LATE_MS);
    el.hidden = ids.length === 0;
    el.textContent = !ids.length
      ? ""
      : late
        ? `The usage of ${ids.join(", ")} is not booked yet; it shows here once billing catches up.`
        : `Booking usage of ${ids.join(", ")}…`;
    // One look later to word it as late: a timer of the page, not a request.
    if (this.lateTimer) clearTimeout(this.lateTimer);
    const due = Math.min(...[...this.awaiting.values()].map((since) => since + USAGE_LATE_MS - now));
    this.lateTimer = ids.length && !late ? setTimeout(() => this.showAwaiting(), due) : null;
  }
}

function usageRow(u: UsageItem): HTMLElement {
  return h(
    "tr",
    { "data-allocation-id": u.allocationId },
    h("td", null, shortId(u.allocationId, 18)),
    h("td", { class: "mono" }, u.deviceId),
    h("td", { class: "small" }, fmtSpec(u)),
    h("td", null, fmtDuration(u.durationSeconds)),
    h("td", { class: "num" }, fmtMoney(u.chargeMinor, u.currency)),
    h("td", { class: "small" }, fmtDateTime(u.releasedAt)),
    h("td", null, u.reason),
  );
}
