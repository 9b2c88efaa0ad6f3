/**
 * Object and D1 answers (epoch ms and their own names, as the objects and D1 keep them) become
 * HTTP answers (src/schemas/: times ISO 8601 UTC, money `…Minor` with its `currency`, pricing
 * plans `pricingPlanId`): the one place the routes convert. Each function's return type is its
 * schema's.
 */
import type { z } from "@hono/zod-openapi";
import type { Invoice } from "./billing/invoices";
import type { Funds } from "./billing/ledger";
import type { ReconcileRun, UserReconciliation } from "./billing/reconcile";
import type { ReconcileWindow } from "./domain/reconcile-window";
import { BILLING } from "./config";
import type { ledger, pricingPlans } from "./db/schema";
import { formatMoney } from "./domain/pricing";
import type { CurrentAllocation, FleetEntry, PoolDevice } from "./contracts";
import { iso, isoOrNull } from "./domain/time";
import type { Allocation, DeviceInfo, DeviceMeta, EndedAllocation, Quota } from "./domain/types";
import type * as Http from "./schemas";
import type { StatusView } from "./stores/device-status-note";

type Of<T extends z.ZodType> = z.infer<T>;
/** The quota as the API answers it (also the data of `quota.updated`). */
export type QuotaAnswer = Of<typeof Http.QuotaView>;

export const deviceView = (d: DeviceInfo): Of<typeof Http.DeviceView> => ({
  deviceId: d.deviceId,
  pool: d.pool,
  node: d.node,
  cpuCores: d.cpuCores,
  memoryMB: d.memoryMB,
  storageMB: d.storageMB,
  status: d.status,
  ...metaView(d),
  createdAt: iso(d.createdAt),
  updatedAt: iso(d.updatedAt),
});

/** A device's name, model, OS version and labels (none known: nulls and `{}`). */
const metaView = (m: Partial<DeviceMeta> | undefined): DeviceMeta => ({
  name: m?.name ?? null,
  model: m?.model ?? null,
  osVersion: m?.osVersion ?? null,
  labels: { ...m?.labels },
});

const deviceAllocationView = (a: CurrentAllocation): Of<typeof Http.DeviceAllocationView> => ({
  allocationId: a.allocationId,
  userId: a.userId,
  confirmed: a.confirmed,
  allocatedAt: iso(a.allocatedAt),
  expiresAt: iso(a.expiresAt),
});

export const deviceDetailView = (
  d: DeviceInfo & StatusView & { allocation: CurrentAllocation | null },
): Of<typeof Http.DeviceDetailView> => ({
  ...deviceView(d),
  allocation: d.allocation ? deviceAllocationView(d.allocation) : null,
  ...statusOf(d),
});

/** A device after a status change: what the change ended, and its status note. */
export const deviceStatusView = (d: DeviceInfo & StatusView & { ended: EndedAllocation | null }): Of<typeof Http.DeviceStatusView> => ({
  ...deviceView(d),
  ended: d.ended ? endedView(d.ended) : null,
  ...statusOf(d),
});

const statusOf = (d: StatusView): StatusView => ({ statusReason: d.statusReason, statusSince: d.statusSince, drain: d.drain });

/** An ended allocation (release, force-release, a device's history, what a status change or removal ended). */
export const endedView = (e: EndedAllocation): Of<typeof Http.ReleaseResult> => ({
  allocationId: e.allocationId,
  deviceId: e.deviceId,
  userId: e.userId,
  allocatedAt: iso(e.allocatedAt),
  releasedAt: iso(e.releasedAt),
  durationSeconds: e.durationSeconds,
  reason: e.reason,
});

export const freeDeviceView = (d: PoolDevice): Of<typeof Http.FreeDeviceView> => ({
  deviceId: d.deviceId,
  node: d.node,
  cpuCores: d.cpuCores,
  memoryMB: d.memoryMB,
  storageMB: d.storageMB,
  status: d.status,
});

export const poolDeviceView = (d: PoolDevice): Of<typeof Http.PoolDeviceView> => ({
  ...freeDeviceView(d),
  allocationId: d.allocationId ?? null,
  userId: d.userId ?? null,
  expiresAt: isoOrNull(d.expiresAt),
  ...metaView(d.meta),
});

/** A device of the fleet list (GET /admin/devices), as its pool's index has it. */
export const fleetDeviceView = (d: FleetEntry): Of<typeof Http.FleetDeviceView> => ({
  deviceId: d.deviceId,
  pool: d.pool,
  node: d.node,
  cpuCores: d.cpuCores,
  memoryMB: d.memoryMB,
  storageMB: d.storageMB,
  status: d.status,
  ...metaView(d),
  allocationId: d.allocationId,
  userId: d.userId,
  expiresAt: isoOrNull(d.expiresAt),
});

export const quotaView = (q: Quota): QuotaAnswer => ({
  userId: q.userId,
  tier: q.plan,
  status: q.status,
  suspended: q.suspended,
  validUntil: iso(q.validUntil),
  limits: { ...q.limits },
  periodStart: iso(q.periodStart),
  usage: { ...q.usage },
  updatedAt: iso(q.updatedAt),
});

export const allocationView = (a: Allocation & { idleReleaseSeconds?: number | null }): Of<typeof Http.AllocationView> => ({
  allocationId: a.allocationId,
  userId: a.userId,
  deviceId: a.deviceId,
  pool: a.pool,
  // The object never answers an aborted allocation (it reads as not found, and lists leave it out).
  status: a.status as Of<typeof Http.AllocationView>["status"],
  cpuCores: a.cpuCores,
  memoryMB: a.memoryMB,
  storageMB: a.storageMB,
  allocatedAt: isoOrNull(a.allocatedAt),
  expiresAt: isoOrNull(a.expiresAt),
  durationMinutes: a.durationMinutes,
  releasedAt: isoOrNull(a.releasedAt),
  durationSeconds: a.durationSeconds,
  reason: a.reason,
  extendCount: a.extendCount,
  extendedMinutes: a.extendedMinutes,
  idempotencyKey: a.idempotencyKey,
  idleReleaseSeconds: a.idleReleaseSeconds ?? null,
});

// ---- billing ------------------------------------------------------------------------------

export function balanceView(f: Funds): Of<typeof Http.BalanceView> {
  return {
    userId: f.userId,
    balanceMinor: f.balance,
    currency: f.currency,
    pricingPlanId: f.planId,
    lowBalanceThresholdMinor: f.lowBalanceThreshold,
    lowBalance: f.balance < f.lowBalanceThreshold,
    hasBalance: f.balance > 0,
    formatted: formatMoney(f.balance, f.currency),
  };
}

export function ledgerEntryView(r: typeof ledger.$inferSelect): Of<typeof Http.LedgerEntryView> {
  return {
    seq: r.seq,
    entryId: r.entryId,
    userId: r.userId,
    kind: r.kind as Of<typeof Http.LedgerEntryView>["kind"],
    amountMinor: r.amount,
    balanceAfterMinor: r.balanceAfter,
    // A deployment has one currency; every pricing plan states it (see setPricingPlan).
    currency: BILLING.currency,
    allocationId: r.allocationId,
    pricingPlanId: r.planId,
    reference: r.reference,
    memo: r.memo,
    actor: r.actor,
    createdAt: iso(r.createdAt),
  };
}

export function invoiceView(i: Invoice): Of<typeof Http.InvoiceView> {
  return {
    invoiceId: i.invoiceId,
    userId: i.userId,
    period: i.period,
    periodStart: iso(i.periodStart),
    periodEnd: iso(i.periodEnd),
    currency: i.currency,
    openingBalanceMinor: i.openingBalance,
    chargesMinor: i.charges,
    creditsMinor: i.credits,
    debitsMinor: i.debits,
    closingBalanceMinor: i.closingBalance,
    usageCount: i.usageCount,
    usageSeconds: i.usageSeconds,
    createdAt: iso(i.createdAt),
  };
}

export function pricingPlanView(p: typeof pricingPlans.$inferSelect): Of<typeof Http.PricingPlanView> {
  return {
    pricingPlanId: p.planId,
    name: p.name,
    currency: p.currency,
    baseMicrosPerSecond: p.basePerSecond,
    cpuCoreMicrosPerSecond: p.cpuCorePerSecond,
    memoryGBMicrosPerSecond: p.memoryGBPerSecond,
    storageGBMicrosPerSecond: p.storageGBPerSecond,
    startingCreditMinor: p.startingCredit,
    lowBalanceThresholdMinor: p.lowBalanceThreshold,
    createdAt: iso(p.createdAt),
    updatedAt: iso(p.updatedAt),
  };
}

const timeFields = new Set(["allocatedAt", "releasedAt"]);

function reconciliationView(d: UserReconciliation): Of<typeof Http.UserReconciliationView> {
  const value = (field: string, v: number | string) => (timeFields.has(field) && typeof v === "number" ? iso(v) : v);
  return {
    userId: d.userId,
    from: iso(d.from),
    to: iso(d.to),
    checked: d.checked,
    missingUsage: d.missingUsage,
    missingCharges: d.missingCharges,
    mismatched: d.mismatched.map((m) => ({
      allocationId: m.allocationId,
      field: m.field as Of<typeof Http.UserReconciliationView>["mismatched"][number]["field"],
      expected: value(m.field, m.expected),
      recorded: value(m.field, m.recorded),
    })),
    healed: d.healed,
    corrected: d.corrected.map((c) => ({ allocationId: c.allocationId, correctionMinor: c.correction, currency: BILLING.currency })),
    stillMissing: d.stillMissing,
    balanceDrift: d.balanceDrift
      ? { balanceMinor: d.balanceDrift.balance, ledgerSumMinor: d.balanceDrift.ledgerSum, currency: BILLING.currency }
      : null,
  };
}

/** A reconciliation run over `window` as answered: times ISO, at most 100 differences in full. */
export function reconcileView(r: ReconcileRun, window: ReconcileWindow): Of<typeof Http.ReconcileResult> {
  const { differences, from: _from, to: _to, ...counts } = r;
  return {
    ...counts,
    from: iso(window.from),
    to: iso(window.to),
    defaulted: window.defaulted,
    differences: differences.slice(0, 100).map(reconciliationView),
    differencesShown: Math.min(100, differences.length),
    differencesTotal: differences.length,
  };
}
