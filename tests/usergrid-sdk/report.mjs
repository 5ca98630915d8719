// Compares the suite's outcome (reporter.js's JSON) with expected-failures.json and prints the
// summary run.sh ends with. Exits 1 if a test or hook failed that is not listed there.
//
//   node report.mjs RESULTS_JSON EXPECTED_FAILURES_JSON
//
// expected-failures.json maps a test's full title (mocha's fullTitle(); `*` matches anything,
// for the titles the suite builds from random words) to the reason it cannot pass.
import { readFileSync } from "node:fs";

const [resultsPath, expectedPath] = process.argv.slice(2);
const results = JSON.parse(readFileSync(resultsPath, "utf8"));
const expected = Object.entries(JSON.parse(readFileSync(expectedPath, "utf8"))).filter(
  ([title]) => !title.startsWith("//"),
);

const pattern = (title) =>
  new RegExp("^" + title.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*") + "$");
const matchers = expected.map(([title, reason]) => ({ title, reason, re: pattern(title) }));
const listed = (title) => matchers.find((m) => m.re.test(title));

const passed = results.filter((r) => r.state === "passed");
const pending = results.filter((r) => r.state === "pending");
const failed = results.filter((r) => r.state === "failed");
const notRun = results.filter((r) => r.state === "not run");
const known = [];
const unexpected = [];
for (const r of failed) (listed(r.fullTitle) ? known : unexpected).push(r);
const listedButPassed = passed.filter((r) => matchers.some((m) => m.re.test(r.fullTitle)));

console.log("");
if (known.length) {
  console.log(`Known failures (expected-failures.json), ${known.length}:`);
  for (const r of known) console.log(`  - ${r.fullTitle}\n      ${listed(r.fullTitle).reason}`);
}
if (notRun.length) {
  console.log(`Not run (a hook before them failed), ${notRun.length}:`);
  for (const r of notRun) console.log(`  - ${r.fullTitle}`);
}
if (listedButPassed.length) {
  console.log(`Listed in expected-failures.json but passed (remove them from the list), ${listedButPassed.length}:`);
  for (const r of listedButPassed) console.log(`  - ${r.fullTitle}`);
}
if (unexpected.length) {
  console.log(`FAILED, not in expected-failures.json, ${unexpected.length}:`);
  for (const r of unexpected) console.log(`  - ${r.fullTitle}\n      ${r.err.message.split("\n")[0]}`);
}
console.log("");
console.log(`# tests ${results.filter((r) => !r.hook).length}`);
console.log(`# pass ${passed.length}`);
console.log(`# fail ${unexpected.length}`);
console.log(`# known ${known.length}`);
console.log(`# skip ${pending.length + notRun.length}`);
process.exit(unexpected.length ? 1 : 0);
