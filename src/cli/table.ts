/** Readable output of `npm run ctl`: aligned tables, key-value blocks, money and times. Pure. */

export interface Column<T> {
  head: string;
  get: (row: T) => string | number | null | undefined;
  /** Numbers align right by default. */
  align?: "left" | "right";
}

/** Rows under a header, columns padded to their widest cell; `-` for an empty one. */
export function table<T>(rows: T[], columns: Column<T>[]): string {
  const cells = rows.map((r) => columns.map((c) => cellText(c.get(r))));
  const right = columns.map(
    (c) =>
      c.align === "right" ||
      (c.align === undefined && rows.some((r) => typeof c.get(r) === "number") && rows.every((r) => isNum(c.get(r)))),
  );
  const widths = columns.map((c, i) => Math.max(c.head.length, ...cells.map((row) => row[i]!.length)));
  const line = (row: string[]) =>
    row
      .map((cell, i) => (right[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(columns.map((c) => c.head)), ...cells.map(line)].join("\n");
}

/** `key  value` lines, keys padded. */
export function keyValues(pairs: [string, string | number | boolean | null | undefined][]): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${cellText(v)}`).join("\n");
}

function cellText(v: string | number | boolean | null | undefined): string {
  if (v === null || v === undefined || v === "") return "-";
  return String(v);
}

const isNum = (v: unknown) => typeof v === "number" || v === null || v === undefined;

/** Minor units as a decimal with the currency: `1050 USD` → `10.50 USD` (two decimals, as the plans' currencies have). */
export function money(minor: number, currency: string | null | undefined): string {
  const sign = minor < 0 ? "-" : "";
  const abs = Math.abs(minor);
  return `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}${currency ? ` ${currency}` : ""}`;
}

/** An ISO time shortened for a table: `2026-01-31 09:30:00Z`. */
export function when(iso: string | null | undefined): string {
  if (!iso) return "-";
  return iso.replace("T", " ").replace(/\.\d+Z$/, "Z");
}

/** `k=v,k=v` of a label map (`-` when empty). */
export function labelText(labels: Record<string, string> | null | undefined): string {
  const entries = Object.entries(labels ?? {});
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(",") : "-";
}

/** The one natural order (the API's fleet order). */
export { naturalOrder as naturalCompare } from "../domain/fleet";
