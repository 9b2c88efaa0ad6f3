/** "Failed billing" (admins): the usage records the dead-letter queue kept, with replay. */
import type { ApiClient, FailedUsage } from "../client/api-client";
import { act, card, h, pill, refresher, scrollTable, shortId, showError, showOk, syncRows } from "./dom";
import { fmtTime } from "./format";

export class FailedBillingCard {
  readonly el: HTMLElement;
  readonly refresh = refresher(() => this.loadFailed());
  private failed: FailedUsage[] = [];

  constructor(private readonly api: ApiClient) {
    const status = h(
      "select",
      { id: "failed-status", "aria-label": "Status" },
      ["failed", "invalid", "replayed", "resolved", ""].map((s) => h("option", { value: s }, s || "any status")),
    );
    status.addEventListener("change", () => this.refresh());
    const replayAll = h("button", { type: "button", id: "replay-shown" }, "Replay all shown");
    replayAll.addEventListener(
      "click",
      () =>
        void this.replay(
          replayAll,
          this.failed.filter((f) => f.status === "failed" || f.status === "invalid").map((f) => f.allocationId),
        ),
    );
    const reloadFailed = h("button", { type: "button" }, "Reload");
    reloadFailed.addEventListener(
      "click",
      () => void act(reloadFailed, this.el.querySelector("#failed-load-msg"), () => this.loadFailed(true)),
    );
    this.el = card(
      "Failed billing",
      {
        id: "failed-card",
        cls: "wide",
        extra: h("span", { class: "head-extra" }, status, " ", reloadFailed, " ", replayAll),
      },
      scrollTable(
        ["Allocation", "User", "Status", "Attempts", "Error", "Last failed", ""],
        h("tbody", { id: "failed-usage" }),
        "Nothing here.",
        "stack",
      ),
      h("p", { class: "msg", id: "failed-load-msg" }),
      h("p", { class: "msg", id: "failed-msg" }),
    );
  }

  private async loadFailed(throwErrors = false): Promise<void> {
    const status = (this.el.querySelector<HTMLSelectElement>("#failed-status")!.value || undefined) as "failed" | undefined;
    try {
      const page = await this.api.failedUsage({ status, limit: 100 });
      showError(this.el.querySelector("#failed-load-msg"), null);
      this.failed = page.items;
      syncRows(
        this.el.querySelector("#failed-usage")!,
        page.items,
        (f) => f.allocationId,
        (f) => this.failedRow(f),
      );
      const replayAll = this.el.querySelector<HTMLButtonElement>("#replay-shown")!;
      const n = page.items.filter((f) => f.status === "failed" || f.status === "invalid").length;
      replayAll.textContent = `Replay all shown (${n})`;
      replayAll.disabled = n === 0;
    } catch (err) {
      if (throwErrors) throw err;
      showError(this.el.querySelector("#failed-load-msg"), err);
    }
  }

  private failedRow(f: FailedUsage): HTMLElement {
    const replay = f.status === "failed" || f.status === "invalid" ? h("button", { type: "button", class: "replay" }, "Replay") : null;
    replay?.addEventListener("click", () => void this.replay(replay, [f.allocationId]));
    return h(
      "tr",
      { "data-allocation-id": f.allocationId, "data-status": f.status },
      h("td", null, shortId(f.allocationId, 20)),
      h("td", { class: "mono" }, f.userId ?? "—"),
      h("td", null, pill(f.status)),
      h("td", { class: "num" }, f.attempts),
      h("td", { class: "small clip", title: f.error }, f.error),
      h("td", { class: "small" }, fmtTime(f.lastFailedAt)),
      h("td", null, replay),
    );
  }

  private async replay(button: HTMLButtonElement, ids: string[]): Promise<void> {
    const slot = this.el.querySelector<HTMLElement>("#failed-msg");
    if (!ids.length) return;
    const r = await act(button, slot, () => this.api.replayFailedUsage({ allocationIds: ids.slice(0, 100) }));
    if (!r) return;
    const failures = r.results.filter((x) => x.status === "failed" || x.status === "invalid" || x.status === "not_found");
    const text = `Replayed ${r.replayed}, failed ${r.failed}, still open ${r.remaining}.`;
    if (failures.length) {
      const why = (x: (typeof failures)[number]) => `${x.allocationId}: ${x.status}${"error" in x && x.error ? ` — ${x.error}` : ""}`;
      showError(slot, null);
      slot!.textContent = `${text} ${failures.map(why).join("; ")}`;
      slot!.classList.add("error");
    } else showOk(slot, text);
    this.refresh();
  }
}
