/** `npm run ctl` commands on users and money: quota (show, set), top-up, reconcile. */
import type { ApiError, Quota, QuotaUpdate, ReconcileResult, TopUpRequest } from "../client/api-client";
import { PLAN_TIERS } from "../config";
import { UsageError, isoTime, positionals, wholeNumber } from "./args";
import { show, type Command, type Ctx } from "./context";
import { keyValues, money, table, when } from "./table";

const LIMIT_KEYS = [
  "maxDevices",
  "maxCpuCores",
  "maxMemoryMB",
  "maxStorageMB",
  "maxCpuCoresPerDevice",
  "maxMemoryMBPerDevice",
  "maxStorageMBPerDevice",
  "maxDeviceHoursPerPeriod",
] as const;
type LimitKey = (typeof LIMIT_KEYS)[number];
const SET_KEYS = ["tier", "suspended", "validUntil", ...LIMIT_KEYS];

/** `--set key=value …` as a quota update: tier, suspended, validUntil, and the limits by name (`limits.` optional). */
export function quotaUpdate(sets: string[], command: string | null): QuotaUpdate {
  const body: QuotaUpdate = {};
  const limits: Partial<Record<LimitKey, number>> = {};
  for (const set of sets) {
    const eq = set.indexOf("=");
    if (eq <= 0) throw new UsageError(`--set takes key=value (got "${set}")`, command);
    const key = set
      .slice(0, eq)
      .trim()
      .replace(/^limits\./, "");
    const value = set.slice(eq + 1).trim();
    if (key === "tier") {
      if (!(PLAN_TIERS as readonly string[]).includes(value)) throw new UsageError(`tier must be one of ${PLAN_TIERS.join(", ")}`, command);
      body.tier = value as QuotaUpdate["tier"];
    } else if (key === "suspended") {
      if (value !== "true" && value !== "false") throw new UsageError("suspended must be true or false", command);
      body.suspended = value === "true";
    } else if (key === "validUntil") body.validUntil = isoTime(value, "set validUntil", command);
    else if ((LIMIT_KEYS as readonly string[]).includes(key)) limits[key as LimitKey] = wholeNumber(value, key, command);
    else throw new UsageError(`unknown quota setting "${key}" (known: ${SET_KEYS.join(", ")})`, command);
  }
  if (Object.keys(limits).length) body.limits = limits;
  return body;
}

function quotaText(q: Quota): string {
  const u = q.usage;
  const l = q.limits;
  const rows: [string, number, number][] = [
    ["devices", u.devices, l.maxDevices],
    ["cpuCores", u.cpuCores, l.maxCpuCores],
    ["memoryMB", u.memoryMB, l.maxMemoryMB],
    ["storageMB", u.storageMB, l.maxStorageMB],
    ["deviceHours", Math.round(u.deviceHours * 100) / 100, l.maxDeviceHoursPerPeriod],
  ];
  const head = keyValues([
    ["user", q.userId],
    ["tier", q.tier],
    ["status", q.status],
    ["validUntil", when(q.validUntil)],
    ["period", `since ${when(q.periodStart)}`],
    ["per device", `${l.maxCpuCoresPerDevice} cores, ${l.maxMemoryMBPerDevice} MB memory, ${l.maxStorageMBPerDevice} MB storage at most`],
  ]);
  const use = table(rows, [
    { head: "RESOURCE", get: (r) => r[0] },
    { head: "USED", get: (r) => r[1] },
    { head: "LIMIT", get: (r) => r[2] },
  ]);
  return `${head}\n\n${use}`;
}

const createHint = (err: ApiError) => (err.code === "USER_NOT_FOUND" ? "add --create to create this user on purpose" : null);

const quota: Command = {
  name: "quota",
  args: "<userId> [--set key=value …] [--create]",
  summary: "a user's quota and usage; with --set, change it (tier, suspended, validUntil, limits)",
  details: [
    `keys: ${SET_KEYS.join(", ")} (a limit may be written limits.<name>).`,
    "A new tier without limits brings its own limits. --create: the user may be new (otherwise an unknown user is refused).",
  ],
  example: "npm run ctl -- quota alice --set tier=basic --set maxDevices=3",
  options: { set: "list", create: "flag" },
  hint: createHint,
  async run(ctx, p) {
    const [userId] = positionals(p, ["userId"]);
    const sets = p.lists.get("set") ?? [];
    if (!sets.length) {
      if (p.flags.has("create")) throw new UsageError("--create goes with --set", p.command);
      const q = await ctx.api.quota(userId!);
      show(ctx, q, () => quotaText(q));
      return 0;
    }
    const body = quotaUpdate(sets, p.command);
    // An unknown user is 404 USER_NOT_FOUND unless the request says ?create=true.
    const q = await ctx.api.updateQuota(userId!, body, { create: p.flags.has("create") });
    show(ctx, q, () => `updated\n${quotaText(q)}`);
    return 0;
  },
};

/** A payment id for a top-up that names none: printed first, so a retry can repeat it and be credited once. */
function newPaymentId(now: number): string {
  const rand = Math.floor(Math.random() * 0x1000000)
    .toString(16)
    .padStart(6, "0");
  return `ctl-${new Date(now).toISOString().replace(/[-:]|\.\d+/g, "")}-${rand}`;
}

const topUp: Command = {
  name: "top-up",
  args: "<userId> <amountMinor> [--payment-id <id>] [--method <text>] [--create]",
  summary: "credit a payment to a user's balance, once per payment id (amount in minor units: 1050 = 10.50)",
  details: [
    "Without --payment-id one is made up and printed first (stderr): repeat the command with it to retry safely;",
    "a payment id already credited answers `duplicate` and moves nothing. --create: the user may be new (their account",
    "opens with the starting credit; otherwise an unknown user is refused).",
  ],
  example: "npm run ctl -- top-up alice 5000 --payment-id stripe:pi_123",
  options: { "payment-id": "value", method: "value", create: "flag" },
  hint: createHint,
  async run(ctx, p) {
    const [userId, amount] = positionals(p, ["userId", "amountMinor"]);
    if (/^\s*-?\d*[.,]\d+\s*$/.test(amount!))
      throw new UsageError(`amountMinor is in minor units, a whole number (10.50 is 1050; got "${amount}")`, p.command);
    const amountMinor = wholeNumber(amount!, "amountMinor", p.command, 1);
    let paymentId = p.values.get("payment-id");
    if (paymentId === undefined) {
      paymentId = newPaymentId(ctx.now());
      ctx.note(`payment id ${paymentId} (to retry this top-up safely: --payment-id ${paymentId})`);
    }
    const method = p.values.get("method");
    const body: TopUpRequest = { amountMinor, paymentId, ...(method === undefined ? {} : { paymentMethod: method }) };
    const r = await ctx.api.topUp(userId!, body, { create: p.flags.has("create") });
    show(ctx, r, () =>
      r.duplicate
        ? `payment ${r.paymentId} was credited before: nothing moved; ${r.userId}'s balance is ${money(r.balanceMinor, r.currency)}`
        : `credited ${money(r.amountMinor, r.currency)} to ${r.userId} (payment ${r.paymentId}); ` +
          `balance ${money(r.balanceMinor, r.currency)}`,
    );
    return 0;
  },
};

function reconcileText(r: ReconcileResult, healed: boolean): string {
  // Read loosely: a server before issue 20 has no `defaulted`, and its `from` may be null.
  const defaulted: string[] = r.defaulted ?? [];
  const chosen = defaulted.length ? ` (${defaulted.join(" and ")} chosen by the service)` : "";
  const window = r.from ? `${when(r.from)} to ${when(r.to)}${chosen}` : `each account from its watermark to ${when(r.to)}`;
  const head = keyValues([
    ["window", window],
    ["users", r.users],
    ["allocations", `${r.checked} checked`],
    ["missing usage", r.missingUsage],
    ["missing charges", r.missingCharges],
    ["mismatched", r.mismatched],
    ["healed", healed ? r.healed : "- (report only)"],
    ["corrected", r.corrected],
    ["still missing", r.stillMissing],
    ["balance drift", r.balanceDrift],
    ["dead letters resolved", r.resolvedDeadLetters],
  ]);
  const rows: { user: string; window: string; what: string; allocation: string; detail: string }[] = [];
  for (const d of r.differences) {
    const w = `${when(d.from)}..${when(d.to)}`;
    const add = (what: string, allocation: string, detail = "") => rows.push({ user: d.userId, window: w, what, allocation, detail });
    d.missingUsage.forEach((a) => add("missing usage", a));
    d.missingCharges.forEach((a) => add("missing charge", a));
    d.mismatched.forEach((m) => add("mismatched", m.allocationId, `${m.field}: expected ${m.expected}, recorded ${m.recorded}`));
    d.corrected.forEach((c) => add("corrected", c.allocationId, `${money(c.correctionMinor, c.currency)}`));
    d.stillMissing.forEach((a) => add("still missing", a));
    if (d.balanceDrift)
      add(
        "balance drift",
        "-",
        `balance ${money(d.balanceDrift.balanceMinor, d.balanceDrift.currency)}, ` +
          `ledger ${money(d.balanceDrift.ledgerSumMinor, d.balanceDrift.currency)}`,
      );
  }
  const diffs = rows.length
    ? table(rows, [
        { head: "USER", get: (x) => x.user },
        { head: "WINDOW", get: (x) => x.window },
        { head: "DIFFERENCE", get: (x) => x.what },
        { head: "ALLOCATION", get: (x) => x.allocation },
        { head: "DETAIL", get: (x) => x.detail },
      ])
    : "no differences";
  const more =
    r.differencesTotal > r.differencesShown ? `\n(${r.differencesShown} of ${r.differencesTotal} users with differences shown)` : "";
  const rest = r.remaining ? "\n(more accounts remain: run it again)" : "";
  const tip = !healed && rows.length ? "\nreport only: run again with --heal to book what is missing and correct what differs" : "";
  return `${head}\n\n${diffs}${more}${rest}${tip}`;
}

const reconcile: Command = {
  name: "reconcile",
  args: "[--from <ISO time>] [--to <ISO time>] [--user <userId>] [--heal]",
  summary: "compare ended allocations with usage and charges; report the window checked and the differences",
  details: [
    "Reports only unless --heal (then missing records are booked and differing ones corrected; the API's own default",
    "is to heal). --to defaults to now less the grace period (10 minutes), --from to 31 days before --to; --user: one user.",
  ],
  example: "npm run ctl -- reconcile --from 2026-01-01T00:00:00Z",
  options: { from: "value", to: "value", user: "value", heal: "flag" },
  async run(ctx: Ctx, p) {
    positionals(p, []);
    const heal = p.flags.has("heal");
    const r = await ctx.api.reconcile({
      from: isoTime(p.values.get("from"), "from", p.command),
      to: isoTime(p.values.get("to"), "to", p.command),
      userId: p.values.get("user"),
      heal,
    });
    show(ctx, r, () => reconcileText(r, heal));
    return 0;
  },
};

export const USER_COMMANDS: Command[] = [quota, topUp, reconcile];
