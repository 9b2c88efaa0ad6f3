/**
 * "Pricing plans" (admins): every plan with its rates as money per hour, and an editor for one
 * plan (or a new one). Rates are kept as the API has them (millionths of a minor unit per second,
 * exact whole numbers), with their price per hour beside each; credits are typed in the currency.
 * Saving a plan sends only the fields that changed (`PATCH /admin/billing/pricing-plans/{id}`), so
 * two operators changing different rates do not undo each other; a new plan is sent whole (`PUT`).
 */
import type { ApiClient, PricingPlan, PricingPlanSettings } from "../client/api-client";
import { act, card, fill, h, scrollTable, showFailure, showOk, syncRows } from "./dom";
import { fmtDateTime, fmtMoney, toMs } from "./format";

const RATES = [
  ["baseMicrosPerSecond", "Per device"],
  ["cpuCoreMicrosPerSecond", "Per CPU core"],
  ["memoryGBMicrosPerSecond", "Per GB memory"],
  ["storageGBMicrosPerSecond", "Per GB storage"],
] as const;
const CREDITS = [
  ["startingCreditMinor", "Starting credit"],
  ["lowBalanceThresholdMinor", "Low balance at"],
] as const;

/** A rate (millionths of a minor unit per second) as money per hour: `$0.0360 / h`. */
export function fmtRate(microsPerSecond: number, currency: string): string {
  const major = (microsPerSecond * 3600) / 1e6 / 100;
  try {
    const f = new Intl.NumberFormat(undefined, { style: "currency", currency, minimumFractionDigits: 2, maximumFractionDigits: 4 });
    return `${f.format(major)} / h`;
  } catch {
    return `${major.toFixed(4)} ${currency} / h`;
  }
}

/** A field's name for people (the changed fields in the status line); `name` and `currency` are their own. */
const label = (k: string) => [...RATES, ...CREDITS].find(([f]) => f === k)?.[1].toLowerCase() ?? k;

export class PricingCard {
  readonly el: HTMLElement;
  private readonly body: HTMLElement;
  private readonly editor: HTMLFormElement;
  private readonly msg: HTMLElement;
  private plans: PricingPlan[] = [];
  /** The plan in the editor (null: a new one). */
  private editing: PricingPlan | null = null;

  constructor(private readonly api: ApiClient) {
    this.body = h("tbody", { id: "pricing-plans" });
    this.msg = h("p", { class: "msg", role: "status", id: "pricing-msg" });
    this.editor = h("form", { id: "pricing-form", class: "form-grid", "aria-label": "Edit a pricing plan", hidden: true });
    this.editor.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.save();
    });
    this.editor.addEventListener("input", () => this.showHints());
    const add = h("button", { type: "button", id: "pricing-new", class: "small-btn" }, "New plan");
    add.addEventListener("click", () => this.edit(null));
    this.el = card(
      "Pricing plans",
      { id: "pricing-card", cls: "wide", extra: add },
      scrollTable(
        ["Plan", "Name", ...RATES.map(([, l]) => l), ...CREDITS.map(([, l]) => l), "Updated", ""],
        this.body,
        "No pricing plans.",
        "compact stack",
      ),
      this.editor,
      this.msg,
    );
    this.body.addEventListener("click", (ev) => {
      const id = (ev.target as Element).closest("button.edit-plan")?.closest<HTMLElement>("tr")?.dataset.planId;
      const plan = this.plans.find((p) => p.pricingPlanId === id);
      if (plan) this.edit(plan);
    });
  }

  async load(): Promise<void> {
    await act(null, this.msg, async () => {
      this.plans = (await this.api.pricingPlans()).items;
      syncRows(
        this.body,
        this.plans,
        (p) => p.pricingPlanId,
        (p) => this.row(p),
      );
    });
  }

  private row(p: PricingPlan): HTMLElement {
    return h(
      "tr",
      { "data-plan-id": p.pricingPlanId },
      h("td", { class: "mono" }, p.pricingPlanId),
      h("td", null, p.name),
      RATES.map(([k]) => h("td", { class: "num", title: `${p[k]} millionths of a minor unit per second` }, fmtRate(p[k], p.currency))),
      CREDITS.map(([k]) => h("td", { class: "num" }, fmtMoney(p[k], p.currency))),
      // The seeded plan (a migration's row) carries time 0: no change was ever made to it.
      h("td", { class: "small" }, toMs(p.updatedAt) ? fmtDateTime(p.updatedAt) : "never (seeded)"),
      h("td", null, h("button", { type: "button", class: "edit-plan small-btn", "aria-label": `Edit ${p.pricingPlanId}` }, "Edit")),
    );
  }

  /** Opens the editor with a plan's fields (null: an empty new plan). */
  private edit(p: PricingPlan | null): void {
    this.editing = p;
    showOk(this.msg, "");
    const input = (name: string, label: string, attrs: Record<string, string | number | boolean>, hint = false) =>
      h(
        "label",
        null,
        label,
        h("input", { name, autocomplete: "off", ...attrs }),
        hint ? h("span", { class: "hint small", "data-for": name }) : null,
      );
    const money = (minor: number | undefined) => (minor === undefined ? "" : (minor / 100).toFixed(2));
    fill(
      this.editor,
      h("h3", { class: "span-all" }, p ? `Edit ${p.pricingPlanId}` : "New pricing plan"),
      input("pricingPlanId", "Plan id", { required: true, value: p?.pricingPlanId ?? "", readonly: Boolean(p), spellcheck: "false" }),
      input("name", "Name", { required: true, value: p?.name ?? "" }),
      input("currency", "Currency", { required: true, value: p?.currency ?? "USD", pattern: "[A-Z]{3}", class: "mini" }),
      RATES.map(([k, l]) => input(k, `${l} (µ-minor/s)`, { type: "number", min: 0, step: 1, required: true, value: p?.[k] ?? 0 }, true)),
      CREDITS.map(([k, l]) =>
        input(k, `${l} (${p?.currency ?? "USD"})`, { type: "number", min: 0, step: "0.01", required: true, value: money(p?.[k]) }),
      ),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "submit", class: "primary", id: "pricing-save" }, "Save plan"),
        h("button", { type: "button", id: "pricing-cancel", onclick: () => (this.editor.hidden = true) }, "Close"),
      ),
    );
    this.editor.hidden = false;
    this.showHints();
    this.editor.querySelector<HTMLInputElement>(p ? "[name=name]" : "[name=pricingPlanId]")!.focus();
  }

  private value(name: string): string {
    return (this.editor.elements.namedItem(name) as HTMLInputElement).value.trim();
  }

  /** Each rate's price per hour, as typed. */
  private showHints(): void {
    const currency = /^[A-Z]{3}$/.test(this.value("currency")) ? this.value("currency") : "USD";
    for (const [k] of RATES) {
      const hint = this.editor.querySelector<HTMLElement>(`.hint[data-for="${k}"]`);
      const n = Number(this.value(k));
      if (hint) hint.textContent = Number.isInteger(n) && n >= 0 ? `= ${fmtRate(n, currency)}` : "a whole number";
    }
  }

  private async save(): Promise<void> {
    const id = this.value("pricingPlanId");
    const minor = (k: string) => Math.round(Number(this.value(k)) * 100);
    const body: PricingPlanSettings = {
      name: this.value("name"),
      currency: this.value("currency"),
      baseMicrosPerSecond: Number(this.value("baseMicrosPerSecond")),
      cpuCoreMicrosPerSecond: Number(this.value("cpuCoreMicrosPerSecond")),
      memoryGBMicrosPerSecond: Number(this.value("memoryGBMicrosPerSecond")),
      storageGBMicrosPerSecond: Number(this.value("storageGBMicrosPerSecond")),
      startingCreditMinor: minor("startingCreditMinor"),
      lowBalanceThresholdMinor: minor("lowBalanceThresholdMinor"),
    };
    const bad = RATES.find(([k]) => !Number.isInteger(body[k]) || body[k] < 0);
    if (bad) return showFailure(this.msg, `${bad[1]}: a whole number of millionths of a minor unit per second.`);
    const was = this.editing;
    const changed = was ? (Object.keys(body) as (keyof PricingPlanSettings)[]).filter((k) => body[k] !== was[k]) : [];
    if (was && !changed.length) return showFailure(this.msg, "Nothing changed.");
    const patch = Object.fromEntries(changed.map((k) => [k, body[k]])) as Partial<PricingPlanSettings>;
    const saved = await act(this.editor.querySelector<HTMLButtonElement>("#pricing-save"), this.msg, () =>
      was ? this.api.updatePricingPlan(id, patch) : this.api.setPricingPlan(id, body),
    );
    if (!saved) return;
    this.editor.hidden = true;
    await this.load();
    const rates = RATES.map(([k, l]) => `${l.toLowerCase()} ${fmtRate(saved[k], saved.currency)}`).join(", ");
    showOk(this.msg, `Saved ${saved.pricingPlanId}: ${rates}${was ? ` (changed: ${changed.map(label).join(", ")})` : " (new plan)"}.`);
  }
}
