/**
 * POST /admin/users/{userId}/tokens/revoke (admins only: gated in app.ts): the user's bearer
 * tokens issued before a time are refused from then on (src/revocations.ts, checked in src/auth.ts).
 */
import { newApp } from "../app-factory";
import { auditEntry, auditStatement } from "../audit";
import { TOKENS } from "../config";
import { iso } from "../domain/time";
import { fail, ok } from "../errors";
import { jsonBody, route } from "../openapi";
import { revocationStatement, revocationWritten } from "../revocations";
import { RevokeTokensBody, RevokeTokensView, UserParam } from "../schemas";
import { reply, stored } from "./helpers";

export function tokenRoutes() {
  const app = newApp();

  app.openapi(
    route({
      method: "post",
      operationId: "revokeTokens",
      path: "/admin/users/{userId}/tokens/revoke",
      tags: ["tokens"],
      security: [{ bearer: [] }],
      summary: "Refuse the user's bearer tokens issued before a time (default now)",
      description:
        "From then on the user's tokens whose `iat` is before `before` get `401 TOKEN_REVOKED` (a token issued in the same " +
        "second counts as before). Takes effect at once in the isolate that answers this, and within " +
        `${TOKENS.revocationCacheMs / 1000} s in every other. ` +
        "A revocation never moves the time back: an earlier `before` than the one that stands changes nothing.",
      request: { params: UserParam, ...jsonBody(RevokeTokensBody, false) },
      ok: { status: 200, schema: RevokeTokensView, description: "The time that stands" },
    }),
    async (c) => {
      const { userId } = c.req.valid("param");
      const body = c.req.valid("json") as { before?: string } | undefined;
      const now = Date.now();
      const before = body?.before === undefined ? now : Date.parse(body.before);
      if (before > now)
        return reply(c, fail(400, "VALIDATION_FAILED", "`before` must not be in the future.", { before: body?.before, now: iso(now) }));
      const { notBefore, previous } = await stored(async () => {
        const prior = await c.env.DB.prepare("SELECT not_before FROM token_revocations WHERE user_id = ?")
          .bind(userId)
          .first<{ not_before: number }>();
        const previous = prior?.not_before ?? null;
        const change = { before: iso(before), previous: isoOrNull(previous), notBefore: iso(Math.max(before, previous ?? before)) };
        const audit = { ...auditEntry(c, "tokens.revoke", `user:${userId}`, change), at: now };
        // The revocation and its audit row commit together.
        const [written] = await c.env.DB.batch([
          revocationStatement(c.env.DB, userId, before, audit.actor, now),
          auditStatement(c.env.DB, audit),
        ]);
        return { notBefore: (written!.results[0] as { not_before: number }).not_before, previous };
      });
      revocationWritten(userId, notBefore, now);
      return reply(c, ok({ userId, notBefore: iso(notBefore), previous: isoOrNull(previous) }));
    },
  );

  return app;
}

const isoOrNull = (t: number | null) => (t === null ? null : iso(t));
