/**
 * Scheduling strategies, pure. A spec is a floor and the renter pays for the device they get,
 * so the pool first finds the smallest free class (cores, then memory, then storage) that fits,
 * and the strategy orders the nodes that hold a free device of that class:
 *
 * - least-loaded (default): the node with the smallest share of busy devices first.
 * - spread: the node picked longest ago first (round robin over nodes).
 * - bin-pack: the busiest node that still has a free device first, keeping others empty.
 * - load-first: the one strategy that puts nodes before size: the least-loaded node first, then
 *   its smallest fitting device, even when a smaller one is free on a busier node (for operators
 *   who value even node load over the renter's price).
 * Both steps are index lookups: no request scans the whole fleet.
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
    case "load-first":
      return withFree.sort((a, b) => load(a) - load(b) || byName(a, b));
    case "spread":
      return withFree.sort((a, b) => a.lastPickedAt - b.lastPickedAt || load(a) - load(b) || byName(a, b));
    case "bin-pack":
      return withFree.sort((a, b) => load(b) - load(a) || byName(a, b));
  }
}

/** Whether the smallest fitting class is chosen before the node (every strategy but load-first). */
export const sizeFirst = (strategy: Strategy): boolean => strategy !== "load-first";

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
