/**
 * One device's dialog (Operations → a fleet row's "Manage"): the device as `GET /admin/devices/{id}`
 * tells it (its allocation, why its status last changed, a drain under way) and the operator's
 * actions on it: drain to maintenance or offline (with a reason and an optional deadline),
 * maintenance or offline now, back online (which also cancels a drain), force-release and remove.
 * Each action is first said in words (what ends, what is billed) and sent only on Confirm. A modal
 * `<dialog>`: focus stays inside, Escape closes it (or steps back from a confirmation).
 */
import type { ApiClient, DeviceDetail, ReleaseResult } from "../client/api-client";
import { confirmStep } from "./confirm-step";
import { act, fill, h, pill, showOk } from "./dom";
import type { FleetDevice, FleetStore } from "./fleet-store";
import { fmtDateTime, fmtDuration, fmtSpec, fmtZone, toMs } from "./format";
import { labelPairs } from "./fleet-filter";

type Action = "drain-maintenance" | "drain-offline" | "maintenance" | "offline" | "online" | "force-release" | "remove";

const ACTIONS: { value: Action; label: string }[] = [
  { value: "drain-maintenance", label: "Drain, then maintenance" },
  { value: "drain-offline", label: "Drain, then offline" },
  { value: "maintenance", label: "Maintenance now" },
  { value: "offline", label: "Offline now" },
  { value: "online", label: "Back online" },
  { value: "force-release", label: "Force-release" },
  { value: "remove", label: "Remove from the fleet" },
];

/** `datetime-local` (the browser's clock) as ISO, or undefined when empty. */
const isoOf = (v: string) => (v ? new Date(v).toISOString() : undefined);

export class DeviceDialog {
  readonly el: HTMLDialogElement;
  private readonly summary: HTMLElement;
  private readonly form: HTMLFormElement;
  private readonly confirmSlot: HTMLElement;
  private readonly msg: HTMLElement;
  private readonly title: HTMLElement;
  private readonly zone: HTMLElement;
  private deviceId = "";
  private detail: DeviceDetail | null = null;

  constructor(
    private readonly api: ApiClient,
    private readonly store: FleetStore,
    /** A line for the fleet card's own status (seen after the dialog closes). */
    private readonly announce: (text: string) => void,
  ) {
    this.title = h("h2", { id: "device-dialog-title" });
    this.summary = h("dl", { class: "kv device-summary", id: "device-summary" });
    this.zone = h("span", { class: "zone" });
    this.form = h(
      "form",
      { id: "device-actions", class: "device-actions", "aria-label": "Action on the device" },
      h(
        "fieldset",
        { class: "action-list" },
        h("legend", null, "Action"),
        ACTIONS.map((a) =>
          h("label", { class: "radio" }, h("input", { type: "radio", name: "action", value: a.value, required: true }), a.label),
        ),
      ),
      h(
        "label",
        { class: "reason-field" },
        "Reason (kept with the device, shown, audited)",
        h("input", { name: "reason", maxlength: 500, autocomplete: "off", placeholder: "e.g. battery swap" }),
      ),
      h(
        "label",
        { class: "deadline-field" },
        h("span", null, "Deadline for extensions (optional) ", this.zone),
        h("input", { name: "deadline", type: "datetime-local" }),
      ),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "device-review" }, "Review…")),
    );
    this.confirmSlot = h("div", { class: "confirm-slot", hidden: true });
    this.msg = h("p", { class: "msg", role: "status", id: "device-msg" });
    const close = h("button", { type: "button", class: "dialog-close", "aria-label": "Close" }, "Close");
    close.addEventListener("click", () => this.el.close());
    this.el = h(
      "dialog",
      { id: "device-dialog", class: "device-dialog", "aria-labelledby": "device-dialog-title" },
      h("header", null, this.title, close),
      this.summary,
      this.form,
      this.confirmSlot,
      this.msg,
    );
    this.form.addEventListener("change", () => this.showFields());
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.review();
    });
    store.onChange(() => {
      if (this.el.open) this.renderSummary();
    });
  }

  /** Opens the dialog for a device and reads its detail (reason, drain, allocation). */
  open(deviceId: string): void {
    this.deviceId = deviceId;
    this.detail = null;
    this.title.textContent = `Device ${deviceId}`;
    this.form.reset();
    this.confirmSlot.hidden = true;
    this.confirmSlot.replaceChildren();
    this.form.inert = false;
    this.form.hidden = false;
    showOk(this.msg, "");
    this.zone.textContent = `(${fmtZone(Date.now())})`;
    this.renderSummary();
    this.showFields();
    if (!this.el.open) this.el.showModal();
    void this.readDetail();
  }

  private async readDetail(): Promise<void> {
    const id = this.deviceId;
    await act(null, this.msg, async () => {
      const d = await this.api.device(id);
      if (id !== this.deviceId) return;
      this.detail = d;
      this.store.detailed(d);
      this.renderSummary();
    });
  }

  private get device(): FleetDevice | undefined {
    return this.store.devices.get(this.deviceId);
  }

  private renderSummary(): void {
    const d = this.device;
    const note = this.store.notes.get(this.deviceId);
    const a = this.detail?.allocation;
    const kv = (k: string, ...v: (Node | string)[]) => [h("dt", null, k), h("dd", null, ...v)];
    if (!d) {
      fill(this.summary, kv("Status", pill("removed")));
      this.form.hidden = true;
      return;
    }
    const holder = d.userId
      ? [
          h("a", { href: `#user=${encodeURIComponent(d.userId)}`, class: "mono" }, d.userId),
          ` until ${fmtDateTime(d.expiresAt)}`,
          a && !a.confirmed ? " (being confirmed)" : "",
        ]
      : ["—"];
    fill(
      this.summary,
      kv("Status", pill(d.status), note?.reason ? ` ${note.reason}` : ""),
      this.detail?.statusSince ? kv("Since", fmtDateTime(this.detail.statusSince)) : null,
      note?.drain
        ? kv("Draining", `to ${note.drain.status} at the allocation's end; no extension past ${fmtDateTime(note.drain.deadline)}`)
        : null,
      kv("Holder", ...holder),
      d.allocationId ? kv("Allocation", h("span", { class: "mono" }, d.allocationId)) : null,
      kv("Pool / node", `${d.pool} / ${d.node}`),
      kv("Spec", fmtSpec(d)),
      d.name || d.model || d.osVersion ? kv("Device", [d.name, d.model, d.osVersion].filter(Boolean).join(" · ")) : null,
      Object.keys(d.labels).length ? kv("Labels", labelPairs(d.labels).join(", ")) : null,
    );
    // What applies now: force-release needs an allocation, online a device out of service or draining.
    const set = (v: Action, enabled: boolean) => {
      const input = this.form.querySelector<HTMLInputElement>(`input[value="${v}"]`)!;
      input.disabled = !enabled;
      if (!enabled && input.checked) input.checked = false;
    };
    set("force-release", Boolean(d.allocationId));
    set("online", d.status === "maintenance" || d.status === "offline" || Boolean(note?.drain));
    set("drain-maintenance", d.status !== "maintenance");
    set("drain-offline", d.status !== "offline");
    set("maintenance", d.status !== "maintenance");
    set("offline", d.status !== "offline");
  }

  private get action(): Action | null {
    return ((this.form.elements.namedItem("action") as RadioNodeList).value || null) as Action | null;
  }

  private field(name: string): HTMLInputElement {
    return this.form.elements.namedItem(name) as HTMLInputElement;
  }

  private showFields(): void {
    const a = this.action;
    (this.form.querySelector(".reason-field") as HTMLElement).hidden = a === "force-release" || a === "remove";
    (this.form.querySelector(".deadline-field") as HTMLElement).hidden = !(a === "drain-maintenance" || a === "drain-offline");
  }

  /** What the action will do, in words, for the confirmation. */
  private describe(a: Action, d: FleetDevice, reason: string, deadline: string | undefined): string {
    const id = d.deviceId;
    const goes = (s: "maintenance" | "offline") => (s === "maintenance" ? "goes into maintenance" : "goes offline");
    const held = d.allocationId ? `${d.userId}'s allocation (until ${fmtDateTime(d.expiresAt)})` : null;
    const why = reason ? ` Reason: ${reason}.` : "";
    switch (a) {
      case "drain-maintenance":
      case "drain-offline": {
        const to = a === "drain-maintenance" ? "maintenance" : "offline";
        if (!held) return `${id} holds no allocation: it ${goes(to)} now.${why}`;
        const ext = deadline ? `it may be extended up to ${fmtDateTime(deadline)}` : "it cannot be extended";
        return `${id} takes no new allocation; ${held} runs to its end (${ext}), then the device ${goes(to)}.${why}`;
      }
      case "maintenance":
      case "offline":
        return held ? `${held} ends now and is billed; ${id} ${goes(a)}.${why}` : `${id} ${goes(a)} now.${why}`;
      case "online": {
        const drain = this.store.notes.get(id)?.drain;
        return drain && d.status !== "maintenance" && d.status !== "offline"
          ? `The drain to ${drain.status} is cancelled; ${id} stays in service.${why}`
          : `${id} goes back into service (available).${why}`;
      }
      case "force-release":
        return `${held ?? "Its allocation"} ends now and is billed; ${id} is free again.`;
      case "remove":
        return `${id} leaves the fleet${held ? `; ${held} ends now and is billed` : ""}. This cannot be undone here (register it again).`;
    }
  }

  private async review(): Promise<void> {
    const a = this.action;
    const d = this.device;
    if (!a || !d) return;
    const reason = this.field("reason").value.trim();
    const deadline = isoOf(this.field("deadline").value);
    const label = ACTIONS.find((x) => x.value === a)!.label;
    // The form stays in sight (what was chosen) but cannot change while the step is shown.
    this.form.inert = true;
    const ok = await confirmStep(this.confirmSlot, this.describe(a, d, reason, deadline), {
      confirm: `${label}: ${d.deviceId}`,
      danger: a === "remove" || a === "force-release" || a === "maintenance" || a === "offline",
    });
    this.form.inert = false;
    if (!ok) return;
    const text = await act(null, this.msg, () => this.perform(a, d.deviceId, reason || undefined, deadline));
    if (text) {
      showOk(this.msg, text);
      this.announce(text);
      this.form.reset();
      this.showFields();
    }
  }

  private async perform(a: Action, id: string, reason: string | undefined, deadline: string | undefined): Promise<string> {
    if (a === "force-release") {
      const r = await this.api.forceRelease(id);
      void this.readDetail();
      return `Released ${endedText(r)}.`;
    }
    if (a === "remove") {
      const r = await this.api.removeDevice(id);
      this.store.put(null, id);
      return `Removed ${id}${r.ended ? `; ended ${endedText(r.ended)}` : ""}.`;
    }
    const drain = a === "drain-maintenance" || a === "drain-offline";
    const status = drain ? (a === "drain-maintenance" ? "maintenance" : "offline") : a;
    const r = await this.api.setDeviceStatus(id, status, { reason, ...(drain ? { drain: true, deadline } : {}) });
    this.store.detailed(r);
    if (r.drain)
      return `${id} is draining: ${r.drain.status} once its allocation ends (no extension past ${fmtDateTime(r.drain.deadline)}).`;
    return `${id} is ${r.status}${r.statusReason ? ` (${r.statusReason})` : ""}${r.ended ? `; ended ${endedText(r.ended)}` : ""}.`;
  }
}

const endedText = (r: ReleaseResult) =>
  `${r.allocationId} of ${r.userId} after ${fmtDuration(r.durationSeconds)} (${fmtDateTime(toMs(r.releasedAt))})`;
