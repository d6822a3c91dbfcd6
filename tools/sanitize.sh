#!/usr/bin/env bash
# The sanitizer job: builds the library, the unit tests and the fuzz targets with clang under
# AddressSanitizer + UndefinedBehaviorSanitizer into $ZERODIFF_ASAN_BUILD_DIR (default build-asan/), then runs
# the unit tests there. Every sanitizer report is fatal, so a finding fails the test that triggered it.
#
#   bash tools/sanitize.sh [ctest args...]     e.g. bash tools/sanitize.sh -R Safetensors
#
# CUDA, examples and benchmarks are off in this build. tools/fuzz.sh reuses it for the fuzz targets.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${ZERODIFF_ASAN_BUILD_DIR:-$ROOT/build-asan}"
start=$(date +%s)
source "$ROOT/tools/lib.sh"

bash "$ROOT/tools/setup.sh"
command -v clang++-14 >/dev/null || { echo "[sanitize] clang++-14 not found (tools/setup.sh installs clang-14)"; exit 1; }
export CC=clang-14 CXX=clang++-14
# The unit tests and the fuzz targets only (the library comes with them).
phase_begin "sanitizer build"
ZERODIFF_BUILD_DIR="$BUILD" ZERODIFF_WITH_CUDA=OFF ZERODIFF_BUILD_BENCHMARKS=OFF \
  ZERODIFF_BUILD_TARGETS="zerodiff_unit_tests fuzz_safetensors fuzz_config fuzz_tokenizer fuzz_metadata" \
  bash "$ROOT/tools/build.sh" -DZERODIFF_SANITIZE=address,undefined -DZERODIFF_BUILD_FUZZERS=ON \
  -DZERODIFF_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS=-gline-tables-only

# LibTorch is not instrumented; its allocations are still checked through ASan's malloc interposition.
# detect_leaks=0: LibTorch and the CPython-free runtime keep process-lifetime singletons that LSan reports.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
phase_begin "sanitizer tests"
# Every unit test but four whole-model training runs (a tiny UNet/VAE/CLIP trained for several steps, compared with
# another run): under ASan they took 117 of the job's 290 test seconds (measured 2026-12-08), almost all of it inside
# LibTorch, which is not instrumented; the GCC build runs them, and the sanitizer still runs every parser, the memory
# system, the kernels and the trainer's own tests. ZERODIFF_SANITIZE_EXCLUDE= (empty) runs them too.
EXCLUDE="${ZERODIFF_SANITIZE_EXCLUDE-^(TextToImageModule\.(Zero3AndGeminiInOneProcessTrainLikeSingle|CachedLatentsTrainLikeFreshOnesAndResumeExactly|TrainsTheUNetOnlyAndExportsADiffusersFolder)|TrainingModules\.ValidationSplitReportsHeldOutLosses)\$}"
echo "[sanitize] unit tests under ASan+UBSan${EXCLUDE:+ (not: $EXCLUDE)}"
( cd "$BUILD" && ctest --output-on-failure -j "${ZERODIFF_TEST_JOBS:-$(cores)}" -L unit ${EXCLUDE:+-E "$EXCLUDE"} "$@" )
phase_end
echo "[sanitize] done in $(( $(date +%s) - start )) s"
