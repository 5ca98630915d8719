// Prints the HTTP exchanges of a traced run (SDK_TRACE=1 ./run.sh) grouped by the test or hook
// that was running when they were made: by default those of the failed tests, or those of every
// test and hook whose title contains FILTER.
//
//   node trace-by-test.mjs [FILTER]
//
// An exchange started by an earlier test that does not wait for its answer (the suite's
// "should not fail when a callback function is not passed" tests) shows under a later test.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const out = join(dirname(fileURLToPath(import.meta.url)), "out");
const lines = readFileSync(join(out, "trace.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
const results = JSON.parse(readFileSync(join(out, "results.json"), "utf8"));
const failed = new Set(results.filter((r) => r.state === "failed").map((r) => r.fullTitle));
const filter = process.argv[2];

const byTest = new Map();
let current = null;
for (const l of lines) {
  if (l.ev === "test" || l.ev === "hook") {
    current = (l.ev === "hook" ? "[hook] " : "") + l.title;
    if (!byTest.has(current)) byTest.set(current, []);
  } else if (current) {
    byTest.get(current).push(l);
  }
}

for (const [title, events] of byTest) {
  if (filter ? !title.includes(filter) : !failed.has(title.replace("[hook] ", ""))) continue;
  console.log(`=== ${title}`);
  for (const e of events) {
    if (e.ev === "fail") {
      console.log(`   !! FAIL: ${e.err.split("\n")[0]}`);
      continue;
    }
    const extra = [e.token ? "[token]" : "[no token]"];
    if (e.accept) extra.push(`accept=${e.accept}`);
    if (e.reqType) extra.push(`content-type=${e.reqType.split(";")[0]}`);
    console.log(`   ${e.method} ${e.url} ${extra.join(" ")}`);
    if (e.req) console.log(`      > ${e.req.slice(0, 400)}`);
    console.log(`      < ${e.status} ${(e.res || "").slice(0, 700)}`);
  }
}
