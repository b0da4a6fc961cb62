#!/usr/bin/env bash
# Hostile peers: sepal, nginx, HAProxy and nghttpx in front of the stand-in SuperLink while one
# allowed peer attacks and another makes ordinary calls; one table.
#
# Usage: bench/attacks.sh [--only sepal,nginx,haproxy,nghttpx] [--attacks KIND,...]
#                         [--duration 6s] [--baseline 3s] [--rate 88] [--install]
#                         [--no-build] [--build-dir DIR] [--keep]
# See bench/README.md, "Hostile peers (attacks.sh)".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$ROOT/build-release"
RESULTS="$ROOT/bench/results"
ALL_TARGETS=(sepal nginx haproxy nghttpx)
ALL_ATTACKS=(rapid-reset empty-data slow-body excess-streams slow-calls idle-conns
  ping-flood settings-flood window-update-flood)
ATTACKER_IP=127.0.0.2
GOOD_IP=127.0.0.3

duration=6s   # the attack
baseline=3s   # the good client alone, before it
rate=88       # good calls per second
after_s=5     # RSS sampled this long after the attack
only=""
attacks_only=""
BENCH_NAME=attacks
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

usage() {
  sed -n '3,7s/^# \{0,1\}//p' "$0"
  cat <<'EOF'
  --only LIST     targets, comma-separated: sepal nginx haproxy nghttpx (default: all)
  --attacks LIST  attack kinds (default: all): rapid-reset empty-data slow-body
                  excess-streams slow-calls idle-conns ping-flood settings-flood
                  window-update-flood
  --duration D    each attack (default 6s; keep it <= 8s); --baseline D: the good client
                  alone before it (default 3s); --rate N: good calls/s (default 88)
EOF
  common_usage
}

while (($# > 0)); do
  case "$1" in
    --only) only=${2:?--only needs a list}; shift ;;
    --only=*) only=${1#*=} ;;
    --attacks) attacks_only=${2:?--attacks needs a list}; shift ;;
    --attacks=*) attacks_only=${1#*=} ;;
    --duration) duration=${2:?--duration needs a value}; shift ;;
    --duration=*) duration=${1#*=} ;;
    --baseline) baseline=${2:?--baseline needs a value}; shift ;;
    --baseline=*) baseline=${1#*=} ;;
    --rate) rate=${2:?--rate needs a value}; shift ;;
    --rate=*) rate=${1#*=} ;;
    *) common_option "$@"; shift $((shift_by - 1)) ;;
  esac
  shift
done

# pick_list NAME ALLOWED... < "a,b": the chosen subset, or all of ALLOWED.
pick_list() {
  local what=$1 given=$2 item
  shift 2
  if [[ -z "$given" ]]; then printf '%s\n' "$@"; return 0; fi
  IFS=, read -ra chosen <<<"$given"
  for item in "${chosen[@]}"; do
    [[ " $* " == *" $item "* ]] || { echo "attacks.sh: unknown $what $item" >&2; exit 2; }
    echo "$item"
  done
}
mapfile -t targets < <(pick_list target "$only" "${ALL_TARGETS[@]}")
mapfile -t attacks < <(pick_list attack "$attacks_only" "${ALL_ATTACKS[@]}")

# Seconds in a duration like 6s or 500ms, as a decimal.
seconds_of() { awk -v d="$1" 'BEGIN { n = d + 0; if (d ~ /ms$/) n /= 1000; printf "%g", n }'; }
attack_s=$(seconds_of "$duration")
baseline_s=$(seconds_of "$baseline")
awk -v a="$attack_s" 'BEGIN { exit !(a >= 2 && a <= 30) }' ||
  { echo "attacks.sh: --duration must be 2s..30s" >&2; exit 2; }

bench_begin

# sample_rss PID FILE: appends the tree's VmRSS (KiB) every 100 ms until stopped.
sample_rss() {
  local pid=$1 file=$2
  while kill -0 "$pid" 2>/dev/null; do
    status_kib "$pid" VmRSS >>"$file"
    sleep 0.1
  done
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---- setup -----------------------------------------------------------------------------

ATTACK="$BUILD/bench/sepal-attack"
BACKEND="$BUILD/tests/support/sepal-fake-superlink"
SEPAL="$BUILD/proxy/sepal"
sepal_built=1
if ((build)); then
  log "building the release preset (build-release/)"
  cmake --preset release >"$WORK/configure.log" 2>&1 ||
    { cat "$WORK/configure.log" >&2; exit 1; }
  cmake --build --preset release -j2 --target sepal-fake-superlink sepal-attack \
    >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; exit 1; }
  if ! cmake --build --preset release -j2 --target sepal >"$WORK/build-sepal.log" 2>&1; then
    log "sepal does not build (see below); its rows say so"
    tail -15 "$WORK/build-sepal.log" >&2
    sepal_built=0
  fi
fi
[[ -x "$SEPAL" ]] || sepal_built=0
for binary in "$ATTACK" "$BACKEND"; do
  [[ -x "$binary" ]] || { echo "attacks.sh: $binary is missing (drop --no-build?)" >&2; exit 1; }
done
# The attacker and the good client need their own loopback addresses (Linux: all of 127/8).
ip -4 addr show lo 2>/dev/null | grep -q 'inet 127\.0\.0\.1/8' ||
  { echo "attacks.sh: lo does not carry 127.0.0.0/8" >&2; exit 1; }
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY grpc_proxy
# The attacker raises its own soft limit to the hard one; the proxies inherit this shell's.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# backend_for DIR: a fresh stand-in SuperLink on core 0 with Flower's 1000-call limit; sets
# $backend_pid and $backend_port.
backend_for() {
  start_backend "$1/backend.log" --max-concurrent-calls 1000 --stats-file "$1/upstream.json"
}

# ---- sepal's configuration (the peers' are in lib.sh, as bench/run.sh makes them) ----------

# sepal with its defaults, identity from a static table: the attacker and the good client
# are both allowed SuperNodes (tag:supernode), told apart by source address.
write_sepal_config() {
  local dir=$1 port=$2
  cat >"$dir/sepal.yaml" <<EOF
workers: 1
identity:
  provider: static
  static:
    - match: $ATTACKER_IP/32
      node: attacker
      tags: [tag:supernode]
    - match: $GOOD_IP/32
      node: good-node
      tags: [tag:supernode]
listeners:
  - name: fleet
    address: 127.0.0.1:$port
    routes:
      - match: /sepal.test.Echo/
        upstream: backend
        allow:
          tags: [tag:supernode]
upstreams:
  - name: backend
    address: 127.0.0.1:$backend_port
EOF
}

# start_proxy NAME DIR PORT: the peer on core 1; sets $proxy_pid, or returns 1 with a reason
# in $skip_reason.
start_proxy() {
  local name=$1 dir=$2 port=$3
  case "$name" in
    nginx)
      command -v nginx >/dev/null || { skip_reason="not installed"; return 1; }
      write_nginx_config "$dir" "$port"
      start_pinned 1 "$dir/stderr.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
      ;;
    haproxy)
      command -v haproxy >/dev/null || { skip_reason="not installed"; return 1; }
      write_haproxy_config "$dir" "$port"
      start_pinned 1 "$dir/stderr.log" haproxy -db -f "$dir/haproxy.cfg"
      ;;
    nghttpx)
      command -v nghttpx >/dev/null || { skip_reason="not installed"; return 1; }
      local args
      mapfile -t args < <(nghttpx_args "$dir" "$port")
      start_pinned 1 "$dir/stderr.log" nghttpx "${args[@]}"
      ;;
    sepal)
      ((sepal_built)) || { skip_reason="not built"; return 1; }
      write_sepal_config "$dir" "$port"
      if ! "$SEPAL" --config "$dir/sepal.yaml" --check >"$dir/check.log" 2>&1; then
        skip_reason="sepal --check: $(grep -m1 -v '^$' "$dir/check.log" | cut -c1-100)"
        return 1
      fi
      start_pinned 1 "$dir/stderr.log" "$SEPAL" --config "$dir/sepal.yaml"
      ;;
  esac
  proxy_pid=$last_pid
}

# good SECONDS [ARGS...]: the good client on core 0 from $GOOD_IP; prints its JSON line.
good() {
  local seconds=$1 out
  shift
  out=$(timeout --kill-after=5 "$(awk -v s="$seconds" 'BEGIN { print s + 25 }')" \
    taskset -c 0 "$ATTACK" --role good --target "$target" --bind "$GOOD_IP" --rate "$rate" \
    --duration "${seconds}s" "$@" 2>>"$WORK/good.log" | tail -n 1) || true
  [[ "$out" == "{"* ]] || out='{"error":"failed"}'
  echo "$out"
}

# Waits (15 s at most) until a good call gets through the proxy.
wait_ready() {
  local probe
  for _ in $(seq 30); do
    kill -0 "$proxy_pid" 2>/dev/null || return 1
    probe=$(good 0.3 --rate 20)
    [[ "$(json_get "$probe" ok)" =~ ^[1-9] ]] && return 0
    sleep 0.2
  done
  return 1
}

# What the attacker saw, in a few words.
attacker_summary() {
  local json=$1 kind=$2 parts=() v
  case "$kind" in
    rapid-reset) parts+=("$(json_get "$json" resets_sent) resets") ;;
    empty-data | ping-flood | settings-flood | window-update-flood)
      parts+=("$(json_get "$json" frames_sent) frames") ;;
    excess-streams)
      parts+=("$(json_get "$json" streams_opened) streams vs $(json_get "$json" advertised_max_streams) advertised, $(json_get "$json" refused_streams) REFUSED_STREAM") ;;
    slow-body | slow-calls) parts+=("$(json_get "$json" streams_opened) streams") ;;
    idle-conns) parts+=("max $(json_get "$json" max_open) open, $(json_get "$json" open_at_end) at end") ;;
  esac
  v=$(json_get "$json" connects)
  [[ "$v" =~ ^[0-9]+$ ]] && ((v > 1)) && parts+=("$v conns")
  v=$(json_get "$json" goaway_codes)
  [[ -n "$v" ]] && parts+=("GOAWAY ${v//,/ }")
  if [[ "$kind" != excess-streams ]]; then
    v=$(json_get "$json" rst_codes)
    [[ -n "$v" ]] && parts+=("RST ${v//,/ }")
  fi
  v=$(json_get "$json" grpc_statuses)
  [[ -n "$v" ]] && parts+=("grpc ${v//,/ }")
  v=$(json_get "$json" error)
  [[ -n "$v" ]] && parts+=("attacker error: $v")
  local joined
  joined=$(IFS=';'; echo "${parts[*]}")
  echo "${joined//;/; }"
}

# ---- the runs ----------------------------------------------------------------------------

RAW="$WORK/raw.jsonl"
: >"$RAW"
rows=()

run_one() {
  local name=$1 kind=$2 dir="$WORK/$1-$2" port target proxy_pid="" skip_reason=""
  mkdir -p "$dir"
  local row_prefix="$name"$'\t'"$kind"
  if ! backend_for "$dir"; then
    rows+=("$row_prefix"$'\t'"stand-in SuperLink did not start")
    return 0
  fi
  port=$(pick_port)
  target="127.0.0.1:$port"
  if ! start_proxy "$name" "$dir" "$port"; then
    rows+=("$row_prefix"$'\t'"$skip_reason")
    stop_pid "$backend_pid"
    return 0
  fi
  if ! wait_ready; then
    log "$name/$kind: no good call got through within 15 s"
    tail -5 "$dir/stderr.log" >&2 || true
    rows+=("$row_prefix"$'\t'"did not start (see $name/stderr.log)")
    stop_pid "$proxy_pid"
    stop_pid "$backend_pid"
    return 0
  fi

  local idle
  idle=$(good "$baseline_s")
  local upstream_before rss_before
  upstream_before=$(cat "$dir/upstream.json" 2>/dev/null || echo '{}')
  rss_before=$(status_kib "$proxy_pid" VmRSS)

  # The good client runs throughout; its numbers count the calls started while the attack is
  # at full strength (0.5 s after the attacker starts, until it stops).
  local good_s good_pid attack_json good_json
  good_s=$(awk -v a="$attack_s" 'BEGIN { print a + 2 }')
  sample_rss "$proxy_pid" "$dir/rss.samples" &
  local sampler_pid=$!
  started_pids+=("$sampler_pid")
  good "$good_s" --window "1.5:$(awk -v a="$attack_s" 'BEGIN { print a + 1 }')" \
    >"$dir/good.json" &
  good_pid=$!
  started_pids+=("$good_pid")
  sleep 1
  attack_json=$(timeout --kill-after=5 "$(awk -v a="$attack_s" 'BEGIN { print a + 25 }')" \
    nice -n 10 taskset -c 0 "$ATTACK" --role attacker --kind "$kind" --target "$target" \
    --bind "$ATTACKER_IP" --duration "${attack_s}s" 2>"$dir/attacker.log" | tail -n 1) || true
  [[ "$attack_json" == "{"* ]] || attack_json='{"error":"failed"}'
  wait "$good_pid" 2>/dev/null || true
  good_json=$(tail -n 1 "$dir/good.json")
  [[ "$good_json" == "{"* ]] || good_json='{"error":"failed"}'
  local upstream_attack
  upstream_attack=$(cat "$dir/upstream.json" 2>/dev/null || echo '{}')
  sleep "$after_s"
  local rss_after hwm alive=1
  kill -0 "$proxy_pid" 2>/dev/null || alive=0
  rss_after=$(status_kib "$proxy_pid" VmRSS)
  hwm=$(status_kib "$proxy_pid" VmHWM)
  stop_pid "$sampler_pid"
  local rss_peak
  rss_peak=$(sort -n "$dir/rss.samples" 2>/dev/null | tail -n 1)
  rss_peak=${rss_peak:-0}
  ((rss_before > rss_peak)) && rss_peak=$rss_before
  ((rss_after > rss_peak)) && rss_peak=$rss_after
  stop_pid "$proxy_pid"
  stop_pid "$backend_pid"

  echo "{\"target\":\"$name\",\"attack\":\"$kind\",\"idle\":$idle,\"good\":$good_json,\"attacker\":$attack_json,\"upstream_before\":$upstream_before,\"upstream_after_attack\":$upstream_attack,\"rss_kib\":{\"before\":$rss_before,\"peak\":$rss_peak,\"after\":$rss_after,\"hwm\":$hwm},\"proxy_alive\":$alive}" >>"$RAW"

  local calls peak rejected ok_pct ok_s p99 idle_p99 errors note=""
  calls=$(($(json_num "$upstream_attack" calls) - $(json_num "$upstream_before" calls)))
  peak=$(json_get "$upstream_attack" peak)
  rejected=$(($(json_num "$upstream_attack" rejected) - $(json_num "$upstream_before" rejected)))
  ok_pct=$(json_get "$good_json" ok_pct)
  ok_s=$(json_get "$good_json" ok_per_s)
  p99=$(json_get "$good_json" p99_ms)
  idle_p99=$(json_get "$idle" p99_ms)
  errors=$(json_get "$good_json" errors)
  [[ -n "$(json_get "$good_json" error)" ]] && errors="good client failed"
  ((alive)) || note="proxy died"
  ((rejected > 0)) && note="${note:+$note; }upstream refused $rejected"
  local row=("$name" "$kind" "${ok_pct:--}" "${ok_s:--}" "${p99:--} (${idle_p99:--})"
    "$calls (peak ${peak:--})" "$(mib "$rss_before") / $(mib "$rss_peak") / $(mib "$rss_after")"
    "$(attacker_summary "$attack_json" "$kind")" "${errors//,/ }" "$note")
  rows+=("$(IFS=$'\t'; echo "${row[*]}")")
  log "$name/$kind: good ${ok_pct:-?}% ok, p99 ${p99:-?} ms (idle ${idle_p99:-?}); upstream $calls calls, peak ${peak:-?}; RSS $(mib "$rss_before")/$(mib "$rss_peak")/$(mib "$rss_after") MiB"
}

for name in "${targets[@]}"; do
  for kind in "${attacks[@]}"; do run_one "$name" "$kind"; done
done

# ---- the table ---------------------------------------------------------------------------

headers=("target" "attack" "good ok %" "good ok/s" "good p99 ms (idle)"
  "upstream calls (peak concurrent)" "proxy RSS MiB before / peak / +${after_s}s"
  "attacker saw" "good client errors" "note")
stamp=$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS"
describe_run() {
  echo "sepal attacks $stamp on $(uname -r), $(nproc) cores: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "commit $(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (tree has changes)'); sepal $("$SEPAL" --version 2>/dev/null | head -1 || echo '?')"
  echo "attack ${attack_s}s from $ATTACKER_IP (nice 10, core 0); good client $rate calls/s from $GOOD_IP (core 0), counted from 0.5 s into the attack to its end; idle p99 over ${baseline_s}s before"
  echo "proxy on core 1, one worker; stand-in SuperLink on core 0, fresh per row, 1000 concurrent calls at most (RESOURCE_EXHAUSTED past them, as grpcio)"
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
}

{
  describe_run
  echo
  {
    (IFS=$'\t'; echo "${headers[*]}")
    printf '%s\n' "${rows[@]}"
  } | column -t -s $'\t'
} | tee "$RESULTS/attacks-$stamp.txt"

{
  describe_run | sed 's/^/    /'
  echo
  (IFS='|'; echo "|${headers[*]}|")
  printf '|'; printf -- '---|%.0s' "${headers[@]}"; echo
  for row in "${rows[@]}"; do echo "|${row//$'\t'/|}|"; done
} >"$RESULTS/attacks-$stamp.md"
cp "$RAW" "$RESULTS/attacks-$stamp.jsonl"
log "results: bench/results/attacks-$stamp.{txt,md,jsonl}"
