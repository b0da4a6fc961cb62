#!/usr/bin/env bash
# Builds the libFuzzer targets (configure preset `fuzz`: clang 14, ASan + UBSan, build-fuzz/)
# and runs each for SECONDS on a scratch copy of its committed corpus (tests/fuzz/corpus/),
# one after the other. Prints libFuzzer's own output; exits non-zero if any target found a
# crash, leak, timeout or out-of-memory, naming the file libFuzzer wrote the input to.
#
#   scripts/fuzz.sh SECONDS [TARGET...]     # targets: config proxy_protocol whois localapi downstream grpc_adapter rest
#   FUZZ_JOBS_DIR=/some/dir scripts/fuzz.sh 600   # keep the scratch corpora and logs there
#
# New inputs stay in the scratch corpus; to keep the useful ones, merge them into a fresh
# directory (tests/fuzz/README.md, "Updating the corpus").
set -euo pipefail

usage() { echo "usage: $0 SECONDS [TARGET...]" >&2; exit 2; }
[[ $# -ge 1 && $1 =~ ^[0-9]+$ && $1 -gt 0 ]] || usage
seconds=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
all_targets=(config proxy_protocol whois localapi downstream grpc_adapter rest)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all_targets[@]}")
for target in "${targets[@]}"; do
  [[ -d $root/tests/fuzz/corpus/$target ]] || { echo "unknown fuzz target: $target" >&2; usage; }
done

export CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=true
cd "$root"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j2 --target "${targets[@]/%/_fuzzer}"

scratch=${FUZZ_JOBS_DIR:-$(mktemp -d /tmp/sepal-fuzz-run.XXXXXX)}
mkdir -p "$scratch"
echo "scratch corpora, logs and crash inputs in $scratch"

# Per-target libFuzzer options: the HTTP/2 session takes longer inputs (frame sequences).
declare -A extra=([downstream]="-max_len=16384")
failed=()
for target in "${targets[@]}"; do
  corpus=$scratch/$target-corpus
  rm -rf "$corpus"
  cp -r "$root/tests/fuzz/corpus/$target" "$corpus"
  echo "=== $target: ${seconds}s on $(ls "$corpus" | wc -l) seed inputs"
  status=0
  # The kill guard only matters if libFuzzer itself wedges (it has its own -timeout per input).
  # shellcheck disable=SC2086
  # TMPDIR: the targets' unix sockets go under the scratch directory too (libFuzzer's exit
  # path skips their atexit clean-up).
  (cd "$scratch" && TMPDIR=$scratch timeout -s KILL $((seconds + 300)) nice \
      "$root/build-fuzz/tests/fuzz/${target}_fuzzer" -max_total_time="$seconds" \
      -rss_limit_mb=2048 -timeout=25 -print_final_stats=1 ${extra[$target]:-} \
      -artifact_prefix="$scratch/$target-" "$corpus") 2>&1 | tee "$scratch/$target.log" ||
    status=$?
  if [[ $status -ne 0 ]]; then
    failed+=("$target")
    echo "=== $target FAILED (exit $status); inputs written:"
    shopt -s nullglob
    found=("$scratch/$target-"{crash,leak,timeout,oom,slow-unit}-*)
    shopt -u nullglob
    if [[ ${#found[@]} -gt 0 ]]; then printf '  %s\n' "${found[@]}"; else echo "  (none)"; fi
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing found problems in: ${failed[*]} (logs and inputs in $scratch)"
  exit 1
fi
echo "no crash in ${targets[*]} (${seconds}s each)"
