/**
 * docs/operations/alerts.yml and docs/operations/grafana-dashboard.json held against what
 * GET /admin/metrics really serves.
 *
 * The list of metrics is not written down here: the real route (src/routes/metrics.ts) answers a
 * scrape in Node, over the real D1 schema (the migrations, in node:sqlite) with rows in every
 * table it reads, and pool and operators' objects that answer with counters made by the real
 * `countChange` for every end reason. A metric renamed, dropped or given other labels in the code
 * fails here, as does a rule or panel naming a metric, label or label value the service never serves.
 *
 * promtool (Debian's `prometheus` package) checks the rules, runs docs/operations/alerts.test.yml,
 * parses the dashboard's queries (as recording rules) and checks the exposition's format. Without it
 * those tests are skipped with a SKIPPED line;
 * REQUIRE_PROMTOOL=1 (CI, .ci/run) makes a missing promtool a failure.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { describe, expect, it } from "vitest";
import type { DevicePool } from "../../durable-objects/DevicePool";
import { END_REASONS } from "../../src/domain/types";
import type { Env } from "../../src/env";
import { EXPIRY_LAG_BUCKETS_MS, countChange, type CounterRow } from "../../src/metrics";
import { metricsRoutes } from "../../src/routes/metrics";

const root = path.resolve(import.meta.dirname, "../..");
const RULES = "docs/operations/alerts.yml";
const RULE_TESTS = "docs/operations/alerts.test.yml";
const DASHBOARD = "docs/operations/grafana-dashboard.json";
const read = (file: string) => readFileSync(path.join(root, file), "utf8");

// ---- the exposition, as the route renders it ---------------------------------------------------

/** Enough of D1 for drizzle's queries (prepare, bind, raw, all, run), over node:sqlite. */
function d1(db: DatabaseSync): D1Database {
  const statement = (query: string, params: unknown[] = []) => {
    const rows = () => db.prepare(query).all(...(params as never[]));
    return {
      bind: (...more: unknown[]) => statement(query, more),
      raw: async () => rows().map((r) => Object.values(r)),
      all: async () => ({ results: rows(), success: true, meta: {} }),
      first: async () => rows()[0] ?? null,
      run: async () => ({ results: [], success: true, meta: { changes: Number(db.prepare(query).run(...(params as never[])).changes) } }),
    };
  };
  return { prepare: (query: string) => statement(query) } as unknown as D1Database;
}

type PoolMetrics = Awaited<ReturnType<DevicePool["metrics"]>>;

/** Counters of a pool that has seen an allocation end for every reason (and one it missed). */
function poolCounters(): CounterRow[] {
  const rows = new Map<string, CounterRow>();
  const add = (r: CounterRow) => {
    const key = `${r.name}\u0000${r.label}`;
    rows.set(key, { ...r, value: (rows.get(key)?.value ?? 0) + r.value });
  };
  const lags = [3, ...EXPIRY_LAG_BUCKETS_MS.map((b) => b + 1)];
  for (const [i, reason] of END_REASONS.entries()) {
    countChange({ allocationId: null }, { allocationId: `a${i}` }).forEach(add);
    const lagMs = reason === "expired" ? (lags[i % lags.length] ?? 3) : null;
    countChange({ allocationId: `a${i}` }, { allocationId: null, ended: { allocationId: `a${i}`, reason, lagMs } }).forEach(add);
  }
  countChange({ allocationId: "skipped" }, { allocationId: null }).forEach(add); // reason unknown
  return [...rows.values()];
}

async function render(): Promise<string> {
  const db = new DatabaseSync(":memory:");
  const dir = path.join(root, "migrations");
  for (const f of readdirSync(dir)
    .filter((f) => f.endsWith(".sql"))
    .sort())
    db.exec(readFileSync(path.join(dir, f), "utf8"));
  const now = Date.now();
  for (const name of ["default", "eu-west-large"]) db.prepare("INSERT INTO pools (name, created_at) VALUES (?, ?)").run(name, now);
  for (const [name, value] of [
    ["usage_reports_sent", 7],
    ["usage_reports_failed", 2],
    ["usage_reports_dead_lettered", 1],
  ] as const)
    db.prepare("INSERT INTO metric_counters (name, value) VALUES (?, ?)").run(name, value);
  // Every status of failed_usage (src/db/schema.ts: failed | replayed | resolved | invalid).
  for (const status of ["failed", "invalid", "replayed", "resolved"])
    db.prepare(
      `INSERT INTO failed_usage (allocation_id, user_id, record, error, attempts, status, first_failed_at, last_failed_at)
       VALUES (?, 'u', '{}', 'e', 10, ?, ?, ?)`,
    ).run(`alc-${status}`, status, now, now);
  const pool: PoolMetrics = {
    counters: poolCounters(),
    devices: { available: 1, allocated: 1, maintenance: 1, offline: 1 },
    queueWaiting: 1,
    reservationsOpen: 1,
  };
  const env = {
    DB: d1(db),
    DEVICE_POOL: { getByName: () => ({ metrics: async () => pool }) },
    ADMIN_FEED: { getByName: () => ({ socketCounts: async () => ({ user: 1, admin: 1, device: 1, pool: 1 }) }) },
  } as unknown as Env;
  const r = await metricsRoutes().request("/admin/metrics", {}, env);
  expect(r.status).toBe(200);
  return r.text();
}

let rendered: Promise<string> | undefined;
/** The exposition (one render for the whole file). */
const scrape = () => (rendered ??= render());

/** Series name → label name → the values served. */
type Exposed = Map<string, Map<string, Set<string>>>;

function parseExposition(text: string): Exposed {
  const out: Exposed = new Map();
  const series = (name: string) => out.get(name) ?? out.set(name, new Map()).get(name)!;
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      const [, name, kind] = type as unknown as [string, string, string];
      for (const suffix of kind === "histogram" ? ["_bucket", "_sum", "_count"] : [""]) series(name + suffix);
      continue;
    }
    if (!line || line.startsWith("#")) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$/.exec(line);
    if (!sample) throw new Error(`not a sample line: ${line}`);
    const labels = series(sample[1]!);
    for (const m of (sample[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      const values = labels.get(m[1]!) ?? labels.set(m[1]!, new Set()).get(m[1]!)!;
      values.add(m[2]!);
    }
  }
  return out;
}

/** Labels Prometheus adds to every scraped series, and the series it makes for each scrape. */
const TARGET_LABELS = ["job", "instance"];
const SCRAPE_SERIES = ["up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"];

// ---- PromQL: the selectors and grouping labels of an expression --------------------------------

const FUNCTIONS = new Set(
  (
    "sum min max avg count stddev stdvar topk bottomk quantile count_values group rate irate increase delta idelta deriv " +
    "histogram_quantile absent absent_over_time vector scalar clamp clamp_min clamp_max abs ceil floor round sort sort_desc " +
    "time timestamp label_replace label_join avg_over_time max_over_time min_over_time sum_over_time count_over_time " +
    "last_over_time changes resets predict_linear"
  ).split(" "),
);
const GROUPING = new Set(["by", "without", "on", "ignoring", "group_left", "group_right"]);
const OPERATORS = new Set(["and", "or", "unless", "bool"]);

interface Matcher {
  label: string;
  op: string;
  value: string;
}
interface Selector {
  name: string;
  matchers: Matcher[];
}

function parsePromql(expr: string): { selectors: Selector[]; grouping: string[] } {
  const tokens = expr.match(
    /"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\[[^\]]*\]|\{[^}]*\}|[A-Za-z_:][A-Za-z0-9_:]*|\d+(?:\.\d+)?(?:e[+-]?\d+)?|\S/g,
  );
  const selectors: Selector[] = [];
  const grouping: string[] = [];
  const list = tokens ?? [];
  for (let i = 0; i < list.length; i++) {
    const tok = list[i]!;
    if (tok.startsWith("{")) throw new Error(`a selector without a metric name in ${expr}`);
    if (!/^[A-Za-z_:]/.test(tok)) continue;
    // An aggregation with its grouping first: sum by (pool) (…).
    if (FUNCTIONS.has(tok) && GROUPING.has(list[i + 1] ?? "")) continue;
    if (list[i + 1] === "(") {
      if (GROUPING.has(tok)) {
        for (i += 2; list[i] !== ")"; i++) if (list[i] !== ",") grouping.push(list[i]!);
      } else if (!FUNCTIONS.has(tok)) throw new Error(`unknown function ${tok} in ${expr}`);
      continue;
    }
    if (OPERATORS.has(tok)) continue;
    if (tok === "offset") throw new Error(`offset is not read here: ${expr}`);
    const braces = list[i + 1]?.startsWith("{") ? list[++i]! : "{}";
    const matchers = [...braces.slice(1, -1).matchAll(/\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?/g)].map(
      (m) => ({ label: m[1]!, op: m[2]!, value: m[3]! }),
    );
    selectors.push({ name: tok, matchers });
  }
  return { selectors, grouping };
}

/** What is wrong with an expression against the exposition (empty: nothing). */
function problemsOf(expr: string, exposed: Exposed): string[] {
  const problems: string[] = [];
  const { selectors, grouping } = parsePromql(expr);
  if (selectors.length === 0) problems.push(`no metric in ${expr}`);
  const labelsUsed = new Set(TARGET_LABELS);
  for (const s of selectors) {
    if (SCRAPE_SERIES.includes(s.name)) {
      for (const m of s.matchers) if (!TARGET_LABELS.includes(m.label)) problems.push(`${s.name} has no label ${m.label}`);
      continue;
    }
    const labels = exposed.get(s.name);
    if (!labels) {
      problems.push(`${s.name} is not served by GET /admin/metrics`);
      continue;
    }
    for (const l of labels.keys()) labelsUsed.add(l);
    for (const m of s.matchers) {
      if (TARGET_LABELS.includes(m.label)) continue;
      const values = labels.get(m.label);
      if (!values) {
        problems.push(`${s.name} has no label ${m.label}`);
        continue;
      }
      // A literal value, or alternatives of literal values, must be among those served.
      if (m.value.includes("$")) continue;
      const alternatives = m.op === "=" || m.op === "!=" ? [m.value] : /^[\w+.-]+(\|[\w+.-]+)*$/.test(m.value) ? m.value.split("|") : [];
      for (const v of alternatives) if (!values.has(v)) problems.push(`${s.name}{${m.label}} never has the value "${v}"`);
    }
  }
  for (const g of grouping) if (!labelsUsed.has(g)) problems.push(`grouping label ${g} is on none of the metrics of ${expr}`);
  return problems;
}

// ---- alerts.yml: a reader for the YAML of rule files -------------------------------------------

type Yaml = string | Yaml[] | { [key: string]: Yaml };

/**
 * Block maps and lists, plain, quoted and block (| > with chomping) scalars: what Prometheus rule
 * files use. Anything else (flow collections, anchors, tags) throws, so nothing is misread quietly.
 */
function readYaml(text: string): Yaml {
  const lines = text.split("\n").map((raw) => ({ raw, indent: raw.search(/\S/) }));
  let at = 0;
  const skip = () => {
    while (at < lines.length && (lines[at]!.indent < 0 || lines[at]!.raw.trimStart().startsWith("#"))) at++;
  };
  const scalar = (value: string, indent: number): string => {
    if (/^[|>][+-]?$/.test(value)) {
      const body: string[] = [];
      let blockIndent = -1;
      while (at < lines.length && (lines[at]!.indent < 0 || lines[at]!.indent > indent)) {
        const l = lines[at++]!;
        if (l.indent >= 0 && blockIndent < 0) blockIndent = l.indent;
        body.push(l.indent < 0 ? "" : l.raw.slice(blockIndent));
      }
      while (body.length && body[body.length - 1] === "") body.pop();
      const joined = value[0] === "|" ? body.join("\n") : body.join("\n").replace(/([^\n])\n(?=[^\n])/g, "$1 ");
      return value.endsWith("-") ? joined : joined + "\n";
    }
    if (value.startsWith('"')) return JSON.parse(value) as string;
    if (value.startsWith("'")) return value.slice(1, -1).replace(/''/g, "'");
    if (/^[[{&*!]/.test(value)) throw new Error(`readYaml: not read here: ${value}`);
    // A plain scalar may go on over more indented lines.
    const parts = [value];
    while (at < lines.length && lines[at]!.indent > indent && !lines[at]!.raw.trimStart().startsWith("#"))
      parts.push(lines[at++]!.raw.trim());
    return parts.join(" ");
  };
  const block = (indent: number): Yaml => {
    skip();
    const list = lines[at]?.raw.slice(indent).startsWith("- ");
    const out: Yaml[] | Record<string, Yaml> = list ? [] : {};
    while ((skip(), at < lines.length && lines[at]!.indent === indent)) {
      const line = lines[at]!;
      if (list) {
        if (!line.raw.slice(indent).startsWith("- ")) break; // the parent map's next key
        lines[at] = { raw: " ".repeat(indent + 2) + line.raw.slice(indent + 2), indent: indent + 2 };
        (out as Yaml[]).push(/^\s*[^"'\s][^:]*:(\s|$)/.test(lines[at]!.raw) ? block(indent + 2) : scalar(lines[at++]!.raw.trim(), indent));
        continue;
      }
      const m = /^([A-Za-z_][\w.-]*):(?: (.*))?$/.exec(line.raw.slice(indent));
      if (!m) throw new Error(`readYaml: line ${at + 1}: not a key: ${line.raw}`);
      at++;
      const key = m[1]!;
      const value = (m[2] ?? "").trim();
      if (key in out) throw new Error(`readYaml: line ${at}: ${key} twice`);
      if (value) (out as Record<string, Yaml>)[key] = scalar(value, indent);
      else {
        skip();
        const next = lines[at];
        const nested = next && (next.indent > indent || (next.indent === indent && next.raw.slice(indent).startsWith("- ")));
        (out as Record<string, Yaml>)[key] = nested ? block(next.indent) : "";
      }
    }
    return out;
  };
  const doc = block(0);
  skip();
  if (at < lines.length) throw new Error(`readYaml: line ${at + 1} was not read: ${lines[at]!.raw}`);
  return doc;
}

interface Rule {
  alert: string;
  expr: string;
  for: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

const rulesDoc = readYaml(read(RULES)) as unknown as { groups: { name: string; rules: Rule[] }[] };
const rules = rulesDoc.groups.flatMap((g) => g.rules);
const dashboard = JSON.parse(read(DASHBOARD));
const operationsMd = read("docs/operations.md");

/** The headings of a Markdown page (outside code blocks). */
function headings(md: string): string[] {
  let fenced = false;
  const out: string[] = [];
  for (const line of md.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    const h = !fenced && /^#{1,6} (.+)$/.exec(line);
    if (h) out.push(h[1]!.trim());
  }
  return out;
}

/** The text of the section under a heading, up to the next heading of its level or above. */
function section(md: string, title: string): string {
  const lines = md.split("\n");
  const start = lines.findIndex((l) => new RegExp(`^#{1,6} ${title.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`).test(l));
  if (start < 0) return "";
  const level = lines[start]!.indexOf(" ");
  const end = lines.findIndex((l, i) => i > start && /^#{1,6} /.test(l) && l.indexOf(" ") <= level);
  return lines.slice(start + 1, end < 0 ? undefined : end).join("\n");
}

/** Every panel, the rows' collapsed ones too. */
const panels = (list: any[]): any[] => list.flatMap((p) => [p, ...panels(p.panels ?? [])]);

/** Every PromQL expression of the dashboard: panel targets and query variables. */
function dashboardExpressions(): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  for (const p of panels(dashboard.panels))
    for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr });
  for (const v of dashboard.templating.list.filter((v: any) => v.type === "query")) {
    const q = typeof v.query === "string" ? v.query : v.query.query;
    const lv = /^label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)$/.exec(q);
    // label_values(selector, label): the selector is PromQL, the label must be one it has.
    out.push({ where: `variable ${v.name}`, expr: lv ? `sum by (${lv[2]}) (${lv[1]})` : q });
  }
  return out;
}

describe("what GET /admin/metrics serves (the route, in Node)", () => {
  it("every source answered, so every family has samples", async () => {
    const exposed = parseExposition(await scrape());
    expect(exposed.get("eda_metrics_source_errors")?.get("source")).toEqual(new Set(["d1", "pool", "sockets"]));
    expect(await scrape()).toMatch(/eda_metrics_source_errors\{source="d1"\} 0\n/);
    expect([...exposed.keys()].filter((n) => n.startsWith("eda_")).length).toBeGreaterThanOrEqual(14);
    expect(exposed.get("eda_releases_total")?.get("reason")).toEqual(new Set([...END_REASONS, "unknown"]));
  });
});

describe(RULES, () => {
  it("every rule names an alert once, with expr, for, a severity, a summary and a description", () => {
    expect(rules.length).toBeGreaterThanOrEqual(10);
    const names = rules.map((r) => r.alert);
    expect(new Set(names).size).toBe(names.length);
    for (const r of rules) {
      expect(Object.keys(r).sort(), r.alert).toEqual(["alert", "annotations", "expr", "for", "labels"]);
      expect(r.alert).toMatch(/^Eda[A-Z][A-Za-z]+$/);
      expect(r.for, r.alert).toMatch(/^\d+[smh]$/);
      expect(["critical", "warning"], r.alert).toContain(r.labels.severity);
      expect(Object.keys(r.annotations).sort(), r.alert).toEqual(["description", "summary"]);
      expect(r.annotations.summary!.length, r.alert).toBeGreaterThan(10);
    }
  });

  it("the rules the operations docs promise are there", () => {
    const names = rules.map((r) => r.alert);
    for (const a of [
      "EdaUsageReportsFailing",
      "EdaUsageReportsDeadLettered",
      "EdaExpiryLate",
      "EdaDevicesOffline",
      "EdaPoolNoFreeDevice",
      "EdaMetricsDown",
    ])
      expect(names).toContain(a);
  });

  it("every description says what to do and points at its runbook row by heading, nowhere else", () => {
    const known = headings(operationsMd);
    const runbook = section(operationsMd, "Runbook");
    expect(runbook, 'docs/operations.md has a "Runbook" section').not.toBe("");
    for (const r of rules) {
      const d = r.annotations.description!;
      const m = /Runbook: docs\/operations\.md, "([^"]+)" \((\w+)\)(?:; see also (.+))?\.$/.exec(d);
      expect(m, `${r.alert}: ends with 'Runbook: docs/operations.md, "Runbook" (${r.alert})…'`).not.toBeNull();
      expect(m![1]).toBe("Runbook");
      expect(m![2]).toBe(r.alert);
      for (const h of [...(m![3] ?? "").matchAll(/"([^"]+)"/g)].map((x) => x[1]!)) expect(known, `${r.alert}: heading "${h}"`).toContain(h);
      expect(runbook, `the runbook has a row for ${r.alert}`).toContain(`\`${r.alert}\``);
      for (const text of [d, r.annotations.summary!]) {
        expect(text, r.alert).not.toMatch(/:\/\//);
        for (const file of text.match(/[\w./-]+\.(?:md|ya?ml|json|ts)\b/g) ?? []) expect(file, r.alert).toBe("docs/operations.md");
      }
    }
  });

  it("every metric, label and label value the rules use is served", async () => {
    const exposed = parseExposition(await scrape());
    const problems = rules.flatMap((r) => problemsOf(r.expr, exposed).map((p) => `${r.alert}: ${p}`));
    expect(problems).toEqual([]);
  });
});

describe(DASHBOARD, () => {
  it("is a dashboard Grafana imports: title, uid, schema, a ${datasource} variable and no fixed datasource", () => {
    expect(dashboard.title).toEqual(expect.any(String));
    expect(dashboard.uid).toMatch(/^[\w-]{1,40}$/);
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(39);
    expect(dashboard.__inputs).toBeUndefined();
    const ds = dashboard.templating.list.find((v: any) => v.name === "datasource");
    expect(ds).toMatchObject({ type: "datasource", query: "prometheus" });
    // Every datasource reference is the variable (the built-in annotation source aside).
    const refs: unknown[] = [];
    const walk = (x: unknown): void => {
      if (Array.isArray(x)) x.forEach(walk);
      else if (x && typeof x === "object")
        for (const [k, v] of Object.entries(x)) {
          if (k === "datasource") refs.push(v);
          walk(v);
        }
    };
    walk(dashboard);
    expect(refs.length).toBeGreaterThan(20);
    for (const r of refs)
      expect([
        { type: "prometheus", uid: "${datasource}" },
        { type: "grafana", uid: "-- Grafana --" },
      ]).toContainEqual(r);
  });

  it("panels have unique ids, fit the 24-column grid, and every query panel has targets with refId and expr", () => {
    const all = panels(dashboard.panels);
    expect(all.length).toBeGreaterThan(15);
    const ids = all.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of all) {
      expect(p.title, `panel ${p.id}`).toEqual(expect.any(String));
      expect(typeof p.type).toBe("string");
      const g = p.gridPos;
      expect(g, p.title).toMatchObject({ x: expect.any(Number), y: expect.any(Number), w: expect.any(Number), h: expect.any(Number) });
      expect(g.x + g.w, p.title).toBeLessThanOrEqual(24);
      if (p.type === "row" || p.type === "text") continue;
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      const refIds = p.targets.map((t: any) => t.refId);
      expect(new Set(refIds).size, p.title).toBe(refIds.length);
      for (const t of p.targets) expect(t.expr, p.title).toEqual(expect.any(String));
    }
    // Panels do not overlap.
    const cells = new Set<string>();
    for (const p of all)
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++)
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(cells.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
  });

  it("covers allocations, devices per pool, queue, usage, expiry, feeds and reconciliation", () => {
    const used = new Set(dashboardExpressions().flatMap((e) => parsePromql(e.expr).selectors.map((s) => s.name)));
    for (const name of [
      "eda_allocations_total",
      "eda_releases_total",
      "eda_devices",
      "eda_queue_waiting",
      "eda_reservations_open",
      "eda_usage_reports_sent_total",
      "eda_usage_reports_failed_total",
      "eda_usage_reports_dead_lettered_total",
      "eda_usage_failed_records",
      "eda_expiry_lag_seconds_bucket",
      "eda_sockets_open",
      "eda_metrics_source_errors",
    ])
      expect(used, name).toContain(name);
  });

  it("every metric, label and label value its queries use is served", async () => {
    const exposed = parseExposition(await scrape());
    const problems = dashboardExpressions().flatMap((e) => problemsOf(e.expr, exposed).map((p) => `${e.where}: ${p}`));
    expect(problems).toEqual([]);
  });
});

describe("the expression reader (so the checks above can fail)", () => {
  it("finds selectors, matchers and grouping labels, and refuses what it cannot read", async () => {
    const exposed = parseExposition(await scrape());
    expect(parsePromql('sum by (pool) (rate(eda_devices{status="offline"}[5m])) > 0 and up{job="x"} == 0')).toEqual({
      selectors: [
        { name: "eda_devices", matchers: [{ label: "status", op: "=", value: "offline" }] },
        { name: "up", matchers: [{ label: "job", op: "=", value: "x" }] },
      ],
      grouping: ["pool"],
    });
    expect(problemsOf("eda_device_count > 0", exposed)).toEqual(["eda_device_count is not served by GET /admin/metrics"]);
    expect(problemsOf('eda_devices{state="offline"}', exposed)).toEqual(["eda_devices has no label state"]);
    expect(problemsOf('eda_devices{status=~"available|draning"}', exposed)).toEqual(['eda_devices{status} never has the value "draning"']);
    expect(problemsOf("sum by (reason) (eda_devices)", exposed)).toEqual([
      "grouping label reason is on none of the metrics of sum by (reason) (eda_devices)",
    ]);
    expect(() => parsePromql("rates(eda_devices[5m])")).toThrow(/unknown function rates/);
    expect(readYaml("a:\n  - b: |-\n      x\n      y\n    c: 'd'\n")).toEqual({ a: [{ b: "x\ny", c: "d" }] });
    expect(readYaml("a: >-\n  x\n  y\n")).toEqual({ a: "x y" });
    expect(() => readYaml("a: [1, 2]\n")).toThrow(/not read here/);
  });
});

// ---- promtool --------------------------------------------------------------------------------

const promtool = spawnSync("promtool", ["--version"], { encoding: "utf8" }).status === 0;
const promtoolRequired = process.env.REQUIRE_PROMTOOL === "1";
const skipped = "promtool not found (Debian: apt-get install prometheus)";
if (!promtool && !promtoolRequired)
  console.warn(`SKIPPED promtool checks of ${RULES}: ${skipped}; REQUIRE_PROMTOOL=1 makes this a failure`);

describe("promtool", () => {
  it.runIf(!promtool && promtoolRequired)("is installed (REQUIRE_PROMTOOL=1)", () => {
    throw new Error(`${skipped}; REQUIRE_PROMTOOL=1 makes this a failure`);
  });

  const run = (...args: string[]) => spawnSync("promtool", args, { cwd: root, encoding: "utf8" });

  it.runIf(promtool)(`check rules ${RULES}: no error, as many rules as read here`, () => {
    const r = run("check", "rules", RULES);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`SUCCESS: ${rules.length} rules found`);
  });

  it.runIf(promtool)(`test rules ${RULE_TESTS}: the alerts fire, and only, as written`, () => {
    const r = run("test", "rules", RULE_TESTS);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain("SUCCESS");
  });

  it.runIf(promtool)("the dashboard's queries parse as PromQL (as recording rules, with its variables filled in)", () => {
    const filled = (expr: string) =>
      expr.replaceAll("$__rate_interval", "5m").replaceAll("$pool", ".*").replaceAll("$job", "edge-device-allocator");
    const lines = ["groups:", "  - name: dashboard", "    rules:"];
    dashboardExpressions().forEach((e, i) =>
      lines.push(`      - record: dashboard:query_${i}`, `        expr: ${JSON.stringify(filled(e.expr))}`),
    );
    const dir = mkdtempSync(path.join(tmpdir(), "eda-dashboard-"));
    const file = path.join(dir, "dashboard-queries.yml");
    writeFileSync(file, lines.join("\n") + "\n");
    const r = spawnSync("promtool", ["check", "rules", file], { encoding: "utf8" });
    rmSync(dir, { recursive: true, force: true });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`SUCCESS: ${dashboardExpressions().length} rules found`);
  });

  it.runIf(promtool)("check metrics: the route's exposition is well formed", async () => {
    const r = spawnSync("promtool", ["check", "metrics"], { input: await scrape(), encoding: "utf8" });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });
});
