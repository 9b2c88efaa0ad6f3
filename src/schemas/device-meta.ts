/**
 * A device's metadata in requests and answers: `name`, `model`, `osVersion` and `labels`
 * (limits: DEVICE_META in src/config.ts). Used by the device schemas (./admin.ts) and the fleet's
 * (./fleet.ts).
 */
import { z } from "@hono/zod-openapi";
import { DEVICE_META } from "../config";

/** Printable text: no control characters, no space at either end. */
const text = (max: number, what: string) =>
  z
    .string()
    .min(1)
    .max(max)
    .regex(/^[^\s\p{Cc}](?:[^\p{Cc}]*[^\s\p{Cc}])?$/u, `${what}: printable text without control characters or spaces at either end`);

export const LABEL_KEY = new RegExp(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,${DEVICE_META.labelKeyMax - 1}}$`);
export const LABEL_VALUE = new RegExp(`^[A-Za-z0-9._:/@+-]{1,${DEVICE_META.labelValueMax}}$`);

export const DeviceName = text(DEVICE_META.nameMax, "name").openapi({
  description: "What operators call the device",
  example: "Pixel 8 #12",
});
export const DeviceModel = text(DEVICE_META.modelMax, "model").openapi({ description: "The device's model", example: "Pixel 8" });
export const OsVersion = text(DEVICE_META.osVersionMax, "osVersion").openapi({ description: "Its OS version", example: "Android 14" });

const LabelKey = z.string().regex(LABEL_KEY, `a letter or digit, then letters, digits and . _ / - (at most ${DEVICE_META.labelKeyMax})`);
const LabelValue = z.string().regex(LABEL_VALUE, `1 to ${DEVICE_META.labelValueMax} letters, digits and . _ - : / @ +`);

export const Labels = z
  .record(LabelKey, LabelValue)
  .refine((l) => Object.keys(l).length <= DEVICE_META.maxLabels, `at most ${DEVICE_META.maxLabels} labels`)
  .openapi("Labels", {
    description:
      `Key-value labels, at most ${DEVICE_META.maxLabels}: keys a letter or digit then letters, digits and \`. _ / -\` ` +
      `(at most ${DEVICE_META.labelKeyMax}), values 1 to ${DEVICE_META.labelValueMax} letters, digits and \`. _ - : / @ +\`. ` +
      "Sent whole: an update replaces the map (`{}` clears it).",
    maxProperties: DEVICE_META.maxLabels,
    example: { region: "eu-west", tier: "gold" },
  });

/** Registration: every field optional. */
export const metaFields = {
  name: DeviceName.optional(),
  model: DeviceModel.optional(),
  osVersion: OsVersion.optional(),
  labels: Labels.optional(),
};

/** An update: absent is unchanged, `null` clears a text field. */
export const metaPatchFields = {
  name: DeviceName.nullable().optional(),
  model: DeviceModel.nullable().optional(),
  osVersion: OsVersion.nullable().optional(),
  labels: Labels.optional(),
};

/** In answers. */
export const metaViewFields = {
  name: z.string().nullable().openapi({ description: "null: not given" }),
  model: z.string().nullable(),
  osVersion: z.string().nullable(),
  labels: z.record(z.string(), z.string()).openapi({ description: "Key-value labels, keys in order ({}: none)" }),
};
