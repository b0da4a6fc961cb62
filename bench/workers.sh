#!/usr/bin/env bash
# Worker scaling on paper: sepal's CPU per call with one and two workers, read per worker
# thread, and how connections spread over two workers (SO_REUSEPORT).
#
# Usage: bench/workers.sh [--duration 10s] [--pollers N] [--no-build] [--build-dir DIR] [--keep]
# On a 2-core machine a run with `workers: 2` cannot keep the proxy off its load's core, so
# this does not compare throughput: it measures what each worker spends per call (the same
# with one worker or two means nothing is shared on the request path that costs), and the
# share of the work each worker gets. See bench/README.md ("Workers").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$ROOT/build-release"
duration=10s
pollers=4000
usage() { sed -n '3,9s/^# \{0,1\}//p' "$0"; }
BENCH_NAME=workers
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

while (($# > 0)); do
  case "$1" in
    --duration) duration=${2:?--duration needs a value}; shift ;;
    --pollers) pollers=${2:?--pollers needs a number}; shift ;;
    *) common_option "$@"; shift $((shift_by - 1)) ;;
  esac
  shift
done
bench_begin

LOADGEN="$BUILD/bench/sepal-loadgen"
FLEET="$BUILD/bench/sepal-fleet"
BACKEND="$BUILD/tests/support/sepal-fake-superlink"
SEPAL="$BUILD/proxy/sepal"
binaries=("$LOADGEN" "$FLEET" "$BACKEND" "$SEPAL")
build_release sepal sepal-loadgen sepal-fleet sepal-fake-superlink
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY grpc_proxy
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
clk_tck=$(getconf CLK_TCK)

# worker_ticks PID: "sepal-w0=TICKS sepal-w1=TICKS ..." (utime+stime of each worker thread).
worker_ticks() {
  local task comm stat fields ticks=()
  for task in /proc/"$1"/task/*; do
    comm=$(cat "$task/comm" 2>/dev/null) || continue
    [[ "$comm" == sepal-w* ]] || continue
    stat=$(cat "$task/stat") || continue
    read -ra fields <<<"${stat##*) }"
    ticks+=("$comm=$((fields[11] + fields[12]))")
  done
  echo "${ticks[*]}"
}

# start_sepal WORKERS CORES: sepal in front of the stand-in; sets $sepal_pid and $port.
start_sepal() {
  local workers=$1 cores=$2 dir="$WORK/w$1-$RANDOM"
  mkdir -p "$dir"
  port=$(pick_port)
  admin_port=$(pick_port)
  cat >"$dir/sepal.yaml" <<EOF
workers: $workers
admin:
  address: 127.0.0.1:$admin_port
listeners:
  - name: bench
    address: 127.0.0.1:$port
    peer_limits: {connections: 0, concurrent_calls: 0, calls_per_second: 0}
    routes:
      - match: /sepal.test.Echo/
        upstream: backend
      - match: /flwr.proto.Fleet/
        upstream: backend
upstreams:
  - name: backend
    address: 127.0.0.1:$backend_port
EOF
  start_pinned "$cores" "$dir/stderr.log" "$SEPAL" --config "$dir/sepal.yaml"
  sepal_pid=$last_pid
  for _ in $(seq 100); do
    port_is_free "$port" || return 0
    sleep 0.1
  done
  return 1
}

start_backend "$WORK/backend.log" --threads 1 || { echo "workers.sh: no stand-in" >&2; exit 1; }

# worker_connections: "w0=N w1=N" from sepal_worker_connections_active on the admin port.
worker_connections() {
  curl -s "http://127.0.0.1:$admin_port/metrics" |
    sed -n 's/^sepal_worker_connections_active{worker="\([0-9]*\)"} \([0-9.]*\)$/w\1=\2/p' |
    tr '\n' ' '
}

# delta BEFORE AFTER: per-thread tick differences, "name=ticks ...".
delta() {
  local -A first=()
  local pair name
  for pair in $1; do first[${pair%%=*}]=${pair#*=}; done
  for pair in $2; do
    name=${pair%%=*}
    printf '%s=%s ' "$name" $((${pair#*=} - ${first[$name]:-0}))
  done
}

echo "sepal workers bench on $(uname -r), $(nproc) cores; the stand-in and the clients on core 0"
echo
echo "small calls (100-byte unary echo, 64 in flight over 8 connections, $duration):"
printf '%-8s %-6s %-9s %-12s %-16s %s\n' workers cores calls/s "CPU µs/call" "connections" \
  "per worker thread: share of the CPU, µs/call"
for setup in "1 1" "2 1" "2 0,1"; do
  read -r workers cores <<<"$setup"
  start_sepal "$workers" "$cores" || { echo "workers.sh: sepal did not start" >&2; exit 1; }
  "$LOADGEN" --mode probe --target "127.0.0.1:$port" --timeout 15s >/dev/null
  before=$(worker_ticks "$sepal_pid")
  total_before=$(cpu_ticks "$sepal_pid")
  taskset -c 0 "$LOADGEN" --mode unary --target "127.0.0.1:$port" --connections 8 \
    --concurrency 64 --payload 100 --duration "$duration" --warmup 2s >"$WORK/loadgen.out" &
  loadgen=$!
  sleep 2
  spread=$(worker_connections)
  wait "$loadgen"
  out=$(tail -n 1 "$WORK/loadgen.out")
  after=$(worker_ticks "$sepal_pid")
  total_after=$(cpu_ticks "$sepal_pid")
  calls=$(json_num "$out" all_calls)
  per_thread=$(delta "$before" "$after")
  sum=0
  for pair in $per_thread; do sum=$((sum + ${pair#*=})); done
  detail=""
  for pair in $per_thread; do
    detail+=$(awk -v t="${pair#*=}" -v s="$sum" -v n="$calls" -v hz="$clk_tck" -v name="${pair%%=*}" \
      'BEGIN { printf "%s %.0f%% %.1f  ", name, s ? 100 * t / s : 0, n ? t / hz * 1e6 / n : 0 }')
  done
  printf '%-8s %-6s %-9.0f %-12s %-16s %s\n' "$workers" "$cores" "$(json_num "$out" rps)" \
    "$(awk -v t=$((total_after - total_before)) -v n="$calls" -v hz="$clk_tck" \
      'BEGIN { printf "%.1f", n ? t / hz * 1e6 / n : 0 }')" "$spread" "$detail"
  stop_pid "$sepal_pid"
done

echo
echo "$pollers polling nodes (own addresses, one connection each, every 3 s) on two workers:"
start_sepal 2 1 || { echo "workers.sh: sepal did not start" >&2; exit 1; }
before=$(worker_ticks "$sepal_pid")
taskset -c 0 "$FLEET" --target "127.0.0.1:$port" --pollers "$pollers" --busy 0 \
  --before "$duration" --round 1s --paced 0 --proxy-pid "$sepal_pid" >"$WORK/fleet.json" &
fleet=$!
until grep -q . "$WORK/fleet.json" 2>/dev/null || ! kill -0 "$fleet" 2>/dev/null; do
  [[ "$(worker_connections)" == *w* ]] && spread=$(worker_connections)
  sleep 1
done
wait "$fleet"
echo "  connections per worker at the end of the run: $spread"
after=$(worker_ticks "$sepal_pid")
per_thread=$(delta "$before" "$after")
sum=0
for pair in $per_thread; do sum=$((sum + ${pair#*=})); done
for pair in $per_thread; do
  awk -v t="${pair#*=}" -v s="$sum" -v name="${pair%%=*}" \
    'BEGIN { printf "  %s: %.1f%% of the workers'"'"' CPU (%d ticks)\n", name, s ? 100 * t / s : 0, t }'
done
echo "  sepal-fleet: $(head -c 300 "$WORK/fleet.json")…"
stop_pid "$sepal_pid"
