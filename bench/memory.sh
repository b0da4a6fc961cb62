#!/usr/bin/env bash
# sepal's resident memory around bursts, per allocator (the table in bench/memory.md).
#
# Usage: bench/memory.sh [--build-dir DIR] [--sepal BINARY] [--allocators LIST] [--scenarios LIST]
#                        [--repeat N] [--sepal-env "VAR=VALUE ..."] [--keep]
#   allocators: glibc glibc-arena2 glibc-trim-shim jemalloc jemalloc-bg mimalloc
#               mimalloc-decommit0 (default: these; jemalloc/mimalloc need libjemalloc2 /
#               libmimalloc2.0; selected by LD_PRELOAD, so meant for a binary built with
#               -DSEPAL_ALLOCATOR=glibc), and
#               as-built   nothing preloaded: the binary's own allocator
#               budget     as-built plus proxy/memory's MemoryBudget (budget off, trims on)
#                          preloaded, for a binary whose Server does not run it
#   scenarios:  short  3000 connections, one call each, then close (h2load -c 3000 -n 3000)
#               h2load 60000 calls over 3000 connections, 10 streams each (h2load -m 10)
#               reset  HTTP/2 rapid reset: 2 M HEADERS+RST_STREAM pairs (bench/rapid_reset.py)
#               big    200 concurrent 4 MiB unary calls for 5 s (sepal-loadgen)
#               rps    throughput: the unary run of bench/run.sh (64 calls over 4 connections,
#                      100-byte echo, 10 s after 2 s warmup)
#               stream throughput: 256 MiB through one Bidi call in 4 MiB messages (MiB/s)
# One worker, sepal on core 1, the stand-in SuperLink and the load on core 0. For each pair
# sepal starts fresh; VmRSS is sampled every 100 ms: idle (2 s after one call), peak (during
# the burst and the 5 s after), +5 s (5 s after the burst ended). Loopback only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$ROOT/build-release"
allocators="glibc,glibc-arena2,glibc-trim-shim,jemalloc,jemalloc-bg,mimalloc,mimalloc-decommit0"
scenarios="short,h2load,reset,big,rps,stream"
keep=0
sepal_binary=""
sepal_env=""
repeat=1
while (($# > 0)); do
  case "$1" in
    --build-dir) BUILD=$(cd "${2:?}" && pwd); shift ;;
    --sepal) sepal_binary=$(realpath "${2:?}"); shift ;;
    --repeat) repeat=${2:?}; shift ;;
    --sepal-env) sepal_env=${2:?}; shift ;;
    --allocators) allocators=${2:?}; shift ;;
    --scenarios) scenarios=${2:?}; shift ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,24s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "memory.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

SEPAL="${sepal_binary:-$BUILD/proxy/sepal}"
BACKEND="$BUILD/tests/support/sepal-fake-superlink"
LOADGEN="$BUILD/bench/sepal-loadgen"
LIBDIR=/usr/lib/x86_64-linux-gnu
for binary in "$SEPAL" "$BACKEND" "$LOADGEN"; do
  [[ -x "$binary" ]] || { echo "memory.sh: $binary is missing" >&2; exit 1; }
done
command -v h2load >/dev/null || { echo "memory.sh: h2load missing (apt-get install nghttp2-client)" >&2; exit 1; }
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY grpc_proxy
ulimit -n 20000

WORK=$(mktemp -d /tmp/sepal-memory.XXXXXX)
declare -a started=()
stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${started[@]}"; do stop_pid "$pid"; done
  if ((keep)); then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
log() { printf '[memory %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# The environment that selects an allocator (or glibc setting) for sepal alone.
allocator_env() {
  case "$1" in
    glibc | as-built) echo "" ;;
    budget) echo "LD_PRELOAD=$WORK/budget.so" ;;
    glibc-arena2) echo "GLIBC_TUNABLES=glibc.malloc.arena_max=2" ;;
    # Measurement only: a preloaded thread calling malloc_trim(0) every second.
    glibc-trim-shim) echo "LD_PRELOAD=$WORK/trimshim.so" ;;
    jemalloc) echo "LD_PRELOAD=$LIBDIR/libjemalloc.so.2" ;;
    jemalloc-bg) echo "LD_PRELOAD=$LIBDIR/libjemalloc.so.2 MALLOC_CONF=background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0" ;;
    mimalloc) echo "LD_PRELOAD=$LIBDIR/libmimalloc.so.2" ;;
    mimalloc-decommit0) echo "LD_PRELOAD=$LIBDIR/libmimalloc.so.2 MIMALLOC_DECOMMIT_DELAY=0" ;;
    *) echo "memory.sh: unknown allocator $1" >&2; exit 2 ;;
  esac
}
if [[ ",$allocators," == *",glibc-trim-shim,"* ]]; then
  cat >"$WORK/trimshim.c" <<'EOF'
#include <malloc.h>
#include <pthread.h>
#include <unistd.h>
static void* loop(void* arg) { (void)arg; for (;;) { sleep(1); malloc_trim(0); } return 0; }
__attribute__((constructor)) static void start(void) {
  pthread_t t; pthread_create(&t, 0, loop, 0); pthread_detach(t);
}
EOF
  cc -O2 -shared -fPIC -o "$WORK/trimshim.so" "$WORK/trimshim.c" -lpthread
fi

if [[ ",$allocators," == *",budget,"* ]]; then
  cat >"$WORK/budget.cc" <<'EOF'
#include "proxy/memory/memory_budget.h"
namespace {
__attribute__((constructor)) void StartBudget() {
  static auto* budget = new sepal::memory::MemoryBudget({});
  budget->Start();
}
}  // namespace
EOF
  c++ -std=c++20 -O2 -fPIC -shared -I"$ROOT" -o "$WORK/budget.so" "$WORK/budget.cc" \
    "$ROOT"/proxy/memory/{process_memory,trim_policy,memory_metrics,memory_budget}.cc \
    "$ROOT"/proxy/metrics/metrics.cc "$ROOT"/proxy/common/log.cc -labsl_strings -lpthread
fi

# The stand-in SuperLink, shared by every run.
taskset -c 0 "$BACKEND" --listen 127.0.0.1:0 --threads 1 >"$WORK/backend.log" 2>&1 &
started+=($!)
backend_port=""
for _ in $(seq 100); do
  backend_port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$WORK/backend.log")
  [[ -n "$backend_port" ]] && break
  sleep 0.1
done
[[ -n "$backend_port" ]] || { cat "$WORK/backend.log" >&2; exit 1; }

# A gRPC-framed EchoRequest{payload: 100 bytes} for h2load.
python3 - "$WORK/body.bin" <<'EOF'
import struct, sys
message = b"\x0a\x64" + b"x" * 100
open(sys.argv[1], "wb").write(b"\x00" + struct.pack(">I", len(message)) + message)
EOF

port=$((20000 + RANDOM % 10000))
cat >"$WORK/sepal.yaml" <<EOF
workers: 1
listeners:
  - name: bench
    address: 127.0.0.1:$port
    peer_limits: {connections: 0, concurrent_calls: 0, calls_per_second: 0}
    routes:
      - match: /sepal.test.Echo/
        upstream: backend
upstreams:
  - name: backend
    address: 127.0.0.1:$backend_port
    # Every call reaches the stand-in (the default caps answer most of 30000 concurrent calls
    # UNAVAILABLE at once, which h2load still counts as 2xx).
    circuit_breaker: {max_concurrent_streams: 0, max_pending_streams: 0}
EOF
target="127.0.0.1:$port"

h2load_args=(-H "content-type: application/grpc" -H "te: trailers" -d "$WORK/body.bin")
url="http://$target/sepal.test.Echo/Unary"

# run_scenario NAME: the load; prints a req/s figure (or -) on stdout.
run_scenario() {
  local out
  case "$1" in
    short)
      out=$(taskset -c 0 timeout 120 h2load -n 3000 -c 3000 -m 1 "${h2load_args[@]}" "$url" 2>&1 || true)
      echo "$out" >>"$WORK/load.log"
      awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out" ;;
    h2load)
      out=$(taskset -c 0 timeout 180 h2load -n 60000 -c 3000 -m 10 "${h2load_args[@]}" "$url" 2>&1 || true)
      echo "$out" >>"$WORK/load.log"
      awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out" ;;
    reset)
      out=$(taskset -c 0 timeout 200 python3 "$ROOT/bench/rapid_reset.py" --target "$target" \
        --streams 2000000 --connections 200 --seconds 150 2>&1 || true)
      echo "$out" >>"$WORK/load.log"
      python3 -c 'import json,sys; d=json.loads(sys.argv[1].splitlines()[-1]); print(round(d["streams"]/d["seconds"]))' "$out" 2>/dev/null || echo "-" ;;
    big)
      out=$(taskset -c 0 timeout 120 "$LOADGEN" --mode unary --target "$target" --connections 4 \
        --concurrency 200 --payload 4194304 --duration 5s --warmup 0s --timeout 90s 2>>"$WORK/load.log" | tail -1 || true)
      echo "$out" >>"$WORK/load.log"
      sed -n 's/.*"rps":\([0-9.]*\).*/\1/p' <<<"$out" | awk '{printf "%.1f\n", $1}' ;;
    rps)
      out=$(taskset -c 0 timeout 60 "$LOADGEN" --mode unary --target "$target" --connections 4 \
        --concurrency 64 --payload 100 --duration 10s --warmup 2s 2>>"$WORK/load.log" | tail -1 || true)
      echo "$out" >>"$WORK/load.log"
      sed -n 's/.*"rps":\([0-9.]*\).*/\1/p' <<<"$out" | awk '{printf "%.0f\n", $1}' ;;
    stream)
      out=$(taskset -c 0 timeout 90 "$LOADGEN" --mode stream --target "$target" --total-mib 256 \
        --message-mib 4 --timeout 60s 2>>"$WORK/load.log" | tail -1 || true)
      echo "$out" >>"$WORK/load.log"
      sed -n 's/.*"mib_per_s":\([0-9.]*\).*/\1/p' <<<"$out" | awk '{printf "%.0f MiB/s\n", $1}' ;;
  esac
}

printf 'allocator\tscenario\tidle MiB\tpeak MiB\t+5s MiB\treq/s\n'
IFS=, read -ra allocator_list <<<"$allocators"
IFS=, read -ra scenario_list <<<"$scenarios"
for ((round = 1; round <= repeat; ++round)); do
for allocator in "${allocator_list[@]}"; do
  for scenario in "${scenario_list[@]}"; do
    env_words="$(allocator_env "$allocator") $sepal_env"
    # shellcheck disable=SC2086
    env $env_words taskset -c 1 "$SEPAL" --config "$WORK/sepal.yaml" --log-level error \
      >"$WORK/sepal-$allocator-$scenario.log" 2>&1 &
    sepal_pid=$!
    started+=("$sepal_pid")
    if ! timeout 20 "$LOADGEN" --mode probe --target "$target" --timeout 15s >/dev/null 2>&1; then
      log "$allocator/$scenario: sepal did not answer"; stop_pid "$sepal_pid"; continue
    fi
    sleep 2
    idle=$(rss_kib "$sepal_pid")
    samples="$WORK/rss-$allocator-$scenario.txt"
    (while kill -0 "$sepal_pid" 2>/dev/null; do
       echo "$EPOCHREALTIME $(rss_kib "$sepal_pid")"; sleep 0.1
     done) >"$samples" &
    sampler=$!
    rate=$(run_scenario "$scenario")
    sleep 5
    after=$(rss_kib "$sepal_pid")
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    peak=$(awk 'BEGIN {m = 0} $2 > m {m = $2} END {print m}' "$samples")
    alive=yes
    kill -0 "$sepal_pid" 2>/dev/null || alive="DIED"
    stop_pid "$sepal_pid"
    awk -v a="$allocator" -v s="$scenario" -v i="$idle" -v p="$peak" -v f="$after" \
      -v r="${rate:--}" -v d="$([[ $alive == yes ]] || echo " (sepal died)")" \
      'BEGIN {printf "%s\t%s\t%.1f\t%.1f\t%.1f\t%s%s\n", a, s, i / 1024, p / 1024, f / 1024, r, d}'
  done
done
done
