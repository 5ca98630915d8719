#!/usr/bin/env bash
# Runs the official Usergrid Node.js SDK's own mocha suite (usergrid@2.0.0-rc.2 from npm, its
# tests/ folder unchanged) against a fresh gridsocket.
#
#   tests/usergrid-sdk/run.sh            # GRIDSOCKET_BIN: the server binary
#                                        #   (default: target/debug/gridsocket of this repo)
#   SDK_TRACE=1 tests/usergrid-sdk/run.sh   # also log every HTTP exchange, by test, to
#                                           #   tests/usergrid-sdk/out/trace.jsonl
#
# 1. installs the suite (npm ci) when node_modules does not match package-lock.json;
# 2. starts gridsocket on free loopback ports with a temporary data folder and a superuser;
# 3. creates the suite's prerequisites through the REST API (setup.mjs) and adds a `local`
#    target with them to the suite's tests/config.test.json: the only file of the suite it
#    touches;
# 4. runs `mocha tests --target=local` in the package;
# 5. compares the failures with expected-failures.json (report.mjs): prints `# pass N` and
#    `# fail M` (M: failures that are not listed there) and fails if M > 0.
# Output (results.json, server.log, mocha.log, trace.jsonl) goes to tests/usergrid-sdk/out/.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${GRIDSOCKET_BIN:-$root/target/debug/gridsocket}
case $bin in /*) ;; *) bin=$root/$bin ;; esac
out=$here/out
pkg=$here/node_modules/usergrid

[ -x "$bin" ] || { echo "run.sh: no gridsocket binary at $bin (cargo build -p gridsocket-server --bin gridsocket)" >&2; exit 1; }

# 1. the suite
if ! cmp -s "$here/package-lock.json" "$here/node_modules/.package-lock.json.ci" 2>/dev/null ||
  [ ! -f "$pkg/tests/main.test.js" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --silent)
  cp "$here/package-lock.json" "$here/node_modules/.package-lock.json.ci"
fi

rm -rf "$out"
mkdir -p "$out"
data=$(mktemp -d)
server_pid=""
proxy_pid=""
cleanup() {
  local pid
  for pid in $proxy_pid $server_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 2. a fresh server on free ports (the kernel picks them; 8080 and 8088 are left alone)
read -r http_port ws_port proxy_port < <(node -e '
  const net = require("net");
  const take = () => new Promise((ok) => { const s = net.createServer().listen(0, "127.0.0.1", () => ok(s)); });
  Promise.all([take(), take(), take()]).then((ss) => {
    console.log(ss.map((s) => s.address().port).join(" "));
    ss.forEach((s) => s.close());
  });')
base=http://127.0.0.1:$http_port
superuser=sdk-superuser
superpass=$(node -e 'console.log(require("crypto").randomBytes(18).toString("base64url"))')

RUST_LOG=${RUST_LOG:-info} "$bin" serve \
  --http-addr "127.0.0.1:$http_port" \
  --ws-addr "127.0.0.1:$ws_port" \
  --data-dir "$data/store" \
  --superuser "$superuser:$superpass" \
  >"$out/server.log" 2>&1 &
server_pid=$!

answers() { # URL: does it answer 200?
  node -e 'fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$1"
}
for _ in $(seq 1 100); do
  answers "$base/status" && break
  kill -0 "$server_pid" 2>/dev/null || { echo "run.sh: gridsocket exited:" >&2; cat "$out/server.log" >&2; exit 1; }
  sleep 0.2
done
answers "$base/status" || { echo "run.sh: gridsocket did not answer /status" >&2; exit 1; }
echo "gridsocket $("$bin" --version | awk '{print $2}') on $base"

sdk_base=$base
if [ -n "${SDK_TRACE:-}" ]; then
  : >"$out/trace.jsonl"
  node "$here/trace-proxy.mjs" "$proxy_port" "$base" "$out/trace.jsonl" &
  proxy_pid=$!
  sdk_base=http://127.0.0.1:$proxy_port
  for _ in $(seq 1 50); do answers "$sdk_base/status" && break; sleep 0.1; done
  export SDK_TRACE=$out/trace.jsonl
fi

# 3. the prerequisites, and the `local` target in the suite's config
SDK_BASE_URL=$sdk_base node "$here/setup.mjs" "$base" "$superuser" "$superpass" "$pkg/tests/config.test.json"

# 4. the suite, as its README runs it (`--target=` must stay the last argument: the suite
#    reads it from the end of argv)
set +e
(cd "$pkg" && SDK_RESULTS=$out/results.json ../.bin/mocha tests --reporter "$here/reporter.js" --target=local) 2>&1 |
  tee "$out/mocha.log"
set -e
[ -s "$out/results.json" ] || { echo "run.sh: mocha wrote no results (see $out/mocha.log)" >&2; exit 1; }

# 5. the verdict
node "$here/report.mjs" "$out/results.json" "$here/expected-failures.json"
