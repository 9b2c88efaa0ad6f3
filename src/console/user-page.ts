/**
 * One user's page (Operations, `#user=<id>`): their account, quota (with its editor), the
 * allocations they hold (force-release), balance and ledger (top-up, adjustment), this month's
 * usage and their feed's events; a list of users to pick from. Only users with an account are
 * shown (`GET /admin/users`): reading a balance would open an account for a mistyped id.
 *
 * Kept current without a reload: the pools' feeds say when one of the user's devices is allocated
 * or released (allocations, quota and their events are read then), the operators' feed says when
 * their balance is low, and this page's own actions read what they changed. A charge is booked
 * after a release through the usage queue, so after a release their events are read a few more
 * times, until its `billing.charged` is there (then balance, ledger and usage are read once).
 */
import type { AdminUser, ApiClient } from "../client/api-client";
import type { Envelope } from "../feed/protocol";
import { act, h, showFailure, showOk } from "./dom";
import type { FleetStore } from "./fleet-store";
import { naturalCompare } from "./fleet-filter";
import { fmtDateTime, fmtMoney } from "./format";
import { UserAllocationsCard, UserEventsCard, UserUsageCard } from "./user-page-activity";
import { UserMoneyCard } from "./user-page-money";
import { UserQuotaCard } from "./user-page-quota";

const MAX_USER_PAGES = 20;
/** After a release, the user's events are read again after these delays until its charge is there. */
const CHARGE_CHECKS_MS = [2_000, 4_000, 8_000, 15_000, 30_000];

export class UserPage {
  readonly el: HTMLElement;
  private readonly title: HTMLElement;
  private readonly account: HTMLElement;
  private readonly pick: HTMLSelectElement;
  private readonly msg: HTMLElement;
  private readonly body: HTMLElement;
  private readonly quota: UserQuotaCard;
  private readonly money: UserMoneyCard;
  private readonly allocations: UserAllocationsCard;
  private readonly usage: UserUsageCard;
  private readonly events: UserEventsCard;
  private userId: string | null = null;
  private users: AdminUser[] = [];
  /** Releases whose charge is not in the user's events yet → the checks still to run. */
  private readonly awaiting = new Map<string, ReturnType<typeof setTimeout>>();

  constructor(
    private readonly api: ApiClient,
    store: FleetStore,
  ) {
    this.title = h("h2", { id: "user-page-title" });
    this.account = h("p", { class: "muted", id: "user-account" });
    this.msg = h("p", { class: "msg", role: "status", id: "user-page-msg" });
    this.pick = h("select", { id: "user-pick", "aria-label": "Another user" }, h("option", { value: "" }, "Another user…"));
    this.pick.addEventListener("change", () => {
      if (this.pick.value) location.hash = `user=${encodeURIComponent(this.pick.value)}`;
    });
    this.quota = new UserQuotaCard(api, () => this.changed());
    this.money = new UserMoneyCard(api, () => this.events.refresh());
    this.allocations = new UserAllocationsCard(
      api,
      () => this.changed(),
      (id) => store.devices.get(id)?.node,
    );
    this.usage = new UserUsageCard(api);
    this.events = new UserEventsCard(api);
    this.body = h(
      "div",
      { class: "grid user-page-grid" },
      this.quota.el,
      this.allocations.el,
      this.money.el,
      this.usage.el,
      this.events.el,
    );
    this.el = h(
      "section",
      { id: "user-page", class: "user-page", "aria-labelledby": "user-page-title", hidden: true },
      h(
        "header",
        { class: "user-page-head card" },
        h("a", { href: "#", id: "user-page-back", class: "back" }, "← Operations"),
        this.title,
        this.pick,
        this.account,
        this.msg,
      ),
      this.body,
    );
    // Something of this user's changed on a pool: what they hold, their quota's usage, their events.
    store.onDevice((d, before) => {
      const mine = (x: { userId: string | null } | undefined) => Boolean(this.userId && x?.userId === this.userId);
      if (!mine(d) && !mine(before)) return;
      if (before?.allocationId && before.allocationId !== d.allocationId && mine(before)) this.awaitCharge(before.allocationId);
      this.changed();
    });
  }

  get shownUser(): string | null {
    return this.userId;
  }

  /** Shows a user's page (called when the address says `#user=<id>`). */
  async open(userId: string): Promise<void> {
    this.userId = userId;
    for (const t of this.awaiting.values()) clearTimeout(t);
    this.awaiting.clear();
    this.el.hidden = false;
    this.title.textContent = `User ${userId}`;
    this.account.textContent = "";
    this.body.hidden = true;
    showOk(this.msg, "");
    this.quota.clear();
    const found = await act(null, this.msg, () => this.findUser(userId));
    if (userId !== this.userId || found === undefined) return;
    if (!found) {
      showFailure(this.msg, `No account for ${userId}: a user is listed once they allocate or read their balance. Pick one below.`);
      return;
    }
    this.showAccount(found);
    this.body.hidden = false;
    this.allocations.open(userId);
    this.usage.open(userId);
    void this.events.open(userId);
    void this.money.open(userId);
    void this.readQuota();
  }

  close(): void {
    this.userId = null;
    this.el.hidden = true;
    for (const t of this.awaiting.values()) clearTimeout(t);
    this.awaiting.clear();
  }

  /** The operators' feed: a low balance of this user's. */
  onAdminEvent(e: Envelope): void {
    const d = e.data as { userId?: string };
    if (!this.userId || d?.userId !== this.userId) return;
    if (e.type.startsWith("billing.")) {
      void this.money.refresh().catch(() => undefined);
      this.events.refresh();
    }
  }

  /** Their allocations, quota and events after a change of theirs. */
  private changed(): void {
    this.allocations.refresh();
    this.events.refresh();
    void this.readQuota();
  }

  private async readQuota(): Promise<void> {
    const id = this.userId;
    if (!id) return;
    try {
      const q = await this.api.quota(id);
      if (id === this.userId) this.quota.show(q);
    } catch {
      /* the quota card keeps what it showed; the next change reads it again */
    }
  }

  /** Reads their events again until the release's `billing.charged` is there, then the money and usage once. */
  private awaitCharge(allocationId: string, attempt = 0): void {
    const delay = CHARGE_CHECKS_MS[attempt];
    if (delay === undefined) return void this.awaiting.delete(allocationId);
    const id = this.userId;
    this.awaiting.set(
      allocationId,
      setTimeout(async () => {
        if (id !== this.userId) return;
        const charged = await this.chargedSince(allocationId);
        if (id !== this.userId) return;
        if (!charged) return this.awaitCharge(allocationId, attempt + 1);
        this.awaiting.delete(allocationId);
        void this.money.refresh().catch(() => undefined);
        this.usage.refresh();
      }, delay),
    );
  }

  private async chargedSince(allocationId: string): Promise<boolean> {
    if (this.events.isCharged(allocationId)) return true;
    try {
      await this.events.readNewer();
    } catch {
      return false;
    }
    return this.events.isCharged(allocationId);
  }

  /** The user's account from the user list (read whole, a few pages at most), and the list for the picker. */
  private async findUser(userId: string): Promise<AdminUser | null> {
    const users: AdminUser[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < MAX_USER_PAGES; i++) {
      const page = await this.api.adminUsers({ limit: 200, cursor });
      users.push(...page.items);
      if (!page.nextCursor) break;
      cursor = page.nextCursor;
    }
    this.users = users.sort((a, b) => naturalCompare(a.userId, b.userId));
    this.pick.replaceChildren(
      this.pick.options[0]!,
      ...this.users.map((u) => h("option", { value: u.userId, selected: u.userId === userId }, u.userId)),
    );
    return this.users.find((u) => u.userId === userId) ?? null;
  }

  private showAccount(u: AdminUser): void {
    this.account.textContent =
      `Pricing plan ${u.pricingPlanId} · balance ${fmtMoney(u.balanceMinor, u.currency ?? undefined)} when listed · ` +
      `tier ${u.quota.tier} · tokens ${u.tokensNotBefore ? `refused if issued before ${fmtDateTime(u.tokensNotBefore)}` : "never revoked"}`;
  }
}
