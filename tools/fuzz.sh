#!/usr/bin/env bash
# Runs the libFuzzer targets (tests/fuzz/) for a fixed time each, on their seed corpora, with ASan+UBSan, as many
# at once as there are cores (ZERODIFF_FUZZ_JOBS).
#
#   bash tools/fuzz.sh [SECONDS] [TARGET...]     default: 60 s each for safetensors config tokenizer metadata
#
# Builds them in the sanitizer build (tools/sanitize.sh configures it; $ZERODIFF_ASAN_BUILD_DIR, default
# build-asan/). New inputs go to a scratch corpus under the build folder (the seeds in tests/fuzz/corpus/ are not
# modified). A crash, a sanitizer report, an exception other than the reader's own error type, a timeout (10 s per
# input) or an out-of-memory input (2 GiB) fails the script (leak detection is off: LibTorch's singletons); the input is saved as build-asan/fuzz/<target>/crash-* and libFuzzer prints how
# to reproduce it. Every finding becomes a regression test (tests/unit/) when it is fixed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${ZERODIFF_ASAN_BUILD_DIR:-$ROOT/build-asan}"
SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(safetensors config tokenizer metadata)

if [[ ! -f "$BUILD/build.ninja" ]]; then
  echo "[fuzz] no sanitizer build at $BUILD: run tools/sanitize.sh first"; exit 1
fi
source "$ROOT/tools/lib.sh"
phase_begin fuzz
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/zerodiff/ccache}"
cmake --build "$BUILD" -j "${ZERODIFF_JOBS:-$(cores)}" $(printf -- '--target fuzz_%s ' "${TARGETS[@]}") >/dev/null
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export OMP_NUM_THREADS=1
# Each libFuzzer process is single-threaded: run ZERODIFF_FUZZ_JOBS (default: the core count) targets at once, each
# for the full SECONDS_EACH.
JOBS="${ZERODIFF_FUZZ_JOBS:-$(cores)}"
fuzz_one() {
  local t="$1" work="$BUILD/fuzz/$1"
  rm -rf "$work/corpus"
  mkdir -p "$work/corpus"
  ( cd "$work" && "$BUILD/bin/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
      -max_len=65536 -print_final_stats=1 "$work/corpus" "$ROOT/tests/fuzz/corpus/$t" >"$work/log" 2>&1 )
}
declare -A pid_of=()
status=0
report() {  # report TARGET EXIT_STATUS
  local log="$BUILD/fuzz/$1/log"
  if [[ "$2" == 0 ]]; then
    echo "[fuzz] $1: no finding ($(grep -aEo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$') runs," \
         "$(grep -aEo 'cov: [0-9]+' "$log" | tail -1))"
  else
    echo "[fuzz] $1: FINDING (exit $2)"; tail -60 "$log"; status=1
  fi
}
wait_one() {  # waits for the oldest running target and reports it
  local t="${running[0]}" rc=0
  running=("${running[@]:1}")
  wait "${pid_of[$t]}" || rc=$?
  report "$t" "$rc"
}
running=()
for t in "${TARGETS[@]}"; do
  ((${#running[@]} < JOBS)) || wait_one
  echo "[fuzz] $t for $SECONDS_EACH s"
  fuzz_one "$t" &
  pid_of[$t]=$!
  running+=("$t")
done
while ((${#running[@]})); do wait_one; done
((status == 0)) && phase_end
exit $status
