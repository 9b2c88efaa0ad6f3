/**
 * Invariant 6 ("No event of one user ever reaches another user's socket") and the feed's
 * resume promise ("reconnect with your last seq and get exactly what you missed, once, in
 * order, then live"), attacked through the real Worker, tickets and objects:
 *
 * - many users at once, each with several raw sockets and typed clients on their own feed and
 *   device-feed sockets on the devices they hold, while devices pass between them, allocations
 *   are extended, released, force-released and expire, admins change and renew quotas, a
 *   payment service tops balances up and the app service reports app events in batches that
 *   name two users; every socket's frames are compared with its own user's log;
 * - hostile tickets (tampered, re-signed, reused, expired, for another feed, a bearer token),
 *   junk `since`, too many sockets;
 * - resume across a plain disconnect, hibernation (evictDurableObject), a restart of every
 *   object (abortAllDurableObjects), a log that pruned what the client asks for, a client
 *   ahead of the log, and sockets joining at every point of a fast stream of events.
 */
import { env } from "cloudflare:workers";
import { sign } from "hono/jwt";
import { abortAllDurableObjects, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { FEED } from "../src/config";
import { mintTicket } from "../src/feed/tickets";
import type { Envelope, FeedEvent, HelloData } from "../src/feed/protocol";
import type { FeedClient } from "../src/client/feed-client";
import { userOfAllocationId } from "../src/ids";
import { SERVICE_TOKEN, admin, call, registerDevice, sleep, tokenFor, uid, until } from "./helpers";
import { connectInWorkerd, feedClient, rawFeed, ticket, type RawFeed } from "./feed-helpers";

// ---- helpers ---------------------------------------------------------------------------------

interface Log {
  events: Envelope[];
  oldestSeq: number | null;
  lastSeq: number;
}

/** The user's whole log (GET /scheduler/events, paged), read with the user's own token. */
async function logOf(token: string): Promise<Log> {
  const events: Envelope[] = [];
  let since = 0;
  for (;;) {
    const r = await call("GET", `/scheduler/events?since=${since}&limit=200`, { token });
    if (r.status !== 200) throw new Error(`events: ${r.status} ${JSON.stringify(r.body)}`);
    events.push(...(r.body.events as Envelope[]));
    if (r.body.events.length < 200) return { events, oldestSeq: r.body.oldestSeq, lastSeq: r.body.lastSeq };
    since = r.body.events[r.body.events.length - 1].seq;
  }
}

async function lastSeqOf(token: string): Promise<number> {
  const r = await call("GET", "/scheduler/events?since=999999999&limit=1", { token });
  return r.body.lastSeq as number;
}

const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
const logged = (frames: Envelope[]) => frames.filter((f) => f.seq !== null);
const lastOf = (frames: Envelope[]) => logged(frames).at(-1)?.seq ?? 0;
const wsPath = async (token: string, since?: number | string) =>
  `/ws?ticket=${encodeURIComponent(await ticket(token))}${since === undefined ? "" : `&since=${since}`}`;

/** A typed client that also records every raw frame of every connection it opens. */
interface Tapped {
  client: FeedClient;
  /** Frames per connection, as the server sent them (before the client's own dedup). */
  conns: Envelope[][];
  /** What the client handed to onEvent. */
  seen: FeedEvent[];
}
function tappedClient(token: string, since?: number): Tapped {
  const conns: Envelope[][] = [];
  const seen: FeedEvent[] = [];
  const client = feedClient(token, {
    since,
    connect: async (url) => {
      const s = await connectInWorkerd(url);
      const frames: Envelope[] = [];
      conns.push(frames);
      s.addEventListener("message", (ev: { data: unknown }) => {
        if (typeof ev.data === "string" && ev.data !== "pong") frames.push(JSON.parse(ev.data) as Envelope);
      });
      return s;
    },
  });
  client.onEvent((e) => seen.push(e));
  return { client, conns, seen };
}

/**
 * One connection's frames against the user's log: the first frame is the hello, every frame
 * names the user, the events are exactly (hello.since, through] in order, each identical to
 * the logged one.
 */
function checkConnection(label: string, user: string, frames: Envelope[], log: Map<number, Envelope>, through: number): HelloData {
  expect(frames.length, `${label}: no frames`).toBeGreaterThan(0);
  for (const f of frames) expect(f.userId, `${label}: frame ${f.type}#${f.seq} of another user`).toBe(user);
  expect(frames[0]!.type, label).toBe("feed.hello");
  expect(frames[0]!.seq, label).toBeNull();
  const hello = frames[0]!.data as HelloData;
  expect(
    frames.slice(1).filter((f) => f.seq === null),
    `${label}: unexpected control frames`,
  ).toEqual([]);
  const evs = logged(frames);
  expect(
    evs.map((e) => e.seq),
    `${label}: seqs`,
  ).toEqual(range(hello.since + 1, through));
  for (const e of evs) expect(e, `${label}: event #${e.seq} differs from the log`).toEqual(log.get(e.seq!));
  return hello;
}

/** A user's log holds only that user's events, about that user's allocations and payments. */
function checkLogIsOwn(user: string, log: Log): void {
  expect(
    log.events.map((e) => e.seq),
    `${user}: log seqs`,
  ).toEqual(range(1, log.lastSeq));
  for (const e of log.events) {
    expect(e.userId, `${user}: log event #${e.seq}`).toBe(user);
    const d = e.data as { allocationId?: string; paymentId?: string; userId?: string };
    if (d.userId !== undefined) expect(d.userId, `${user}: #${e.seq} ${e.type} data.userId`).toBe(user);
    if (d.allocationId) expect(userOfAllocationId(d.allocationId), `${user}: #${e.seq} ${e.type} names ${d.allocationId}`).toBe(user);
    if (d.paymentId) expect(d.paymentId.startsWith(`pay-${user}-`), `${user}: #${e.seq} payment ${d.paymentId}`).toBe(true);
  }
}

const byType = (log: Log, type: string) => log.events.filter((e) => e.type === type);

function b64urlJson(part: string): Record<string, unknown> {
  return JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/"))) as Record<string, unknown>;
}
function toB64url(o: unknown): string {
  return btoa(JSON.stringify(o)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The device feed, with a device ticket of `token`'s user. */
async function deviceFeed(token: string, deviceId: string, since?: number): Promise<RawFeed> {
  const t = await ticket(token, { feed: "device", deviceId });
  return rawFeed(`/ws/devices/${deviceId}?ticket=${encodeURIComponent(t)}${since === undefined ? "" : `&since=${since}`}`);
}

/** Opens a socket that the server must refuse; returns the close code and the error frame. */
async function refused(path: string): Promise<{ code: number; error: Envelope | undefined; frames: Envelope[] }> {
  const f = await rawFeed(path);
  // A socket that was wrongly accepted stays open: report it (code -1) instead of hanging.
  const closed = await Promise.race([f.closed, sleep(5_000).then(() => null)]);
  if (!closed) f.ws.close(1000);
  return { code: closed?.code ?? -1, error: f.frames.find((x) => x.type === "feed.error"), frames: f.frames };
}

// ---- invariant 6 under load --------------------------------------------------------------------
// Every test has its own users, devices and sockets: the three groups below run side by side. The
// restart test aborts every object (every socket drops), so it runs alone, at the end.

describe.concurrent("invariant 6: no event of one user reaches another user's socket", () => {
  it(
    "40 users with user-feed sockets (raw and typed) and device-feed sockets while devices pass between them: " +
      "every socket gets only its own user's events, each once, in order",
    async ({ expect }) => {
      const USERS = 40;
      const pool = uid("shared");
      // Fewer devices than users: every device is held by several users in turn.
      const devices = await Promise.all(Array.from({ length: 10 }, (_, i) => registerDevice(pool, { node: `n${i % 3}` })));
      const adminToken = await admin();
      const users = Array.from({ length: USERS }, () => uid("iso"));
      const tokens = await Promise.all(users.map((u) => tokenFor(u)));

      // The admin's own user feed: the admin acts on every user, but none of it is the admin's.
      const adminUser = "root-admin";
      const adminBefore = await lastSeqOf(adminToken);
      const adminSock = await rawFeed(await wsPath(adminToken, adminBefore));

      // Sockets opened before anything happens: a raw one and a typed client from seq 0.
      const raws: RawFeed[][] = users.map(() => []);
      const typed: Tapped[] = [];
      await Promise.all(
        users.map(async (_, i) => {
          raws[i]!.push(await rawFeed(await wsPath(tokens[i]!, 0)));
          const t = tappedClient(tokens[i]!, 0);
          typed[i] = t;
          await t.client.start();
        }),
      );

      const holders = new Map<string, Set<string>>();
      const stats = {
        allocated: 0,
        extended: 0,
        released: 0,
        forced: 0,
        expired: 0,
        refusedBusy: 0,
        topUps: 0,
        quotaUpdates: 0,
        renewals: 0,
        drops: 0,
        forgedRefused: 0,
        deviceRefused: 0,
        appEvents: 0,
      };
      const devSocks: Array<{ i: number; allocationId: string; sock: RawFeed }> = [];
      const expect201 = (r: { status: number; body: unknown }, what: string) => {
        if (r.status !== 200 && r.status !== 201) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
      };

      const allocate = async (i: number, body: Record<string, unknown>) => {
        for (let attempt = 0; attempt < 200; attempt++) {
          const r = await call("POST", "/scheduler/devices/allocate", { token: tokens[i]!, body: { pool, ...body } });
          if (r.status === 201) {
            stats.allocated++;
            const set = holders.get(r.body.deviceId) ?? new Set<string>();
            set.add(users[i]!);
            holders.set(r.body.deviceId, set);
            return r.body as { allocationId: string; deviceId: string };
          }
          if (r.status !== 409 || r.body.error.code !== "NO_DEVICE_AVAILABLE")
            throw new Error(`allocate: ${r.status} ${JSON.stringify(r.body)}`);
          stats.refusedBusy++;
          await sleep(20 + ((i * 7 + attempt * 13) % 40));
        }
        throw new Error("no device for 200 attempts");
      };
      const release = async (i: number, deviceId: string) => {
        const r = await call("POST", "/scheduler/devices/release", { token: tokens[i]!, body: { deviceId } });
        expect201(r, "release");
        stats.released++;
      };
      const topUp = async (i: number, n: number) => {
        const r = await call("POST", `/billing/users/${users[i]}/top-ups?create=true`, {
          service: SERVICE_TOKEN,
          body: { amountMinor: 100 + i, paymentId: `pay-${users[i]}-${n}` },
        });
        expect201(r, "top-up");
        stats.topUps++;
      };

      // App events from the app service, in batches that name two users: each goes to its own user only.
      // Every batch is sent twice (a retry): the second send changes nothing.
      const sendAppEvents = async (i: number, n: number) => {
        const next = (i + 1) % USERS;
        const at = new Date().toISOString();
        const events =
          n === 1
            ? [
                {
                  type: "app.installed",
                  eventId: `ev-${users[i]}-1`,
                  data: {
                    userId: users[i],
                    appId: `app-${i}`,
                    appName: "Maps",
                    deviceId: `dev-${i}`,
                    version: "1.0.0",
                    installedAt: at,
                  },
                },
                {
                  type: "app.updated",
                  eventId: `ev-${users[next]}-u`,
                  data: {
                    userId: users[next],
                    appId: `app-${next}`,
                    appName: "Chat",
                    deviceId: `dev-${next}`,
                    oldVersion: "1",
                    newVersion: "2",
                    updatedAt: at,
                  },
                },
              ]
            : [
                {
                  type: "app.install_failed",
                  eventId: `ev-${users[i]}-2`,
                  data: {
                    userId: users[i],
                    appId: `app-${i}`,
                    appName: "Game",
                    deviceId: `dev-${i}`,
                    reason: "no space",
                    failedAt: at,
                  },
                },
              ];
        for (const attempt of [0, 1]) {
          const r = await call("POST", "/api/internal/events", { service: SERVICE_TOKEN, body: { events } });
          if (r.status !== 202) throw new Error(`app events: ${r.status} ${JSON.stringify(r.body)}`);
          expect(r.body, `app events attempt ${attempt}`).toMatchObject(
            attempt === 0 ? { accepted: events.length, duplicates: 0, failed: 0 } : { accepted: 0, duplicates: events.length, failed: 0 },
          );
          stats.appEvents += attempt === 0 ? events.length : 0;
        }
      };

      const script = async (i: number) => {
        const u = users[i]!;
        expect201(await call("PUT", `/quotas/user/${u}?create=true`, { token: adminToken, body: { tier: "enterprise" } }), "tier");
        stats.quotaUpdates++;
        await topUp(i, 1);
        const a = await allocate(i, { durationMinutes: 5 });
        // The holder watches the device; since=0 replays the device's log, which holds earlier holders' events.
        const da = await deviceFeed(tokens[i]!, a.deviceId, 0);
        devSocks.push({ i, allocationId: a.allocationId, sock: da });
        await sendAppEvents(i, 1);
        expect201(
          await call("PUT", `/scheduler/allocations/${a.allocationId}/extend`, {
            token: tokens[i]!,
            body: { additionalMinutes: 1 },
          }),
          "extend",
        );
        stats.extended++;
        expect201(
          await call("POST", `/quotas/renew/${u}?create=true`, { token: adminToken, body: { extensionDays: 1 + (i % 3) } }),
          "renew",
        );
        stats.renewals++;
        await release(i, a.deviceId);
        // The device feed closes for its former holder, who can no longer open it.
        await Promise.race([da.closed, sleep(10_000)]);
        const after = await refused(
          `/ws/devices/${a.deviceId}?ticket=` +
            `${encodeURIComponent(await ticket(tokens[i]!, { feed: "device", deviceId: a.deviceId }))}&since=0`,
        );
        expect(after.code, `${u}: device feed after release`).toBe(4403);
        stats.deviceRefused++;
        // Meanwhile, a forged ticket naming the next user (the subject swapped, the signature kept) is refused.
        const [h, pl, sig] = (await ticket(tokens[i]!)).split(".") as [string, string, string];
        const forged = await refused(`/ws?ticket=${h}.${toB64url({ ...b64urlJson(pl), sub: users[(i + 1) % USERS] })}.${sig}&since=0`);
        expect(forged.code, `${u}: forged ticket for the next user`).toBe(4401);
        stats.forgedRefused++;
        if (i % 5 === 0) {
          // A network drop in the middle of it all: the typed client resumes by itself.
          typed[i]!.client.drop();
          stats.drops++;
        }
        if (i % 2 === 0) {
          // A socket that joins late, from seq 1 or live from now.
          raws[i]!.push(await rawFeed(await wsPath(tokens[i]!, i % 4 === 0 ? 1 : undefined)));
        }
        const short = i % 4 === 0;
        const b = await allocate(i, short ? { durationSeconds: 2 } : { durationMinutes: 5 });
        if (!short) devSocks.push({ i, allocationId: b.allocationId, sock: await deviceFeed(tokens[i]!, b.deviceId, 0) });
        await sendAppEvents(i, 2);
        expect201(
          await call("PUT", `/quotas/user/${u}?create=true`, { token: adminToken, body: { limits: { maxDevices: 4 + (i % 3) } } }),
          "limits",
        );
        stats.quotaUpdates++;
        await topUp(i, 2);
        if (short) {
          // Ended by the device's alarm.
          await until(
            async () =>
              byType(await logOf(tokens[i]!), "device.released").some(
                (e) => (e.data as { allocationId: string }).allocationId === b.allocationId,
              ),
            15_000,
            100,
          );
          stats.expired++;
        } else if (i % 4 === 1) {
          expect201(await call("POST", `/admin/devices/${b.deviceId}/force-release`, { token: adminToken }), "force-release");
          stats.forced++;
        } else {
          await release(i, b.deviceId);
        }
        const c = await allocate(i, { durationMinutes: 2 });
        await release(i, c.deviceId);
      };
      await Promise.all(users.map((_, i) => script(i)));

      // Settle: wait until every socket has its user's whole log and the logs stop growing
      // (billing events arrive through the queue a little later).
      let logs: Log[] = [];
      let previous = "";
      await until(
        async () => {
          logs = await Promise.all(tokens.map((t) => logOf(t)));
          const caughtUp = users.every(
            (_, i) => raws[i]!.every((r) => lastOf(r.frames) === logs[i]!.lastSeq) && typed[i]!.client.lastSeq === logs[i]!.lastSeq,
          );
          const shape = logs.map((l) => l.lastSeq).join(",");
          const stable = caughtUp && shape === previous;
          previous = caughtUp ? shape : "";
          return stable;
        },
        60_000,
        300,
      );
      await sleep(300); // anything extra (a duplicate, a stray event) would arrive now

      let framesChecked = 0;
      let eventsChecked = 0;
      for (let i = 0; i < USERS; i++) {
        const u = users[i]!;
        const log = logs[i]!;
        checkLogIsOwn(u, log);
        const bySeq = new Map(log.events.map((e) => [e.seq!, e]));
        // What the user did is all there.
        expect(byType(log, "billing.payment_success"), u).toHaveLength(2);
        expect(byType(log, "quota.updated"), u).toHaveLength(2);
        expect(byType(log, "quota.renewed"), u).toHaveLength(1);
        expect(byType(log, "device.allocated"), u).toHaveLength(3);
        expect(byType(log, "device.extended"), u).toHaveLength(1);
        expect(byType(log, "device.released"), u).toHaveLength(3);
        for (const type of ["app.installed", "app.updated", "app.install_failed"])
          expect(byType(log, type), `${u} ${type}`).toHaveLength(1);
        raws[i]!.forEach((r, k) => {
          const hello = checkConnection(`${u} raw#${k}`, u, r.frames, bySeq, log.lastSeq);
          if (k === 0) expect(hello.since).toBe(0);
          framesChecked += r.frames.length;
          eventsChecked += logged(r.frames).length;
        });
        const t = typed[i]!;
        expect(
          t.seen.map((e) => e.seq),
          `${u} typed: delivered`,
        ).toEqual(range(1, log.lastSeq));
        for (const e of t.seen) expect(e, `${u} typed #${e.seq}`).toEqual(bySeq.get(e.seq));
        // Per connection, as sent by the server: gapless from its hello; across connections no repeat.
        t.conns.forEach((frames, k) => {
          const through = k === t.conns.length - 1 ? log.lastSeq : lastOf(frames);
          checkConnection(`${u} typed conn#${k}`, u, frames, bySeq, through);
          framesChecked += frames.length;
        });
        const sent = t.conns.flatMap((c) => logged(c).map((e) => e.seq!));
        expect(sent, `${u} typed: the server sent an event twice`).toEqual(range(1, log.lastSeq));
        if (i % 5 === 0) expect(t.conns.length, `${u}: the drop reconnected`).toBeGreaterThanOrEqual(2);
        eventsChecked += t.seen.length;
      }
      // Device feeds: the device's log holds every holder's events; each holder saw only their own,
      // once, in order, ending with their release and a clean close.
      let deviceEvents = 0;
      for (const { i, allocationId, sock } of devSocks) {
        const u = users[i]!;
        const label = `${u} device feed of ${allocationId}`;
        expect(sock.closeInfo, label).toEqual({ code: 1000, reason: "allocation ended" });
        for (const f of sock.frames) expect(f.userId, `${label}: ${f.type}#${f.seq}`).toBe(u);
        const hello = sock.frames[0]!;
        expect(hello.type, label).toBe("feed.hello");
        expect((hello.data as { state: { allocation: { userId: string; allocationId: string } } }).state.allocation, label).toMatchObject({
          userId: u,
          allocationId,
        });
        const evs = logged(sock.frames);
        const seqs = evs.map((e) => e.seq!);
        expect(seqs, `${label}: ascending, once`).toEqual([...new Set(seqs)].sort((x, y) => x - y));
        for (const e of evs) {
          const id =
            (e.data as { allocationId?: string; endedAllocationId?: string | null }).allocationId ??
            (e.data as { endedAllocationId?: string | null }).endedAllocationId;
          if (id) expect(userOfAllocationId(id), `${label}: #${e.seq} ${e.type} names ${id}`).toBe(u);
        }
        const mine = evs.filter((e) => (e.data as { allocationId?: string }).allocationId === allocationId).map((e) => e.type);
        expect(mine[0], label).toBe("device.allocated");
        expect(mine.at(-1), label).toBe("device.released");
        deviceEvents += evs.length;
        framesChecked += sock.frames.length;
      }
      eventsChecked += deviceEvents;
      // The admin's own feed got none of it.
      await sleep(100);
      expect(logged(adminSock.frames), "admin's own user feed").toEqual([]);
      for (const f of adminSock.frames) expect(f.userId).toBe(adminUser);
      // Devices really passed between users.
      const shared = [...holders.values()].filter((s) => s.size >= 2).length;
      expect(shared, "devices held by two or more users").toBeGreaterThanOrEqual(devices.length / 2);

      const sockets = raws.flat().length + typed.length + devSocks.length + 1;
      console.log(
        JSON.stringify({
          test: "invariant6-storm",
          users: USERS,
          sockets,
          deviceSockets: devSocks.length,
          deviceEvents,
          typedReconnects: typed.reduce((n, t) => n + t.conns.length - 1, 0),
          logEvents: logs.reduce((n, l) => n + l.lastSeq, 0),
          framesChecked,
          eventsChecked,
          devices: devices.length,
          devicesShared: shared,
          ...stats,
        }),
      );

      for (const r of raws.flat()) r.ws.close(1000);
      for (const t of typed) t.client.close();
      adminSock.ws.close(1000);
    },
    180_000,
  );

  it(
    "hostile tickets: tampered, re-signed, reused, expired, for another feed or a bearer token never open a feed (4401); " +
      "junk since is 4400",
    async ({ expect }) => {
      const victim = uid("victim");
      const attacker = uid("attacker");
      const vToken = await tokenFor(victim);
      const aToken = await tokenFor(attacker);
      const adminToken = await admin();
      // The victim has events worth stealing, and a live socket of their own.
      const vSock = await rawFeed(await wsPath(vToken, 0));
      for (let k = 0; k < 3; k++)
        expect((await call("POST", `/quotas/renew/${victim}?create=true`, { token: adminToken, body: { extensionDays: 1 } })).status).toBe(
          200,
        );
      await until(async () => lastOf(vSock.frames) === 3);

      const attempts: Array<{ what: string; path: string; code: number; errorCode?: string }> = [];
      const expectRefused = async (what: string, path: string, code: number, errorCode?: string) => {
        const r = await refused(path);
        attempts.push({ what, path, code, errorCode });
        expect(r.code, what).toBe(code);
        if (errorCode) expect(r.error?.data, what).toMatchObject({ code: errorCode });
        // A refused socket gets nothing but the error frame.
        expect(logged(r.frames), what).toEqual([]);
        for (const f of r.frames) expect(f.userId, what).toBe("");
      };

      // The attacker's own ticket opens only the attacker's (empty) feed, whatever they add.
      const own = await rawFeed(await wsPath(aToken, 0));
      await until(async () => own.frames.length > 0);
      expect(own.frames[0]).toMatchObject({ type: "feed.hello", userId: attacker, seq: null });
      await expectRefused("extra query (userId=victim)", `${await wsPath(aToken, 0)}&userId=${victim}`, 4400, "VALIDATION_FAILED");

      // A ticket's subject decides; tampering with it breaks the signature.
      const t = await ticket(aToken);
      const [h, p, s] = t.split(".") as [string, string, string];
      const claims = b64urlJson(p);
      expect(claims.sub).toBe(attacker);
      await expectRefused(
        "payload sub → victim",
        `/ws?ticket=${h}.${toB64url({ ...claims, sub: victim })}.${s}&since=0`,
        4401,
        "TICKET_INVALID",
      );
      await expectRefused(
        "payload scope/role → admin",
        `/ws?ticket=${h}.${toB64url({ ...claims, role: "admin" })}.${s}&since=0`,
        4401,
        "TICKET_INVALID",
      );
      await expectRefused(
        "alg none",
        `/ws?ticket=${toB64url({ alg: "none", typ: "JWT" })}.${toB64url({ ...claims, sub: victim })}.&since=0`,
        4401,
        "TICKET_INVALID",
      );
      await expectRefused(
        "signature of another ticket",
        `/ws?ticket=${h}.${toB64url({ ...claims, sub: victim })}.${(await ticket(vToken)).split(".")[2]}&since=0`,
        4401,
        "TICKET_INVALID",
      );
      // Signed with the bearer secret (what a leaked or forged bearer token would be), or a bearer token itself.
      const forged = await sign({ ...claims, sub: victim }, env.JWT_SECRET, "HS256");
      await expectRefused("re-signed with the bearer secret", `/ws?ticket=${forged}&since=0`, 4401, "TICKET_INVALID");
      await expectRefused("victim's bearer token as ticket", `/ws?ticket=${vToken}&since=0`, 4401, "TICKET_INVALID");
      await expectRefused("no ticket", "/ws?since=0", 4401, "TICKET_INVALID");
      await expectRefused("garbage ticket", "/ws?ticket=abc.def.ghi", 4401, "TICKET_INVALID");
      // The untampered ticket still works once (the tampered copies did not burn it), then never again.
      const good = await rawFeed(`/ws?ticket=${encodeURIComponent(t)}&since=0`);
      await until(async () => good.frames.length > 0);
      expect(good.frames[0]).toMatchObject({ type: "feed.hello", userId: attacker });
      await expectRefused("reuse while the first socket is open", `/ws?ticket=${encodeURIComponent(t)}&since=0`, 4401, "TICKET_USED");
      good.ws.close(1000);
      await good.closed;
      await expectRefused("reuse after the first socket closed", `/ws?ticket=${encodeURIComponent(t)}`, 4401, "TICKET_USED");
      // Two connections racing with one ticket: exactly one opens.
      const twice = await ticket(vToken);
      const both = await Promise.all([0, 1].map(() => rawFeed(`/ws?ticket=${encodeURIComponent(twice)}&since=3`)));
      await until(async () => both.every((b) => b.frames.length > 0));
      const winners = both.filter((b) => b.frames[0]!.type === "feed.hello");
      expect(winners, "one of two concurrent uses opens").toHaveLength(1);
      const loser = both.find((b) => b.frames[0]!.type !== "feed.hello")!;
      expect((await loser.closed).code).toBe(4401);
      expect(loser.frames[0]!.data).toMatchObject({ code: "TICKET_USED" });
      winners[0]!.ws.close(1000);

      // Expired: minted with the real key a minute and more ago.
      const old = await mintTicket(env, { userId: attacker, role: "user" }, "user", Date.now() - (FEED.ticketTtlSeconds + 5) * 1000);
      await expectRefused("expired ticket", `/ws?ticket=${encodeURIComponent(old.ticket)}`, 4401, "TICKET_INVALID");
      // Tickets for another feed.
      const dev = await registerDevice(uid("hostile"));
      const devTicket = await ticket(aToken, { feed: "device", deviceId: dev.deviceId });
      await expectRefused("device ticket at /ws", `/ws?ticket=${encodeURIComponent(devTicket)}`, 4401, "TICKET_INVALID");
      const adminFeedTicket = await ticket(adminToken, { feed: "admin" });
      await expectRefused("admin-feed ticket at /ws", `/ws?ticket=${encodeURIComponent(adminFeedTicket)}`, 4401, "TICKET_INVALID");
      expect((await call("POST", "/ws/ticket", { token: aToken, body: { feed: "admin" } })).status).toBe(403);
      // A user-feed ticket does not open the admin feed either.
      await expectRefused(
        "user ticket at /ws/admin",
        `/ws/admin?ticket=${encodeURIComponent(await ticket(aToken))}`,
        4401,
        "TICKET_INVALID",
      );
      // And a ticket is not a bearer token.
      expect((await call("GET", `/quotas/user/${victim}`, { token: await ticket(vToken) })).status).toBe(401);

      // Junk since (checked before the ticket is spent).
      for (const junk of ["abc", "-1", "1.5", "01", "1e3", "", "%20", "0x10", "9999999999999999", "NaN"]) {
        await expectRefused(`since=${junk}`, await wsPath(aToken, junk), 4400, "VALIDATION_FAILED");
      }

      // Through all of it, the victim's socket saw only the victim's three events, and the attacker's none.
      await sleep(100);
      expect(logged(vSock.frames).map((e) => e.seq)).toEqual([1, 2, 3]);
      for (const f of vSock.frames) expect(f.userId).toBe(victim);
      expect(logged(own.frames)).toEqual([]);
      for (const f of own.frames) expect(f.userId).toBe(attacker);
      expect((await logOf(aToken)).lastSeq).toBe(0);
      console.log(JSON.stringify({ test: "hostile-tickets", refusals: attempts.length }));
      vSock.ws.close(1000);
      own.ws.close(1000);
    },
  );

  it(
    `more than FEED.maxSocketsPerUser (${FEED.maxSocketsPerUser}) sockets: the extra one is closed with 4429, ` +
      `the others keep working, a closed one frees its place`,
    async ({ expect }) => {
      const user = uid("crowd");
      const other = uid("neighbour");
      const token = await tokenFor(user);
      const adminToken = await admin();
      const socks = await Promise.all(Array.from({ length: FEED.maxSocketsPerUser }, async () => rawFeed(await wsPath(token, 0))));
      await until(async () => socks.every((s) => s.frames.length > 0));
      const extra = await refused(await wsPath(token, 0));
      expect(extra.code).toBe(4429);
      expect(extra.error?.data).toMatchObject({ code: "TOO_MANY_SOCKETS" });
      // Another user is not affected by this user's crowd.
      const n = await rawFeed(await wsPath(await tokenFor(other), 0));
      await until(async () => n.frames.length > 0);
      expect(n.frames[0]).toMatchObject({ type: "feed.hello", userId: other });
      expect((await call("POST", `/quotas/renew/${user}?create=true`, { token: adminToken, body: { extensionDays: 2 } })).status).toBe(200);
      await until(async () => socks.every((s) => lastOf(s.frames) === 1));
      for (const s of socks) {
        expect(s.closeInfo).toBeNull();
        expect(logged(s.frames)).toMatchObject([{ seq: 1, type: "quota.renewed", userId: user }]);
      }
      // A closed socket frees its place (the server sees the close asynchronously).
      socks[0]!.ws.close(1000);
      await socks[0]!.closed;
      const again = await until(async () => {
        const f = await rawFeed(await wsPath(token, 0));
        await until(async () => f.frames.length > 0 || f.closeInfo !== null);
        if (f.frames[0]?.type === "feed.hello") return f;
        await f.closed;
        return null;
      });
      expect(logged(again.frames).map((e) => e.seq)).toEqual([1]);
      await sleep(100);
      expect(logged(n.frames)).toEqual([]);
      for (const s of [...socks.slice(1), again, n]) s.ws.close(1000);
    },
  );
});

// ---- resume --------------------------------------------------------------------------------------

/** Mixed cheap events for one user: renewals, quota updates, top-ups. */
const makeEvents = async (user: string, n: number, tag = uid("e")) => {
  const adminToken = await admin();
  for (let k = 0; k < n; k++) {
    const r =
      k % 3 === 0
        ? await call("POST", `/quotas/renew/${user}?create=true`, { token: adminToken, body: { extensionDays: 1 + k } })
        : k % 3 === 1
          ? await call("PUT", `/quotas/user/${user}?create=true`, {
              token: adminToken,
              body: { limits: { maxDevices: 2 + (k % 5) } },
            })
          : await call("POST", `/billing/users/${user}/top-ups?create=true`, {
              service: SERVICE_TOKEN,
              body: { amountMinor: 100 + k, paymentId: `pay-${user}-${tag}-${k}` },
            });
    expect([200, 201]).toContain(r.status);
  }
};

describe.concurrent("resume: a client that comes back with its last seq gets exactly what it missed", () => {
  it("disconnect, N events, reconnect with since=last: exactly the missed ones once, in order, then live", async ({ expect }) => {
    const user = uid("resumer");
    const token = await tokenFor(user);
    const first = await rawFeed(await wsPath(token, 0));
    await makeEvents(user, 3);
    await until(async () => lastOf(first.frames) === 3);
    first.ws.close(1000);
    await first.closed;
    await makeEvents(user, 7);
    const second = await rawFeed(await wsPath(token, 3));
    await until(async () => lastOf(second.frames) === 10);
    expect(second.frames[0]!.data).toMatchObject({
      since: 3,
      replayThrough: 10,
      oldestSeq: 1,
      missed: null,
      historyLimit: FEED.historyLimit,
    });
    await makeEvents(user, 2);
    await until(async () => lastOf(second.frames) === 12);
    await sleep(200);
    const log = await logOf(token);
    checkLogIsOwn(user, log);
    const bySeq = new Map(log.events.map((e) => [e.seq!, e]));
    checkConnection("first", user, first.frames, bySeq, 3);
    checkConnection("second", user, second.frames, bySeq, 12);
    second.ws.close(1000);
  });

  it("(a) hibernation: events after the object is evicted and woken reach the hibernated sockets exactly once", async ({ expect }) => {
    // Only quota and billing events: no other object holds a stub to this user's object.
    const user = uid("sleeper");
    const token = await tokenFor(user);
    const stub = env.USER_QUOTA.getByName(user);
    const raw = await rawFeed(await wsPath(token, 0));
    const t = tappedClient(token, 0);
    await t.client.start();
    await makeEvents(user, 3);
    await until(async () => lastOf(raw.frames) === 3 && t.seen.length === 3);

    const evictions: Array<{ round: number; ok: boolean; error?: string }> = [];
    let expected = 3;
    const marked = (v: string | undefined) =>
      runInDurableObject(stub, (instance) => {
        const o = instance as unknown as { __mark?: string };
        const before = o.__mark;
        if (v !== undefined) o.__mark = v;
        return before;
      });
    for (let round = 0; round < 3; round++) {
      await marked(`round-${round}`);
      try {
        await evictDurableObject(stub, { webSockets: "hibernate" });
        evictions.push({ round, ok: true });
      } catch (err) {
        evictions.push({ round, ok: false, error: String(err) });
      }
      // Events produced after the eviction wake the object; the sockets stayed open.
      await makeEvents(user, 4, `r${round}`);
      expected += 4;
      // A new instance took over (the mark on the old one is gone).
      expect(await marked(undefined), "the object was really evicted").toBeUndefined();
      await until(async () => lastOf(raw.frames) === expected && t.seen.length === expected);
    }
    console.log(JSON.stringify({ test: "hibernation", evictions }));
    expect(
      evictions.filter((e) => !e.ok),
      "evictDurableObject refused",
    ).toEqual([]);
    // A new socket after the wake-ups resumes from the middle, then is live.
    const late = await rawFeed(await wsPath(token, 5));
    await until(async () => late.frames.length > 0);
    await makeEvents(user, 1, "late");
    expected += 1;
    await until(async () => lastOf(raw.frames) === expected && lastOf(late.frames) === expected && t.seen.length === expected);
    await sleep(200);
    expect(raw.closeInfo, "the hibernated socket stayed open").toBeNull();
    expect(t.conns, "the typed client never had to reconnect").toHaveLength(1);
    const log = await logOf(token);
    expect(log.lastSeq).toBe(expected);
    checkLogIsOwn(user, log);
    const bySeq = new Map(log.events.map((e) => [e.seq!, e]));
    checkConnection("raw", user, raw.frames, bySeq, expected);
    checkConnection("typed", user, t.conns[0]!, bySeq, expected);
    expect(checkConnection("late", user, late.frames, bySeq, expected).since).toBe(5);
    expect(t.seen.map((e) => e.seq)).toEqual(range(1, expected));
    raw.ws.close(1000);
    late.ws.close(1000);
    t.client.close();
  });

  it("(a'') hibernation in the middle of a stream of events: the open sockets get every event once, in order", async ({ expect }) => {
    const user = uid("dozer");
    const token = await tokenFor(user);
    const adminToken = await admin();
    const stub = env.USER_QUOTA.getByName(user);
    const raw = await rawFeed(await wsPath(token, 0));
    const t = tappedClient(token, 0);
    await t.client.start();
    const N = 90;
    let made = 0;
    const producer = (async () => {
      for (let k = 0; k < N; k++) {
        const r = await call("POST", `/quotas/renew/${user}?create=true`, { token: adminToken, body: { extensionDays: 1 } });
        expect(r.status).toBe(200);
        made++;
        await sleep(3);
      }
    })();
    const evictions: Array<{ at: number; ok: boolean; error?: string }> = [];
    for (const at of [15, 40, 65]) {
      await until(async () => made >= at, 20_000, 5);
      try {
        await evictDurableObject(stub, { webSockets: "hibernate" });
        evictions.push({ at: made, ok: true });
      } catch (err) {
        evictions.push({ at: made, ok: false, error: String(err) });
      }
    }
    await producer;
    await until(async () => lastOf(raw.frames) === N && t.seen.length === N, 20_000);
    await sleep(200);
    console.log(JSON.stringify({ test: "hibernation-under-load", events: N, evictions }));
    expect(evictions.filter((e) => e.ok).length, `evictions: ${JSON.stringify(evictions)}`).toBeGreaterThanOrEqual(1);
    const log = await logOf(token);
    expect(log.lastSeq).toBe(N);
    const bySeq = new Map(log.events.map((e) => [e.seq!, e]));
    expect(raw.closeInfo).toBeNull();
    checkConnection("raw", user, raw.frames, bySeq, N);
    expect(t.conns).toHaveLength(1);
    checkConnection("typed", user, t.conns[0]!, bySeq, N);
    expect(t.seen.map((e) => e.seq)).toEqual(range(1, N));
    raw.ws.close(1000);
    t.client.close();
  });

  it("(a') eviction that closes the sockets: the typed client reconnects and resumes, nothing lost or repeated", async ({ expect }) => {
    const user = uid("evicted");
    const token = await tokenFor(user);
    const stub = env.USER_QUOTA.getByName(user);
    const raw = await rawFeed(await wsPath(token, 0));
    const t = tappedClient(token, 0);
    await t.client.start();
    await makeEvents(user, 2);
    await until(async () => t.seen.length === 2 && lastOf(raw.frames) === 2);
    await evictDurableObject(stub, { webSockets: "close" });
    const closed = await raw.closed;
    await makeEvents(user, 5);
    await until(async () => t.seen.length === 7, 15_000);
    await sleep(200);
    const log = await logOf(token);
    const bySeq = new Map(log.events.map((e) => [e.seq!, e]));
    expect(t.seen.map((e) => e.seq)).toEqual(range(1, 7));
    expect(t.conns.length).toBeGreaterThanOrEqual(2);
    expect(t.conns.flatMap((c) => logged(c).map((e) => e.seq))).toEqual(range(1, 7));
    t.conns.forEach((c, k) => checkConnection(`typed conn#${k}`, user, c, bySeq, k === t.conns.length - 1 ? 7 : lastOf(c)));
    console.log(JSON.stringify({ test: "evict-close", rawClose: closed, typedConnections: t.conns.length }));
    t.client.close();
  });

  it(
    `(c) asking for more than is kept (historyLimit ${FEED.historyLimit}): hello.missed says exactly which seqs are gone, ` +
      `replay starts at oldestSeq`,
    async ({ expect }) => {
      const user = uid("hoarder");
      const token = await tokenFor(user);
      const adminToken = await admin();
      const N = FEED.historyLimit + 150;
      for (let k = 0; k < N; k += 50) {
        const rs = await Promise.all(
          range(k, Math.min(N, k + 50) - 1).map(() =>
            call("POST", `/quotas/renew/${user}?create=true`, { token: adminToken, body: { extensionDays: 1 } }),
          ),
        );
        for (const r of rs) expect(r.status).toBe(200);
      }
      const log = await logOf(token);
      expect(log.lastSeq).toBe(N);
      const lo = log.oldestSeq!;
      const hi = log.lastSeq;
      expect(lo, "something was pruned").toBeGreaterThan(1);
      expect(hi - lo + 1, "at least historyLimit kept").toBeGreaterThanOrEqual(FEED.historyLimit);
      expect(log.events.map((e) => e.seq)).toEqual(range(lo, hi));
      const bySeq = new Map(log.events.map((e) => [e.seq!, e]));

      const cases: Array<{ since: number; missed: HelloData["missed"] }> = [
        { since: 0, missed: { from: 1, to: lo - 1, count: lo - 1 } },
        { since: 1, missed: { from: 2, to: lo - 1, count: lo - 2 } },
        { since: lo - 2, missed: { from: lo - 1, to: lo - 1, count: 1 } },
        { since: lo - 1, missed: null },
        { since: lo + 10, missed: null },
      ];
      const socks = await Promise.all(cases.map(async (c) => rawFeed(await wsPath(token, c.since))));
      const t = tappedClient(token, 1);
      const hello = await t.client.start();
      expect(hello).toMatchObject({
        since: 1,
        oldestSeq: lo,
        replayThrough: hi,
        missed: { from: 2, to: lo - 1, count: lo - 2 },
      });
      await until(async () => socks.every((s) => lastOf(s.frames) === hi) && t.seen.length === hi - lo + 1, 20_000);
      // Then live.
      expect((await call("POST", `/quotas/renew/${user}?create=true`, { token: adminToken, body: { extensionDays: 3 } })).status).toBe(200);
      const live = (await logOf(token)).events.at(-1)!;
      expect(live.seq).toBe(hi + 1);
      bySeq.set(live.seq!, live);
      await until(async () => socks.every((s) => lastOf(s.frames) === hi + 1) && t.client.lastSeq === hi + 1);
      await sleep(200);
      cases.forEach((c, k) => {
        const frames = socks[k]!.frames;
        const h = frames[0]!.data as HelloData;
        expect(h, `since=${c.since}`).toMatchObject({
          since: c.since,
          oldestSeq: lo,
          replayThrough: hi,
          historyLimit: FEED.historyLimit,
          missed: c.missed,
        });
        const evs = logged(frames);
        expect(evs[0]!.seq, `since=${c.since}: replay starts at`).toBe(Math.max(lo, c.since + 1));
        expect(
          evs.map((e) => e.seq),
          `since=${c.since}`,
        ).toEqual(range(Math.max(lo, c.since + 1), hi + 1));
        for (const e of evs) expect(e).toEqual(bySeq.get(e.seq!));
        for (const f of frames) expect(f.userId).toBe(user);
      });
      expect(t.seen.map((e) => e.seq)).toEqual(range(lo, hi + 1));
      console.log(JSON.stringify({ test: "pruned", events: hi + 1, oldestSeq: lo, sockets: socks.length + 1 }));
      for (const s of socks) s.ws.close(1000);
      t.client.close();
    },
  );

  it("(d) a client ahead of the log is moved back to its end and still gets live events", async ({ expect }) => {
    const user = uid("ahead");
    const token = await tokenFor(user);
    await makeEvents(user, 3);
    const socks = await Promise.all([1000, 4, 3, 999_999_999_999_999].map(async (s) => rawFeed(await wsPath(token, s))));
    const t = tappedClient(token, 50);
    const hello = await t.client.start();
    expect(hello).toMatchObject({ since: 3, replayThrough: 3, missed: null });
    expect(t.client.lastSeq).toBe(3);
    await until(async () => socks.every((s) => s.frames.length > 0));
    await makeEvents(user, 2, "live");
    await until(async () => socks.every((s) => lastOf(s.frames) === 5) && t.seen.length === 2);
    await sleep(200);
    const log = await logOf(token);
    const bySeq = new Map(log.events.map((e) => [e.seq!, e]));
    socks.forEach((s, k) => expect(checkConnection(`ahead#${k}`, user, s.frames, bySeq, 5)).toMatchObject({ since: 3, replayThrough: 3 }));
    expect(t.seen.map((e) => e.seq)).toEqual([4, 5]);
    for (const s of socks) s.ws.close(1000);
    t.client.close();
  });
});

// ---- ordering under concurrency ------------------------------------------------------------------

describe.concurrent("ordering: replay and live join without a gap or a repeat", () => {
  it("sockets joining with since=k while events are produced rapidly each see k+1… gapless and once", async ({ expect }) => {
    const user = uid("stream");
    const token = await tokenFor(user);
    const adminToken = await admin();
    const LANES = 3;
    const PER_LANE = 150;
    const TOTAL = LANES * PER_LANE;
    // Raw joins + typed clients stay below FEED.maxSocketsPerUser, so no socket is refused with 4429.
    const JOINS = 12;
    let made = 0;
    const joins: Array<{ since: number | undefined; sock: RawFeed }> = [];
    const joining: Array<Promise<void>> = [];
    const droppers: Tapped[] = [];
    let drops = 0;

    // Join at every kind of point: the start, the current end, just behind it, the middle, ahead of it, live.
    const join = async (j: number) => {
      const now = await lastSeqOf(token);
      const since = [0, now, Math.max(0, now - 3), Math.floor(now / 2), now + 5, undefined, Math.max(0, now - 1), 1][j % 8];
      joins.push({ since, sock: await rawFeed(await wsPath(token, since)) });
      if (j % 6 === 0) {
        const t = tappedClient(token, Math.max(0, now - 2));
        droppers.push(t);
        await t.client.start();
      }
    };
    // Joins and drops are driven by the stream's progress and run alongside it (not awaited by it).
    const progress = (n: number) => {
      if (n % 30 === 0 && joining.length < JOINS) joining.push(join(joining.length + 1));
      if (n % 20 === 0)
        for (const t of droppers) {
          t.client.drop();
          drops++;
        }
    };
    const producer = async (lane: number) => {
      for (let k = 0; k < PER_LANE; k++) {
        const r =
          lane === 0
            ? await call("POST", `/quotas/renew/${user}?create=true`, { token: adminToken, body: { extensionDays: 1 } })
            : lane === 1
              ? await call("PUT", `/quotas/user/${user}?create=true`, {
                  token: adminToken,
                  body: { limits: { maxDevices: 2 + (k % 7) } },
                })
              : await call("POST", `/billing/users/${user}/top-ups?create=true`, {
                  service: SERVICE_TOKEN,
                  body: { amountMinor: 1 + k, paymentId: `pay-${user}-s-${k}` },
                });
        expect([200, 201]).toContain(r.status);
        progress(++made);
        await sleep(2);
      }
    };
    await Promise.all([...Array.from({ length: LANES }, (_, lane) => producer(lane)), join(0)]);
    await Promise.all(joining);
    expect(made).toBe(TOTAL);
    const last = await lastSeqOf(token);
    expect(last).toBeGreaterThanOrEqual(TOTAL);
    const caughtUp = (frames: Envelope[]) =>
      lastOf(frames) === last || (logged(frames).length === 0 && (frames[0]?.data as HelloData | undefined)?.since === last);
    await until(
      async () =>
        joins.every((j) => caughtUp(j.sock.frames)) && droppers.every((t) => t.client.lastSeq === last && t.client.state === "open"),
      30_000,
    ).catch((err) => {
      console.log(
        JSON.stringify({
          last,
          joins: joins.map((j) => ({
            since: j.since,
            hello: j.sock.frames[0]?.data,
            n: logged(j.sock.frames).length,
            first: logged(j.sock.frames)[0]?.seq,
            last: lastOf(j.sock.frames),
            close: j.sock.closeInfo,
          })),
          droppers: droppers.map((t) => ({
            lastSeq: t.client.lastSeq,
            state: t.client.state,
            conns: t.conns.map((c) => ({ hello: c[0]?.data, n: logged(c).length, last: lastOf(c) })),
            err: t.client.lastError,
          })),
        }),
      );
      throw err;
    });
    await sleep(300);
    const log = await logOf(token);
    expect(log.lastSeq).toBe(last);
    checkLogIsOwn(user, log);
    const bySeq = new Map(log.events.map((e) => [e.seq!, e]));
    let eventsChecked = 0;
    let midStream = 0;
    joins.forEach((j, k) => {
      const hello = checkConnection(`join#${k} since=${j.since}`, user, j.sock.frames, bySeq, last);
      if (j.since === undefined) expect(hello.since).toBe(hello.replayThrough);
      else expect(hello.since).toBe(Math.min(j.since, hello.replayThrough));
      if (hello.replayThrough < last) midStream++;
      eventsChecked += logged(j.sock.frames).length;
    });
    let reconnectsMidStream = 0;
    for (const [k, t] of droppers.entries()) {
      const start = (t.conns[0]![0]!.data as HelloData).since;
      expect(
        t.seen.map((e) => e.seq),
        `dropper#${k}`,
      ).toEqual(range(start + 1, last));
      expect(
        t.conns.flatMap((c) => logged(c).map((e) => e.seq)),
        `dropper#${k}: the server sent nothing twice`,
      ).toEqual(range(start + 1, last));
      t.conns.forEach((c, n) => {
        const h = checkConnection(
          `dropper#${k} conn#${n}`,
          user,
          c,
          bySeq,
          n === t.conns.length - 1 ? last : lastOf(c) || (c[0]!.data as HelloData).since,
        );
        if (n > 0 && h.replayThrough < last) reconnectsMidStream++;
      });
      eventsChecked += t.seen.length;
    }
    // The test did what it says: sockets joined and clients reconnected while events were still coming.
    expect(joins.length).toBe(JOINS + 1);
    expect(midStream, "joins before the end of the stream").toBeGreaterThanOrEqual(JOINS / 4);
    expect(reconnectsMidStream, "reconnects before the end of the stream").toBeGreaterThanOrEqual(1);
    console.log(
      JSON.stringify({
        test: "join-ordering",
        events: last,
        sockets: joins.length,
        joinedMidStream: midStream,
        typed: droppers.length,
        drops,
        typedConnections: droppers.map((t) => t.conns.length),
        reconnectsMidStream,
        eventsChecked,
      }),
    );
    for (const j of joins) j.sock.ws.close(1000);
    for (const t of droppers) t.client.close();
  });
});

function countBy(xs: number[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}

describe("resume across a restart of every object (runs alone: it aborts every object)", () => {
  it(
    "(b) restart of every object with open sockets and events in flight: " +
      "the typed client reconnects by itself and gets every event once, in order",
    async () => {
      const user = uid("restarted");
      const token = await tokenFor(user);
      const adminToken = await admin();
      const raw = await rawFeed(await wsPath(token, 0));
      const usedTicket = await ticket(token);
      const usedSock = await rawFeed(`/ws?ticket=${encodeURIComponent(usedTicket)}`);
      const t = tappedClient(token, 0);
      await t.client.start();
      await makeEvents(user, 3);
      await until(async () => t.seen.length === 3 && lastOf(raw.frames) === 3);

      // A producer keeps going while every object is aborted twice; some of its calls may fail.
      const statuses: number[] = [];
      let stop = false;
      const producer = (async () => {
        for (let k = 0; !stop && k < 60; k++) {
          try {
            const r = await call("POST", `/quotas/renew/${user}?create=true`, { token: adminToken, body: { extensionDays: 1 } });
            statuses.push(r.status);
          } catch {
            statuses.push(-1);
          }
          await sleep(10);
        }
      })();
      await sleep(100);
      await abortAllDurableObjects();
      const rawClose = await Promise.race([raw.closed, sleep(3000).then(() => null)]);
      await sleep(150);
      await abortAllDurableObjects();
      await sleep(100);
      stop = true;
      await producer;
      await makeEvents(user, 3, "after");
      const last = await lastSeqOf(token);
      await until(async () => t.seen.length >= last && t.client.state === "open", 20_000);
      await sleep(300);

      const log = await logOf(token);
      expect(log.lastSeq).toBe(last);
      checkLogIsOwn(user, log);
      const bySeq = new Map(log.events.map((e) => [e.seq!, e]));
      expect(
        t.seen.map((e) => e.seq),
        "typed client: every event once, in order",
      ).toEqual(range(1, last));
      for (const e of t.seen) expect(e).toEqual(bySeq.get(e.seq));
      expect(t.conns.length, "the client reconnected").toBeGreaterThanOrEqual(2);
      expect(
        t.conns.flatMap((c) => logged(c).map((e) => e.seq)),
        "the server sent nothing twice",
      ).toEqual(range(1, last));
      t.conns.forEach((c, k) => checkConnection(`typed conn#${k}`, user, c, bySeq, k === t.conns.length - 1 ? last : lastOf(c)));
      // The raw socket got a prefix of the log, once, in order, until it dropped.
      checkConnection("raw", user, raw.frames, bySeq, lastOf(raw.frames));
      // The restart did not make a used ticket usable again.
      const r = await refused(`/ws?ticket=${encodeURIComponent(usedTicket)}`);
      expect(r.code).toBe(4401);
      console.log(
        JSON.stringify({
          test: "restart",
          events: last,
          producerStatuses: countBy(statuses),
          rawClose,
          typedConnections: t.conns.length,
        }),
      );
      t.client.close();
      usedSock.ws.close(1000);
    },
  );
});
