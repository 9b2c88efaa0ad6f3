/**
 * The provider that owns the page's feed sockets, and the hook that hands one to a component
 * with its connection state. Every `useRealtime…` hook goes through `useFeedConnection`, so
 * hooks on the same token and feed share one FeedClient (shared-feeds.ts).
 */
import { createContext, createElement, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import type { CloseInfo, FeedClient, FeedState } from "../client/feed-client";
import type { ErrorFrameData, HelloData } from "../feed/protocol";
import { SharedFeeds, type FeedTarget, type SharedFeedsOptions } from "./shared-feeds";

interface RealtimeContextValue {
  feeds: SharedFeeds;
  token: string | null;
}

const RealtimeContext = createContext<RealtimeContextValue | null>(null);

export interface RealtimeProviderProps {
  /** The signed-in user's bearer token; `null` (signed out) opens nothing. A new token opens new sockets. */
  token: string | null;
  /** Where the service is; default: this page's origin. */
  baseUrl?: string;
  /** How long a socket no hook uses stays open (default 1 s). */
  lingerMs?: number;
  /** Passed to every FeedClient: backoff, keep-alive interval, a custom fetch or socket. */
  clientOptions?: SharedFeedsOptions["client"];
  children?: ReactNode;
}

export function RealtimeProvider(props: RealtimeProviderProps): ReactNode {
  // Typed by hand: the Worker's type check (no DOM library) covers this folder too.
  const baseUrl = props.baseUrl ?? (globalThis as { location?: { origin: string } }).location?.origin ?? "";
  // Only a new service makes new sockets: the other options are read once, as a client reads its own.
  const feeds = useMemo(() => new SharedFeeds({ baseUrl, lingerMs: props.lingerMs, client: props.clientOptions }), [baseUrl]);
  // Nothing to close on unmount: the hooks below let go of their sockets, which close after the linger.
  const value = useMemo(() => ({ feeds, token: props.token }), [feeds, props.token]);
  return createElement(RealtimeContext.Provider, { value }, props.children);
}

export interface FeedConnection {
  /** The shared client (null while signed out); use it for events no hook covers. */
  client: FeedClient | null;
  state: FeedState;
  /** The socket is open. */
  connected: boolean;
  /** The current connection's `feed.hello` (device feeds: `hello.state` is the device). */
  hello: HelloData | null;
  /** Why the server refused or closed the feed, in its own words. */
  error: ErrorFrameData | null;
  /** The last close and whether the client will reconnect by itself. */
  close: CloseInfo | null;
}

interface Status {
  state: FeedState;
  hello: HelloData | null;
  error: ErrorFrameData | null;
  close: CloseInfo | null;
}

const IDLE: Status = { state: "idle", hello: null, error: null, close: null };

/** The shared client for `target` under the provider's token, and its state as it changes. */
export function useFeedConnection(target: FeedTarget): FeedConnection {
  const ctx = useContext(RealtimeContext);
  if (!ctx) throw new Error("useRealtime… hooks need a <RealtimeProvider> above them");
  const { feeds, token } = ctx;
  const [client, setClient] = useState<FeedClient | null>(null);
  const [status, setStatus] = useState<Status>(IDLE);
  useEffect(() => {
    if (!token) return;
    const lease = feeds.acquire(token, target);
    const c = lease.client;
    let close: CloseInfo | null = null;
    const read = () => setStatus({ state: c.state, hello: c.hello, error: c.lastError, close });
    const offs = [
      c.onState((s) => {
        if (s.close) close = s.close;
        read();
      }),
      c.onHello(read),
      c.onError(read),
    ];
    setClient(c);
    read();
    return () => {
      for (const off of offs) off();
      lease.release();
      setClient(null);
      setStatus(IDLE);
    };
    // The target's parts, not the object: callers pass a fresh literal every render.
  }, [feeds, token, target.feed, target.deviceId, target.pool]);
  return { client, ...status, connected: status.state === "open" };
}
