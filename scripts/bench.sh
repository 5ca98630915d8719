#!/usr/bin/env bash
# Runs gridsocket-bench against a fresh server with the demo data: the server pinned to CPU 0,
# the client to CPU 1 (when the machine has two), results in target/gridsocket-bench/.
#   ./scripts/bench.sh                     every scenario at full size (release build)
#   ./scripts/bench.sh rr --duration 10    any gridsocket-bench arguments pass through
#   ./scripts/bench.sh --smoke             each scenario once, briefly, at small N, debug build:
#                                          what CI runs; it checks correctness, not speed
#   ./scripts/bench.sh --postgres write    the same against one node on the local PostgreSQL
#                                          (a fresh schema) instead of the embedded SQLite
#   ./scripts/bench.sh --cluster fanout    the same against three nodes on one machine: an API
#                                          node and two gateways (all on CPU 0) sharing the
#                                          local PostgreSQL (a fresh schema) and NATS; the
#                                          fan-out subscribers and the writers of `write` are
#                                          spread over both gateways
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
extra=()
cluster=""
postgres=""
if [ "${1:-}" = "--cluster" ]; then
  shift
  cluster=1
elif [ "${1:-}" = "--postgres" ]; then
  shift
  postgres=1
fi
if [ "${1:-}" = "--smoke" ]; then
  shift
  profile=debug
  extra=(--duration 1 --warmup 0.2 --rr-connections 1,4 --rr-depths 1,8
         --fanout 10@10,20@max --broadcast 10@10,20@max --presence-users 10
         --presence-watchers 10 --idle 200 --query-sizes 2000
         --json target/gridsocket-bench/smoke.json)
fi
if [ "$profile" = release ]; then
  cargo build --release -p gridsocket-server -p gridsocket-bench
else
  # The same selection as scripts/test.sh's build, so the smoke run reuses its artifacts
  # (building two packages alone unifies features differently and recompiles dependencies).
  cargo build --workspace --bins
fi
bin=${CARGO_TARGET_DIR:-target}/$profile

pin_server=() pin_client=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin_server=(taskset -c 0) pin_client=(taskset -c 1)
fi

data=$(mktemp -d)
pids=()
schema=""
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  [ -n "$schema" ] && psql -q "$pg" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$data"
}
trap cleanup EXIT

# Starts one node and waits for its banner's LAST line (WebSocket, or REST for an API node);
# its output goes to $data/NAME.{stdout,stderr}. Sets $http and $ws.
start_node() {
  local name=$1 last=$2
  shift 2
  mkdir -p "$data/$name"
  # Capacity is what is measured: the per-socket rate and per-address limits are off.
  RUST_LOG=warn "${pin_server[@]}" "$bin/gridsocket" serve --http-addr 127.0.0.1:0 \
    --ws-addr 127.0.0.1:0 --data-dir "$data/$name" --max-requests-per-sec 0 \
    --max-broadcasts-per-sec 0 --max-connections-per-ip 0 "$@" \
    >"$data/$name.stdout" 2>"$data/$name.stderr" &
  pids+=("$!")
  for _ in $(seq 200); do grep -q "^  $last" "$data/$name.stdout" 2>/dev/null && break; sleep 0.05; done
  http=$(awk '$1 == "REST" || $1 == "Ops" {print $2}' "$data/$name.stdout")
  ws=$(awk '$1 == "WebSocket" {print $2}' "$data/$name.stdout")
  if [ -z "$http" ]; then
    echo "node $name did not start:" >&2
    cat "$data/$name.stderr" >&2
    exit 1
  fi
}

pg=${GRIDSOCKET_BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}
nats=${GRIDSOCKET_BENCH_NATS:-nats://127.0.0.1:4222}
store="$pg?options=-csearch_path%3Dbench_$$"
if [ -n "$cluster$postgres" ]; then
  schema="bench_$$"
  psql -q "$pg" -c "CREATE SCHEMA $schema" >/dev/null
  # What each write costs the database, whichever node sent it.
  extra+=(--database-cpu)
fi

if [ -z "$cluster" ]; then
  if [ -n "$postgres" ]; then
    start_node server WebSocket --demo --store "$store"
  else
    start_node server WebSocket --demo
  fi
  "${pin_client[@]}" "$bin/gridsocket-bench" --server-pid "${pids[0]}" --http "$http" --ws "$ws" \
    "${extra[@]}" "$@"
  exit
fi
shared=(--store "$store" --bus "$nats" --bus-subject "bench-$$")
start_node api REST --role api --demo "${shared[@]}"
api_http=$http
start_node gw1 WebSocket --role gateway "${shared[@]}"
ws1=$ws
start_node gw2 WebSocket --role gateway "${shared[@]}"
ws2=$ws
"${pin_client[@]}" "$bin/gridsocket-bench" --server-pid "${pids[1]}" \
  --other-pids "${pids[2]},${pids[0]}" --http "$api_http" --ws "$ws1,$ws2" "${extra[@]}" "$@"
