/** A device spec from the columns every table that holds one names the same (`cpu`, `mem`, `storage`). */
import type { DeviceSpec } from "./types";

export const specOf = (r: { cpu: number; mem: number; storage: number }): DeviceSpec => ({
  cpuCores: r.cpu,
  memoryMB: r.mem,
  storageMB: r.storage,
});

/** No upper bound on a spec (beyond any real device): "at least `min`". */
export const UNBOUNDED: DeviceSpec = {
  cpuCores: Number.MAX_SAFE_INTEGER,
  memoryMB: Number.MAX_SAFE_INTEGER,
  storageMB: Number.MAX_SAFE_INTEGER,
};
