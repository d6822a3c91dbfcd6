#!/usr/bin/env bash
# Configure (once) and build zerodiff with Ninja + ccache into $ZERODIFF_BUILD_DIR (default: build/).
#
#   bash tools/build.sh [extra cmake -D options...]
#
# Environment: ZERODIFF_BUILD_DIR, ZERODIFF_BUILD_TYPE (Release), ZERODIFF_JOBS (nproc),
# ZERODIFF_TORCH_DIR (use an existing LibTorch instead of the .venv's), ZERODIFF_WITH_CUDA (AUTO),
# ZERODIFF_BUILD_BENCHMARKS (ON: build/bin/bench_*), ZERODIFF_BUILD_TARGETS (space-separated targets; default: all).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${ZERODIFF_BUILD_DIR:-$ROOT/build}"
source "$ROOT/tools/lib.sh"
JOBS="${ZERODIFF_JOBS:-$(cores)}"

args=(-S "$ROOT" -B "$BUILD" -G Ninja
      -DCMAKE_BUILD_TYPE="${ZERODIFF_BUILD_TYPE:-Release}"
      -DZERODIFF_WITH_CUDA="${ZERODIFF_WITH_CUDA:-AUTO}"
      -DZERODIFF_BUILD_BENCHMARKS="${ZERODIFF_BUILD_BENCHMARKS:-ON}"
      -DCMAKE_INSTALL_PREFIX="$BUILD/install")
[[ -n "${ZERODIFF_TORCH_DIR:-}" ]] && args+=(-DTorch_DIR="$ZERODIFF_TORCH_DIR")
# ccache: a per-user cache shared by every clone, large enough for the LibTorch PCH.
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/zerodiff/ccache}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"

if [[ ! -f "$BUILD/build.ninja" || $# -gt 0 ]]; then
  echo "[build] configuring $BUILD"
  cmake "${args[@]}" "$@" >"$BUILD.configure.log" 2>&1 || { cat "$BUILD.configure.log"; exit 1; }
  grep -E "^-- zerodiff:" "$BUILD.configure.log" || true
fi
echo "[build] building with $JOBS jobs (first build of a fresh clone: ~6 min on 2 AVX-512 cores, ~10 on AVX2-only ones)"
start=$(date +%s)
targets=()
for t in ${ZERODIFF_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$BUILD" -j "$JOBS" "${targets[@]+"${targets[@]}"}"
echo "[build] done in $(( $(date +%s) - start )) s"
