/**
 * Issue 18's one shape for billing, as the old system's clients meet it: usage records with
 * optional fields as `null`, times as ISO 8601 only (epoch milliseconds refused with a message
 * saying so), every bad field of a batch named with its path, money in integer minor units (a
 * decimal amount is refused with its value in minor units), and an invoice run for the default
 * period when no period is given.
 */
import { describe, expect, it } from "vitest";
import { previousPeriod } from "../src/domain/pricing";
import { SERVICE_TOKEN, admin, call, uid } from "./helpers";

const report = (body: unknown) => call("POST", "/api/internal/metering/device-usage", { service: SERVICE_TOKEN, body });

/** A record as the old device service sends it: its `Date`s serialized (ISO, UTC), `tenantId` from a nullable column. */
const old = (o: Record<string, unknown> = {}) => ({
  deviceId: "old-dev-1",
  userId: uid("old-u"),
  tenantId: null,
  allocationId: uid("old-alloc"),
  durationSeconds: 3600,
  cpuCores: 2,
  memoryMB: 4096,
  storageMB: 32768,
  allocatedAt: "2026-03-02T10:00:00.000Z",
  releasedAt: "2026-03-02T11:00:00.000Z",
  ...o,
});

const paths = (r: { body: any }) => (r.body.error.details.issues as { path: string }[]).map((i) => i.path);

describe("usage reports as the old system sends them", () => {
  it("`tenantId: null` and `reason: null` are accepted as absent; the record is booked and reads back in ISO", async () => {
    const rec = old({ reason: null });
    const r = await report(rec);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toEqual({
      recorded: 1,
      duplicates: 0,
      failed: 0,
      results: [{ allocationId: rec.allocationId, status: "recorded", amountMinor: 25, currency: "USD" }],
    });
    const usage = await call("GET", `/metering/users/${rec.userId}?from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z`, {
      token: await admin(),
    });
    expect(usage.body.items).toEqual([
      expect.objectContaining({
        allocationId: rec.allocationId,
        tenantId: null,
        reason: "released",
        allocatedAt: "2026-03-02T10:00:00.000Z",
        releasedAt: "2026-03-02T11:00:00.000Z",
        chargeMinor: 25,
        currency: "USD",
      }),
    ]);
  });

  it("ISO times with an offset are the same instants in UTC", async () => {
    const rec = old({ allocatedAt: "2026-03-02T12:00:00+02:00", releasedAt: "2026-03-02T13:00:00+02:00", tenantId: "t-1" });
    expect((await report([rec])).body.recorded).toBe(1);
    const usage = await call("GET", `/metering/users/${rec.userId}?from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z`, {
      token: await admin(),
    });
    expect(usage.body.items[0]).toMatchObject({
      tenantId: "t-1",
      allocatedAt: "2026-03-02T10:00:00.000Z",
      releasedAt: "2026-03-02T11:00:00.000Z",
    });
  });

  it("epoch milliseconds are refused, and the message says which time format to send", async () => {
    const r = await report(old({ allocatedAt: Date.parse("2026-03-02T10:00:00Z") }));
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe("VALIDATION_FAILED");
    expect(r.body.error.details.issues).toEqual([
      {
        path: "allocatedAt",
        message: expect.stringMatching(/ISO 8601.*epoch milliseconds are not accepted: 1772445600000 is 2026-03-02T10:00:00.000Z/),
      },
    ]);
  });

  it("a batch names every bad field of every record with its path, in each of its forms, and books nothing", async () => {
    const good = old();
    const bad = [good, old({ durationSeconds: -1 }), old({ tenantId: 5, cpuCores: "2" }), old({ releasedAt: 1_772_449_200_000 })];
    const asArray = await report(bad);
    expect(asArray.status).toBe(400);
    expect(asArray.body.error.code).toBe("VALIDATION_FAILED");
    expect(paths(asArray).sort()).toEqual(["1.durationSeconds", "2.cpuCores", "2.tenantId", "3.releasedAt"]);
    expect(asArray.body.error.message).toContain("1.durationSeconds: ");

    const asRecords = await report({ records: bad });
    expect(asRecords.status).toBe(400);
    expect(paths(asRecords).sort()).toEqual([
      "records.1.durationSeconds",
      "records.2.cpuCores",
      "records.2.tenantId",
      "records.3.releasedAt",
    ]);

    const one = await report(old({ durationSeconds: 1.5, userId: "" }));
    expect([...new Set(paths(one))].sort()).toEqual(["durationSeconds", "userId"]); // an empty id breaks two rules

    // The envelope itself: an unknown key beside `records`, and a batch too large.
    expect(paths(await report({ records: [good], extra: 1 }))).toEqual([""]);
    expect(paths(await report({ records: [] }))).toEqual(["records"]);

    // Nothing of a refused batch was booked: the good record books now, once.
    expect((await report(good)).body.recorded).toBe(1);
  });
});

describe("money in minor units", () => {
  it("a top-up of 50.00 is refused with what to send instead", async () => {
    const user = uid("cents");
    const token = await admin();
    const send = (amountMinor: unknown) =>
      call("POST", `/billing/users/${user}/top-ups?create=true`, { token, body: { amountMinor, paymentId: uid("pay") } });
    const text = await send("50.00");
    expect(text.status).toBe(400);
    expect(text.body.error.details.issues).toEqual([
      { path: "amountMinor", message: "amountMinor is an integer number of minor units (cents): 50.00 is 5000" },
    ]);
    const decimal = await send(12.5);
    expect(decimal.body.error.details.issues[0].message).toBe("amountMinor is an integer number of minor units (cents): 12.5 is 1250");
    const ok = await send(5000);
    expect(ok.status).toBe(201);
    expect(ok.body).toMatchObject({ amountMinor: 5000, balanceMinor: 6000, currency: "USD" });
  });
});

describe("invoice runs", () => {
  it("`{}` and no body run the default period, the last month that has ended (what the cron writes)", async () => {
    const period = previousPeriod(Date.now());
    for (const opts of [{ body: {} }, {}]) {
      const r = await call("POST", "/admin/billing/invoices/run", { token: await admin(), ...opts });
      // Within 15 minutes of a month's end the month has not closed yet: the same period, refused for that.
      if (r.status === 409) expect(r.body.error).toMatchObject({ code: "PERIOD_NOT_ENDED", details: { period } });
      else {
        expect(r.status, JSON.stringify(r.body)).toBe(200);
        expect(r.body).toMatchObject({ period, remaining: false });
      }
    }
  });
});
