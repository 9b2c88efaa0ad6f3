/** "Allocate a device": the form that allocates now or joins the pool's waiting queue, with the pools this user used. */
import type { AllocationResult, ApiClient, QueueEntry } from "../client/api-client";
import { act, fill, fmtTime, h, showOk } from "./dom";

export interface AllocateHooks {
  /** An allocation was made (the answer, before the message says so). */
  allocated(r: AllocationResult): void;
  /** The queue took the request (or served it at once). */
  queued(r: QueueEntry): void;
}

export class AllocateForm {
  readonly el: HTMLFormElement;
  private readonly poolList: HTMLElement;

  constructor(
    private readonly api: ApiClient,
    private readonly hooks: AllocateHooks,
  ) {
    this.poolList = h("datalist", { id: "known-pools" });
    const form = h(
      "form",
      { id: "allocate-form", class: "form-grid", "aria-label": "Allocate a device" },
      h(
        "label",
        null,
        "Pool",
        h("input", {
          name: "pool",
          value: "default",
          required: true,
          list: "known-pools",
          autocomplete: "off",
          spellcheck: "false",
        }),
      ),
      h("label", null, "Minutes", h("input", { name: "durationMinutes", type: "number", min: 1, max: 1440, value: 30, required: true })),
      h("label", null, "CPU cores", h("input", { name: "cpuCores", type: "number", min: 0, max: 1024, placeholder: "any" })),
      h("label", null, "Memory MB", h("input", { name: "memoryMB", type: "number", min: 0, step: 1024, placeholder: "any" })),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "submit", id: "allocate-submit", class: "primary" }, "Allocate"),
        h("button", { type: "button", id: "queue-join", title: "Wait for a fitting device if none is free" }, "Wait in queue"),
      ),
      h("p", { class: "msg", role: "status", id: "allocate-msg" }),
      this.poolList,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.allocate(form, form.querySelector<HTMLButtonElement>("#allocate-submit"));
    });
    form
      .querySelector<HTMLButtonElement>("#queue-join")!
      .addEventListener("click", (ev) => void this.joinQueue(form, ev.currentTarget as HTMLButtonElement));
    this.el = form;
  }

  /** The pools the pool field suggests. */
  showPools(pools: Iterable<string>): void {
    fill(
      this.poolList,
      [...pools].map((p) => h("option", { value: p })),
    );
  }

  private async allocate(form: HTMLFormElement, button: HTMLButtonElement | null): Promise<void> {
    const slot = form.querySelector<HTMLElement>("#allocate-msg");
    const r = await act(button, slot, () =>
      this.api.allocate({
        pool: fieldOf(form, "pool") || undefined,
        durationMinutes: Number(fieldOf(form, "durationMinutes")),
        spec: specOf(form),
      }),
    );
    if (!r) return;
    this.hooks.allocated(r);
    showOk(slot, `Allocated ${r.deviceId} (${r.pool}/${r.node}) until ${fmtTime(r.expiresAt)}.`);
  }

  private async joinQueue(form: HTMLFormElement, button: HTMLButtonElement): Promise<void> {
    const slot = form.querySelector<HTMLElement>("#allocate-msg");
    const pool = fieldOf(form, "pool") || undefined;
    const r = await act(button, slot, () =>
      this.api.joinQueue({ pool, durationMinutes: Number(fieldOf(form, "durationMinutes")), spec: specOf(form) }),
    );
    if (!r) return;
    this.hooks.queued(r);
    showOk(slot, r.status === "fulfilled" ? `Served at once: ${r.deviceId}.` : `In the queue of ${r.pool}, position ${r.position ?? "—"}.`);
  }
}

const fieldOf = (form: HTMLFormElement, name: string) => (form.elements.namedItem(name) as HTMLInputElement | null)?.value.trim() ?? "";

function specOf(form: HTMLFormElement): { cpuCores?: number; memoryMB?: number } | undefined {
  const spec: { cpuCores?: number; memoryMB?: number } = {};
  const cpu = fieldOf(form, "cpuCores");
  const mem = fieldOf(form, "memoryMB");
  if (cpu) spec.cpuCores = Number(cpu);
  if (mem) spec.memoryMB = Number(mem);
  return Object.keys(spec).length ? spec : undefined;
}
