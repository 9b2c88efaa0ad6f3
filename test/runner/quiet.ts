/**
 * A test log a person can read: the noise the suite makes on purpose goes to files under
 * test-results/, everything else is printed as it comes. Runs in vitest's main process (imported
 * by vitest.config.ts); nothing here runs inside workerd.
 *
 * - test-results/service.log: the service's own warn and error lines (src/log.ts), nearly all of
 *   them from faults the tests inject (D1 refusing writes, queues exhausting their retries). Info
 *   and debug lines are dropped. A failing test prints its lines again (test/setup.ts), so its
 *   own output still shows.
 * - test-results/runtime.log: lines the runtime and its tools print for things the tests do on
 *   purpose, listed below with the reason. Any other line of theirs is printed.
 */
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

const DIR = path.join(import.meta.dirname, "..", "..", "test-results");

/** What the runtime prints when a test does what it meant to, and why it is expected. */
export const EXPECTED_RUNTIME_LINES: { match: RegExp; why: string }[] = [
  {
    match: /disconnected: read end of pipe was aborted/,
    why:
      "bad-input streams a body over the limit: the Worker answers 413 without reading the rest, " +
      "and workerd reports the unread request body",
  },
  {
    match: /Application called abortAllDurableObjects\(\)/,
    why: "restart tests abort every object on purpose (abortAllDurableObjects)",
  },
  {
    match: /^\[mf:warn\] (Moving message|Dropped message) .* after \d+ failed attempts/,
    why: "billing tests exhaust the usage queue's retries on purpose (dead letters, dropped records)",
  },
  {
    match: /^Using secrets defined in \.dev\.vars$/,
    why: "wrangler reads .dev.vars for each test file's runtime; the test bindings override its secrets",
  },
];

/** workerd prints the native stack of an exception on the line after it. */
const STACK = /^stack: .*workerd@/;

const SERVICE_LINE = /^\{"ts":"[^"]*","level":"(debug|info|warn|error)"/;

function fresh(name: string): string {
  mkdirSync(DIR, { recursive: true });
  const file = path.join(DIR, name);
  writeFileSync(file, "");
  return file;
}

/** Sends the expected runtime lines written to this process's stdout and stderr to runtime.log. */
export function divertRuntimeNoise(): void {
  const file = fresh("runtime.log");
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write.bind(stream) as (chunk: string | Uint8Array, ...rest: unknown[]) => boolean;
    let afterDiverted = false;
    stream.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      const text = typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8");
      const lines = text.split("\n");
      const kept: string[] = [];
      const diverted: string[] = [];
      for (const [i, line] of lines.entries()) {
        const plain = line.replace(/\x1b\[[0-9;]*m/g, "");
        const expected = plain !== "" && (EXPECTED_RUNTIME_LINES.some((e) => e.match.test(plain)) || (afterDiverted && STACK.test(plain)));
        if (plain !== "") afterDiverted = expected;
        if (expected) diverted.push(plain);
        else if (i < lines.length - 1 || line !== "") kept.push(line);
      }
      if (diverted.length === 0) return write(chunk, ...rest);
      appendFileSync(file, `${diverted.join("\n")}\n`);
      return kept.length === 0 ? true : write(kept.join("\n") + (text.endsWith("\n") ? "\n" : ""), ...rest);
    }) as typeof stream.write;
  }
}

interface Entity {
  fullName?: string;
  moduleId?: string;
}

/**
 * vitest's onConsoleLog: service lines at info and debug are dropped, at warn and error they go
 * to service.log (with the test that was running); everything else is printed.
 */
export function serviceLog(): (line: string, type: "stdout" | "stderr", entity?: Entity) => boolean {
  const file = fresh("service.log");
  return (line, _type, entity) => {
    const level = SERVICE_LINE.exec(line)?.[1];
    if (level === undefined) return true;
    if (level === "warn" || level === "error")
      appendFileSync(file, `${entity?.fullName ?? entity?.moduleId ?? "(no test)"}\n  ${line.trimEnd()}\n`);
    return false;
  };
}
