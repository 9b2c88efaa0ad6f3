/**
 * "Pool settings" (admins): each pool's strategy (how it picks a device) and idle release (an
 * allocation whose holder has had no feed open this long is released), `PUT /admin/pools/{pool}`.
 * Each pool has its own Save and status line; the pools come from the fleet's store.
 */
import type { ApiClient, PoolSummary } from "../client/api-client";
import { act, card, h, showFailure, showOk, syncRows } from "./dom";
import type { FleetStore } from "./fleet-store";

type Strategy = PoolSummary["strategy"];

/** Every strategy the API takes, with what it does (docs/api.md, PUT /admin/pools/{pool}). */
const STRATEGIES: Record<Strategy, string> = {
  "least-loaded": "smallest fitting class, then the least-loaded node",
  spread: "smallest fitting class, then the node picked longest ago",
  "bin-pack": "smallest fitting class, then the busiest node",
  "load-first": "the least-loaded node first, then its smallest fitting device",
};

export class PoolSettingsCard {
  readonly el: HTMLElement;
  private readonly body: HTMLElement;
  /** Each row's last save (a confirmation or the API's error), kept across redraws. */
  private readonly status = new Map<string, { ok: boolean; text: string }>();

  constructor(
    private readonly api: ApiClient,
    private readonly store: FleetStore,
  ) {
    // One line per pool (it wraps on a phone), not a table: four short fields and a status line.
    this.body = h("div", { id: "pool-settings", class: "pool-setting-list" });
    this.el = card(
      "Pool settings",
      { id: "pools-card" },
      this.body,
      h(
        "details",
        { class: "help small" },
        h("summary", null, "What the strategies do"),
        h(
          "dl",
          { class: "kv" },
          Object.entries(STRATEGIES).map(([k, v]) => [h("dt", { class: "mono" }, k), h("dd", null, v)]),
        ),
        h("p", { class: "muted" }, "Idle release applies to allocations made from now on; empty turns it off."),
      ),
    );
    store.onChange(() => this.render());
  }

  private render(): void {
    syncRows(
      this.body,
      this.store.pools,
      (p) => p.pool,
      (p) => this.row(p),
      (p) => JSON.stringify([p.pool, p.strategy, p.idleReleaseMinutes, this.status.get(p.pool) ?? null]),
    );
  }

  private row(p: PoolSummary): HTMLElement {
    const strategy = h(
      "select",
      { name: "strategy", "aria-label": `Strategy of ${p.pool}` },
      Object.keys(STRATEGIES).map((s) => h("option", { value: s, selected: s === p.strategy, title: STRATEGIES[s as Strategy] }, s)),
    );
    const idle = h("input", {
      name: "idleReleaseMinutes",
      type: "number",
      min: 1,
      max: 1440,
      step: "any",
      class: "mini",
      placeholder: "off",
      value: p.idleReleaseMinutes ?? "",
      "aria-label": `Idle release of ${p.pool} in minutes (empty: off)`,
    });
    const save = h("button", { type: "button", class: "save-pool small-btn" }, "Save");
    const s = this.status.get(p.pool);
    const msg = h("span", { class: `msg row-msg${s ? (s.ok ? " ok" : " error") : ""}`, role: "status" }, s?.text ?? "");
    save.addEventListener("click", () => void this.save(p.pool, strategy, idle, save, msg));
    return h(
      "div",
      { class: "pool-setting", "data-pool": p.pool, role: "group", "aria-label": `Settings of ${p.pool}` },
      h("span", { class: "mono pool-name" }, p.pool),
      h("label", null, "Strategy", strategy),
      h("label", null, "Idle release", h("span", { class: "nowrap" }, idle, " min")),
      save,
      msg,
    );
  }

  private async save(pool: string, strategy: HTMLSelectElement, idle: HTMLInputElement, button: HTMLButtonElement, msg: HTMLElement) {
    const text = idle.value.trim();
    const minutes = text === "" ? null : Number(text);
    if (minutes !== null && !(minutes >= 1 && minutes <= 1440)) {
      showFailure(msg, "Idle release: 1 to 1,440 minutes, or empty for off.");
      return;
    }
    const r = await act(button, msg, () =>
      this.api.updatePool(pool, { strategy: strategy.value as Strategy, idleReleaseMinutes: minutes }),
    );
    if (!r) {
      this.status.set(pool, { ok: false, text: msg.textContent ?? "" });
      return;
    }
    const said = `Saved: ${r.strategy}, idle release ${r.idleReleaseMinutes === null ? "off" : `${r.idleReleaseMinutes} min`}.`;
    this.status.set(pool, { ok: true, text: said });
    showOk(msg, said);
    this.store.poolChanged(r);
  }
}
