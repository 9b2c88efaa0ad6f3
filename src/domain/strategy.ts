/**
 * Scheduling strategies, pure. The pool keeps a per-node summary, orders the nodes with
 * `orderNodes`, then looks up the best fitting free device on each node in turn by index:
 * no request scans the whole fleet.
 *
 * - least-loaded (default): the node with the smallest share of busy devices first.
 * - spread: the node picked longest ago first (round robin over nodes).
 * - bin-pack: the busiest node that still has a free device first, keeping others empty.
 * Within a node every strategy takes the smallest device that matches the spec.
 */
import type { Strategy } from "../config";
import type { DeviceSpec } from "./types";

export interface NodeLoad {
  node: string;
  busy: number;
  total: number;
  free: number;
  lastPickedAt: number;
}

export function orderNodes(strategy: Strategy, nodes: readonly NodeLoad[]): NodeLoad[] {
  const withFree = nodes.filter((n) => n.free > 0);
  const load = (n: NodeLoad) => (n.total === 0 ? 1 : n.busy / n.total);
  const byName = (a: NodeLoad, b: NodeLoad) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0);
  switch (strategy) {
    case "least-loaded":
      return withFree.sort((a, b) => load(a) - load(b) || byName(a, b));
    case "spread":
      return withFree.sort((a, b) => a.lastPickedAt - b.lastPickedAt || load(a) - load(b) || byName(a, b));
    case "bin-pack":
      return withFree.sort((a, b) => load(b) - load(a) || byName(a, b));
  }
}

/** Does a device satisfy `min` without going over `max` (the user's headroom)? */
export function fits(device: DeviceSpec, min: DeviceSpec, max: DeviceSpec): boolean {
  return (
    device.cpuCores >= min.cpuCores &&
    device.memoryMB >= min.memoryMB &&
    device.storageMB >= min.storageMB &&
    device.cpuCores <= max.cpuCores &&
    device.memoryMB <= max.memoryMB &&
    device.storageMB <= max.storageMB
  );
}

/** Smallest fitting device first, so large devices stay free for requests that need them. */
export function compareFit(a: DeviceSpec & { deviceId: string }, b: DeviceSpec & { deviceId: string }): number {
  return (
    a.cpuCores - b.cpuCores ||
    a.memoryMB - b.memoryMB ||
    a.storageMB - b.storageMB ||
    (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0)
  );
}
