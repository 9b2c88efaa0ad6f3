/**
 * Which pools and devices exist: the D1 tables `pools` and `devices`, written when an admin
 * registers, moves or removes a device. The Worker asks here before it addresses a pool or device
 * object for a name it was given, because addressing an object creates it (and its schema): an
 * unknown name is answered 404 and leaves nothing behind.
 *
 * A name found is remembered by the isolate for `REGISTRY.knownTtlMs`, so the allocation path
 * reads D1 once a minute per pool, not per request; a name not found is asked again each time
 * (the rate limits bound how often). A device removed elsewhere may stay "known" here that long,
 * which is harmless: its object exists and answers DEVICE_NOT_FOUND itself.
 */
import { REGISTRY } from "./config";
import type { Env } from "./env";
import { fail, type Failure } from "./errors";

type Kind = "pool" | "device";
const known = new Map<string, number>();
const key = (kind: Kind, name: string) => `${kind}\0${name}`;

function remembered(kind: Kind, name: string, now: number): boolean {
  const until = known.get(key(kind, name));
  if (until === undefined) return false;
  if (until > now) return true;
  known.delete(key(kind, name));
  return false;
}

function remember(kind: Kind, name: string, now: number): void {
  // A long-lived isolate meets many names; the oldest go first.
  if (known.size >= REGISTRY.cacheEntries) known.delete(known.keys().next().value!);
  known.set(key(kind, name), now + REGISTRY.knownTtlMs);
}

async function exists(env: Env, kind: Kind, name: string): Promise<boolean> {
  const now = Date.now();
  if (remembered(kind, name, now)) return true;
  const row =
    kind === "pool"
      ? await env.DB.prepare("SELECT 1 AS found FROM pools WHERE name = ?").bind(name).first()
      : await env.DB.prepare("SELECT 1 AS found FROM devices WHERE device_id = ?").bind(name).first();
  if (row) remember(kind, name, now);
  return row !== null;
}

export const poolNotFound = (pool: string): Failure => fail(404, "POOL_NOT_FOUND", `Pool "${pool}" has no devices.`, { pool });
export const deviceNotFound = (): Failure => fail(404, "DEVICE_NOT_FOUND", "No such device.");

/** Null when the pool exists, else its 404. */
export async function missingPool(env: Env, pool: string): Promise<Failure | null> {
  return (await exists(env, "pool", pool)) ? null : poolNotFound(pool);
}

/** Null when the device exists, else its 404. */
export async function missingDevice(env: Env, deviceId: string): Promise<Failure | null> {
  return (await exists(env, "device", deviceId)) ? null : deviceNotFound();
}

/** Before a device object is first addressed: the device and its pool are entered (kept if already there). */
export async function enterDevice(env: Env, deviceId: string, pool: string): Promise<void> {
  const now = Date.now();
  await env.DB.batch([
    env.DB.prepare("INSERT INTO pools (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING").bind(pool, now),
    env.DB.prepare("INSERT INTO devices (device_id, pool, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING").bind(deviceId, pool, now),
  ]);
}

/** A device moved to `pool` (which comes into being with it). */
export async function moveDevice(env: Env, deviceId: string, pool: string): Promise<void> {
  await env.DB.batch([
    env.DB.prepare("INSERT INTO pools (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING").bind(pool, Date.now()),
    env.DB.prepare("UPDATE devices SET pool = ? WHERE device_id = ?").bind(pool, deviceId),
  ]);
}

/** A device removed: its name is unknown again (its pool stays, with its history). */
export async function dropDevice(env: Env, deviceId: string): Promise<void> {
  await env.DB.prepare("DELETE FROM devices WHERE device_id = ?").bind(deviceId).run();
  known.delete(key("device", deviceId));
}

/** Every registered pool, by name (the lists over all pools ask each of them). */
export async function poolNames(env: Env): Promise<string[]> {
  const { results } = await env.DB.prepare("SELECT name FROM pools ORDER BY name").all<{ name: string }>();
  return results.map((r) => r.name);
}

/** Which of `deviceIds` are registered (one D1 query, whatever their number). */
export async function registeredDevices(env: Env, deviceIds: readonly string[]): Promise<Set<string>> {
  const { results } = await env.DB.prepare("SELECT device_id FROM devices WHERE device_id IN (SELECT value FROM json_each(?))")
    .bind(JSON.stringify(deviceIds))
    .all<{ device_id: string }>();
  return new Set(results.map((r) => r.device_id));
}

/** `enterDevice` for many devices in one D1 batch of two statements (a bulk import). */
export async function enterDevices(env: Env, devices: readonly { deviceId: string; pool: string }[]): Promise<void> {
  if (devices.length === 0) return;
  const now = Date.now();
  const list = JSON.stringify(devices.map((d) => ({ d: d.deviceId, p: d.pool })));
  await env.DB.batch([
    env.DB.prepare(
      `INSERT INTO pools (name, created_at) SELECT DISTINCT json_extract(value, '$.p'), ? FROM json_each(?)
       WHERE true ON CONFLICT DO NOTHING`,
    ).bind(now, list),
    env.DB.prepare(
      `INSERT INTO devices (device_id, pool, created_at) SELECT json_extract(value, '$.d'), json_extract(value, '$.p'), ? FROM json_each(?)
       WHERE true ON CONFLICT DO NOTHING`,
    ).bind(now, list),
  ]);
}
