/** Quota routes (paths kept from the old system). */
import { readableUser, requireAdmin } from "../auth";
import { newApp } from "../app-factory";
import { auditFrom } from "../audit";
import type { Quota } from "../domain/types";
import { mapOk, ok } from "../errors";
import { jsonBody, route } from "../openapi";
import { CreateQuery, QuotaUpdateBody, QuotaView, RenewBody, UserParam } from "../schemas";
import { reply, userQuota } from "./helpers";
import { addressedUser, created } from "./addressed-user";
import { billing } from "./billing-shared";
import { openAccounts } from "../billing/ledger";
import { dbOf } from "../db/client";
import type { Env } from "../env";
import { quotaView } from "../views";
import { take } from "../rpc";

const security = [{ bearer: [] }];

export function quotaRoutes() {
  const app = newApp();

  app.openapi(
    route({
      method: "get",
      operationId: "getQuota",
      path: "/quotas/user/{userId}",
      tags: ["quota"],
      security,
      summary: "A user's quota and usage (the user or an admin)",
      request: { params: UserParam },
      ok: { status: 200, schema: QuotaView, description: "Quota" },
    }),
    async (c) => {
      const userId = readableUser(c, c.req.valid("param").userId);
      return reply(c, ok(quotaView(await take(userQuota(c.env, userId).getQuota(userId)))));
    },
  );

  app.openapi(
    route({
      method: "put",
      operationId: "updateQuota",
      path: "/quotas/user/{userId}",
      tags: ["quota"],
      security,
      summary: "Set tier, limits, suspension or validity (admin; an unknown user is 404 unless ?create=true)",
      request: { params: UserParam, query: CreateQuery, ...jsonBody(QuotaUpdateBody) },
      ok: { status: 200, schema: QuotaView, description: "Updated quota" },
    }),
    async (c) => {
      requireAdmin(c);
      const { userId } = c.req.valid("param");
      const b = c.req.valid("json");
      const user = await existing(c.env, userId, c.req.valid("query").create);
      if (!user.ok) return reply(c, user);
      const r = await take(
        userQuota(c.env, userId).updateQuota(userId, {
          plan: b.tier,
          limits: b.limits,
          suspended: b.suspended,
          validUntil: b.validUntil ? Date.parse(b.validUntil) : undefined,
        }),
      );
      if (r.ok) await auditFrom(c, "quota.update", `user:${userId}`, { ...b, ...created(user.value), after: quotaSettings(r.value) });
      return reply(c, mapOk(r, quotaView));
    },
  );

  app.openapi(
    route({
      method: "post",
      operationId: "renewQuota",
      path: "/quotas/renew/{userId}",
      tags: ["quota"],
      security,
      summary: "Extend validity by N days (admin; default 30; an unknown user is 404 unless ?create=true)",
      request: { params: UserParam, query: CreateQuery, ...jsonBody(RenewBody) },
      ok: { status: 200, schema: QuotaView, description: "Renewed quota" },
    }),
    async (c) => {
      requireAdmin(c);
      const { userId } = c.req.valid("param");
      const { extensionDays } = c.req.valid("json");
      const user = await existing(c.env, userId, c.req.valid("query").create);
      if (!user.ok) return reply(c, user);
      const r = await take(userQuota(c.env, userId).renew(userId, extensionDays));
      if (r.ok)
        await auditFrom(c, "quota.renew", `user:${userId}`, {
          extensionDays,
          ...created(user.value),
          validUntil: new Date(r.value.validUntil).toISOString(),
        });
      return reply(c, mapOk(r, quotaView));
    },
  );

  return app;
}

/**
 * The user a quota write names, before their object is addressed: unknown is 404 unless `create`,
 * which opens their account first (the quota's object opens none), so they are a user like any other.
 */
async function existing(env: Env, userId: string, create: boolean) {
  const user = await addressedUser(env, userId, create);
  if (user.ok && user.value.created) await billing(() => openAccounts(dbOf(env), env, [userId]));
  return user;
}

/** What an admin sets on a quota, as it stands after a change (for its audit row). */
const quotaSettings = (q: Quota) => ({
  tier: q.plan,
  limits: q.limits,
  suspended: q.suspended,
  validUntil: new Date(q.validUntil).toISOString(),
});
