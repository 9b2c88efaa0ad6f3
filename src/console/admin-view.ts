/**
 * "Operations" (admins): the fleet (search, filters, collapsible pools, each device's actions),
 * pool settings, register and import, users, pricing plans, failed billing, reconciliation and the
 * operators' feed; and one user's page at `#user=<id>`. Each card is its own file; this one puts
 * them together, routes the address, and hands the operators' feed's events to them.
 */
import type { ApiClient } from "../client/api-client";
import { FeedClient } from "../client/feed-client";
import type { Envelope, FeedEvent, ReconcileDifferencesEventData } from "../feed/protocol";
import "./console-ops.css";
import { FailedBillingCard } from "./admin-billing";
import { FleetCard } from "./admin-fleet";
import { PoolSettingsCard } from "./admin-pools";
import { PricingCard } from "./admin-pricing";
import { ReconcileCard } from "./admin-reconcile";
import { UsersCard } from "./admin-users";
import { DeviceImportCard } from "./device-import";
import { card, errorText, h } from "./dom";
import { EventList, bindFeedState } from "./feed-ui";
import { FleetStore } from "./fleet-store";
import { UserPage } from "./user-page";

/** How many past operator events the list shows; the whole kept log (1,000) is read for the devices' notes. */
const HISTORY_SHOWN = 50;
const HISTORY_PAGE = 200;

/** The user a `#user=<id>` address asks for (null: the Operations overview). */
export function userInAddress(): string | null {
  return new URLSearchParams(location.hash.replace(/^#/, "")).get("user");
}

export class AdminView {
  readonly el: HTMLElement;
  readonly feed: FeedClient;
  readonly store: FleetStore;
  private readonly overview: HTMLElement;
  private readonly events: EventList;
  private readonly fleet: FleetCard;
  private readonly users: UsersCard;
  private readonly pricing: PricingCard;
  private readonly failed: FailedBillingCard;
  private readonly reconcile: ReconcileCard;
  private readonly userPage: UserPage;
  private started = false;

  constructor(
    private readonly api: ApiClient,
    baseUrl: string,
    token: () => string,
  ) {
    this.feed = new FeedClient({ baseUrl, token, feed: "admin" });
    this.store = new FleetStore(api, baseUrl, token);
    this.events = new EventList(h("ol", { id: "admin-events", class: "events" }));
    this.fleet = new FleetCard(api, this.store);
    this.users = new UsersCard(api);
    this.pricing = new PricingCard(api);
    this.failed = new FailedBillingCard(api);
    this.reconcile = new ReconcileCard(api, () => this.failed.refresh());
    this.userPage = new UserPage(api, this.store, (userId) => new FeedClient({ baseUrl, token, feed: "user", userId }));
    this.overview = h(
      "div",
      { class: "grid", id: "view-admin" },
      this.fleet.el,
      new PoolSettingsCard(api, this.store).el,
      new DeviceImportCard(api, this.store).el,
      this.users.el,
      this.pricing.el,
      this.failed.el,
      this.reconcile.el,
      card(
        "Operations feed",
        { id: "admin-events-card", extra: h("span", { class: "feed-state", id: "admin-feed-state" }) },
        this.events.el,
        h("p", { class: "empty muted" }, "Operator events appear here as they happen."),
      ),
    );
    this.el = h("div", { id: "admin-root" }, this.userPage.el, this.overview);
    window.addEventListener("hashchange", () => this.route());
  }

  /** Starts the feeds and loads everything (the first time the view is shown). */
  start(): void {
    if (this.started) return;
    this.started = true;
    bindFeedState(this.el.querySelector("#admin-feed-state")!, this.feed, "feed");
    this.feed.onEvent((e) => this.onEvent(e));
    // The log first (reasons and drains of devices, the last events), then live from right after it.
    void this.readHistory().finally(() =>
      this.feed.start().catch(() => {
        /* shown by the state badge */
      }),
    );
    void this.fleet.start();
    void this.users.loadUsers();
    void this.pricing.load();
    this.failed.refresh();
    this.route();
  }

  /** Shows the user page the address asks for, or the overview. */
  route(): void {
    if (!this.started) return;
    const userId = userInAddress();
    if (userId) {
      this.overview.hidden = true;
      if (userId !== this.userPage.shownUser) void this.userPage.open(userId);
      window.scrollTo(0, 0);
    } else {
      this.userPage.close();
      this.overview.hidden = false;
    }
  }

  private async readHistory(): Promise<void> {
    try {
      const head = await this.api.adminEvents({ limit: 1 });
      let since = Math.max(0, (head.oldestSeq ?? 1) - 1);
      const all: Envelope[] = [];
      for (let i = 0; i < 10 && since < head.lastSeq; i++) {
        const page = await this.api.adminEvents({ since, limit: HISTORY_PAGE });
        all.push(...(page.events as Envelope[]));
        since = page.events.at(-1)?.seq ?? head.lastSeq;
        if (page.nextSince === null) break;
      }
      for (const e of all) this.store.onAdminEvent(e);
      for (const e of all.slice(-HISTORY_SHOWN)) this.events.add(e, true);
      this.feed.lastSeq = all.at(-1)?.seq ?? head.lastSeq;
    } catch (err) {
      this.events.note(`The earlier events could not be read (${errorText(err)}); new ones show as they happen.`);
    }
  }

  private onEvent(e: FeedEvent): void {
    this.events.add(e as Envelope);
    this.store.onAdminEvent(e as Envelope);
    if (e.type === "billing.usage_failed") this.failed.refresh();
    if (e.type === "billing.reconcile_differences") this.reconcile.onDifferences(e as Envelope<ReconcileDifferencesEventData>);
  }
}
