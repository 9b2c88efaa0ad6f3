/** "Allocate a device": a pool and device class from the catalogue, allocated now or queued for when one frees. */
import type { AllocationResult, ApiClient, QueueEntry } from "../client/api-client";
import type { CatalogueStore } from "./catalogue";
import { act, h, showOk } from "./dom";
import { fmtDateTime, fmtSpec } from "./format";
import { OfferPicker } from "./offer-picker";

export interface AllocateHooks {
  /** An allocation was made (the answer, before the message says so). */
  allocated(r: AllocationResult): void;
  /** The queue took the request (or served it at once). */
  queued(r: QueueEntry): void;
}

export class AllocateForm {
  readonly el: HTMLFormElement;
  private readonly picker: OfferPicker;

  constructor(
    private readonly api: ApiClient,
    store: CatalogueStore,
    private readonly hooks: AllocateHooks,
  ) {
    this.picker = new OfferPicker(store, "allocate");
    const minutes = h("input", { name: "durationMinutes", type: "number", min: 1, max: 1440, value: 30, required: true });
    const form = h(
      "form",
      { id: "allocate-form", class: "form-grid", "aria-label": "Allocate a device" },
      this.picker.el,
      h("label", null, "Minutes", minutes),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "submit", id: "allocate-submit", class: "primary" }, "Allocate"),
        h("button", { type: "button", id: "queue-join", title: "Wait for a device of this class if none is free" }, "Wait in queue"),
      ),
      h("p", { class: "msg", role: "status", id: "allocate-msg" }),
    );
    minutes.addEventListener("input", () => this.picker.setMinutes(Number(minutes.value)));
    this.picker.setMinutes(Number(minutes.value));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.allocate(form, form.querySelector<HTMLButtonElement>("#allocate-submit"));
    });
    form
      .querySelector<HTMLButtonElement>("#queue-join")!
      .addEventListener("click", (ev) => void this.joinQueue(form, ev.currentTarget as HTMLButtonElement));
    this.el = form;
  }

  private request(form: HTMLFormElement) {
    return {
      pool: this.picker.pool || undefined,
      durationMinutes: Number((form.elements.namedItem("durationMinutes") as HTMLInputElement).value),
      spec: this.picker.spec(),
    };
  }

  private async allocate(form: HTMLFormElement, button: HTMLButtonElement | null): Promise<void> {
    const slot = form.querySelector<HTMLElement>("#allocate-msg");
    const r = await act(button, slot, () => this.api.allocate(this.request(form)));
    if (!r) return;
    this.hooks.allocated(r);
    showOk(slot, `Allocated ${r.deviceId} (${r.pool}/${r.node}, ${fmtSpec(r)}) until ${fmtDateTime(r.expiresAt)}.`);
  }

  private async joinQueue(form: HTMLFormElement, button: HTMLButtonElement): Promise<void> {
    const slot = form.querySelector<HTMLElement>("#allocate-msg");
    const r = await act(button, slot, () => this.api.joinQueue(this.request(form)));
    if (!r) return;
    this.hooks.queued(r);
    showOk(slot, r.status === "fulfilled" ? `Served at once: ${r.deviceId}.` : `In the queue of ${r.pool}, position ${r.position ?? "—"}.`);
  }
}
