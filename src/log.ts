/**
 * Structured logs: one JSON object per line, `{ts, level, msg, ...fields}`. The fields that
 * tie a line to what happened come first and are named the same everywhere: `requestId`,
 * `userId`, `allocationId` (then `deviceId`, `pool`); a line carries each one it knows.
 * Workers Logs (and `wrangler tail`, and `wrangler dev`'s terminal) show them as is.
 */
export type LogLevel = "debug" | "info" | "warn" | "error";

export interface LogFields {
  requestId?: string;
  userId?: string | null;
  allocationId?: string | null;
  deviceId?: string | null;
  pool?: string | null;
  [field: string]: unknown;
}

const ORDER = ["requestId", "userId", "allocationId", "deviceId", "pool"] as const;

/** The line as written (exported for its unit test). Empty ids are left out, errors become text. */
export function logLine(level: LogLevel, msg: string, fields: LogFields = {}, now = Date.now()): string {
  const out: Record<string, unknown> = { ts: new Date(now).toISOString(), level, msg };
  for (const k of ORDER) if (fields[k] != null && fields[k] !== "") out[k] = fields[k];
  for (const [k, v] of Object.entries(fields)) {
    if (k in out || v === undefined || (ORDER as readonly string[]).includes(k)) continue;
    out[k] = v instanceof Error ? v.message : v;
  }
  return JSON.stringify(out);
}

export function log(level: LogLevel, msg: string, fields?: LogFields): void {
  const line = logLine(level, msg, fields);
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
}
