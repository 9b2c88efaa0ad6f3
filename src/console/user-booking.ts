/**
 * "Book a device": a reservation for a future window, on a pool and device class from the
 * catalogue. Booking always runs the window check first (`POST /scheduler/reservations/check`)
 * and shows it: how many matching devices are free then, and which of the user's own
 * reservations overlap. A window with no free device is not sent to be booked.
 */
import type { ApiClient, Reservation } from "../client/api-client";
import type { CatalogueStore } from "./catalogue";
import { act, fill, h, shortId, showFailure, showOk } from "./dom";
import { fmtWindow, fmtZone } from "./format";
import { OfferPicker } from "./offer-picker";
import type { WindowCheck, WindowCheckRequest } from "../client/api-client";

export interface BookingHooks {
  /** A reservation was made. */
  booked(r: Reservation): void;
}

const pad = (n: number) => String(n).padStart(2, "0");

/** A `datetime-local` value (the browser's own clock) for epoch ms. */
const localValue = (ms: number) => {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
};

/** Epoch ms of a `datetime-local` value, read on the browser's clock (null when empty or unreadable). */
function fromLocalValue(v: string): number | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(v);
  if (!m) return null;
  const t = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5])).getTime();
  return Number.isFinite(t) ? t : null;
}

export class BookingForm {
  readonly el: HTMLFormElement;
  private readonly picker: OfferPicker;
  private readonly start: HTMLInputElement;
  private readonly zone: HTMLElement;
  private readonly minutes: HTMLInputElement;
  private readonly checkSlot: HTMLElement;
  private readonly msg: HTMLElement;

  constructor(
    private readonly api: ApiClient,
    store: CatalogueStore,
    private readonly hooks: BookingHooks,
  ) {
    this.picker = new OfferPicker(store, "book");
    // The next full hour after an hour from now: a window that can still be booked.
    const next = new Date(Date.now() + 3_600_000);
    next.setMinutes(0, 0, 0);
    next.setHours(next.getHours() + 1);
    this.start = h("input", { name: "startAt", type: "datetime-local", required: true, value: localValue(next.getTime()) });
    this.zone = h("span", { class: "zone", id: "book-zone" });
    this.minutes = h("input", { name: "durationMinutes", type: "number", min: 1, max: 1440, value: 60, required: true });
    this.checkSlot = h("div", { class: "check", id: "book-check", "aria-live": "polite" });
    this.msg = h("p", { class: "msg", role: "status", id: "book-msg" });
    const checkButton = h("button", { type: "button", id: "book-check-button" }, "Check window");
    const form = h(
      "form",
      { id: "book-form", class: "form-grid", "aria-label": "Book a device" },
      this.picker.el,
      h("label", { class: "span-2" }, h("span", null, "Start ", this.zone), this.start),
      h("label", null, "Minutes", this.minutes),
      h("div", { class: "actions" }, checkButton, h("button", { type: "submit", id: "book-submit", class: "primary" }, "Book")),
      this.checkSlot,
      this.msg,
    );
    const changed = () => {
      this.showZone();
      this.picker.setMinutes(Number(this.minutes.value));
      // A check answers one window: once the window changes it no longer applies.
      fill(this.checkSlot);
    };
    form.addEventListener("input", changed);
    changed();
    checkButton.addEventListener("click", () => void this.check(checkButton));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.book(form.querySelector<HTMLButtonElement>("#book-submit"));
    });
    this.el = form;
  }

  private showZone(): void {
    const t = fromLocalValue(this.start.value);
    this.zone.textContent = `(${fmtZone(t ?? Date.now())})`;
  }

  /** The window as the form says it, or null with the reason shown. */
  private window(): WindowCheckRequest | null {
    const t = fromLocalValue(this.start.value);
    if (t === null) {
      showFailure(this.msg, "Pick a start date and time.");
      return null;
    }
    return {
      pool: this.picker.pool || undefined,
      startAt: new Date(t).toISOString(),
      durationMinutes: Number(this.minutes.value),
      spec: this.picker.spec(),
    };
  }

  private async check(button: HTMLButtonElement): Promise<void> {
    const w = this.window();
    if (!w) return;
    const c = await act(button, this.msg, () => this.api.checkReservation(w));
    if (c) this.showCheck(c);
  }

  private async book(button: HTMLButtonElement | null): Promise<void> {
    const w = this.window();
    if (!w) return;
    let refused = false;
    const r = await act(button, this.msg, async () => {
      const c = await this.api.checkReservation(w);
      this.showCheck(c);
      if (!c.available) {
        refused = true;
        return undefined;
      }
      return this.api.reserve(w);
    });
    if (refused) {
      // A class the quota rules out has no device within the user's limits: the quota's words say why.
      const refusal = this.picker.selected()?.refusal;
      showFailure(
        this.msg,
        refusal ? `${refusal.code}: ${refusal.message}` : "Not booked: no matching device is free for that window (see the check above).",
      );
    }
    if (!r) return;
    this.hooks.booked(r);
    // The id's end tells reservations apart (they all start with the same encoded pool).
    const id = `${r.reservationId.slice(0, 4)}…${r.reservationId.slice(-12)}`;
    showOk(this.msg, `Booked ${r.deviceId ?? "a device"} in ${r.pool} for ${fmtWindow(r.startAt, r.endAt)} (${id}).`);
  }

  private showCheck(c: WindowCheck): void {
    const when = fmtWindow(c.startAt, c.endAt);
    const verdict = c.available
      ? h(
          "p",
          { class: "ok", "data-available": "true" },
          `Bookable: ${c.freeDevices} of ${c.matchingDevices} matching device(s) free ${when}.`,
        )
      : h(
          "p",
          { class: "error", "data-available": "false" },
          c.matchingDevices
            ? `Not bookable: all ${c.matchingDevices} matching device(s) of ${c.pool} are taken ${when}.`
            : `Not bookable: no device of ${c.pool} fits both this class and your per-device limits.`,
        );
    fill(
      this.checkSlot,
      verdict,
      c.overlapping.length
        ? h(
            "div",
            { class: "overlaps" },
            h("p", { class: "small" }, `It overlaps ${c.overlapping.length} reservation(s) of yours (they count against your quota too):`),
            h(
              "ul",
              { class: "small" },
              c.overlapping.map((o) =>
                h(
                  "li",
                  { "data-reservation-id": o.reservationId },
                  shortId(o.reservationId, 18),
                  ` ${o.pool}, ${fmtWindow(o.startAt, o.endAt)} (${o.status})`,
                ),
              ),
            ),
          )
        : null,
    );
  }
}
