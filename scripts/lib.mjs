// Helpers shared by scripts/dev.mjs and scripts/token.mjs. Plain Node (20+) ESM with no
// dependencies, so the scripts never need the TypeScript sources or node_modules.
import { createHash, createHmac } from "node:crypto";
import { appendFileSync, copyFileSync, existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const devVarsPath = path.join(root, ".dev.vars");
const examplePath = path.join(root, ".dev.vars.example");

/**
 * Creates .dev.vars from .dev.vars.example when it is missing, and adds to an existing one the
 * example's variables it lacks (a newer checkout may need one more). Returns true if it wrote.
 */
export function ensureDevVars(log = (m) => process.stderr.write(m + "\n")) {
  if (!existsSync(examplePath)) {
    if (existsSync(devVarsPath)) return false;
    throw new Error(".dev.vars is missing and so is .dev.vars.example");
  }
  if (!existsSync(devVarsPath)) {
    copyFileSync(examplePath, devVarsPath);
    log("Created .dev.vars from .dev.vars.example (local-only secrets).");
    return true;
  }
  const have = readVars(devVarsPath);
  const lines = readFileSync(examplePath, "utf8")
    .split(/\r?\n/)
    .filter((l) => {
      const name = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=/.exec(l.trim())?.[1];
      return name !== undefined && !(name in have);
    });
  if (!lines.length) return false;
  appendFileSync(devVarsPath, `\n# Added from .dev.vars.example\n${lines.join("\n")}\n`);
  log(`Added to .dev.vars from .dev.vars.example: ${lines.map((l) => l.split("=")[0].trim()).join(", ")}.`);
  return true;
}

/** Parses .dev.vars (see readVars). */
export const readDevVars = () => readVars(devVarsPath);

/** Parses a dotenv-style file (KEY=value, KEY="value", # comments) as wrangler reads .dev.vars. */
function readVars(file) {
  const vars = {};
  for (const raw of readFileSync(file, "utf8").split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2];
    const q = v[0];
    if ((q === '"' || q === "'") && v.endsWith(q) && v.length >= 2) v = v.slice(1, -1);
    else v = v.replace(/\s+#.*$/, "");
    vars[m[1]] = v;
  }
  return vars;
}

export function jwtSecret() {
  const secret = readDevVars().JWT_SECRET;
  if (!secret) throw new Error(`JWT_SECRET is not set in ${devVarsPath}`);
  return secret;
}

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/**
 * An HS256 JWT as src/auth.ts issueToken signs it: claims {sub, role, iat, exp}, and the key's
 * fingerprint as `kid` (the first 8 bytes of its SHA-256, in hex; see keyId there).
 */
export function signToken(secret, userId, role = "user", ttlSeconds = 7 * 86_400) {
  const now = Math.floor(Date.now() / 1000);
  const kid = createHash("sha256").update(secret).digest("hex").slice(0, 16);
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT", kid }));
  const payload = b64url(JSON.stringify({ sub: userId, role, iat: now, exp: now + ttlSeconds }));
  const sig = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${sig}`;
}

/** Same rule as IDS.pattern in src/config.ts. */
export const USER_ID = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

/** Minimal `--name value` / `--name=value` / `--flag` parser. */
export function parseArgs(argv, { booleans = [] } = {}) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) {
      out._.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    if (eq > 0) {
      out[a.slice(2, eq)] = a.slice(eq + 1);
      continue;
    }
    const name = a.slice(2);
    if (booleans.includes(name) || i + 1 >= argv.length || argv[i + 1].startsWith("--")) out[name] = true;
    else out[name] = argv[++i];
  }
  return out;
}
