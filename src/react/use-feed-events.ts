/**
 * What every `useRealtime…` hook does: watch some event types of one feed, drop those another
 * user or device caused, call the caller's callback for each that is left, and keep the latest
 * ones for rendering. The hooks differ only in which types, filters and callback names.
 */
import { useEffect, useRef, useState } from "react";
import type { FeedEvent, FeedEventType, FeedEvents } from "../feed/protocol";
import { useFeedConnection, type FeedConnection } from "./provider";
import type { FeedTarget } from "./shared-feeds";

/** A callback gets the event's data (the old payload's fields) and the whole envelope (seq, userId, timestamp). */
export type EventCallback<K extends FeedEventType> = (data: FeedEvents[K], event: FeedEvent<K>) => void;

export interface Watch<K extends FeedEventType> {
  target: FeedTarget;
  types: readonly K[];
  /** Keep only events of this user (the envelope's `userId`). */
  userId?: string;
  /** Keep only events about this device (the data's `deviceId`). */
  deviceId?: string;
  /** How many of the latest events to keep (default 50). */
  maxEvents?: number;
  /** The caller's callback per type. */
  callbacks: { [P in K]?: EventCallback<P> };
  /** Every kept event, e.g. to invalidate a query cache. */
  onEvent?: (event: FeedEvent<K>) => void;
}

export interface FeedEventsResult<K extends FeedEventType> extends FeedConnection {
  /** The newest kept event. */
  lastEvent: FeedEvent<K> | null;
  /** The kept events, newest first, at most `maxEvents`. */
  events: FeedEvent<K>[];
  /** The newest kept event of each type. */
  latest: { [P in K]?: FeedEvent<P> };
}

interface Seen<K extends FeedEventType> {
  lastEvent: FeedEvent<K> | null;
  events: FeedEvent<K>[];
  latest: { [P in K]?: FeedEvent<P> };
}

const NONE: Seen<never> = { lastEvent: null, events: [], latest: {} };

export function useFeedEvents<K extends FeedEventType>(watch: Watch<K>): FeedEventsResult<K> {
  const connection = useFeedConnection(watch.target);
  const [seen, setSeen] = useState<Seen<K>>(NONE);
  // Callbacks change every render; the subscription reads the current ones instead of resubscribing.
  const calls = useRef({ callbacks: watch.callbacks, onEvent: watch.onEvent });
  useEffect(() => {
    calls.current = { callbacks: watch.callbacks, onEvent: watch.onEvent };
  });
  const { client } = connection;
  const { userId, deviceId } = watch;
  const max = watch.maxEvents ?? 50;
  const types = watch.types.join(",");
  useEffect(() => {
    // What was kept under other filters or another socket is not this view's.
    setSeen(NONE);
    if (!client) return;
    const wanted = new Set<string>(types.split(","));
    return client.onEvent((e) => {
      if (!wanted.has(e.type)) return;
      if (userId !== undefined && e.userId !== userId) return;
      if (deviceId !== undefined && (e.data as { deviceId?: unknown }).deviceId !== deviceId) return;
      const event = e as FeedEvent<K>;
      setSeen((s) => ({
        lastEvent: event,
        events: [event, ...s.events].slice(0, max),
        latest: { ...s.latest, [event.type]: event },
      }));
      const callback = calls.current.callbacks[event.type as K] as EventCallback<K> | undefined;
      callback?.(event.data, event);
      calls.current.onEvent?.(event);
    });
  }, [client, types, userId, deviceId, max]);
  return { ...connection, ...seen };
}
