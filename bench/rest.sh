#!/usr/bin/env bash
# Benchmarks sepal's REST (HTTP/1.1, Flower's Fleet REST transport) proxy path against nginx
# proxy_pass and the stand-in REST SuperLink itself, with h2load --h1; one table.
#
# Usage: bench/rest.sh [--quick] [--only direct,nginx,sepal] [--duration SECS] [--warmup SECS]
#                      [--big-duration SECS] [--install] [--no-build] [--build-dir DIR] [--keep]
# Environment: SEPAL=/path/to/sepal (default: the build directory's proxy/sepal); BACKEND=/path
# to sepal-fake-rest-superlink (default: the build directory's tests/support/...).
# See bench/README.md ("REST (Fleet REST transport)") for what is measured and how.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$ROOT/build-release"
RESULTS="$ROOT/bench/results"
ALL_TARGETS=(direct nginx sepal)

duration=10     # small POSTs: measured seconds, after `warmup` seconds of the same load
warmup=2
big_duration=8  # each of the two 5 MiB runs
clients=16      # small POSTs: connections, one request in flight on each (HTTP/1.1)
big_clients=4   # 5 MiB runs: connections
small_bytes=100
big_bytes=$((5 * 1024 * 1024))
only=""
BENCH_NAME=rest
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

usage() {
  sed -n '3,8s/^# \{0,1\}//p' "$0"
  cat <<'EOF'
  --quick            smoke run: 2 s of small POSTs after 1 s warmup, 3 s per 5 MiB run
  --only LIST        comma-separated subset of: direct nginx sepal
  --duration S       measured window of the small POSTs in seconds (default 10)
  --warmup S         small POSTs before it, not measured (default 2)
  --big-duration S   each 5 MiB run (up, down) in seconds (default 8)
EOF
  common_usage
}

while (($# > 0)); do
  case "$1" in
    --quick) duration=2 warmup=1 big_duration=3 ;;
    --only) only=${2:?--only needs a list}; shift ;;
    --only=*) only=${1#*=} ;;
    --duration) duration=${2:?--duration needs seconds}; shift ;;
    --duration=*) duration=${1#*=} ;;
    --warmup) warmup=${2:?--warmup needs seconds}; shift ;;
    --warmup=*) warmup=${1#*=} ;;
    --big-duration) big_duration=${2:?--big-duration needs seconds}; shift ;;
    --big-duration=*) big_duration=${1#*=} ;;
    *) common_option "$@"; shift $((shift_by - 1)) ;;
  esac
  shift
done
for value in "$duration" "$warmup" "$big_duration"; do
  [[ "$value" =~ ^[1-9][0-9]*$ ]] || { echo "rest.sh: durations are whole seconds (>= 1)" >&2; exit 2; }
done
select_targets "$only" "${ALL_TARGETS[@]}"
bench_begin

# ---- setup -----------------------------------------------------------------------------

command -v h2load >/dev/null ||
  { echo "rest.sh: h2load is missing (apt-get install nghttp2-client, or --install)" >&2; exit 1; }

sepal_given=${SEPAL:+1}
SEPAL=${SEPAL:-$BUILD/proxy/sepal}
BACKEND=${BACKEND:-$BUILD/tests/support/sepal-fake-rest-superlink}
if ((build)); then
  log "building the release preset (build-release/)"
  cmake --preset release >"$WORK/configure.log" 2>&1 || { cat "$WORK/configure.log" >&2; exit 1; }
  cmake --build --preset release --target sepal-fake-rest-superlink >"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log" >&2; exit 1; }
  if [[ " ${targets[*]} " == *" sepal "* && -z "$sepal_given" ]] &&
    ! cmake --build --preset release --target sepal >"$WORK/build-sepal.log" 2>&1; then
    log "sepal does not build (see below); its row says so"
    tail -15 "$WORK/build-sepal.log" >&2
  fi
fi
[[ -x "$BACKEND" ]] ||
  { echo "rest.sh: $BACKEND is missing (drop --no-build, or set BACKEND=)" >&2; exit 1; }

unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY

# The bodies: a 100-byte FleetRequest (payload field, 98 bytes) for the small POSTs and the
# 5 MiB pull, and 5 MiB for the push (only counted by the backend: --parse-limit below).
SMALL_BODY="$WORK/small.bin"
BIG_BODY="$WORK/big.bin"
# (small_bytes < 130: field 2, one-byte length)
length_hex=$(printf %02x $((small_bytes - 2)))
{ printf '%b' "\\x12\\x$length_hex"; head -c $((small_bytes - 2)) /dev/zero | tr '\0' 'p'; } >"$SMALL_BODY"
head -c "$big_bytes" /dev/zero | tr '\0' 'o' >"$BIG_BODY"
PROTOBUF=(-H "Content-Type: application/protobuf" -H "Accept: application/protobuf")

# The stand-in REST SuperLink on core 0 (with h2load), one thread per connection. Bodies over
# 1 MiB are only counted and hashed, so a push's answer is small.
if ! start_backend "$WORK/backend.log" --parse-limit $((1 << 20)); then
  cat "$WORK/backend.log" >&2
  echo "rest.sh: the stand-in REST SuperLink did not start" >&2
  exit 1
fi
log "stand-in REST SuperLink on 127.0.0.1:$backend_port (core 0)"

# ---- the proxies' configurations ---------------------------------------------------------

# nginx as for gRPC in lib.sh (one worker, no access log, long timeouts, upstream keepalive),
# proxying HTTP/1.1 with a keep-alive upstream and neither body buffered (streamed through).
write_nginx_rest_config() {
  local dir=$1 port=$2
  mkdir -p "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  client_body_timeout 300s;
  send_timeout 300s;
  upstream backend {
    server 127.0.0.1:$backend_port;
    keepalive 16;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$port;
    location /api/v0/fleet/ {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_buffering off;
      client_max_body_size 0;
      # 64 KiB reads each way, as run.sh's grpc_buffer_size (the defaults are one page).
      proxy_buffer_size 64k;
      proxy_buffers 8 64k;
      client_body_buffer_size 64k;
      proxy_read_timeout 300s;
      proxy_send_timeout 300s;
    }
  }
}
EOF
}

# sepal as run.sh's `sepal` row: one worker, no admin server, no access log, no identity
# (routes only), the per-peer caps lifted (one load generator is one peer).
write_sepal_rest_config() {
  local dir=$1 port=$2
  cat >"$dir/sepal.yaml" <<EOF
workers: 1
listeners:
  - name: fleet-rest
    address: 127.0.0.1:$port
    protocol: http1
    peer_limits: {connections: 0, concurrent_calls: 0, calls_per_second: 0}
    routes:
      - match: /api/v0/fleet/
        upstream: superlink-rest
upstreams:
  - name: superlink-rest
    address: 127.0.0.1:$backend_port
    protocol: http1
EOF
}

# start_proxy NAME PORT: the proxy on core 1; sets $proxy_pid, or returns 1 with a reason in
# $skip_reason.
start_proxy() {
  local name=$1 port=$2 dir="$WORK/$1"
  mkdir -p "$dir"
  case "$name" in
    nginx)
      command -v nginx >/dev/null || { skip_reason="not installed"; return 1; }
      write_nginx_rest_config "$dir" "$port"
      start_pinned 1 "$dir/stderr.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
      ;;
    sepal)
      [[ -x "$SEPAL" ]] || { skip_reason="not built ($SEPAL; set SEPAL=)"; return 1; }
      write_sepal_rest_config "$dir" "$port"
      if ! "$SEPAL" --config "$dir/sepal.yaml" --check >"$dir/check.log" 2>&1; then
        skip_reason="sepal --check rejects the config: $(grep -m1 -v '^$' "$dir/check.log" | cut -c1-160)"
        return 1
      fi
      start_pinned 1 "$dir/stderr.log" "$SEPAL" --config "$dir/sepal.yaml"
      ;;
  esac
  proxy_pid=$last_pid
}

# ---- h2load ------------------------------------------------------------------------------

# run_h2load LIMIT OUT ARGS...: h2load --h1 on core 0 in the background (so a signal to this
# script is handled at once, and the trap stops it by PID), killed after LIMIT seconds; its
# output in OUT.
run_h2load() {
  local limit=$1 out=$2 pid
  shift 2
  timeout --kill-after=5 "$limit" taskset -c 0 h2load --h1 -t 1 "$@" >"$out" 2>&1 &
  pid=$!
  started_pids+=("$pid")
  wait "$pid" || true
  forget_pid "$pid"
}

# h2load_field OUT WHAT: a number from h2load's summary: succeeded, done or failed
# ("requests:" line), 2xx ("status codes:" line) or seconds ("finished in").
h2load_field() {
  local out=$1 what=$2
  case "$what" in
    seconds)
      sed -n 's/^finished in \([0-9.]*\)\(us\|ms\|s\),.*/\1 \2/p' "$out" |
        awk '{ f = $2 == "us" ? 1e-6 : $2 == "ms" ? 1e-3 : 1; printf "%.6f", $1 * f }'
      ;;
    2xx) sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' "$out" ;;
    *) sed -n "s/^requests: .* \([0-9]*\) $what,.*/\1/p" "$out" ;;
  esac
}

# A short reason from an h2load run that got no 2xx answers.
h2load_problem() {
  local out=$1
  grep -m1 '^status codes:' "$out" 2>/dev/null ||
    grep -m1 -iE 'error|refused|fail' "$out" 2>/dev/null || echo "no output"
}

# probe TARGET_URL: one small POST at a time until one is answered 2xx (15 s at most).
probe() {
  local url=$1 out="$WORK/probe.out" deadline=$((SECONDS + 15))
  while ((SECONDS < deadline)); do
    run_h2load 5 "$out" -n 1 -c 1 -d "$SMALL_BODY" "${PROTOBUF[@]}" "$url/pull-messages"
    [[ "$(h2load_field "$out" 2xx)" == 1 ]] && return 0
    sleep 0.5
  done
  return 1
}

# Percentile P (0-100) of the third column (µs from request to end of response) of an h2load
# --log-file.
percentile_us() {
  local file=$1 p=$2
  cut -f3 "$file" | sort -n | awk -v p="$p" '{ v[NR] = $1 }
    END { if (NR == 0) { print "-"; exit } i = int(NR * p / 100 + 0.999999); if (i < 1) i = 1
          if (i > NR) i = NR; print v[i] }'
}

# ---- the runs ----------------------------------------------------------------------------

declare -A rps p50 p99 cpu_us up_mibs up_cpu down_mibs down_cpu rss_mib note
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
clk_tck=$(getconf CLK_TCK)

add_note() {
  local name=$1
  shift
  note[$name]="${note[$name]:+${note[$name]}; }$*"
}

# big_run NAME URL LABEL ARGS...: one 5 MiB run of big_clients connections for big_duration s;
# sets big_mibs (MiB/s of 5 MiB bodies, or "failed") and big_cpu (the proxy's CPU s per GiB of
# them, "-" for direct). Not in a subshell: h2load's PID must reach the trap.
big_run() {
  local name=$1 url=$2 label=$3 out="$WORK/$1/$3.out" before=0 after=0
  shift 3
  big_mibs="failed" big_cpu="-"
  [[ -n "$proxy_pid" ]] && before=$(cpu_ticks "$proxy_pid")
  run_h2load $((big_duration + 20)) "$out" -c "$big_clients" -D "$big_duration" "$@" "$url"
  [[ -n "$proxy_pid" ]] && after=$(cpu_ticks "$proxy_pid")
  local ok completed seconds failed
  ok=$(h2load_field "$out" succeeded)
  completed=$(h2load_field "$out" "done")
  failed=$(h2load_field "$out" failed)
  seconds=$(h2load_field "$out" seconds)
  if [[ -z "$ok" || "$ok" == 0 || -z "$seconds" ]]; then
    add_note "$name" "5MiB $label: $(h2load_problem "$out")"
    return 0
  fi
  ((${failed:-0} == 0)) || add_note "$name" "5MiB $label: $failed failed"
  big_mibs=$(awk -v ok="$ok" -v s="$seconds" -v b="$big_bytes" \
    'BEGIN { printf "%.0f", ok * b / 1048576 / s }')
  if [[ -n "$proxy_pid" ]]; then
    big_cpu=$(awk -v n="$completed" -v b="$big_bytes" -v t=$((after - before)) -v hz="$clk_tck" \
      'BEGIN { printf "%.3f", t / hz / (n * b / 1073741824) }')
  fi
}

bench_one() {
  local name=$1 port url proxy_pid="" skip_reason=""
  mkdir -p "$WORK/$name"
  if [[ "$name" == direct ]]; then
    port=$backend_port
  else
    port=$(pick_port)
    if ! start_proxy "$name" "$port"; then
      note[$name]=$skip_reason
      log "$name: $skip_reason"
      return 0
    fi
  fi
  url="http://127.0.0.1:$port/api/v0/fleet"
  log "$name: $url"
  if ! probe "$url"; then
    note[$name]="no 2xx answer within 15 s: $(h2load_problem "$WORK/probe.out")"
    log "$name: ${note[$name]}"
    if [[ -n "$proxy_pid" ]]; then
      tail -5 "$WORK/$name/stderr.log" >&2 || true
      stop_pid "$proxy_pid"
      forget_pid "$proxy_pid"
    fi
    return 0
  fi

  # Small POSTs: a warmup run, then the measured one with the proxy's CPU read around it.
  local small=(-c "$clients" -m 1 -d "$SMALL_BODY" "${PROTOBUF[@]}" "$url/pull-messages")
  run_h2load $((warmup + 20)) "$WORK/$name/warmup.out" -D "$warmup" "${small[@]}"
  local out="$WORK/$name/small.out" requests="$WORK/$name/small.log" before=0 after=0
  [[ -n "$proxy_pid" ]] && before=$(cpu_ticks "$proxy_pid")
  run_h2load $((duration + 20)) "$out" -D "$duration" --log-file="$requests" "${small[@]}"
  [[ -n "$proxy_pid" ]] && after=$(cpu_ticks "$proxy_pid")
  local ok completed failed seconds
  ok=$(h2load_field "$out" succeeded)
  completed=$(h2load_field "$out" "done")
  failed=$(h2load_field "$out" failed)
  seconds=$(h2load_field "$out" seconds)
  if [[ -z "$ok" || "$ok" == 0 || -z "$seconds" ]]; then
    rps[$name]="failed"
    add_note "$name" "small POSTs: $(h2load_problem "$out")"
  else
    ((${failed:-0} == 0)) || add_note "$name" "small POSTs: $failed failed"
    local non2xx
    non2xx=$(awk -F'\t' '$2 !~ /^2/ { n++ } END { print n + 0 }' "$requests")
    ((non2xx == 0)) || add_note "$name" "small POSTs: $non2xx answers not 2xx"
    rps[$name]=$(awk -v n="$ok" -v s="$seconds" 'BEGIN { printf "%.0f", n / s }')
    p50[$name]=$(percentile_us "$requests" 50)
    p99[$name]=$(percentile_us "$requests" 99)
    if [[ -n "$proxy_pid" ]]; then
      cpu_us[$name]=$(awk -v t=$((after - before)) -v hz="$clk_tck" -v n="$completed" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    fi
  fi
  log "$name: small POSTs ${rps[$name]} req/s, p50 ${p50[$name]:--} µs, CPU ${cpu_us[$name]:--} µs/call"

  # 5 MiB up (push-object) and down (a small pull-object asking for a 5 MiB reply).
  local big_mibs big_cpu
  big_run "$name" "$url/push-object" up -d "$BIG_BODY" "${PROTOBUF[@]}"
  up_mibs[$name]=$big_mibs up_cpu[$name]=$big_cpu
  log "$name: 5 MiB up ${up_mibs[$name]} MiB/s, ${up_cpu[$name]} CPU s/GiB"
  big_run "$name" "$url/pull-object" down -d "$SMALL_BODY" "${PROTOBUF[@]}" \
    -H "x-reply-bytes: $big_bytes"
  down_mibs[$name]=$big_mibs down_cpu[$name]=$big_cpu
  log "$name: 5 MiB down ${down_mibs[$name]} MiB/s, ${down_cpu[$name]} CPU s/GiB"

  if [[ -n "$proxy_pid" ]]; then
    kill -0 "$proxy_pid" 2>/dev/null ||
      add_note "$name" "exited during the runs (see $name/stderr.log with --keep)"
    rss_mib[$name]=$(awk -v k="$(status_kib "$proxy_pid" VmHWM)" 'BEGIN { printf "%.1f", k / 1024 }')
    stop_pid "$proxy_pid"
    forget_pid "$proxy_pid"
  fi
}

for name in "${targets[@]}"; do bench_one "$name"; done

# ---- the table ---------------------------------------------------------------------------

headers=("target" "req/s" "% direct" "p50 µs" "p99 µs" "CPU µs/call" "5MiB up MiB/s"
  "CPU s/GiB up" "5MiB down MiB/s" "CPU s/GiB down" "peak RSS MiB" "note")
rows=()
for name in "${targets[@]}"; do
  r=${rps[$name]:--}
  share="-"
  if [[ "$r" =~ ^[0-9]+$ && "${rps[direct]:-}" =~ ^[0-9]+$ ]] && ((rps[direct] > 0)); then
    share="$((100 * r / rps[direct]))%"
  fi
  row=("$name" "$r" "$share" "${p50[$name]:--}" "${p99[$name]:--}" "${cpu_us[$name]:--}"
    "${up_mibs[$name]:--}" "${up_cpu[$name]:--}" "${down_mibs[$name]:--}" "${down_cpu[$name]:--}"
    "${rss_mib[$name]:--}" "$(tr '|' '/' <<<"${note[$name]:-}")")
  rows+=("$(IFS=$'\t'; echo "${row[*]}")")
done

stamp=$(date +%Y%m%d-%H%M%S)
{
  echo "sepal REST bench $stamp on $(uname -r), $(nproc) cores: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "h2load --h1: small POSTs ${small_bytes} B on $clients connections (1 in flight each), ${duration} s after ${warmup} s warmup; 5 MiB up/down on $big_clients connections, ${big_duration} s each"
  echo "backend and h2load on core 0, proxy on core 1, one worker; load average at the start $load_at_start, at the end $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the proxy rows)"
  echo
  (IFS='|'; echo "|${headers[*]}|")
  printf '|'; printf -- '---|%.0s' "${headers[@]}"; echo
  for row in "${rows[@]}"; do echo "|${row//$'\t'/|}|"; done
} | { mkdir -p "$RESULTS"; tee "$RESULTS/rest-$stamp.md"; }
log "results: bench/results/rest-$stamp.md"
