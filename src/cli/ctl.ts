/**
 * `npm run ctl -- <command>`: the operators' command line over the typed client
 * (src/client/api-client.ts). scripts/ctl.mjs bundles this file with esbuild and calls `main`
 * with the process's arguments, environment and output; the tests call it the same way.
 *
 * Exit codes: 0 done; 1 the API refused or failed (`CODE: message` on stderr), or an import item
 * failed; 2 the command was called wrongly (usage on stderr).
 */
import { ApiClient, ApiError, type ApiClientOptions } from "../client/api-client";
import { UsageError, parseArgv, type OptionSpec } from "./args";
import { FLEET_COMMANDS } from "./commands-fleet";
import { USER_COMMANDS } from "./commands-users";
import type { Command, Ctx } from "./context";
import { FileError } from "./devices-file";

export const DEFAULT_BASE_URL = "http://127.0.0.1:8787";

export interface CliIO {
  argv: string[];
  env: Record<string, string | undefined>;
  stdout(text: string): void;
  stderr(text: string): void;
  /** Reads a file the operator named. */
  readFile(path: string): string;
  /** An admin token minted from .dev.vars for `npm run dev` (null: none there). Used only for a local base URL. */
  devToken?: () => string | null;
  fetch?: ApiClientOptions["fetch"];
  now?: () => number;
}

const COMMANDS: Command[] = [...FLEET_COMMANDS, ...USER_COMMANDS];

function find(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name || c.aliases?.includes(name));
}

const GLOBAL_HELP = [
  "--json               machine output: the API's answer as JSON on stdout (errors as {error} on stderr)",
  `--base-url <url>     the service (default ${DEFAULT_BASE_URL}, or EDA_BASE_URL)`,
  "--token <jwt>        an admin bearer token (default EDA_TOKEN; for a local npm run dev, one minted from .dev.vars)",
];

function helpAll(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  const lines = COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}${c.aliases ? ` (also: ${c.aliases.join(", ")})` : ""}`);
  return [
    "usage: npm run ctl -- <command> [arguments] [--json] [--base-url <url>] [--token <jwt>]",
    "",
    "commands:",
    ...lines,
    `  ${"help".padEnd(width)}this list; help <command> for its arguments and an example`,
    "",
    "options of every command:",
    ...GLOBAL_HELP.map((l) => `  ${l}`),
  ].join("\n");
}

function helpOne(c: Command): string {
  return [
    `usage: npm run ctl -- ${c.name}${c.args ? ` ${c.args}` : ""}`,
    "",
    `${c.summary}.`,
    ...(c.details ?? []),
    ...(c.aliases ? [`also called: ${c.aliases.join(", ")}`] : []),
    "",
    `example: ${c.example}`,
  ].join("\n");
}

const isLocal = (base: string) => {
  try {
    return ["127.0.0.1", "localhost", "[::1]"].includes(new URL(base).hostname);
  } catch {
    return false;
  }
};

export async function main(io: CliIO): Promise<number> {
  let json = io.argv.includes("--json");
  let command: Command | undefined;
  try {
    const p = parseArgv(io.argv, (name): OptionSpec | null => find(name)?.options ?? null);
    json = p.flags.has("json");
    if (p.command === null || p.command === "help") {
      const about = p.command === "help" ? p.positionals[0] : undefined;
      if (about !== undefined) {
        const c = find(about);
        if (!c) throw new UsageError(`unknown command "${about}"`);
        io.stdout(helpOne(c));
      } else io.stdout(helpAll());
      return p.command === null && !p.flags.has("help") ? 2 : 0;
    }
    command = find(p.command);
    if (!command) throw new UsageError(`unknown command "${p.command}" (npm run ctl -- help lists them)`);
    if (p.flags.has("help")) {
      io.stdout(helpOne(command));
      return 0;
    }
    const baseUrl = (p.values.get("base-url") ?? io.env.EDA_BASE_URL ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
    if (!/^https?:\/\/[^/]+/.test(baseUrl)) throw new UsageError(`--base-url must be an http(s) URL (got "${baseUrl}")`, p.command);
    let token = p.values.get("token") ?? io.env.EDA_TOKEN ?? undefined;
    if (!token && isLocal(baseUrl)) token = io.devToken?.() ?? undefined;
    if (!token)
      throw new UsageError(
        `no token: pass --token <admin jwt> or set EDA_TOKEN${isLocal(baseUrl) ? " (no .dev.vars to mint one from)" : ""}`,
        p.command,
      );
    const ctx: Ctx = {
      api: new ApiClient({ baseUrl, token, fetch: io.fetch }),
      json,
      out: io.stdout,
      note: io.stderr,
      readFile: io.readFile,
      now: io.now ?? Date.now,
    };
    return await command.run(ctx, p);
  } catch (err) {
    return report(io, err, json, command);
  }
}

function report(io: CliIO, err: unknown, json: boolean, command: Command | undefined): number {
  if (err instanceof UsageError) {
    const c = err.command ? find(err.command) : undefined;
    io.stderr(`ctl${c ? ` ${c.name}` : ""}: ${err.message}`);
    io.stderr(c ? `usage: npm run ctl -- ${c.name} ${c.args}`.trimEnd() : "usage: npm run ctl -- <command> … (npm run ctl -- help)");
    return 2;
  }
  if (err instanceof FileError) {
    io.stderr(`ctl${command ? ` ${command.name}` : ""}: the file has ${err.problems.length} problem(s); nothing was sent:`);
    for (const p of err.problems) io.stderr(`  ${p}`);
    return 1;
  }
  const e = ApiError.from(err);
  if (json) {
    io.stderr(
      JSON.stringify({
        error: { status: e.status, code: e.code, message: e.message, ...(e.details === undefined ? {} : { details: e.details }) },
      }),
    );
    return 1;
  }
  io.stderr(`${e.code}: ${e.message}`);
  const issues = (e.details as { issues?: { path: string; message: string }[] } | undefined)?.issues;
  // Each failing field (the message names the first one already, when there is only one).
  if (Array.isArray(issues))
    for (const i of issues) {
      const line = `${i.path || "(body)"}: ${i.message}`;
      if (issues.length > 1 || !e.message.includes(line)) io.stderr(`  ${line}`);
    }
  const hint =
    command?.hint?.(e) ??
    (e.code === "NETWORK"
      ? "is the service running there? (npm run dev; or --base-url)"
      : e.status === 401
        ? "the token was refused: pass an admin token with --token or EDA_TOKEN"
        : e.status === 403
          ? "this needs an admin token"
          : null);
  if (hint) io.stderr(`hint: ${hint}`);
  return 1;
}
