/** Thin glue between routes and objects: stubs by name, results to responses. */
import type { Context } from "hono";
import type { AppEnv } from "../auth";
import type { Env } from "../config";
import { errorBody, type Result } from "../errors";

export const userQuota = (env: Env, userId: string) => env.USER_QUOTA.getByName(userId);
export const device = (env: Env, deviceId: string) => env.DEVICE.getByName(deviceId);
export const pool = (env: Env, name: string) => env.DEVICE_POOL.getByName(name);

/** A `Result` from an object becomes `status` JSON or the one error shape. */
export function reply<T>(c: Context<AppEnv>, r: Result<T>, status: 200 | 201 = 200) {
  if (!r.ok) return c.json(errorBody(r), r.status);
  return c.json(r.value as object, status);
}
