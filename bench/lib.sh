# shellcheck shell=bash
# shellcheck disable=SC2034  # install, build, keep, BUILD, shift_by: read by the caller
# Shared by bench/run.sh, bench/attacks.sh, bench/federation.sh and bench/rest.sh (sourced, not run):
# processes started and stopped by PID, /proc readings, ports, JSON fields, and the peers'
# configurations (nginx, HAProxy, nghttpx: one worker, h2c on both sides, no access logs).
#
# The caller sets BENCH_NAME (log prefix and temporary directory name) before sourcing, parses
# its options (common_option handles the ones every script has), then calls bench_begin; it
# sets CERTS (TLS targets) and backend_port before writing a peer's configuration. PEER_MAX_CONNECTIONS, when set, sizes the peers' connection
# and file limits for runs with thousands of clients (it must fit the shell's hard limit).

log() { printf '[%s %(%H:%M:%S)T] %s\n' "$BENCH_NAME" -1 "$*" >&2; }

install=0
build=1
keep=0
declare -a binaries=()  # build_release checks these exist

# The options common_option handles, for a script's usage text.
common_usage() {
  cat <<'EOF'
  --install      first install the peers (scripts/install-deps.sh --bench)
  --no-build     use the binaries already in build-release/
  --build-dir D  use the binaries already in build directory D (implies --no-build)
  --keep         keep the temporary directory with configs and logs
EOF
}

# common_option ARGS...: --install, --no-build, --build-dir D, --keep (sets install, build,
# BUILD, keep) and -h/--help (the caller's `usage`, then exit); sets shift_by to the
# arguments it used. Anything else: the usage on stderr, exit 2.
common_option() {
  shift_by=1
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --install) install=1 ;;
    --no-build) build=0 ;;
    --build-dir) BUILD=$(cd "${2:?--build-dir needs a directory}" && pwd); build=0; shift_by=2 ;;
    --build-dir=*) BUILD=$(cd "${1#*=}" && pwd); build=0 ;;
    --keep) keep=1 ;;
    *) echo "$BENCH_NAME: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
}

# select_targets LIST ALL...: sets the array `targets` to the comma-separated LIST (all of
# ALL when LIST is empty); exits 2 on a name not in ALL.
select_targets() {
  local list=$1 t
  shift
  targets=("$@")
  [[ -z "$list" ]] && return 0
  IFS=, read -ra targets <<<"$list"
  for t in "${targets[@]}"; do
    [[ " $* " == *" $t "* ]] || { echo "$BENCH_NAME: unknown target $t" >&2; exit 2; }
  done
}

# build_release TARGET...: configures and builds the release preset (as users build it:
# warnings are errors), unless --no-build; then checks that $BUILD holds every target's binary
# listed in the array `binaries`.
build_release() {
  if ((build)); then
    log "building the release preset (build-release/)"
    cmake --preset release >"$WORK/configure.log" 2>&1 || { cat "$WORK/configure.log" >&2; exit 1; }
    cmake --build --preset release --target "$@" >"$WORK/build.log" 2>&1 ||
      { tail -40 "$WORK/build.log" >&2; exit 1; }
  fi
  local binary
  for binary in "${binaries[@]}"; do
    [[ -x "$binary" ]] || { echo "$BENCH_NAME: $binary is missing (drop --no-build?)" >&2; exit 1; }
  done
}

# ---- processes: every one we start is remembered by PID and stopped by PID ----------------

declare -a started_pids=()

stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${started_pids[@]}"; do stop_pid "$pid"; done
  if ((keep)); then log "configs and logs kept in $WORK"; else rm -rf "$WORK"; fi
}

# bench_begin: the temporary directory ($WORK, removed at exit unless --keep) and the traps that
# stop every process started here; installs the peers first with --install.
bench_begin() {
  if ((install)); then "$ROOT/scripts/install-deps.sh" --bench; fi
  WORK=$(mktemp -d "/tmp/sepal-$BENCH_NAME.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

# start_pinned CORE LOG CMD...: runs CMD on one CPU core in the background; sets $last_pid.
start_pinned() {
  local core=$1 logfile=$2
  shift 2
  taskset -c "$core" "$@" >"$logfile" 2>&1 &
  last_pid=$!
  started_pids+=("$last_pid")
}

# The process and its descendants (nginx and nghttpx run a master and a worker).
process_tree() {
  local pid=$1 child
  echo "$pid"
  for child in $(pgrep -P "$pid" || true); do process_tree "$child"; done
}

# utime+stime in clock ticks, summed over the process tree.
cpu_ticks() {
  local total=0 pid stat fields
  for pid in $(process_tree "$1"); do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    read -ra fields <<<"${stat##*) }"  # fields[0] is field 3 of proc(5), "state"
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}

# status_kib PID FIELD: VmRSS (resident now) or VmHWM (peak) in KiB, summed over the tree.
status_kib() {
  local total=0 pid kib
  for pid in $(process_tree "$1"); do
    kib=$(awk -v f="$2:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    total=$((total + ${kib:-0}))
  done
  echo "$total"
}

port_is_free() { [[ -z "$(ss -Htln "sport = :$1")" ]]; }

pick_port() {
  local port
  for _ in $(seq 100); do
    port=$((15000 + RANDOM % 17000))
    if port_is_free "$port"; then
      echo "$port"
      return 0
    fi
  done
  echo "$BENCH_NAME: no free port found" >&2
  return 1
}

# json_get JSON KEY: the value of a flat key in one line of JSON ("" if absent); for a key
# that appears more than once, the first.
json_get() {
  local pattern="\"$2\":(\"[^\"]*\"|[^,}]*)"
  if [[ $1 =~ $pattern ]]; then
    local value=${BASH_REMATCH[1]}
    echo "${value//\"/}"
  fi
}

# json_num JSON KEY: a numeric value, 0 if absent.
json_num() {
  local value
  value=$(json_get "$1" "$2")
  echo "${value:-0}"
}

# start_backend LOG ARGS...: the stand-in SuperLink ($BACKEND) on core 0 with ARGS; sets
# $backend_pid and $backend_port, or returns 1.
start_backend() {
  local logfile=$1
  shift
  : >"$logfile"  # exists before the backend writes its port into it
  start_pinned 0 "$logfile" "$BACKEND" --listen 127.0.0.1:0 "$@"
  backend_pid=$last_pid
  backend_port=""
  for _ in $(seq 100); do
    backend_port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$logfile")
    [[ -n "$backend_port" ]] && return 0
    kill -0 "$backend_pid" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

# ---- peer configurations -----------------------------------------------------------------

write_nginx_config() {
  local dir=$1 port=$2 tls=${3:-} listen="http2" tls_lines=""
  local limits="events { worker_connections 4096; }"
  if [[ -n "${PEER_MAX_CONNECTIONS:-}" ]]; then
    limits="worker_rlimit_nofile $((2 * PEER_MAX_CONNECTIONS + 64));
events { worker_connections $((2 * PEER_MAX_CONNECTIONS)); }"
  fi
  if [[ -n "$tls" ]]; then
    listen="ssl http2"
    tls_lines="ssl_certificate $CERTS/server.pem;
    ssl_certificate_key $CERTS/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;"
  fi
  mkdir -p "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
$limits
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  client_max_body_size 0;
  client_body_timeout 300s;
  send_timeout 300s;
  # Per-stream receive window, as sepal's default (1 MiB).
  http2_body_preread_size 1m;
  client_body_buffer_size 1m;
  upstream backend {
    server 127.0.0.1:$backend_port;
    keepalive 128;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$port $listen;
    $tls_lines
    location / {
      grpc_pass grpc://backend;
      grpc_buffer_size 64k;
      grpc_read_timeout 300s;
      grpc_send_timeout 300s;
    }
  }
}
EOF
}

write_haproxy_config() {
  local dir=$1 port=$2 tls=${3:-} bind="proto h2"
  [[ -n "$tls" ]] && bind="ssl crt $CERTS/haproxy.pem alpn h2"
  local maxconn=""
  [[ -n "${PEER_MAX_CONNECTIONS:-}" ]] && maxconn="maxconn $PEER_MAX_CONNECTIONS"
  cat >"$dir/haproxy.cfg" <<EOF
global
  nbthread 1
  $maxconn
  # Per-stream receive window, as sepal's default (1 MiB); tune.bufsize stays at its default.
  tune.h2.initial-window-size 1048576

defaults
  mode http
  $maxconn
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-request 300s
  timeout tunnel 300s

frontend grpc_in
  bind 127.0.0.1:$port $bind
  default_backend superlink

backend superlink
  server stand_in 127.0.0.1:$backend_port proto h2
EOF
}

nghttpx_args() {
  local dir=$1 port=$2 tls=${3:-}
  local frontend="127.0.0.1,$port;no-tls"
  [[ -n "$tls" ]] && frontend="127.0.0.1,$port"
  # --conf=/dev/null: ignore /etc/nghttpx/nghttpx.conf. Windows as sepal's defaults
  # (1 MiB per stream, 16 MiB per connection). No --accesslog-file: access log off.
  printf '%s\n' --conf=/dev/null "--frontend=$frontend" \
    "--backend=127.0.0.1,$backend_port;;proto=h2" --workers=1 --no-ocsp --no-via \
    --no-server-push "--errorlog-file=$dir/error.log" \
    --frontend-http2-window-size=1M --frontend-http2-connection-window-size=16M \
    --backend-http2-window-size=1M --backend-http2-connection-window-size=16M \
    --frontend-read-timeout=5m --backend-read-timeout=5m --backend-write-timeout=5m \
    --stream-write-timeout=5m
  [[ -n "${PEER_MAX_CONNECTIONS:-}" ]] && echo "--rlimit-nofile=$((2 * PEER_MAX_CONNECTIONS + 64))"
  # With TLS on the frontend, the key and certificate are the two positional arguments.
  [[ -n "$tls" ]] && printf '%s\n' "$CERTS/server.key" "$CERTS/server.pem"
  return 0
}

# forget_pid PID: drops PID from the ones the exit trap stops, once it has been waited for or
# stopped (a reaped PID can be given to another process).
forget_pid() {
  local pid=$1 kept=() p
  for p in "${started_pids[@]}"; do [[ "$p" == "$pid" ]] || kept+=("$p"); done
  started_pids=("${kept[@]}")
}
