/**
 * "Reconciliation" (admins): check (or check and heal) ended allocations against usage and
 * charges, and the differences the service reports on the operators' feed.
 */
import type { ApiClient, ReconcileResult } from "../client/api-client";
import type { Envelope, ReconcileDifferencesEventData } from "../feed/protocol";
import { act, card, fill, h, table } from "./dom";
import { fmtDateTime, fmtMoney, fmtTime } from "./format";

export class ReconcileCard {
  readonly el: HTMLElement;

  /** `differencesFound` is called after a run that found differences (failed billing may have changed). */
  constructor(
    private readonly api: ApiClient,
    private readonly differencesFound: () => void,
  ) {
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
    this.el = card(
      "Reconciliation",
      { id: "reconcile-card" },
      rec,
      h("p", { class: "msg", id: "reconcile-msg" }),
      h("div", { id: "reconcile-result" }),
      h("h3", null, "Reported on the feed"),
      h("ol", { id: "reconcile-events", class: "events compact" }),
      h("p", { class: "muted small empty" }, "Differences the service finds (also on its own passes) show here."),
    );
  }

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
        `${heal ? "Reconciled" : "Checked"} ${r.users} account(s), ${r.checked} allocation(s) ` +
          `${r.from ? `from ${fmtDateTime(r.from)} ` : ""}to ${fmtDateTime(r.to)}: `,
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
                    h("td", { class: "small" }, d.balanceDrift ? driftText(d.balanceDrift) : "—"),
                  ),
                ),
            ),
            "compact",
          )
        : null,
    );
    if (!clean) this.differencesFound();
  }

  /** `billing.reconcile_differences` on the operators' feed. */
  onDifferences(e: Envelope<ReconcileDifferencesEventData>): void {
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

function driftText(d: { balanceMinor: number; ledgerSumMinor: number; currency: string }): string {
  return `${fmtMoney(d.balanceMinor, d.currency)} vs ledger ${fmtMoney(d.ledgerSumMinor, d.currency)}`;
}
