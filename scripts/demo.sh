#!/usr/bin/env bash
# One-command demo: builds sepal, puts it in front of the stand-in SuperLink and shows what Flower clients see.
# Usage: scripts/demo.sh
#   SEPAL_DEMO_PORT=N   port sepal listens on (default 19092)
#   SEPAL_BUILD_DIR=D   development: build in D (configured with Ninja) instead of the preset's build/
# Exits 0 only if every expected outcome happened; logs are kept in a temp dir when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

port="${SEPAL_DEMO_PORT:-19092}"
if [[ ! "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
  echo "demo: SEPAL_DEMO_PORT must be a TCP port number, got '$port'" >&2
  exit 2
fi
build_dir="${SEPAL_BUILD_DIR:-build}"
targets=(sepal sepal-fake-superlink sepal-flower-client)

passed=0
failed=0
work=""
sepal_pid=""
superlink_pid=""
out=""

say() { printf '%s\n' "$*"; }
explain() { printf '   %s\n' "$@"; }
section() { printf '\n== %s ==\n' "$*"; }
indent() { sed '/./s/^/    /'; }
die() {
  echo "demo: $*" >&2
  exit 1
}

# check DESCRIPTION COMMAND...: runs COMMAND and counts the outcome; the demo goes on either way.
check() {
  local what="$1"
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    say "   !! CHECK FAILED: $what"
  fi
}

# Sends SIGTERM to PID, waits up to 5 s (then SIGKILL) and returns the process's exit status.
stop_process() {
  local pid="$1" name="$2" rc=0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "   $name (pid $pid) ignored SIGTERM for 5 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || rc=$?
  return "$rc"
}

cleanup() {
  local rc=$?
  trap - EXIT
  if [[ -n "$sepal_pid" ]]; then stop_process "$sepal_pid" sepal || true; fi
  if [[ -n "$superlink_pid" ]]; then stop_process "$superlink_pid" "stand-in SuperLink" || true; fi
  if [[ -n "$work" && -d "$work" ]]; then
    if ((rc == 0)); then
      rm -rf "$work"
    else
      for log in "$work"/*.log; do
        [[ -f "$log" ]] || continue
        echo "--- last lines of $log" >&2
        tail -n 20 "$log" >&2
      done
      echo "demo: logs and config kept in $work" >&2
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits up to 5 s for sepal to accept connections on $port.
wait_for_sepal() {
  for _ in $(seq 50); do
    kill -0 "$sepal_pid" 2>/dev/null || return 1
    if port_open "$port"; then return 0; fi
    sleep 0.1
  done
  return 1
}

# Starts the stand-in SuperLink on $socket and waits up to 5 s until it serves.
start_superlink() {
  local log="$work/superlink.log"
  "$bin_superlink" --listen "unix:$socket" >>"$log" 2>&1 &
  superlink_pid=$!
  for _ in $(seq 50); do
    kill -0 "$superlink_pid" 2>/dev/null || die "the stand-in SuperLink exited; see $log"
    if [[ -S "$socket" ]] && grep -q "listening on unix:$socket" "$log"; then
      say "   stand-in SuperLink (pid $superlink_pid) listening on unix:$socket"
      return 0
    fi
    sleep 0.1
  done
  die "the stand-in SuperLink did not start listening within 5 s"
}

# Runs sepal-flower-client against sepal, showing the command and its output. The output is
# left in $out; returns the client's exit status.
client() {
  local rc=0
  say "   \$ sepal-flower-client --target 127.0.0.1:$port $*"
  out="$("$bin_client" --target "127.0.0.1:$port" "$@" 2>&1)" || rc=$?
  indent <<<"$out"
  return "$rc"
}

# True if the last client output contains $1.
output_has() { grep -qF -- "$1" <<<"$out"; }
output_lacks() { ! grep -qF -- "$1" <<<"$out"; }

section "setup: dependencies and build"
scripts/install-deps.sh
# Fresh clones live in new directories: let ccache reuse objects across them.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
if [[ -z "${SEPAL_BUILD_DIR:-}" ]]; then
  configure=(cmake --preset default)
  build=(cmake --build --preset default --target "${targets[@]}")
else
  configure=(cmake -S . -B "$build_dir" -G Ninja)
  build=(cmake --build "$build_dir" --target "${targets[@]}" -j 2)
fi
say "\$ ${configure[*]}"
if ! configure_log="$("${configure[@]}" 2>&1)"; then
  printf '%s\n' "$configure_log" >&2
  die "cmake configure failed"
fi
say "\$ ${build[*]}"
"${build[@]}"
bin_sepal="$PWD/$build_dir/proxy/sepal"
bin_superlink="$PWD/$build_dir/tests/support/sepal-fake-superlink"
bin_client="$PWD/$build_dir/tests/support/sepal-flower-client"
for bin in "$bin_sepal" "$bin_superlink" "$bin_client"; do
  [[ -x "$bin" ]] || die "missing $bin after the build"
done

if port_open "$port"; then
  die "something already listens on 127.0.0.1:$port; pick another port: SEPAL_DEMO_PORT=19192 $0"
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/sepal-demo.XXXXXX")"
socket="$work/superlink.sock"
config="$work/sepal.yaml"

section "the stand-in SuperLink"
explain "A real SuperLink would run here, bound to a unix socket the tailnet cannot reach." \
  "This stand-in serves the same gRPC services (Fleet, Control, Exec) with simplified messages."
start_superlink

section "sepal's configuration"
explain "deploy/examples/demo.yaml with the socket path and port filled in: one listener on" \
  "127.0.0.1:$port routing Fleet (allowed to tag:supernode) and Control (allowed to the user" \
  "alice@example.com) to the SuperLink. Exec has no route. A static identity table stands in" \
  "for tailscaled: every loopback client is the tagged SuperNode demo-supernode."
sed -e "s|unix:SOCKET_PATH|unix:$socket|" -e "s|127\.0\.0\.1:19092|127.0.0.1:$port|" \
  deploy/examples/demo.yaml >"$config"
if ! grep -qF "unix:$socket" "$config" || ! grep -qF "127.0.0.1:$port" "$config"; then
  die "deploy/examples/demo.yaml no longer has the SOCKET_PATH / 127.0.0.1:19092 placeholders"
fi
say "   \$ sepal --config $config --check"
check_log="$("$bin_sepal" --config "$config" --check 2>&1)" || {
  indent <<<"$check_log"
  die "sepal --check rejected the demo config"
}
indent <<<"$check_log"
passed=$((passed + 1))

section "starting sepal"
say "   \$ sepal --config $config --log-level info"
"$bin_sepal" --config "$config" --log-level info >"$work/sepal.log" 2>&1 &
sepal_pid=$!
wait_for_sepal || die "sepal did not start accepting on 127.0.0.1:$port within 5 s"
say "   sepal (pid $sepal_pid) accepts gRPC on 127.0.0.1:$port"

section "(a) SuperNode -> SuperLink: Fleet API"
explain "A SuperNode registers, then pulls its instructions. Model parameters travel inside" \
  "these messages, so PullMessages carries a 1 MiB payload through the proxy and back." \
  "SuperNode authentication rides in gRPC metadata, which must reach the SuperLink untouched."
explain "sepal adds who the peer is as metadata, and drops any tailscale-* copies a client sends."
check "Fleet CreateNode from tag:supernode is OK" client --metadata flwr-demo-auth=token-123 \
  --metadata tailscale-node-tags=tag:admin --show-metadata /flwr.proto.Fleet/CreateNode
check "the SuperLink saw the SuperNode's metadata" output_has "upstream saw flwr-demo-auth=token-123"
check "the SuperLink saw the identity sepal vouches for" \
  output_has "upstream saw tailscale-node-tags=tag:supernode"
check "the spoofed tailscale-node-tags never arrived" output_lacks "tag:admin"
check "Fleet PullMessages with 1 MiB is OK" client --payload-bytes 1MiB /flwr.proto.Fleet/PullMessages
check "1 MiB went through" output_has "1048576 payload bytes sent"

section "(b) a SuperNode trying the operators' Control API"
explain "'flwr ls' uses Control.ListRuns. Only alice@example.com may call Control, so the" \
  "SuperNode is refused by sepal; the SuperLink never sees the call. Expected failure:"
check "Control ListRuns from the SuperNode is PERMISSION_DENIED" \
  client --run-id 7 --expect PERMISSION_DENIED /flwr.proto.Control/ListRuns
check "the refusal names peer and method" output_has "demo-supernode"
check "the refusal names the method" output_has "/flwr.proto.Control/ListRuns"

section "(c) a method without a route"
explain "The config routes no flwr.proto.Exec method, so sepal answers UNIMPLEMENTED itself" \
  "and the SuperLink never sees the call. Expected failure:"
check "Exec ListRuns is UNIMPLEMENTED" client --expect UNIMPLEMENTED /flwr.proto.Exec/ListRuns
check "the answer names the method" output_has "no route for /flwr.proto.Exec/ListRuns"

section "(d) the SuperLink goes away and comes back"
explain "Stopping the SuperLink: calls must fail fast with UNAVAILABLE (here: well within the" \
  "client's 2 s deadline), never hang. Expected failure:"
rc=0
stop_process "$superlink_pid" "stand-in SuperLink" || rc=$?
superlink_pid=""
check "the stand-in SuperLink exited 0 on SIGTERM" test "$rc" -eq 0
say "   stand-in SuperLink stopped"
check "GetRun without a SuperLink is UNAVAILABLE" \
  client --timeout 2s --expect UNAVAILABLE /flwr.proto.Fleet/GetRun
explain "Restarting the SuperLink on the same socket: the next call goes through again."
start_superlink
check "GetRun after the restart is OK" client --timeout 5s /flwr.proto.Fleet/GetRun

section "(e) a plain HTTP/1.1 request on the gRPC port"
explain "Someone points a browser or curl at the port: sepal answers in plain text instead of" \
  "sending binary HTTP/2 frames."
say "   \$ curl --http1.1 -sS -i http://127.0.0.1:$port/"
curl_rc=0
out="$(curl --http1.1 -sS -i --max-time 5 "http://127.0.0.1:$port/" 2>&1 | tr -d '\r')" || curl_rc=$?
indent <<<"$out"
check "curl got an answer" test "$curl_rc" -eq 0
check "the answer is 505 with a readable reason" output_has "HTTP/1.1 505 HTTP Version Not Supported"

# TODO(metrics): when the admin listener exists, add `admin: {address: 127.0.0.1:PORT}` to the
#   demo config and curl /metrics here, showing sepal_grpc_requests_total by grpc_method and
#   grpc_code (the OK, UNIMPLEMENTED and UNAVAILABLE calls above),
#   sepal_upstream_connect_failures_total{upstream="superlink"} from step (d) and, with identity,
#   sepal_authz_decisions_total; check the counts match the calls this demo made.

section "(f) sepal's log"
explain "SIGTERM makes sepal drain in-flight streams and exit 0. Its log of this demo:"
rc=0
stop_process "$sepal_pid" sepal || rc=$?
sepal_pid=""
check "sepal exited 0 on SIGTERM" test "$rc" -eq 0
indent <"$work/sepal.log"

section "done"
if ((failed > 0)); then
  say "demo FAILED: $passed checks passed, $failed failed"
  exit 1
fi
say "demo finished: $passed checks passed"
