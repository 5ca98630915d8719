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
#   ./scripts/bench.sh --cluster --gateways 5 cluster
#                                          N gateways (or GATEWAYS=N; 2 by default) and the
#                                          `cluster` scenario: 95k subscribed sockets held by
#                                          one client process per gateway, idle, fan-out and
#                                          churn (issue 20)
# A cluster gets a NATS server of its own (nats-server on a free port, with its monitoring
# port, whose counters the `cluster` scenario reads) when nats-server is installed, else the
# local one on 4222 (GRIDSOCKET_BENCH_NATS picks another), whose counters are not checked.
# BENCH_PIN=0 leaves every process free to run on any CPU. GRIDSOCKET_BENCH_BIN=DIR runs the
# gridsocket and gridsocket-bench binaries in DIR instead of building (A/B against a build of
# another commit). BENCH_NODE_CPU=F gives each node a CPU quota of F of one core (a cgroup of its
# own, as root): nodes as small machines of their own, so that what one more node adds is seen
# on a machine whose cores PostgreSQL and the client share.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
extra=()
cluster=""
postgres=""
gateways=${GATEWAYS:-2}
if [ "${1:-}" = "--cluster" ]; then
  shift
  cluster=1
  if [ "${1:-}" = "--gateways" ]; then
    gateways=${2:?--gateways needs a count}
    shift 2
  fi
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
         --cluster-sockets 300 --cluster-idle-secs 1 --cluster-rate 5 --churn-rate 100
         --json "target/gridsocket-bench/smoke${cluster:+-cluster}.json")
fi
if [ -n "${GRIDSOCKET_BENCH_BIN:-}" ]; then
  # A/B runs: a folder holding gridsocket and gridsocket-bench built from another commit.
  :
elif [ "$profile" = release ]; then
  cargo build --release -p gridsocket-server -p gridsocket-bench
else
  # The same selection as scripts/test.sh's build, so the smoke run reuses its artifacts
  # (building two packages alone unifies features differently and recompiles dependencies).
  cargo build --workspace --bins
fi
bin=${GRIDSOCKET_BENCH_BIN:-${CARGO_TARGET_DIR:-target}/$profile}

pin_server=() pin_client=()
if [ "${BENCH_PIN:-1}" != 0 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin_server=(taskset -c 0) pin_client=(taskset -c 1)
fi

data=$(mktemp -d)
pids=()
schema=""
cgroups=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  for cg in "${cgroups[@]}"; do rmdir "$cg" 2>/dev/null || true; done
  [ -n "$schema" ] && psql -q "$pg" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$data"
}
trap cleanup EXIT

# A cgroup with a CPU quota of BENCH_NODE_CPU cores (cgroup v2, else v1's cpu controller);
# sets $cg, empty when no quota is asked for. The period is 10 ms, not the default 100 ms: a
# node that used its quota waits out the rest of the period, and 85 ms pauses would measure
# the throttle, not a slower machine.
quota_cgroup() {
  cg=""
  [ -z "${BENCH_NODE_CPU:-}" ] && return
  local period=10000 quota
  quota=$(awk -v f="$BENCH_NODE_CPU" -v p="$period" 'BEGIN { printf "%d", f * p }')
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cg=/sys/fs/cgroup/gridsocket-bench-$$-$1
    mkdir "$cg"
    echo "$quota $period" >"$cg/cpu.max"
  else
    cg=/sys/fs/cgroup/cpu/gridsocket-bench-$$-$1
    mkdir "$cg"
    echo "$period" >"$cg/cpu.cfs_period_us"
    echo "$quota" >"$cg/cpu.cfs_quota_us"
  fi
  cgroups+=("$cg")
}

# Starts one node and waits for its banner's LAST line (WebSocket, or REST for an API node);
# its output goes to $data/NAME.{stdout,stderr}. Sets $http and $ws.
start_node() {
  local name=$1 last=$2
  shift 2
  mkdir -p "$data/$name"
  quota_cgroup "$name"
  local in_cgroup=()
  # The node joins its cgroup before it starts, so that every thread it makes is in it.
  [ -n "$cg" ] && in_cgroup=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg")
  # Capacity is what is measured: the per-socket rate and per-address limits are off.
  RUST_LOG=warn "${pin_server[@]}" "${in_cgroup[@]}" "$bin/gridsocket" serve --http-addr 127.0.0.1:0 \
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

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  echo "no free port found" >&2
  exit 1
}

pg=${GRIDSOCKET_BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}
nats=${GRIDSOCKET_BENCH_NATS:-nats://127.0.0.1:4222}
nats_args=()
nats_server=$(command -v nats-server || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; } || true)
if [ -n "$cluster" ] && [ -z "${GRIDSOCKET_BENCH_NATS:-}" ] && [ -n "$nats_server" ]; then
  # Its own server, so that its counters count this cluster's messages only.
  nats_port=$(free_port)
  monitor_port=$(free_port)
  "$nats_server" -a 127.0.0.1 -p "$nats_port" -m "$monitor_port" >"$data/nats.log" 2>&1 &
  pids+=("$!")
  nats_args=(--nats-monitor "http://127.0.0.1:$monitor_port" --nats-pid "$!")
  nats=nats://127.0.0.1:$nats_port
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$monitor_port/varz" >/dev/null && break
    sleep 0.05
  done
  if ! curl -sf "http://127.0.0.1:$monitor_port/varz" >/dev/null; then
    echo "nats-server did not start:" >&2
    cat "$data/nats.log" >&2
    exit 1
  fi
elif [ -n "$cluster" ]; then
  echo "the cluster uses $nats; its message counters are not checked (no nats-server of its own)" >&2
fi
store="$pg?options=-csearch_path%3Dbench_$$"
if [ -n "$cluster$postgres" ]; then
  schema="bench_$$"
  psql -q "$pg" -c "CREATE SCHEMA $schema" >/dev/null
  # What each write costs the database, whichever node sent it.
  extra+=(--database-cpu --pg-url "$pg" --pg-schema "$schema")
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
api_pid=${pids[-1]}
ws_list=() gateway_pids=()
for g in $(seq "$gateways"); do
  start_node "gw$g" WebSocket --role gateway "${shared[@]}"
  ws_list+=("$ws")
  gateway_pids+=("${pids[-1]}")
done
join() { local IFS=,; echo "$*"; }
# The first gateway is "the server" (its memory); the other nodes' CPU counts with it.
"${pin_client[@]}" "$bin/gridsocket-bench" --server-pid "${gateway_pids[0]}" \
  --other-pids "$(join "${gateway_pids[@]:1}" "$api_pid")" --http "$api_http" \
  --ws "$(join "${ws_list[@]}")" --gateway-pids "$(join "${gateway_pids[@]}")" \
  "${nats_args[@]}" "${extra[@]}" "$@"
