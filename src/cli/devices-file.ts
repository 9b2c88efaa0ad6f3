/**
 * The device files `ctl import` reads, turned into POST /admin/devices/bulk items. The file's form
 * is the console's import (src/console/device-import-parse.ts, pure, read the same way here), so a
 * file one takes the other takes: CSV with a header row or JSON (an array, or `{devices: [...]}`).
 * Anything wrong that can be told without the service (unknown columns, missing fields, numbers
 * that are not whole, a deviceId twice) is a FileError naming the line (CSV) or item (JSON, from 1),
 * and nothing is sent.
 */
import { parseImport, type ImportItem } from "../console/device-import-parse";

export type DeviceItem = ImportItem;

export interface DevicesFile {
  devices: DeviceItem[];
  /** Where each item came from, for messages: `line 4` (CSV) or `item 3` (JSON, from 1). */
  sources: string[];
}

export class FileError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
    this.name = "FileError";
  }
}

export function parseDevicesFile(text: string): DevicesFile {
  const parsed = parseImport(text);
  const problems = parsed.problems.map((p) => `${p.where}${p.deviceId ? ` (${p.deviceId})` : ""}: ${p.message}`);
  const first = new Map<string, string>();
  parsed.items.forEach((item, i) => {
    const seen = first.get(item.deviceId);
    if (seen !== undefined) problems.push(`${parsed.where[i]} (${item.deviceId}): deviceId also on ${seen}`);
    else first.set(item.deviceId, parsed.where[i]!);
  });
  if (!problems.length && !parsed.items.length) problems.push("no devices in the file");
  if (problems.length) throw new FileError(problems);
  return { devices: parsed.items, sources: parsed.where };
}

/**
 * The items in requests of at most `maxItems` and about `maxBytes` of JSON each, in order, each
 * with the index of its first item in the whole file.
 */
export function chunkDevices<T>(items: T[], maxItems: number, maxBytes: number): { offset: number; items: T[] }[] {
  const chunks: { offset: number; items: T[] }[] = [];
  let current: T[] = [];
  let bytes = 16;
  let offset = 0;
  items.forEach((item, i) => {
    const size = new TextEncoder().encode(JSON.stringify(item)).length + 1;
    if (current.length && (current.length >= maxItems || bytes + size > maxBytes)) {
      chunks.push({ offset, items: current });
      current = [];
      bytes = 16;
      offset = i;
    }
    current.push(item);
    bytes += size;
  });
  if (current.length) chunks.push({ offset, items: current });
  return chunks;
}
