/** Thin glue between routes and objects: stubs by name, results to responses. */
import type { Context } from "hono";
import type { AppEnv } from "../auth";
import { shortDurationsAllowed } from "../config";
import type { Env } from "../env";
import type { DeviceSpec } from "../domain/types";
import { HttpError, errorBody, fail, type Failure, type Result } from "../errors";
import { missingDevice, missingPool } from "../registry";
import { take } from "../rpc";

export const userQuota = (env: Env, userId: string) => env.USER_QUOTA.getByName(userId);
export const device = (env: Env, deviceId: string) => env.DEVICE.getByName(deviceId);
export const pool = (env: Env, name: string) => env.DEVICE_POOL.getByName(name);

/**
 * Calls the pool named `name` when the registry knows it: addressing an unknown name would
 * create its object, so a name the caller gave is checked first (404 POOL_NOT_FOUND).
 */
export async function inPool<R>(
  env: Env,
  name: string,
  call: (p: ReturnType<typeof pool>) => PromiseLike<R>,
): Promise<Awaited<R> | Failure> {
  return (await missingPool(env, name)) ?? (await take(call(pool(env, name))));
}

/** Calls the device `deviceId` when the registry knows it (404 DEVICE_NOT_FOUND), as `inPool`. */
export async function onDevice<R>(
  env: Env,
  deviceId: string,
  call: (d: ReturnType<typeof device>) => PromiseLike<R>,
): Promise<Awaited<R> | Failure> {
  return (await missingDevice(env, deviceId)) ?? (await take(call(device(env, deviceId))));
}

/** A `Result` from an object becomes `status` JSON or the one error shape. */
export function reply<T>(c: Context<AppEnv>, r: Result<T>, status: 200 | 201 = 200) {
  if (!r.ok) return c.json(errorBody(r), r.status);
  // The request's log line names the allocation it made or acted on.
  const allocationId = (r.value as { allocationId?: unknown } | null)?.allocationId;
  if (typeof allocationId === "string") c.set("allocationId", allocationId);
  return c.json(r.value as object, status);
}

/** A request's optional spec: an absent field asks for nothing (0). */
export const requestSpec = (s?: Partial<DeviceSpec>): DeviceSpec => ({
  cpuCores: s?.cpuCores ?? 0,
  memoryMB: s?.memoryMB ?? 0,
  storageMB: s?.storageMB ?? 0,
});

/** Test-only switches (ALLOW_SHORT_DURATIONS): the first one used where they are off is refused. */
export function testOnlyRefusal(env: Pick<Env, "ALLOW_SHORT_DURATIONS">, fields: Record<string, unknown>, instead: string): Failure | null {
  if (shortDurationsAllowed(env)) return null;
  const used = Object.keys(fields).find((k) => fields[k] !== undefined);
  return used ? fail(400, "SHORT_DURATION_DISABLED", `\`${used}\` is a test-only switch and is off here; use ${instead}.`) : null;
}

/** D1 outside billing (the audit log, token revocations) did not answer: one 503, nothing changed. */
export async function stored<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof HttpError) throw err;
    throw new HttpError(
      fail(503, "STORAGE_UNAVAILABLE", "The data could not be read or written; nothing was changed. Try again shortly.", {
        cause: String(err).slice(0, 200),
      }),
    );
  }
}
