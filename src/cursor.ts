/** Page cursors `<time>.<id>` for lists ordered by (time, id) descending; one format everywhere. */
export function encodeCursor(at: number, id: string): string {
  return `${at}.${id}`;
}

/** A cursor back into (time, id); none or a malformed one starts from the newest. */
export function decodeCursor(c?: string): [number, string] {
  if (!c) return [Number.MAX_SAFE_INTEGER, ""];
  const i = c.indexOf(".");
  const t = Number(c.slice(0, i));
  return Number.isFinite(t) && i > 0 ? [t, c.slice(i + 1)] : [Number.MAX_SAFE_INTEGER, ""];
}
