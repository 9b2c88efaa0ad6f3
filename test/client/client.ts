/**
 * A client written from the OpenAPI document alone (issue 18): openapi-fetch over the types that
 * openapi-typescript generates from the document (test-results/client/api.d.ts, written by
 * generated-client.test.ts). It imports nothing of the service's own code, and no Node or Workers
 * types (test/client/tsconfig.json): what it may read of an answer is what the document says.
 *
 * generated-client.test.ts type-checks this file with `tsc --strict` and then runs it, as it is,
 * against `npm run dev`. Every field it reads is read in `read` below, each through a helper that
 * names the type it must have, so a field that disappears, changes type or turns `unknown` in the
 * document fails the type-check there.
 */
import createClient from "openapi-fetch";
import type { paths } from "../../test-results/client/api";

/** The answer of one operation, as the generated types give it. */
type Json<P extends keyof paths, M extends keyof paths[P]> = paths[P][M] extends { responses: infer R }
  ? R extends { 200: { content: { "application/json": infer T } } }
    ? T
    : R extends { 201: { content: { "application/json": infer T } } }
      ? T
      : never
  : never;

type Allocated = Json<"/scheduler/devices/allocate", "post">;
type Listed = Json<"/scheduler/allocations", "get">;
type Extended = Json<"/scheduler/allocations/{id}/extend", "put">;
type Released = Json<"/scheduler/devices/release", "post">;
type Balance = Json<"/billing/users/{userId}/balance", "get">;
type Usage = Json<"/metering/users/{userId}", "get">;
type Plans = Json<"/billing/pricing-plans", "get">;

const text = (v: string) => v;
const count = (v: number) => v;
const flag = (v: boolean) => v;
/** An ISO 8601 time that may be unset. */
const timeOrNull = (v: string | null) => v;

/**
 * Every field this client reads, in one place: a renamed field of the document is an edit here.
 * (Issue 18 renames some: times become ISO 8601 strings, money fields get a unit suffix,
 * `balance` → `balanceMinor`, a pricing plan's `planId` → `pricingPlanId`.)
 */
const read = {
  allocated: (a: Allocated) => ({
    allocationId: text(a.allocationId),
    deviceId: text(a.deviceId),
    expiresAt: text(a.expiresAt),
    durationMinutes: count(a.durationMinutes),
  }),
  listed: (l: Listed) =>
    l.items.map((a) => ({ allocationId: text(a.allocationId), status: text(a.status), expiresAt: timeOrNull(a.expiresAt) })),
  extended: (e: Extended) => ({
    expiresAt: text(e.expiresAt),
    extendCount: count(e.extendCount),
    extendedMinutes: count(e.extendedMinutes),
  }),
  released: (r: Released) => ({ allocationId: text(r.allocationId), reason: text(r.reason), durationSeconds: count(r.durationSeconds) }),
  balance: (b: Balance) => ({
    balanceMinor: count(b.balanceMinor),
    currency: text(b.currency),
    pricingPlanId: text(b.pricingPlanId),
    hasBalance: flag(b.hasBalance),
  }),
  usage: (u: Usage) => ({
    currency: text(u.currency),
    items: u.items.map((i) => ({
      allocationId: text(i.allocationId),
      chargeMinor: count(i.chargeMinor ?? 0),
      currency: text(i.currency),
      releasedAt: text(i.releasedAt),
    })),
  }),
  plans: (p: Plans) => p.items.map((i) => ({ pricingPlanId: text(i.pricingPlanId), currency: text(i.currency) })),
};
// Every answer this client reads is closed in the document (no `{ [key: string]: unknown }`).
type Open<T> = string extends keyof T ? true : false;
export const stillOpen: [usage: Open<Usage>, plans: Open<Plans>] = [false, false];

/** An answer's data, or an error naming the status and the error body. */
function must<T>(r: { data?: T; error?: unknown; response: Response }, what: string): T {
  if (r.data === undefined) throw new Error(`${what}: ${r.response.status} ${JSON.stringify(r.error)}`);
  return r.data;
}

/**
 * Signs in as `userId` (a bearer token on every call), allocates a device of `pool`, lists the
 * active allocations, extends, releases, waits for the usage record, reads the balance before and
 * after and the pricing plans. Returns what it read.
 */
export async function runClient(baseUrl: string, token: string, userId: string, pool = "default") {
  const api = createClient<paths>({ baseUrl, headers: { authorization: `Bearer ${token}` } });
  const user = { params: { path: { userId } } };

  const before = read.balance(must(await api.GET("/billing/users/{userId}/balance", user), "balance"));
  // The generated type requires durationMinutes: the document gives it a default (60).
  const allocatedAnswer = must(await api.POST("/scheduler/devices/allocate", { body: { pool, durationMinutes: 30 } }), "allocate");
  // @ts-expect-error -- no such field: the answer is typed, not `any` (with `any` this directive fails).
  void allocatedAnswer.allocationID;
  const allocated = read.allocated(allocatedAnswer);
  const active = { params: { query: { status: "active" as const } } };
  const listed = read.listed(must(await api.GET("/scheduler/allocations", active), "list"));
  const id = { params: { path: { id: allocated.allocationId } } };
  const extended = read.extended(
    must(await api.PUT("/scheduler/allocations/{id}/extend", { ...id, body: { additionalMinutes: 15 } }), "extend"),
  );
  const released = read.released(must(await api.POST("/scheduler/devices/release", { body: { deviceId: allocated.deviceId } }), "release"));
  const listedAfter = read.listed(must(await api.GET("/scheduler/allocations", active), "list"));

  // The usage record is written after the release (through a queue): wait for it, up to 30 s.
  let usage = read.usage(must(await api.GET("/metering/users/{userId}", user), "usage"));
  for (let i = 0; i < 60 && !usage.items.some((u) => u.allocationId === allocated.allocationId); i++) {
    await new Promise((r) => setTimeout(r, 500));
    usage = read.usage(must(await api.GET("/metering/users/{userId}", user), "usage"));
  }
  const after = read.balance(must(await api.GET("/billing/users/{userId}/balance", user), "balance"));
  const plans = read.plans(must(await api.GET("/billing/pricing-plans"), "pricing plans"));
  return { before, allocated, listed, extended, released, listedAfter, usage, after, plans };
}
