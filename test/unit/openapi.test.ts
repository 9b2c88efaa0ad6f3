/**
 * The OpenAPI document as others will use it: built from the routes (no Worker needed), linted
 * by `@redocly/cli` with its recommended rules and the project's config (redocly.yaml, which
 * says why any rule is changed), and checked for what generated clients rely on: a unique
 * operationId on every operation, every path parameter declared, security on every operation.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { createApp, DOCUMENT } from "../../src/app";

const root = path.resolve(import.meta.dirname, "../..");
const doc = createApp().getOpenAPI31Document(DOCUMENT as never) as any;
const operations = Object.entries(doc.paths as Record<string, Record<string, any>>).flatMap(([p, item]) =>
  Object.entries(item).map(([method, op]) => ({ path: p, method, op })),
);

describe("the OpenAPI document", () => {
  it("every operation has a unique operationId, tags and security", () => {
    expect(operations.length).toBeGreaterThan(60);
    const ids = operations.map((o) => o.op.operationId);
    for (const o of operations) expect(o.op.operationId, `${o.method} ${o.path}`).toMatch(/^[a-z][A-Za-z]+$/);
    expect(new Set(ids).size).toBe(ids.length);
    for (const o of operations) expect(o.op.tags?.length, `${o.method} ${o.path}`).toBeGreaterThan(0);
    // Public by design: the document itself, and the keys device nodes verify access grants with.
    const open = new Set(["/openapi.json", "/.well-known/jwks.json"]);
    for (const o of operations.filter((o) => !open.has(o.path))) expect(o.op.security?.length, `${o.method} ${o.path}`).toBeGreaterThan(0);
  });

  it("every HTTP operation names a 2xx answer; the WebSocket upgrades name 101 and their close codes", () => {
    for (const o of operations) {
      const statuses = Object.keys(o.op.responses ?? {});
      if (o.op["x-websocket"]) {
        expect(statuses, o.path).toContain("101");
        expect(o.op["x-close-codes"], o.path).toMatchObject({ unauthorized: 4401, notFound: 4404 });
      } else
        expect(
          statuses.some((s) => /^2\d\d$/.test(s)),
          `${o.method} ${o.path}`,
        ).toBe(true);
    }
  });

  it("declares every path parameter and a server", () => {
    expect(doc.servers).toEqual([{ url: "/", description: "This deployment" }]);
    for (const o of operations) {
      const named = [...o.path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
      const declared = (o.op.parameters ?? []).filter((p: any) => p.in === "path").map((p: any) => p.name);
      expect(declared.sort(), `${o.method} ${o.path}`).toEqual(named.sort());
    }
  });

  it("passes `redocly lint` (recommended rules): no errors, no warnings", () => {
    const dir = path.join(root, "test-results");
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, "openapi.json");
    writeFileSync(file, JSON.stringify(doc, null, 2));
    const r = spawnSync(path.join(root, "node_modules", ".bin", "redocly"), ["lint", file, "--config", path.join(root, "redocly.yaml")], {
      encoding: "utf8",
      env: { ...process.env, REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_UPDATE_NOTICE: "true" },
    });
    const out = `${r.stdout}\n${r.stderr}`;
    expect(out, out).toMatch(/Woohoo! Your API description is valid/);
    expect(out, out).not.toMatch(/warnings?\b.*\d/i);
  });
});
