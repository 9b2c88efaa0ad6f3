/**
 * One user's quota on their page (admins): what it allows and what is used, and an editor for
 * tier, suspension, validity and each limit (`PUT /quotas/user/{id}`). Only what was changed is
 * sent: a new tier without changed limits brings the tier's own limits.
 */
import type { ApiClient, Quota, QuotaUpdate } from "../client/api-client";
import { act, card, fill, h, pill, showFailure, showOk } from "./dom";
import { fmtDateTime, fmtMB, fmtZone } from "./format";

const TIERS: Quota["tier"][] = ["free", "basic", "pro", "enterprise"];
type LimitKey = keyof Quota["limits"];
/** Each limit, its name, and the usage it bounds (per-device limits bound no running total). */
const LIMITS: [LimitKey, string, keyof Quota["usage"] | null, boolean][] = [
  ["maxDevices", "Devices", "devices", false],
  ["maxCpuCores", "CPU cores", "cpuCores", false],
  ["maxMemoryMB", "Memory", "memoryMB", true],
  ["maxStorageMB", "Storage", "storageMB", true],
  ["maxDeviceHoursPerPeriod", "Device-hours this month", "deviceHours", false],
  ["maxCpuCoresPerDevice", "CPU cores per device", null, false],
  ["maxMemoryMBPerDevice", "Memory per device", null, true],
  ["maxStorageMBPerDevice", "Storage per device", null, true],
];

/** `datetime-local` value of an instant on the browser's clock. */
function localInput(iso: string): string {
  const d = new Date(iso);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export class UserQuotaCard {
  readonly el: HTMLElement;
  private readonly view: HTMLElement;
  private readonly form: HTMLFormElement;
  private readonly msg: HTMLElement;
  private quota: Quota | null = null;

  constructor(
    private readonly api: ApiClient,
    /** The quota changed here (the page reads what depends on it). */
    private readonly changed: (q: Quota) => void,
  ) {
    this.view = h("div", { id: "user-quota" });
    this.form = h("form", { id: "user-quota-form", class: "form-grid", "aria-label": "Edit the quota" });
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.save();
    });
    this.msg = h("p", { class: "msg", role: "status", id: "user-quota-msg" });
    const edit = h("details", { class: "editor", id: "user-quota-editor" }, h("summary", null, "Edit the quota"), this.form);
    this.el = card("Quota", { id: "user-quota-card", cls: "wide" }, this.view, edit, this.msg);
  }

  clear(): void {
    this.quota = null;
    this.view.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    this.form.replaceChildren();
    showOk(this.msg, "");
  }

  show(q: Quota): void {
    this.quota = q;
    const used = (k: LimitKey, u: keyof Quota["usage"] | null, mb: boolean) => {
      const f = (n: number) => (mb ? fmtMB(n) : String(Math.round(n * 100) / 100));
      return u ? `${f(q.usage[u])} / ${f(q.limits[k])}` : f(q.limits[k]);
    };
    fill(
      this.view,
      h(
        "dl",
        { class: "kv cols" },
        h("dt", null, "Tier"),
        h("dd", { id: "user-quota-tier" }, q.tier),
        h("dt", null, "Status"),
        h("dd", null, pill(q.status)),
        h("dt", null, "Valid until"),
        h("dd", { id: "user-quota-valid" }, fmtDateTime(q.validUntil)),
        LIMITS.map(([k, label, u, mb]) => [h("dt", null, label), h("dd", { "data-limit": k }, used(k, u, mb))]),
        h("dt", null, "Updated"),
        h("dd", null, fmtDateTime(q.updatedAt)),
      ),
    );
    // The editor shows the quota as it is now (unless the operator is typing in it).
    if (!this.form.contains(document.activeElement)) this.fillForm(q);
  }

  private fillForm(q: Quota): void {
    fill(
      this.form,
      h(
        "label",
        null,
        "Tier",
        h(
          "select",
          { name: "tier" },
          TIERS.map((t) => h("option", { value: t, selected: t === q.tier }, t)),
        ),
      ),
      h("label", { class: "radio" }, h("input", { type: "checkbox", name: "suspended", checked: q.suspended }), "Suspended"),
      h(
        "label",
        { class: "span-2" },
        h("span", null, "Valid until ", h("span", { class: "zone" }, `(${fmtZone(Date.parse(q.validUntil))})`)),
        h("input", { type: "datetime-local", name: "validUntil", value: localInput(q.validUntil) }),
      ),
      LIMITS.map(([k, label, , mb]) =>
        h("label", null, `${label}${mb ? " (MB)" : ""}`, h("input", { type: "number", name: k, min: 0, step: 1, value: q.limits[k] })),
      ),
      h("p", { class: "muted small span-all" }, "A new tier without changed limits brings the tier's own limits."),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "user-quota-save" }, "Save quota")),
    );
  }

  private async save(): Promise<void> {
    const q = this.quota;
    if (!q) return;
    const f = this.form.elements;
    const val = (n: string) => (f.namedItem(n) as HTMLInputElement).value.trim();
    const body: QuotaUpdate = {};
    const tier = val("tier") as Quota["tier"];
    if (tier !== q.tier) body.tier = tier;
    const suspended = (f.namedItem("suspended") as HTMLInputElement).checked;
    if (suspended !== q.suspended) body.suspended = suspended;
    const valid = val("validUntil");
    if (valid && valid !== localInput(q.validUntil)) body.validUntil = new Date(valid).toISOString();
    const limits: Partial<Quota["limits"]> = {};
    for (const [k] of LIMITS) {
      const n = Number(val(k));
      if (!Number.isInteger(n) || n < 0) return showFailure(this.msg, `${k}: a whole number ≥ 0.`);
      if (n !== q.limits[k]) limits[k] = n;
    }
    if (Object.keys(limits).length) body.limits = limits;
    if (!Object.keys(body).length) return showFailure(this.msg, "Nothing changed.");
    const r = await act(this.form.querySelector<HTMLButtonElement>("#user-quota-save"), this.msg, () =>
      this.api.updateQuota(q.userId, body),
    );
    if (!r) return;
    this.show(r);
    this.fillForm(r);
    this.form.querySelector<HTMLButtonElement>("#user-quota-save")!.focus();
    showOk(this.msg, `Saved: ${Object.keys(body).join(", ")} (tier ${r.tier}, ${r.status}, valid until ${fmtDateTime(r.validUntil)}).`);
    this.changed(r);
  }
}
