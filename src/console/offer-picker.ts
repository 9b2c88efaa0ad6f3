/**
 * The pool and device-class chooser of the allocate, queue and booking forms: a pool field
 * suggesting the catalogue's pools, and the pool's classes as radio cards with their price per
 * hour, how many are free (or when one frees) and, for a class the quota does not allow, the
 * quota's refusal as allocate would word it. A pool the catalogue does not know is left to the
 * API to judge (its error is shown by the form).
 */
import type { CatalogueStore } from "./catalogue";
import { errorText, fill, h } from "./dom";
import { fmtDateTime, fmtMoney, fmtSpec } from "./format";
import type { DeviceOffer, PoolOffer } from "../client/api-client";

export type Spec = { cpuCores: number; memoryMB: number; storageMB: number };

const keyOf = (s: Spec) => `${s.cpuCores}/${s.memoryMB}/${s.storageMB}`;

/** The class picked when none was: the smallest allowed one that is free, else the smallest allowed, else the smallest. */
function preferred(classes: DeviceOffer[]): DeviceOffer | undefined {
  return classes.find((c) => c.allowed && c.free > 0) ?? classes.find((c) => c.allowed) ?? classes[0];
}

export class OfferPicker {
  readonly el: HTMLElement;
  private readonly poolInput: HTMLInputElement;
  private readonly poolList: HTMLDataListElement;
  private readonly poolNote: HTMLElement;
  private readonly classes: HTMLElement;
  private readonly estimate: HTMLElement;
  /** The class the user picked last, kept across catalogue updates while the pool has it. */
  private chosen: string | null = null;
  private minutes = 0;

  /** `prefix` keeps ids apart when two forms show a picker. */
  constructor(
    private readonly store: CatalogueStore,
    private readonly prefix: string,
  ) {
    this.poolList = h("datalist", { id: `${prefix}-pools` });
    this.poolInput = h("input", {
      name: "pool",
      value: "default",
      required: true,
      list: `${prefix}-pools`,
      autocomplete: "off",
      spellcheck: "false",
    });
    this.poolNote = h("span", { class: "muted small pool-note", id: `${prefix}-pool-note` });
    this.classes = h("div", { class: "offer-list", id: `${prefix}-offers` }, h("p", { class: "muted small" }, "Loading the catalogue…"));
    this.estimate = h("p", { class: "muted small offer-estimate", id: `${prefix}-estimate` });
    this.el = h(
      "div",
      { class: "picker" },
      h("label", { class: "pool-field" }, "Pool", this.poolInput, this.poolNote),
      h("fieldset", { class: "offers" }, h("legend", null, "Device class"), this.classes),
      this.estimate,
      this.poolList,
    );
    this.poolInput.addEventListener("input", () => this.render());
    this.classes.addEventListener("change", (ev) => {
      const t = ev.target as HTMLInputElement;
      if (t.name === "offer") {
        this.chosen = t.value;
        this.markChosen();
        this.showEstimate();
      }
    });
    store.onChange(() => this.render());
    this.render();
  }

  get pool(): string {
    return this.poolInput.value.trim();
  }

  /** The picked class (undefined when the pool is not in the catalogue). */
  selected(): DeviceOffer | undefined {
    const offer = this.offer();
    if (!offer) return undefined;
    return offer.classes.find((c) => keyOf(c) === this.chosen) ?? preferred(offer.classes);
  }

  /** The picked class's spec for a request (the spec is a floor: this class or a larger one). */
  spec(): Spec | undefined {
    const c = this.selected();
    return c ? { cpuCores: c.cpuCores, memoryMB: c.memoryMB, storageMB: c.storageMB } : undefined;
  }

  /** The duration the form asks for, for the price estimate. */
  setMinutes(minutes: number): void {
    this.minutes = Number.isFinite(minutes) && minutes > 0 ? minutes : 0;
    this.showEstimate();
  }

  private offer(): PoolOffer | undefined {
    return this.store.pool(this.pool);
  }

  private render(): void {
    const cat = this.store.current;
    fill(
      this.poolList,
      (cat?.items ?? []).map((p) => h("option", { value: p.pool }, `${p.free} free`)),
    );
    if (!cat) {
      this.poolNote.textContent = "";
      fill(
        this.classes,
        this.store.error
          ? h("p", { class: "small error" }, `The catalogue could not be read: ${errorText(this.store.error)}`)
          : h("p", { class: "muted small" }, "Loading the catalogue…"),
      );
      this.showEstimate();
      return;
    }
    const offer = this.offer();
    if (!offer) {
      this.poolNote.textContent = this.pool ? `not in the catalogue (pools: ${cat.items.map((p) => p.pool).join(", ")})` : "";
      fill(this.classes, h("p", { class: "muted small" }, "Pick a pool from the list to see its device classes."));
      this.showEstimate();
      return;
    }
    this.poolNote.textContent = `${offer.free} free now`;
    if (!offer.classes.some((c) => keyOf(c) === this.chosen)) this.chosen = null;
    const pick = this.selected();
    fill(
      this.classes,
      offer.classes.length
        ? offer.classes.map((c) => this.classCard(c, c === pick))
        : h("p", { class: "muted small" }, "No device of this pool is in service."),
    );
    this.showEstimate();
  }

  private classCard(c: DeviceOffer, checked: boolean): HTMLElement {
    const key = keyOf(c);
    const free =
      c.free > 0
        ? `${c.free} of ${c.devices} free`
        : c.nextFreeAt
          ? `none free · one due back ${fmtDateTime(c.nextFreeAt)}`
          : `none free of ${c.devices}`;
    return h(
      "label",
      { class: `offer${checked ? " chosen" : ""}`, "data-offer": key, "data-allowed": String(c.allowed), "data-free": c.free },
      h("input", { type: "radio", name: "offer", value: key, checked }),
      h("span", { class: "offer-spec" }, fmtSpec(c)),
      h(
        "span",
        { class: "offer-meta" },
        h("span", { class: "offer-price" }, `${fmtMoney(c.pricePerHourMinor, c.currency)} / h`),
        h("span", { class: `offer-free${c.free > 0 ? "" : " none"}` }, free),
      ),
      c.refusal ? h("span", { class: "offer-refusal", role: "note" }, `Not allowed: ${c.refusal.code}: ${c.refusal.message}`) : null,
    );
  }

  private markChosen(): void {
    for (const el of Array.from(this.classes.querySelectorAll<HTMLElement>(".offer")))
      el.classList.toggle("chosen", el.dataset.offer === this.chosen);
  }

  private showEstimate(): void {
    const c = this.selected();
    this.estimate.textContent =
      c && this.minutes
        ? `About ${fmtMoney(Math.round((c.pricePerHourMinor * this.minutes) / 60), c.currency)} for ${this.minutes} min.`
        : "";
  }
}
