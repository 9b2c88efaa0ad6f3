/**
 * The fleet's search and filters (text, pool, status, node, label) and its order: devices and
 * pools sort naturally, so `us-std-2` comes before `us-std-10` (text order put it after).
 */
import { h } from "./dom";
import { naturalOrder } from "../domain/fleet";

/** What the fleet card needs to know of a device to find it. */
export interface Findable {
  deviceId: string;
  pool: string;
  node: string;
  status: string;
  userId: string | null;
  name: string | null;
  model: string | null;
  labels: Record<string, string>;
}

/** The one natural order (the API's fleet order), for pools, devices and users alike. */
export const naturalCompare = naturalOrder;

export const labelPairs = (labels: Record<string, string>) => Object.entries(labels).map(([k, v]) => `${k}:${v}`);

export interface FleetQuery {
  q: string;
  pool: string;
  status: string;
  node: string;
  label: string;
}

const EMPTY: FleetQuery = { q: "", pool: "", status: "", node: "", label: "" };

/** Whether `d` is one the query asks for. The text is looked for in the id, name, model, node, holder and labels. */
export function matches(d: Findable, f: FleetQuery): boolean {
  if (f.pool && d.pool !== f.pool) return false;
  if (f.status && d.status !== f.status) return false;
  if (f.node && d.node !== f.node) return false;
  if (f.label && !labelPairs(d.labels).includes(f.label)) return false;
  const q = f.q.trim().toLowerCase();
  if (!q) return true;
  const hay = [d.deviceId, d.name, d.model, d.node, d.userId, ...labelPairs(d.labels)].filter(Boolean).join(" ").toLowerCase();
  return q.split(/\s+/).every((word) => hay.includes(word));
}

export const isFiltered = (f: FleetQuery) => Object.entries(f).some(([, v]) => v.trim() !== "");

const STATUSES = ["available", "allocated", "maintenance", "offline"];

/** The search box and the four selects; `changed` runs on every edit. The selects offer what the fleet has. */
export class FleetFilter {
  readonly el: HTMLElement;
  private readonly search: HTMLInputElement;
  private readonly selects: Record<"pool" | "status" | "node" | "label", HTMLSelectElement>;
  private readonly shown: HTMLElement;

  constructor(private readonly changed: () => void) {
    this.search = h("input", {
      type: "search",
      id: "fleet-search",
      name: "q",
      placeholder: "Search id, name, model, node, holder, label",
      autocomplete: "off",
      spellcheck: "false",
      "aria-label": "Search the fleet",
    });
    const select = (name: string, any: string) =>
      h("select", { id: `fleet-${name}`, name, "aria-label": `Filter by ${name}` }, h("option", { value: "" }, any));
    this.selects = {
      pool: select("pool", "every pool"),
      status: select("status", "any status"),
      node: select("node", "any node"),
      label: select("label", "any label"),
    };
    this.setOptions(this.selects.status, STATUSES);
    const clear = h("button", { type: "button", id: "fleet-clear", class: "small-btn" }, "Clear");
    clear.addEventListener("click", () => {
      this.set(EMPTY);
      this.search.focus();
    });
    this.shown = h("span", { class: "muted small", id: "fleet-shown", role: "status" });
    this.search.addEventListener("input", () => this.changed());
    for (const s of Object.values(this.selects)) s.addEventListener("change", () => this.changed());
    this.el = h(
      "div",
      { class: "fleet-filter", role: "search", "aria-label": "Find devices" },
      this.search,
      ...Object.values(this.selects),
      clear,
      this.shown,
    );
  }

  get query(): FleetQuery {
    return {
      q: this.search.value,
      pool: this.selects.pool.value,
      status: this.selects.status.value,
      node: this.selects.node.value,
      label: this.selects.label.value,
    };
  }

  set(f: FleetQuery): void {
    this.search.value = f.q;
    for (const k of ["pool", "status", "node", "label"] as const) this.selects[k].value = f[k];
    this.changed();
  }

  /** The choices the fleet has now (a chosen one that went stays offered, so the filter does not jump). */
  offer(devices: Findable[]): void {
    const uniq = (xs: string[]) => [...new Set(xs)].sort(naturalCompare);
    this.setOptions(this.selects.pool, uniq(devices.map((d) => d.pool)));
    this.setOptions(this.selects.node, uniq(devices.map((d) => d.node)));
    this.setOptions(this.selects.label, uniq(devices.flatMap((d) => labelPairs(d.labels))));
  }

  showCount(shown: number, total: number): void {
    this.shown.textContent = isFiltered(this.query) ? `${shown} of ${total} devices match` : `${total} devices`;
  }

  private setOptions(sel: HTMLSelectElement, values: string[]): void {
    const chosen = sel.value;
    const want = chosen && !values.includes(chosen) ? [...values, chosen] : values;
    const have = Array.from(sel.options)
      .slice(1)
      .map((o) => o.value);
    if (have.join("\n") === want.join("\n")) return;
    sel.replaceChildren(sel.options[0]!, ...want.map((v) => h("option", { value: v }, v)));
    sel.value = chosen;
  }
}
