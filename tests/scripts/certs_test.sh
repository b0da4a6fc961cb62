#!/usr/bin/env bash
# certs/sepal-certs.sh in a temporary directory, checked with the openssl CLI: SANs, chain,
# key permissions, EKUs, key type, refusal to overwrite, and SAN discovery from a stand-in
# tailscale CLI and (with the fake tailscaled) from the LocalAPI.
#
# Usage: certs_test.sh PATH/TO/sepal-certs.sh [PATH/TO/sepal-fake-tailscaled]
set -uo pipefail

SCRIPT=${1:?usage: certs_test.sh sepal-certs.sh [sepal-fake-tailscaled]}
FAKE_TAILSCALED=${2:-}
T=$(mktemp -d /tmp/sepal-certs-test.XXXXXX)
fake_pid=""
cleanup() {
  if [[ -n "$fake_pid" ]]; then
    kill -TERM "$fake_pid" 2>/dev/null
    wait "$fake_pid" 2>/dev/null
  fi
  rm -rf "$T"
}
trap cleanup EXIT

failures=0
pass() { echo "ok   $*"; }
fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}
check() {  # check DESCRIPTION CMD...: passes when CMD succeeds
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi
}
check_not() {  # check_not DESCRIPTION CMD...: passes when CMD fails
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then fail "$what"; else pass "$what"; fi
}
sans() { openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null; }
has_san() { sans "$1" | grep -qF -- "$2"; }
mode() { stat -c %a "$1"; }
pubkey() { openssl pkey -in "$1" -pubout 2>/dev/null; }
cert_pubkey() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }

# A PATH where `tailscale` is a stub (answering like a node on a tailnet, or failing) and
# nothing else changes.
STUB=$T/stub
mkdir -p "$STUB"
write_stub() {
  cat >"$STUB/tailscale" <<EOF
#!/usr/bin/env bash
$1
EOF
  chmod +x "$STUB/tailscale"
}

# ---- explicit SANs -----------------------------------------------------------------------

D=$T/explicit
out=$("$SCRIPT" --dir "$D" server --no-discover --ip 100.101.102.103 --ip fd7a:115c:a1e0::abcd \
  --dns superlink.tail1234.ts.net. 2>&1)
rc=$?
echo "$out" | sed 's/^/    | /'
check "server with --ip/--dns succeeds" test "$rc" -eq 0
check "it prints the SANs it used" grep -q 'SANs: DNS:superlink.tail1234.ts.net' <<<"$out"
for san in "DNS:superlink.tail1234.ts.net" "DNS:localhost" "IP Address:100.101.102.103" \
  "IP Address:FD7A:115C:A1E0:0:0:0:0:ABCD" "IP Address:127.0.0.1" "IP Address:0:0:0:0:0:0:0:1"; do
  check "SAN $san present" has_san "$D/server.pem" "$san"
done
check_not "no trailing dot in the DNS SAN" has_san "$D/server.pem" "ts.net.,"
check "CN is the MagicDNS name" grep -q 'CN = superlink.tail1234.ts.net' \
  <(openssl x509 -in "$D/server.pem" -noout -subject)
check "server chain verifies against ca.pem" openssl verify -CAfile "$D/ca.pem" "$D/server.pem"
check "server verifies for the MagicDNS name" openssl verify -CAfile "$D/ca.pem" \
  -verify_hostname superlink.tail1234.ts.net "$D/server.pem"
check "server verifies for the Tailscale IPv4" openssl verify -CAfile "$D/ca.pem" \
  -verify_ip 100.101.102.103 "$D/server.pem"
check "server verifies for the Tailscale IPv6" openssl verify -CAfile "$D/ca.pem" \
  -verify_ip fd7a:115c:a1e0::abcd "$D/server.pem"
check_not "server does not verify for a LAN IP (the classic mismatch)" openssl verify \
  -CAfile "$D/ca.pem" -verify_ip 192.168.1.20 "$D/server.pem"
check "server passes the sslserver purpose (serverAuth EKU)" openssl verify -CAfile "$D/ca.pem" \
  -purpose sslserver "$D/server.pem"
check_not "server fails the sslclient purpose" openssl verify -CAfile "$D/ca.pem" \
  -purpose sslclient "$D/server.pem"
check "EKU text says TLS Web Server Authentication" grep -q 'TLS Web Server Authentication' \
  <(openssl x509 -in "$D/server.pem" -noout -ext extendedKeyUsage)
check "CA is a CA" grep -q 'CA:TRUE' <(openssl x509 -in "$D/ca.pem" -noout -ext basicConstraints)
check "server is not a CA" grep -q 'CA:FALSE' \
  <(openssl x509 -in "$D/server.pem" -noout -ext basicConstraints)
check "server key is EC P-256" grep -q 'prime256v1' <(openssl pkey -in "$D/server.key" -noout -text)
check "server is signed with ecdsa-with-SHA256" grep -q 'ecdsa-with-SHA256' \
  <(openssl x509 -in "$D/server.pem" -noout -text)
check "server key matches server.pem" test "$(pubkey "$D/server.key")" == \
  "$(cert_pubkey "$D/server.pem")"
check "ca.key is 0600" test "$(mode "$D/ca.key")" == 600
check "server.key is 0600" test "$(mode "$D/server.key")" == 600
check "server.pem is 0644" test "$(mode "$D/server.pem")" == 644

# ---- client certificates -----------------------------------------------------------------

out=$("$SCRIPT" --dir "$D" client supernode-a 2>&1)
rc=$?
check "client succeeds with the existing CA" test "$rc" -eq 0
check "client-supernode-a.key is 0600" test "$(mode "$D/client-supernode-a.key")" == 600
check "client chain verifies" openssl verify -CAfile "$D/ca.pem" "$D/client-supernode-a.pem"
check "client passes the sslclient purpose (clientAuth EKU)" openssl verify -CAfile "$D/ca.pem" \
  -purpose sslclient "$D/client-supernode-a.pem"
check_not "client fails the sslserver purpose" openssl verify -CAfile "$D/ca.pem" \
  -purpose sslserver "$D/client-supernode-a.pem"
check "client CN is its name" grep -q 'CN = supernode-a' \
  <(openssl x509 -in "$D/client-supernode-a.pem" -noout -subject)
check "client key matches its certificate" test "$(pubkey "$D/client-supernode-a.key")" == \
  "$(cert_pubkey "$D/client-supernode-a.pem")"
check_not "a client name with a slash is refused" "$SCRIPT" --dir "$D" client ../evil
check_not "client without a name is refused" "$SCRIPT" --dir "$D" client

# ---- refusing to overwrite ---------------------------------------------------------------

before=$(sha256sum "$D/ca.pem" "$D/ca.key" "$D/server.pem" "$D/server.key")
out=$("$SCRIPT" --dir "$D" ca 2>&1)
rc=$?
check "ca again without --force fails" test "$rc" -ne 0
check "  and says to pass --force" grep -q -- '--force' <<<"$out"
check_not "server again without --force fails" "$SCRIPT" --dir "$D" server --no-discover \
  --ip 100.101.102.103
check_not "client again without --force fails" "$SCRIPT" --dir "$D" client supernode-a
check "nothing changed" test "$before" == \
  "$(sha256sum "$D/ca.pem" "$D/ca.key" "$D/server.pem" "$D/server.key")"
check "server --force replaces the server certificate" "$SCRIPT" --dir "$D" --force server \
  --no-discover --ip 100.101.102.104
check "  with the new SAN" has_san "$D/server.pem" "IP Address:100.101.102.104"
check "  still signed by the same CA" openssl verify -CAfile "$D/ca.pem" "$D/server.pem"
check "  key still 0600" test "$(mode "$D/server.key")" == 600
check "show lists and verifies" grep -q 'verifies against' <("$SCRIPT" --dir "$D" show)

# ---- bad input ---------------------------------------------------------------------------

check_not "a bad --ip is refused" "$SCRIPT" --dir "$T/bad" server --ip 300.1.2.3
check_not "a bad --dns is refused" "$SCRIPT" --dir "$T/bad" server --dns 'evil name'
check_not "an unknown command is refused" "$SCRIPT" --dir "$T/bad" frobnicate
check_not "nothing was written for bad input" test -e "$T/bad/server.pem"

# ---- discovery from the tailscale CLI ----------------------------------------------------

write_stub '
case "$1 $2" in
  "ip -4") echo 100.88.77.66 ;;
  "ip -6") echo fd7a:115c:a1e0::4d01:4d42 ;;
  "status --json")
    printf "{\n  \"Version\": \"1.102.3\",\n  \"BackendState\": \"Running\",\n"
    printf "  \"TailscaleIPs\": [\"100.88.77.66\", \"fd7a:115c:a1e0::4d01:4d42\"],\n"
    printf "  \"Self\": {\"HostName\": \"superlink\", \"DNSName\": \"superlink.tail9999.ts.net.\"},\n"
    printf "  \"CertDomains\": [\"superlink.tail9999.ts.net\"],\n"
    printf "  \"Peer\": {\"nodekey:1\": {\"DNSName\": \"peer.tail9999.ts.net.\"}}\n}\n" ;;
  *) exit 1 ;;
esac'
for jq_mode in jq no-jq; do
  D=$T/cli-$jq_mode
  no_jq=""
  [[ "$jq_mode" == no-jq ]] && no_jq=1
  out=$(PATH="$STUB:$PATH" SEPAL_CERTS_NO_JQ=$no_jq "$SCRIPT" --dir "$D" server 2>&1)
  rc=$?
  echo "$out" | sed 's/^/    | /'
  check "discovery ($jq_mode): server succeeds" test "$rc" -eq 0
  check "discovery ($jq_mode): says where the names came from" grep -q 'tailscale CLI' <<<"$out"
  check "discovery ($jq_mode): MagicDNS name without the dot" has_san "$D/server.pem" \
    "DNS:superlink.tail9999.ts.net,"
  check "discovery ($jq_mode): IPv4" has_san "$D/server.pem" "IP Address:100.88.77.66"
  check "discovery ($jq_mode): IPv6" has_san "$D/server.pem" "IP Address:FD7A:115C:A1E0:0:0:0:4D01:4D42"
  check_not "discovery ($jq_mode): no peer names" has_san "$D/server.pem" "peer.tail9999"
done

# Given names win over discovery unless --discover.
D=$T/given
PATH="$STUB:$PATH" "$SCRIPT" --dir "$D" server --dns only.example >/dev/null 2>&1
check_not "--dns alone skips discovery" has_san "$D/server.pem" "100.88.77.66"
PATH="$STUB:$PATH" "$SCRIPT" --dir "$D" --force server --dns only.example --discover >/dev/null 2>&1
check "--discover adds the discovered names" has_san "$D/server.pem" "IP Address:100.88.77.66"
check "  to the given ones" has_san "$D/server.pem" "DNS:only.example"

# No tailscale at all and no flags: refuse rather than make a loopback-only certificate.
write_stub 'echo "failed to connect to local tailscaled" >&2; exit 1'
out=$(PATH="$STUB:$PATH" "$SCRIPT" --dir "$T/none" server --socket "$T/no.sock" 2>&1)
rc=$?
check "no tailscale and no flags: server fails" test "$rc" -ne 0
check "  saying to pass --ip and --dns" grep -q -- '--ip and --dns' <<<"$out"
check "  and writing nothing" test ! -e "$T/none/server.pem"

# ---- discovery from the LocalAPI (the fake tailscaled's /localapi/v0/status) -------------

if [[ -n "$FAKE_TAILSCALED" ]]; then
  SOCK=$T/tailscaled.sock
  "$FAKE_TAILSCALED" --socket "$SOCK" --dns-name superlink.tail4242.ts.net \
    --tailscale-ip 100.64.42.42 --tailscale-ip fd7a:115c:a1e0::42 >"$T/fake.log" 2>&1 &
  fake_pid=$!
  for _ in $(seq 50); do
    [[ -S "$SOCK" ]] && break
    sleep 0.1
  done
  D=$T/localapi
  # The stub CLI fails, so the script falls back to the socket.
  out=$(PATH="$STUB:$PATH" "$SCRIPT" --dir "$D" server --socket "$SOCK" 2>&1)
  rc=$?
  echo "$out" | sed 's/^/    | /'
  check "LocalAPI discovery: server succeeds" test "$rc" -eq 0
  check "LocalAPI discovery: says so" grep -q 'LocalAPI' <<<"$out"
  check "LocalAPI discovery: MagicDNS name" has_san "$D/server.pem" "DNS:superlink.tail4242.ts.net,"
  check "LocalAPI discovery: IPv4" has_san "$D/server.pem" "IP Address:100.64.42.42"
  check "LocalAPI discovery: IPv6" has_san "$D/server.pem" "IP Address:FD7A:115C:A1E0:0:0:0:0:42"
fi

if ((failures > 0)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
