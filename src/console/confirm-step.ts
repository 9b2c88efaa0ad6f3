/**
 * The confirmation step of an operator's action: what will happen, in words, with Confirm and
 * Cancel, shown in place of the action's own button row. Nothing is sent before Confirm. Focus
 * moves to Confirm (Enter or Space confirms); Escape or Cancel goes back. Either way focus returns
 * to where it was (once the caller, resumed first, has made that usable again).
 */
import { h } from "./dom";

export interface ConfirmOptions {
  /** What Confirm says: the action itself ("Drain to maintenance"), not "OK". */
  confirm: string;
  danger?: boolean;
}

/** Shows the step in `slot` (emptied after); resolves true on Confirm, false on Cancel or Escape. */
export function confirmStep(slot: HTMLElement, what: string | Node, opts: ConfirmOptions): Promise<boolean> {
  const back = document.activeElement instanceof HTMLElement ? document.activeElement : null;
  return new Promise((resolve) => {
    const yes = h("button", { type: "button", class: `confirm-yes ${opts.danger ? "danger-solid" : "primary"}` }, opts.confirm);
    const no = h("button", { type: "button", class: "confirm-no" }, "Cancel");
    const box = h(
      "div",
      { class: "confirm-step", role: "alertdialog", "aria-label": `Confirm: ${opts.confirm}` },
      h("p", { class: "confirm-what" }, what),
      h("div", { class: "confirm-buttons" }, yes, no),
    );
    const done = (ok: boolean) => {
      box.remove();
      slot.hidden = true;
      resolve(ok);
      // Queued after the caller's continuation (resolve queued that first), which may un-inert it.
      queueMicrotask(() => {
        if (back?.isConnected) back.focus();
      });
    };
    yes.addEventListener("click", () => done(true));
    no.addEventListener("click", () => done(false));
    box.addEventListener("keydown", (ev) => {
      if (ev.key !== "Escape") return;
      // Inside a dialog, Escape goes back one step, not out of the dialog.
      ev.preventDefault();
      ev.stopPropagation();
      done(false);
    });
    slot.replaceChildren(box);
    slot.hidden = false;
    yes.focus();
  });
}
