#!/usr/bin/env bash
# One-command demo: builds sepal, puts it in front of a stand-in SuperLink, with a stand-in
# tailscaled saying who each peer is, and shows what Flower clients see and what the operator
# sees (sepal whois / explain, /peers, /metrics).
# Usage: scripts/demo.sh
#   SEPAL_DEMO_PORT=N        port sepal listens on (default 19092)
#   SEPAL_DEMO_ADMIN_PORT=N  sepal's admin port (default 19901)
#   SEPAL_BUILD_DIR=D        development: build in D (configured with Ninja) instead of build/
#   SEPAL_DEMO_NO_BUILD=1    use the binaries already in SEPAL_BUILD_DIR (the test suite does)
# Exits 0 only if every expected outcome happened; logs are kept in a temp dir when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

port="${SEPAL_DEMO_PORT:-19092}"
admin_port="${SEPAL_DEMO_ADMIN_PORT:-19901}"
for value in "$port" "$admin_port"; do
  if [[ ! "$value" =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
    echo "demo: SEPAL_DEMO_PORT and SEPAL_DEMO_ADMIN_PORT must be TCP port numbers, got '$value'" >&2
    exit 2
  fi
done
if ((port == admin_port)); then
  echo "demo: SEPAL_DEMO_PORT and SEPAL_DEMO_ADMIN_PORT must differ" >&2
  exit 2
fi
build_dir="${SEPAL_BUILD_DIR:-build}"
targets=(sepal sepal-fake-superlink sepal-flower-client sepal-fake-tailscaled)

# The peers, each a loopback address (the whole of 127.0.0.0/8 is this machine).
supernode=127.0.0.2  # supernode-a, tagged tag:supernode: a SuperNode
alice=127.0.0.3      # alice-laptop, the user alice@example.com: an operator running flwr
stranger=127.0.0.4   # a machine the tailnet does not know

passed=0
failed=0
work=""
sepal_pid=""
superlink_pid=""
tailscaled_pid=""
background_pids=()
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
  for pid in "${background_pids[@]}"; do stop_process "$pid" "a client" || true; done
  if [[ -n "$sepal_pid" ]]; then stop_process "$sepal_pid" sepal || true; fi
  if [[ -n "$superlink_pid" ]]; then stop_process "$superlink_pid" "stand-in SuperLink" || true; fi
  if [[ -n "$tailscaled_pid" ]]; then stop_process "$tailscaled_pid" "stand-in tailscaled" || true; fi
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

# from IP ARGS...: runs sepal-flower-client against sepal from the loopback address IP (one
# peer), showing the command and its output. The output is left in $out; returns the
# client's exit status.
from() {
  local ip="$1" rc=0
  shift
  say "   \$ sepal-flower-client --bind $ip --target 127.0.0.1:$port $*"
  out="$("$bin_client" --bind "$ip" --target "127.0.0.1:$port" "$@" 2>&1)" || rc=$?
  indent <<<"$out"
  return "$rc"
}

# run ARGS...: runs a sepal command, showing it and its output; leaves the output in $out and
# returns its exit status.
run() {
  local rc=0
  say "   \$ sepal $*"
  out="$("$bin_sepal" "$@" 2>&1)" || rc=$?
  indent <<<"$out"
  return "$rc"
}

# The admin endpoint $1 (body only), or nothing if it does not answer.
admin_get() { curl -sS --max-time 5 "http://127.0.0.1:$admin_port$1" 2>&1; }

# True if the last client output contains $1.
output_has() { grep -qF -- "$1" <<<"$out"; }
output_lacks() { ! grep -qF -- "$1" <<<"$out"; }

# Starts the stand-in tailscaled on $tailscaled_socket and waits up to 5 s until it serves.
start_tailscaled() {
  local log="$work/tailscaled.log"
  "$bin_tailscaled" --socket "$tailscaled_socket" --peer "$supernode=tagged-node.json" \
    --peer "$alice=user-node.json" >>"$log" 2>&1 &
  tailscaled_pid=$!
  for _ in $(seq 50); do
    kill -0 "$tailscaled_pid" 2>/dev/null || die "the stand-in tailscaled exited; see $log"
    if grep -q "listening on $tailscaled_socket" "$log"; then
      indent <"$log"
      return 0
    fi
    sleep 0.1
  done
  die "the stand-in tailscaled did not start listening within 5 s"
}

section "setup: dependencies and build"
if [[ -n "${SEPAL_DEMO_NO_BUILD:-}" ]]; then
  say "   (SEPAL_DEMO_NO_BUILD: using the binaries in $build_dir)"
else
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
fi
[[ "$build_dir" == /* ]] || build_dir="$PWD/$build_dir"
bin_sepal="$build_dir/proxy/sepal"
bin_superlink="$build_dir/tests/support/sepal-fake-superlink"
bin_client="$build_dir/tests/support/sepal-flower-client"
bin_tailscaled="$build_dir/tests/support/sepal-fake-tailscaled"
for bin in "$bin_sepal" "$bin_superlink" "$bin_client" "$bin_tailscaled"; do
  [[ -x "$bin" ]] || die "missing $bin after the build"
done
command -v jq >/dev/null || die "jq is missing (scripts/install-deps.sh installs it)"

for p in "$port" "$admin_port"; do
  if port_open "$p"; then
    die "something already listens on 127.0.0.1:$p; pick other ports:" \
      "SEPAL_DEMO_PORT=19192 SEPAL_DEMO_ADMIN_PORT=19902 $0"
  fi
done
work="$(mktemp -d "${TMPDIR:-/tmp}/sepal-demo.XXXXXX")"
socket="$work/superlink.sock"
tailscaled_socket="$work/tailscaled.sock"
config="$work/sepal.yaml"
started=$SECONDS

section "the tailnet: a stand-in tailscaled"
explain "On a real node sepal asks tailscaled (its LocalAPI socket) who is behind each" \
  "connection. This stand-in speaks the same WhoIs API and knows two nodes:" \
  "$supernode is supernode-a (tagged tag:supernode), $alice is alice-laptop (the user" \
  "alice@example.com). $stranger is not in the tailnet."
start_tailscaled

section "the stand-in SuperLink"
explain "A real SuperLink would run here, bound to a unix socket the tailnet cannot reach." \
  "This stand-in serves the same gRPC services (Fleet, Control) with simplified messages."
start_superlink

section "sepal's configuration"
explain "deploy/examples/demo.yaml with the sockets and ports filled in: one listener on" \
  "127.0.0.1:$port; Fleet (SuperNodes) is allowed to tag:supernode, Control (operators," \
  "flwr) to alice@example.com; Exec has no route. The admin port is 127.0.0.1:$admin_port."
sed -e "s|unix:SOCKET_PATH|unix:$socket|" -e "s|TAILSCALED_SOCKET|$tailscaled_socket|" \
  -e "s|127\.0\.0\.1:19092|127.0.0.1:$port|" -e "s|127\.0\.0\.1:19901|127.0.0.1:$admin_port|" \
  deploy/examples/demo.yaml >"$config"
for placeholder in "unix:$socket" "$tailscaled_socket" "127.0.0.1:$port" "127.0.0.1:$admin_port"; do
  grep -qF "$placeholder" "$config" ||
    die "deploy/examples/demo.yaml lost a placeholder (SOCKET_PATH, TAILSCALED_SOCKET or a port)"
done
check "sepal --check accepts the demo config" run --config "$config" --check

section "the tailnet policy this config needs"
explain "'sepal policy' prints the grants that let the tagged SuperNodes and the operator reach" \
  "sepal's port, to paste into the tailnet policy file (JSON):"
check "sepal policy prints a policy" run policy --config "$config"
check "the policy is valid JSON with grants" jq -e '.grants | length > 0' <<<"$out" >/dev/null

section "starting sepal"
say "   \$ sepal --config $config --log-level info"
"$bin_sepal" --config "$config" --log-level info >"$work/sepal.log" 2>&1 &
sepal_pid=$!
wait_for_sepal || die "sepal did not start accepting on 127.0.0.1:$port within 5 s"
say "   sepal (pid $sepal_pid) accepts gRPC on 127.0.0.1:$port, admin on 127.0.0.1:$admin_port"

section "(a) a SuperNode joins: Flower 1.23's Fleet API"
explain "supernode-a registers, activates and pulls its instructions on one connection, as" \
  "flower-supernode does, then pushes a 1 MiB object (model parameters travel in these)."
check "RegisterNode, ActivateNode, PullMessages from tag:supernode are OK" from "$supernode" \
  /flwr.proto.Fleet/RegisterNode /flwr.proto.Fleet/ActivateNode /flwr.proto.Fleet/PullMessages
check "PushObject with 1 MiB is OK" from "$supernode" --payload-bytes 1MiB /flwr.proto.Fleet/PushObject
check "1 MiB went through" output_has "1048576 payload bytes sent"
explain "sepal tells the SuperLink who called (tailscale-* metadata) and drops any copies a" \
  "client sends; SuperNode authentication metadata passes untouched:"
check "a call with spoofed identity metadata is OK" from "$supernode" \
  --metadata flwr-demo-auth=token-123 --metadata tailscale-node-tags=tag:admin --show-metadata \
  /flwr.proto.Fleet/SendNodeHeartbeat
check "the SuperLink saw the SuperNode's metadata" output_has "upstream saw flwr-demo-auth=token-123"
check "the SuperLink saw the node sepal vouches for" output_has "upstream saw tailscale-node-name=supernode-a"
check "the SuperLink saw its real tag" output_has "upstream saw tailscale-node-tags=tag:supernode"
check "the spoofed tag never arrived" output_lacks "tag:admin"

section "(b) a method without a route"
explain "No route matches flwr.proto.Exec, so sepal answers UNIMPLEMENTED itself. Expected failure:"
check "Exec ListRuns is UNIMPLEMENTED" from "$supernode" --expect UNIMPLEMENTED /flwr.proto.Exec/ListRuns
check "the answer names the method" output_has "no route for /flwr.proto.Exec/ListRuns"

section "(c) the SuperNode tries the operators' Control API"
explain "'flwr ls' uses Control.ListRuns; only alice@example.com may call Control, so sepal" \
  "refuses the SuperNode itself and the SuperLink never sees the call. Expected failure:"
check "Control ListRuns from supernode-a is PERMISSION_DENIED" \
  from "$supernode" --expect PERMISSION_DENIED /flwr.proto.Control/ListRuns
check "the refusal names peer and method" output_has "supernode-a (tag:supernode)"
explain "'sepal explain' asks tailscaled and walks the routes and rules the same way (exit 1:" \
  "refused):"
rc=0
run explain --config "$config" "$supernode" /flwr.proto.Control/ListRuns || rc=$?
check "sepal explain says refused (exit 1)" test "$rc" -eq 1
check "sepal explain gives the status the client got" output_has "PERMISSION_DENIED"

section "(d) the operator"
explain "alice-laptop lists the runs, as 'flwr ls' does:"
check "Control ListRuns from alice@example.com is OK" from "$alice" --run-id 7 /flwr.proto.Control/ListRuns

section "(e) a stranger"
explain "$stranger is not in the tailnet (tailscaled's WhoIs answers 404): every call is" \
  "UNAUTHENTICATED. 'sepal whois' is the first thing to run when a node is refused. Expected" \
  "failure:"
check "PullMessages from the stranger is UNAUTHENTICATED" \
  from "$stranger" --expect UNAUTHENTICATED /flwr.proto.Fleet/PullMessages
rc=0
run whois "$stranger" --config "$config" || rc=$?
check "sepal whois says not a tailnet peer (exit 1)" test "$rc" -eq 1
check "sepal whois identifies supernode-a" run whois "$supernode" --config "$config"
check "whois shows its tag" output_has "tag:supernode"

section "(f) who is connected: /peers"
explain "supernode-a keeps polling (PullMessages and heartbeats every 100 ms) and alice follows" \
  "a run's logs (StreamLogs) while we look at the admin port. /peers is JSON; the same table" \
  "is on the status page, http://127.0.0.1:$admin_port/ in a browser."
"$bin_client" --bind "$supernode" --target "127.0.0.1:$port" --repeat 30 --interval 100ms \
  /flwr.proto.Fleet/PullMessages /flwr.proto.Fleet/SendNodeHeartbeat >"$work/poller.log" 2>&1 &
background_pids+=($!)
"$bin_client" --bind "$alice" --target "127.0.0.1:$port" --lines 60 --run-id 7 \
  /flwr.proto.Control/StreamLogs >"$work/streamlogs.log" 2>&1 &
background_pids+=($!)
peers=""
for _ in $(seq 50); do
  peers="$(admin_get /peers)"
  if [[ "$(jq -r '.peer_count' <<<"$peers" 2>/dev/null)" == 2 ]]; then break; fi
  sleep 0.1
done
sleep 1  # a few polls
filter='.peers[] | {peer, tags, user, connections, calls_in_flight, calls, errors, last_error:
  (.last_error | if . then "\(.method) \(.grpc_status)" else null end)}'
say "   \$ curl -s http://127.0.0.1:$admin_port/peers | jq -c '${filter//$'\n  '/ }'"
out="$(admin_get /peers | jq -c "$filter")" || true
indent <<<"$out"
check "/peers lists supernode-a with its refused Control call" \
  output_has '"peer":"supernode-a","tags":["tag:supernode"]'
check "/peers shows supernode-a's last error, the refused Control call" \
  output_has '"last_error":"/flwr.proto.Control/ListRuns PERMISSION_DENIED"'
check "/peers lists alice-laptop, with her StreamLogs in flight" \
  output_has '"peer":"alice-laptop","tags":[],"user":"alice@example.com","connections":1,"calls_in_flight":1'
say "   \$ curl -s http://127.0.0.1:$admin_port/ | grep -o '<h2>[^<]*</h2>'"
out="$(admin_get / | grep -o '<h2>[^<]*</h2>')" || true
indent <<<"$out"
check "the status page shows the two peers" output_has "<h2>Peers connected (2)</h2>"

section "(g) what Prometheus scrapes: /metrics"
explain "Every call above is counted by method and code, every decision by reason:"
metrics="$(admin_get /metrics)"
say "   \$ curl -s http://127.0.0.1:$admin_port/metrics | grep -E '...'   (non-zero series)"
out="$(grep -E '^sepal_(grpc_requests_total|authz_decisions_total|identity_lookups_total|peers_connected)' \
  <<<"$metrics" | grep -v ' 0$')" || true
indent <<<"$out"
check "one call was denied by the rules" \
  output_has 'sepal_authz_decisions_total{listener="fleet",decision="deny",reason="no_rule_matched"} 1'
check "one call came from outside the tailnet" \
  output_has 'sepal_authz_decisions_total{listener="fleet",decision="deny",reason="not_in_tailnet"} 1'
check "the Exec call is counted as UNIMPLEMENTED" output_has 'grpc_code="UNIMPLEMENTED"} 1'
check "two peers are connected" output_has 'sepal_peers_connected{listener="fleet"} 2'
for pid in "${background_pids[@]}"; do
  rc=0
  wait "$pid" || rc=$?
  check "the background client (pid $pid) finished OK" test "$rc" -eq 0
done
background_pids=()

section "(h) the SuperLink goes away and comes back"
explain "Stopping the SuperLink: calls must fail fast with UNAVAILABLE (here: well within the" \
  "client's 2 s deadline), never hang. Expected failure:"
rc=0
stop_process "$superlink_pid" "stand-in SuperLink" || rc=$?
superlink_pid=""
check "the stand-in SuperLink exited 0 on SIGTERM" test "$rc" -eq 0
say "   stand-in SuperLink stopped"
check "GetRun without a SuperLink is UNAVAILABLE" \
  from "$supernode" --timeout 2s --expect UNAVAILABLE /flwr.proto.Fleet/GetRun
explain "Restarting the SuperLink on the same socket: the next call goes through again. (Real" \
  "Flower 1.23 SuperNodes do not re-register with a restarted SuperLink: restart them too.)"
start_superlink
check "GetRun after the restart is OK" from "$supernode" --timeout 5s /flwr.proto.Fleet/GetRun

section "(i) a plain HTTP/1.1 request on the gRPC port"
explain "Someone points a browser or curl at the port: sepal answers in plain text instead of" \
  "sending binary HTTP/2 frames."
say "   \$ curl --http1.1 -sS -i http://127.0.0.1:$port/"
curl_rc=0
out="$(curl --http1.1 -sS -i --max-time 5 "http://127.0.0.1:$port/" 2>&1 | tr -d '\r')" || curl_rc=$?
indent <<<"$out"
check "curl got an answer" test "$curl_rc" -eq 0
check "the answer is 505 with a readable reason" output_has "HTTP/1.1 505 HTTP Version Not Supported"

section "(j) sepal's log"
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
say "demo finished: $passed checks passed in $((SECONDS - started)) s after the build"
