/**
 * What a device says of itself beside its spec: name, model, OS version and labels, as columns of
 * the Device's one `device` row (its migration 4) and of the pool index's `devices` rows (the
 * pool's migration 3), which the device's pushed state keeps in step. Labels are stored as JSON
 * text with their keys in order.
 */
import { canonicalLabels } from "../domain/fleet";
import type { DeviceMeta } from "../domain/types";

/** Device migration 4: the device's metadata (devices registered before it have none). */
export const DEVICE_META_SCHEMA = `ALTER TABLE device ADD COLUMN name TEXT;
  ALTER TABLE device ADD COLUMN model TEXT;
  ALTER TABLE device ADD COLUMN os_version TEXT;
  ALTER TABLE device ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';`;

/** The columns, as a row of either table has them. */
export interface MetaColumns {
  name: string | null;
  model: string | null;
  os_version: string | null;
  /** JSON; NULL in a pool index row whose device has not reported its metadata yet. */
  labels: string | null;
}

export const NO_META: DeviceMeta = { name: null, model: null, osVersion: null, labels: {} };

/** A row's metadata (a row of a table older than the migration reads as none). */
export function metaOf(r: Partial<MetaColumns>): DeviceMeta {
  return { name: r.name ?? null, model: r.model ?? null, osVersion: r.os_version ?? null, labels: parseLabels(r.labels) };
}

/** Metadata as the columns store it (labels as JSON, keys in order). */
export function metaColumns(m: DeviceMeta): MetaColumns & { labels: string } {
  return { name: m.name, model: m.model, os_version: m.osVersion, labels: JSON.stringify(canonicalLabels(m.labels)) };
}

/** `current` with what `patch` names (absent: unchanged; null clears a text field; labels are replaced whole). */
export function patchMeta(current: DeviceMeta, patch: Partial<DeviceMeta>): DeviceMeta {
  return {
    name: patch.name !== undefined ? patch.name : current.name,
    model: patch.model !== undefined ? patch.model : current.model,
    osVersion: patch.osVersion !== undefined ? patch.osVersion : current.osVersion,
    labels: patch.labels ?? current.labels,
  };
}

function parseLabels(text: string | null | undefined): Record<string, string> {
  if (!text) return {};
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, string>) : {};
  } catch {
    return {};
  }
}
