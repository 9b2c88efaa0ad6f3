/**
 * "Queue and reservations": the user's waiting-queue entries and reservations in every pool
 * (the lists without `?pool=` cover all pools), each with its pool, and cancel.
 */
import type { ApiClient, QueueEntry, Reservation } from "../client/api-client";
import { act, card, h, pill, refresher, scrollTable, shortId, showError, syncRows } from "./dom";
import { fmtDateTime, fmtWindow } from "./format";

export class QueuePanel {
  readonly el: HTMLElement;
  readonly refresh = refresher(() => this.load());

  constructor(
    private readonly api: ApiClient,
    private readonly userId: string,
  ) {
    const queueBody = h("tbody", { id: "queue-entries" });
    const rsvBody = h("tbody", { id: "reservations" });
    this.el = card(
      "Queue and reservations",
      { id: "queue-card", cls: "wide" },
      h("h3", null, "Waiting queue"),
      scrollTable(["Entry", "Pool", "Status", "Position", "Estimated start", "Joined", ""], queueBody, "No queue entries.", "stack"),
      h("h3", null, "Reservations"),
      scrollTable(["Reservation", "Pool", "Device", "Status", "Window", ""], rsvBody, "No reservations.", "stack"),
      h("p", { class: "msg", id: "queue-msg" }),
    );
  }

  private async load(): Promise<void> {
    const slot = this.el.querySelector<HTMLElement>("#queue-msg");
    try {
      const [queue, reservations] = await Promise.all([
        this.api.queue({ userId: this.userId, limit: 20 }).catch(notFoundAsEmpty),
        this.api.reservations({ userId: this.userId, limit: 20 }).catch(notFoundAsEmpty),
      ]);
      showError(slot, null);
      const entries = [...queue.items].sort((a, b) => b.joinedAt.localeCompare(a.joinedAt));
      const rsvs = [...reservations.items].sort((a, b) => b.startAt.localeCompare(a.startAt));
      syncRows(
        this.el.querySelector("#queue-entries")!,
        entries,
        (q) => q.entryId,
        (q) => this.queueRow(q),
      );
      syncRows(
        this.el.querySelector("#reservations")!,
        rsvs,
        (r) => r.reservationId,
        (r) => this.reservationRow(r),
      );
    } catch (err) {
      showError(slot, err);
    }
  }

  /** A row's last cell: its cancel button (when `show`) and message slot; the lists are read again after. */
  private cancelCell(show: boolean, label: string, cancel: () => Promise<unknown>): HTMLElement {
    const msg = h("span", { class: "msg row-msg" });
    const button = show ? h("button", { type: "button", class: "cancel" }, label) : null;
    button?.addEventListener(
      "click",
      () =>
        void act(button, msg, async () => {
          await cancel();
          this.refresh();
        }),
    );
    return h("td", { class: "nowrap actions-cell" }, button, msg);
  }

  private queueRow(q: QueueEntry): HTMLElement {
    return h(
      "tr",
      { "data-entry-id": q.entryId, "data-status": q.status },
      h("td", null, shortId(q.entryId, 18)),
      h("td", null, q.pool),
      h("td", null, pill(q.status), q.error ? h("div", { class: "small error" }, `${q.error.code}: ${q.error.message}`) : null),
      h("td", { class: "num" }, q.position ?? "—"),
      h("td", { class: "small" }, q.estimatedStartAt ? fmtDateTime(q.estimatedStartAt) : "—"),
      h("td", { class: "small" }, fmtDateTime(q.joinedAt)),
      this.cancelCell(q.status === "waiting" || q.status === "offered", "Leave", () => this.api.cancelQueueEntry(q.entryId)),
    );
  }

  private reservationRow(r: Reservation): HTMLElement {
    return h(
      "tr",
      { "data-reservation-id": r.reservationId, "data-status": r.status },
      h("td", null, shortId(r.reservationId, 18)),
      h("td", null, r.pool),
      h("td", { class: "mono" }, r.deviceId ?? "—"),
      h("td", null, pill(r.status), r.error ? h("div", { class: "small error" }, `${r.error.code}: ${r.error.message}`) : null),
      h("td", { class: "small" }, fmtWindow(r.startAt, r.endAt)),
      this.cancelCell(r.status === "pending" || r.status === "confirmed", "Cancel", () => this.api.cancelReservation(r.reservationId)),
    );
  }
}

/** No default pool (no device registered yet) has no queue: nothing to show, not an error. */
function notFoundAsEmpty(err: unknown): { items: never[]; waiting: number } {
  if ((err as { status?: number })?.status === 404) return { items: [], waiting: 0 };
  throw err;
}
