/**
 * Access grants: a short-lived ES256 JWT that tells a device node "this user holds this device
 * under this allocation until `exp`", so the node can let the holder in (ADB, a screen stream)
 * without calling us. Signed through WebCrypto with `ACCESS_SIGNING_KEY` (a P-256 private JWK,
 * a secret); nodes verify offline with the public keys at `/.well-known/jwks.json`, found by the
 * `kid` header (the key's RFC 7638 thumbprint). `ACCESS_SIGNING_KEY_PREVIOUS` is published, never
 * used to sign, so nodes keep accepting grants signed before a rotation until they expire.
 *
 * Without a signing key, grants are off: answers carry `accessGrant: null` and the key set is empty.
 */
import { ACCESS } from "./config";
import { b64url } from "./encoding";

export interface GrantClaims {
  userId: string;
  deviceId: string;
  allocationId: string;
  /** The allocation's end (epoch ms): a grant never outlives it. */
  expiresAt: number;
}

export interface Grant {
  token: string;
  /** When the grant expires (epoch ms): the allocation's end, or an hour from now if sooner. */
  expiresAt: number;
}

interface SigningKey {
  kid: string;
  key: CryptoKey;
  publicJwk: JsonWebKey & { kid: string; alg: "ES256"; use: "sig" };
}

type Keys = { ACCESS_SIGNING_KEY?: string; ACCESS_SIGNING_KEY_PREVIOUS?: string };

const encoder = new TextEncoder();
// Importing a key costs a few hundred microseconds; an isolate keeps what it imported.
const imported = new Map<string, Promise<SigningKey>>();

function load(value: string): Promise<SigningKey> {
  let key = imported.get(value);
  if (!key) {
    key = (async () => {
      const jwk = JSON.parse(value) as JsonWebKey;
      const pub = { kty: "EC", crv: "P-256", x: jwk.x!, y: jwk.y! };
      // RFC 7638: the SHA-256 of the required members, in lexicographic order, with no spaces.
      const thumb = await crypto.subtle.digest(
        "SHA-256",
        encoder.encode(JSON.stringify({ crv: pub.crv, kty: pub.kty, x: pub.x, y: pub.y })),
      );
      const kid = b64url(new Uint8Array(thumb));
      const signing = await crypto.subtle.importKey("jwk", { ...pub, d: jwk.d! }, { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
      return { kid, key: signing, publicJwk: { ...pub, kid, alg: "ES256", use: "sig" } };
    })();
    imported.set(value, key);
    // A bad value is not kept: the next call tries again (and fails the same way, loudly).
    key.catch(() => imported.delete(value));
  }
  return key;
}

/** A grant for the holder of an allocation, or null when grants are off (no signing key). */
export async function signGrant(env: Keys, c: GrantClaims, now = Date.now()): Promise<Grant | null> {
  if (!env.ACCESS_SIGNING_KEY) return null;
  const k = await load(env.ACCESS_SIGNING_KEY);
  const expiresAt = Math.min(c.expiresAt, now + ACCESS.grantMaxSeconds * 1000);
  const part = (v: unknown) => b64url(encoder.encode(JSON.stringify(v)));
  const jti = b64url(crypto.getRandomValues(new Uint8Array(12)));
  const payload = {
    iss: ACCESS.issuer,
    sub: c.userId,
    aud: c.deviceId,
    allocationId: c.allocationId,
    iat: Math.floor(now / 1000),
    exp: Math.floor(expiresAt / 1000),
    jti,
  };
  const data = `${part({ alg: "ES256", typ: "JWT", kid: k.kid })}.${part(payload)}`;
  // WebCrypto's ECDSA signature is r‖s (64 bytes), which is exactly JWS's ES256 form.
  const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, k.key, encoder.encode(data));
  return { token: `${data}.${b64url(new Uint8Array(sig))}`, expiresAt: payload.exp * 1000 };
}

/** The public keys a device node verifies grants with: the signing key first, then the previous one. */
export async function jwks(env: Keys): Promise<{ keys: SigningKey["publicJwk"][] }> {
  const values = [env.ACCESS_SIGNING_KEY, env.ACCESS_SIGNING_KEY_PREVIOUS].filter((v): v is string => !!v);
  const keys = await Promise.all(values.map(load));
  return { keys: keys.map((k) => k.publicJwk) };
}

/** The holder's fields of an answer: the access map and a fresh grant (all null when `access` is: not the holder, or ended). */
export async function holderFields(
  env: Keys,
  c: GrantClaims,
  access: Record<string, string> | null,
): Promise<{ access: Record<string, string> | null; accessGrant: string | null; accessGrantExpiresAt: string | null }> {
  const grant = access ? await signGrant(env, c) : null;
  return { access, accessGrant: grant?.token ?? null, accessGrantExpiresAt: grant ? new Date(grant.expiresAt).toISOString() : null };
}
