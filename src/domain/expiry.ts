/** When to warn before expiry, pure: once, `expiryWarningMs` before, or at half of a shorter allocation. */
import { ALLOCATION } from "../config";

export function expiryWarningAt(now: number, expiresAt: number): number {
  const left = Math.max(0, expiresAt - now);
  return expiresAt - Math.min(ALLOCATION.expiryWarningMs, Math.floor(left / 2));
}
