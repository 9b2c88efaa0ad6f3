/**
 * The command line of `npm run ctl`: the command, its positional arguments and its options.
 * Global options may stand before or after the command; a command's own only after it.
 * `--name value` and `--name=value` both work; a list option (`--set`, `--label`) may repeat;
 * `--` ends the options. Anything unknown is a usage error (exit 2), never silently ignored.
 */

export type OptionKind = "flag" | "value" | "list";
export type OptionSpec = Record<string, OptionKind>;

export interface Parsed {
  command: string | null;
  positionals: string[];
  flags: Set<string>;
  values: Map<string, string>;
  lists: Map<string, string[]>;
}

/** A mistake in how the command was called: printed with the command's usage, exit code 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly command: string | null = null,
  ) {
    super(message);
    this.name = "UsageError";
  }
}

export const GLOBAL_OPTIONS: OptionSpec = { json: "flag", "base-url": "value", token: "value", help: "flag" };

/**
 * Splits argv. `commandOptions(name)` gives the options of a command (null: no such command,
 * which the caller reports; its arguments are then parsed with the global options only).
 */
export function parseArgv(argv: string[], commandOptions: (command: string) => OptionSpec | null): Parsed {
  const out: Parsed = { command: null, positionals: [], flags: new Set(), values: new Map(), lists: new Map() };
  let spec: OptionSpec = GLOBAL_OPTIONS;
  let optionsEnded = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (optionsEnded || !arg.startsWith("--") || arg === "--") {
      if (arg === "--" && !optionsEnded) {
        optionsEnded = true;
        continue;
      }
      if (out.command === null) {
        out.command = arg;
        spec = { ...GLOBAL_OPTIONS, ...(commandOptions(arg) ?? {}) };
      } else out.positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq > 0 ? eq : undefined);
    const kind = spec[name];
    if (!kind) throw new UsageError(`unknown option --${name}`, out.command);
    if (kind === "flag") {
      if (eq > 0) throw new UsageError(`--${name} takes no value`, out.command);
      out.flags.add(name);
      continue;
    }
    let value: string;
    if (eq > 0) value = arg.slice(eq + 1);
    else {
      if (i + 1 >= argv.length) throw new UsageError(`--${name} needs a value`, out.command);
      value = argv[++i]!;
    }
    if (kind === "list") out.lists.set(name, [...(out.lists.get(name) ?? []), value]);
    else {
      if (out.values.has(name)) throw new UsageError(`--${name} given twice`, out.command);
      out.values.set(name, value);
    }
  }
  return out;
}

/** Exactly `names.length` positionals (the last ones optional when `optional` says how many may be left out). */
export function positionals(p: Parsed, names: string[], optional = 0): (string | undefined)[] {
  const min = names.length - optional;
  if (p.positionals.length < min) throw new UsageError(`missing <${names[p.positionals.length]}>`, p.command);
  if (p.positionals.length > names.length) throw new UsageError(`unexpected argument "${p.positionals[names.length]}"`, p.command);
  return names.map((_, i) => p.positionals[i]);
}

/** An ISO 8601 time with a zone (`Z` or an offset), as the API takes it; checked here so a typo never reaches it. */
export function isoTime(value: string | undefined, option: string, command: string | null): string | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(value) || Number.isNaN(Date.parse(value)))
    throw new UsageError(`--${option} must be an ISO 8601 time with a zone, e.g. 2026-01-31T09:30:00Z (got "${value}")`, command);
  return value;
}

/** A whole number written in digits (no decimals, no exponent). */
export function wholeNumber(value: string, what: string, command: string | null, min = 0): number {
  const n = /^-?\d+$/.test(value.trim()) ? Number(value.trim()) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min)
    throw new UsageError(`${what} must be a whole number${min > 0 ? ` ≥ ${min}` : ""} (got "${value}")`, command);
  return n;
}
