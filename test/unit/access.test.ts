/**
 * Access grants (src/access.ts) with Node's WebCrypto, the signing key's checks (src/config.ts)
 * and the device's access map (src/stores/device-access.ts) over SQLite in Node.
 */
import { describe, expect, it } from "vitest";
import { jwks, signGrant } from "../../src/access";
import { ACCESS, signingKeyProblem } from "../../src/config";
import { Sql } from "../../src/objects/sql";
import { ACCESS_SCHEMA, AccessStore } from "../../src/stores/device-access";
import { memoryStorage } from "./storage";

const T0 = Date.UTC(2030, 0, 1);
const HOUR = 3600_000;

async function newKey(): Promise<string> {
  const { privateKey } = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign"])) as CryptoKeyPair;
  const { kty, crv, x, y, d } = (await crypto.subtle.exportKey("jwk", privateKey)) as JsonWebKey;
  return JSON.stringify({ kty, crv, x, y, d });
}

const part = (s: string) => JSON.parse(Buffer.from(s, "base64url").toString("utf8"));
const claims = { userId: "u1", deviceId: "dev-1", allocationId: "alc_1" };

describe("signGrant and jwks", () => {
  it("signs a grant its published key verifies; exp is the allocation's end or an hour, the sooner", async () => {
    const env = { ACCESS_SIGNING_KEY: await newKey() };
    const long = await signGrant(env, { ...claims, expiresAt: T0 + 3 * HOUR }, T0);
    const short = await signGrant(env, { ...claims, expiresAt: T0 + 10 * 60_000 + 999 }, T0);
    expect(long!.expiresAt).toBe(T0 + HOUR);
    // Whole seconds, rounded down: never past the end.
    expect(short!.expiresAt).toBe(T0 + 10 * 60_000);
    const [h, p, sig] = long!.token.split(".") as [string, string, string];
    const { keys } = await jwks(env);
    expect(keys).toHaveLength(1);
    expect(part(h)).toEqual({ alg: "ES256", typ: "JWT", kid: keys[0]!.kid });
    expect(part(p)).toMatchObject({
      iss: ACCESS.issuer,
      sub: "u1",
      aud: "dev-1",
      allocationId: "alc_1",
      iat: T0 / 1000,
      exp: T0 / 1000 + 3600,
    });
    expect(keys[0]).not.toHaveProperty("d");
    const key = await crypto.subtle.importKey("jwk", keys[0]!, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
    const data = new TextEncoder().encode(`${h}.${p}`);
    expect(await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, Buffer.from(sig, "base64url"), data)).toBe(true);
    // A changed payload does not verify.
    const forged = new TextEncoder().encode(`${h}.${Buffer.from(JSON.stringify({ ...part(p), sub: "u2" })).toString("base64url")}`);
    expect(await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, Buffer.from(sig, "base64url"), forged)).toBe(false);
  });

  it("the kid is the key's RFC 7638 thumbprint; the previous key is published after the current one; no key, no grant", async () => {
    // RFC 7638's own example is RSA; for EC the members are crv, kty, x, y in that order.
    const current = await newKey();
    const previous = await newKey();
    const { keys } = await jwks({ ACCESS_SIGNING_KEY: current, ACCESS_SIGNING_KEY_PREVIOUS: previous });
    const { crv, kty, x, y } = JSON.parse(current);
    const thumb = Buffer.from(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(JSON.stringify({ crv, kty, x, y })))).toString(
      "base64url",
    );
    expect(keys.map((k) => k.kid)).toEqual([thumb, expect.any(String)]);
    expect(keys[1]!.x).toBe(JSON.parse(previous).x);
    expect(await jwks({})).toEqual({ keys: [] });
    expect(await signGrant({}, { ...claims, expiresAt: T0 + HOUR }, T0)).toBeNull();
    // Every grant is its own (a random jti and ECDSA's random k).
    const env = { ACCESS_SIGNING_KEY: current };
    const [a, b] = await Promise.all([
      signGrant(env, { ...claims, expiresAt: T0 + HOUR }, T0),
      signGrant(env, { ...claims, expiresAt: T0 + HOUR }, T0),
    ]);
    expect(a!.token).not.toBe(b!.token);
  });

  it("signingKeyProblem: a P-256 private JWK, and the committed example only in local development", async () => {
    expect(signingKeyProblem("K", await newKey(), false)).toBeNull();
    expect(signingKeyProblem("K", "nope", false)).toMatch(/K is not JSON/);
    expect(signingKeyProblem("K", "null", false)).toMatch(/P-256 private key/);
    const { d: _d, ...pub } = JSON.parse(await newKey());
    expect(signingKeyProblem("K", JSON.stringify(pub), false)).toMatch(/P-256 private key/);
    expect(signingKeyProblem("K", JSON.stringify({ ...pub, d: "x", crv: "P-384" }), false)).toMatch(/P-256 private key/);
    const example = JSON.stringify({ ...pub, d: "x", x: ACCESS.exampleKeyX });
    expect(signingKeyProblem("K", example, false)).toMatch(/committed example key/);
    expect(signingKeyProblem("K", example, true)).toBeNull();
  });
});

describe("AccessStore", () => {
  it("replaces the map whole, in name order; an empty map clears it", () => {
    const sql = new Sql(memoryStorage() as unknown as DurableObjectStorage);
    sql.migrate([{ name: "2", sql: ACCESS_SCHEMA }]);
    const store = new AccessStore(sql);
    expect(store.map()).toEqual({});
    store.replace({ streamUrl: "wss://n/s", adb: "h:5555" }, T0);
    expect(store.map()).toEqual({ adb: "h:5555", streamUrl: "wss://n/s" });
    expect(store.names()).toEqual(["adb", "streamUrl"]);
    store.replace({ adb: "h:5556" }, T0 + 1);
    expect(store.map()).toEqual({ adb: "h:5556" });
    store.replace({}, T0 + 2);
    expect(store.names()).toEqual([]);
  });
});
