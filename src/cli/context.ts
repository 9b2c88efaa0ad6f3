/** What every `npm run ctl` command gets (the typed client, the output) and how a command is declared. */
import type { ApiClient, ApiError } from "../client/api-client";
import type { OptionSpec, Parsed } from "./args";

export interface Ctx {
  api: ApiClient;
  /** `--json`: one JSON document on stdout, nothing else there. */
  json: boolean;
  out(text: string): void;
  /** Notes for the person (stderr), also under --json. */
  note(text: string): void;
  /** A file the operator named (relative to where they ran the command). */
  readFile(path: string): string;
  /** Milliseconds now (tests may fix it). */
  now(): number;
}

export interface Command {
  name: string;
  aliases?: string[];
  /** The arguments after the name, as shown in usage: `<deviceId> [--reason "…"]`. */
  args: string;
  /** One line for `ctl help`. */
  summary: string;
  /** More lines for `ctl help <command>`. */
  details?: string[];
  example: string;
  options: OptionSpec;
  run(ctx: Ctx, p: Parsed): Promise<number>;
  /** A line to add under an API error this command got (what it likely means here). */
  hint?(err: ApiError): string | null;
}

/** Under --json the value itself; otherwise what `readable` makes of it. */
export function show(ctx: Ctx, value: unknown, readable: () => string): void {
  ctx.out(ctx.json ? JSON.stringify(value, null, 2) : readable());
}
