/**
 * Operator metrics: what is counted, where, and the Prometheus text format. Pure: the objects
 * and the queue consumer store counters (each in the same commit as the change it counts, or
 * right after it); GET /admin/metrics gathers them and renders them here.
 *
 * - Pools count allocations, releases by reason and expiry lag, from the device changes their
 *   index applies (every change reaches the pool, ordered by the device's version).
 * - The usage consumers count reports sent (received and booked), failed (retried) and
 *   dead-lettered, in D1 (`metric_counters`).
 * - Open sockets are what each feed-holding object last reported to the operators' object.
 */

/** Expiry lag buckets (upper bounds, ms): an alarm is normally a few ms late; seconds mean trouble. */
export const EXPIRY_LAG_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000] as const;

/** A counter row as stored: `name` and one label value (`""` when it has none). */
export interface CounterRow {
  name: string;
  label: string;
  value: number;
}

/** What a pool's index knows of a device before and after a change. */
export interface IndexedAllocation {
  allocationId: string | null;
}
export interface AppliedChange extends IndexedAllocation {
  ended?: { allocationId: string; reason: string; lagMs: number | null };
}

/**
 * The counter increments of one applied device change. An allocation is counted when the index
 * first sees it, a release when the index's allocation goes away; the reason and lag come with
 * the change that ended it (`unknown` when the index skipped that version).
 */
export function countChange(prev: IndexedAllocation | null, next: AppliedChange): CounterRow[] {
  const out: CounterRow[] = [];
  const before = prev?.allocationId ?? null;
  if (before && before !== next.allocationId) {
    const ended = next.ended?.allocationId === before ? next.ended : undefined;
    out.push({ name: "releases", label: ended?.reason ?? "unknown", value: 1 });
    if (ended?.lagMs != null) {
      out.push({ name: "expiry_lag_bucket", label: lagBucket(ended.lagMs), value: 1 });
      out.push({ name: "expiry_lag_sum_ms", label: "", value: ended.lagMs });
      out.push({ name: "expiry_lag_count", label: "", value: 1 });
    }
  }
  if (next.allocationId && next.allocationId !== before) out.push({ name: "allocations", label: "", value: 1 });
  return out;
}

/** The bucket a lag falls in (its upper bound as a label, `+Inf` past the last). */
export function lagBucket(ms: number): string {
  const le = EXPIRY_LAG_BUCKETS_MS.find((b) => ms <= b);
  return le === undefined ? "+Inf" : String(le);
}

// ---- Prometheus text format (version 0.0.4) ------------------------------------------------

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export type Labels = Record<string, string>;
export interface Sample {
  labels?: Labels;
  value: number;
  /** Suffix of the sample's name (`_bucket`, `_sum`, `_count` of a histogram). */
  suffix?: string;
}
export interface Family {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  samples: Sample[];
}

const escapeLabel = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
const escapeHelp = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

export function render(families: Family[]): string {
  const lines: string[] = [];
  for (const f of families) {
    lines.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const labels = Object.entries(s.labels ?? {});
      const l = labels.length ? `{${labels.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}` : "";
      lines.push(`${f.name}${s.suffix ?? ""}${l} ${formatValue(s.value)}`);
    }
  }
  return lines.join("\n") + "\n";
}

/**
 * Histogram samples from stored (non-cumulative) buckets in ms: cumulative `_bucket`s in seconds
 * with `+Inf`, then `_sum` (seconds) and `_count`.
 */
export function lagHistogram(labels: Labels, buckets: Map<string, number>, sumMs: number, count: number): Sample[] {
  const out: Sample[] = [];
  let running = 0;
  for (const le of EXPIRY_LAG_BUCKETS_MS) {
    running += buckets.get(String(le)) ?? 0;
    out.push({ suffix: "_bucket", labels: { ...labels, le: String(le / 1000) }, value: running });
  }
  running += buckets.get("+Inf") ?? 0;
  out.push({ suffix: "_bucket", labels: { ...labels, le: "+Inf" }, value: running });
  out.push({ suffix: "_sum", labels, value: sumMs / 1000 });
  out.push({ suffix: "_count", labels, value: count });
  return out;
}
