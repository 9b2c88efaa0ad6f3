/** The catalogue (GET /scheduler/pools, src/routes/catalogue.ts): what a signed-in user may rent. */
import { z } from "@hono/zod-openapi";
import { STRATEGIES } from "../config";
import { ErrorCode, Int, Minor, Time, orNull } from "./common";

export const DeviceOffer = z
  .object({
    cpuCores: Int,
    memoryMB: Int,
    storageMB: Int,
    devices: Int.openapi({ description: "Devices of this spec in service (available or allocated)" }),
    free: Int.openapi({ description: "Free now" }),
    nextFreeAt: Time.nullable().openapi({
      description: "When none is free: when the first held one is due to end (it may be extended). Null when one is free or none is held.",
    }),
    pricePerHourMinor: Minor.openapi({ description: "One hour of such a device under your pricing plan, in minor units of `currency`" }),
    currency: z.string(),
    allowed: z.boolean().openapi({ description: "Your quota lets you take one now (for the default duration)" }),
    refusal: orNull(
      z.object({ code: ErrorCode, message: z.string() }).openapi("QuotaRefusal"),
      "Why not, as allocate would say it (QUOTA_PER_DEVICE_EXCEEDED, QUOTA_DEVICES_EXCEEDED, …); null when allowed",
    ),
  })
  .openapi("DeviceOffer");

export const PoolOffer = z
  .object({
    pool: z.string(),
    strategy: z.enum(STRATEGIES),
    free: Int.openapi({ description: "Free devices of every class" }),
    classes: z.array(DeviceOffer).openapi({ description: "One per device spec, smallest first" }),
  })
  .openapi("PoolOffer");

export const Catalogue = z.object({ pricingPlanId: z.string(), currency: z.string(), items: z.array(PoolOffer) }).openapi("Catalogue");
