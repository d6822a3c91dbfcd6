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

bash "$ROOT/tools/setup.sh"
bash "$ROOT/tools/build.sh"

echo "[test] ctest"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
( cd "$BUILD" && ctest --output-on-failure -j "${ZERODIFF_TEST_JOBS:-$(nproc)}" "$@" )

echo "[test] install + out-of-tree consumer (find_package(zerodiff))"
cmake --install "$BUILD" --prefix "$BUILD/install" >/dev/null
CONSUMER="$BUILD/consumer"
cmake -S "$ROOT/tests/consumer" -B "$CONSUMER" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$BUILD/install" >"$CONSUMER.configure.log" 2>&1 \
  || { cat "$CONSUMER.configure.log"; exit 1; }
cmake --build "$CONSUMER" >/dev/null
"$CONSUMER/zerodiff_consumer"

echo "[test] examples/custom_module: a custom TrainingModule built against the installed package"
CUSTOM="$BUILD/custom_module"
cmake -S "$ROOT/examples/custom_module" -B "$CUSTOM" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$BUILD/install" >"$CUSTOM.configure.log" 2>&1 \
  || { cat "$CUSTOM.configure.log"; exit 1; }
cmake --build "$CUSTOM" >/dev/null
rm -rf "$CUSTOM/run"
"$CUSTOM/train_denoiser" "$CUSTOM/run" 100

echo "[test] all done in $(( $(date +%s) - start )) s"
