/**
 * "My account": quota, balance, active allocations with a live countdown, usage, queue
 * entries and reservations, and the user's live feed. Everything refreshes from the feed's
 * events; a reconnect that missed events reloads it all. Each card is its own file
 * (user-account, user-allocate, user-allocations, user-usage, user-queue); this one puts them
 * together, keeps the pools this user used, and hands the feed's events to them.
 */
import type { ApiClient } from "../client/api-client";
import { FeedClient } from "../client/feed-client";
import type { Envelope, ExtendedEventData, FeedEvent } from "../feed/protocol";
import { card, h } from "./dom";
import { EventList, bindFeedState } from "./feed-ui";
import type { Identity } from "./session";
import { BalanceCard, QuotaCard } from "./user-account";
import { AllocateForm } from "./user-allocate";
import { AllocationsPanel } from "./user-allocations";
import { QueuePanel } from "./user-queue";
import { UsagePanel } from "./user-usage";

export class UserView {
  readonly el: HTMLElement;
  readonly feed: FeedClient;
  /**
   * Pools whose queue and reservations are listed (the API lists them per pool, and a user
   * cannot list pools): the default, and every pool this user used in this browser.
   */
  private readonly pools: Set<string>;
  private readonly events: EventList;
  private readonly quota: QuotaCard;
  private readonly balance: BalanceCard;
  private readonly allocateForm: AllocateForm;
  private readonly allocations: AllocationsPanel;
  private readonly usage: UsagePanel;
  private readonly queue: QueuePanel;
  private helloCount = 0;

  constructor(
    api: ApiClient,
    private readonly me: Identity,
    baseUrl: string,
    private readonly feedStateEl: HTMLElement,
  ) {
    this.feed = new FeedClient({ baseUrl, token: () => me.token, feed: "user" });
    this.pools = new Set(["default", ...readPools(me.userId)]);
    this.events = new EventList(h("ol", { id: "events", class: "events" }));
    this.quota = new QuotaCard(api, me.userId);
    this.balance = new BalanceCard(api, me.userId);
    this.allocateForm = new AllocateForm(api, {
      allocated: (r) => {
        this.allocations.allocated(r);
        this.quota.refresh();
      },
      queued: (r) => {
        this.usePool(r.pool);
        this.queue.refresh();
      },
    });
    this.allocations = new AllocationsPanel(api, {
      usePool: (pool) => this.usePool(pool),
      rendered: () => this.allocateForm.showPools(this.pools),
      released: (allocationId) => {
        this.quota.refresh();
        this.usage.awaitUsage(allocationId);
      },
    });
    this.usage = new UsagePanel(api, me.userId, this.events, () => this.balance.refresh());
    this.queue = new QueuePanel(api, me.userId, () => this.pools);
    this.el = h(
      "div",
      { class: "grid", id: "view-user" },
      this.quota.el,
      this.balance.el,
      card("Allocate a device", { id: "allocate-card" }, this.allocateForm.el),
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

  private usePool(pool: string): void {
    if (this.pools.has(pool)) return;
    this.pools.add(pool);
    // A pool seen for the first time may hold entries and reservations of this user.
    this.queue.refresh();
    try {
      localStorage.setItem(poolsKey(this.me.userId), JSON.stringify([...this.pools].slice(-20)));
    } catch {
      /* storage full or off: this page still knows */
    }
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
    this.feed.start().catch(() => {
      /* shown by the state badge */
    });
    this.refreshAll();
  }

  private refreshAll(): void {
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
        this.quota.refresh();
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
        this.quota.refresh();
        this.usage.awaitUsage(e.data.allocationId);
        break;
      default:
        if (e.type.startsWith("quota.")) this.quota.refresh();
        else if (e.type.startsWith("billing.")) this.balance.refresh();
        else if (e.type.startsWith("queue.") || e.type.startsWith("reservation.")) {
          const pool = (e.data as { pool?: string }).pool;
          if (pool) this.usePool(pool);
          this.queue.refresh();
        }
    }
  }
}

const poolsKey = (userId: string) => `eda.console.pools.${userId}`;

function readPools(userId: string): string[] {
  try {
    const v = JSON.parse(localStorage.getItem(poolsKey(userId)) ?? "[]") as unknown;
    return Array.isArray(v) ? v.filter((p): p is string => typeof p === "string") : [];
  } catch {
    return [];
  }
}
