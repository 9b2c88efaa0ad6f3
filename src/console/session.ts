/**
 * The signed-in token: from `#token=<jwt>` in the address (removed from it at once) or the
 * sign-in form, kept in sessionStorage for this tab. The payload is read here only to know
 * who and what role; the API is the judge of whether the token is good.
 */
const KEY = "eda.console.token";

export interface Identity {
  token: string;
  userId: string;
  role: "user" | "admin";
  /** Epoch ms, when the token says. */
  expiresAt: number | null;
}

/** A token from `#token=…` (the fragment is then removed from the address bar), or null. */
export function tokenFromFragment(): string | null {
  const hash = location.hash.replace(/^#/, "");
  if (!hash) return null;
  const params = new URLSearchParams(hash);
  const token = params.get("token");
  if (!token) return null;
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  return token.trim();
}

export const storedToken = (): string | null => sessionStorage.getItem(KEY);
export const storeToken = (t: string): void => sessionStorage.setItem(KEY, t);
export const forgetToken = (): void => sessionStorage.removeItem(KEY);

function base64UrlDecode(s: string): string {
  const b64 = s
    .replace(/-/g, "+")
    .replace(/_/g, "/")
    .padEnd(Math.ceil(s.length / 4) * 4, "=");
  const bin = atob(b64);
  return new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
}

/** Reads `sub`, `role` and `exp` from a JWT (no signature check: that is the API's). Null if it is not a JWT. */
export function decodeToken(token: string): Identity | null {
  const parts = token.split(".");
  if (parts.length !== 3 || !parts[1]) return null;
  try {
    const p = JSON.parse(base64UrlDecode(parts[1])) as { sub?: unknown; role?: unknown; exp?: unknown };
    if (typeof p.sub !== "string" || !p.sub) return null;
    return {
      token,
      userId: p.sub,
      role: p.role === "admin" ? "admin" : "user",
      expiresAt: typeof p.exp === "number" ? p.exp * 1000 : null,
    };
  } catch {
    return null;
  }
}
