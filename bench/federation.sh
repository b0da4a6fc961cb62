#!/usr/bin/env bash
# A federation's load on sepal, nginx, HAProxy and nghttpx in front of the stand-in SuperLink.
#
# Usage: bench/federation.sh [--pollers N] [--busy N] [--only nginx,haproxy,nghttpx,sepal]
#                            [--quick] [--install] [--no-build] [--build-dir DIR] [--keep]
# See bench/README.md ("Federation scale") for what is measured and how.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$ROOT/build-release"
RESULTS="$ROOT/bench/results"
ALL_TARGETS=(nginx haproxy nghttpx sepal)

pollers=4000
busy=8
poll_interval=3s
before=10s
round=10s
paced=10s
paced_mib=100
only=""
BENCH_NAME=federation
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

usage() {
  sed -n '3,5s/^# \{0,1\}//p' "$0"
  cat <<'EOF'
  --pollers N    SuperNodes polling Fleet/PullMessages every 3 s, one connection each (4000)
  --busy N       nodes moving 5 MiB PushObject/PullObject calls in the round, 2 in flight (8)
  --quick        smoke run: 500 pollers, 3 s phases
  --only LIST    comma-separated subset of: nginx haproxy nghttpx sepal
EOF
  common_usage
}

while (($# > 0)); do
  case "$1" in
    --pollers) pollers=${2:?--pollers needs a number}; shift ;;
    --pollers=*) pollers=${1#*=} ;;
    --busy) busy=${2:?--busy needs a number}; shift ;;
    --busy=*) busy=${1#*=} ;;
    --quick) pollers=500 before=3s round=3s paced=3s ;;
    --only) only=${2:?--only needs a list}; shift ;;
    --only=*) only=${1#*=} ;;
    *) common_option "$@"; shift $((shift_by - 1)) ;;
  esac
  shift
done
select_targets "$only" "${ALL_TARGETS[@]}"
bench_begin

# ---- setup -----------------------------------------------------------------------------

FLEET="$BUILD/bench/sepal-fleet"
BACKEND="$BUILD/tests/support/sepal-fake-superlink"
SEPAL="$BUILD/proxy/sepal"
binaries=("$FLEET" "$BACKEND" "$SEPAL")
build_release sepal sepal-fleet sepal-fake-superlink
# Every poller plays its own node from its own loopback address (127.1.x.y, Linux: all of 127/8).
ip -4 addr show lo 2>/dev/null | grep -q 'inet 127\.0\.0\.1/8' ||
  { echo "federation.sh: lo does not carry 127.0.0.0/8" >&2; exit 1; }
# The proxies inherit this shell's limit: a connection in, one out (nginx), and some slack.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export PEER_MAX_CONNECTIONS=$((pollers + busy + 256))
if (($(ulimit -n) < 2 * PEER_MAX_CONNECTIONS + 64)); then
  echo "federation.sh: $pollers pollers need RLIMIT_NOFILE >= $((2 * PEER_MAX_CONNECTIONS + 64)) (hard limit: $(ulimit -Hn))" >&2
  exit 1
fi

# sepal as a SuperLink's sidecar would run it: routes only, its default per-peer limits (every
# poller is a peer of its own), one worker as the peers.
write_sepal_config() {
  local dir=$1 port=$2
  cat >"$dir/sepal.yaml" <<EOF
workers: 1
listeners:
  - name: fleet
    address: 127.0.0.1:$port
    routes:
      - match: /flwr.proto.Fleet/
        upstream: superlink
upstreams:
  - name: superlink
    address: 127.0.0.1:$backend_port
EOF
}

# start_proxy NAME DIR PORT: the peer on core 1; sets $proxy_pid.
start_proxy() {
  local name=$1 dir=$2 port=$3
  case "$name" in
    nginx)
      write_nginx_config "$dir" "$port"
      start_pinned 1 "$dir/stderr.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
      ;;
    haproxy)
      write_haproxy_config "$dir" "$port"
      start_pinned 1 "$dir/stderr.log" haproxy -db -f "$dir/haproxy.cfg"
      ;;
    nghttpx)
      local args
      mapfile -t args < <(nghttpx_args "$dir" "$port")
      start_pinned 1 "$dir/stderr.log" nghttpx "${args[@]}"
      ;;
    sepal)
      write_sepal_config "$dir" "$port"
      start_pinned 1 "$dir/stderr.log" "$SEPAL" --config "$dir/sepal.yaml"
      ;;
  esac
  proxy_pid=$last_pid
  for _ in $(seq 100); do
    port_is_free "$port" || return 0
    kill -0 "$proxy_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

RAW="$WORK/raw.jsonl"
: >"$RAW"
# --settle 10s: the idle connections are measured after 10 s, once every proxy has done what
# it does with an idle connection (sepal gives pages back after 4 s, 512 connections a second).
fleet_args=(--pollers "$pollers" --busy "$busy" --poll-interval "$poll_interval" --settle 10s
  --before "$before" --round "$round" --paced "$paced" --paced-mib "$paced_mib")

run_one() {
  local name=$1 dir="$WORK/$1" port out
  mkdir -p "$dir"
  if [[ "$name" != sepal ]] && ! command -v "$name" >/dev/null; then
    echo "{\"target\":\"$name\",\"skipped\":\"not installed\"}" >>"$RAW"
    return 0
  fi
  # A fresh stand-in per target: every proxy meets the same backend.
  if ! start_backend "$dir/backend.log" --threads 1; then
    echo "{\"target\":\"$name\",\"skipped\":\"stand-in SuperLink did not start\"}" >>"$RAW"
    return 0
  fi
  port=$(pick_port)
  if ! start_proxy "$name" "$dir" "$port"; then
    echo "{\"target\":\"$name\",\"skipped\":\"did not start (see $name/stderr.log)\"}" >>"$RAW"
    stop_pid "$proxy_pid"
    stop_pid "$backend_pid"
    return 0
  fi
  log "$name on 127.0.0.1:$port (core 1): $pollers pollers, $busy busy nodes"
  out=$(timeout --kill-after=5 600 taskset -c 0 "$FLEET" --target "127.0.0.1:$port" \
    "${fleet_args[@]}" --proxy-pid "$proxy_pid" --backend-pid "$backend_pid" \
    --upstream-port "$backend_port" 2>>"$dir/fleet.log" | tail -n 1) || true
  [[ "$out" == "{"* ]] || out='{"error":"sepal-fleet failed"}'
  echo "{\"target\":\"$name\",\"run\":$out}" >>"$RAW"
  log "$name: done"
  stop_pid "$proxy_pid"
  stop_pid "$backend_pid"
}

for name in "${targets[@]}"; do run_one "$name"; done

# ---- the tables --------------------------------------------------------------------------

stamp=$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS"
{
  echo "sepal federation bench $stamp on $(uname -r), $(nproc) cores: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "$pollers pollers (one connection each, own loopback address) polling Fleet/PullMessages every $poll_interval;"
  echo "$busy busy nodes with one 5 MiB PushObject and one 5 MiB PullObject in flight each: flat out for $round, then paced at $paced_mib MiB/s for $paced"
  echo "proxy on core 1 (one worker); stand-in SuperLink and sepal-fleet (two threads) on core 0"
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every number)"
} >"$WORK/describe.txt"
python3 - "$RAW" "$WORK/describe.txt" "$RESULTS/federation-$stamp" <<'EOF'
import json, sys

raw, describe, out = sys.argv[1:4]
runs = [json.loads(line) for line in open(raw) if line.strip()]

def f(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"

def ratio(a, b):
    return f"{a / b:.1f}×" if a is not None and b else "-"

rest_header = ["target", "KiB/idle conn", "polls/s", "p50 ms", "p99 ms", "max ms",
               "proxy CPU %", "upstream conns", "client CPU %", "timer late p99/max ms", "errors"]
round_header = ["target", "MiB/s", "CPU s/GiB", "poll p99 ms", "p99 ÷ before", "max ms",
                "paced CPU s/GiB", "paced p99 ÷ before", "peak RSS MiB", "upstream conns",
                "stand-in CPU %", "client CPU % (poll+busy)", "errors"]
rest, rounds = [], []
for entry in runs:
    name = entry["target"]
    if "run" not in entry or "phases" not in entry["run"]:
        why = entry.get("skipped") or entry.get("run", {}).get("error", "failed")
        rest.append([name] + ["-"] * (len(rest_header) - 2) + [why])
        rounds.append([name] + ["-"] * (len(round_header) - 2) + [why])
        continue
    r = entry["run"]
    p = r["phases"]
    b, rd, pc = p.get("before", {}), p.get("round", {}), p.get("paced", {})
    def errors(phase):
        n = phase.get("poll_errors", 0) + phase.get("busy_errors", 0)
        t = phase.get("poll_timeouts", 0)
        text = f"{n} errors" + (f", {t} poll timeouts" if t else "")
        if phase.get("polls_skipped"):
            text += f", {phase['polls_skipped']} polls skipped"
        if phase.get("top_error"):
            text += f" (most: {phase['top_error']})"
        return text if (n or t or phase.get("polls_skipped")) else "0"
    connected = "" if r["connected"] == r["pollers"] else f"; {r['connected']}/{r['pollers']} connected"
    rest.append([name, f(r["idle_kib_per_conn"]), f(b.get("polls_per_s"), 0), f(b.get("poll_p50_ms"), 2),
                 f(b.get("poll_p99_ms"), 2), f(b.get("poll_max_ms")), f(b.get("proxy_cpu_pct")),
                 str(r["upstream_conns_idle"]), f(b.get("client_poll_cpu_pct")),
                 f"{f(b.get('timer_late_p99_ms'))}/{f(b.get('timer_late_max_ms'))}",
                 errors(b) + connected])
    rounds.append([name, f(rd.get("mib_per_s"), 0), f(rd.get("proxy_cpu_s_per_gib"), 3),
                   f(rd.get("poll_p99_ms"), 1), ratio(rd.get("poll_p99_ms"), b.get("poll_p99_ms")),
                   f(rd.get("poll_max_ms")), f(pc.get("proxy_cpu_s_per_gib"), 3) if pc else "-",
                   ratio(pc.get("poll_p99_ms"), b.get("poll_p99_ms")) if pc else "-",
                   f(r["peak_rss_kib"] / 1024), str(r["upstream_conns_round"]),
                   f(rd.get("backend_cpu_pct")),
                   f"{f(rd.get('client_poll_cpu_pct'))}+{f(rd.get('client_busy_cpu_pct'))}",
                   errors(rd) + ("; paced: " + errors(pc) if pc and errors(pc) != "0" else "")])

def text_table(header, rows):
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in [header] + rows)

def md_table(header, rows):
    lines = ["|" + "|".join(header) + "|", "|" + "---|" * len(header)]
    lines += ["|" + "|".join(row) + "|" for row in rows]
    return "\n".join(lines)

intro = open(describe).read().rstrip("\n")
titles = ["The fleet at rest (polling only)", "A round (busy nodes flat out, then paced)"]
text = [intro, ""]
md = ["\n".join("    " + line for line in intro.splitlines()), ""]
for title, header, rows in zip(titles, [rest_header, round_header], [rest, rounds]):
    text += [title, text_table(header, rows), ""]
    md += [f"**{title}**", "", md_table(header, rows), ""]
open(out + ".txt", "w").write("\n".join(text))
open(out + ".md", "w").write("\n".join(md))
print("\n".join(text))
EOF
cp "$RAW" "$RESULTS/federation-$stamp.jsonl"
log "results: bench/results/federation-$stamp.{txt,md,jsonl}"
