/**
 * Reading a device import: JSON (an array of devices, or `{devices: [...]}`) or CSV with a header
 * row. Each device becomes one bulk item (`POST /admin/devices/bulk`), or a problem naming its
 * line. Only what the console can tell is checked here (the columns, whole numbers); the API
 * checks the rest and answers per item.
 *
 * CSV columns (any case, any order): deviceId (or id), pool, node, cpuCores (or cpu), memoryMB
 * (or memory), storageMB (or storage), name, model, osVersion (or os), labels (`key=value;key=value`)
 * and one column per label as `label:<key>` or `label.<key>`. An empty cell is left out.
 */

/** A device as a bulk item: what it should be (fields left out stay as they are on an existing one). */
export interface ImportItem {
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

export interface ImportProblem {
  /** Where: `line 4` (CSV) or `item 3` (JSON, counted from 1). */
  where: string;
  deviceId?: string;
  message: string;
}

export interface ParsedImport {
  format: "csv" | "json";
  items: ImportItem[];
  /** Where each item came from, as the problems name it. */
  where: string[];
  problems: ImportProblem[];
}

const NUMBERS = ["cpuCores", "memoryMB", "storageMB"] as const;
const TEXTS = ["deviceId", "pool", "node", "name", "model", "osVersion"] as const;
const ALIASES: Record<string, string> = {
  id: "deviceId",
  deviceid: "deviceId",
  pool: "pool",
  node: "node",
  cpu: "cpuCores",
  cpucores: "cpuCores",
  memory: "memoryMB",
  memorymb: "memoryMB",
  storage: "storageMB",
  storagemb: "storageMB",
  name: "name",
  model: "model",
  os: "osVersion",
  osversion: "osVersion",
  labels: "labels",
};

/** JSON when it starts with `[` or `{`, else CSV. */
export function parseImport(text: string): ParsedImport {
  const t = text.trim();
  return t.startsWith("[") || t.startsWith("{") ? parseJson(t) : parseCsv(t);
}

function parseJson(text: string): ParsedImport {
  const out: ParsedImport = { format: "json", items: [], where: [], problems: [] };
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    out.problems.push({ where: "JSON", message: `not JSON: ${(err as Error).message}` });
    return out;
  }
  const list = Array.isArray(data) ? data : (data as { devices?: unknown })?.devices;
  if (!Array.isArray(list)) {
    out.problems.push({ where: "JSON", message: "expected an array of devices, or {devices: [...]}" });
    return out;
  }
  list.forEach((raw, i) => {
    const where = `item ${i + 1}`;
    if (!raw || typeof raw !== "object" || Array.isArray(raw)) return out.problems.push({ where, message: "not an object" });
    const fields: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
    // Numbers written as text in a hand-made file are taken as the numbers they are.
    for (const k of NUMBERS) if (typeof fields[k] === "string" && /^\d+$/.test(fields[k] as string)) fields[k] = Number(fields[k]);
    add(out, where, fields);
  });
  return out;
}

function parseCsv(text: string): ParsedImport {
  const out: ParsedImport = { format: "csv", items: [], where: [], problems: [] };
  const rows = csvRows(text);
  const header = rows.shift();
  if (!header || header.cells.every((c) => !c.trim())) {
    out.problems.push({ where: "line 1", message: "no header row (deviceId,pool,cpuCores,memoryMB,storageMB,…)" });
    return out;
  }
  type Column = { kind: "label"; key: string } | { kind: "field"; field: string } | { kind: "unknown"; name: string };
  const columns = header.cells.map((c): Column => {
    const name = c.trim();
    const label = /^label[:.](.+)$/i.exec(name);
    if (label) return { kind: "label", key: label[1]! };
    const field = ALIASES[name.toLowerCase()];
    return field ? { kind: "field", field } : { kind: "unknown", name };
  });
  const unknown = columns.flatMap((c) => (c.kind === "unknown" && c.name ? [c.name] : []));
  if (unknown.length) out.problems.push({ where: "line 1", message: `unknown column(s): ${unknown.join(", ")}` });
  for (const row of rows) {
    if (row.cells.every((c) => !c.trim())) continue;
    const fields: Record<string, unknown> = {};
    const labels: Record<string, string> = {};
    let labelsSeen = false;
    const where = `line ${row.line}`;
    row.cells.forEach((raw, i) => {
      const c = columns[i];
      const v = raw.trim();
      if (!c || !v) return;
      if (c.kind === "label") {
        labels[c.key] = v;
        labelsSeen = true;
      } else if (c.kind === "field" && c.field === "labels") {
        for (const pair of v.split(/[;,]/)) {
          const m = /^\s*([^=:]+?)\s*[=:]\s*(.*?)\s*$/.exec(pair);
          if (m) labels[m[1]!] = m[2]!;
          else if (pair.trim()) out.problems.push({ where, message: `labels: "${pair.trim()}" is not key=value` });
        }
        labelsSeen = true;
      } else if (c.kind === "field") fields[c.field] = (NUMBERS as readonly string[]).includes(c.field) && /^\d+$/.test(v) ? Number(v) : v;
    });
    if (row.cells.length > columns.length)
      out.problems.push({ where, message: `${row.cells.length} cells, the header has ${columns.length}` });
    if (labelsSeen) fields.labels = labels;
    add(out, where, fields);
  }
  return out;
}

/** Checks one device's fields; adds it as an item or a problem. */
function add(out: ParsedImport, where: string, f: Record<string, unknown>): void {
  const deviceId = typeof f.deviceId === "string" ? f.deviceId : undefined;
  const wrong: string[] = [];
  for (const k of ["deviceId", "pool"] as const) if (typeof f[k] !== "string" || !f[k]) wrong.push(`${k} is required`);
  for (const k of NUMBERS) if (!Number.isInteger(f[k]) || (f[k] as number) < 1) wrong.push(`${k}: a whole number ≥ 1`);
  for (const k of TEXTS) if (f[k] !== undefined && typeof f[k] !== "string") wrong.push(`${k}: text`);
  const labels = f.labels;
  if (labels !== undefined && (typeof labels !== "object" || labels === null || Array.isArray(labels)))
    wrong.push("labels: an object of key: value");
  if (wrong.length) {
    out.problems.push({ where, deviceId, message: wrong.join("; ") });
    return;
  }
  const item: ImportItem = {
    deviceId: f.deviceId as string,
    pool: f.pool as string,
    cpuCores: f.cpuCores as number,
    memoryMB: f.memoryMB as number,
    storageMB: f.storageMB as number,
  };
  for (const k of ["node", "name", "model", "osVersion"] as const) if (f[k] !== undefined) item[k] = f[k] as string;
  if (labels) item.labels = Object.fromEntries(Object.entries(labels as Record<string, unknown>).map(([k, v]) => [k, String(v)]));
  // Other fields go to the API as they are (it names the ones it does not know).
  for (const [k, v] of Object.entries(f)) if (!(k in item) && k !== "labels") (item as unknown as Record<string, unknown>)[k] = v;
  out.items.push(item);
  out.where.push(where);
}

/** RFC 4180 rows: quoted cells may hold commas, quotes (doubled) and line breaks; each row knows its first line. */
export function csvRows(text: string): { line: number; cells: string[] }[] {
  const rows: { line: number; cells: string[] }[] = [];
  let cells: string[] = [];
  let cell = "";
  let quoted = false;
  let line = 1;
  let start = 1;
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
    } else if (ch === '"' && cell === "") quoted = true;
    else if (ch === ",") {
      cells.push(cell);
      cell = "";
    } else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i++;
      cells.push(cell);
      rows.push({ line: start, cells });
      cells = [];
      cell = "";
      line++;
      start = line;
    } else cell += ch;
  }
  if (cell !== "" || cells.length) {
    cells.push(cell);
    rows.push({ line: start, cells });
  }
  return rows;
}
