#!/usr/bin/env bash
# The README test command: set up, build, run every test, then build the out-of-tree consumer
# against the installed package.
#
#   bash tools/test.sh [ctest args...]     e.g. bash tools/test.sh -L unit
#
# Prints CTest's summary ("100% tests passed, 0 tests failed out of N") and exits non-zero on any
# failure. GPU tests (label gpu) skip themselves without a CUDA device.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${ZERODIFF_BUILD_DIR:-$ROOT/build}"
start=$(date +%s)
source "$ROOT/tools/lib.sh"

phase_begin setup
bash "$ROOT/tools/setup.sh"
phase_begin build
bash "$ROOT/tools/build.sh"

phase_begin ctest
echo "[test] ctest"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
ctest_rc=0
( cd "$BUILD" && ctest --output-on-failure -j "${ZERODIFF_TEST_JOBS:-$(cores)}" "$@" ) 2>&1 | tee "$BUILD/ctest.log" \
  || ctest_rc=$?
if ((ctest_rc)); then
  ctest_label_phases "$BUILD/ctest.log" ctest  # a failed run's label times too
  exit "$ctest_rc"                            # (the EXIT trap logs the ctest phase as FAILED)
fi
phase_end
ctest_label_phases "$BUILD/ctest.log" ctest

phase_begin consumer
echo "[test] install + the out-of-tree consumer (find_package(zerodiff)) and examples/custom_module (a custom"
echo "[test] TrainingModule), both built against the installed package at once (one translation unit each)"
cmake --install "$BUILD" --prefix "$BUILD/install" >/dev/null
CONSUMER="$BUILD/consumer"
CUSTOM="$BUILD/custom_module"
build_against_install() {  # SOURCE_DIR BUILD_DIR: configure + build, output in BUILD_DIR.log, printed on failure
  { cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$BUILD/install" \
      && cmake --build "$2"; } >"$2.log" 2>&1 || { cat "$2.log"; return 1; }
}
build_against_install "$ROOT/tests/consumer" "$CONSUMER" & consumer_pid=$!
build_against_install "$ROOT/examples/custom_module" "$CUSTOM" & custom_pid=$!
consumers_rc=0
wait $consumer_pid || consumers_rc=$?  # both builds report their failure before the phase fails
wait $custom_pid || consumers_rc=$?
((consumers_rc == 0)) || exit "$consumers_rc"
"$CONSUMER/zerodiff_consumer"
rm -rf "$CUSTOM/run"
"$CUSTOM/train_denoiser" "$CUSTOM/run" 100
phase_end

echo "[test] all done in $(( $(date +%s) - start )) s"
