#!/usr/bin/env node
// Prints a bearer token (HS256 JWT) for local development. The token is the last line.
//
//   npm run token -- --user alice
//   npm run token -- --user ops-admin --role admin --ttl 3600
//
// Signed with JWT_SECRET from .dev.vars (created from .dev.vars.example when missing),
// so it is accepted by `npm run dev`.
import { ensureDevVars, jwtSecret, parseArgs, signToken, USER_ID } from "./lib.mjs";

const usage = "usage: npm run token -- --user <id> [--role user|admin] [--ttl seconds]";
const args = parseArgs(process.argv.slice(2));
if (args.help || args.h) {
  console.log(usage);
  process.exit(0);
}
const user = args.user ?? args._[0];
const role = args.role ?? "user";
const ttl = args.ttl === undefined ? 7 * 86_400 : Number(args.ttl);

function die(msg) {
  console.error(`token: ${msg}\n${usage}`);
  process.exit(2);
}
if (typeof user !== "string" || !USER_ID.test(user)) die("--user <id> is required (letters, digits and . _ : @ - only, max 128)");
if (role !== "user" && role !== "admin") die("--role must be user or admin");
if (!Number.isInteger(ttl) || ttl <= 0) die("--ttl must be a positive whole number of seconds");
// The Worker refuses tokens that live longer than TOKENS.maxLifetimeDays (src/config.ts, 30 days; TOKEN_MAX_DAYS overrides).
if (ttl > 30 * 86_400 && process.env.TOKEN_MAX_DAYS === undefined)
  die("--ttl is at most 30 days (2592000 s): the Worker refuses longer-lived tokens");

ensureDevVars();
console.log(signToken(jwtSecret(), user, role, ttl));
