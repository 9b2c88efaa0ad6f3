/**
 * One user's activity on their page (admins): the allocations they hold now (each with
 * force-release, confirmed first) and this month's usage. Their feed is user-page-feed.ts.
 */
import type { Allocation, ApiClient, UsageReport } from "../client/api-client";
import { confirmStep } from "./confirm-step";
import { act, card, countdown, h, refresher, scrollTable, shortId, showError, showOk, syncRows } from "./dom";
import { fmtDateTime, fmtDuration, fmtMoney, fmtSpec, toMs } from "./format";

export class UserAllocationsCard {
  readonly el: HTMLElement;
  readonly refresh = refresher(() => this.load());
  private readonly body: HTMLElement;
  private readonly msg: HTMLElement;
  private userId = "";

  constructor(
    private readonly api: ApiClient,
    /** An allocation was force-released here. */
    private readonly released: () => void,
    /** The device's node, as the fleet knows it (allocations do not say). */
    private readonly nodeOf: (deviceId: string) => string | undefined,
  ) {
    this.body = h("tbody", { id: "user-allocations" });
    this.msg = h("p", { class: "msg", role: "status", id: "user-allocations-msg" });
    this.el = card(
      "Allocations now",
      { id: "user-allocations-card", cls: "wide" },
      scrollTable(["Device", "Pool / node", "Spec", "Allocated", "Time left", ""], this.body, "No active allocations.", "stack"),
      this.msg,
    );
  }

  open(userId: string): void {
    this.userId = userId;
    this.body.replaceChildren();
    showOk(this.msg, "");
    this.refresh();
  }

  private async load(): Promise<void> {
    const id = this.userId;
    try {
      const page = await this.api.allocations({ userId: id, status: "active", limit: 200 });
      if (id !== this.userId) return;
      syncRows(
        this.body,
        // A pending one has no device yet: nothing to release.
        page.items.filter((a): a is Allocation & { deviceId: string } => a.deviceId !== null),
        (a) => a.allocationId,
        (a) => this.row(a),
        (a) => `${a.allocationId}:${a.expiresAt}`,
      );
    } catch (err) {
      showError(this.msg, err);
    }
  }

  private row(a: Allocation & { deviceId: string }): HTMLElement {
    const release = h("button", { type: "button", class: "force-release danger small-btn" }, "Force-release…");
    const slot = h("div", { class: "confirm-slot", hidden: true });
    release.addEventListener("click", () => void this.forceRelease(a, release, slot));
    return h(
      "tr",
      { "data-allocation-id": a.allocationId, "data-device-id": a.deviceId },
      h("td", { class: "mono" }, a.deviceId),
      h("td", null, `${a.pool} / ${this.nodeOf(a.deviceId) ?? "?"}`),
      h("td", { class: "small" }, fmtSpec(a)),
      h("td", { class: "small" }, fmtDateTime(a.allocatedAt)),
      h("td", null, countdown(toMs(a.expiresAt))),
      h("td", { class: "actions-cell" }, release, slot),
    );
  }

  private async forceRelease(a: Allocation & { deviceId: string }, button: HTMLButtonElement, slot: HTMLElement): Promise<void> {
    button.hidden = true;
    const ok = await confirmStep(slot, `${a.deviceId}: ${this.userId}'s allocation ${a.allocationId} ends now and is billed.`, {
      confirm: `Force-release ${a.deviceId}`,
      danger: true,
    });
    button.hidden = false;
    if (!ok) return;
    const r = await act(button, this.msg, () => this.api.forceRelease(a.deviceId));
    if (!r) return;
    showOk(this.msg, `Released ${r.allocationId} on ${r.deviceId} after ${fmtDuration(r.durationSeconds)}.`);
    this.refresh();
    this.released();
  }
}

export class UserUsageCard {
  readonly el: HTMLElement;
  readonly refresh = refresher(() => this.load(), 50);
  private readonly body: HTMLElement;
  private readonly totals: HTMLElement;
  private readonly msg: HTMLElement;
  private userId = "";

  constructor(private readonly api: ApiClient) {
    this.body = h("tbody", { id: "user-usage" });
    this.totals = h("p", { class: "muted", id: "user-usage-totals" });
    this.msg = h("p", { class: "msg", id: "user-usage-msg" });
    this.el = card(
      "Usage this month",
      { id: "user-usage-card", cls: "wide" },
      this.totals,
      scrollTable(["Allocation", "Device", "Spec", "Duration", "Charge", "Released", "Reason"], this.body, "No usage booked.", "stack"),
      this.msg,
    );
  }

  open(userId: string): void {
    this.userId = userId;
    this.body.replaceChildren();
    this.totals.textContent = "";
    this.refresh();
  }

  private async load(): Promise<void> {
    const id = this.userId;
    try {
      const r: UsageReport = await this.api.usage(id, { limit: 20 });
      if (id !== this.userId) return;
      showError(this.msg, null);
      const t = r.totals;
      this.totals.textContent =
        `${fmtDateTime(r.from)} – ${fmtDateTime(r.to)}: ${t.records} record(s), ${fmtDuration(t.durationSeconds)}, ` +
        `${Math.round(t.deviceHours * 100) / 100} device-hours, ${fmtMoney(t.chargesMinor, t.currency)} charged.`;
      syncRows(
        this.body,
        r.items,
        (u) => u.allocationId,
        (u) =>
          h(
            "tr",
            { "data-allocation-id": u.allocationId },
            h("td", null, shortId(u.allocationId, 18)),
            h("td", { class: "mono" }, u.deviceId),
            h("td", { class: "small" }, fmtSpec(u)),
            h("td", { class: "num" }, fmtDuration(u.durationSeconds)),
            h("td", { class: "num" }, u.chargeMinor === null ? "pending" : fmtMoney(u.chargeMinor, u.currency)),
            h("td", { class: "small" }, fmtDateTime(u.releasedAt)),
            h("td", null, u.reason),
          ),
      );
    } catch (err) {
      showError(this.msg, err);
    }
  }
}
