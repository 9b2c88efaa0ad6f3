/**
 * "Operations" (admins): the fleet by pool, live from each pool's feed; users and their
 * quotas; failed billing with replay; reconciliation; the operators' feed. Each card is its own
 * file (admin-fleet, admin-users, admin-billing, admin-reconcile); this one puts them together
 * and hands the operators' feed's events to them.
 */
import type { ApiClient } from "../client/api-client";
import { FeedClient } from "../client/feed-client";
import type { Envelope, FeedEvent, ReconcileDifferencesEventData } from "../feed/protocol";
import { FailedBillingCard } from "./admin-billing";
import { FleetCard } from "./admin-fleet";
import { ReconcileCard } from "./admin-reconcile";
import { UsersCard } from "./admin-users";
import { card, h } from "./dom";
import { EventList, bindFeedState } from "./feed-ui";

export class AdminView {
  readonly el: HTMLElement;
  readonly feed: FeedClient;
  private readonly events: EventList;
  private readonly fleet: FleetCard;
  private readonly users: UsersCard;
  private readonly failed: FailedBillingCard;
  private readonly reconcile: ReconcileCard;
  private started = false;

  constructor(api: ApiClient, baseUrl: string, token: () => string) {
    this.feed = new FeedClient({ baseUrl, token, feed: "admin" });
    this.events = new EventList(h("ol", { id: "admin-events", class: "events" }));
    this.fleet = new FleetCard(api, baseUrl, token);
    this.users = new UsersCard(api);
    this.failed = new FailedBillingCard(api);
    this.reconcile = new ReconcileCard(api, () => this.failed.refresh());
    this.el = h(
      "div",
      { class: "grid", id: "view-admin" },
      this.fleet.el,
      this.users.el,
      this.failed.el,
      this.reconcile.el,
      card(
        "Operations feed",
        { id: "admin-events-card", extra: h("span", { class: "feed-state", id: "admin-feed-state" }) },
        this.events.el,
        h("p", { class: "empty muted" }, "Operator events appear here as they happen."),
      ),
    );
  }

  /** Starts the feeds and loads everything (the first time the view is shown). */
  start(): void {
    if (this.started) return;
    this.started = true;
    bindFeedState(this.el.querySelector("#admin-feed-state")!, this.feed, "feed");
    this.feed.onEvent((e) => this.onEvent(e));
    this.feed.start().catch(() => {
      /* shown by the state badge */
    });
    void this.fleet.loadPools();
    void this.users.loadUsers();
    this.failed.refresh();
  }

  private onEvent(e: FeedEvent): void {
    this.events.add(e as Envelope);
    if (e.type === "billing.usage_failed") this.failed.refresh();
    if (e.type === "billing.reconcile_differences") this.reconcile.onDifferences(e as Envelope<ReconcileDifferencesEventData>);
  }
}
