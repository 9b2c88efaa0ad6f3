/** Small DOM helpers for the console (no framework); how things are written is in format.ts. */
import { ApiError } from "../client/api-client";
import { countdownText, fmtDateTime } from "./format";

export type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

/** `h("button", { class: "x", "data-id": id, onclick: fn }, "text")`. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
}

export function $<T extends HTMLElement = HTMLElement>(sel: string, root: ParentNode = document): T {
  const el = root.querySelector<T>(sel);
  if (!el) throw new Error(`console: missing element ${sel}`);
  return el;
}

/** Replaces an element's children. */
export function fill(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/**
 * Keyed rows: keeps a row whose data did not change (so focus and typed input survive an
 * update), replaces one that changed, removes the rest, in the order of `items`.
 */
export function syncRows<T>(
  body: HTMLElement,
  items: T[],
  key: (t: T) => string,
  render: (t: T) => HTMLElement,
  sig: (t: T) => string = (t) => JSON.stringify(t),
): void {
  const old = new Map<string, HTMLElement>();
  for (const el of Array.from(body.children) as HTMLElement[]) if (el.dataset.key) old.set(el.dataset.key, el);
  let prev: Element | null = null;
  for (const item of items) {
    const k = key(item);
    const s = sig(item);
    let row = old.get(k);
    old.delete(k);
    if (!row || row.dataset.sig !== s) {
      const fresh = render(item);
      fresh.dataset.key = k;
      fresh.dataset.sig = s;
      if (row) row.replaceWith(fresh);
      row = fresh;
    }
    const want: ChildNode | null = prev ? prev.nextSibling : body.firstChild;
    if (want !== row) body.insertBefore(row, want);
    prev = row;
  }
  for (const el of old.values()) el.remove();
  for (const el of Array.from(body.children)) if (!(el as HTMLElement).dataset.key) el.remove();
}

// ---- actions -------------------------------------------------------------------------------

/** `CODE: message`, exactly as the API words it. */
export const errorText = (err: unknown): string => ApiError.from(err).toString();

/** Shows an error (or clears it with null) in a message slot. */
export function showError(slot: Element | null | undefined, err: unknown | null): void {
  if (!slot) return;
  slot.textContent = err === null ? "" : errorText(err);
  slot.classList.toggle("error", err !== null);
  slot.classList.remove("ok");
}

/** A failure of the console's own (not an API answer), worded for the user. */
export function showFailure(slot: Element | null | undefined, text: string): void {
  if (!slot) return;
  slot.textContent = text;
  slot.classList.remove("ok");
  slot.classList.add("error");
}

export function showOk(slot: Element | null | undefined, text: string): void {
  if (!slot) return;
  slot.textContent = text;
  slot.classList.remove("error");
  slot.classList.add("ok");
}

/**
 * Runs a request for a button: the button is disabled while it runs, the slot shows the
 * API's error as `CODE: message` (or is cleared). Resolves with the result, or undefined on error.
 */
export async function act<T>(button: HTMLButtonElement | null, slot: Element | null, fn: () => Promise<T>): Promise<T | undefined> {
  if (button?.disabled) return undefined;
  if (button) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
  }
  showError(slot, null);
  try {
    return await fn();
  } catch (err) {
    showError(slot, err);
    return undefined;
  } finally {
    if (button) {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }
}

/**
 * A refresh that coalesces: calls while one runs make it run once more after; `delayMs` lets
 * a burst of events become one request.
 */
export function refresher(fn: () => Promise<void>, delayMs = 100): () => void {
  let timer: ReturnType<typeof setTimeout> | null = null;
  let running = false;
  let again = false;
  const run = async () => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await fn();
    } catch (err) {
      console.error(err);
    } finally {
      running = false;
      if (again) {
        again = false;
        trigger();
      }
    }
  };
  const trigger = () => {
    if (!timer) timer = setTimeout(run, delayMs);
  };
  return trigger;
}

// ---- countdowns, pills, ids, tables, cards -------------------------------------------------

/** A `.countdown` span that the ticker keeps current (see `tick`). */
export function countdown(expiresAt: number | null): HTMLElement {
  const el = h("span", { class: "countdown", "data-expires-at": expiresAt ?? "" });
  updateCountdown(el, Date.now());
  return el;
}

function updateCountdown(el: HTMLElement, now: number): void {
  const t = Number(el.dataset.expiresAt);
  if (!el.dataset.expiresAt || !Number.isFinite(t)) {
    el.textContent = "—";
    return;
  }
  const left = t - now;
  el.textContent = countdownText(left);
  el.classList.toggle("low", left <= 60_000 && left > 0);
  el.classList.toggle("over", left <= 0);
  el.title = `until ${fmtDateTime(t)}`;
}

/** Updates every countdown on the page (call once a second). */
export function tick(now = Date.now()): void {
  for (const el of Array.from(document.querySelectorAll<HTMLElement>(".countdown"))) updateCountdown(el, now);
}

/** A coloured status pill; `data-status` carries the raw value. */
export const pill = (status: string) => h("span", { class: `pill s-${status.replace(/[^a-z_]/gi, "")}`, "data-status": status }, status);

/**
 * An id for display: its kind and its end (`alc_…3f9a21c0`), the whole id in the title. Our
 * ids start with the kind and an encoded owner or pool, which look alike row after row.
 */
export const shortId = (id: string | null | undefined, n = 14) => {
  if (!id) return "—";
  if (id.length <= n) return h("span", { class: "mono" }, id);
  const kind = /^[a-z]{2,4}_/.exec(id)?.[0] ?? "";
  return h("span", { title: id, class: "mono" }, `${kind}…${id.slice(-Math.max(6, n - kind.length - 1))}`);
};

/** Gives each cell of `row` its column's name as `data-label` (a `.stack` table shows them when its rows are cards). */
function labelCells(row: Element, labels: string[]): void {
  Array.from(row.children).forEach((cell, i) => {
    const label = labels[i];
    if (label && !cell.hasAttribute("data-label")) cell.setAttribute("data-label", label);
  });
}

/**
 * `cls` "stack": on a narrow card each row becomes a card of label/value lines (console-views.css).
 * Rows are labelled as they are added, however they are added (syncRows, append, fill).
 */
export function table(headers: string[], body: HTMLElement, cls = ""): HTMLTableElement {
  for (const row of Array.from(body.children)) labelCells(row, headers);
  new MutationObserver((records) => {
    for (const r of records) for (const n of Array.from(r.addedNodes)) if (n instanceof Element) labelCells(n, headers);
  }).observe(body, { childList: true });
  return h(
    "table",
    { class: cls },
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        headers.map((x) => h("th", { scope: "col" }, x)),
      ),
    ),
    body,
  );
}

/** A table that scrolls sideways when narrow, with a note shown while its body is empty. */
export function scrollTable(headers: string[], body: HTMLElement, empty?: string, cls = ""): HTMLElement {
  return h("div", { class: "scroll" }, table(headers, body, cls), empty ? h("p", { class: "empty-note muted" }, empty) : null);
}

export function card(title: string, opts: { id?: string; cls?: string; extra?: Child } = {}, ...children: Child[]): HTMLElement {
  return h(
    "section",
    { class: `card ${opts.cls ?? ""}`, id: opts.id, "aria-label": title },
    h("header", null, h("h2", null, title), opts.extra),
    ...children,
  );
}
