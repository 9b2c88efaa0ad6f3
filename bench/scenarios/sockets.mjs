// Idle sockets: resident memory of the runtime's processes (workerd, summed by
// workerdRssMB) before any feed socket and with 1,000 and 10,000 idle user-feed sockets
// (quick: 2,000 only). A user feed takes at most 20 sockets (FEED.maxSocketsPerUser),
// so each level uses count/20 users with 20 sockets each. After each level the objects are
// left alone long enough to hibernate (workerd evicts an idle object after 10 s; its
// hibernatable sockets stay open in the runtime), and RSS is read then. At the end every
// socket must still be open, and one user's sockets must still receive an event (which
// wakes its object: that latency is reported too). Then all sockets are closed.
//
// The runtime's floor comes first: the same number of sockets as the first level, on a bare
// Worker + Durable Object that only accepts them for hibernation (startSocketFloor), with the
// same compatibility date and flags, so what the runtime costs per socket is known apart from
// what our objects add. `extensions` says whether WebSocket compression was negotiated (the
// client, Node's WebSocket, offers permessage-deflate as browsers do).
import {
  closeAll,
  nowMs,
  openFeed,
  openFloorSocket,
  pool,
  sendAppEvent,
  sleep,
  startSocketFloor,
  stats,
  within,
  workerdFds,
} from "../lib/feed.mjs";
import { workerdRssMB } from "../lib/runtime.mjs";

const PER_USER = 20;
/**
 * Descriptors left free in workerd: the ticket requests' keep-alive connections (64, two each),
 * the SQLite files of the objects still resident while sockets are being opened (about 3 per
 * object, kept 10 s after its last event) and the runtime's own.
 */
const FD_MARGIN = 1200;

/** The runtime's floor: `count` sockets (20 per object) on a bare hibernating Durable Object. */
async function floor(count, settleMs, log) {
  const f = await startSocketFloor();
  const socks = [];
  try {
    const before = await settledRss(2_000, log, "floor");
    const slots = Array.from({ length: count }, (_, i) => `o${Math.floor(i / PER_USER)}`);
    await within(
      pool(slots, 32, async (o) => socks.push(await openFloorSocket(f.base, o))),
      5 * 60_000,
      `opening ${count} floor sockets`,
    );
    const settled = await settledRss(settleMs, log, "floor");
    const delta = settled.rssMB - before.rssMB;
    return {
      count,
      objects: count / PER_USER,
      baselineRssMB: before.rssMB,
      rssMB: settled.rssMB,
      deltaMB: delta,
      rssPerSocketKB: Math.round(((delta * 1024) / count) * 10) / 10,
      extensions: socks[0]?.ws.extensions ?? "",
      compatibilityFlags: f.compatibilityFlags,
    };
  } finally {
    await closeAll(socks);
    await f.stop();
  }
}

/** RSS at the end of `ms`, sampled each second (logged, to see whether it still falls). */
async function settledRss(ms, log, what = "sockets") {
  const samples = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    await sleep(1000);
    samples.push(workerdRssMB());
  }
  log(`${what}: rss while settling (MB, 1 s apart): ${samples.join(" ")}`);
  return { rssMB: samples[samples.length - 1], samples };
}

export async function run(rt, { quick = false, log = () => {} } = {}) {
  const levels = quick ? [2000] : [1000, 10_000];
  // Long enough for workerd to evict the idle objects (10 s after their last event); the quick
  // run waits that long only at its last level, to stay within its time limit.
  const settleFor = (i) => (!quick ? 15_000 : i === levels.length - 1 ? 12_000 : 5_000);
  const base = rt.main;
  const socks = [];
  let closedEarly = 0;
  let openErrors = 0;
  let capped = null;
  let firstError = null;
  try {
    log(`sockets: the runtime's floor with ${levels[0]} sockets`);
    const floorResult = await floor(levels[0], quick ? 3_000 : 5_000, log);
    log(`sockets: floor ${floorResult.rssPerSocketKB} KB per socket (extensions: "${floorResult.extensions}")`);
    const before = await settledRss(quick ? 3_000 : 5_000, log);
    const clientBefore = process.memoryUsage().rss;
    const out = [];
    for (const [li, wanted] of levels.entries()) {
      // workerd holds two descriptors per connection: past its RLIMIT_NOFILE it crashes on accept()
      // (and restarts, dropping every socket), so a level is capped to what fits, with a margin
      // for the ticket requests' connections and the runtime's own files.
      const [w] = await workerdFds();
      const fits = w ? socks.length + Math.floor((w.limit - w.fds - FD_MARGIN) / 2) : wanted;
      // A capped level is rounded down to 500s, so the figure reads as a level, not a limit.
      const level = fits >= wanted ? wanted : Math.max(socks.length, Math.floor(fits / 500) * 500);
      if (level < wanted) {
        capped = { wanted, reached: level, workerdFdLimit: w.limit, workerdFdsBefore: w.fds, fdsPerConnection: 2 };
        log(
          `sockets: capping ${wanted} to ${level}: workerd has ${w.fds} of ${w.limit} descriptors open and takes 2 per connection ` +
            `(more than ${fits} would crash it on accept())`,
        );
      }
      const slots = [];
      for (let i = socks.length; i < level; i++) slots.push(`bench-sock-${Math.floor(i / PER_USER)}`);
      log(`sockets: opening ${slots.length} more (to ${level}, ${Math.ceil(level / PER_USER)} users × ${PER_USER})`);
      const t0 = nowMs();
      const connectMs = [];
      await within(
        pool(slots, 32, async (u) => {
          const t = nowMs();
          try {
            const s = await openFeed(base, u, { timeoutMs: 30_000 });
            connectMs.push(nowMs() - t);
            s.closed.then(() => closedEarly++);
            socks.push(s);
          } catch (err) {
            // Counted and reported; one refused socket does not end the measurement.
            if (openErrors++ === 0) firstError = String(err?.message ?? err);
          }
        }),
        5 * 60_000,
        `opening ${slots.length} sockets`,
      );
      if (openErrors) log(`sockets: ${openErrors} socket(s) could not be opened so far, first: ${firstError}`);
      const openSeconds = (nowMs() - t0) / 1000;
      const activeRss = workerdRssMB();
      log(`sockets: ${socks.length} open in ${openSeconds.toFixed(1)} s; rss ${activeRss} MB right after; letting objects hibernate`);
      const settled = await settledRss(settleFor(li), log);
      const delta = settled.rssMB - before.rssMB;
      const fds = (await workerdFds())[0];
      out.push({
        count: socks.length,
        wanted,
        users: Math.ceil(socks.length / PER_USER),
        workerdFds: fds?.fds ?? null,
        rssMB: settled.rssMB,
        rssRightAfterOpeningMB: activeRss,
        settleSeconds: settleFor(li) / 1000,
        deltaMB: delta,
        rssPerSocketKB: Math.round(((delta * 1024) / socks.length) * 10) / 10,
        openSeconds: Math.round(openSeconds * 10) / 10,
        connectMs: stats(connectMs),
      });
    }

    // Every socket still open, and one user's 20 sockets (its object hibernated) still get an event.
    const open = socks.filter((s) => s.ws.readyState === WebSocket.OPEN).length;
    const probeUser = socks[0].userId;
    const probeSocks = socks.filter((s) => s.userId === probeUser);
    const arrivals = [];
    const id = `sockets-probe-${Date.now()}`;
    const t0 = nowMs();
    const got = Promise.all(
      probeSocks.map(
        (s) =>
          new Promise((resolve) => {
            s.ws.addEventListener("message", (e) => {
              if (typeof e.data === "string" && e.data.includes(id)) {
                arrivals.push(nowMs() - t0);
                resolve();
              }
            });
          }),
      ),
    );
    const res = await sendAppEvent(base, probeUser, id, { appId: id });
    const received = await within(got, 10_000, "probe event on every socket of one user").then(
      () => true,
      () => false,
    );
    log(
      `sockets: ${open}/${socks.length} open; probe event (HTTP ${res.status}) ` +
        `reached ${arrivals.length}/${probeSocks.length} sockets of ${probeUser}`,
    );

    const top = out[out.length - 1];
    // Where the last level had to be capped, what the wanted count would take at the measured cost per socket.
    const projected = capped ? { count: capped.wanted, rssMB: Math.round(before.rssMB + (top.deltaMB * capped.wanted) / top.count) } : null;
    return {
      idleSockets: {
        count: top.count,
        rssMB: top.rssMB,
        levels: [{ count: 0, rssMB: before.rssMB, rssPerSocketKB: null }, ...out],
        ...(capped ? { capped, projected } : {}),
      },
      sockets: {
        perUser: PER_USER,
        baselineRssMB: before.rssMB,
        extensions: socks[0]?.ws.extensions ?? "",
        floor: floorResult,
        stillOpen: open,
        closedEarly,
        openErrors,
        firstError,
        probe: { status: res.status, received, sockets: probeSocks.length, arrivalAfterHibernationMs: stats(arrivals) },
        clientRssDeltaMB: Math.round((process.memoryUsage().rss - clientBefore) / 2 ** 20),
      },
    };
  } finally {
    log(`sockets: closing ${socks.length}`);
    await closeAll(socks, 60_000);
  }
}
