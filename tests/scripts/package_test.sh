#!/usr/bin/env bash
# scripts/package-deb.sh run on an already built sepal binary (nothing is compiled), and the
# .deb checked with dpkg-deb: control fields, Depends against the libraries the binary links,
# the file list, conffiles, maintainer scripts; then, from the extracted package, the config
# passes `sepal --check`, the unit (and deploy/systemd's source) passes
# `systemd-analyze verify` and the sysusers.d file makes the sepal user (both skipped, saying
# so, without systemd's tools). Installing it for real: package_install_test.sh (root).
#
# Usage: package_test.sh PATH/TO/package-deb.sh PATH/TO/sepal VERSION
set -uo pipefail

SCRIPT=${1:?usage: package_test.sh package-deb.sh sepal-binary version}
BINARY=${2:?usage: package_test.sh package-deb.sh sepal-binary version}
VERSION=${3:?usage: package_test.sh package-deb.sh sepal-binary version}
SOURCE_UNIT=$(dirname "$SCRIPT")/../deploy/systemd/sepal.service
T=$(mktemp -d /tmp/sepal-package-test.XXXXXX)
trap 'rm -rf "$T"' EXIT

# shellcheck source=SCRIPTDIR/package_checks.sh
source "$(dirname "$0")/package_checks.sh"

# ---- build -------------------------------------------------------------------------------

arch=$(dpkg --print-architecture)
started=$SECONDS
if ! "$SCRIPT" --binary "$BINARY" --out "$T/out" >"$T/stdout" 2>"$T/stderr"; then
  fail "package-deb.sh --binary succeeds"
  sed 's/^/    | /' "$T/stderr" | tail -30
  exit 1
fi
deb=$(tail -n 1 "$T/stdout")
pass "package-deb.sh --binary succeeds ($((SECONDS - started)) s)"
check "its last stdout line is the .deb: $deb" test -f "$deb"
check "file name is sepal_${VERSION}_${arch}.deb" test "$(basename "$deb")" == \
  "sepal_${VERSION}_${arch}.deb"
check_not_packaged() { ! "$SCRIPT" --binary "$1" --out "$T/refused" >/dev/null 2>&1; }
printf '#!/bin/sh\necho "sepal 0.0.0-stale"\n' >"$T/stale-sepal"
chmod +x "$T/stale-sepal"
check "a binary whose --version is not $VERSION is refused" check_not_packaged "$T/stale-sepal"

# ---- control fields ----------------------------------------------------------------------

field() { dpkg-deb -f "$deb" "$1"; }
check "Package: sepal" test "$(field Package)" == sepal
check "Version: $VERSION (the CMake project version)" test "$(field Version)" == "$VERSION"
check "Architecture: $arch" test "$(field Architecture)" == "$arch"
[[ "$arch" == amd64 ]] || echo "note: not amd64 here; the release package is built on amd64"
check "Maintainer set" test -n "$(field Maintainer)"
check "Description set" test -n "$(field Description)"
depends=$(field Depends)
echo "    Depends: $depends"
dep_names=$(tr ',' '\n' <<<"$depends" | sed 's/^ *//; s/[ (].*//' | sort -u)

# The package owning each library the binary needs (DT_NEEDED, what dpkg-shlibdeps reads),
# found through ldd's path; dpkg may know it under /lib or /usr/lib (merged /usr).
owner() {
  local path=$1 real candidate out
  real=$(readlink -f "$path")
  for candidate in "$path" "$real" "${path#/usr}" "${real#/usr}" "/usr${path#/usr}" \
    "/usr${real#/usr}"; do
    if out=$(dpkg -S "$candidate" 2>/dev/null); then
      sed 's/:.*//; s/,.*//' <<<"$out" | head -n 1
      return 0
    fi
  done
  return 1
}
ldd_out=$(ldd "$BINARY")
needed=$(readelf -d "$BINARY" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
check "the binary needs shared libraries (readelf)" test -n "$needed"
for soname in $needed; do
  path=$(awk -v so="$soname" '$1 == so && $2 == "=>" {print $3}' <<<"$ldd_out")
  if [[ -z "$path" ]]; then
    fail "ldd resolves $soname"
    continue
  fi
  if pkg=$(owner "$path"); then
    check "Depends has $pkg (for $soname)" has_line "$dep_names" "${pkg%%:*}"
  else
    fail "dpkg -S knows $path ($soname)"
  fi
done
for pkg in libnghttp2-14 libssl3 libyaml-cpp0.7 libboost-json1.81.0 libabsl20220623 \
  libstdc++6 libc6; do
  check "Depends has $pkg (expected set)" has_line "$dep_names" "$pkg"
done
check "Depends names no -dev package" bash -c "! grep -q -- '-dev\$' <<<'$dep_names'"
check "Depends versions libraries (>= ...)" grep -q 'libc6 (>= ' <<<"$depends"

# ---- files ---------------------------------------------------------------------------------

contents=$(dpkg-deb -c "$deb")
files=$(awk '$1 !~ /^d/ {print $6}' <<<"$contents" | sed 's#^\./#/#' | sort)
expected=$(printf '%s\n' /etc/sepal/sepal.yaml /usr/bin/sepal \
  /usr/lib/systemd/system/sepal.service /usr/lib/sysusers.d/sepal.conf \
  /usr/share/doc/sepal/README.md /usr/share/doc/sepal/copyright | sort)
check "files are exactly the expected ones" diff <(echo "$expected") <(echo "$files")
check "everything is owned by root/root" \
  bash -c "! awk '\$2 != \"root/root\"' <<<'$contents' | grep -q ."
check "/usr/bin/sepal is 0755" grep -qE '^-rwxr-xr-x .* \./usr/bin/sepal$' <<<"$contents"
check "/etc/sepal/sepal.yaml is 0644" \
  grep -qE '^-rw-r--r-- .* \./etc/sepal/sepal\.yaml$' <<<"$contents"

# ---- control archive -----------------------------------------------------------------------

mkdir -p "$T/control" "$T/root"
dpkg-deb -e "$deb" "$T/control"
dpkg-deb -x "$deb" "$T/root"
check "conffiles lists /etc/sepal/sepal.yaml" grep -qxF /etc/sepal/sepal.yaml "$T/control/conffiles"
check "conffiles lists only files in the package" bash -c \
  "while read -r f; do test -f '$T/root'\"\$f\" || exit 1; done <'$T/control/conffiles'"
check "md5sums present" test -s "$T/control/md5sums"
for s in postinst prerm postrm; do
  check "$s present and executable" test -x "$T/control/$s"
  check "$s is valid sh" sh -n "$T/control/$s"
done
check "postinst creates the user with systemd-sysusers" \
  grep -q 'systemd-sysusers /usr/lib/sysusers.d/sepal.conf' "$T/control/postinst"
check "postinst falls back to useradd --system" grep -q 'useradd --system' "$T/control/postinst"
check "maintainer scripts call systemctl only when systemd runs" bash -c \
  "for s in postinst prerm postrm; do
     ! grep -n systemctl '$T/control/'\$s | grep -v '^[0-9]*:#' | grep -q . ||
       grep -q '\[ -d /run/systemd/system \]' '$T/control/'\$s || exit 1
   done"

# ---- the packaged files work ----------------------------------------------------------------

sepal=$T/root/usr/bin/sepal
check "packaged binary is stripped" grep -q ', stripped' <(file "$sepal")
check "packaged binary runs (--version)" "$sepal" --version
check "packaged config passes sepal --check" "$sepal" --config "$T/root/etc/sepal/sepal.yaml" \
  --check

unit=$T/root/usr/lib/systemd/system/sepal.service
check "unit runs /usr/bin/sepal" grep -qx \
  'ExecStart=/usr/bin/sepal --config /etc/sepal/sepal.yaml' "$unit"
check "unit names no /usr/local path" bash -c "! grep -v '^#' '$unit' | grep -q /usr/local"
check "unit runs as User=sepal" grep -qx 'User=sepal' "$unit"
check "unit has LogsDirectory=sepal" grep -qx 'LogsDirectory=sepal' "$unit"
check "unit's ReadWritePaths are all optional (-)" bash -c \
  "! sed -n 's/^ReadWritePaths=//p' '$unit' | tr ' ' '\n' | grep -v '^-' | grep -q ."
check "unit keeps its hardening" bash -c "for k in NoNewPrivileges=yes ProtectSystem=strict \
  ProtectHome=yes PrivateTmp=yes; do grep -qx \"\$k\" '$unit' || exit 1; done"

if command -v systemd-analyze >/dev/null; then
  # verify wants the Exec binaries to exist: point them at the extracted one.
  sed "s#/usr/bin/sepal#$sepal#g" "$unit" >"$T/sepal.service"
  check "packaged unit passes systemd-analyze verify" systemd-analyze verify "$T/sepal.service"
  mkdir -p "$T/deploy"
  sed "s#/usr/local/bin/sepal#$sepal#g" "$SOURCE_UNIT" >"$T/deploy/sepal.service"
  check "deploy/systemd/sepal.service passes systemd-analyze verify" \
    systemd-analyze verify "$T/deploy/sepal.service"
else
  echo "skip systemd-analyze verify: systemd-analyze not installed (apt-get install systemd)"
fi
if command -v systemd-sysusers >/dev/null; then
  mkdir -p "$T/sysroot/etc"
  systemd-sysusers --root="$T/sysroot" "$T/root/usr/lib/sysusers.d/sepal.conf" >/dev/null 2>&1
  check "sysusers.d file creates user sepal (nologin) and group sepal" bash -c \
    "grep -q '^sepal:x:[0-9]*:[0-9]*:.*:/usr/sbin/nologin\$' '$T/sysroot/etc/passwd' &&
     grep -q '^sepal:x:' '$T/sysroot/etc/group'"
else
  echo "skip sysusers check: systemd-sysusers not installed"
fi

checks_done
