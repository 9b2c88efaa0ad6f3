/**
 * The web console: sign in with a bearer token, then "My account" (everyone) and
 * "Operations" (admins). Plain DOM, no framework; served by the Worker at /console/.
 */
import { ApiClient, ApiError } from "../client/api-client";
import { AdminView, userInAddress } from "./admin-view";
import { $, errorText, fill, h, tick } from "./dom";
import { fmtDateTime } from "./format";
import { decodeToken, forgetToken, storeToken, storedToken, tokenFromFragment, type Identity } from "./session";
import { UserView } from "./user-view";

const baseUrl = location.origin;
const TAB_KEY = "eda.console.tab";

function showSignIn(error?: string): void {
  document.body.dataset.signedIn = "false";
  $("#signin").hidden = false;
  $("#app").hidden = true;
  $("#session").hidden = true;
  const slot = $("#signin-error");
  slot.textContent = error ?? "";
  slot.classList.toggle("error", Boolean(error));
  $<HTMLInputElement>("#signin-token").focus();
}

/** Checks a token with the API (its 401 words are shown as they are), then opens the console. */
async function signIn(token: string, button?: HTMLButtonElement): Promise<void> {
  token = token.trim().replace(/^Bearer\s+/i, "");
  if (!token) return showSignIn("Paste a bearer token (JWT).");
  if (button) button.disabled = true;
  try {
    const api = new ApiClient({ baseUrl, token });
    // Any route that reads the caller's own data tells whether the token is good.
    await api.allocations({ limit: 1 });
    const who = decodeToken(token);
    if (!who) return showSignIn("INVALID_TOKEN: the API took this token, but its payload has no readable `sub`.");
    storeToken(token);
    open(api, who);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) forgetToken();
    showSignIn(errorText(err));
  } finally {
    if (button) button.disabled = false;
  }
}

function open(api: ApiClient, who: Identity): void {
  document.body.dataset.signedIn = "true";
  document.body.dataset.role = who.role;
  $("#signin").hidden = true;
  $("#session").hidden = false;
  const app = $("#app");
  app.hidden = false;
  fill(
    $("#whoami"),
    h("strong", { class: "mono", id: "whoami-user" }, who.userId),
    " ",
    h("span", { class: `pill role-${who.role}`, id: "whoami-role" }, who.role),
    who.expiresAt ? h("span", { class: "muted small", title: "token expiry" }, ` until ${fmtDateTime(who.expiresAt)}`) : null,
  );

  const user = new UserView(api, who, baseUrl, $("#feed-state"));
  const admin = who.role === "admin" ? new AdminView(api, baseUrl, () => who.token) : null;
  const tabs = $("#tabs");
  tabs.hidden = !admin;
  const panels = h("div", { id: "panels" }, h("div", { id: "panel-user", role: "tabpanel", "aria-labelledby": "tab-user" }, user.el));
  if (admin) panels.append(h("div", { id: "panel-admin", role: "tabpanel", "aria-labelledby": "tab-admin", hidden: true }, admin.el));
  app.replaceChildren(panels);

  const select = (which: "user" | "admin") => {
    if (which === "admin" && !admin) which = "user";
    for (const t of ["user", "admin"] as const) {
      const tab = document.getElementById(`tab-${t}`)!;
      tab.setAttribute("aria-selected", String(t === which));
      tab.tabIndex = t === which ? 0 : -1;
      const panel = document.getElementById(`panel-${t}`);
      if (panel) panel.hidden = t !== which;
    }
    sessionStorage.setItem(TAB_KEY, which);
    if (which === "admin") admin?.start();
  };
  $("#tab-user").onclick = () => select("user");
  $("#tab-admin").onclick = () => select("admin");
  tabs.onkeydown = (ev) => {
    if (ev.key === "ArrowLeft" || ev.key === "ArrowRight") {
      const next = document.getElementById("tab-user")!.getAttribute("aria-selected") === "true" ? "admin" : "user";
      select(next);
      document.getElementById(`tab-${next}`)!.focus();
    }
  };
  user.start();
  // For browser tests and the curious: the live feeds (e.g. `edaConsole.userFeed.drop()` to see a resume).
  (globalThis as { edaConsole?: unknown }).edaConsole = { userFeed: user.feed, adminFeed: admin?.feed ?? null };
  // A user's page (`#user=<id>`, from a link or typed) is in Operations.
  const wantsUserPage = () => Boolean(admin && userInAddress());
  window.addEventListener("hashchange", () => {
    if (wantsUserPage()) select("admin");
  });
  select(sessionStorage.getItem(TAB_KEY) === "admin" || wantsUserPage() ? "admin" : "user");

  setInterval(() => {
    const now = Date.now();
    tick(now);
    user.onTick(now);
  }, 1_000);
}

function boot(): void {
  const form = $<HTMLFormElement>("#signin-form");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void signIn($<HTMLInputElement>("#signin-token").value, $<HTMLButtonElement>("#signin-submit"));
  });
  $("#signout").addEventListener("click", () => {
    forgetToken();
    sessionStorage.removeItem(TAB_KEY);
    // A fresh page: every feed, timer and view goes with it.
    location.replace(location.pathname);
  });
  // A sign-in link opened in a tab already on the console changes only the fragment: no load.
  window.addEventListener("hashchange", () => {
    const token = tokenFromFragment();
    if (!token) return;
    if (document.body.dataset.signedIn !== "true") return void signIn(token);
    // Signed in already (maybe as someone else): a fresh page for the new token, as sign-out
    // does, so no feed, timer or view of the old session stays; the page checks the token.
    storeToken(token);
    location.reload();
  });
  const token = tokenFromFragment() ?? storedToken();
  if (token) void signIn(token);
  else showSignIn();
}

boot();
