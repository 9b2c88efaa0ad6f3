/**
 * Which users exist, for the admin writes that name one (quota updates and renewals, a user's
 * pricing plan, adjustments, an admin's top-up): a user exists once they have a billing account,
 * a row in D1 `accounts` — what GET /admin/users lists. An account opens on the user's first
 * allocation, queue join, booking or balance read, on a top-up from the payment service and on
 * booked usage (src/billing/ledger.ts). One read by primary key, so a mistyped id is refused
 * before any Durable Object is addressed or any row written.
 *
 * A write that means to bring a user into being asks with `?create=true` (CreateQuery); the route
 * then opens the account on its usual path, or before a change that does not open one itself.
 */
import type { Env } from "../env";
import { fail, ok, type Result } from "../errors";
import { billing } from "./billing-shared";

export const userNotFound = (userId: string) =>
  fail(404, "USER_NOT_FOUND", `No user "${userId}": nobody with this id has used the service. Add ?create=true to create them.`, {
    userId,
  });

/** Whether `userId` has a billing account (D1 failing: 503 BILLING_UNAVAILABLE). */
export async function userExists(env: Pick<Env, "DB">, userId: string): Promise<boolean> {
  return billing(async () => (await env.DB.prepare("SELECT 1 AS found FROM accounts WHERE user_id = ?").bind(userId).first()) !== null);
}

/**
 * Before an admin's write naming `userId`: `404 USER_NOT_FOUND` for an unknown user unless the
 * request asked to create them; `created` says the write is about to open their account.
 */
export async function addressedUser(env: Pick<Env, "DB">, userId: string, create: boolean): Promise<Result<{ created: boolean }>> {
  if (await userExists(env, userId)) return ok({ created: false });
  return create ? ok({ created: true }) : userNotFound(userId);
}

/** `created: true` for the audit row of the write that created the user (nothing otherwise). */
export const created = (u: { created: boolean }): { created?: true } => (u.created ? { created: true } : {});
