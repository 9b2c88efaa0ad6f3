/** "Users and quotas" (admins): the accounts page by page (each links to its user page), and a look-up of one user's quota. */
import type { AdminUser, ApiClient, Quota } from "../client/api-client";
import { act, card, h, pill, scrollTable, showError } from "./dom";
import { fmtDateTime, fmtMB, fmtMoney } from "./format";

export class UsersCard {
  readonly el: HTMLElement;
  private usersCursor: string | null = null;
  /** Accounts the user list showed (a look-up of one of them keeps its balance). */
  private readonly accounts = new Map<string, AdminUser>();

  constructor(private readonly api: ApiClient) {
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
    this.el = card(
      "Users and quotas",
      { id: "users-card", cls: "wide" },
      scrollTable(
        ["User", "Tier", "Status", "Devices", "CPU", "Memory", "Device-hours", "Valid until", "Balance", "Pricing"],
        h("tbody", { id: "users" }),
        undefined,
        "stack",
      ),
      more,
      lookup,
      h("p", { class: "msg", id: "users-msg" }),
    );
  }

  async loadUsers(more = false): Promise<void> {
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

  private userRow(userId: string, q: Quota, account?: Pick<AdminUser, "balanceMinor" | "currency" | "pricingPlanId">): HTMLElement {
    const l = q.limits;
    const u = q.usage;
    const of = (used: number | undefined, max: number | undefined, fmt: (n: number) => string = String) =>
      `${fmt(Math.round((used ?? 0) * 100) / 100)} / ${max === undefined ? "—" : fmt(max)}`;
    return h(
      "tr",
      { "data-user-id": userId, "data-status": q.status },
      // Their page: quota editor, allocations, ledger, top-up and adjustment, usage, events.
      h("td", { class: "mono" }, h("a", { href: `#user=${encodeURIComponent(userId)}`, class: "user-link" }, userId)),
      h("td", null, q.tier),
      h("td", null, pill(q.status)),
      h("td", { class: "num" }, of(u.devices, l.maxDevices)),
      h("td", { class: "num" }, of(u.cpuCores, l.maxCpuCores)),
      h("td", { class: "num" }, of(u.memoryMB, l.maxMemoryMB, fmtMB)),
      h("td", { class: "num" }, of(u.deviceHours, l.maxDeviceHoursPerPeriod)),
      h("td", { class: "small" }, fmtDateTime(q.validUntil)),
      h("td", { class: "num" }, account ? fmtMoney(account.balanceMinor, account.currency ?? undefined) : "—"),
      h("td", null, account?.pricingPlanId ?? "—"),
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
}
