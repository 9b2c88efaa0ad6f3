/**
 * Counting for the benchmarks (`npm run bench`): what a request costs in object requests, commits,
 * SQLite and D1 rows and queue messages. On only when the variable `METER` is "on" (the bench sets
 * it; wrangler.toml never does), else every function here returns at once.
 *
 * The counters are module-global: locally the Worker and every object of this script run in one
 * isolate, so `GET /__meter` (served only while metering) reads the whole service at once, and
 * `POST /__meter {reset?, hopDelayMs?}` resets them or delays every object call's answer by
 * `hopDelayMs` (the bench divides the extra latency by it: sequential object round trips).
 *
 * - object requests: every call through a Durable Object stub, counted at the caller (env wrapper),
 *   and every alarm an object runs (billed as a request);
 * - commits: the turns of an object that wrote (SQLite rows or its alarm), one per storage per turn;
 * - rows: SQLite cursors' `rowsRead`/`rowsWritten`; D1 results' `meta` (a `raw()` query, which has
 *   no meta, counts the rows it returned as read);
 * - queue messages: messages sent to a queue binding.
 */

export interface Counts {
  workerRequests: number;
  objectRequests: number;
  commits: number;
  sqlRowsRead: number;
  sqlRowsWritten: number;
  d1Queries: number;
  d1RowsRead: number;
  d1RowsWritten: number;
  queueMessages: number;
  /** Commits by object class (which object's turn wrote). */
  commitsBy: Record<string, number>;
}

const zero = (): Counts => ({
  workerRequests: 0,
  objectRequests: 0,
  commits: 0,
  sqlRowsRead: 0,
  sqlRowsWritten: 0,
  d1Queries: 0,
  d1RowsRead: 0,
  d1RowsWritten: 0,
  queueMessages: 0,
  commitsBy: {},
});

/** One answered HTTP request: what was counted between its arrival and its answer. */
export interface Window {
  method: string;
  path: string;
  status: number;
  ms: number;
  counts: Counts;
}

let on = false;
let hopDelayMs = 0;
let counts = zero();
let windows: Window[] = [];
/** Rows written by statement (its first words; D1's marked), to see where a cycle's writes go. */
let writers: Record<string, number> = {};
const MAX_WINDOWS = 2000;
const dirty = new WeakSet<object>();
const classOf = new WeakMap<object, string>();

/** Names an object's storage by its class, for the commits by class. */
export function meterStorage(storage: object, className: string): void {
  if (on) classOf.set(storage, className);
}

/** Turns metering on for this isolate when `env.METER` is "on" (once seen, it stays on). */
export function meterFrom(env: { METER?: string }): boolean {
  if (env.METER === "on") on = true;
  return on;
}

export function countAlarm(): void {
  if (on) counts.objectRequests++;
}

export function countCommit(storage: object): void {
  if (!on || dirty.has(storage)) return;
  dirty.add(storage);
  counts.commits++;
  const c = classOf.get(storage) ?? "other";
  counts.commitsBy[c] = (counts.commitsBy[c] ?? 0) + 1;
  // The turn's writes commit together; a write after the next macrotask is another commit.
  setTimeout(() => dirty.delete(storage), 0);
}

export function countSql(storage: object, cursor: { rowsRead: number; rowsWritten: number }, query: string): void {
  if (!on) return;
  counts.sqlRowsRead += cursor.rowsRead;
  counts.sqlRowsWritten += cursor.rowsWritten;
  if (cursor.rowsWritten > 0) {
    countCommit(storage);
    const key = query.replace(/\s+/g, " ").trim().slice(0, 70);
    writers[key] = (writers[key] ?? 0) + cursor.rowsWritten;
  }
}

const snapshot = (): Counts => ({ ...counts, commitsBy: { ...counts.commitsBy } });
function minus(a: Counts, b: Counts): Counts {
  const out = { ...a, commitsBy: {} as Record<string, number> };
  for (const k of Object.keys(a) as (keyof Counts)[]) if (k !== "commitsBy") (out[k] as number) = (a[k] as number) - (b[k] as number);
  for (const [k, v] of Object.entries(a.commitsBy)) if (v - (b.commitsBy[k] ?? 0)) out.commitsBy[k] = v - (b.commitsBy[k] ?? 0);
  return out;
}

/** The Worker's HTTP entry, counted: the request's window is kept for `GET /__meter`. */
export async function meteredFetch(request: Request, run: () => Promise<Response>): Promise<Response> {
  const url = new URL(request.url);
  if (url.pathname === "/__meter") return meterRoute(request);
  counts.workerRequests++;
  const before = snapshot();
  const t0 = performance.now();
  const res = await run();
  windows.push({
    method: request.method,
    path: url.pathname,
    status: res.status,
    ms: performance.now() - t0,
    counts: minus(snapshot(), before),
  });
  if (windows.length > MAX_WINDOWS) windows = windows.slice(-MAX_WINDOWS / 2);
  return res;
}

async function meterRoute(request: Request): Promise<Response> {
  if (request.method === "POST") {
    const b = (await request.json().catch(() => ({}))) as { reset?: boolean; hopDelayMs?: number };
    if (b.reset) {
      counts = zero();
      windows = [];
      writers = {};
    }
    if (typeof b.hopDelayMs === "number") hopDelayMs = Math.max(0, Math.min(1000, b.hopDelayMs));
  }
  return Response.json({ counts, windows, hopDelayMs, writers });
}

// ---- the env wrapper -------------------------------------------------------------------------

/** `env` with its object namespaces, D1 and queues counted (itself when metering is off). */
export function metered<E extends object>(env: E): E {
  if (!meterFrom(env as { METER?: string })) return env;
  const out: Record<string, unknown> = { ...(env as Record<string, unknown>) };
  for (const [k, v] of Object.entries(env)) {
    if (isNamespace(v)) out[k] = namespace(v);
    else if (isD1(v)) out[k] = database(v);
    else if (isQueue(v)) out[k] = queue(v);
  }
  return out as E;
}

const isNamespace = (v: unknown): v is DurableObjectNamespace =>
  typeof v === "object" && v !== null && "getByName" in v && "idFromName" in v;
const isD1 = (v: unknown): v is D1Database => typeof v === "object" && v !== null && "prepare" in v && "batch" in v;
const isQueue = (v: unknown): v is Queue => typeof v === "object" && v !== null && "send" in v && "sendBatch" in v;

function namespace(ns: DurableObjectNamespace): DurableObjectNamespace {
  const wrap = (stub: DurableObjectStub) =>
    new Proxy(stub, {
      get(target, key) {
        const value = Reflect.get(target, key);
        if (typeof value !== "function" || typeof key === "symbol" || key === "id" || key === "name") return value;
        return async (...args: unknown[]) => {
          counts.objectRequests++;
          // Called on the stub itself: an RPC method's own `apply` would be taken for a remote method.
          const answer = await (target as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[key]!(...args);
          if (hopDelayMs > 0) await new Promise((r) => setTimeout(r, hopDelayMs));
          return answer;
        };
      },
    });
  return new Proxy(ns, {
    get(target, key) {
      const value = Reflect.get(target, key);
      if (key === "getByName" || key === "get")
        return (...args: unknown[]) => wrap((value as (...a: unknown[]) => DurableObjectStub).apply(target, args));
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

function database(db: D1Database): D1Database {
  const real = new WeakMap<object, D1PreparedStatement>();
  const queries = new WeakMap<object, string>();
  const note = (meta: { rows_read?: number; rows_written?: number } | undefined, query = "") => {
    counts.d1Queries++;
    counts.d1RowsRead += meta?.rows_read ?? 0;
    counts.d1RowsWritten += meta?.rows_written ?? 0;
    if (meta?.rows_written) {
      const key = `D1: ${query.replace(/\s+/g, " ").trim().slice(0, 66)}`;
      writers[key] = (writers[key] ?? 0) + meta.rows_written;
    }
  };
  const statement = (s: D1PreparedStatement, query: string): D1PreparedStatement => {
    const note1 = (meta: { rows_read?: number; rows_written?: number } | undefined) => note(meta, query);
    const w = {
      bind: (...args: unknown[]) => statement(s.bind(...args), query),
      all: async () => {
        const r = await s.all();
        note1(r.meta);
        return r;
      },
      run: async () => {
        const r = await s.run();
        note1(r.meta);
        return r;
      },
      first: async (column?: string) => {
        const r = await s.all<Record<string, unknown>>();
        note1(r.meta);
        const row = r.results[0] ?? null;
        return column === undefined ? row : row === null ? null : (row[column] ?? null);
      },
      raw: async (options?: { columnNames?: boolean }) => {
        const rows = (await s.raw(options as never)) as unknown[];
        counts.d1Queries++;
        counts.d1RowsRead += Math.max(0, rows.length - (options?.columnNames ? 1 : 0));
        return rows;
      },
    };
    real.set(w, s);
    queries.set(w, query);
    return w as unknown as D1PreparedStatement;
  };
  return new Proxy(db, {
    get(target, key) {
      if (key === "prepare") return (query: string) => statement(target.prepare(query), query);
      if (key === "batch")
        return async (list: D1PreparedStatement[]) => {
          const results = await target.batch(list.map((x) => real.get(x) ?? x));
          results.forEach((r, i) => note(r.meta, queries.get(list[i]!) ?? ""));
          return results;
        };
      const value = Reflect.get(target, key);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

function queue(q: Queue): Queue {
  return new Proxy(q, {
    get(target, key) {
      const value = Reflect.get(target, key);
      if (key === "send")
        return (...args: unknown[]) => {
          counts.queueMessages++;
          return (value as (...a: unknown[]) => Promise<void>).apply(target, args);
        };
      if (key === "sendBatch")
        return (messages: unknown[], ...rest: unknown[]) => {
          counts.queueMessages += messages.length;
          return (value as (...a: unknown[]) => Promise<void>).apply(target, [messages, ...rest]);
        };
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
