#!/usr/bin/env node
// Does the suite bite? Plants one bug at a time in the service's code, runs the suites (unit,
// workers, billing-fail-open; not the browser tests), records which tests failed, puts the code
// back, and at the end runs the same suites once more on the untouched code, which must pass.
// Not part of `npm test`: it runs the suite once per bug (about two minutes each here).
//
//   node scripts/plant-bugs.mjs              every bug, then the clean run
//   node scripts/plant-bugs.mjs quota feed   only the bugs whose name contains one of these
//
// Writes test-results/planted-bugs.md (the table the README quotes) and exits 1 if a planted bug
// went unnoticed or the clean run failed. Each bug is a plain text replacement that must match
// exactly once, so a change to the code that moves it is reported rather than silently skipped.
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const BUGS = [
  {
    name: "auth: acting for another user",
    why: "a user who names another user in a request acts for them (the admin check is gone)",
    file: "src/auth.ts",
    find: `  if (p.role !== "admin") throw new HttpError(fail(403, "FORBIDDEN", "You may only act on your own account."));\n`,
    replace: "",
  },
  {
    name: "quota: one device too many",
    why: "the device limit is checked off by one: a user may hold maxDevices + 1",
    file: "src/domain/quota.ts",
    find: "if (usage.devices + 1 > L.maxDevices)",
    replace: "if (usage.devices > L.maxDevices)",
  },
  {
    name: "allocation protocol: no confirm deadline",
    why: "a device's claim never sets its confirm deadline, so a claim its user never confirmed is not asked about in time",
    file: "durable-objects/Device.ts",
    find: "await this.clock.arm(Math.min(expiresAt, confirmAt, warnAt));",
    replace: "await this.clock.arm(Math.min(expiresAt, warnAt));",
  },
  {
    name: "allocation protocol: a refused extend stays booked",
    why: "when the device refuses an extension, the user's object keeps the longer booking (the undo is skipped)",
    file: "durable-objects/UserQuota.ts",
    find: "    if (!r.ok) {\n      this.allocations.restore(row);\n      return r;",
    replace: "    if (!r.ok) {\n      return r;",
  },
  {
    name: "feed tickets: scope not checked",
    why: "a feed ticket opens any feed, not only the one it was issued for",
    file: "src/feed/tickets.ts",
    find: `if (p.typ !== "ws-ticket" || p.scope !== scope || `,
    replace: `if (p.typ !== "ws-ticket" || `,
  },
  {
    name: "input validation: unknown fields accepted",
    why: "the allocate body no longer refuses fields it does not know",
    file: "src/schemas/allocations.ts",
    find: `refused unless ALLOW_SHORT_DURATIONS is set.",\n    }),\n  })\n  .strict()\n  .refine((b) => b.idleReleaseMinutes`,
    replace: `refused unless ALLOW_SHORT_DURATIONS is set.",\n    }),\n  })\n  .passthrough()\n  .refine((b) => b.idleReleaseMinutes`,
  },
  {
    name: "billing: a refused write is acknowledged",
    why: "a usage record D1 refused is acknowledged instead of retried, so it is lost",
    file: "src/queue.ts",
    find: "        error: o.error,\n      });\n      msg.retry({ delaySeconds: usageRetryDelay(env, msg.attempts) });",
    replace: "        error: o.error,\n      });\n      msg.ack();",
  },
];
const wanted = process.argv.slice(2);
const bugs = wanted.length ? BUGS.filter((b) => wanted.some((w) => b.name.includes(w))) : BUGS;
const out = path.join(root, "test-results");
mkdirSync(out, { recursive: true });
const bin = path.join(root, "node_modules", ".bin");

/** Runs the suites (not the browser's); returns the failed tests as "file > name". */
function suite(label) {
  const report = path.join(out, `planted-${label}.json`);
  rmSync(report, { force: true });
  const started = Date.now();
  const r = spawnSync(
    path.join(bin, "vitest"),
    [
      "run",
      "--project",
      "unit",
      "--project",
      "workers",
      "--project",
      "billing-fail-open",
      "--reporter=dot",
      "--reporter=json",
      `--outputFile.json=${report}`,
    ],
    {
      cwd: root,
      stdio: ["ignore", "ignore", "ignore"],
      env: { ...process.env, PATH: `${bin}${path.delimiter}${process.env.PATH}`, CI: "true" },
    },
  );
  const seconds = Math.round((Date.now() - started) / 1000);
  let json;
  try {
    json = JSON.parse(readFileSync(report, "utf8"));
  } catch {
    return { exit: r.status, seconds, passed: 0, failed: [`(no report: vitest exited with ${r.status})`] };
  }
  const failed = json.testResults.flatMap((f) =>
    f.assertionResults
      .filter((a) => a.status === "failed")
      .map((a) => `${path.relative(root, f.name)} > ${a.fullName}`)
      .concat(
        f.status === "failed" && f.assertionResults.every((a) => a.status !== "failed")
          ? [`${path.relative(root, f.name)} (the file itself: ${String(f.message).split("\n")[0].slice(0, 120)})`]
          : [],
      ),
  );
  return { exit: r.status, seconds, passed: json.numPassedTests, failed };
}

let restore = null;
const putBack = () => {
  if (restore) restore();
  restore = null;
};
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => (putBack(), process.exit(130)));

const rows = [];
let unnoticed = 0;
for (const [i, bug] of bugs.entries()) {
  const file = path.join(root, bug.file);
  const original = readFileSync(file, "utf8");
  const count = original.split(bug.find).length - 1;
  if (count !== 1) {
    console.log(`✗ ${bug.name}: its text matches ${count} times in ${bug.file}; the bug list needs updating`);
    rows.push({ bug, result: null });
    unnoticed++;
    continue;
  }
  restore = () => writeFileSync(file, original);
  writeFileSync(file, original.replace(bug.find, bug.replace));
  let result;
  try {
    console.log(`… ${bug.name} (${bug.file})`);
    result = suite(`bug-${i + 1}`);
  } finally {
    putBack();
  }
  rows.push({ bug, result });
  if (result.failed.length === 0) unnoticed++;
  console.log(
    `${result.failed.length ? "✓ caught" : "✗ NOT caught"}: ${bug.name}: ${result.failed.length} tests failed (${result.seconds} s)`,
  );
  for (const t of result.failed.slice(0, 5)) console.log(`    ${t}`);
}

console.log("… the untouched code");
const clean = suite("clean");
const mark = clean.failed.length === 0 && clean.exit === 0 ? "✓" : "✗";
console.log(`${mark} untouched: ${clean.passed} passed, ${clean.failed.length} failed (${clean.seconds} s)`);

const cell = (s) => s.replace(/\|/g, "\\|");
const lines = [
  "| planted bug | file | tests that failed | some of them |",
  "| --- | --- | --- | --- |",
  ...rows.map(
    ({ bug, result }) =>
      `| ${cell(bug.name)}: ${cell(bug.why)} | \`${bug.file}\` | ${result ? result.failed.length : "not planted"} | ${
        result
          ? result.failed
              .slice(0, 3)
              .map((t) => cell(t))
              .join("<br>")
          : ""
      } |`,
  ),
  "",
  `Untouched code afterwards: ${clean.passed} passed, ${clean.failed.length} failed.`,
];
writeFileSync(path.join(out, "planted-bugs.md"), `${lines.join("\n")}\n`);
console.log(`table: test-results/planted-bugs.md`);
process.exit(unnoticed === 0 && clean.failed.length === 0 && clean.exit === 0 ? 0 : 1);
