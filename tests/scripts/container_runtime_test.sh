#!/usr/bin/env bash
# The container's runtime stage installs exactly the packages of the libraries the sepal
# binary links (no missing library, nothing unused) and runs as a non-root user.
# Usage: container_runtime_test.sh SEPAL_BINARY DOCKERFILE
set -euo pipefail
binary="$1" dockerfile="$2"
fail() { echo "FAIL: $*" >&2; exit 1; }

# debian:12-slim already has these (apt needs them).
base="libc6 libgcc-s1 libstdc++6"

# The runtime stage: everything after the last FROM.
runtime=$(awk '/^FROM /{stage=""} {stage = stage $0 "\n"} END{printf "%s", stage}' "$dockerfile")
# Its apt-get install line(s), continuation lines joined.
listed=$(printf '%s' "$runtime" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' |
  grep -o 'apt-get install[^&;]*' | tr ' ' '\n' |
  grep -v -e '^apt-get$' -e '^install$' -e '^-' -e '^$' | sort -u)
[[ -n "$listed" ]] || fail "no apt-get install in the runtime stage of $dockerfile"

# The package of each shared library the binary loads (dpkg knows /lib paths on merged-/usr
# systems, ldd may print /usr/lib ones: try both).
owner() {
  local path="$1" real
  real=$(readlink -f "$path")
  for candidate in "$path" "$real" "${path#/usr}" "${real#/usr}" "/usr${path#/usr}" "/usr${real#/usr}"; do
    if out=$(dpkg -S "$candidate" 2>/dev/null); then
      echo "${out%%:*}" | sed 's/,.*//'
      return 0
    fi
  done
  return 1
}
linked=()
while read -r lib; do
  pkg=$(owner "$lib") || fail "no Debian package owns $lib (linked by $binary)"
  linked+=("$pkg")
done < <(ldd "$binary" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
needed=$(printf '%s\n' "${linked[@]}" | sort -u | grep -vxF -f <(tr ' ' '\n' <<<"$base"))

missing=$(comm -23 <(echo "$needed") <(echo "$listed"))
extra=$(comm -13 <(echo "$needed") <(echo "$listed"))
[[ -z "$missing" ]] || fail "the runtime stage lacks $(echo $missing) (linked by sepal)"
[[ -z "$extra" ]] || fail "the runtime stage installs $(echo $extra), which sepal does not link"
echo "runtime packages match ldd: $(echo $needed)"

# A non-root user: the last USER line names neither root nor uid 0.
user=$(printf '%s' "$runtime" | awk '/^USER /{u=$2} END{print u}')
[[ -n "$user" ]] || fail "the runtime stage has no USER (it would run as root)"
[[ "${user%%:*}" != "root" && "${user%%:*}" != "0" ]] || fail "the runtime stage runs as $user"
# TS_PERMIT_CERT_UID in the docs must name that uid.
uid="${user%%:*}"
grep -q "TS_PERMIT_CERT_UID=$uid" "$dockerfile" ||
  fail "the Dockerfile does not document TS_PERMIT_CERT_UID=$uid for tls: {source: tailscale}"
echo "runs as $user"
