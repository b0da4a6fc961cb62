#!/usr/bin/env bash
# Builds sepal every way a user, the container image or a benchmark builds it, and runs the
# tests on each: the README's test command, and what CI runs (.ci/run).
#
# Usage: scripts/test.sh [STAGE ...]      (no STAGE = all of them, in this order)
#   default  RelWithDebInfo (cmake --preset default), g++ 12: every test
#   release  the Dockerfile's exact build (scripts/build-release.sh), its runtime-library
#            check and its Debian package installed and purged (as root), the release
#            preset (benchmark build), and a plain
#            `cmake -DCMAKE_BUILD_TYPE=Release` build (-O3) with every test
#   asan     Debug + AddressSanitizer + UBSan (cmake --preset asan): every test
#   clang    clang 14, Release (cmake --preset clang): every test
#   tsan     ThreadSanitizer (cmake --preset tsan): the tests labelled `threads`
#   fuzz     the libFuzzer targets (cmake --preset fuzz), each run briefly on its corpus
# Every build treats warnings as errors. SEPAL_JOBS (default 2) sets the build parallelism;
# SEPAL_FUZZ_SECONDS (default 10) the fuzz smoke per target; extra ctest arguments go in
# SEPAL_CTEST_ARGS (e.g. "-R Reload").
set -euo pipefail
cd "$(dirname "$0")/.."

all_stages=(default release asan clang tsan fuzz)
stages=("$@")
((${#stages[@]})) || stages=("${all_stages[@]}")
for stage in "${stages[@]}"; do
  [[ " ${all_stages[*]} " == *" $stage "* ]] ||
    { echo "test.sh: unknown stage $stage (stages: ${all_stages[*]})" >&2; exit 2; }
done

scripts/install-deps.sh

# Fresh clones live in new directories: let ccache reuse objects across them and across
# the stages' build trees (six configurations need more than ccache's default 5 GiB).
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-12G}"
jobs="${SEPAL_JOBS:-2}"
read -r -a ctest_args <<<"${SEPAL_CTEST_ARGS:-}"

# Integration tests bind loopback ports and spawn sepal; run two at a time (2 cores).
preset_build_and_test() {
  local preset="$1"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  ctest --preset "$preset" -j "$jobs" "${ctest_args[@]}"
}

stage_default() { preset_build_and_test default; }

stage_release() {
  # Exactly what deploy/container/Dockerfile runs, then its runtime stage's package list
  # checked against what that binary links.
  local binary
  binary=$(scripts/build-release.sh build-docker | tail -1)
  bash tests/scripts/container_runtime_test.sh "$binary" deploy/container/Dockerfile
  # The Debian package of that binary, installed, verified, removed and purged for real
  # (root only: it changes the system and puts it back; skipped otherwise).
  local deb rc=0
  deb=$(scripts/package-deb.sh --binary "$binary" --out build-docker/deb | tail -1)
  bash tests/scripts/package_install_test.sh "$deb" || rc=$?
  ((rc == 0 || rc == 77)) || { echo "test.sh: package_install_test failed" >&2; return 1; }
  # The release preset (bench/run.sh builds it).
  cmake --preset release >/dev/null
  cmake --build --preset release -j "$jobs"
  # A plain Release build, as README readers and packagers run it, with every test.
  cmake -S . -B build-release-plain -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build-release-plain -j "$jobs"
  ctest --test-dir build-release-plain --output-on-failure -j "$jobs" --timeout 300 \
    "${ctest_args[@]}"
}

stage_asan() { preset_build_and_test asan; }
stage_clang() { preset_build_and_test clang; }
stage_tsan() { preset_build_and_test tsan; }
stage_fuzz() { scripts/fuzz.sh "${SEPAL_FUZZ_SECONDS:-10}"; }

summary=()
for stage in "${stages[@]}"; do
  echo "=== test.sh: stage $stage"
  start=$SECONDS
  "stage_$stage"
  summary+=("$(printf '%-8s %4d s' "$stage" $((SECONDS - start)))")
  echo "=== test.sh: stage $stage passed in $((SECONDS - start)) s"
done
echo "=== test.sh: all stages passed"
printf '  %s\n' "${summary[@]}"
