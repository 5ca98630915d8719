#!/usr/bin/env bash
# Runs gridsocket-bench against a fresh server with the demo data: the server pinned to CPU 0,
# the client to CPU 1 (when the machine has two), results in target/gridsocket-bench/.
#   ./scripts/bench.sh                     every scenario at full size (release build)
#   ./scripts/bench.sh rr --duration 10    any gridsocket-bench arguments pass through
#   ./scripts/bench.sh --smoke             each scenario once, briefly, at small N, debug build:
#                                          what CI runs; it checks correctness, not speed
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
extra=()
if [ "${1:-}" = "--smoke" ]; then
  shift
  profile=debug
  extra=(--duration 1 --warmup 0.2 --rr-connections 1,4 --rr-depths 1,8
         --fanout 10@10,20@max --idle 200 --json target/gridsocket-bench/smoke.json)
fi
if [ "$profile" = release ]; then
  cargo build --release -p gridsocket-server -p gridsocket-bench
else
  # The same selection as scripts/test.sh's build, so the smoke run reuses its artifacts
  # (building two packages alone unifies features differently and recompiles dependencies).
  cargo build --workspace --bins
fi
bin=target/$profile

pin_server=() pin_client=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin_server=(taskset -c 0) pin_client=(taskset -c 1)
fi

data=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
RUST_LOG=warn "${pin_server[@]}" "$bin/gridsocket" serve --demo --http-addr 127.0.0.1:0 \
  --ws-addr 127.0.0.1:0 --data-dir "$data" >"$data/stdout" 2>"$data/stderr" &
server_pid=$!
for _ in $(seq 200); do grep -q '^  WebSocket' "$data/stdout" 2>/dev/null && break; sleep 0.05; done
http=$(awk '$1 == "REST" {print $2}' "$data/stdout")
ws=$(awk '$1 == "WebSocket" {print $2}' "$data/stdout")
if [ -z "$ws" ]; then
  echo "the server did not start:" >&2
  cat "$data/stderr" >&2
  exit 1
fi
"${pin_client[@]}" "$bin/gridsocket-bench" --server-pid "$server_pid" --http "$http" --ws "$ws" \
  "${extra[@]}" "$@"
