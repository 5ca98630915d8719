#!/usr/bin/env bash
# A soak test (not in CI): a release server with thousands of subscribed sockets and a steady
# write load for a bounded time. Reports event loss and duplicates (from gridsocket-bench),
# sockets the server closed, and the server's memory over the run (sampled from /proc every
# 10 s). Every figure must be zero but the memory, which must not grow once the sockets are
# open.
#   ./scripts/soak.sh                  5000 sockets, 5 events/s each, 10 minutes
#   SOCKETS=2000 RATE=20 MINUTES=30 ./scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
sockets=${SOCKETS:-5000}
rate=${RATE:-5}
minutes=${MINUTES:-10}
ulimit -n 20000 2>/dev/null || true

cargo build --release -p gridsocket-server -p gridsocket-bench
data=$(mktemp -d)
server_pid=""
sampler_pid=""
cleanup() {
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
RUST_LOG=warn target/release/gridsocket serve --demo --http-addr 127.0.0.1:0 --ws-addr 127.0.0.1:0 \
  --data-dir "$data" --max-requests-per-sec 0 --max-connections-per-ip 0 \
  >"$data/stdout" 2>"$data/stderr" &
server_pid=$!
for _ in $(seq 200); do grep -q '^  WebSocket' "$data/stdout" 2>/dev/null && break; sleep 0.05; done
http=$(awk '$1 == "REST" {print $2}' "$data/stdout")
ws=$(awk '$1 == "WebSocket" {print $2}' "$data/stdout")
[ -n "$ws" ] || { cat "$data/stderr" >&2; exit 1; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status"; }
(
  start=$(date +%s)
  while kill -0 "$server_pid" 2>/dev/null; do
    echo "$(( $(date +%s) - start )) $(rss_kib) $(curl -s "$http/metrics" | awk '$1 == "gridsocket_connections" {print $2}')"
    sleep 10
  done
) >"$data/rss" &
sampler_pid=$!

echo "soak: $sockets sockets, $rate events/s, $minutes min against pid $server_pid"
json=target/gridsocket-bench/soak.json
target/release/gridsocket-bench --server-pid "$server_pid" --http "$http" --ws "$ws" fanout \
  --fanout "${sockets}@${rate}" --warmup 30 --duration $(( minutes * 60 )) --json "$json" | tail -12
status=${PIPESTATUS[0]}
kill "$sampler_pid" 2>/dev/null || true
sampler_pid=""

echo
echo "server memory (s since start, RSS KiB, open sockets), every 10 s:"
tr '\n' ';' <"$data/rss"
echo
# From the first sample after the warm-up (30 s) with every socket open, to the last one
# before they closed.
awk -v n="$sockets" '$1 >= 40 && $3 >= n { if (!first) first = $2; last = $2 }
  END { if (first) printf "RSS with all sockets open: first %d KiB, last %d KiB, growth %d KiB\n", first, last, last - first;
        else print "the sockets never were all open" }' "$data/rss"
errors=$(grep -ciE 'panic|error' "$data/stderr" || true)
echo "server log lines with errors or panics: $errors"
exit "$status"
