/** `npm run ctl` commands on the fleet: list, show, import, drain and the other status changes, force-release, pools. */
import { ApiError, type BulkResult, type DeviceStatusChange, type FleetDevice, type FleetQuery } from "../client/api-client";
import { FLEET } from "../config";
import { UsageError, isoTime, positionals, wholeNumber, type Parsed } from "./args";
import { show, type Command, type Ctx } from "./context";
import { chunkDevices, parseDevicesFile, type DevicesFile } from "./devices-file";
import { keyValues, labelText, naturalCompare, table, when } from "./table";

type FleetFilter = Omit<FleetQuery, "cursor" | "limit" | "label"> & { label?: string[] };

const STATUSES = ["available", "allocated", "maintenance", "offline"];
const routeMissing = (err: unknown) => err instanceof ApiError && err.status === 404 && err.code === "ROUTE_NOT_FOUND";

/** The whole fleet (or `max` devices), from GET /admin/devices; from the pools' lists on a server without that route. */
async function listFleet(ctx: Ctx, filter: FleetFilter, max: number): Promise<{ items: FleetDevice[]; source: "fleet" | "pools" }> {
  const items: FleetDevice[] = [];
  try {
    let cursor: string | null = null;
    do {
      const page = await ctx.api.fleet({ ...filter, cursor: cursor ?? undefined, limit: Math.min(200, max - items.length) });
      items.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor && items.length < max);
    return { items, source: "fleet" };
  } catch (err) {
    if (!routeMissing(err)) throw err;
  }
  ctx.note("(this server has no GET /admin/devices: listed pool by pool from GET /admin/pools/{pool}/devices)");
  const pools = filter.pool ? [filter.pool] : (await ctx.api.pools()).items.map((p) => p.pool);
  const all: FleetDevice[] = [];
  for (const pool of pools) {
    let cursor: string | undefined;
    do {
      const page = await ctx.api.poolDevices(pool, { status: filter.status, cursor, limit: 200 });
      all.push(...page.items.map((d) => ({ ...d, pool })));
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
  }
  const wanted = (filter.label ?? []).map((l) => l.split(/:(.*)/s) as [string, string]);
  const text = filter.q?.toLowerCase();
  const kept = all.filter(
    (d) =>
      (!filter.node || d.node === filter.node) &&
      (!filter.holder || d.userId === filter.holder) &&
      // `?.`: a server this old may list no metadata either.
      wanted.every(([k, v]) => d.labels?.[k] === v) &&
      (!text || [d.deviceId, d.name, d.model].some((s) => s?.toLowerCase().includes(text))),
  );
  kept.sort((a, b) => naturalCompare(a.deviceId, b.deviceId));
  return { items: kept.slice(0, max), source: "pools" };
}

const deviceColumns = [
  { head: "DEVICE", get: (d: FleetDevice) => d.deviceId },
  { head: "POOL", get: (d: FleetDevice) => d.pool },
  { head: "NODE", get: (d: FleetDevice) => d.node },
  { head: "STATUS", get: (d: FleetDevice) => d.status },
  { head: "CORES", get: (d: FleetDevice) => d.cpuCores },
  { head: "MEM MB", get: (d: FleetDevice) => d.memoryMB },
  { head: "DISK MB", get: (d: FleetDevice) => d.storageMB },
  { head: "HOLDER", get: (d: FleetDevice) => d.userId },
  { head: "UNTIL", get: (d: FleetDevice) => when(d.expiresAt) },
  { head: "NAME", get: (d: FleetDevice) => d.name },
  { head: "LABELS", get: (d: FleetDevice) => labelText(d.labels) },
];

const devices: Command = {
  name: "devices",
  aliases: ["list"],
  args: "[--pool <pool>] [--status <status>] [--node <node>] [--label key:value …] [--holder <userId>] [--q <text>] [--limit <n>]",
  summary: "the fleet: every pool's devices, filtered, in natural order",
  details: [
    `--status is one of ${STATUSES.join(", ")}; --label repeats (a device must carry every one; key=value works too);`,
    "--q finds text in the id, name or model; --limit caps how many are listed (default: all, page by page).",
  ],
  example: "npm run ctl -- devices --pool eu-west-large --status available",
  options: { pool: "value", status: "value", node: "value", label: "list", holder: "value", q: "value", limit: "value" },
  async run(ctx, p) {
    positionals(p, []);
    const status = p.values.get("status");
    if (status !== undefined && !STATUSES.includes(status))
      throw new UsageError(`--status must be one of ${STATUSES.join(", ")}`, p.command);
    const label = (p.lists.get("label") ?? []).map((l) => {
      const m = /^([^:=]+)[:=](.+)$/.exec(l);
      if (!m) throw new UsageError(`--label must be key:value (got "${l}")`, p.command);
      return `${m[1]}:${m[2]}`;
    });
    const limit = p.values.has("limit") ? wholeNumber(p.values.get("limit")!, "--limit", p.command, 1) : Number.MAX_SAFE_INTEGER;
    const filter: FleetFilter = {
      pool: p.values.get("pool"),
      status: status as FleetFilter["status"],
      node: p.values.get("node"),
      label: label.length ? label : undefined,
      holder: p.values.get("holder"),
      q: p.values.get("q"),
    };
    const { items, source } = await listFleet(ctx, filter, limit);
    show(ctx, { items, source }, () => (items.length ? `${table(items, deviceColumns)}\n${items.length} device(s)` : "no devices match"));
    return 0;
  },
};

const device: Command = {
  name: "device",
  aliases: ["show"],
  args: "<deviceId>",
  summary: "one device: spec, status and why, a drain under way, its allocation now",
  example: "npm run ctl -- device demo-default-1",
  options: {},
  async run(ctx, p) {
    const [id] = positionals(p, ["deviceId"]);
    const d = await ctx.api.device(id!);
    show(ctx, d, () =>
      keyValues([
        ["device", d.deviceId],
        ["pool", d.pool],
        ["node", d.node],
        ["spec", `${d.cpuCores} cores, ${d.memoryMB} MB memory, ${d.storageMB} MB storage`],
        ["status", d.status],
        ["reason", d.statusReason],
        ["since", when(d.statusSince)],
        ["drain", d.drain ? `to ${d.drain.status} by ${when(d.drain.deadline)}` : null],
        ["allocation", d.allocation ? `${d.allocation.allocationId} (${d.allocation.userId}) until ${when(d.allocation.expiresAt)}` : null],
        ["name", d.name],
        ["model", d.model],
        ["osVersion", d.osVersion],
        ["labels", labelText(d.labels)],
      ]),
    );
    return 0;
  },
};

/** A 400 of the bulk route, its `devices.N.field` paths named by the file's lines. */
function fileIssues(err: ApiError, file: DevicesFile, offset: number): string[] | null {
  const issues = (err.details as { issues?: { path: string; message: string }[] } | undefined)?.issues;
  if (err.code !== "VALIDATION_FAILED" || !Array.isArray(issues)) return null;
  return issues.map((i) => {
    const m = /^devices\.(\d+)(?:\.(.*))?$/.exec(i.path);
    if (!m) return `${i.path || "(body)"}: ${i.message}`;
    const n = offset + Number(m[1]);
    const id = file.devices[n]?.deviceId;
    return `${file.sources[n] ?? `item ${n}`}${id ? ` (${id})` : ""}: ${m[2] ? `${m[2]}: ` : ""}${i.message}`;
  });
}

const importDevices: Command = {
  name: "import",
  args: "<file.csv|file.json> [--dry-run]",
  summary: "register or update devices from a CSV or JSON file (POST /admin/devices/bulk)",
  details: [
    "The console's import file. CSV: a header row (any case, any order), then a device a row; columns deviceId (id),",
    "pool, cpuCores (cpu), memoryMB (memory), storageMB (storage) required; node, name, model, osVersion (os),",
    'labels (k=v;k=v) and label:<key> columns optional. JSON: an array of devices or {"devices": [...]}.',
    "Idempotent by deviceId: a device already there is updated to what differs (empty cells: left as they are).",
    `Sent ${FLEET.bulkMaxItems} a request; an invalid item refuses its request whole. Exit 1 if any item failed.`,
    "--dry-run: check the file and show what would be sent, sending nothing.",
  ],
  example: "npm run ctl -- import fleet.csv",
  options: { "dry-run": "flag" },
  async run(ctx, p) {
    const [name] = positionals(p, ["file"]);
    let text: string;
    try {
      text = ctx.readFile(name!);
    } catch (err) {
      throw new UsageError(`cannot read ${name}: ${(err as Error).message}`, p.command);
    }
    const file = parseDevicesFile(text);
    if (p.flags.has("dry-run")) {
      show(
        ctx,
        { devices: file.devices },
        () => `${file.devices.length} device(s) read, nothing sent:\n${JSON.stringify(file.devices, null, 2)}`,
      );
      return 0;
    }
    const answer: BulkResult = { results: [], created: 0, updated: 0, unchanged: 0, failed: 0 };
    for (const chunk of chunkDevices(file.devices, FLEET.bulkMaxItems, FLEET.bulkMaxBodyBytes - 4096)) {
      let r: BulkResult;
      try {
        r = await ctx.api.bulkDevices(chunk.items);
      } catch (err) {
        const lines = err instanceof ApiError ? fileIssues(err, file, chunk.offset) : null;
        if (answer.results.length)
          ctx.note(`the first ${answer.results.length} item(s) were sent and applied (see above); the rest were not`);
        if (!lines) throw err;
        if (answer.results.length) printImport(ctx, answer, file);
        ctx.note(
          `${(err as ApiError).code}: ${(err as ApiError).message}; ` +
            `nothing of items ${chunk.offset}..${chunk.offset + chunk.items.length - 1} was applied:`,
        );
        for (const l of lines) ctx.note(`  ${l}`);
        return 1;
      }
      answer.results.push(...r.results.map((x) => ({ ...x, index: x.index + chunk.offset })));
      answer.created += r.created;
      answer.updated += r.updated;
      answer.unchanged += r.unchanged;
      answer.failed += r.failed;
    }
    printImport(ctx, answer, file);
    return answer.failed ? 1 : 0;
  },
};

function printImport(ctx: Ctx, answer: BulkResult, file: DevicesFile): void {
  const rows = answer.results;
  show(ctx, { ...answer, results: rows.map((r) => ({ ...r, source: file.sources[r.index] })) }, () => {
    const t = table(rows, [
      { head: "FROM", get: (r) => file.sources[r.index] ?? `item ${r.index}` },
      { head: "DEVICE", get: (r) => r.deviceId },
      { head: "RESULT", get: (r) => (r.ok ? r.outcome : "FAILED") },
      {
        head: "DETAIL",
        get: (r) =>
          r.ok ? (r.changed.length ? `changed ${r.changed.join(", ")}` : null) : `${r.status} ${r.error.code}: ${r.error.message}`,
      },
    ]);
    const counts = `${answer.created} created, ${answer.updated} updated, ${answer.unchanged} unchanged, ${answer.failed} failed`;
    const summary = `${rows.length} device(s): ${counts}`;
    return `${t}\n${summary}`;
  });
}

function statusLines(d: DeviceStatusChange): string {
  const head = d.drain
    ? `${d.deviceId} is draining: it goes to ${d.drain.status} when its allocation ends ` +
      `(extensions allowed until ${when(d.drain.deadline)})`
    : `${d.deviceId} is now ${d.status}`;
  const ended = d.ended
    ? `ended ${d.ended.allocationId} of ${d.ended.userId} (ran ${Math.round(d.ended.durationSeconds)} s, ${d.ended.reason})`
    : null;
  return [head, ended, d.statusReason ? `reason: ${d.statusReason}` : null].filter(Boolean).join("\n");
}

const drainUnsupported = (err: ApiError) => {
  const issues = (err.details as { issues?: { path?: string; message?: string }[] } | undefined)?.issues ?? [];
  const refused =
    err.code === "VALIDATION_FAILED" && issues.some((i) => /Unrecognized key.*"(drain|deadline|reason)"/.test(i.message ?? ""));
  return refused ? "this server does not take {drain, deadline, reason} on a status change (an older version): drain needs it" : null;
};

const drain: Command = {
  name: "drain",
  args: '<deviceId> [--status maintenance|offline] [--reason "…"] [--deadline <ISO time>]',
  summary: "take a device out of service once its running allocation ends (no new claims meanwhile)",
  details: [
    "--status: maintenance (default) or offline. --deadline: the latest end an extension may reach (default: no",
    "extension past the allocation's end now). Without an allocation the change is immediate. `online` cancels a drain.",
  ],
  example: 'npm run ctl -- drain demo-default-3 --reason "battery swap" --deadline 2026-02-01T18:00:00Z',
  options: { status: "value", reason: "value", deadline: "value" },
  hint: drainUnsupported,
  async run(ctx, p) {
    const [id] = positionals(p, ["deviceId"]);
    const status = p.values.get("status") ?? "maintenance";
    if (status !== "maintenance" && status !== "offline") throw new UsageError("--status must be maintenance or offline", p.command);
    const deadline = isoTime(p.values.get("deadline"), "deadline", p.command);
    const d = await ctx.api.setDeviceStatus(id!, status, { drain: true, reason: p.values.get("reason"), deadline });
    show(ctx, d, () => statusLines(d));
    return 0;
  },
};

function statusCommand(status: "maintenance" | "offline" | "online", summary: string, example: string): Command {
  return {
    name: status,
    args: '<deviceId> [--reason "…"]',
    summary,
    example,
    options: { reason: "value" },
    hint: drainUnsupported,
    async run(ctx, p) {
      const [id] = positionals(p, ["deviceId"]);
      const reason = p.values.get("reason");
      const d = await ctx.api.setDeviceStatus(id!, status, reason === undefined ? {} : { reason });
      show(ctx, d, () => statusLines(d));
      return 0;
    },
  };
}

const forceRelease: Command = {
  name: "force-release",
  args: "<deviceId>",
  summary: "end the device's allocation now (billed as it stands)",
  example: "npm run ctl -- force-release demo-default-2",
  options: {},
  async run(ctx, p) {
    const [id] = positionals(p, ["deviceId"]);
    const r = await ctx.api.forceRelease(id!);
    show(
      ctx,
      r,
      () =>
        `ended ${r.allocationId} of ${r.userId} on ${r.deviceId}: ran ${Math.round(r.durationSeconds)} s ` +
        `(${when(r.allocatedAt)} to ${when(r.releasedAt)}), ${r.reason}`,
    );
    return 0;
  },
};

const pools: Command = {
  name: "pools",
  args: "",
  summary: "the pools: strategy, idle release and device counts",
  example: "npm run ctl -- pools",
  options: {},
  async run(ctx, p: Parsed) {
    positionals(p, []);
    const { items } = await ctx.api.pools();
    show(ctx, { items }, () =>
      table(items, [
        { head: "POOL", get: (x) => x.pool },
        { head: "STRATEGY", get: (x) => x.strategy },
        { head: "IDLE MIN", get: (x) => x.idleReleaseMinutes },
        { head: "DEVICES", get: (x) => x.devices },
        { head: "AVAILABLE", get: (x) => x.available },
        { head: "ALLOCATED", get: (x) => x.allocated },
        { head: "MAINT", get: (x) => x.maintenance },
        { head: "OFFLINE", get: (x) => x.offline },
        { head: "NODES", get: (x) => x.nodes },
      ]),
    );
    return 0;
  },
};

export const FLEET_COMMANDS: Command[] = [
  devices,
  device,
  importDevices,
  drain,
  statusCommand(
    "maintenance",
    "take a device into maintenance now (a running allocation ends and is billed)",
    'npm run ctl -- maintenance demo-default-4 --reason "screen cracked"',
  ),
  statusCommand("offline", "take a device offline now (a running allocation ends and is billed)", "npm run ctl -- offline demo-default-4"),
  statusCommand("online", "put a device back in service (cancels a drain)", "npm run ctl -- online demo-default-4"),
  forceRelease,
  pools,
];
