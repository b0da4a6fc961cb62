#!/usr/bin/env bash
# Builds sepal and runs every test (unit + integration). The README's test command and CI.
# Usage: scripts/test.sh [extra ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# Fresh clones live in new directories: let ccache reuse objects across them.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
jobs="${SEPAL_JOBS:-2}"
cmake --preset default >/dev/null
cmake --build --preset default -j "$jobs"

# Integration tests bind loopback ports and spawn sepal; run two at a time (2 cores).
ctest --preset default -j "$jobs" --timeout 300 "$@"
