/**
 * Issue 18: a client generated from the OpenAPI document alone works. The document is built from
 * the routes as test/unit/openapi.test.ts builds it; openapi-typescript turns it into types
 * (test-results/client/api.d.ts, next to the document it read: openapi.json); `tsc --strict`
 * checks client.ts, an openapi-fetch client that knows only those types; then that same file runs
 * against `npm run dev` (test/browser/harness.ts: a free port, a fresh state, the demo fleet).
 * No Chromium is needed.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import openapiTS, { astToString } from "openapi-typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDev, type DevServer } from "../browser/harness";

const root = path.resolve(import.meta.dirname, "../..");
const OUT = path.join(root, "test-results", "client");

// Both imported by a path held in a variable, so that no tsconfig follows them from this file:
// src/ type-checks with the Workers types (tsc -p .), this file with Node's (tsc -p test/browser),
// and client.ts only once its types exist, in the first test below.
const APP = path.join(root, "src", "app.ts");
const CLIENT = path.join(import.meta.dirname, "client.ts");
type AppModule = { createApp(): { getOpenAPI31Document(config: unknown): unknown }; DOCUMENT: unknown };
type ClientModule = { runClient(baseUrl: string, token: string, userId: string): Promise<any> };

describe("a client generated from the OpenAPI document alone", () => {
  let dev: Promise<DevServer>;
  beforeAll(() => {
    // Started now, awaited by the test that needs it: the generation and type-check run meanwhile.
    dev = startDev();
    dev.catch(() => {});
  });
  afterAll(async () => {
    await (await dev.catch(() => null))?.stop();
  });

  it("openapi-typescript's types of the document type-check client.ts (tsc --strict)", async () => {
    const { createApp, DOCUMENT } = (await import(APP)) as AppModule;
    const doc = createApp().getOpenAPI31Document(DOCUMENT);
    mkdirSync(OUT, { recursive: true });
    writeFileSync(path.join(OUT, "openapi.json"), JSON.stringify(doc, null, 2));
    writeFileSync(path.join(OUT, "api.d.ts"), astToString(await openapiTS(doc as never)));
    const tsc = path.join(root, "node_modules", ".bin", "tsc");
    const r = spawnSync(tsc, ["--strict", "--noEmit", "-p", path.join(root, "test", "client", "tsconfig.json")], { encoding: "utf8" });
    expect(`${r.stdout}${r.stderr}`).toBe("");
    expect(r.status).toBe(0);
  });

  it("run against npm run dev, it allocates, lists, extends, releases, and reads usage, balance and pricing", async () => {
    const server = await dev;
    const { runClient } = (await import(CLIENT)) as ClientModule;
    const out = await runClient(server.base, server.tokens.alice, "alice");

    expect(out.allocated.allocationId).toMatch(/\S/);
    expect(out.allocated.durationMinutes).toBe(30);
    expect(Date.parse(out.allocated.expiresAt)).toBeGreaterThan(Date.now());
    expect(out.listed.map((a: { allocationId: string }) => a.allocationId)).toContain(out.allocated.allocationId);
    expect(out.extended).toMatchObject({ extendCount: 1, extendedMinutes: 15 });
    expect(Date.parse(out.extended.expiresAt) - Date.parse(out.allocated.expiresAt)).toBe(15 * 60_000);
    expect(out.released).toMatchObject({ allocationId: out.allocated.allocationId, reason: "released" });
    expect(out.listedAfter.map((a: { allocationId: string }) => a.allocationId)).not.toContain(out.allocated.allocationId);

    // The usage record is there, and the balance moved by its charge (the balance equals the ledger).
    const record = out.usage.items.find((u: { allocationId: string }) => u.allocationId === out.allocated.allocationId);
    expect(record, "the released allocation's usage record").toBeDefined();
    expect(out.before.currency).toBe(out.usage.currency);
    expect(out.before.balanceMinor - out.after.balanceMinor).toBe(record.chargeMinor);
    expect(record.currency).toBe(out.before.currency);
    expect(new Date(record.releasedAt).toISOString()).toBe(record.releasedAt);
    expect(out.after.hasBalance).toBe(true);
    expect(out.plans.map((p: { pricingPlanId: string }) => p.pricingPlanId)).toContain(out.before.pricingPlanId);
    for (const p of out.plans) expect(p.currency).toBe(out.before.currency);
  });
});
