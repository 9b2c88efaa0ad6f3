/**
 * The catalogue: every pool's device classes with what is free, the price under the caller's
 * pricing plan and whether their quota allows one (GET /scheduler/pools, any signed-in user).
 */
import { drizzle } from "drizzle-orm/d1";
import { requireUser } from "../auth";
import { newApp } from "../app-factory";
import { fundsFor } from "../billing/ledger";
import { pools } from "../db/schema";
import { offerOf } from "../domain/catalogue";
import { isoOrNull } from "../domain/time";
import { ok } from "../errors";
import { route } from "../openapi";
import { take } from "../rpc";
import { Catalogue } from "../schemas";
import { pool, reply, userQuota } from "./helpers";

export function catalogueRoutes() {
  const app = newApp();

  app.openapi(
    route({
      method: "get",
      operationId: "listPoolOffers",
      path: "/scheduler/pools",
      tags: ["allocations"],
      security: [{ bearer: [] }],
      summary: "What you may rent: each pool's device classes, free now, price per hour, and whether your quota allows one",
      description:
        "Devices in maintenance or offline are not offered. `nextFreeAt` is the earliest end of a held device when none is free. " +
        "Prices are your pricing plan's; reading them opens your billing account if you have none (as reading your balance does).",
      ok: { status: 200, schema: Catalogue, description: "The pools, by name" },
    }),
    async (c) => {
      const userId = requireUser(c).userId;
      const db = drizzle(c.env.DB);
      const [names, funds, quota] = await Promise.all([
        db.select({ name: pools.name }).from(pools).orderBy(pools.name),
        fundsFor(db, c.env, userId),
        take(userQuota(c.env, userId).getQuota(userId)),
      ]);
      const now = Date.now();
      const offers = await Promise.all(names.map(async (p) => take(pool(c.env, p.name).catalogue(p.name))));
      const items = offers.flatMap((r) =>
        r.ok
          ? [
              {
                pool: r.value.pool,
                strategy: r.value.strategy,
                free: r.value.classes.reduce((n, k) => n + k.free, 0),
                classes: r.value.classes.map((k) => {
                  const o = offerOf(k, funds, quota, now);
                  return { ...o, nextFreeAt: isoOrNull(o.nextFreeAt), currency: funds.currency, allowed: o.refusal === null };
                }),
              },
            ]
          : [],
      );
      return reply(c, ok({ pricingPlanId: funds.planId, currency: funds.currency, items }));
    },
  );

  return app;
}
