/**
 * "My account": quota, balance, the month's chart, the allocate and booking forms (pool and
 * device class from the catalogue), active allocations with a live countdown, usage, queue
 * entries and reservations, and the user's feed with its history. Everything refreshes from the
 * feed's events; a reconnect that missed events reloads it all. Each card is its own file; this
 * one puts them together and hands the feed's events to them.
 */
import type { ApiClient } from "../client/api-client";
import { FeedClient } from "../client/feed-client";
import type { Envelope, ExtendedEventData, FeedEvent } from "../feed/protocol";
import { CatalogueStore } from "./catalogue";
import { card, h } from "./dom";
import { EventList, bindFeedState, showHistory } from "./feed-ui";
import type { Identity } from "./session";
import { BalanceCard, QuotaCard } from "./user-account";
import { AllocateForm } from "./user-allocate";
import { AllocationsPanel } from "./user-allocations";
import { BookingForm } from "./user-booking";
import { MonthChart } from "./user-chart";
import { QueuePanel } from "./user-queue";
import { UsagePanel } from "./user-usage";

export class UserView {
  readonly el: HTMLElement;
  readonly feed: FeedClient;
  private readonly catalogue: CatalogueStore;
  private readonly events: EventList;
  private readonly quota: QuotaCard;
  private readonly balance: BalanceCard;
  private readonly chart: MonthChart;
  private readonly allocations: AllocationsPanel;
  private readonly usage: UsagePanel;
  private readonly queue: QueuePanel;
  private helloCount = 0;

  constructor(
    private readonly api: ApiClient,
    me: Identity,
    baseUrl: string,
    private readonly feedStateEl: HTMLElement,
  ) {
    this.feed = new FeedClient({ baseUrl, token: () => me.token, feed: "user" });
    this.catalogue = new CatalogueStore(api);
    this.events = new EventList(h("ol", { id: "events", class: "events" }));
    this.quota = new QuotaCard(api, me.userId);
    this.balance = new BalanceCard(api, me.userId);
    this.chart = new MonthChart();
    const allocateForm = new AllocateForm(api, this.catalogue, {
      allocated: (r) => {
        this.allocations.allocated(r);
        this.changedMine();
      },
      queued: () => this.queue.refresh(),
    });
    const bookingForm = new BookingForm(api, this.catalogue, { booked: () => this.queue.refresh() });
    this.allocations = new AllocationsPanel(api, {
      released: (allocationId) => {
        this.changedMine();
        this.usage.awaitUsage(allocationId);
      },
    });
    this.usage = new UsagePanel(api, me.userId, (m) => this.chart.show(m));
    this.queue = new QueuePanel(api, me.userId);
    this.el = h(
      "div",
      { class: "grid", id: "view-user" },
      this.quota.el,
      this.balance.el,
      this.chart.el,
      card("Allocate a device", { id: "allocate-card" }, allocateForm.el),
      card("Book a device", { id: "book-card" }, bookingForm.el),
      this.allocations.el,
      this.usage.el,
      this.queue.el,
      card(
        "Live events",
        { id: "events-card", cls: "wide" },
        this.events.el,
        h("p", { class: "empty muted" }, "Events of your feed appear here as they happen."),
      ),
    );
  }

  /** Something of this user's changed what the quota allows and what is free. */
  private changedMine(): void {
    this.quota.refresh();
    this.catalogue.refresh();
  }

  // ---- start ------------------------------------------------------------------------------

  start(): void {
    bindFeedState(this.feedStateEl, this.feed, "feed");
    this.feed.onEvent((e) => this.onEvent(e));
    this.feed.onHello((hello) => {
      this.helloCount += 1;
      if (hello.missed) this.events.note(`${hello.missed.count} event(s) were missed and are no longer kept; everything was reloaded.`);
      // A reconnect may have missed events: reload what they would have changed.
      if (this.helloCount > 1) this.refreshAll();
    });
    this.refreshAll();
    void showHistory((q) => this.api.events(q), this.events, this.feed).finally(() =>
      this.feed.start().catch(() => {
        /* shown by the state badge */
      }),
    );
  }

  private refreshAll(): void {
    this.catalogue.refresh();
    this.quota.refresh();
    this.balance.refresh();
    this.allocations.refresh();
    this.usage.refresh();
    this.queue.refresh();
  }

  /** Called every second: countdowns are updated by the page; here, expiries that no event closed. */
  onTick(now: number): void {
    this.allocations.onTick(now);
  }

  // ---- feed -------------------------------------------------------------------------------

  private onEvent(e: FeedEvent): void {
    this.events.add(e as Envelope);
    switch (e.type) {
      case "device.allocated":
        this.allocations.onAllocated(e.data);
        this.changedMine();
        break;
      case "device.extended":
        this.allocations.onExtended(e.data as ExtendedEventData);
        this.quota.refresh();
        break;
      case "device.expiring":
        this.allocations.onExpiring(e.data.allocationId);
        break;
      case "device.released":
        this.allocations.onReleased(e.data.allocationId);
        this.changedMine();
        this.usage.awaitUsage(e.data.allocationId);
        break;
      case "billing.charged":
        // The record is booked and charged: the balance, the usage list and the chart move now.
        this.balance.charged(e.data.newBalance, e.data.currency);
        this.usage.charged(e.data);
        this.quota.refresh();
        break;
      default:
        if (e.type.startsWith("quota.")) this.changedMine();
        else if (e.type.startsWith("billing.")) {
          this.balance.refresh();
          // Money changed what the balance check allows.
          this.catalogue.refresh();
        } else if (e.type.startsWith("queue.") || e.type.startsWith("reservation.")) this.queue.refresh();
    }
  }
}
