/**
 * The operators' object (AdminFeed) as others reach it: there is one, by this name. Objects
 * that hold feeds report their open socket counts to it (`socketReporter`), which the
 * metrics endpoint sums.
 */
import type { Env } from "../env";
import type { FeedKind } from "../feed/protocol";
import { take } from "../rpc";

export const ADMIN_FEED_NAME = "operators";

export const adminFeed = (env: Pick<Env, "ADMIN_FEED">) => env.ADMIN_FEED.getByName(ADMIN_FEED_NAME);

/** For a feed-holding object's FeedHub (`onSockets`): tells the operators' object its open count. */
export function socketReporter(env: Env, ctx: DurableObjectState, feed: FeedKind): (open: number, seq: number) => Promise<unknown> {
  const object = ctx.id.toString();
  return (open, seq) => take(adminFeed(env).socketsOpen(object, feed, open, seq));
}
