/**
 * The document cannot drift: every answer the workers projects receive is checked against the
 * OpenAPI document (test/support/answers.ts, wired in by test/support/worker.ts and
 * test/setup.ts). These cases show the check runs and that it catches what it should.
 */
import { describe, expect, it } from "vitest";
import { checkAnswer, checked, mismatches } from "./support/answers";
import { call, registerDevice, tokenFor, uid } from "./helpers";

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

describe("answers are held against the OpenAPI document", () => {
  it("checks the answers a test receives through the Worker", async () => {
    const user = uid("u");
    const before = checked.count;
    const r = await call("GET", `/billing/users/${user}/balance`, { token: await tokenFor(user) });
    expect(r.status).toBe(200);
    expect(checked.count).toBe(before + 1);
  });

  it("flags a wrong type, a missing field, an undocumented field and an undocumented status", async () => {
    const user = uid("u");
    const r = await call("GET", `/billing/users/${user}/balance`, { token: await tokenFor(user) });
    const good = r.body as Record<string, unknown>;
    const href = `https://test.local/billing/users/${user}/balance`;
    expect(await checkAnswer("GET", href, json(good))).toBeNull();
    const wrongType = await checkAnswer("GET", href, json({ ...good, userId: 7 }));
    const { userId: _, ...missing } = good;
    const missingField = await checkAnswer("GET", href, json(missing));
    const extra = await checkAnswer("GET", href, json({ ...good, surprise: true }));
    const status = await checkAnswer("GET", href, json(good, 418));
    const badError = await checkAnswer("GET", href, json({ error: { code: 1 } }, 404));
    const seen = mismatches.splice(0);
    expect(wrongType).toMatch(/userId/);
    expect(missingField).toMatch(/userId/);
    expect(extra).toMatch(/surprise/);
    expect(status).toMatch(/no 418 answer/);
    expect(badError).toMatch(/code|message/);
    expect(seen).toHaveLength(5);
  });

  it("leaves alone what the document does not describe (unknown paths, the console)", async () => {
    expect(await checkAnswer("GET", "https://test.local/no/such/path", json({ anything: 1 }, 404))).toBeNull();
    expect(mismatches).toEqual([]);
  });
});

describe("one time format in requests", () => {
  it("a time given as epoch ms is refused, naming the field and the format; the same time as ISO 8601 is taken", async () => {
    const pool = uid("pool");
    await registerDevice(pool);
    const token = await tokenFor(uid("u"));
    const at = Date.now() + 3_600_000;
    const ms = await call("POST", "/scheduler/reservations", { token, body: { pool, startAt: at, durationMinutes: 30 } });
    expect(ms.status).toBe(400);
    expect(ms.body.error.code).toBe("VALIDATION_FAILED");
    expect(ms.body.error.details.issues).toEqual([{ path: "startAt", message: expect.stringMatching(/ISO 8601/) }]);
    const isoAt = new Date(at).toISOString();
    const ok = await call("POST", "/scheduler/reservations", { token, body: { pool, startAt: isoAt.replace("Z", "+00:00") } });
    expect(ok.status).toBe(201);
    expect(ok.body.startAt).toBe(isoAt);
    expect(ok.body.durationMinutes).toBe(60); // left out: the documented default
  });
});
