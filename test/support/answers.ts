/**
 * Every answer the suite receives is held against the OpenAPI document (issue 18: the document
 * cannot drift). The document is built as /openapi.json serves it; each answer's route and
 * status pick its schema, and the JSON body must match it. Objects are closed while checking
 * (a field the document does not name is a mismatch too), so the document says everything an
 * answer carries. test/support/worker.ts calls `checkAnswer`; test/setup.ts fails a test
 * during which any answer did not match.
 */
import { Validator, type Schema } from "@cfworker/json-schema";
import { DOCUMENT, createApp } from "../../src/app";

type Json = Record<string, unknown>;
interface Operation {
  method: string;
  path: string;
  match: RegExp;
  /** Fewer parameters first: `/pools/batch` before `/pools/{pool}`. */
  params: number;
  responses: Record<string, Validator | "not-json">;
}

/** What did not match, for the test running now (test/setup.ts reads and clears it). */
export const mismatches: string[] = [];
/** How many answers were checked (a test shows the check is wired in). */
export const checked = { count: 0 };

let operations: Operation[] | null = null;

/** `#/components/schemas/X` → `#/$defs/X`, allOf of objects merged into one, and every object closed. */
function prepare(node: unknown, defs: Record<string, Json>): unknown {
  if (Array.isArray(node)) return node.map((n) => prepare(n, defs));
  if (!node || typeof node !== "object") return node;
  const out: Json = {};
  for (const [k, v] of Object.entries(node as Json)) {
    out[k] = k === "$ref" && typeof v === "string" ? v.replace("#/components/schemas/", "#/$defs/") : prepare(v, defs);
  }
  if (Array.isArray(out.allOf)) {
    const parts = (out.allOf as Json[]).map((p) => (p.$ref ? defs[String(p.$ref).replace("#/$defs/", "")] : p)) as (Json | undefined)[];
    if (parts.every((p) => p && (p.type === "object" || p.properties))) {
      delete out.allOf;
      out.type = "object";
      out.properties = Object.assign({}, ...parts.map((p) => p?.properties ?? {}));
      out.required = [...new Set(parts.flatMap((p) => (p?.required as string[]) ?? []))];
    }
  }
  if (out.properties && out.additionalProperties === undefined) out.additionalProperties = false;
  return out;
}

function build(): Operation[] {
  const doc = createApp().getOpenAPI31Document(DOCUMENT) as unknown as Json;
  const raw = ((doc.components as Json | undefined)?.schemas ?? {}) as Record<string, Json>;
  // Two passes: allOf members are read from the prepared definitions.
  const first = prepare(raw, raw) as Record<string, Json>;
  const defs = prepare(raw, first) as Record<string, Json>;
  const ops: Operation[] = [];
  for (const [path, item] of Object.entries(doc.paths as Record<string, Json>)) {
    for (const [method, op] of Object.entries(item)) {
      const responses: Operation["responses"] = {};
      for (const [status, r] of Object.entries(((op as Json).responses ?? {}) as Record<string, Json>)) {
        const content = r.content as Record<string, { schema: Json }> | undefined;
        const json = content?.["application/json"]?.schema;
        if (!json) {
          responses[status] = "not-json";
          continue;
        }
        const schema = { ...(prepare(json, defs) as Json), $defs: defs } as Schema;
        responses[status] = new Validator(schema, "2020-12", false);
      }
      const names = path.match(/\{[^}]+\}/g) ?? [];
      const pattern = path.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\\?\{[^}]+\\?\}/g, "[^/]+");
      ops.push({ method: method.toUpperCase(), path, match: new RegExp(`^${pattern}$`), params: names.length, responses });
    }
  }
  return ops.sort((a, b) => a.params - b.params);
}

/** The documented operation a request reached, if any (the console, /docs and unknown paths have none). */
function operationOf(method: string, pathname: string): Operation | undefined {
  operations ??= build();
  return operations.find((o) => o.method === method && o.match.test(pathname));
}

/** Checks one answer; returns what did not match (also kept in `mismatches`), or null. */
export async function checkAnswer(method: string, href: string, response: Response): Promise<string | null> {
  const url = new URL(href);
  const op = operationOf(method, url.pathname);
  if (!op || response.status === 101) return null;
  checked.count += 1;
  const where = `${method} ${url.pathname} → ${response.status} (${op.method} ${op.path})`;
  const check = op.responses[String(response.status)];
  let problem: string | null = null;
  if (!check) problem = `${where}: the document names no ${response.status} answer for this operation`;
  else if (check !== "not-json") {
    const text = await response.clone().text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      problem = `${where}: the document says JSON, the answer is ${JSON.stringify(text.slice(0, 80))}`;
    }
    if (!problem) {
      const result = check.validate(body);
      if (!result.valid) {
        const errors = result.errors
          .filter((e) => e.keyword !== "properties" && e.keyword !== "items" && e.keyword !== "$ref")
          .slice(0, 6)
          .map((e) => `${e.instanceLocation}: ${e.error}`);
        problem = `${where}: ${errors.join("; ")} — body ${text.slice(0, 300)}`;
      }
    }
  }
  if (problem) mismatches.push(problem);
  return problem;
}
