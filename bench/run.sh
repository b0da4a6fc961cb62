#!/usr/bin/env bash
# Benchmarks sepal against nginx, HAProxy and nghttpx in front of the stand-in SuperLink, one table.
#
# Usage: bench/run.sh [--quick] [--only direct,nginx,haproxy,nghttpx,sepal,...] [--duration 10s]
#                     [--warmup 2s] [--install] [--no-build] [--build-dir DIR] [--keep]
# See bench/README.md for what is measured and how.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$ROOT/build-release"
RESULTS="$ROOT/bench/results"
ALL_TARGETS=(direct nginx haproxy nghttpx sepal sepal-observed sepal-static sepal-tailscale
  nginx-tls haproxy-tls nghttpx-tls sepal-tls)

duration=10s
warmup=2s
total_mib=256
message_mib=4
stream_timeout=60s
connections=4
concurrency=64
payload=100
idle_connections=2000
big_bytes=$((5 * 1024 * 1024))
only=""
BENCH_NAME=bench
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

usage() {
  sed -n '3,5s/^# \{0,1\}//p' "$0"
  cat <<'EOF'
  --quick        smoke run: 2s of unary load after 0.5s warmup, 64 MiB transfers
  --only LIST    comma-separated subset of: direct nginx haproxy nghttpx sepal
                 sepal-observed (admin server on + access log to a file)
                 sepal-static sepal-tailscale (identity + authz on)
                 nginx-tls haproxy-tls nghttpx-tls sepal-tls (TLS from the client,
                 certificates from certs/sepal-certs.sh; unary and handshakes only)
  --duration D   measured unary window (default 10s); --warmup D before it (default 2s)
EOF
  common_usage
}

while (($# > 0)); do
  case "$1" in
    --quick) duration=2s warmup=0.5s total_mib=64 stream_timeout=30s idle_connections=300 ;;
    --only) only=${2:?--only needs a list}; shift ;;
    --only=*) only=${1#*=} ;;
    --duration) duration=${2:?--duration needs a value}; shift ;;
    --duration=*) duration=${1#*=} ;;
    --warmup) warmup=${2:?--warmup needs a value}; shift ;;
    --warmup=*) warmup=${1#*=} ;;
    *) common_option "$@"; shift $((shift_by - 1)) ;;
  esac
  shift
done
select_targets "$only" "${ALL_TARGETS[@]}"
bench_begin

# ---- setup -----------------------------------------------------------------------------

# TLS targets: one CA and one server certificate (localhost, 127.0.0.1, ::1) for every proxy.
CERTS="$WORK/certs"
TLS_ARGS=(--tls --ca "$CERTS/ca.pem" --server-name localhost)
if [[ " ${targets[*]} " == *"-tls "* ]]; then
  "$ROOT/certs/sepal-certs.sh" --dir "$CERTS" server --no-discover >"$WORK/certs.log" 2>&1 ||
    { cat "$WORK/certs.log" >&2; echo "run.sh: could not make the TLS certificates" >&2; exit 1; }
  cat "$CERTS/server.pem" "$CERTS/server.key" >"$CERTS/haproxy.pem"
fi

LOADGEN="$BUILD/bench/sepal-loadgen"
BACKEND="$BUILD/tests/support/sepal-fake-superlink"
FAKE_TAILSCALED="$BUILD/tests/support/sepal-fake-tailscaled"
SEPAL="$BUILD/proxy/sepal"
sepal_built=1
if ((build)); then
  log "building the release preset (build-release/)"
  # The release preset as users build it (warnings as errors; CI builds it too).
  cmake --preset release >"$WORK/configure.log" 2>&1 ||
    { cat "$WORK/configure.log" >&2; exit 1; }
  cmake --build --preset release --target sepal-loadgen sepal-fake-superlink \
    sepal-fake-tailscaled >"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log" >&2; exit 1; }
  if ! cmake --build --preset release --target sepal >"$WORK/build-sepal.log" 2>&1; then
    log "sepal does not build (see below); its row says so"
    tail -15 "$WORK/build-sepal.log" >&2
    sepal_built=0
  fi
fi
[[ -x "$SEPAL" ]] || sepal_built=0
for binary in "$LOADGEN" "$BACKEND"; do
  [[ -x "$binary" ]] || { echo "run.sh: $binary is missing (drop --no-build?)" >&2; exit 1; }
done

# grpc++ honours http_proxy and grpc_proxy; the loopback runs must not go through one.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY grpc_proxy

if ! start_backend "$WORK/backend.log" --threads 1; then
  cat "$WORK/backend.log" >&2
  echo "run.sh: the stand-in SuperLink did not start" >&2
  exit 1
fi
log "stand-in SuperLink on 127.0.0.1:$backend_port (core 0)"

# ---- sepal's configuration (the peers' are in lib.sh) ------------------------------------

# write_sepal_config DIR PORT [IDENTITY]: IDENTITY is none (routes only), observed (routes
# only, plus the admin server and an access log file in DIR), static (a CIDR table) or
# tailscale (WhoIs over the fake tailscaled's unix socket in DIR); with the last two, the
# route admits only tag:supernode, so every call is looked up and authorized.
write_sepal_config() {
  local dir=$1 port=$2 identity=${3:-none} allow="" tls=""
  {
    echo "workers: 1"
    case "$identity" in
      tls)
        tls=$'\n    tls:\n      certificate: '"$CERTS/server.pem"$'\n      private_key: '"$CERTS/server.key"
        identity=none
        ;;
      observed)
        printf 'admin:\n  address: 127.0.0.1:%s\naccess_log: %s\n' "$(pick_port)" "$dir/access.log"
        identity=none
        ;;
      static)
        cat <<EOF
identity:
  provider: static
  static:
    - match: 127.0.0.0/8
      node: bench-supernode
      user: tagged-devices
      tags: [tag:supernode]
EOF
        ;;
      tailscale)
        cat <<EOF
identity:
  provider: tailscale
  tailscale:
    socket: $dir/tailscaled.sock
EOF
        ;;
    esac
    [[ "$identity" == none ]] || allow=$'\n        allow:\n          tags: [tag:supernode]'
    cat <<EOF
listeners:
  - name: bench
    address: 127.0.0.1:$port$tls
    # One load generator plays one peer at thousands of calls/s: the per-peer caps are
    # lifted (still checked on every call, so their cost is in the numbers).
    peer_limits: {connections: 0, concurrent_calls: 0, calls_per_second: 0}
    routes:
      - match: /sepal.test.Echo/
        upstream: backend$allow
upstreams:
  - name: backend
    address: 127.0.0.1:$backend_port
EOF
  } >"$dir/sepal.yaml"
}

# The fake tailscaled for sepal-tailscale, on core 0 with the client side: every loopback
# address is the tagged SuperNode of the WhoIs fixture (tag:supernode).
start_fake_tailscaled() {
  local dir=$1
  [[ -x "$FAKE_TAILSCALED" ]] || return 1
  start_pinned 0 "$dir/tailscaled.log" "$FAKE_TAILSCALED" --socket "$dir/tailscaled.sock" \
    --peer 127.0.0.1=tagged-node.json
  for _ in $(seq 50); do
    [[ -S "$dir/tailscaled.sock" ]] && return 0
    sleep 0.1
  done
  return 1
}

# start_proxy NAME PORT: starts the peer on core 1; sets $proxy_pid, or returns 1 with a reason
# in $skip_reason.
start_proxy() {
  local name=$1 port=$2 dir="$WORK/$1" tls=""
  mkdir -p "$dir"
  [[ "$name" == *-tls ]] && tls=1
  case "$name" in
    nginx | nginx-tls)
      command -v nginx >/dev/null || { skip_reason="not installed"; return 1; }
      write_nginx_config "$dir" "$port" "$tls"
      start_pinned 1 "$dir/stderr.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
      ;;
    haproxy | haproxy-tls)
      command -v haproxy >/dev/null || { skip_reason="not installed"; return 1; }
      write_haproxy_config "$dir" "$port" "$tls"
      start_pinned 1 "$dir/stderr.log" haproxy -db -f "$dir/haproxy.cfg"
      ;;
    nghttpx | nghttpx-tls)
      command -v nghttpx >/dev/null || { skip_reason="not installed"; return 1; }
      local args
      mapfile -t args < <(nghttpx_args "$dir" "$port" "$tls")
      start_pinned 1 "$dir/stderr.log" nghttpx "${args[@]}"
      ;;
    sepal | sepal-observed | sepal-static | sepal-tailscale | sepal-tls)
      ((sepal_built)) || { skip_reason="not built"; return 1; }
      local identity=${name#sepal}
      identity=${identity#-}
      if [[ "$identity" == tailscale ]]; then
        start_fake_tailscaled "$dir" || { skip_reason="fake tailscaled did not start"; return 1; }
      fi
      write_sepal_config "$dir" "$port" "${identity:-none}"
      if [[ -n "$tls" ]] && ! "$SEPAL" --config "$dir/sepal.yaml" --check >"$dir/check.log" 2>&1; then
        skip_reason="sepal --check rejects listeners[].tls: $(grep -m1 -v '^$' "$dir/check.log" | cut -c1-120)"
        return 1
      fi
      start_pinned 1 "$dir/stderr.log" "$SEPAL" --config "$dir/sepal.yaml"
      ;;
  esac
  proxy_pid=$last_pid
}

# run_loadgen SECONDS ARGS...: the loadgen on core 0 with a hard stop as a last resort (it has
# its own --timeout); prints its JSON line, or {"error":"failed"} if it printed none.
run_loadgen() {
  local limit=$1 out
  shift
  out=$(timeout --kill-after=5 "$limit" taskset -c 0 "$LOADGEN" "$@" 2>>"$WORK/loadgen.log" |
    tail -n 1) || true
  [[ "$out" == "{"* ]] || out='{"error":"failed"}'
  echo "$out"
}

# Seconds in a duration like 10s, 500ms, 1.5s, 2m (rounded up), for outer time limits.
duration_seconds() {
  awk -v d="$1" 'BEGIN {
    n = d + 0; if (d ~ /ms$/) n /= 1000; else if (d ~ /m$/) n *= 60
    printf "%d", (n == int(n)) ? n : int(n) + 1 }'
}

# A transfer's cell: MiB/s, or why there is none.
transfer_cell() {
  local json=$1 error
  error=$(json_get "$json" error)
  case "$error" in
    "") printf '%.1f' "$(json_get "$json" mib_per_s)" ;;
    timeout) echo "stalled" ;;
    *) echo "failed" ;;
  esac
}

# ---- the runs ----------------------------------------------------------------------------

declare -A rps p50 p99 stream_cell single_cell rss_mib cpu_us note hs_rate hs_cpu_us
declare -A big_cell big_cpu idle_kib
clk_tck=$(getconf CLK_TCK)
unary_limit=$(($(duration_seconds "$warmup") + $(duration_seconds "$duration") + 40))
stream_limit=$(($(duration_seconds "$stream_timeout") + 15))
RAW="$WORK/raw.jsonl"
: >"$RAW"

bench_one() {
  local name=$1 target port proxy_pid="" skip_reason="" probe unary stream single tls_args=()
  [[ "$name" == *-tls ]] && tls_args=("${TLS_ARGS[@]}")
  if [[ "$name" == direct ]]; then
    target="127.0.0.1:$backend_port"
  else
    port=$(pick_port)
    target="127.0.0.1:$port"
    if ! start_proxy "$name" "$port"; then
      note[$name]=$skip_reason
      log "$name: $skip_reason"
      return 0
    fi
  fi
  log "$name: $target"

  probe=$(run_loadgen 25 --mode probe --target "$target" --timeout 15s "${tls_args[@]}")
  if [[ -n "$(json_get "$probe" error)" ]]; then
    note[$name]="did not start (see $name/stderr.log)"
    if [[ "$name" == sepal-tls ]]; then
      note[$name]="no TLS call succeeded: this build's listener does not serve TLS yet?"
    fi
    log "$name: no successful call within 15s"
    [[ -n "$proxy_pid" ]] && { tail -5 "$WORK/$name/stderr.log" >&2 || true; stop_pid "$proxy_pid"; }
    return 0
  fi

  local ticks_before=0 ticks_after=0
  [[ -n "$proxy_pid" ]] && ticks_before=$(cpu_ticks "$proxy_pid")
  unary=$(run_loadgen "$unary_limit" --mode unary --target "$target" \
    --connections "$connections" --concurrency "$concurrency" --payload "$payload" \
    --duration "$duration" --warmup "$warmup" "${tls_args[@]}")
  [[ -n "$proxy_pid" ]] && ticks_after=$(cpu_ticks "$proxy_pid")
  echo "{\"target\":\"$name\",\"run\":$unary}" >>"$RAW"

  if [[ -n "$(json_get "$unary" error)" ]] || [[ "$(json_get "$unary" calls)" == 0 ]]; then
    rps[$name]="failed"
  else
    rps[$name]=$(printf '%.0f' "$(json_get "$unary" rps)")
    p50[$name]=$(printf '%.0f' "$(json_get "$unary" p50_us)")
    p99[$name]=$(printf '%.0f' "$(json_get "$unary" p99_us)")
    local errors
    errors=$(json_get "$unary" errors)
    ((errors == 0)) || note[$name]="$errors errors: $(json_get "$unary" first_error)"
    if [[ -n "$proxy_pid" ]]; then
      cpu_us[$name]=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$clk_tck" \
        -v n="$(json_get "$unary" all_calls)" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    fi
  fi
  log "$name: unary ${rps[$name]} req/s"

  if ((${#tls_args[@]} > 0)); then
    # A new connection, so a full TLS handshake, for every call; then no large transfers.
    local hs
    ticks_before=$(cpu_ticks "$proxy_pid")
    hs=$(run_loadgen "$unary_limit" --mode handshakes --target "$target" \
      --connections "$connections" --payload "$payload" --duration "$duration" \
      --warmup "$warmup" "${tls_args[@]}")
    ticks_after=$(cpu_ticks "$proxy_pid")
    echo "{\"target\":\"$name\",\"run\":$hs}" >>"$RAW"
    if [[ -n "$(json_get "$hs" error)" ]] || [[ "$(json_get "$hs" calls)" == 0 ]]; then
      hs_rate[$name]="failed"
    else
      hs_rate[$name]=$(printf '%.0f' "$(json_get "$hs" handshakes_per_s)")
      hs_cpu_us[$name]=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$clk_tck" \
        -v n="$(json_get "$hs" all_calls)" 'BEGIN { printf "%.0f", t / hz * 1e6 / n }')
      local hs_errors
      hs_errors=$(json_get "$hs" errors)
      ((hs_errors == 0)) || note[$name]="handshakes: $hs_errors errors: $(json_get "$hs" first_error)"
    fi
    log "$name: ${hs_rate[$name]} handshakes/s"
    rss_mib[$name]=$(awk -v k="$(status_kib "$proxy_pid" VmHWM)" 'BEGIN { printf "%.1f", k / 1024 }')
    stop_pid "$proxy_pid"
    return 0
  fi

  stream=$(run_loadgen "$stream_limit" --mode stream --target "$target" \
    --total-mib "$total_mib" --message-mib "$message_mib" --timeout "$stream_timeout")
  echo "{\"target\":\"$name\",\"run\":$stream}" >>"$RAW"
  stream_cell[$name]=$(transfer_cell "$stream")
  log "$name: ${total_mib} MiB in ${message_mib} MiB messages: ${stream_cell[$name]}"

  single=$(run_loadgen "$stream_limit" --mode stream --target "$target" \
    --total-mib "$total_mib" --message-mib "$total_mib" --timeout "$stream_timeout")
  echo "{\"target\":\"$name\",\"run\":$single}" >>"$RAW"
  single_cell[$name]=$(transfer_cell "$single")
  log "$name: one ${total_mib} MiB message: ${single_cell[$name]}"

  # 5 MiB unary calls, 16 in flight over 8 connections (a round's model arrays); CPU per GiB
  # counts the bytes of both directions.
  local big
  [[ -n "$proxy_pid" ]] && ticks_before=$(cpu_ticks "$proxy_pid")
  big=$(run_loadgen "$unary_limit" --mode unary --target "$target" --connections 8 \
    --concurrency 16 --payload "$big_bytes" --duration "$duration" --warmup "$warmup")
  [[ -n "$proxy_pid" ]] && ticks_after=$(cpu_ticks "$proxy_pid")
  echo "{\"target\":\"$name\",\"run\":$big}" >>"$RAW"
  if [[ -n "$(json_get "$big" error)" ]] || [[ "$(json_get "$big" calls)" == 0 ]]; then
    big_cell[$name]="failed"
  else
    big_cell[$name]=$(awk -v r="$(json_get "$big" rps)" -v b="$big_bytes" \
      'BEGIN { printf "%.0f", r * b / 1048576 }')
    if [[ -n "$proxy_pid" ]]; then
      big_cpu[$name]=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$clk_tck" \
        -v n="$(json_get "$big" all_calls)" -v b="$big_bytes" \
        'BEGIN { printf "%.3f", t / hz / (n * 2 * b / 1073741824) }')
    fi
  fi
  log "$name: 5 MiB calls ${big_cell[$name]} MiB/s, ${big_cpu[$name]:--} s CPU/GiB"

  if [[ -n "$proxy_pid" ]]; then
    rss_mib[$name]=$(awk -v k="$(status_kib "$proxy_pid" VmHWM)" 'BEGIN { printf "%.1f", k / 1024 }')
    stop_pid "$proxy_pid"
    # Memory per idle connection on a fresh proxy: after the runs above, new connections
    # would reuse memory the allocator kept and look free. (Not for sepal-tailscale, whose
    # fake tailscaled stays up.)
    [[ "$name" == *tailscale* ]] && return 0
    port=$(pick_port)
    target="127.0.0.1:$port"
    start_proxy "$name" "$port" || return 0
    probe=$(run_loadgen 25 --mode probe --target "$target" --timeout 15s)
    if [[ -z "$(json_get "$probe" error)" ]]; then
      idle_kib[$name]=$(measure_idle "$name" "$proxy_pid" "$target")
      log "$name: ${idle_kib[$name]} KiB per idle connection ($idle_connections connections)"
    fi
    stop_pid "$proxy_pid"
  fi
}

# KiB of proxy memory per idle connection: VmRSS with $idle_connections connections open,
# each after one call, minus VmRSS before they connected, over their number.
measure_idle() {
  local name=$1 pid=$2 target=$3 before after client waited=0
  sleep 1
  before=$(status_kib "$pid" VmRSS)
  python3 "$ROOT/bench/idle_connections.py" --target "$target" \
    --connections "$idle_connections" --hold 120 >"$WORK/$name/idle.out" 2>&1 &
  client=$!
  started_pids+=("$client")
  until grep -q '^ready' "$WORK/$name/idle.out" 2>/dev/null; do
    if ! kill -0 "$client" 2>/dev/null || ((waited >= 600)); then
      stop_pid "$client"
      echo "failed"
      return 0
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  sleep 10  # sepal gives an idle connection's pages back after 4 s idle, 512 connections a second
  after=$(status_kib "$pid" VmRSS)
  stop_pid "$client"
  awk -v a="$after" -v b="$before" -v n="$idle_connections" 'BEGIN { printf "%.1f", (a - b) / n }'
}

for name in "${targets[@]}"; do bench_one "$name"; done

# ---- the table ---------------------------------------------------------------------------

# Latency a proxy adds over the direct run, in µs.
added() {
  local value=$1 base=$2
  if [[ "$value" =~ ^[0-9]+$ && "$base" =~ ^[0-9]+$ ]]; then
    printf '%+d' $((value - base))
  else
    echo "-"
  fi
}

headers=("target" "req/s" "% direct" "p50 µs" "p99 µs" "+p50 µs" "+p99 µs"
  "${message_mib}MiB msgs MiB/s" "1×${total_mib}MiB MiB/s" "5MiB calls MiB/s" "CPU s/GiB"
  "peak RSS MiB" "KiB/idle conn" "CPU µs/call"
  "handshakes/s" "CPU µs/handshake" "note")
rows=()
for name in "${targets[@]}"; do
  r=${rps[$name]:--}
  share="-"
  if [[ "$r" =~ ^[0-9]+$ && "${rps[direct]:-}" =~ ^[0-9]+$ ]] && ((rps[direct] > 0)); then
    share="$((100 * r / rps[direct]))%"
  fi
  row=("$name" "$r" "$share" "${p50[$name]:--}" "${p99[$name]:--}"
    "$(added "${p50[$name]:-}" "${p50[direct]:-}")" "$(added "${p99[$name]:-}" "${p99[direct]:-}")"
    "${stream_cell[$name]:--}" "${single_cell[$name]:--}" "${big_cell[$name]:--}"
    "${big_cpu[$name]:--}" "${rss_mib[$name]:--}" "${idle_kib[$name]:--}"
    "${cpu_us[$name]:--}" "${hs_rate[$name]:--}" "${hs_cpu_us[$name]:--}" "${note[$name]:-}")
  rows+=("$(IFS=$'\t'; echo "${row[*]}")")
done

stamp=$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS"
describe_run() {
  echo "sepal bench $stamp on $(uname -r), $(nproc) cores: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "unary: $concurrency calls in flight over $connections connections, ${payload}-byte echo, ${duration} after ${warmup} warmup"
  echo "backend and loadgen on core 0, proxy on core 1, one worker; MiB/s counts bytes sent (echoed back)"
  if [[ " ${targets[*]} " == *"-tls "* ]]; then
    echo "*-tls: TLS from the client (EC P-256 certificate from certs/sepal-certs.sh), h2c to the backend; handshakes/s: a new connection per call over $connections loops"
  fi
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every number)"
}

{
  describe_run
  echo
  {
    (IFS=$'\t'; echo "${headers[*]}")
    printf '%s\n' "${rows[@]}"
  } | column -t -s $'\t'
} | tee "$RESULTS/$stamp.txt"

{
  describe_run | sed 's/^/    /'
  echo
  (IFS='|'; echo "|${headers[*]}|")
  printf '|'; printf -- '---|%.0s' "${headers[@]}"; echo
  for row in "${rows[@]}"; do echo "|${row//$'\t'/|}|"; done
} >"$RESULTS/$stamp.md"
cp "$RAW" "$RESULTS/$stamp.jsonl"
log "results: bench/results/$stamp.{txt,md,jsonl}"
