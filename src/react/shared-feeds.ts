/**
 * One FeedClient per token and feed, shared by every hook that watches it: four hooks on a
 * page open one user socket, not four (a user feed takes 20 sockets at most). Counts its
 * users and closes a client a moment after the last one lets go, so a component that
 * remounts (React's StrictMode, a route change) keeps its socket and its resume point.
 * No React here: the provider owns one of these.
 */
import { FeedClient, type FeedClientOptions } from "../client/feed-client";
import type { FeedKind } from "../feed/protocol";
import { watchDevice } from "./device-state";

/** Which feed: the user's own, the operators', one device's or one pool's. */
export interface FeedTarget {
  feed: FeedKind;
  deviceId?: string;
  pool?: string;
}

export interface FeedLease {
  client: FeedClient;
  /** Call once when done; the client closes when no lease is left (after the linger). */
  release(): void;
}

interface Entry {
  client: FeedClient;
  users: number;
  closer: ReturnType<typeof setTimeout> | null;
}

export interface SharedFeedsOptions {
  baseUrl: string;
  /** How long a client no hook uses stays open (default 1 s). */
  lingerMs?: number;
  /** Passed to every FeedClient (backoff, keep-alive, a custom fetch). */
  client?: Pick<FeedClientOptions, "backoff" | "pingIntervalMs" | "fetch" | "connect">;
}

export class SharedFeeds {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly options: SharedFeedsOptions) {}

  acquire(token: string, target: FeedTarget): FeedLease {
    const key = JSON.stringify([token, target.feed, target.deviceId ?? null, target.pool ?? null]);
    let entry = this.entries.get(key);
    // A feed the server ended for good (a device feed after its allocation, a refusal) is
    // opened afresh for a new user; hooks still holding the old client keep reading its end.
    if (entry && entry.client.state === "stopped" && entry.users === 0) {
      if (entry.closer) clearTimeout(entry.closer);
      this.entries.delete(key);
      entry = undefined;
    }
    if (!entry || entry.client.state === "stopped") {
      entry = { client: this.open(token, target), users: 0, closer: null };
      this.entries.set(key, entry);
    }
    const held = entry;
    if (held.closer) clearTimeout(held.closer);
    held.closer = null;
    held.users += 1;
    let released = false;
    return {
      client: held.client,
      release: () => {
        if (released) return;
        released = true;
        held.users -= 1;
        if (held.users > 0) return;
        held.closer = setTimeout(() => {
          held.closer = null;
          if (held.users > 0) return;
          held.client.close();
          if (this.entries.get(key) === held) this.entries.delete(key);
        }, this.options.lingerMs ?? 1000);
      },
    };
  }

  private open(token: string, target: FeedTarget): FeedClient {
    const client = new FeedClient({ ...this.options.client, baseUrl: this.options.baseUrl, token, ...target });
    if (target.feed === "device") watchDevice(client);
    // A first connection refused for good rejects start(); the hooks read it from the client's state and lastError.
    client.start().catch(() => undefined);
    return client;
  }
}
