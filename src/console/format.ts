/**
 * How the console writes times, durations, money and sizes. Every time carries its date and its
 * zone, in one form everywhere: `3 Dec 2026, 14:05 UTC+1` (the browser's zone; seconds where they
 * matter). The API answers UTC; a person reads their own clock, so the zone says which one it is.
 */

/** Epoch ms from epoch ms or an ISO string (null when absent or unreadable). */
export function toMs(v: number | string | null | undefined): number | null {
  if (v === null || v === undefined || v === "") return null;
  const t = typeof v === "number" ? v : Date.parse(v);
  return Number.isFinite(t) ? t : null;
}

const pad = (n: number) => String(n).padStart(2, "0");
// Fixed English names, not the locale's: one form on every screen and in every test.
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** The browser's zone at that moment as an offset from UTC: `UTC`, `UTC+1`, `UTC-3`, `UTC+5:30`. */
export function fmtZone(ms: number): string {
  const east = -new Date(ms).getTimezoneOffset();
  if (east === 0) return "UTC";
  const abs = Math.abs(east);
  return `UTC${east > 0 ? "+" : "-"}${Math.floor(abs / 60)}${abs % 60 ? `:${pad(abs % 60)}` : ""}`;
}

const datePart = (d: Date) => `${d.getDate()} ${MONTHS[d.getMonth()]} ${d.getFullYear()}`;
const clock = (d: Date, seconds: boolean) => `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? `:${pad(d.getSeconds())}` : ""}`;

/** `3 Dec 2026, 14:05 UTC+1`; `—` when there is no time. */
export function fmtDateTime(t: number | string | null | undefined): string {
  const ms = toMs(t);
  if (ms === null) return "—";
  const d = new Date(ms);
  return `${datePart(d)}, ${clock(d, false)} ${fmtZone(ms)}`;
}

/** `3 Dec 2026, 14:05:07 UTC+1`: with seconds, for events and countdown ends. */
export function fmtTime(t: number | string | null | undefined): string {
  const ms = toMs(t);
  if (ms === null) return "—";
  const d = new Date(ms);
  return `${datePart(d)}, ${clock(d, true)} ${fmtZone(ms)}`;
}

/** A window: `3 Dec 2026, 14:05 – 15:05 UTC+1`, the end's date (and zone) only when they differ. */
export function fmtWindow(start: number | string, end: number | string): string {
  const a = toMs(start);
  const b = toMs(end);
  if (a === null || b === null) return `${fmtDateTime(start)} – ${fmtDateTime(end)}`;
  const da = new Date(a);
  const db = new Date(b);
  if (datePart(da) === datePart(db) && fmtZone(a) === fmtZone(b))
    return `${datePart(da)}, ${clock(da, false)} – ${clock(db, false)} ${fmtZone(b)}`;
  return `${datePart(da)}, ${clock(da, false)} ${fmtZone(a)} – ${fmtDateTime(b)}`;
}

/** Time left as `mm:ss` (`h:mm:ss` from an hour on); `00:00` once past. */
export function countdownText(msLeft: number): string {
  const s = Math.max(0, Math.ceil(msLeft / 1000));
  const hours = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return hours ? `${hours}:${pad(m)}:${pad(s % 60)}` : `${pad(m)}:${pad(s % 60)}`;
}

export function fmtDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Minor units (cents) as money. */
export function fmtMoney(minor: number | null | undefined, currency = "USD"): string {
  if (minor === null || minor === undefined) return "—";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(minor / 100);
  } catch {
    return `${(minor / 100).toFixed(2)} ${currency}`;
  }
}

export function fmtMB(mb: number | null | undefined): string {
  if (mb === null || mb === undefined) return "—";
  return mb >= 1024 ? `${+(mb / 1024).toFixed(1)} GB` : `${mb} MB`;
}

export const fmtSpec = (s: { cpuCores: number; memoryMB: number; storageMB: number }) =>
  `${s.cpuCores} cpu · ${fmtMB(s.memoryMB)} · ${fmtMB(s.storageMB)}`;
