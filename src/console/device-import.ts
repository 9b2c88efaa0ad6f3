/**
 * "Register and import" (admins): one device from a form (`POST /admin/devices`), or many from a
 * CSV or JSON file or pasted text through `POST /admin/devices/bulk` (idempotent by deviceId: a
 * known device is updated to what differs). An import is checked first (what is new, what
 * updates, what the console cannot read), then sent, in parts of at most 500, with a result per
 * device. The new devices reach the fleet from the pools' feeds; a new pool is read and watched.
 */
import type { ApiClient, BulkDevicesResult, RegisterDeviceRequest } from "../client/api-client";
import { ApiError } from "../client/api-client";
import { act, card, fill, h, pill, scrollTable, showFailure, showOk } from "./dom";
import { parseImport, type ImportItem, type ParsedImport } from "./device-import-parse";
import type { FleetStore } from "./fleet-store";
import { fmtSpec } from "./format";

/** POST /admin/devices/bulk takes at most this many devices a request (FLEET.bulkMaxItems). */
const PART = 500;

type ItemOutcome = { deviceId: string; where: string; ok: boolean; outcome: string; detail: string };

const EXAMPLE =
  "deviceId,pool,node,cpuCores,memoryMB,storageMB,name,model,osVersion,labels\n" +
  "us-std-1,us-std,us-node-1,4,8192,65536,Pixel 8 #1,Pixel 8,Android 14,region=us;tier=std";

export class DeviceImportCard {
  readonly el: HTMLElement;
  private readonly register: HTMLFormElement;
  private readonly importForm: HTMLFormElement;
  private readonly text: HTMLTextAreaElement;
  private readonly preview: HTMLElement;
  private readonly results: HTMLElement;
  private readonly importMsg: HTMLElement;
  private readonly importButton: HTMLButtonElement;
  private checked: ParsedImport | null = null;

  constructor(
    private readonly api: ApiClient,
    private readonly store: FleetStore,
  ) {
    const field = (label: string, attrs: Record<string, string | number | boolean>) => h("label", null, label, h("input", attrs));
    this.register = h(
      "form",
      { id: "register-form", class: "form-grid", "aria-label": "Register a device" },
      field("Device id", { name: "deviceId", placeholder: "made up if empty", autocomplete: "off", spellcheck: "false" }),
      field("Pool", { name: "pool", required: true, list: "register-pools", autocomplete: "off", spellcheck: "false" }),
      field("Node", { name: "node", placeholder: "node-1", autocomplete: "off" }),
      field("CPU cores", { name: "cpuCores", type: "number", min: 1, required: true, value: 4 }),
      field("Memory MB", { name: "memoryMB", type: "number", min: 1, required: true, value: 8192 }),
      field("Storage MB", { name: "storageMB", type: "number", min: 1, required: true, value: 65536 }),
      field("Name", { name: "name", autocomplete: "off" }),
      field("Model", { name: "model", autocomplete: "off" }),
      field("OS version", { name: "osVersion", autocomplete: "off" }),
      h(
        "label",
        { class: "span-2" },
        "Labels",
        h("input", { name: "labels", placeholder: "region=eu-west, tier=gold", autocomplete: "off", spellcheck: "false" }),
      ),
      h("datalist", { id: "register-pools" }),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "register-submit" }, "Register")),
      h("p", { class: "msg", role: "status", id: "register-msg" }),
    );
    this.register.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.registerOne();
    });

    const file = h("input", {
      type: "file",
      id: "import-file",
      accept: ".csv,.json,text/csv,application/json",
      "aria-label": "Import file",
    });
    file.addEventListener("change", () => void this.readFile(file));
    this.text = h("textarea", {
      id: "import-text",
      name: "text",
      rows: 5,
      spellcheck: "false",
      placeholder: EXAMPLE,
      "aria-label": "Devices as CSV or JSON",
    });
    this.text.addEventListener("input", () => this.forget());
    const check = h("button", { type: "button", id: "import-check" }, "Check");
    check.addEventListener("click", () => this.check());
    this.importButton = h("button", { type: "submit", id: "import-submit", class: "primary", disabled: true }, "Import");
    this.preview = h("div", { id: "import-preview", class: "check" });
    this.importMsg = h("p", { class: "msg", role: "status", id: "import-msg" });
    this.results = h("div", { id: "import-results" });
    this.importForm = h(
      "form",
      { id: "import-form", class: "import-form", "aria-label": "Import devices" },
      h("p", { class: "muted small" }, "A CSV file with a header row, or JSON (an array of devices); a known deviceId is updated."),
      h("div", { class: "actions" }, file),
      this.text,
      h("div", { class: "actions" }, check, this.importButton),
      this.preview,
      this.importMsg,
      this.results,
    );
    this.importForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.importAll();
    });
    this.el = card("Register and import devices", { id: "import-card" }, this.register, h("h3", null, "Import"), this.importForm);
    store.onChange(() => {
      const list = this.register.querySelector("#register-pools")!;
      if (list.children.length !== store.pools.length)
        fill(
          list,
          store.pools.map((p) => h("option", { value: p.pool })),
        );
    });
  }

  private async registerOne(): Promise<void> {
    const form = this.register;
    const val = (n: string) => (form.elements.namedItem(n) as HTMLInputElement).value.trim();
    const msg = form.querySelector<HTMLElement>("#register-msg")!;
    const labels: Record<string, string> = {};
    for (const pair of val("labels").split(/[;,]/)) {
      if (!pair.trim()) continue;
      const m = /^\s*([^=:]+?)\s*[=:]\s*(.+?)\s*$/.exec(pair);
      if (!m) return showFailure(msg, `Labels: "${pair.trim()}" is not key=value.`);
      labels[m[1]!] = m[2]!;
    }
    const body: RegisterDeviceRequest = {
      pool: val("pool"),
      cpuCores: Number(val("cpuCores")),
      memoryMB: Number(val("memoryMB")),
      storageMB: Number(val("storageMB")),
    };
    for (const k of ["deviceId", "node", "name", "model", "osVersion"] as const) if (val(k)) body[k] = val(k);
    if (Object.keys(labels).length) body.labels = labels;
    const d = await act(form.querySelector<HTMLButtonElement>("#register-submit"), msg, () => this.api.registerDevice(body));
    if (!d) return;
    showOk(msg, `Registered ${d.deviceId} in ${d.pool} on ${d.node} (${fmtSpec(d)}).`);
    (form.elements.namedItem("deviceId") as HTMLInputElement).value = "";
    // A device of a new pool: the pools are read again and the new one watched.
    if (!this.store.pool(d.pool)) this.store.reload();
  }

  private async readFile(input: HTMLInputElement): Promise<void> {
    const f = input.files?.[0];
    if (!f) return;
    this.text.value = await f.text();
    this.check();
  }

  private forget(): void {
    this.checked = null;
    this.importButton.disabled = true;
    this.importButton.textContent = "Import";
    this.preview.replaceChildren();
  }

  /** Reads the text and says what an import would do; Import is offered for a clean check only. */
  private check(): ParsedImport | null {
    this.forget();
    showOk(this.importMsg, "");
    if (!this.text.value.trim()) {
      showFailure(this.importMsg, "Choose a file or paste devices first.");
      return null;
    }
    const p = parseImport(this.text.value);
    const known = p.items.filter((i) => this.store.devices.has(i.deviceId)).length;
    const repeated = p.items.filter((x, i) => p.items.findIndex((y) => y.deviceId === x.deviceId) !== i);
    for (const r of repeated) p.problems.push({ where: p.where[p.items.indexOf(r)]!, deviceId: r.deviceId, message: "repeats a deviceId" });
    const ok = p.problems.length === 0 && p.items.length > 0;
    fill(
      this.preview,
      h(
        "p",
        { class: ok ? "ok" : "error", id: "import-summary", "data-items": p.items.length, "data-problems": p.problems.length },
        `${p.format.toUpperCase()}: ${p.items.length} device(s), ${p.items.length - known} new, ${known} to update` +
          (p.problems.length ? `; ${p.problems.length} problem(s) to fix first:` : "."),
      ),
      p.problems.length
        ? h(
            "ul",
            { id: "import-problems" },
            p.problems.slice(0, 50).map((x) => h("li", null, `${x.where}${x.deviceId ? ` (${x.deviceId})` : ""}: ${x.message}`)),
          )
        : null,
    );
    if (ok) {
      this.checked = p;
      this.importButton.disabled = false;
      this.importButton.textContent = `Import ${p.items.length} device(s)`;
    }
    return ok ? p : null;
  }

  private async importAll(): Promise<void> {
    const p = this.checked ?? this.check();
    if (!p) return;
    const outcomes: ItemOutcome[] = [];
    const done = await act(this.importButton, this.importMsg, async () => {
      for (let at = 0; at < p.items.length; at += PART) {
        const part = p.items.slice(at, at + PART);
        const where = p.where.slice(at, at + PART);
        outcomes.push(...(await this.send(part, where)));
      }
      return true;
    });
    this.showResults(outcomes);
    if (!done) return;
    const count = (o: string) => outcomes.filter((x) => x.outcome === o).length;
    const failed = outcomes.filter((x) => !x.ok).length;
    // A refused request applied nothing of its part: say so first, with the API's code.
    const refused = outcomes.find((x) => x.outcome === "refused");
    if (refused) {
      const code = refused.detail.split(":")[0];
      showFailure(
        this.importMsg,
        `${code}: the API refused ${count("refused")} device(s) (below); nothing of their request was applied. ` +
          `Fix them and import again (${count("created") + count("updated") + count("unchanged")} of ${outcomes.length} went through).`,
      );
      this.forget();
      return;
    }
    const text =
      `Imported ${outcomes.length - failed} of ${outcomes.length}: ${count("created")} created, ` +
      `${count("updated")} updated, ${count("unchanged")} unchanged, ${failed} failed.`;
    if (failed) showFailure(this.importMsg, text);
    else showOk(this.importMsg, text);
    this.forget();
    if (p.items.some((i) => !this.store.pool(i.pool))) this.store.reload();
  }

  /** One request; a refused body (400) is told per item from its issues' paths (nothing of it was applied). */
  private async send(items: ImportItem[], where: string[]): Promise<ItemOutcome[]> {
    let r: BulkDevicesResult;
    try {
      r = await this.api.bulkDevices(items);
    } catch (err) {
      const e = ApiError.from(err);
      const issues = (e.details as { issues?: { path: string; message: string }[] } | undefined)?.issues;
      if (e.status !== 400 || !issues?.length) throw err;
      const byItem = new Map<number, string[]>();
      for (const i of issues) {
        const m = /^devices\.(\d+)\.?(.*)$/.exec(i.path);
        const n = m ? Number(m[1]) : -1;
        byItem.set(n, [...(byItem.get(n) ?? []), m?.[2] ? `${m[2]}: ${i.message}` : i.message]);
      }
      return items.map((it, n) => ({
        deviceId: it.deviceId,
        where: where[n]!,
        ok: false,
        outcome: byItem.has(n) ? "refused" : "not sent",
        detail: byItem.has(n) ? `${e.code}: ${byItem.get(n)!.join("; ")}` : "the request was refused for other items; nothing was applied",
      }));
    }
    return r.results.map((x) => ({
      deviceId: x.deviceId,
      where: where[x.index] ?? "",
      ok: x.ok,
      outcome: x.ok ? x.outcome : "failed",
      detail: x.ok ? (x.changed.length ? `changed ${x.changed.join(", ")}` : "") : `${x.error.code}: ${x.error.message}`,
    }));
  }

  private showResults(outcomes: ItemOutcome[]): void {
    if (!outcomes.length) return this.results.replaceChildren();
    // Failures first: they are what the operator has to act on.
    const sorted = [...outcomes.filter((o) => !o.ok), ...outcomes.filter((o) => o.ok)];
    const body = h(
      "tbody",
      { id: "import-result-rows" },
      sorted.map((o) =>
        h(
          "tr",
          { "data-device-id": o.deviceId, "data-outcome": o.outcome },
          h("td", { class: "mono" }, o.deviceId),
          h("td", null, pill(o.ok ? o.outcome : "failed")),
          h("td", { class: "small" }, o.detail || "—"),
          h("td", { class: "small muted" }, o.where),
        ),
      ),
    );
    // Four short columns fit a phone as a table; a long import scrolls inside its box.
    fill(this.results, scrollTable(["Device", "Result", "Detail", "From"], body, undefined, "compact import-results"));
  }
}
