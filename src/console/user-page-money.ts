/**
 * One user's money on their page (admins): the balance, the ledger (newest first, page by page),
 * a top-up (`POST /billing/users/{id}/top-ups`, once per payment id) and a signed adjustment
 * (`POST /admin/billing/users/{id}/adjustments`, once per adjustment id, with a memo). Amounts are
 * typed in the currency and sent as minor units; each movement is confirmed in words first.
 */
import type { ApiClient, Balance, LedgerEntry } from "../client/api-client";
import { confirmStep } from "./confirm-step";
import { act, card, h, scrollTable, showFailure, showOk } from "./dom";
import { fmtDateTime, fmtMoney } from "./format";

/** `12.5` → 1250; null when it is not an amount with at most two decimals. */
export function minorOf(text: string): number | null {
  const t = text.trim();
  if (!/^-?\d+(\.\d{1,2})?$/.test(t)) return null;
  return Math.round(Number(t) * 100);
}

const freshId = (kind: string) =>
  `console-${kind}-${new Date()
    .toISOString()
    .replace(/[^0-9]/g, "")
    .slice(0, 14)}`;

export class UserMoneyCard {
  readonly el: HTMLElement;
  private readonly balanceEl: HTMLElement;
  private readonly ledgerBody: HTMLElement;
  private readonly more: HTMLButtonElement;
  private readonly msg: HTMLElement;
  /** Reading the balance and ledger (apart from the movements' own line). */
  private readonly loadMsg: HTMLElement;
  private readonly topUp: HTMLFormElement;
  private readonly adjust: HTMLFormElement;
  private readonly confirmSlot: HTMLElement;
  private userId = "";
  private currency = "USD";
  private cursor: string | null = null;

  constructor(private readonly api: ApiClient) {
    this.balanceEl = h("p", { class: "big", id: "user-balance" }, "—");
    this.ledgerBody = h("tbody", { id: "user-ledger" });
    this.more = h("button", { type: "button", class: "small-btn", id: "ledger-more", hidden: true }, "More");
    this.more.addEventListener("click", () => void act(this.more, this.loadMsg, () => this.loadLedger(true)));
    this.msg = h("p", { class: "msg", role: "status", id: "money-msg" });
    this.loadMsg = h("p", { class: "msg", id: "ledger-msg" });
    this.confirmSlot = h("div", { class: "confirm-slot", hidden: true });
    const amount = (name: string, label: string, signed: boolean) =>
      h(
        "label",
        null,
        label,
        h("input", { name, inputmode: "decimal", required: true, autocomplete: "off", placeholder: signed ? "-2.50" : "10.00" }),
      );
    const text = (name: string, label: string, required: boolean) =>
      h("label", null, label, h("input", { name, required, autocomplete: "off", spellcheck: "false" }));
    this.topUp = h(
      "form",
      { id: "topup-form", class: "form-grid", "aria-label": "Top up" },
      amount("amount", "Top-up amount", false),
      text("paymentId", "Payment id (once per id)", true),
      text("paymentMethod", "Method (optional)", false),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "topup-submit" }, "Top up…")),
    );
    this.adjust = h(
      "form",
      { id: "adjust-form", class: "form-grid", "aria-label": "Adjust the balance" },
      amount("amount", "Adjustment (signed)", true),
      text("adjustmentId", "Adjustment id (once per id)", true),
      h("label", { class: "span-2" }, "Memo (why)", h("input", { name: "memo", required: true, maxlength: 500, autocomplete: "off" })),
      h("div", { class: "actions" }, h("button", { type: "submit", id: "adjust-submit" }, "Adjust…")),
    );
    this.topUp.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.sendTopUp();
    });
    this.adjust.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.sendAdjustment();
    });
    this.el = card(
      "Balance and ledger",
      { id: "user-money-card", cls: "wide" },
      this.balanceEl,
      h("div", { class: "money-forms" }, this.topUp, this.adjust),
      this.confirmSlot,
      this.msg,
      h("h3", null, "Ledger"),
      scrollTable(["When", "Kind", "Amount", "Balance after", "Reference", "Memo", "By"], this.ledgerBody, "No entries.", "compact stack"),
      this.more,
      this.loadMsg,
    );
  }

  /** Shows a user (whose account exists: reading a balance opens one for an unknown id). */
  async open(userId: string): Promise<void> {
    this.userId = userId;
    this.balanceEl.textContent = "—";
    this.ledgerBody.replaceChildren();
    showOk(this.msg, "");
    this.freshIds();
    await act(null, this.loadMsg, () => this.refresh());
  }

  async refresh(): Promise<void> {
    const b = await this.api.balance(this.userId);
    this.showBalance(b);
    await this.loadLedger(false);
  }

  private showBalance(b: Balance): void {
    this.currency = b.currency;
    this.balanceEl.textContent = fmtMoney(b.balanceMinor, b.currency);
    this.balanceEl.classList.toggle("neg", b.balanceMinor < 0);
    this.balanceEl.title = `pricing plan ${b.pricingPlanId}${b.lowBalance ? ", low balance" : ""}`;
    this.balanceEl.dataset.minor = String(b.balanceMinor);
  }

  private async loadLedger(more: boolean): Promise<void> {
    const page = await this.api.ledger(this.userId, { limit: 20, cursor: more ? (this.cursor ?? undefined) : undefined });
    if (!more) this.ledgerBody.replaceChildren();
    this.ledgerBody.append(...page.items.map((e) => this.entryRow(e)));
    this.cursor = page.nextCursor;
    this.more.hidden = !page.nextCursor;
  }

  private entryRow(e: LedgerEntry): HTMLElement {
    return h(
      "tr",
      { "data-entry-id": e.entryId, "data-kind": e.kind },
      h("td", { class: "small" }, fmtDateTime(e.createdAt)),
      h("td", null, e.kind.replace("_", " ")),
      h("td", { class: `num${e.amountMinor < 0 ? " neg" : ""}` }, fmtMoney(e.amountMinor, e.currency)),
      h("td", { class: "num" }, fmtMoney(e.balanceAfterMinor, e.currency)),
      h("td", { class: "small mono" }, e.reference ?? e.allocationId ?? "—"),
      h("td", { class: "small" }, e.memo ?? "—"),
      h("td", { class: "small mono" }, e.actor ?? "—"),
    );
  }

  private freshIds(): void {
    (this.topUp.elements.namedItem("paymentId") as HTMLInputElement).value = freshId("payment");
    (this.adjust.elements.namedItem("adjustmentId") as HTMLInputElement).value = freshId("adjustment");
  }

  private async sendTopUp(): Promise<void> {
    const f = (n: string) => (this.topUp.elements.namedItem(n) as HTMLInputElement).value.trim();
    const amountMinor = minorOf(f("amount"));
    if (amountMinor === null || amountMinor <= 0) return showFailure(this.msg, "Top-up: a positive amount with at most two decimals.");
    const body = { amountMinor, paymentId: f("paymentId"), ...(f("paymentMethod") ? { paymentMethod: f("paymentMethod") } : {}) };
    const money = fmtMoney(amountMinor, this.currency);
    const what = `Credit ${money} to ${this.userId} (payment ${body.paymentId}; a repeated id credits nothing).`;
    if (!(await this.confirm(this.topUp, what, `Top up ${money}`))) return;
    const r = await act(this.topUp.querySelector<HTMLButtonElement>("#topup-submit"), this.msg, () => this.api.topUp(this.userId, body));
    if (!r) return;
    showOk(
      this.msg,
      r.duplicate
        ? `Payment ${r.paymentId} was credited before: nothing new. Balance ${fmtMoney(r.balanceMinor, r.currency)}.`
        : `Credited ${fmtMoney(r.amountMinor, r.currency)} (${r.paymentId}): balance ${fmtMoney(r.balanceMinor, r.currency)}.`,
    );
    (this.topUp.elements.namedItem("amount") as HTMLInputElement).value = "";
    this.freshIds();
    await this.afterMove();
  }

  private async sendAdjustment(): Promise<void> {
    const f = (n: string) => (this.adjust.elements.namedItem(n) as HTMLInputElement).value.trim();
    const amountMinor = minorOf(f("amount"));
    if (amountMinor === null || amountMinor === 0)
      return showFailure(this.msg, "Adjustment: a signed amount, not 0, at most two decimals.");
    const body = { amountMinor, adjustmentId: f("adjustmentId"), memo: f("memo") };
    const verb = amountMinor > 0 ? "Credit" : "Debit";
    const money = fmtMoney(Math.abs(amountMinor), this.currency);
    const what = `${verb} ${money} ${amountMinor > 0 ? "to" : "from"} ${this.userId}'s balance: "${body.memo}" (${body.adjustmentId}).`;
    if (!(await this.confirm(this.adjust, what, `${verb} ${money}`, amountMinor < 0))) return;
    const r = await act(this.adjust.querySelector<HTMLButtonElement>("#adjust-submit"), this.msg, () =>
      this.api.adjustBalance(this.userId, body),
    );
    if (!r) return;
    showOk(
      this.msg,
      r.duplicate
        ? `Adjustment ${r.adjustmentId} was booked before: nothing new. Balance ${fmtMoney(r.balanceMinor, r.currency)}.`
        : `Adjusted by ${fmtMoney(r.amountMinor, r.currency)} (${r.adjustmentId}): balance ${fmtMoney(r.balanceMinor, r.currency)}.`,
    );
    for (const n of ["amount", "memo"]) (this.adjust.elements.namedItem(n) as HTMLInputElement).value = "";
    this.freshIds();
    await this.afterMove();
  }

  private async confirm(form: HTMLFormElement, what: string, label: string, danger = false): Promise<boolean> {
    showOk(this.msg, "");
    form.inert = true;
    const ok = await confirmStep(this.confirmSlot, what, { confirm: label, danger });
    form.inert = false;
    return ok;
  }

  private async afterMove(): Promise<void> {
    await act(null, this.loadMsg, () => this.refresh());
  }
}
