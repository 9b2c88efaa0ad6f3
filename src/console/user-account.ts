/** "My account": the quota card (plan, limits and what is used of them) and the balance card. */
import type { ApiClient } from "../client/api-client";
import { card, fill, h, pill, refresher, showError, table } from "./dom";
import { fmtDateTime, fmtMB, fmtMoney } from "./format";

export class QuotaCard {
  readonly el: HTMLElement;
  readonly refresh = refresher(() => this.load());

  constructor(
    private readonly api: ApiClient,
    private readonly userId: string,
  ) {
    this.el = card(
      "Quota",
      { id: "quota-card", extra: h("span", { class: "head-extra", id: "quota-status" }) },
      h("div", { id: "quota" }, h("p", { class: "muted" }, "Loading…")),
      h("p", { class: "msg", id: "quota-msg" }),
    );
  }

  private async load(): Promise<void> {
    const slot = this.el.querySelector<HTMLElement>("#quota-msg");
    try {
      const q = await this.api.quota(this.userId);
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
          h("dt", null, "Tier"),
          h("dd", { id: "quota-tier" }, q.tier),
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
}

export class BalanceCard {
  readonly el: HTMLElement;
  readonly refresh = refresher(() => this.load());

  constructor(
    private readonly api: ApiClient,
    private readonly userId: string,
  ) {
    this.el = card(
      "Balance",
      { id: "balance-card" },
      h("div", { id: "balance" }, h("p", { class: "muted" }, "Loading…")),
      h("p", { class: "msg", id: "balance-msg" }),
    );
  }

  /** `billing.charged` on the feed: its new balance at once, then the card read again (threshold, low). */
  charged(newBalance: number, currency: string): void {
    const el = this.el.querySelector("#balance-amount");
    if (el) {
      el.textContent = fmtMoney(newBalance, currency);
      el.classList.toggle("neg", newBalance <= 0);
    }
    this.refresh();
  }

  private async load(): Promise<void> {
    const slot = this.el.querySelector<HTMLElement>("#balance-msg");
    try {
      const b = await this.api.balance(this.userId);
      showError(slot, null);
      fill(
        this.el.querySelector("#balance")!,
        h("p", { class: `big ${b.balanceMinor <= 0 ? "neg" : ""}`, id: "balance-amount" }, fmtMoney(b.balanceMinor, b.currency)),
        b.lowBalance ? h("p", null, pill("low_balance"), ` below ${fmtMoney(b.lowBalanceThresholdMinor, b.currency)}`) : null,
        h(
          "dl",
          { class: "kv" },
          h("dt", null, "Pricing plan"),
          h("dd", null, b.pricingPlanId),
          h("dt", null, "Low at"),
          h("dd", null, fmtMoney(b.lowBalanceThresholdMinor, b.currency)),
        ),
      );
    } catch (err) {
      showError(slot, err);
    }
  }
}
