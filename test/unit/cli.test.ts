/**
 * `npm run ctl` (src/cli) without a service: its argument parsing, the device files of `import`
 * (CSV and JSON), quota settings, tables, and `main` over a fetch that answers as the API would
 * (the fallback to the pools' lists on a server without GET /admin/devices, errors and exit codes).
 * test/cli/ctl.test.ts runs the real command against `npm run dev`.
 */
import { describe, expect, it } from "vitest";
import { UsageError, parseArgv } from "../../src/cli/args";
import { quotaUpdate } from "../../src/cli/commands-users";
import { main, type CliIO } from "../../src/cli/ctl";
import { FileError, chunkDevices, parseDevicesFile } from "../../src/cli/devices-file";
import { money, naturalCompare, table } from "../../src/cli/table";

const problems = (f: () => unknown): string[] => {
  try {
    f();
  } catch (err) {
    if (err instanceof FileError) return err.problems;
    throw err;
  }
  throw new Error("expected a FileError");
};

describe("ctl: arguments", () => {
  const spec = (c: string) => (c === "drain" ? { reason: "value" as const, label: "list" as const, heal: "flag" as const } : null);

  it("takes global options before and after the command, --x=y, repeats of a list and --", () => {
    const p = parseArgv(
      ["--json", "drain", "dev-1", "--reason=a b", "--label", "k:v", "--label=x:y", "--base-url", "http://h", "--", "--odd"],
      spec,
    );
    expect(p.command).toBe("drain");
    expect(p.positionals).toEqual(["dev-1", "--odd"]);
    expect(p.flags.has("json")).toBe(true);
    expect(p.values.get("reason")).toBe("a b");
    expect(p.values.get("base-url")).toBe("http://h");
    expect(p.lists.get("label")).toEqual(["k:v", "x:y"]);
  });

  it("refuses unknown options, a command's option before the command, a missing value, a value given twice", () => {
    expect(() => parseArgv(["drain", "--nope"], spec)).toThrow(/unknown option --nope/);
    expect(() => parseArgv(["--reason", "x", "drain"], spec)).toThrow(UsageError);
    expect(() => parseArgv(["drain", "--reason"], spec)).toThrow(/needs a value/);
    expect(() => parseArgv(["drain", "--reason", "a", "--reason", "b"], spec)).toThrow(/twice/);
    expect(() => parseArgv(["drain", "--json=1"], spec)).toThrow(/takes no value/);
  });
});

describe("ctl import: device files (the console's import form)", () => {
  it("reads CSV with a header in any order, quotes, empty cells left out, labels k=v;k=v, CRLF and a BOM", () => {
    const csv =
      "\uFEFFpool,deviceId,cpuCores,memoryMB,storageMB,name,labels,node\r\n" +
      'p1,d-1,2,4096,32768,"Pixel 8, #1",region=eu; tier=gold,n1\r\n' +
      '\r\np1,d-2,4,8192,65536,"say ""hi""",,\r\n';
    const f = parseDevicesFile(csv);
    expect(f.devices).toEqual([
      {
        pool: "p1",
        deviceId: "d-1",
        cpuCores: 2,
        memoryMB: 4096,
        storageMB: 32768,
        name: "Pixel 8, #1",
        labels: { region: "eu", tier: "gold" },
        node: "n1",
      },
      { pool: "p1", deviceId: "d-2", cpuCores: 4, memoryMB: 8192, storageMB: 65536, name: 'say "hi"' },
    ]);
    expect(f.sources).toEqual(["line 2", "line 4"]);
    // The console's short names and label columns.
    expect(parseDevicesFile("id,Pool,cpu,memory,storage,os,label:region\nd-1,p,2,4096,32768,Android 14,eu\n").devices).toEqual([
      { deviceId: "d-1", pool: "p", cpuCores: 2, memoryMB: 4096, storageMB: 32768, osVersion: "Android 14", labels: { region: "eu" } },
    ]);
  });

  it("names every problem of a CSV by its line (and the device), and sends nothing", () => {
    expect(problems(() => parseDevicesFile("deviceId,pool,cpuCores,memoryMB,storageMB,colour\nd,p,1,1,1,red\n"))).toEqual([
      "line 1: unknown column(s): colour",
    ]);
    const rows = [
      "deviceId,pool,cpuCores,memoryMB,storageMB,labels",
      "d-1,p,2,4096,1x,",
      "d-2,p,2,4096,1",
      ",p,2,4096,1,oops",
      "d-2,p,2,4096,1,a=1",
    ].join("\n");
    expect(problems(() => parseDevicesFile(rows))).toEqual([
      "line 2 (d-1): storageMB: a whole number ≥ 1",
      'line 4: labels: "oops" is not key=value',
      "line 4: deviceId is required",
      "line 5 (d-2): deviceId also on line 3",
    ]);
    expect(problems(() => parseDevicesFile("deviceId,pool,cpuCores,memoryMB,storageMB\n"))).toEqual(["no devices in the file"]);
    expect(problems(() => parseDevicesFile(""))[0]).toMatch(/^line 1: no header row/);
  });

  it("reads JSON as an array or {devices}, numbers written as text taken as numbers, other fields passed on", () => {
    const items = [{ deviceId: "d-1", pool: "p", cpuCores: 2, memoryMB: 1, storageMB: 1, labels: { a: "b" } }];
    expect(parseDevicesFile(JSON.stringify(items)).devices).toEqual(items);
    const f = parseDevicesFile(JSON.stringify({ devices: [{ ...items[0], cpuCores: "2", colour: "red" }] }));
    expect(f.devices).toEqual([{ ...items[0], colour: "red" }]);
    expect(f.sources).toEqual(["item 1"]);
    expect(problems(() => parseDevicesFile("{nope"))[0]).toMatch(/^JSON: not JSON/);
    expect(problems(() => parseDevicesFile('{"items": []}'))[0]).toMatch(/expected an array/);
    expect(problems(() => parseDevicesFile(`[${JSON.stringify(items[0])}, 3]`))).toEqual(["item 2: not an object"]);
    expect(problems(() => parseDevicesFile("[]"))).toEqual(["no devices in the file"]);
  });

  it("requests of at most N items and about B bytes", () => {
    // Each item is {"deviceId":"d-N"} (18 bytes) and a comma.
    const items = Array.from({ length: 7 }, (_, i) => ({ deviceId: `d-${i}` }));
    expect(chunkDevices(items, 3, 1e6).map((c) => [c.offset, c.items.length])).toEqual([
      [0, 3],
      [3, 3],
      [6, 1],
    ]);
    expect(chunkDevices(items, 100, 16 + 2 * 19).map((c) => c.items.length)).toEqual([2, 2, 2, 1]);
  });
});

describe("ctl quota --set", () => {
  it("turns key=value into the update: tier, suspended, validUntil and the limits (limits. optional)", () => {
    expect(
      quotaUpdate(["tier=pro", "suspended=false", "validUntil=2027-01-01T00:00:00Z", "maxDevices=3", "limits.maxCpuCores=12"], "quota"),
    ).toEqual({ tier: "pro", suspended: false, validUntil: "2027-01-01T00:00:00Z", limits: { maxDevices: 3, maxCpuCores: 12 } });
    expect(() => quotaUpdate(["tier=gold"], "quota")).toThrow(/tier must be one of/);
    expect(() => quotaUpdate(["maxDevices=1.5"], "quota")).toThrow(/whole number/);
    expect(() => quotaUpdate(["colour=red"], "quota")).toThrow(/unknown quota setting "colour"/);
    expect(() => quotaUpdate(["maxDevices"], "quota")).toThrow(/key=value/);
    expect(() => quotaUpdate(["validUntil=tomorrow"], "quota")).toThrow(/ISO 8601/);
  });
});

describe("ctl: tables", () => {
  it("natural order, money, aligned columns with numbers to the right and - for nothing", () => {
    expect(["d-10", "d-2", "d-1", "c"].sort(naturalCompare)).toEqual(["c", "d-1", "d-2", "d-10"]);
    expect([money(1050, "USD"), money(-5, "USD"), money(0, null)]).toEqual(["10.50 USD", "-0.05 USD", "0.00"]);
    expect(
      table(
        [
          { a: "x", n: 5 },
          { a: "long", n: 100 },
        ],
        [
          { head: "A", get: (r) => r.a },
          { head: "N", get: (r) => r.n },
          { head: "C", get: () => null },
        ],
      ),
    ).toBe(["A       N  C", "x       5  -", "long  100  -"].join("\n"));
  });
});

/** `main` with a fetch that answers from `routes` ("METHOD /path" → [status, body]); what it printed and asked. */
async function run(argv: string[], routes: Record<string, [number, unknown]>, io: Partial<CliIO> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const asked: { method: string; url: string; body: unknown; auth: string | null }[] = [];
  const code = await main({
    argv,
    env: {},
    stdout: (t) => out.push(t),
    stderr: (t) => err.push(t),
    readFile: () => {
      throw new Error("ENOENT: no such file");
    },
    devToken: () => "dev-token",
    fetch: async (url, init) => {
      const u = new URL(url);
      const key = `${init?.method} ${u.pathname}`;
      asked.push({
        method: init!.method!,
        url,
        body: init?.body ? JSON.parse(String(init.body)) : undefined,
        auth: new Headers(init?.headers).get("authorization"),
      });
      const [status, body] = routes[key] ?? [404, { error: { code: "ROUTE_NOT_FOUND", message: `No route ${key}` } }];
      return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
    },
    ...io,
  });
  return { code, out: out.join("\n"), err: err.join("\n"), asked };
}

const poolDevice = (deviceId: string, extra: Record<string, unknown> = {}) => ({
  deviceId,
  node: "n1",
  cpuCores: 2,
  memoryMB: 4096,
  storageMB: 32768,
  status: "available",
  allocationId: null,
  userId: null,
  expiresAt: null,
  name: null,
  model: null,
  osVersion: null,
  labels: {},
  ...extra,
});

describe("ctl: main", () => {
  it("help lists every command with a line; no command is a usage error (exit 2)", async () => {
    const help = await run(["help"], {});
    expect(help.code).toBe(0);
    for (const c of ["devices", "import", "drain", "force-release", "quota", "top-up", "reconcile"])
      expect(help.out).toMatch(new RegExp(`^  ${c} `, "m"));
    expect((await run([], {})).code).toBe(2);
    expect((await run(["drain", "--help"], {})).out).toMatch(/^usage: npm run ctl -- drain <deviceId>/);
    const unknown = await run(["frobnicate"], {});
    expect([unknown.code, unknown.err]).toEqual([2, expect.stringMatching(/unknown command "frobnicate"/)]);
  });

  it("without GET /admin/devices, lists the fleet from the pools' lists, filtered here, in natural order", async () => {
    const r = await run(["devices", "--label", "region=eu", "--json"], {
      "GET /admin/pools": [200, { items: [{ pool: "b" }, { pool: "a" }] }],
      "GET /admin/pools/a/devices": [
        200,
        { items: [poolDevice("d-10", { labels: { region: "eu" } }), poolDevice("d-3")], nextCursor: null },
      ],
      "GET /admin/pools/b/devices": [200, { items: [poolDevice("d-2", { labels: { region: "eu" } })], nextCursor: null }],
    });
    expect(r.code).toBe(0);
    const answer = JSON.parse(r.out);
    expect(answer.source).toBe("pools");
    expect(answer.items.map((d: { deviceId: string; pool: string }) => `${d.pool}/${d.deviceId}`)).toEqual(["b/d-2", "a/d-10"]);
    expect(r.err).toMatch(/no GET \/admin\/devices/);
  });

  it("with GET /admin/devices, follows its pages and passes the filters (label repeated)", async () => {
    let page = 0;
    const r = await run(
      ["list", "--label", "a:1", "--label", "b=2", "--status", "available", "--json"],
      {},
      {
        fetch: async (url) => {
          const u = new URL(url);
          expect(u.pathname).toBe("/admin/devices");
          expect(u.searchParams.getAll("label")).toEqual(["a:1", "b:2"]);
          expect(u.searchParams.get("status")).toBe("available");
          page++;
          const body =
            page === 1
              ? { items: [{ ...poolDevice("d-1"), pool: "p" }], nextCursor: "c1" }
              : { items: [{ ...poolDevice("d-2"), pool: "p" }], nextCursor: null };
          if (page === 2) expect(u.searchParams.get("cursor")).toBe("c1");
          return new Response(JSON.stringify(body), { status: 200 });
        },
      },
    );
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ source: "fleet", items: [{ deviceId: "d-1" }, { deviceId: "d-2" }] });
  });

  it("an API error: CODE: message and its issues on stderr, exit 1; as {error} under --json", async () => {
    const refused: Record<string, [number, unknown]> = {
      "POST /admin/devices/d-1/maintenance": [
        400,
        {
          error: {
            code: "VALIDATION_FAILED",
            message: "Invalid body",
            details: { issues: [{ path: "", message: 'Unrecognized key: "drain"' }] },
          },
        },
      ],
    };
    const r = await run(["drain", "d-1"], refused);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /^VALIDATION_FAILED: Invalid body\n {2}\(body\): Unrecognized key: "drain"\nhint: this server does not take \{drain/,
    );
    const j = await run(["drain", "d-1", "--json"], refused);
    expect(JSON.parse(j.err)).toMatchObject({ error: { status: 400, code: "VALIDATION_FAILED" } });
    expect(j.out).toBe("");
    const gone = await run(["device", "nope"], {
      "GET /admin/devices/nope": [404, { error: { code: "DEVICE_NOT_FOUND", message: "No such device." } }],
    });
    expect([gone.code, gone.err]).toEqual([1, "DEVICE_NOT_FOUND: No such device."]);
  });

  it("the token: --token, then EDA_TOKEN, then (local only) the dev token; none is exit 2", async () => {
    const routes: Record<string, [number, unknown]> = { "GET /admin/pools": [200, { items: [] }] };
    expect((await run(["pools", "--token", "t1"], routes, { env: { EDA_TOKEN: "t2" } })).asked[0]!.auth).toBe("Bearer t1");
    expect((await run(["pools"], routes, { env: { EDA_TOKEN: "t2" } })).asked[0]!.auth).toBe("Bearer t2");
    expect((await run(["pools"], routes)).asked[0]!.auth).toBe("Bearer dev-token");
    const remote = await run(["pools", "--base-url", "https://eda.example.com"], routes);
    expect([remote.code, remote.err]).toEqual([2, expect.stringMatching(/no token/)]);
    expect((await run(["pools"], routes, { env: { EDA_BASE_URL: "http://127.0.0.1:9999/" } })).asked[0]!.url).toBe(
      "http://127.0.0.1:9999/admin/pools",
    );
  });

  it("top-up makes up a payment id and says it first; a decimal amount is refused before anything is sent", async () => {
    const credited = { userId: "alice", paymentId: "x", amountMinor: 1050, balanceMinor: 2050, currency: "USD", duplicate: false };
    const r = await run(
      ["top-up", "alice", "1050"],
      { "POST /billing/users/alice/top-ups": [201, credited] },
      { now: () => Date.UTC(2026, 0, 31, 9, 30) },
    );
    expect(r.code).toBe(0);
    expect(r.asked[0]!.body).toMatchObject({ amountMinor: 1050, paymentId: expect.stringMatching(/^ctl-20260131T093000Z-[0-9a-f]{6}$/) });
    expect(r.err).toMatch(/--payment-id ctl-20260131T093000Z-/);
    expect(r.out).toBe("credited 10.50 USD to alice (payment x); balance 20.50 USD");
    const decimal = await run(["top-up", "alice", "10.50"], {});
    expect([decimal.code, decimal.asked.length, decimal.err]).toEqual([2, 0, expect.stringMatching(/10\.50 is 1050/)]);
  });

  it("import: a file that cannot be read is exit 2; a bad file exit 1 with nothing sent", async () => {
    expect((await run(["import", "missing.csv"], {})).code).toBe(2);
    const bad = await run(["import", "a.csv"], {}, { readFile: () => "deviceId,pool,colour\nd,p,red\n" });
    expect([bad.code, bad.asked.length, bad.err]).toEqual([1, 0, expect.stringMatching(/nothing was sent:\n {2}line 1: unknown column/)]);
  });

  it("import: per-item results and a summary; exit 1 when an item failed; a 400 named by the file's lines", async () => {
    const csv = "deviceId,pool,cpuCores,memoryMB,storageMB\nd-1,p,2,4096,32768\nd-2,p,2,4096,32768\n";
    const results = {
      results: [
        { index: 0, deviceId: "d-1", ok: true, status: 201, outcome: "created", changed: [] },
        { index: 1, deviceId: "d-2", ok: false, status: 409, error: { code: "DEVICE_BUSY", message: "The device is allocated." } },
      ],
      created: 1,
      updated: 0,
      unchanged: 0,
      failed: 1,
    };
    const r = await run(["import", "f.csv"], { "POST /admin/devices/bulk": [200, results] }, { readFile: () => csv });
    expect(r.code).toBe(1);
    expect(r.asked[0]!.body).toEqual({
      devices: [
        { deviceId: "d-1", pool: "p", cpuCores: 2, memoryMB: 4096, storageMB: 32768 },
        { deviceId: "d-2", pool: "p", cpuCores: 2, memoryMB: 4096, storageMB: 32768 },
      ],
    });
    expect(r.out).toMatch(/^line 2 +d-1 +created/m);
    expect(r.out).toMatch(/^line 3 +d-2 +FAILED +409 DEVICE_BUSY: The device is allocated\.$/m);
    expect(r.out).toMatch(/2 device\(s\): 1 created, 0 updated, 0 unchanged, 1 failed$/);
    const invalid = {
      error: { code: "VALIDATION_FAILED", message: "Invalid body", details: { issues: [{ path: "devices.1.pool", message: "Invalid" }] } },
    };
    const v = await run(["import", "f.csv"], { "POST /admin/devices/bulk": [400, invalid] }, { readFile: () => csv });
    expect(v.code).toBe(1);
    expect(v.err).toMatch(/line 3 \(d-2\): pool: Invalid/);
  });
});
