/**
 * A user's feed on their page (admins): an admin's ticket naming the user opens it
 * (`/ws/users/{userId}`), so the page sees the same frames the user does, live. Its last events
 * are read first (`GET /scheduler/events?userId=`) and the feed resumes right after them; every
 * event is handed to the page, which reads what it changed.
 */
import type { ApiClient } from "../client/api-client";
import type { FeedClient } from "../client/feed-client";
import type { Envelope } from "../feed/protocol";
import { card, h } from "./dom";
import { EventList, bindFeedState, showHistory } from "./feed-ui";

export class UserFeedCard {
  readonly el: HTMLElement;
  private list: EventList;
  private readonly state: HTMLElement;
  private feed: FeedClient | null = null;

  constructor(
    private readonly api: ApiClient,
    /** A feed client for this user's feed, not started. */
    private readonly watch: (userId: string) => FeedClient,
    private readonly on: {
      /** An event of theirs, live. */
      event: (e: Envelope) => void;
      /** The feed came back after a drop (it replays what it missed, but the page re-reads all once). */
      resumed: () => void;
    },
  ) {
    this.list = new EventList(h("ol", { id: "user-events", class: "events" }));
    this.state = h("span", { class: "feed-state small", id: "user-feed-state", role: "status" });
    this.el = card(
      "Their feed",
      { id: "user-events-card", cls: "wide", extra: this.state },
      h("p", { class: "muted small" }, "What the user sees on their own feed, live."),
      this.list.el,
    );
  }

  /** Their last events, then live; a previous user's feed is closed first. */
  async open(userId: string): Promise<void> {
    this.close();
    const fresh = new EventList(h("ol", { id: "user-events", class: "events" }));
    this.list.el.replaceWith(fresh.el);
    this.list = fresh;
    const feed = this.watch(userId);
    this.feed = feed;
    bindFeedState(this.state, feed, "live");
    let hellos = 0;
    feed.onHello((hello) => {
      hellos += 1;
      if (hello.missed) this.list.note(`${hello.missed.count} event(s) were missed and are no longer kept; the page was read again.`);
      if (hellos > 1) this.on.resumed();
    });
    feed.onEvent((e) => {
      this.list.add(e as Envelope);
      this.on.event(e as Envelope);
    });
    await showHistory((q) => this.api.userEvents(userId, q), this.list, feed);
    if (feed !== this.feed) return;
    if (!this.list.el.children.length) this.list.note("No events in their feed yet.");
    feed.start().catch(() => {
      /* shown by the state badge */
    });
  }

  close(): void {
    this.feed?.close();
    this.feed = null;
  }
}
