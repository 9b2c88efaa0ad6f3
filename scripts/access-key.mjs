#!/usr/bin/env node
// `npm run access-key`: prints a new P-256 private key as a JWK, the form ACCESS_SIGNING_KEY takes
// (the key that signs device access grants, src/access.ts). Set it with
//   npm run access-key --silent | npx wrangler secret put ACCESS_SIGNING_KEY
// To rotate, first move the current value to ACCESS_SIGNING_KEY_PREVIOUS (still published at
// /.well-known/jwks.json, never signing), then set the new one; drop the previous after an hour.
// Plain Node (20+) with no dependencies: WebCrypto makes the key.
const { privateKey } = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
const { kty, crv, x, y, d } = await crypto.subtle.exportKey("jwk", privateKey);
process.stdout.write(JSON.stringify({ kty, crv, x, y, d }) + "\n");
