#!/usr/bin/env bash
# Builds the Debian package sepal_<version>_<arch>.deb (CPack DEB, cmake/package; Depends from
# dpkg-shlibdeps) and prints its path as the last line of stdout (build output: stderr).
#
# Usage: scripts/package-deb.sh [--binary PATH] [--out DIR]
#   default     install-deps, then build target sepal with the release preset (Release,
#               -Werror, build-release/) and package build-release/proxy/sepal
#   --binary    package this sepal executable instead (nothing is built; it is stripped in
#               the package); its --version must match the project version
#   --out DIR   where the .deb goes (default: build-release/deb)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

binary=""
out=""
while (($#)); do
  case "$1" in
  --binary) binary=${2:?--binary needs a path}; shift 2 ;;
  --out) out=${2:?--out needs a directory}; shift 2 ;;
  -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "package-deb: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
out=${out:-$root/build-release/deb}

if [[ -z "$binary" ]]; then
  "$root/scripts/install-deps.sh" >&2
  export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=true
  (cd "$root" && cmake --preset release >&2 &&
    cmake --build --preset release --target sepal -j "${SEPAL_JOBS:-2}" >&2)
  binary=$root/build-release/proxy/sepal
fi
for tool in cmake cpack dpkg-shlibdeps dpkg-deb file strip; do
  command -v "$tool" >/dev/null || {
    echo "package-deb: $tool not found (scripts/install-deps.sh installs it)" >&2
    exit 1
  }
done
binary=$(realpath "$binary")

work=$(mktemp -d "${TMPDIR:-/tmp}/sepal-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
cmake -S "$root/cmake/package" -B "$work/cmake" -DSEPAL_PACKAGE_BINARY="$binary" >&2
(cd "$work/cmake" && cpack -B "$work/cpack" >&2)

debs=("$work"/cpack/*.deb)
if ((${#debs[@]} != 1)) || [[ ! -f "${debs[0]}" ]]; then
  echo "package-deb: cpack made no single .deb in $work/cpack" >&2
  exit 1
fi
mkdir -p "$out"
deb=$(realpath "$out")/$(basename "${debs[0]}")
mv -f "${debs[0]}" "$deb"
echo "$deb"
