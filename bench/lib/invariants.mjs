// The service's seven invariants (README, Invariants) checked over a whole soak run, from what the service itself
// recorded (user objects' allocations, devices' histories and current state, the pools'
// indexes, D1's usage rows, ledger and accounts) and from what the load generator was told
// (acknowledged allocations, releases, extensions, top-ups). Pure functions: the soak
// collects the data, these count what is wrong. Each returns
// {name, pass, summary, counts, samples}; samples hold a few offending ids to start from.

const SAMPLES = 10;

function result(name, violations, summary, counts = {}, samples = []) {
  return { name, pass: violations === 0, violations, summary, counts, samples: samples.slice(0, SAMPLES) };
}

/** src/domain/pricing.ts priceOf: integer micro-units per second, rounded up once to a cent. */
export function priceOf(rates, spec, seconds) {
  const perSecondX1024 =
    BigInt(rates.basePerSecond) * 1024n +
    BigInt(rates.cpuCorePerSecond) * BigInt(spec.cpuCores) * 1024n +
    BigInt(rates.memoryGBPerSecond) * BigInt(spec.memoryMB) +
    BigInt(rates.storageGBPerSecond) * BigInt(spec.storageMB);
  const denominator = 1024n * 1_000_000n;
  const exact = perSecondX1024 * BigInt(Math.max(0, Math.round(seconds)));
  return Number((exact + denominator - 1n) / denominator);
}

/** Billable = ended and not an orphan (an orphan was never the user's: nothing to bill). */
export const isBillable = (a) => a.status === "released" && a.reason !== "orphaned";

/**
 * Every interval a device was held, per device: the device's own history and current
 * allocation, plus what user objects recorded as released (an orphan on the user side never
 * held the device, so it is left out). When both sides know an allocation, the union of
 * their intervals is used (a disagreement can only widen it, never hide an overlap).
 */
function holdIntervals({ deviceHistories, deviceCurrent, userAllocations, now }) {
  const byDevice = new Map();
  const put = (deviceId, id, start, end, userId, source) => {
    if (deviceId == null || start == null) return;
    let m = byDevice.get(deviceId);
    if (!m) byDevice.set(deviceId, (m = new Map()));
    const prev = m.get(id);
    if (!prev) m.set(id, { allocationId: id, userId, start, end, sources: [source] });
    else {
      prev.start = Math.min(prev.start, start);
      prev.end = Math.max(prev.end, end);
      prev.sources.push(source);
    }
  };
  for (const [deviceId, items] of deviceHistories)
    for (const h of items) put(deviceId, h.allocationId, h.allocatedAt, h.releasedAt, h.userId, "device");
  for (const [deviceId, cur] of deviceCurrent)
    if (cur) put(deviceId, cur.allocationId, cur.allocatedAt, Infinity, cur.userId, "device-current");
  for (const [userId, list] of userAllocations)
    for (const a of list) {
      if (a.status === "released" && a.reason !== "orphaned") put(a.deviceId, a.allocationId, a.allocatedAt, a.releasedAt, userId, "user");
      // Still active at the end of the run: held up to now (or its expiry, if that is later).
      if (a.status === "active") put(a.deviceId, a.allocationId, a.allocatedAt, Math.max(now, a.expiresAt ?? now), userId, "user-active");
    }
  return byDevice;
}

/** 1. A device has at most one active allocation, under any concurrency. */
export function checkDoubleAllocations(data) {
  const byDevice = holdIntervals(data);
  let intervals = 0;
  let overlaps = 0;
  const samples = [];
  for (const [deviceId, m] of byDevice) {
    const list = [...m.values()].sort((a, b) => a.start - b.start || a.end - b.end);
    intervals += list.length;
    let open = null; // the interval reaching furthest so far
    for (const iv of list) {
      if (open && iv.start < open.end) {
        overlaps++;
        samples.push({
          deviceId,
          first: {
            allocationId: open.allocationId,
            userId: open.userId,
            allocatedAt: open.start,
            releasedAt: open.end,
            sources: open.sources,
          },
          second: {
            allocationId: iv.allocationId,
            userId: iv.userId,
            allocatedAt: iv.start,
            releasedAt: iv.end,
            sources: iv.sources,
          },
          overlapMs: Math.min(open.end, iv.end) - iv.start,
        });
      }
      if (!open || iv.end > open.end) open = iv;
    }
  }
  return result(
    "1. double allocations",
    overlaps,
    `${overlaps} overlapping holds over ${intervals} allocation intervals on ${byDevice.size} devices`,
    { devices: byDevice.size, intervals, overlaps },
    samples,
  );
}

/**
 * 2. A user's active allocations never exceed the quota. Checked at every allocation's start:
 * the user's allocations holding at that instant (itself included) against the highest
 * device limit that could have been in force from the quota check (up to `before` ms earlier:
 * the pending row's deadline) to the re-check after the claim (`after` ms later)
 * (`limitsOf(userId).maxDevicesBetween(from, to)`), and the same for total cpu cores.
 */
export function checkQuota({ userAllocations, limitsOf, window: [before, after] }) {
  let checked = 0;
  let deviceOverruns = 0;
  let cpuOverruns = 0;
  let usersAtLimit = 0;
  let worst = 0;
  const samples = [];
  for (const [userId, list] of userAllocations) {
    const L = limitsOf(userId);
    if (!L) continue;
    const iv = list.filter((a) => a.allocatedAt != null).map((a) => ({ a, start: a.allocatedAt, end: a.releasedAt ?? Infinity }));
    let atLimit = false;
    for (const x of iv) {
      checked++;
      const t = x.start;
      const holding = iv.filter((y) => y.start <= t && t < y.end);
      const n = holding.length;
      const cpu = holding.reduce((s, y) => s + y.a.cpuCores, 0);
      const maxDevices = L.maxDevicesBetween(t - before, t + after);
      if (n >= L.maxDevicesBetween(t, t)) atLimit = true;
      worst = Math.max(worst, n / Math.max(1, maxDevices));
      if (n > maxDevices) {
        deviceOverruns++;
        samples.push({
          userId,
          at: t,
          kind: "devices",
          holding: n,
          limit: maxDevices,
          allocations: holding.map((y) => y.a.allocationId),
        });
      }
      if (L.maxCpuCores != null && cpu > L.maxCpuCores) {
        cpuOverruns++;
        samples.push({
          userId,
          at: t,
          kind: "cpuCores",
          holding: cpu,
          limit: L.maxCpuCores,
          allocations: holding.map((y) => y.a.allocationId),
        });
      }
    }
    if (atLimit) usersAtLimit++;
  }
  const v = deviceOverruns + cpuOverruns;
  return result(
    "2. quota overruns",
    v,
    `${deviceOverruns} device-count and ${cpuOverruns} cpu overruns over ${checked} allocation starts; ` +
      `${usersAtLimit} users reached their device limit (highest use/limit ${Math.round(worst * 100)}%)`,
    { checked, deviceOverruns, cpuOverruns, usersAtLimit },
    samples,
  );
}

/**
 * 3. Every ended allocation has exactly one usage record and one charge at the right price,
 * nothing is billed that did not end (or was an orphan), each balance is the sum of its
 * ledger, and every acknowledged top-up is credited exactly once.
 */
export function checkBilling({ userAllocations, usageRows, ledgerRows, accounts, plans, topUps }) {
  const rates = new Map(
    plans.map((p) => [
      p.plan_id,
      {
        basePerSecond: p.base_per_second,
        cpuCorePerSecond: p.cpu_core_per_second,
        memoryGBPerSecond: p.memory_gb_per_second,
        storageGBPerSecond: p.storage_gb_per_second,
      },
    ]),
  );
  const usage = new Map(usageRows.map((u) => [u.allocation_id, u]));
  const charges = new Map();
  const chargeCount = new Map();
  for (const l of ledgerRows) {
    if (l.kind !== "charge") continue;
    const id = l.allocation_id ?? l.entry_id.replace(/^charge:/, "");
    chargeCount.set(id, (chargeCount.get(id) ?? 0) + 1);
    charges.set(id, l);
  }
  const known = new Map();
  for (const [userId, list] of userAllocations) for (const a of list) known.set(a.allocationId, { ...a, userId });
  const c = {
    billable: 0,
    missingUsage: 0,
    missingCharge: 0,
    doubledCharge: 0,
    wrongPrice: 0,
    fieldMismatch: 0,
    chargeEntryIdWrong: 0,
    phantomUsage: 0,
    phantomCharge: 0,
    balanceDrift: 0,
    balanceAfterDrift: 0,
    topUpsAcked: 0,
    topUpsMissing: 0,
    topUpsWrong: 0,
    topUpsUnknown: 0,
    startingCredit: 0,
    amountCharged: 0,
  };
  const samples = [];
  for (const a of known.values()) {
    if (!isBillable(a)) continue;
    c.billable++;
    const u = usage.get(a.allocationId);
    const ch = charges.get(a.allocationId);
    if (!u) {
      c.missingUsage++;
      samples.push({
        kind: "missing usage",
        allocationId: a.allocationId,
        userId: a.userId,
        reason: a.reason,
        releasedAt: a.releasedAt,
      });
    } else {
      const expect = {
        device_id: a.deviceId,
        user_id: a.userId,
        duration_seconds: a.durationSeconds,
        allocated_at: a.allocatedAt,
        released_at: a.releasedAt,
        cpu_cores: a.cpuCores,
        memory_mb: a.memoryMB,
        storage_mb: a.storageMB,
        reason: a.reason,
      };
      const diff = Object.entries(expect)
        .filter(([k, v]) => u[k] !== v)
        .map(([k, v]) => ({ field: k, user: v, usage: u[k] }));
      // Billed to the nearest second and never less than one (docs/billing.md).
      if (Math.max(1, Math.round((u.released_at - u.allocated_at) / 1000)) !== u.duration_seconds)
        diff.push({
          field: "duration_seconds vs times",
          usage: u.duration_seconds,
          times: (u.released_at - u.allocated_at) / 1000,
        });
      if (diff.length) {
        c.fieldMismatch++;
        samples.push({ kind: "usage differs from the user's record", allocationId: a.allocationId, diff });
      }
    }
    if (!ch) {
      c.missingCharge++;
      samples.push({ kind: "missing charge", allocationId: a.allocationId, userId: a.userId });
    } else {
      if ((chargeCount.get(a.allocationId) ?? 0) > 1) {
        c.doubledCharge++;
        samples.push({ kind: "doubled charge", allocationId: a.allocationId, count: chargeCount.get(a.allocationId) });
      }
      if (ch.entry_id !== `charge:${a.allocationId}`) c.chargeEntryIdWrong++;
      const r = rates.get(ch.plan_id);
      const spec = u
        ? { cpuCores: u.cpu_cores, memoryMB: u.memory_mb, storageMB: u.storage_mb }
        : { cpuCores: a.cpuCores, memoryMB: a.memoryMB, storageMB: a.storageMB };
      const seconds = u ? u.duration_seconds : a.durationSeconds;
      const expected = r ? priceOf(r, spec, seconds) : null;
      c.amountCharged += -ch.amount;
      if (expected === null || -ch.amount !== expected || ch.user_id !== a.userId) {
        c.wrongPrice++;
        samples.push({
          kind: "wrong charge",
          allocationId: a.allocationId,
          planId: ch.plan_id,
          charged: -ch.amount,
          expected,
          seconds,
          spec,
        });
      }
    }
  }
  for (const u of usageRows) {
    const a = known.get(u.allocation_id);
    if (!a || !isBillable(a)) {
      c.phantomUsage++;
      samples.push({
        kind: "usage for an allocation that is not an ended, billable one",
        allocationId: u.allocation_id,
        userStatus: a?.status ?? "unknown",
        reason: a?.reason ?? null,
      });
    }
  }
  for (const [id] of charges) {
    const a = known.get(id);
    if (!a || !isBillable(a)) {
      c.phantomCharge++;
      samples.push({
        kind: "charge for an allocation that is not an ended, billable one",
        allocationId: id,
        userStatus: a?.status ?? "unknown",
      });
    }
  }
  // Balances: the sum of the ledger, and the last entry's balance_after.
  const sums = new Map();
  const last = new Map();
  for (const l of ledgerRows) {
    sums.set(l.user_id, (sums.get(l.user_id) ?? 0) + l.amount);
    if (!last.has(l.user_id) || last.get(l.user_id).seq < l.seq) last.set(l.user_id, l);
    if (l.kind === "starting_credit") c.startingCredit++;
  }
  for (const acc of accounts) {
    const sum = sums.get(acc.user_id) ?? 0;
    if (acc.balance !== sum) {
      c.balanceDrift++;
      samples.push({
        kind: "balance is not the sum of the ledger",
        userId: acc.user_id,
        balance: acc.balance,
        ledgerSum: sum,
      });
    }
    const l = last.get(acc.user_id);
    if (l && l.balance_after !== acc.balance) c.balanceAfterDrift++;
  }
  // Top-ups: acknowledged ones exactly once with the right user and amount; none we did not send.
  const topUpRows = new Map(ledgerRows.filter((l) => l.kind === "top_up").map((l) => [l.entry_id.replace(/^top_up:/, ""), l]));
  for (const [paymentId, t] of topUps) {
    const row = topUpRows.get(paymentId);
    if (t.acked) {
      c.topUpsAcked++;
      if (!row) {
        c.topUpsMissing++;
        samples.push({ kind: "acknowledged top-up not in the ledger", paymentId, userId: t.userId, amount: t.amount });
      }
    } else if (!row) c.topUpsUnknown++;
    if (row && (row.user_id !== t.userId || row.amount !== t.amount)) {
      c.topUpsWrong++;
      samples.push({
        kind: "top-up booked with another user or amount",
        paymentId,
        sent: t,
        booked: { userId: row.user_id, amount: row.amount },
      });
    }
  }
  for (const [paymentId] of topUpRows)
    if (!topUps.has(paymentId)) {
      c.topUpsWrong++;
      samples.push({ kind: "top-up in the ledger that was never sent", paymentId });
    }
  const lost = c.missingUsage + c.missingCharge;
  const doubled = c.doubledCharge + c.phantomUsage + c.phantomCharge;
  const v =
    lost +
    doubled +
    c.wrongPrice +
    c.fieldMismatch +
    c.chargeEntryIdWrong +
    c.balanceDrift +
    c.balanceAfterDrift +
    c.topUpsMissing +
    c.topUpsWrong;
  return result(
    "3. lost or doubled usage",
    v,
    `${c.billable} ended billable allocations: ${c.missingUsage} without usage, ${c.missingCharge} without charge, ` +
      `${c.doubledCharge} charged twice, ${c.phantomUsage + c.phantomCharge} billed that should not be, ${c.wrongPrice} wrong price, ` +
      `${c.fieldMismatch} usage rows differing; ${accounts.length} balances, ${c.balanceDrift} not the ledger sum; ` +
      `${c.topUpsAcked} acknowledged top-ups, ${c.topUpsMissing} missing, ${c.topUpsWrong} wrong`,
    c,
    samples,
  );
}

/**
 * Holdings at one instant: what devices hold against what users think they hold, quota usage
 * against the user's allocations, and the pools' indexes against the devices. Returns the
 * candidates; the soak reads again a moment later and keeps those still there (an allocation
 * ending between two reads is not an orphan).
 */
export function compareHoldings({ deviceCurrent, deviceStatus, userAllocations, quotas, poolIndex, now, settleMs = 3000 }) {
  const userActive = new Map();
  const pending = [];
  for (const [userId, list] of userAllocations)
    for (const a of list) {
      if (a.status === "active") userActive.set(a.allocationId, { ...a, userId });
      if (a.status === "pending") pending.push({ userId, allocationId: a.allocationId });
    }
  const near = (t) => t != null && Math.abs(now - t) < settleMs;
  const heldForNobody = [];
  const unconfirmed = [];
  const onDevice = new Set();
  for (const [deviceId, cur] of deviceCurrent) {
    if (!cur) continue;
    onDevice.add(cur.allocationId);
    const u = userActive.get(cur.allocationId);
    if (!u && !near(cur.expiresAt))
      heldForNobody.push({
        deviceId,
        allocationId: cur.allocationId,
        userId: cur.userId,
        confirmed: cur.confirmed,
        allocatedAt: cur.allocatedAt,
        expiresAt: cur.expiresAt,
      });
    else if (u && !cur.confirmed && now - cur.allocatedAt > 35_000) unconfirmed.push({ deviceId, allocationId: cur.allocationId });
  }
  const ghosts = [];
  for (const a of userActive.values())
    if (!onDevice.has(a.allocationId) && !near(a.expiresAt))
      ghosts.push({ userId: a.userId, allocationId: a.allocationId, deviceId: a.deviceId, expiresAt: a.expiresAt });
  const quotaMismatch = [];
  for (const [userId, q] of quotas) {
    const mine = (userAllocations.get(userId) ?? []).filter((a) => a.status === "active" || a.status === "pending");
    const cpu = mine.reduce((s, a) => s + a.cpuCores, 0);
    if (q.usage.devices !== mine.length || q.usage.cpuCores !== cpu)
      quotaMismatch.push({
        userId,
        quotaDevices: q.usage.devices,
        allocations: mine.length,
        quotaCpu: q.usage.cpuCores,
        cpu,
      });
  }
  const poolMismatch = [];
  for (const [deviceId, idx] of poolIndex ?? []) {
    const cur = deviceCurrent.get(deviceId) ?? null;
    const status = deviceStatus?.get(deviceId);
    if ((idx.allocationId ?? null) !== (cur?.allocationId ?? null) || (status && idx.status !== status))
      poolMismatch.push({
        deviceId,
        index: { status: idx.status, allocationId: idx.allocationId ?? null },
        device: { status, allocationId: cur?.allocationId ?? null },
      });
  }
  return {
    heldForNobody,
    unconfirmed,
    ghosts,
    quotaMismatch,
    pending,
    poolMismatch,
    compared: {
      devicesHeld: onDevice.size,
      userActive: userActive.size,
      quotas: quotas.size,
      poolRows: poolIndex?.size ?? 0,
    },
  };
}

const KINDS = ["heldForNobody", "ghosts", "quotaMismatch", "unconfirmed", "pending", "poolMismatch"];
const keyOf = (kind, x) => `${kind}:${x.allocationId ?? ""}:${x.deviceId ?? ""}:${x.userId ?? ""}`;

/** Candidates present in both reads (same kind and ids) are real. */
export function confirmedHoldings(first, second) {
  const out = { compared: second.compared };
  for (const k of KINDS) {
    const again = new Set((second[k] ?? []).map((x) => keyOf(k, x)));
    out[k] = (first[k] ?? []).filter((x) => again.has(keyOf(k, x)));
  }
  return out;
}

/**
 * 4. No orphans: at the end of the traffic and again once everything was released. Also, no
 * allocation of a user object may end as `orphaned`: that is what a user object records when
 * the device it thought it held has never heard of the allocation.
 */
export function checkOrphans({ afterTraffic, atRest, userAllocations }) {
  const count = (h) => KINDS.reduce((s, k) => s + (h?.[k]?.length ?? 0), 0);
  const userOrphans = [];
  for (const [userId, list] of userAllocations)
    for (const a of list)
      if (a.status === "released" && a.reason === "orphaned")
        userOrphans.push({
          userId,
          allocationId: a.allocationId,
          deviceId: a.deviceId,
          allocatedAt: a.allocatedAt,
          releasedAt: a.releasedAt,
        });
  const v = count(afterTraffic) + count(atRest) + userOrphans.length;
  const line = (h) =>
    `${h.compared.devicesHeld} held devices and ${h.compared.userActive} active allocations compared: ` +
    `${h.heldForNobody.length} held for nobody, ${h.ghosts.length} active allocations no device holds, ` +
    `${h.quotaMismatch.length} of ${h.compared.quotas} quota usages off, ${h.pending.length} pending, ` +
    `${h.unconfirmed.length} unconfirmed claims, ${h.poolMismatch.length} of ${h.compared.poolRows} pool index rows off`;
  const samples = userOrphans.map((x) => ({ when: "during the run", kind: "user allocation ended as orphaned", ...x }));
  for (const [label, h] of [
    ["after traffic", afterTraffic],
    ["at rest", atRest],
  ])
    for (const k of KINDS) for (const x of h?.[k] ?? []) samples.push({ when: label, kind: k, ...x });
  return result(
    "4. orphans",
    v,
    `after traffic (+35 s): ${line(afterTraffic)}; at rest: ${line(atRest)}; ${userOrphans.length} user allocations ended as orphans`,
    {
      afterTraffic: Object.fromEntries(KINDS.map((k) => [k, afterTraffic[k].length])),
      atRest: Object.fromEntries(KINDS.map((k) => [k, atRest[k].length])),
      userOrphans: userOrphans.length,
    },
    samples,
  );
}

/**
 * 5. Expired allocations are released: no device (sampled throughout the run, outside restarts)
 * holds an allocation more than `deviceGraceMs` past its expiry, and at the end no device or
 * user object still has one active past it.
 */
export function checkExpiry({ watcher, endDevices, endUsers, deviceGraceMs, userGraceMs, expiredCount, userLagMs = [] }) {
  const v = watcher.violations.length + endDevices.length + endUsers.length;
  // Informational: when user objects recorded expiries their feeds reported (restarts included).
  const lags = [...userLagMs].sort((a, b) => a - b);
  const q = (p) => (lags.length ? Math.round(lags[Math.min(lags.length - 1, Math.ceil(p * lags.length) - 1)]) : null);
  const lag = {
    n: lags.length,
    p50Ms: q(0.5),
    p99Ms: q(0.99),
    maxMs: lags.length ? Math.round(lags[lags.length - 1]) : null,
    over5s: lags.filter((x) => x > 5000).length,
  };
  const samples = [
    ...watcher.violations.map((x) => ({ when: "during run", ...x })),
    ...endDevices.map((x) => ({ when: "end, device", ...x })),
    ...endUsers.map((x) => ({ when: "end, user object", ...x })),
  ];
  return result(
    "5. expiry",
    v,
    `${expiredCount} allocations expired; ${watcher.samples} fleet samples during the run (${watcher.devicesSeen} device reads, ` +
      `${watcher.skipped} skipped around restarts): ${watcher.violations.length} holds > ${deviceGraceMs / 1000} s past expiry, ` +
      `worst ${Math.round(watcher.maxOverdueMs)} ms; at the end ${endDevices.length} on devices and ${endUsers.length} in user objects ` +
      `(> ${userGraceMs / 1000} s); user objects recorded ${lag.n} expiries seen on feeds p50 ${lag.p50Ms} ms, ` +
      `p99 ${lag.p99Ms} ms, max ${lag.maxMs} ms after expiresAt`,
    {
      expired: expiredCount,
      userRecordedLag: lag,
      watcherSamples: watcher.samples,
      deviceReads: watcher.devicesSeen,
      skipped: watcher.skipped,
      duringRun: watcher.violations.length,
      maxOverdueMs: Math.round(watcher.maxOverdueMs),
      endDevices: endDevices.length,
      endUsers: endUsers.length,
    },
    samples,
  );
}

/**
 * Devices' histories and user objects tell the same story: every allocation a device ended
 * (orphans aside) is released in its user's object with the same times and duration, and
 * every allocation a user object released held its device.
 */
export function checkRecordsAgree({ deviceHistories, userAllocations }) {
  const user = new Map();
  for (const [userId, list] of userAllocations) for (const a of list) user.set(a.allocationId, { ...a, userId });
  let compared = 0;
  const c = { deviceOnly: 0, userOnly: 0, differ: 0 };
  const samples = [];
  const onDevice = new Set();
  for (const [deviceId, items] of deviceHistories)
    for (const h of items) {
      onDevice.add(h.allocationId);
      compared++;
      const u = user.get(h.allocationId);
      if (!u || u.status !== "released") {
        c.deviceOnly++;
        samples.push({
          kind: "ended on the device, not released in the user's object",
          deviceId,
          allocationId: h.allocationId,
          userStatus: u?.status ?? "unknown",
          reason: h.reason,
        });
      } else if (
        u.releasedAt !== h.releasedAt ||
        u.allocatedAt !== h.allocatedAt ||
        u.durationSeconds !== h.durationSeconds ||
        u.reason !== h.reason ||
        u.deviceId !== deviceId
      ) {
        c.differ++;
        samples.push({
          kind: "device and user object differ",
          allocationId: h.allocationId,
          device: h,
          user: {
            deviceId: u.deviceId,
            allocatedAt: u.allocatedAt,
            releasedAt: u.releasedAt,
            durationSeconds: u.durationSeconds,
            reason: u.reason,
          },
        });
      }
    }
  for (const u of user.values())
    if (isBillable(u) && !onDevice.has(u.allocationId)) {
      c.userOnly++;
      samples.push({
        kind: "released in the user's object, not in the device's history",
        allocationId: u.allocationId,
        deviceId: u.deviceId,
        reason: u.reason,
      });
    }
  const v = c.deviceOnly + c.userOnly + c.differ;
  return result(
    "records agree (devices vs user objects)",
    v,
    `${compared} device history entries: ${c.deviceOnly} unknown to their user, ${c.differ} differing; ` +
      `${c.userOnly} user-side releases missing from device histories`,
    { compared, ...c },
    samples,
  );
}

/**
 * What clients were told stays true: every acknowledged allocation exists in its user's
 * object on the same device from the same instant, every acknowledged release is recorded
 * with the same end, an acknowledged extension is not lost, and an idempotent repeat got the
 * first allocation back.
 */
export function checkAcknowledged({ acked, releases, extensions, userAllocations, idempotency }) {
  const user = new Map();
  for (const [, list] of userAllocations) for (const a of list) user.set(a.allocationId, a);
  const c = {
    allocations: acked.size,
    lost: 0,
    moved: 0,
    releases: releases.size,
    releaseDiffers: 0,
    extensions: extensions.size,
    extensionLost: 0,
    idempotentRepeats: idempotency.repeats,
    idempotencyMismatch: idempotency.mismatches.length,
  };
  const samples = [];
  for (const [id, a] of acked) {
    const u = user.get(id);
    if (!u) {
      c.lost++;
      samples.push({ kind: "acknowledged allocation missing from its user's object", allocationId: id, ...a });
    } else if (u.deviceId !== a.deviceId || u.allocatedAt !== a.allocatedAt) {
      c.moved++;
      samples.push({
        kind: "acknowledged allocation recorded differently",
        allocationId: id,
        told: a,
        recorded: { deviceId: u.deviceId, allocatedAt: u.allocatedAt },
      });
    }
  }
  for (const [id, r] of releases) {
    const u = user.get(id);
    if (!u || u.status !== "released" || u.releasedAt !== r.releasedAt || u.durationSeconds !== r.durationSeconds) {
      c.releaseDiffers++;
      samples.push({
        kind: "acknowledged release recorded differently",
        allocationId: id,
        told: r,
        recorded: u ? { status: u.status, releasedAt: u.releasedAt, durationSeconds: u.durationSeconds, reason: u.reason } : null,
      });
    }
  }
  for (const [id, expiresAt] of extensions) {
    const u = user.get(id);
    // Released early is fine; otherwise it may not end before the acknowledged expiry.
    if (!u || u.expiresAt < expiresAt || (u.reason === "expired" && u.releasedAt < expiresAt)) {
      c.extensionLost++;
      samples.push({
        kind: "acknowledged extension lost",
        allocationId: id,
        toldExpiresAt: expiresAt,
        recorded: u ? { expiresAt: u.expiresAt, releasedAt: u.releasedAt, reason: u.reason } : null,
      });
    }
  }
  for (const m of idempotency.mismatches) samples.push({ kind: "idempotent repeat answered differently", ...m });
  const v = c.lost + c.moved + c.releaseDiffers + c.extensionLost + c.idempotencyMismatch;
  return result(
    "acknowledged operations kept",
    v,
    `${c.allocations} acknowledged allocations: ${c.lost} lost, ${c.moved} recorded differently; ` +
      `${c.releases} acknowledged releases: ${c.releaseDiffers} differ; ` +
      `${c.extensions} acknowledged extensions: ${c.extensionLost} lost; ` +
      `${c.idempotentRepeats} idempotent repeats: ${c.idempotencyMismatch} answered differently`,
    c,
    samples,
  );
}

/** Invariant 6 as far as the soak's sockets see it: no frame of another user, no event twice after a resume. */
export function checkFeeds(feed) {
  const v = feed.foreign + feed.duplicates;
  return result(
    "6. feed isolation and resume",
    v,
    `${feed.sockets} sockets opened (${feed.reconnects} reconnects), ${feed.events} events: ${feed.foreign} of another user, ` +
      `${feed.duplicates} seen twice, ${feed.gaps} gaps (${feed.missedReported} seqs reported missed by the server)`,
    { ...feed, samples: undefined },
    feed.samples ?? [],
  );
}

/**
 * The waiting queue and reservations (issue 6), from the entries' and reservations' own views
 * at the end and the users' records: every served entry's and started reservation's allocation
 * is its user's, on the device it names; nothing is left half-served (offered, pending) or
 * waiting after the queue was closed; no two reservations that held a device overlap on it.
 * (A device's single allocation and the quota are the checks above, which count these too.)
 */
export function checkQueueAndReservations({ entries, reservations, userAllocations }) {
  const user = new Map();
  for (const [userId, list] of userAllocations) for (const a of list) user.set(a.allocationId, { ...a, userId });
  const c = {
    entries: entries.length,
    served: 0,
    servedWrong: 0,
    leftOpen: 0,
    reservations: reservations.length,
    started: 0,
    startedWrong: 0,
    reservationsLeftOpen: 0,
    overlaps: 0,
  };
  const samples = [];
  for (const e of entries) {
    if (e.status === "fulfilled") {
      c.served++;
      const a = user.get(e.allocationId);
      if (!a || a.userId !== e.userId || a.deviceId !== e.deviceId) {
        c.servedWrong++;
        samples.push({
          kind: "served entry without its allocation",
          entryId: e.entryId,
          allocationId: e.allocationId,
          recorded: a ?? null,
        });
      }
    } else if (e.status === "waiting" || e.status === "offered") {
      c.leftOpen++;
      samples.push({ kind: "queue entry left open", entryId: e.entryId, status: e.status });
    }
  }
  const held = new Map(); // deviceId → windows that held it
  for (const r of reservations) {
    if (r.status === "executing" || r.status === "completed") {
      c.started++;
      const a = user.get(r.allocationId);
      if (!a || a.userId !== r.userId || a.deviceId !== r.deviceId) {
        c.startedWrong++;
        samples.push({
          kind: "started reservation without its allocation",
          reservationId: r.reservationId,
          allocationId: r.allocationId,
          recorded: a ?? null,
        });
      }
    }
    if (r.status === "pending" || r.status === "confirmed") {
      c.reservationsLeftOpen++;
      samples.push({ kind: "reservation left open", reservationId: r.reservationId, status: r.status });
    }
    // What each reservation held of its device: a booked window, or (once started) its allocation's
    // real time there (an early release gives the rest of the window back, and others may book it).
    const a = user.get(r.allocationId);
    const span =
      r.status === "confirmed"
        ? [Date.parse(r.startAt), Date.parse(r.endAt)]
        : r.status === "executing" && a
          ? [a.allocatedAt, a.expiresAt]
          : r.status === "completed" && a
            ? [a.allocatedAt, a.releasedAt ?? a.expiresAt]
            : null;
    if (span && r.deviceId) {
      const list = held.get(r.deviceId) ?? [];
      for (const o of list)
        if (span[0] < o.span[1] && o.span[0] < span[1]) {
          c.overlaps++;
          samples.push({
            kind: "two reservations held one device at once",
            deviceId: r.deviceId,
            a: { id: o.r.reservationId, status: o.r.status, span: o.span },
            b: { id: r.reservationId, status: r.status, span },
          });
        }
      list.push({ r, span });
      held.set(r.deviceId, list);
    }
  }
  const violations = c.servedWrong + c.leftOpen + c.startedWrong + c.reservationsLeftOpen + c.overlaps;
  return result(
    "queue and reservations: hand-overs are real allocations, nothing left half-served, no window booked twice",
    violations,
    `${c.entries} entries (${c.served} served, ${c.servedWrong} without their allocation, ${c.leftOpen} left open); ` +
      `${c.reservations} reservations (${c.started} started, ${c.startedWrong} without their allocation, ` +
      `${c.reservationsLeftOpen} left open, ${c.overlaps} overlapping)`,
    c,
    samples,
  );
}

/** `name{labels} value` lines of the Prometheus text → [{name, labels, value}] (comments skipped). */
export function parseMetrics(text) {
  const out = [];
  for (const line of String(text).split("\n")) {
    const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[2] ?? "").matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/**
 * The operators' metrics agree with the records, at rest: every allocation the devices ended
 * is counted once as an allocation and once as a release, under the reason the device gave.
 */
export function checkMetrics({ metricsText, deviceHistories }) {
  const samples = parseMetrics(metricsText);
  const sum = (name, pred = () => true) => samples.filter((s) => s.name === name && pred(s.labels)).reduce((a, s) => a + s.value, 0);
  const byReason = {};
  let ended = 0;
  for (const [, items] of deviceHistories)
    for (const h of items) {
      ended++;
      byReason[h.reason] = (byReason[h.reason] ?? 0) + 1;
    }
  const reasons = new Set([
    ...Object.keys(byReason),
    ...samples.filter((s) => s.name === "eda_releases_total").map((s) => s.labels.reason),
  ]);
  // A claim its user's object never recorded is given back as `orphaned`: the pool's index saw it
  // allocated and released (so the metrics count both), but a device's history lists only
  // billable allocations. Those are compared by the count of allocations, not by reason.
  const orphaned = sum("eda_releases_total", (l) => l.reason === "orphaned");
  reasons.delete("orphaned");
  const off = [];
  for (const reason of reasons) {
    const counted = sum("eda_releases_total", (l) => l.reason === reason);
    if (counted !== (byReason[reason] ?? 0)) off.push({ reason, counted, ended: byReason[reason] ?? 0 });
  }
  const allocations = sum("eda_allocations_total");
  const releases = sum("eda_releases_total");
  const expired = sum("eda_expiry_lag_seconds_count");
  const v = off.length + (allocations !== ended + orphaned ? 1 : 0) + (expired !== (byReason.expired ?? 0) ? 1 : 0);
  return result(
    "metrics agree with the records",
    v,
    `${ended} ended allocations on the devices (+ ${orphaned} claims given back unbilled); metrics: ${allocations} allocations, ` +
      `${releases} releases (${off.length} reasons off), ${expired} expiry lags observed for ${byReason.expired ?? 0} expiries`,
    { ended, orphaned, allocations, releases, expired, byReason },
    off,
  );
}
