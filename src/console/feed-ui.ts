/** The live parts shared by both views: a feed's state badge and an event list. */
import type { EventsPage } from "../client/api-client";
import type { CloseInfo, FeedClient, FeedState } from "../client/feed-client";
import type { Envelope } from "../feed/protocol";
import { errorText, h } from "./dom";
import { countdownText, fmtDateTime, fmtDuration, fmtMoney, fmtTime, toMs } from "./format";

/** Shows a feed's state in `el` (`data-state` = connecting | open | waiting | stopped), with why it is not open. */
export function bindFeedState(el: HTMLElement, feed: FeedClient, label: string): void {
  const show = (state: FeedState, close?: CloseInfo) => {
    el.dataset.state = state;
    let text: string = state;
    if (state === "waiting") text = "waiting — reconnecting";
    if (state === "stopped") text = "stopped";
    // A refused ticket or socket says why in `lastError`; a dropped connection in its close.
    const err = feed.lastError ? `${feed.lastError.code}: ${feed.lastError.message}` : null;
    const why = close && ((state === "stopped" || close.code === 1006) && err ? err : close.reason || `close ${close.code}`);
    el.replaceChildren(h("span", { class: "dot", "aria-hidden": "true" }), `${label}: ${text}`);
    el.title = why ? `${text} (${why})` : text;
    if (why && state !== "open") el.append(h("span", { class: "why" }, ` — ${why}`));
  };
  show(feed.state);
  feed.onState(({ state, close }) => show(state, close));
  feed.onError((e) => {
    if (feed.state !== "open") return;
    el.title = `${e.code}: ${e.message}`;
  });
}

/** How many past events a list shows when its page opens (a user's feed keeps up to 1,000). */
const HISTORY = 50;

/**
 * The last events of a feed's log into `list` (marked as past), read before the feed starts; the
 * feed then resumes right after the last one, so nothing is shown twice and nothing in between is lost.
 */
export async function showHistory(
  read: (q: { since?: number; limit?: number }) => Promise<EventsPage>,
  list: EventList,
  feed: FeedClient,
): Promise<void> {
  try {
    const head = await read({ limit: 1 });
    const since = Math.max(0, head.lastSeq - HISTORY, (head.oldestSeq ?? 1) - 1);
    const page = head.lastSeq ? await read({ since, limit: HISTORY }) : { events: [] };
    for (const e of page.events) list.add(e as Envelope, true);
    // Also with no history yet: the feed then replays whatever came since these reads.
    feed.lastSeq = page.events.at(-1)?.seq ?? head.lastSeq;
  } catch (err) {
    list.note(`The earlier events could not be read (${errorText(err)}); new ones show as they happen.`);
  }
}

/** One line about an event's data, for the event lists. */
export function summarize(e: Envelope): string {
  const d = (e.data ?? {}) as Record<string, any>;
  const dev = d.deviceId ? `${d.deviceId}` : "";
  switch (e.type) {
    case "device.allocated":
      return `${dev} (${d.pool}/${d.node ?? "?"}) until ${fmtTime(d.expiresAt)}`;
    case "device.extended":
      return `${dev} +${d.additionalMinutes} min, until ${fmtTime(d.expiresAt)}`;
    case "device.expiring":
      return `${dev} expires in ${countdownText((d.secondsLeft ?? 0) * 1000)}`;
    case "device.released":
      return `${dev} after ${fmtDuration(d.durationSeconds)} (${d.reason})`;
    case "device.status":
      return `${dev} ${d.previousStatus ?? "?"} → ${d.status}${d.reason ? ` (${d.reason})` : ""}`;
    case "device.draining":
      return (
        `${dev} goes to ${d.status} when allocation ${d.allocationId} ends ` +
        `(until ${fmtDateTime(d.deadline)} at most)${d.reason ? `: ${d.reason}` : ""}`
      );
    case "pool.device":
      return `${d.pool}/${dev} ${d.previousStatus ?? "new"} → ${d.status}${d.reason ? ` (${d.reason})` : ""}`;
    case "quota.updated":
      return `tier ${d.tier}, ${d.status}`;
    case "quota.exceeded":
      return "a limit was reached";
    case "quota.renewed":
      return `+${d.extensionDays} days, valid until ${fmtTime(d.validUntil)}`;
    case "billing.low_balance":
      return `balance ${fmtMoney(d.balance, d.currency)} below ${fmtMoney(d.threshold, d.currency)}`;
    case "billing.payment_success":
      return (
        `+${fmtMoney(d.amount, d.currency)} (${d.paymentId})` +
        `${typeof d.newBalance === "number" ? `, balance ${fmtMoney(d.newBalance, d.currency)}` : ""}`
      );
    case "billing.charged":
      return (
        `${fmtMoney(d.amount, d.currency)} for ${fmtDuration(d.durationSeconds)} on ${dev}, ` +
        `balance ${fmtMoney(d.newBalance, d.currency)}`
      );
    case "billing.invoice_generated":
      return `${d.period}: charges ${fmtMoney(d.charges, d.currency)}, closing balance ${fmtMoney(d.closingBalance, d.currency)}`;
    case "billing.usage_failed":
      return `${d.allocationId} of ${d.userId}: ${d.status}${d.error ? ` — ${d.error}` : ""}`;
    case "billing.reconcile_differences":
      return `${d.differences} difference(s), ${d.healed} healed (${fmtTime(d.from)} – ${fmtTime(d.to)})`;
    case "app.installed":
      return `${d.appName} ${d.version} on ${dev}`;
    case "app.install_failed":
      return `${d.appName} on ${dev}: ${d.reason}`;
    case "app.updated":
      return `${d.appName} ${d.oldVersion} → ${d.newVersion} on ${dev}`;
    default:
      if (e.type.startsWith("queue."))
        return `${d.entryId ?? ""} in ${d.pool ?? "?"}${d.error ? ` — ${d.error.code}: ${d.error.message}` : ""}`;
      if (e.type.startsWith("reservation."))
        return (
          `${d.reservationId ?? ""} ${d.status ?? ""}${d.minutesBefore ? ` in ${d.minutesBefore} min` : ""}` +
          `${d.error ? ` — ${d.error.code}: ${d.error.message}` : ""}`
        );
      return dev;
  }
}

/** A newest-first list of events (`li[data-type][data-seq]`), keeping the last `max`. */
export class EventList {
  constructor(
    readonly el: HTMLElement,
    private readonly max = 200,
  ) {
    el.setAttribute("aria-live", "polite");
  }

  /** `past`: read from the feed's history when the page opened, not seen live. */
  add(e: Envelope, past = false): void {
    const at = toMs(e.timestamp) ?? Date.now();
    const li = h(
      "li",
      { "data-type": e.type, "data-seq": e.seq ?? "", class: `ev t-${e.type.split(".")[0]}${past ? " past" : ""}` },
      h("span", { class: "seq mono" }, e.seq === null ? "·" : `#${e.seq}`),
      h("span", { class: "type" }, e.type),
      h("span", { class: "sum" }, summarize(e)),
      h("time", { datetime: new Date(at).toISOString() }, fmtTime(at)),
    );
    this.el.prepend(li);
    while (this.el.children.length > this.max) this.el.lastElementChild?.remove();
    this.el.closest(".card")?.querySelector(".empty")?.remove();
  }

  /** A line of the client's own (a gap in the history, a reconnect), in the same list. */
  note(text: string): void {
    this.el.prepend(
      h(
        "li",
        { class: "ev note" },
        h("span", { class: "seq" }, "·"),
        h("span", { class: "sum" }, text),
        h("time", null, fmtTime(Date.now())),
      ),
    );
  }
}
