/**
 * The catalogue (`GET /scheduler/pools`) as the console keeps it: read once on sign-in and again
 * when something of this user's changed what is free or allowed (an allocation, a release, a
 * quota change), then handed to every form that picks a pool and a device class.
 */
import type { ApiClient } from "../client/api-client";
import { refresher } from "./dom";
import type { Catalogue, PoolOffer } from "../client/api-client";

export class CatalogueStore {
  current: Catalogue | null = null;
  /** The last read's error (null once a read succeeds). */
  error: unknown = null;
  // Each read counts against the shared rate limit: a burst of events becomes one read.
  readonly refresh = refresher(() => this.load(), 400);
  private readonly listeners = new Set<() => void>();

  constructor(private readonly api: ApiClient) {}

  onChange(fn: () => void): void {
    this.listeners.add(fn);
  }

  pool(name: string): PoolOffer | undefined {
    return this.current?.items.find((p) => p.pool === name);
  }

  private async load(): Promise<void> {
    try {
      this.current = await this.api.catalogue();
      this.error = null;
    } catch (err) {
      this.error = err;
    }
    for (const fn of this.listeners) fn();
  }
}
