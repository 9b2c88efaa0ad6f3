/**
 * Device access: operators (admin token) or the device-service (service token) register how to
 * reach a device; the holder of an allocation renews its grant; device nodes fetch the keys that
 * verify grants (public). The holder's fields of the allocate answer and of one allocation are
 * added in src/routes/scheduler.ts with the same `holderFields`.
 */
import { auditFrom } from "../audit";
import { requireUser } from "../auth";
import { holderFields, jwks } from "../access";
import { newApp } from "../app-factory";
import { fail, ok } from "../errors";
import { jsonBody, route } from "../openapi";
import { take } from "../rpc";
import { AccessBody, AccessRegistered, AllocationIdParam, DeviceAccess, DeviceIdParam, Jwks } from "../schemas";
import { allocationNotFound, ownerOf } from "./scheduler";
import { device, onDevice, reply, userQuota } from "./helpers";

export function accessRoutes() {
  const app = newApp();

  // One handler at two paths: /admin/* is gated to admins, /api/internal/* to the service token (src/app.ts).
  const register = (path: string, operationId: string, security: { [scheme: string]: string[] }[]) =>
    route({
      method: "put",
      operationId,
      path,
      tags: [path.startsWith("/admin") ? "fleet" : "internal"],
      security,
      summary: "Register how to reach the device (its node's endpoints); the map is replaced whole",
      description:
        "The values go only to the holder of the device's running allocation (allocate answer, GET /scheduler/allocations/{id}, " +
        "the device feed's hello), never to anyone else, after the allocation's end, or into logs; the audit log records the names.",
      request: { params: DeviceIdParam, ...jsonBody(AccessBody) },
      ok: { status: 200, schema: AccessRegistered, description: "The endpoint names now registered" },
    });
  for (const r of [
    register("/admin/devices/{id}/access", "setDeviceAccess", [{ bearer: [] }]),
    register("/api/internal/devices/{id}/access", "reportDeviceAccess", [{ service: [] }]),
  ])
    app.openapi(r, async (c) => {
      const { id } = c.req.valid("param");
      const r = await onDevice(c.env, id, (d) => d.setAccess(c.req.valid("json").access));
      if (r.ok) await auditFrom(c, "device.access", `device:${id}`, { endpoints: r.value.endpoints });
      return reply(c, r);
    });

  app.openapi(
    route({
      method: "post",
      operationId: "renewAccessGrant",
      path: "/scheduler/allocations/{id}/access",
      tags: ["allocation"],
      security: [{ bearer: [] }],
      summary: "How to reach your device, with a fresh access grant (while the allocation runs)",
      description:
        "Only the allocation's holder gets an answer: an admin reading another user's allocation is refused (403), " +
        "an ended allocation is 409 ALLOCATION_ENDED. A grant lasts until the allocation's end, at most an hour.",
      request: { params: AllocationIdParam },
      ok: { status: 200, schema: DeviceAccess, description: "The endpoints and a fresh grant" },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const owner = ownerOf(c, id);
      if (!owner) return reply(c, allocationNotFound(id));
      if (owner !== requireUser(c).userId)
        return reply(c, fail(403, "FORBIDDEN", "Only the allocation's holder receives the device's access."));
      const a = await take(userQuota(c.env, owner).getAllocation(owner, id));
      if (!a.ok) return reply(c, a);
      const ended = fail(409, "ALLOCATION_ENDED", "The allocation has ended; its device's access is no longer given.", {
        allocationId: id,
      });
      if (a.value.status !== "active" || !a.value.deviceId) return reply(c, ended);
      const held = await take(device(c.env, a.value.deviceId).accessFor(id, owner));
      if (!held.ok) return reply(c, held);
      if (!held.value) return reply(c, ended);
      const claims = { userId: owner, deviceId: a.value.deviceId, allocationId: id, expiresAt: held.value.expiresAt };
      const fields = await holderFields(c.env, claims, held.value.access);
      return reply(c, ok({ allocationId: id, deviceId: a.value.deviceId, ...fields, access: held.value.access }));
    },
  );

  app.openapi(
    route({
      method: "get",
      operationId: "getAccessKeys",
      path: "/.well-known/jwks.json",
      tags: ["allocation"],
      security: [],
      summary: "The public keys that verify access grants (JWK set), for device nodes",
      ok: { status: 200, schema: Jwks, description: "The key set" },
    }),
    async (c) => {
      c.header("Cache-Control", "public, max-age=300");
      return c.json(await jwks(c.env), 200);
    },
  );

  return app;
}
