/**
 * One user's page (Operations, `#user=<id>`): their account, quota (with its editor), the
 * allocations they hold (force-release), balance and ledger (top-up, adjustment), this month's
 * usage and their feed's events; a list of users to pick from. Only users with an account are
 * shown (`GET /admin/users`): reading a balance would open an account for a mistyped id.
 *
 * Kept current without a reload by the user's own feed, watched live (user-page-feed.ts): each
 * event of theirs reads what it changed (an allocation or release: their allocations and quota; a
 * charge: balance, ledger and usage; any other money event: balance and ledger; a quota event:
 * the quota), and a reconnect reads everything once. This page's own actions read what they changed.
 */
import type { AdminUser, ApiClient } from "../client/api-client";
import type { FeedClient } from "../client/feed-client";
import type { Envelope } from "../feed/protocol";
import { act, h, showFailure, showOk } from "./dom";
import type { FleetStore } from "./fleet-store";
import { naturalCompare } from "./fleet-filter";
import { fmtDateTime, fmtMoney } from "./format";
import { UserAllocationsCard, UserUsageCard } from "./user-page-activity";
import { UserFeedCard } from "./user-page-feed";
import { UserMoneyCard } from "./user-page-money";
import { UserQuotaCard } from "./user-page-quota";

const MAX_USER_PAGES = 20;

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
  private readonly feed: UserFeedCard;
  private userId: string | null = null;
  private users: AdminUser[] = [];

  constructor(
    private readonly api: ApiClient,
    store: FleetStore,
    /** A feed client for a user's feed (an admin's ticket naming them), not started. */
    watch: (userId: string) => FeedClient,
  ) {
    this.title = h("h2", { id: "user-page-title" });
    this.account = h("p", { class: "muted", id: "user-account" });
    this.msg = h("p", { class: "msg", role: "status", id: "user-page-msg" });
    this.pick = h("select", { id: "user-pick", "aria-label": "Another user" }, h("option", { value: "" }, "Another user…"));
    this.pick.addEventListener("change", () => {
      if (this.pick.value) location.hash = `user=${encodeURIComponent(this.pick.value)}`;
    });
    this.quota = new UserQuotaCard(api, () => this.changed());
    this.money = new UserMoneyCard(api);
    this.allocations = new UserAllocationsCard(
      api,
      () => this.changed(),
      (id) => store.devices.get(id)?.node,
    );
    this.usage = new UserUsageCard(api);
    this.feed = new UserFeedCard(api, watch, { event: (e) => this.onEvent(e), resumed: () => this.readAll() });
    this.body = h("div", { class: "grid user-page-grid" }, this.quota.el, this.allocations.el, this.money.el, this.usage.el, this.feed.el);
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
  }

  get shownUser(): string | null {
    return this.userId;
  }

  /** Shows a user's page (called when the address says `#user=<id>`). */
  async open(userId: string): Promise<void> {
    this.userId = userId;
    this.feed.close();
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
    void this.feed.open(userId);
    void this.money.open(userId);
    void this.readQuota();
  }

  close(): void {
    this.userId = null;
    this.el.hidden = true;
    this.feed.close();
  }

  /** An event on their feed: read what it changed. */
  private onEvent(e: Envelope): void {
    const kind = e.type.split(".")[0];
    if (kind === "device" || kind === "queue" || kind === "reservation") this.changed();
    else if (kind === "quota") void this.readQuota();
    else if (kind === "billing") {
      void this.money.refresh().catch(() => undefined);
      if (e.type === "billing.charged") this.usage.refresh();
    }
  }

  /** Their allocations and quota after a change of theirs (the feed shows the events themselves). */
  private changed(): void {
    this.allocations.refresh();
    void this.readQuota();
  }

  /** After the feed came back from a drop: everything once. */
  private readAll(): void {
    this.changed();
    this.usage.refresh();
    void this.money.refresh().catch(() => undefined);
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
