#!/usr/bin/env bash
# sepal-certs.sh: a small private CA for sepal. Server certificates carry the node's Tailscale
# addresses and MagicDNS name as SANs (given, or asked of tailscale / tailscaled), client
# certificates are for mTLS. EC P-256 keys, SHA-256 signatures, keys written 0600.
#
# Usage: sepal-certs.sh [--dir DIR] [--force] COMMAND [options]
# See certs/README.md, or run with --help.
set -euo pipefail

PROG=$(basename "$0")
dir=${SEPAL_CERTS_DIR:-./sepal-certs}
force=0
days=""
ca_days=3650
leaf_days=397
ips=()
dns_names=()
discover=auto  # auto: only when no --ip/--dns was given; yes; no
local_sans=1
sockets=()
cn=""

usage() {
  cat <<EOF
usage: $PROG [--dir DIR] [--force] COMMAND [options]

commands:
  ca                  make the CA: ca.pem, ca.key
  server [options]    make server.pem / server.key, signed by the CA (made first if missing)
      --ip ADDR         a SAN IP address (repeat); e.g. the node's 100.x and fd7a:115c:a1e0:: addresses
      --dns NAME        a SAN DNS name (repeat); e.g. superlink.tail1234.ts.net
      --discover        also ask Tailscale even though --ip/--dns were given
      --no-discover     never ask Tailscale
      --socket PATH     tailscaled's LocalAPI socket (default: /var/run/tailscale/tailscaled.sock,
                        then /tmp/tailscaled.sock); used when the tailscale CLI is missing
      --no-local        leave out localhost, 127.0.0.1 and ::1
      --cn NAME         subject common name (default: the first DNS name)
  client NAME         make client-NAME.pem / client-NAME.key (clientAuth, CN=NAME) for mTLS
  show [FILE...]      print subject, SANs, key usage and validity of FILE (default: every
                      certificate in DIR), and whether it verifies against DIR/ca.pem

options:
  --dir DIR           output directory (default ./sepal-certs, or \$SEPAL_CERTS_DIR)
  --force             replace files that exist (default: refuse)
  --days N            validity in days (default: CA $ca_days, server and client $leaf_days)

Without --ip/--dns, the server's SANs come from 'tailscale ip -4', 'tailscale ip -6' and
'tailscale status --json' (Self.DNSName without its trailing dot, plus CertDomains), or, without
the CLI, from the LocalAPI: GET /localapi/v0/status over tailscaled's unix socket.
EOF
}

die() {
  echo "$PROG: $*" >&2
  exit 1
}
note() { echo "$PROG: $*" >&2; }

command -v openssl >/dev/null || die "the openssl command is required"

# ---- arguments -------------------------------------------------------------------------

command=""
args=()
while (($# > 0)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dir) dir=${2:?--dir needs a value}; shift ;;
    --dir=*) dir=${1#*=} ;;
    --force) force=1 ;;
    --days) days=${2:?--days needs a value}; shift ;;
    --days=*) days=${1#*=} ;;
    --ip) ips+=("${2:?--ip needs a value}"); shift ;;
    --ip=*) ips+=("${1#*=}") ;;
    --dns) dns_names+=("${2:?--dns needs a value}"); shift ;;
    --dns=*) dns_names+=("${1#*=}") ;;
    --discover) discover=yes ;;
    --no-discover) discover=no ;;
    --socket) sockets=("${2:?--socket needs a value}"); shift ;;
    --socket=*) sockets=("${1#*=}") ;;
    --no-local) local_sans=0 ;;
    --cn) cn=${2:?--cn needs a value}; shift ;;
    --cn=*) cn=${1#*=} ;;
    -*) echo "$PROG: unknown option $1" >&2; usage >&2; exit 2 ;;
    *)
      if [[ -z "$command" ]]; then command=$1; else args+=("$1"); fi
      ;;
  esac
  shift
done
[[ -n "$command" ]] || { usage >&2; exit 2; }
if [[ -n "$days" && ! "$days" =~ ^[1-9][0-9]{0,4}$ ]]; then
  die "--days wants a whole number of days, got '$days'"
fi
((${#sockets[@]} > 0)) || sockets=(/var/run/tailscale/tailscaled.sock /tmp/tailscaled.sock)

# ---- helpers ---------------------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sepal-certs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Refuses to replace an existing file unless --force.
check_writable() {
  local file
  for file in "$@"; do
    if [[ -e "$dir/$file" ]] && ((!force)); then
      die "$dir/$file exists; pass --force to replace it"
    fi
  done
}

# Moves a finished file into DIR with the given mode (keys 0600, certificates 0644).
install_file() {
  local from=$1 name=$2 mode=$3
  chmod "$mode" "$from"
  mv -f "$from" "$dir/$name"
}

# A new EC P-256 key, created 0600 from the start.
new_key() {
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -pkeyopt ec_param_enc:named_curve -out "$1" 2>"$WORK/genpkey.log") ||
    { cat "$WORK/genpkey.log" >&2; die "could not make a key"; }
}

# A random positive 128-bit serial number.
new_serial() { echo "0x$(openssl rand -hex 16 | sed 's/^./4/')"; }

is_ipv4() {
  local IFS=. part parts
  [[ "$1" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || return 1
  read -ra parts <<<"$1"
  for part in "${parts[@]}"; do ((10#$part <= 255)) || return 1; done
}
is_ipv6() { [[ "$1" == *:* && "$1" =~ ^[0-9A-Fa-f:.]+$ ]]; }
is_dns_name() { [[ "$1" =~ ^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62}\.?)*$ && ${#1} -le 253 ]]; }

# Appends to the SAN lists without duplicates.
add_ip() {
  local ip=$1 have
  ip=${ip%%/*}  # 100.64.0.1/32 from a prefix list
  is_ipv4 "$ip" || is_ipv6 "$ip" || die "not an IP address: '$1'"
  for have in "${san_ips[@]}"; do [[ "$have" == "$ip" ]] && return 0; done
  san_ips+=("$ip")
}
add_dns() {
  local name=${1%.} have  # MagicDNS names come with a trailing dot
  name=${name,,}
  [[ -n "$name" ]] || return 0
  is_dns_name "$name" || die "not a DNS name: '$1'"
  for have in "${san_dns[@]}"; do [[ "$have" == "$name" ]] && return 0; done
  san_dns+=("$name")
}

# json_field FILE FILTER: jq when available; otherwise a crude scan of the flattened JSON
# that knows only the few fields used here (top-level TailscaleIPs and CertDomains come
# before the peers, and Self's DNSName is the first DNSName after "Self").
json_field() {
  local file=$1 filter=$2 flat
  if [[ -z "${SEPAL_CERTS_NO_JQ:-}" ]] && command -v jq >/dev/null; then
    jq -r "$filter // empty" "$file" 2>/dev/null || true
    return 0
  fi
  flat=$(tr -d '\n\r\t ' <"$file")
  case "$filter" in
    .TailscaleIPs[]) sed -n 's/^[^[]*"TailscaleIPs":\[\([^]]*\)\].*/\1/p' <<<"$flat" | tr ',' '\n' | tr -d '"' ;;
    .CertDomains[]) sed -n 's/.*"CertDomains":\[\([^]]*\)\].*/\1/p' <<<"$flat" | tr ',' '\n' | tr -d '"' ;;
    .Self.DNSName) sed -n 's/.*"Self":{[^}]*"DNSName":"\([^"]*\)".*/\1/p' <<<"$flat" ;;
    .BackendState) sed -n 's/^{[^{]*"BackendState":"\([^"]*\)".*/\1/p' <<<"$flat" ;;
  esac
}

# Reads the node's addresses and names from a status JSON file.
take_status() {
  local file=$1 state ip name
  state=$(json_field "$file" .BackendState)
  if [[ -n "$state" && "$state" != Running ]]; then
    note "tailscale is not running (BackendState $state); its addresses may be missing"
  fi
  while read -r ip; do [[ -n "$ip" ]] && add_ip "$ip"; done < <(json_field "$file" '.TailscaleIPs[]')
  name=$(json_field "$file" .Self.DNSName)
  [[ -n "$name" ]] && add_dns "$name"
  while read -r name; do [[ -n "$name" ]] && add_dns "$name"; done < <(json_field "$file" '.CertDomains[]')
  return 0
}

# Fills the SAN lists from the tailscale CLI or the LocalAPI; says where they came from.
discover_tailscale() {
  local before=$((${#san_ips[@]} + ${#san_dns[@]})) ip sock
  if command -v tailscale >/dev/null; then
    for family in -4 -6; do
      while read -r ip; do [[ -n "$ip" ]] && add_ip "$ip"; done \
        < <(timeout 10 tailscale ip "$family" 2>/dev/null || true)
    done
    if timeout 10 tailscale status --json >"$WORK/status.json" 2>/dev/null; then
      take_status "$WORK/status.json"
    fi
    if (($(( ${#san_ips[@]} + ${#san_dns[@]} )) > before)); then
      discovered_from="the tailscale CLI"
      return 0
    fi
  fi
  command -v curl >/dev/null || return 1
  for sock in "${sockets[@]}"; do
    [[ -S "$sock" ]] || continue
    if curl -fsS --max-time 10 --unix-socket "$sock" -o "$WORK/status.json" \
      http://local-tailscaled.sock/localapi/v0/status 2>"$WORK/curl.log"; then
      take_status "$WORK/status.json"
      if (($(( ${#san_ips[@]} + ${#san_dns[@]} )) > before)); then
        discovered_from="the LocalAPI at $sock"
        return 0
      fi
    else
      note "LocalAPI at $sock: $(head -c 300 "$WORK/curl.log")"
    fi
  done
  return 1
}

# ---- commands --------------------------------------------------------------------------

make_ca() {
  check_writable ca.pem ca.key
  mkdir -p "$dir"
  cat >"$WORK/ca.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
O = sepal
CN = sepal CA $(hostname 2>/dev/null || echo local) $(date -u +%Y-%m-%d)
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  new_key "$WORK/ca.key"
  openssl req -new -x509 -config "$WORK/ca.cnf" -key "$WORK/ca.key" -sha256 \
    -days "${days:-$ca_days}" -set_serial "$(new_serial)" -out "$WORK/ca.pem" 2>"$WORK/ca.log" ||
    { cat "$WORK/ca.log" >&2; die "could not make the CA"; }
  install_file "$WORK/ca.key" ca.key 600
  install_file "$WORK/ca.pem" ca.pem 644
  echo "CA: $dir/ca.pem (key $dir/ca.key, 0600)"
}

ensure_ca() {
  [[ -f "$dir/ca.pem" && -f "$dir/ca.key" ]] && return 0
  [[ -e "$dir/ca.pem" || -e "$dir/ca.key" ]] && die "$dir has only half a CA (ca.pem or ca.key missing)"
  local saved_days=$days
  days=""
  make_ca
  days=$saved_days
}

# sign_leaf NAME CN EKU SAN_LINE: key NAME.key, certificate NAME.pem signed by the CA.
sign_leaf() {
  local name=$1 subject_cn=$2 eku=$3 san=$4
  cat >"$WORK/$name.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
O = sepal
CN = $subject_cn
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = $eku
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  [[ -n "$san" ]] && echo "subjectAltName = $san" >>"$WORK/$name.cnf"
  new_key "$WORK/$name.key"
  openssl req -new -config "$WORK/$name.cnf" -key "$WORK/$name.key" -out "$WORK/$name.csr" \
    2>"$WORK/$name.log" || { cat "$WORK/$name.log" >&2; die "could not make the request for $name"; }
  openssl x509 -req -in "$WORK/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -set_serial "$(new_serial)" -sha256 -days "${days:-$leaf_days}" \
    -extfile "$WORK/$name.cnf" -extensions v3_leaf -out "$WORK/$name.pem" 2>>"$WORK/$name.log" ||
    { cat "$WORK/$name.log" >&2; die "could not sign $name"; }
  openssl verify -CAfile "$dir/ca.pem" "$WORK/$name.pem" >/dev/null 2>>"$WORK/$name.log" ||
    { cat "$WORK/$name.log" >&2; die "$name does not verify against $dir/ca.pem"; }
  install_file "$WORK/$name.key" "$name.key" 600
  install_file "$WORK/$name.pem" "$name.pem" 644
}

make_server() {
  ((${#args[@]} == 0)) || die "server takes no arguments (use --ip and --dns); got ${args[*]}"
  check_writable server.pem server.key
  san_ips=()
  san_dns=()
  discovered_from=""
  local ip name
  for name in "${dns_names[@]}"; do add_dns "$name"; done
  for ip in "${ips[@]}"; do add_ip "$ip"; done
  local given=$((${#san_ips[@]} + ${#san_dns[@]}))
  if [[ "$discover" == yes || ("$discover" == auto && given -eq 0) ]]; then
    if ! discover_tailscale; then
      if ((given == 0)); then
        die "could not discover the node's Tailscale addresses (no tailscale CLI answered, no" \
          "LocalAPI socket at ${sockets[*]}); pass --ip and --dns (see --help)"
      fi
      note "Tailscale discovery found nothing; using only the given --ip/--dns"
    fi
  fi
  if ((local_sans)); then
    add_dns localhost
    add_ip 127.0.0.1
    add_ip ::1
  fi
  ((${#san_ips[@]} + ${#san_dns[@]} > 0)) || die "no SANs: pass --ip/--dns or drop --no-local"

  local san="" entry
  for entry in "${san_dns[@]}"; do san+="${san:+, }DNS:$entry"; done
  for entry in "${san_ips[@]}"; do san+="${san:+, }IP:$entry"; done
  local subject_cn=$cn
  if [[ -z "$subject_cn" ]]; then
    subject_cn=${san_dns[0]:-${san_ips[0]}}
  fi

  ensure_ca
  sign_leaf server "$subject_cn" serverAuth "$san"
  echo "server: $dir/server.pem (key $dir/server.key, 0600), CN=$subject_cn"
  [[ -n "$discovered_from" ]] && echo "  addresses and names from $discovered_from"
  echo "  SANs: $san"
  if ((${#san_dns[@]} == 0 || (local_sans && ${#san_dns[@]} == 1))); then
    note "no MagicDNS name among the SANs: clients that dial the node by name will fail to verify it"
  fi
}

make_client() {
  ((${#args[@]} == 1)) || die "usage: $PROG client NAME"
  local name=${args[0]}
  [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] ||
    die "a client NAME is letters, digits, '.', '_' and '-' (got '$name')"
  check_writable "client-$name.pem" "client-$name.key"
  ensure_ca
  sign_leaf "client-$name" "$name" clientAuth ""
  echo "client: $dir/client-$name.pem (key $dir/client-$name.key, 0600), CN=$name"
}

show_one() {
  local file=$1 text
  text=$(openssl x509 -in "$file" -noout -subject -issuer -startdate -enddate -ext \
    subjectAltName,extendedKeyUsage,basicConstraints 2>/dev/null) ||
    { echo "$file: not a PEM certificate"; return 1; }
  echo "== $file"
  sed 's/^/  /' <<<"$text"
  if [[ -f "$dir/ca.pem" ]]; then
    if openssl verify -CAfile "$dir/ca.pem" "$file" >/dev/null 2>&1; then
      echo "  verifies against $dir/ca.pem"
    else
      echo "  DOES NOT verify against $dir/ca.pem"
    fi
  fi
}

show() {
  local files=("${args[@]}") file status=0
  if ((${#files[@]} == 0)); then
    shopt -s nullglob
    files=("$dir"/*.pem)
    ((${#files[@]} > 0)) || die "no certificates in $dir"
  fi
  for file in "${files[@]}"; do show_one "$file" || status=1; done
  return "$status"
}

case "$command" in
  ca) ((${#args[@]} == 0)) || die "ca takes no arguments"; make_ca ;;
  server) make_server ;;
  client) make_client ;;
  show) show ;;
  *) echo "$PROG: unknown command $command" >&2; usage >&2; exit 2 ;;
esac
