#!/usr/bin/env bash
# Builds the sepal binary the way the container image does: a plain CMake Release build
# (g++, -O3, warnings as errors), tests off. deploy/container/Dockerfile runs exactly this,
# and so does CI (scripts/test.sh), so a release build that breaks fails CI too.
# Usage: scripts/build-release.sh BUILD_DIR     (the binary is BUILD_DIR/proxy/sepal)
set -euo pipefail
build_dir="${1:?usage: scripts/build-release.sh BUILD_DIR}"
cd "$(dirname "$0")/.."
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSEPAL_BUILD_TESTS=OFF \
  -DSEPAL_BUILD_BENCH=OFF >/dev/null
cmake --build "$build_dir" --target sepal -j "${SEPAL_JOBS:-2}"
echo "$build_dir/proxy/sepal"
