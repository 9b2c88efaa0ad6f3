/**
 * Device access (src/access.ts): the endpoints an operator registers with a device, and what the
 * holder of an allocation gets (the endpoints and a signed grant), only while it runs.
 */
import { z } from "@hono/zod-openapi";
import { ACCESS } from "../config";
import { orNull, Time } from "./common";
import { AllocationResult, AllocationView } from "./allocations";

const EndpointName = z
  .string()
  .regex(
    new RegExp(`^[A-Za-z][A-Za-z0-9_-]{0,${ACCESS.nameMaxLength - 1}}$`),
    `a letter, then letters, digits, _ or - (max ${ACCESS.nameMaxLength})`,
  );

export const AccessMap = z.record(z.string(), z.string().min(1).max(ACCESS.valueMaxLength)).openapi("AccessMap", {
  description: "Named endpoints of the device's node, e.g. `adb` (`host:port`) or `streamUrl`.",
  example: { adb: "10.0.4.17:5555", streamUrl: "wss://node-7.example.net/stream/dev-1" },
});

export const AccessBody = z
  .object({
    access: z
      .record(EndpointName, z.string().min(1).max(ACCESS.valueMaxLength))
      .refine((m) => Object.keys(m).length <= ACCESS.maxEndpoints, `at most ${ACCESS.maxEndpoints} endpoints`)
      .openapi({ description: `Replaces the device's whole map; \`{}\` clears it. At most ${ACCESS.maxEndpoints} endpoints.` }),
  })
  .strict()
  .openapi("DeviceAccessRequest");

export const AccessRegistered = z
  .object({
    deviceId: z.string(),
    endpoints: z.array(z.string()).openapi({ description: "The names now registered (values are shown to the holder only)." }),
  })
  .openapi("DeviceAccessRegistered");

const holder = {
  access: orNull(AccessMap, "How to reach the device: for the allocation's holder while it runs (null for anyone else, or after its end)."),
  accessGrant: orNull(
    z.string(),
    "A signed token for the device's node (ES256 JWT: `sub` you, `aud` the device, `allocationId`, `exp` at most the " +
      "allocation's end and an hour), verified offline with the keys at /.well-known/jwks.json. Renew it with " +
      "POST /scheduler/allocations/{id}/access. Null when `access` is, or when the service has no signing key.",
  ),
  accessGrantExpiresAt: orNull(Time, "When `accessGrant` expires."),
};

/** The allocate answer: the allocation and how to reach it. */
export const AllocatedResult = AllocationResult.extend(holder).openapi("AllocatedResult");
/** One allocation as its holder reads it. */
export const AllocationDetail = AllocationView.extend(holder).openapi("AllocationDetail");

export const DeviceAccess = z
  .object({ allocationId: z.string(), deviceId: z.string(), ...holder, access: AccessMap, accessGrant: holder.accessGrant })
  .openapi("DeviceAccess");

export const Jwks = z
  .object({
    keys: z.array(
      z
        .object({
          kty: z.literal("EC"),
          crv: z.literal("P-256"),
          x: z.string(),
          y: z.string(),
          kid: z.string(),
          alg: z.literal("ES256"),
          use: z.literal("sig"),
        })
        .openapi("Jwk"),
    ),
  })
  .openapi("Jwks", { description: "The public keys that verify access grants (empty when the service has no signing key)." });
