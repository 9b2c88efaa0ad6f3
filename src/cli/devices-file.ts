/**
 * The device files `ctl import` reads, turned into POST /admin/devices/bulk items. Pure: text in,
 * items out, or a FileError naming the line (CSV) or item (JSON) at fault, so nothing of a file
 * with a typo is sent.
 *
 * - CSV: a header row naming the columns (any order; `deviceId`, `pool`, `cpuCores`, `memoryMB`,
 *   `storageMB` required; `node`, `name`, `model`, `osVersion`, `labels` optional), then one
 *   device a row. Fields may be quoted ("a, b" and "" for a quote, as RFC 4180). An empty cell is
 *   left out of the item (the server keeps what the device has). `labels` is `k=v;k=v`.
 *   Blank lines are skipped; a UTF-8 byte order mark and CRLF line ends are fine.
 * - JSON: an array of items or `{devices: [...]}`, sent as they are (the server checks them).
 */

export interface DeviceItem {
  deviceId: string;
  pool: string;
  node?: string;
  cpuCores: number;
  memoryMB: number;
  storageMB: number;
  name?: string;
  model?: string;
  osVersion?: string;
  labels?: Record<string, string>;
}

export interface DevicesFile {
  /** What is sent. JSON items are passed on as written (typed loosely: the server validates them). */
  devices: DeviceItem[];
  /** Where each item came from, for messages: `line 4` (CSV) or `item 3` (JSON, 0-based as in the API's paths). */
  sources: string[];
}

export class FileError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
    this.name = "FileError";
  }
}

export const CSV_COLUMNS = [
  "deviceId",
  "pool",
  "node",
  "cpuCores",
  "memoryMB",
  "storageMB",
  "name",
  "model",
  "osVersion",
  "labels",
] as const;
type Column = (typeof CSV_COLUMNS)[number];
const REQUIRED: Column[] = ["deviceId", "pool", "cpuCores", "memoryMB", "storageMB"];
const NUMERIC = new Set<Column>(["cpuCores", "memoryMB", "storageMB"]);

/** By the file's name: `.json` is JSON, `.csv` CSV; another name by its first character. */
export function parseDevicesFile(fileName: string, text: string): DevicesFile {
  const body = text.replace(/^\uFEFF/, "");
  const lower = fileName.toLowerCase();
  const json = lower.endsWith(".json") || (!lower.endsWith(".csv") && /^\s*[[{]/.test(body));
  return json ? parseDevicesJson(body) : parseDevicesCsv(body);
}

export function parseDevicesJson(text: string): DevicesFile {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new FileError([`not valid JSON: ${(err as Error).message}`]);
  }
  const list = Array.isArray(data) ? data : isObject(data) && Array.isArray(data.devices) ? data.devices : null;
  if (!list) throw new FileError(['expected an array of devices or {"devices": [...]}']);
  const problems: string[] = [];
  list.forEach((d, i) => {
    if (!isObject(d)) problems.push(`item ${i}: not an object`);
  });
  if (!list.length) problems.push("no devices in the file");
  if (problems.length) throw new FileError(problems);
  return { devices: list as DeviceItem[], sources: list.map((_, i) => `item ${i}`) };
}

export function parseDevicesCsv(text: string): DevicesFile {
  const rows = csvRows(text).filter((r) => !(r.cells.length === 1 && r.cells[0]!.trim() === ""));
  const header = rows.shift();
  if (!header) throw new FileError(["the file is empty (expected a header row: " + CSV_COLUMNS.join(",") + ")"]);
  const columns = header.cells.map((c) => c.trim());
  const problems: string[] = [];
  const unknown = columns.filter((c) => !(CSV_COLUMNS as readonly string[]).includes(c));
  if (unknown.length) problems.push(`line ${header.line}: unknown column(s) ${unknown.join(", ")} (known: ${CSV_COLUMNS.join(", ")})`);
  const twice = columns.filter((c, i) => columns.indexOf(c) !== i);
  if (twice.length) problems.push(`line ${header.line}: column(s) named twice: ${[...new Set(twice)].join(", ")}`);
  const missing = REQUIRED.filter((c) => !columns.includes(c));
  if (missing.length) problems.push(`line ${header.line}: missing column(s) ${missing.join(", ")}`);
  if (problems.length) throw new FileError(problems);
  if (!rows.length) throw new FileError(["no devices in the file (only a header row)"]);

  const devices: DeviceItem[] = [];
  const sources: string[] = [];
  const seen = new Map<string, number>();
  for (const row of rows) {
    const at = `line ${row.line}`;
    if (row.cells.length !== columns.length) {
      problems.push(`${at}: ${row.cells.length} field(s), the header has ${columns.length}`);
      continue;
    }
    const item: Record<string, unknown> = {};
    columns.forEach((col, i) => {
      const cell = row.cells[i]!.trim();
      if (cell === "") return;
      const column = col as Column;
      if (NUMERIC.has(column)) {
        if (!/^\d+$/.test(cell)) problems.push(`${at}: ${column} must be a whole number (got "${cell}")`);
        else item[column] = Number(cell);
      } else if (column === "labels") {
        const labels = parseLabels(cell);
        if (typeof labels === "string") problems.push(`${at}: labels ${labels}`);
        else item.labels = labels;
      } else item[column] = cell;
    });
    for (const col of REQUIRED)
      if (item[col] === undefined && !problems.some((p) => p.startsWith(`${at}: ${col} `))) problems.push(`${at}: ${col} is empty`);
    const id = item.deviceId as string | undefined;
    if (id !== undefined) {
      const first = seen.get(id);
      if (first !== undefined) problems.push(`${at}: deviceId ${id} is also on line ${first}`);
      else seen.set(id, row.line);
    }
    devices.push(item as unknown as DeviceItem);
    sources.push(at);
  }
  if (problems.length) throw new FileError(problems);
  return { devices, sources };
}

/** `k=v;k=v` (spaces around each part are dropped; `;;` and a trailing `;` are fine). A string: what is wrong. */
export function parseLabels(cell: string): Record<string, string> | string {
  const labels: Record<string, string> = {};
  for (const part of cell.split(";")) {
    const p = part.trim();
    if (!p) continue;
    const eq = p.indexOf("=");
    if (eq <= 0) return `must be key=value pairs separated by ";" (got "${p}")`;
    const key = p.slice(0, eq).trim();
    if (key in labels) return `name "${key}" twice`;
    labels[key] = p.slice(eq + 1).trim();
  }
  return labels;
}

/** RFC 4180 rows with the line each starts on (a quoted field may span lines). */
function csvRows(text: string): { line: number; cells: string[] }[] {
  const rows: { line: number; cells: string[] }[] = [];
  let cells: string[] = [];
  let cell = "";
  let quoted = false;
  let line = 1;
  let rowLine = 1;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else {
        if (ch === "\n") line++;
        cell += ch;
      }
      continue;
    }
    if (ch === '"' && cell.trim() === "") {
      quoted = true;
      cell = "";
    } else if (ch === ",") {
      cells.push(cell);
      cell = "";
    } else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i++;
      cells.push(cell);
      rows.push({ line: rowLine, cells });
      cells = [];
      cell = "";
      line++;
      rowLine = line;
    } else cell += ch;
  }
  if (quoted) throw new FileError([`line ${rowLine}: a quoted field is not closed`]);
  if (cell !== "" || cells.length) {
    cells.push(cell);
    rows.push({ line: rowLine, cells });
  }
  return rows;
}

/**
 * The items in requests of at most `maxItems` and about `maxBytes` of JSON each, in order, each
 * with the index of its first item in the whole file.
 */
export function chunkDevices<T>(items: T[], maxItems: number, maxBytes: number): { offset: number; items: T[] }[] {
  const chunks: { offset: number; items: T[] }[] = [];
  let current: T[] = [];
  let bytes = 16;
  let offset = 0;
  items.forEach((item, i) => {
    const size = new TextEncoder().encode(JSON.stringify(item)).length + 1;
    if (current.length && (current.length >= maxItems || bytes + size > maxBytes)) {
      chunks.push({ offset, items: current });
      current = [];
      bytes = 16;
      offset = i;
    }
    current.push(item);
    bytes += size;
  });
  if (current.length) chunks.push({ offset, items: current });
  return chunks;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
