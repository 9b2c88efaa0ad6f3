/**
 * Ids that carry their scope (the owning user of an allocation, the pool of a queue entry or a
 * reservation) in base64url, so a route finds the object that holds the record from the id
 * alone. The object still checks who may see it.
 */
import { IDS } from "./config";
import { b64url } from "./encoding";

export function newScopedId(prefix: string, scope: string): string {
  const rand = crypto.getRandomValues(new Uint8Array(12));
  return `${prefix}_${b64url(new TextEncoder().encode(scope))}_${[...rand].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** The scope an id names, or null for a malformed or forged one (only a valid id may name an object). */
export function scopeOfId(prefix: string, id: string): string | null {
  const m = new RegExp(`^${prefix}_([A-Za-z0-9_-]+)_([0-9a-f]{24})$`).exec(id);
  if (!m) return null;
  try {
    const bin = atob(m[1]!.replace(/-/g, "+").replace(/_/g, "/"));
    const scope = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
    return IDS.pattern.test(scope) ? scope : null;
  } catch {
    return null;
  }
}

/** Allocation ids carry their user, so any route finds the owning object from the id alone (the owner check still runs there). */
export const newAllocationId = (userId: string): string => newScopedId("alc", userId);
export const userOfAllocationId = (id: string): string | null => scopeOfId("alc", id);
