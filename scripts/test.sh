#!/usr/bin/env bash
# Runs every gridsocket check and test. Installs what it needs first (idempotent), so it works
# on a fresh machine with only the package registries reachable: the wasm target, the
# wasm-bindgen CLI (at the crate's version) and Debian's Chromium with its driver.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }
log=$(mktemp)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT

step "toolchain"
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p gridsocket-core -p gridsocket-wasm --target wasm32-unknown-unknown -- -D warnings

step "build (the end-to-end tests run the gridsocket binary)"
cargo build --workspace --bins

step "JavaScript package (wasm-bindgen)"
./scripts/build-wasm.sh

step "TypeScript: the package's typings as an app uses them"
(cd tests/node && npm ci --silent --no-audit --no-fund)
tests/node/node_modules/.bin/tsc --noEmit --strict --target es2022 --lib esnext,dom \
  --module nodenext --moduleResolution nodenext tests/node/typings.ts

status=0
step "Rust tests (core, server, end to end)"
cargo test --workspace --no-fail-fast 2>&1 | tee -a "$log" || status=1

step "the end-to-end suite again, on PostgreSQL (the store behaves the same on both)"
# PostgreSQL (127.0.0.1:5432, db test) and NATS (127.0.0.1:4222) must be running: with CI=true
# the tests that need them fail when they are not.
GRIDSOCKET_TEST_STORE=postgres cargo test -p gridsocket-e2e --no-fail-fast 2>&1 | tee -a "$log" || status=1

step "benchmarks, once each as a smoke test (correctness, no speed assertion)"
cargo test -p gridsocket-core --bench matcher 2>&1 | tee -a "$log" || status=1
./scripts/bench.sh --smoke 2>&1 | tee -a "$log" || status=1

step "fuzzing: core's frame decoder, path parser and query parser, 10 s each (README: longer runs)"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
for target in frame_decoder path_parser query_parser; do
  (cd fuzz && cargo fuzz run --sanitizer none -O "$target" -- -max_total_time=10 -max_len=4096 2>&1 |
    grep -E '^(Done|==|SUMMARY|thread)' ) || { echo "fuzz target $target failed"; status=1; }
done

step "the JavaScript package under Node, against the real server"
node_flags=""
[ "$(node -p 'process.versions.node.split(".")[0]')" -lt 22 ] && node_flags="--experimental-websocket"
node $node_flags --test tests/node/ 2>&1 | tee -a "$log" || status=1

step "the client in headless Chromium, against the real server"
data=$(mktemp -d)
out="$data/stdout"
./target/debug/gridsocket serve --demo --http-addr 127.0.0.1:0 --ws-addr 127.0.0.1:0 --data-dir "$data" >"$out" 2>/dev/null &
server_pid=$!
for _ in $(seq 100); do grep -q 'WebSocket' "$out" 2>/dev/null && break; sleep 0.1; done
http=$(awk '$1 == "REST" {print $2}' "$out")
ws=$(awk '$1 == "WebSocket" {print $2}' "$out")
token=$(curl -sf "$http/demo/chatapp/token" -H 'content-type: application/json' \
  -d '{"grant_type":"password","username":"johndoe","password":"password"}' |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).access_token))')
webdriver_json="$data/webdriver.json"
cat >"$webdriver_json" <<'JSON'
{"goog:chromeOptions": {"args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"]}}
JSON
GRIDSOCKET_TEST_WS="$ws/demo/chatapp" GRIDSOCKET_TEST_TOKEN="$token" \
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  WASM_BINDGEN_USE_BROWSER=1 CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=60 \
  WASM_BINDGEN_TEST_WEBDRIVER_JSON="$webdriver_json" \
  cargo test -p gridsocket-wasm --target wasm32-unknown-unknown 2>&1 | tee -a "$log" || status=1
kill "$server_pid" 2>/dev/null || true
server_pid=""
rm -rf "$data"

passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i } /^# pass / { s += $3 } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i } /^# fail / { s += $3 } END { print s + 0 }' "$log")
echo
echo "gridsocket: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ] || status=1
exit "$status"
