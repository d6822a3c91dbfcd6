#!/usr/bin/env bash
# Step 2 of the offline-GPU-host flow (DESIGN.md §5): run on the GPU host, from the repository root.
#
#   bash tools/gpu/run_gpu.sh OUTDIR              # unpack, configure (CUDA ON), build, GPU tests, benchmarks
#   bash tools/gpu/run_gpu.sh --dry-run OUTDIR    # (or ZERODIFF_GPU_DRY_RUN=1) unpack into /tmp and only
#                                                 # configure with CUDA OFF, checking that every
#                                                 # dependency resolves from the unpacked prefix
#
# Phases (elapsed time printed for each, all under one budget, default 480 s):
#   unpack     every tools/gpu/debs/*.deb (made by tools/gpu/prepare_debs.sh) is checked against
#              debs/MANIFEST.txt and unpacked with `dpkg -x` (or a python3 fallback where dpkg is
#              missing) into PREFIX (default BUILD/deps-prefix; re-made on every run)
#   env        nvidia-smi, nvcc, cmake, python/torch versions -> OUTDIR/env.log
#   configure  cmake against the host's own torch (python3 -c 'import torch.utils; ...')
#   build      cmake --build -j$(nproc), Ninja (the unpacked one, else the host's) or Unix Makefiles
#   ctest_gpu  ctest -L gpu --output-on-failure (JUnit XML too)
#   bench      every BUILD/bin/bench_* (zero is fine), one log (and Google Benchmark JSON) each
# OUTDIR gets configure.log, build.log, ctest_gpu.log, ctest_gpu.xml, bench_<name>.log/.json,
# bench/<name>/ (each benchmark's working directory: its figures), env.log, nvidia-smi.log, deps.txt,
# unpack.log and summary.txt (written even on failure). Exit status: 0 when every phase passed.
#
# Why no rewriting of the Debian CMake files: the *-config.cmake / *Targets.cmake of these packages
# compute their install prefix from their own location (CMAKE_CURRENT_LIST_FILE/../../../..); the
# literal "/usr/..." in them is only used on the "/usr-merge" branch, taken when the file's realpath
# equals /usr/lib/<triplet>/cmake/<pkg>, which is never true inside PREFIX. So PREFIX/usr on
# CMAKE_PREFIX_PATH is enough, and it is searched before the host's /usr. The pkg-config .pc files do
# hard-code prefix=/usr: those are rewritten (and PKG_CONFIG_PATH set) for any future pkg_check_modules.
# After configuring, the *_DIR entries of CMakeCache.txt are checked to lie in PREFIX (deps.txt): a
# warning on the host, an error in the dry run, which also hides /usr, /usr/local and / from every
# find_* (CMAKE_IGNORE_PREFIX_PATH) and probes benchmark, re2, stb and webp as well.
#
# Environment:
#   ZERODIFF_PYTHON            python with torch (default: $VIRTUAL_ENV/bin/python, ./.venv/bin/python,
#                              python3; the first that imports torch)
#   ZERODIFF_BUILD_DIR         build directory (default build-gpu/; dry run: a fresh /tmp directory)
#   ZERODIFF_GPU_PREFIX        where the .debs are unpacked (default BUILD/deps-prefix)
#   ZERODIFF_JOBS              build jobs (default nproc)
#   ZERODIFF_GPU_BUDGET_S      wall-clock budget for the whole run (default 480)
#   ZERODIFF_BENCH_TIMEOUT_S   per benchmark binary (default 120); ZERODIFF_BENCH_ARGS: extra arguments
#   ZERODIFF_CUDA_ARCHITECTURES  default: the project's (80;90)
#   ZERODIFF_GPU_CMAKE_ARGS    extra cmake arguments (space-separated)
#   ZERODIFF_GPU_DRY_RUN=1     same as --dry-run; ZERODIFF_GPU_DRY_CUDA=ON: dry run with CUDA ON
#                              (configures the kernels too; needs a local nvcc)
set -uo pipefail

T0=$(date +%s)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEBS="$ROOT/tools/gpu/debs"

DRY="${ZERODIFF_GPU_DRY_RUN:-0}"
OUT=""
for a in "$@"; do
  case "$a" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d'; exit 0 ;;
    -*) echo "run_gpu.sh: unknown option $a" >&2; exit 2 ;;
    *) [[ -z "$OUT" ]] || { echo "run_gpu.sh: one OUTDIR only" >&2; exit 2; }; OUT="$a" ;;
  esac
done
[[ "$DRY" == 1 ]] || DRY=0
[[ -n "$OUT" ]] || { echo "usage: bash tools/gpu/run_gpu.sh [--dry-run] OUTDIR" >&2; exit 2; }
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
# Results of an earlier run into the same OUTDIR would be mistaken for this one's.
rm -rf "$OUT"/bench "$OUT"/bench_*.log "$OUT"/bench_*.json "$OUT"/summary.txt
( cd "$OUT" && rm -f unpack.log env.log nvidia-smi.log configure.log deps.txt probe.log build.log \
                     ctest_gpu.log ctest_gpu.xml )

BUDGET="${ZERODIFF_GPU_BUDGET_S:-480}"
DEADLINE=$((T0 + BUDGET))
JOBS="${ZERODIFF_JOBS:-$(nproc)}"
if ((DRY)); then
  WORK="$(mktemp -d /tmp/zerodiff-gpu-dry.XXXXXX)"
  BUILD="${ZERODIFF_BUILD_DIR:-$WORK/build}"
  PREFIX="${ZERODIFF_GPU_PREFIX:-$WORK/prefix}"
else
  BUILD="${ZERODIFF_BUILD_DIR:-$ROOT/build-gpu}"
  PREFIX="${ZERODIFF_GPU_PREFIX:-$BUILD/deps-prefix}"
fi
mkdir -p "$BUILD"; BUILD="$(cd "$BUILD" && pwd)"

# ---------------------------------------------------------------- bookkeeping
declare -a SUMMARY=()
FAILED=0
log() { printf '[run_gpu %4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
left() { echo $(( DEADLINE - $(date +%s) )); }
# record PHASE STATUS SECONDS DETAIL
record() {
  SUMMARY+=("$(printf '%-10s %-8s %5ss  %s' "$1" "$2" "$3" "$4")")
  [[ "$2" == ok || "$2" == skipped ]] || FAILED=1
  log "$1: $2 in $3 s${4:+ ($4)}"
}
tail_log() { echo "----- last lines of $1"; tail -n "${2:-40}" "$1"; echo "-----"; }
write_summary() {
  local total=$(( $(date +%s) - T0 ))
  {
    echo "zerodiff GPU run: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname 2>/dev/null || echo '?')"
    echo "mode: $( ((DRY)) && echo "dry-run (unpack + configure, CUDA ${ZERODIFF_GPU_DRY_CUDA:-OFF})" || echo gpu)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+local changes)')"
    echo "build: $BUILD   prefix: $PREFIX"
    echo "result: $( ((FAILED)) && echo FAIL || echo PASS)"
    echo
    printf '%-10s %-8s %6s  %s\n' phase status time detail
    printf '%s\n' "${SUMMARY[@]}"
    printf '%-10s %-8s %5ss  budget %ss\n' total "" "$total" "$BUDGET"
  } > "$OUT/summary.txt"
  echo; cat "$OUT/summary.txt"
}
trap write_summary EXIT
# run_phase_cmd LOG CMD...: runs CMD under the remaining budget, output to LOG; returns its status
# (124 = budget exhausted).
run_limited() {
  local logf="$1"; shift
  local rem; rem=$(left)
  if (( rem < 5 )); then echo "budget exhausted before: $*" >>"$logf"; return 124; fi
  timeout -k 10 "$rem" "$@" >>"$logf" 2>&1
}

log "root $ROOT, out $OUT, build $BUILD, $JOBS jobs, budget ${BUDGET}s$( ((DRY)) && echo ', DRY RUN')"

# ---------------------------------------------------------------- unpack
t=$(date +%s)
unpack_deb() {  # unpack_deb FILE DEST
  if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$1" "$2"; return; fi
  if command -v dpkg >/dev/null; then dpkg -x "$1" "$2"; return; fi
  # No dpkg (RPM-based host): a .deb is an ar archive holding data.tar.{xz,gz,bz2,zst}.
  python3 - "$1" "$2" <<'PY'
import io, subprocess, sys, tarfile
deb, dest = sys.argv[1], sys.argv[2]
with open(deb, "rb") as f:
    assert f.read(8) == b"!<arch>\n", f"{deb}: not an ar archive"
    while True:
        hdr = f.read(60)
        if len(hdr) < 60:
            sys.exit(f"{deb}: no data.tar member")
        name, size = hdr[:16].decode().strip().rstrip("/"), int(hdr[48:58])
        body = f.read(size)
        if size % 2:
            f.read(1)
        if name.startswith("data.tar"):
            break
if name.endswith(".zst"):
    body = subprocess.run(["zstd", "-dc"], input=body, stdout=subprocess.PIPE, check=True).stdout
with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tf:
    kw = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
    tf.extractall(dest, **kw)
PY
}
shopt -s nullglob
debs=("$DEBS"/*.deb)
unpack_ok=1; detail=""
if ((${#debs[@]} == 0)); then
  unpack_ok=0; detail="no .deb in $DEBS: run tools/gpu/prepare_debs.sh on a connected machine"
else
  if [[ "$(uname -m)" != x86_64 ]] && compgen -G "$DEBS/*_amd64.deb" >/dev/null; then
    log "warning: host is $(uname -m) but the .debs are amd64 (see tools/gpu/README.md)"
  fi
  # Integrity after the transfer.
  if [[ -f "$DEBS/MANIFEST.txt" ]] && command -v sha256sum >/dev/null; then
    if ! awk '!/^#/ && NF == 5 { print $4 "  " $5 }' "$DEBS/MANIFEST.txt" |
         (cd "$DEBS" && sha256sum --quiet -c -) >"$OUT/unpack.log" 2>&1; then
      unpack_ok=0; detail="sha256 mismatch against debs/MANIFEST.txt (see unpack.log)"
    fi
  fi
  if ((unpack_ok)); then
    rm -rf "$PREFIX"; mkdir -p "$PREFIX"
    for d in "${debs[@]}"; do
      if ! unpack_deb "$d" "$PREFIX" >>"$OUT/unpack.log" 2>&1; then
        unpack_ok=0; detail="failed to unpack $(basename "$d") (see unpack.log)"; break
      fi
    done
  fi
fi
if ((unpack_ok)); then
  LIBDIR="$(ls -d "$PREFIX"/usr/lib/*-linux-gnu* 2>/dev/null | head -1)"
  LIBDIR="${LIBDIR:-$PREFIX/usr/lib/x86_64-linux-gnu}"
  # pkg-config files hard-code prefix=/usr (the CMake packages are relocatable, see the header).
  for pc in "$LIBDIR"/pkgconfig/*.pc "$PREFIX"/usr/share/pkgconfig/*.pc; do
    sed -i "s|^prefix=/usr\$|prefix=$PREFIX/usr|" "$pc"
  done
  export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PKG_CONFIG_PATH="$LIBDIR/pkgconfig:$PREFIX/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  detail="${#debs[@]} debs -> $PREFIX"
  record unpack ok $(( $(date +%s) - t )) "$detail"
else
  record unpack FAIL $(( $(date +%s) - t )) "$detail"
  exit 1
fi

# ---------------------------------------------------------------- env
t=$(date +%s)
PY=""
for cand in "${ZERODIFF_PYTHON:-}" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" "$ROOT/.venv/bin/python" \
            "$(command -v python3 || true)"; do
  [[ -n "$cand" && -x "$cand" ]] || continue
  if "$cand" -c 'import torch' >/dev/null 2>&1; then PY="$cand"; break; fi
done
{
  echo "## date";   date -u
  echo "## uname";  uname -a
  echo "## libc";   ldd --version 2>&1 | head -1
  echo "## cmake";  cmake --version 2>&1 | head -1
  echo "## gcc";    c++ --version 2>&1 | head -1
  echo "## nvcc";   (command -v nvcc >/dev/null && nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>&1 | tail -2
  echo "## python"; echo "${PY:-<none with torch>}"
  [[ -n "$PY" ]] && "$PY" -c 'import sys, torch, torch.utils
print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
print("cmake_prefix_path", torch.utils.cmake_prefix_path)
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available(): print("device 0", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))' 2>&1
} >"$OUT/env.log" 2>&1
env_status=ok; detail=""
if [[ -z "$PY" ]]; then
  env_status=FAIL; detail="no python with torch (set ZERODIFF_PYTHON)"
else
  TORCH_PREFIX="$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
  detail="python $PY"
fi
# The Debian 12 libraries need glibc >= 2.34 and a GCC >= 12 libstdc++ (GLIBCXX_3.4.30).
glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
if [[ -n "$glibc" && "$(printf '%s\n' 2.34 "$glibc" | sort -V | head -1)" != 2.34 ]]; then
  detail+="; WARNING glibc $glibc < 2.34 (the .debs are Debian 12)"
fi
libstdcxx="$(c++ -print-file-name=libstdc++.so.6 2>/dev/null || true)"
if [[ -f "$libstdcxx" ]] && ! grep -qa GLIBCXX_3.4.30 "$libstdcxx"; then
  detail+="; WARNING $libstdcxx lacks GLIBCXX_3.4.30 (needs GCC >= 12's libstdc++)"
fi
if ((!DRY)); then
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi >"$OUT/nvidia-smi.log" 2>&1 || { env_status=FAIL; detail+="; nvidia-smi failed"; }
  else
    echo "nvidia-smi not found" >"$OUT/nvidia-smi.log"; env_status=FAIL; detail+="; no nvidia-smi"
  fi
fi
record env "$env_status" $(( $(date +%s) - t )) "$detail"
[[ -n "$PY" ]] || exit 1

# ---------------------------------------------------------------- generator
GEN_ARGS=()
if [[ -x "$PREFIX/usr/bin/ninja" ]] && "$PREFIX/usr/bin/ninja" --version >/dev/null 2>&1; then
  GEN_ARGS=(-G Ninja -DCMAKE_MAKE_PROGRAM="$PREFIX/usr/bin/ninja"); GEN=Ninja
elif command -v ninja >/dev/null; then
  GEN_ARGS=(-G Ninja -DCMAKE_MAKE_PROGRAM="$(command -v ninja)"); GEN=Ninja
else
  GEN_ARGS=(-G "Unix Makefiles"); GEN="Unix Makefiles"
fi
# A build dir configured with another generator cannot be reused.
if [[ -f "$BUILD/CMakeCache.txt" ]] && ! grep -qx "CMAKE_GENERATOR:INTERNAL=$GEN" "$BUILD/CMakeCache.txt"; then
  log "build dir $BUILD was made with another generator: clearing it"
  find "$BUILD" -mindepth 1 -maxdepth 1 ! -path "$PREFIX" -exec rm -rf {} +
fi

# ---------------------------------------------------------------- configure
t=$(date +%s)
CMAKE_ARGS=(-S "$ROOT" -B "$BUILD" "${GEN_ARGS[@]}"
  -DCMAKE_BUILD_TYPE=Release
  "-DCMAKE_PREFIX_PATH=$PREFIX/usr;$TORCH_PREFIX"
  -DZERODIFF_PYTHON="$PY"
  -DZERODIFF_BUILD_TESTS=ON)
if [[ -f "$ROOT/benchmarks/CMakeLists.txt" ]]; then
  CMAKE_ARGS+=(-DZERODIFF_BUILD_BENCHMARKS=ON)
else
  log "benchmarks/CMakeLists.txt does not exist yet: ZERODIFF_BUILD_BENCHMARKS stays OFF"
fi
if ((DRY)); then
  # Stand in for a host without these packages: the prefixes /usr, /usr/local and / (on a merged-/usr
  # system /lib/<triplet>/cmake is /usr/lib/<triplet>/cmake) are ignored by find_package and
  # find_path/find_library, so nothing can silently resolve from this machine's own -dev packages.
  CMAKE_ARGS+=("-DCMAKE_IGNORE_PREFIX_PATH=/usr;/usr/local;/")
  if [[ "${ZERODIFF_GPU_DRY_CUDA:-OFF}" == ON ]]; then
    CMAKE_ARGS+=(-DZERODIFF_WITH_CUDA=ON)       # mirrors the host where this machine has an nvcc
  else
    # CUDA OFF with a CUDA torch wheel: Caffe2Config.cmake still enables the CUDA language whenever it
    # finds a toolkit, then (no TORCH_CUDA_ARCH_LIST) try_run()s a GPU probe at CUDA20, which CMake
    # rejects for nvcc. Give it an arch list and C++17 so the CPU-only configure goes through.
    CMAKE_ARGS+=(-DZERODIFF_WITH_CUDA=OFF "-DTORCH_CUDA_ARCH_LIST=8.0;9.0" -DCMAKE_CUDA_STANDARD=17)
  fi
else
  CMAKE_ARGS+=(-DZERODIFF_WITH_CUDA=ON)
  if ! command -v nvcc >/dev/null; then
    for n in "${CUDACXX:-}" /usr/local/cuda/bin/nvcc /usr/local/cuda-13.0/bin/nvcc; do
      [[ -n "$n" && -x "$n" ]] && { CMAKE_ARGS+=(-DCMAKE_CUDA_COMPILER="$n"); break; }
    done
  fi
  [[ -n "${ZERODIFF_CUDA_ARCHITECTURES:-}" ]] && CMAKE_ARGS+=(-DZERODIFF_CUDA_ARCHITECTURES="$ZERODIFF_CUDA_ARCHITECTURES")
fi
# shellcheck disable=SC2206
[[ -n "${ZERODIFF_GPU_CMAKE_ARGS:-}" ]] && CMAKE_ARGS+=(${ZERODIFF_GPU_CMAKE_ARGS})
: >"$OUT/configure.log"
printf '$ cmake' >>"$OUT/configure.log"; printf ' %q' "${CMAKE_ARGS[@]}" >>"$OUT/configure.log"; echo >>"$OUT/configure.log"
if run_limited "$OUT/configure.log" cmake "${CMAKE_ARGS[@]}"; then
  record configure ok $(( $(date +%s) - t )) "$GEN; $(grep -m1 -o 'CUDA kernels [A-Z]*' "$OUT/configure.log")"
else
  rc=$?; tail_log "$OUT/configure.log"
  record configure "$([[ $rc == 124 ]] && echo TIMEOUT || echo FAIL)" $(( $(date +%s) - t )) "see configure.log"
  exit 1
fi

# Where every package came from (must be PREFIX for the Debian ones).
t=$(date +%s)
{
  echo "# *_DIR entries of $BUILD/CMakeCache.txt"
  grep -E '^[A-Za-z0-9_.+-]+_DIR:' "$BUILD/CMakeCache.txt" | sort
} >"$OUT/deps.txt"
outside=()
for p in yaml-cpp spdlog fmt nlohmann_json CLI11 hwy GTest benchmark; do
  line="$(grep -E "^${p}_DIR:" "$BUILD/CMakeCache.txt" || true)"
  [[ -z "$line" ]] && continue            # not (yet) used by the project
  [[ "${line#*=}" == "$PREFIX"/* ]] || outside+=("${line}")
done
if ((DRY)); then
  # The project does not find_package() everything yet: a probe resolves the rest the same way.
  PROBE="$WORK/probe"; mkdir -p "$PROBE/src"
  cat >"$PROBE/src/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.25)
project(zerodiff_deps_probe LANGUAGES CXX)
foreach(p yaml-cpp spdlog fmt nlohmann_json CLI11 hwy GTest benchmark)
  find_package(${p} CONFIG REQUIRED)
  message(STATUS "probe: ${p}_DIR=${${p}_DIR}")
endforeach()
find_path(PROBE_RE2_INC re2/re2.h REQUIRED)
find_library(PROBE_RE2_LIB re2 REQUIRED)
find_path(PROBE_STB_INC stb/stb_image.h REQUIRED)
find_library(PROBE_STB_LIB stb REQUIRED)
find_path(PROBE_WEBP_INC webp/decode.h REQUIRED)
find_library(PROBE_WEBP_LIB webp REQUIRED)
find_library(PROBE_WEBPDEMUX_LIB webpdemux REQUIRED)
find_program(PROBE_NINJA ninja NO_CACHE)
foreach(v RE2_INC RE2_LIB STB_INC STB_LIB WEBP_INC WEBP_LIB WEBPDEMUX_LIB)
  message(STATUS "probe: ${v}=${PROBE_${v}}")
endforeach()
CM
  echo "# dependency probe (find_package / find_path / find_library with the same prefix)" >>"$OUT/deps.txt"
  if cmake -S "$PROBE/src" -B "$PROBE/build" "${GEN_ARGS[@]}" "-DCMAKE_PREFIX_PATH=$PREFIX/usr" \
           "-DCMAKE_IGNORE_PREFIX_PATH=/usr;/usr/local;/" >"$OUT/probe.log" 2>&1; then
    grep -o 'probe: .*' "$OUT/probe.log" >>"$OUT/deps.txt"
    while read -r l; do
      [[ "${l#*=}" == "$PREFIX"/* ]] || outside+=("probe ${l#probe: }")
    done < <(grep -o 'probe: .*' "$OUT/probe.log")
  else
    outside+=("probe configure failed (see probe.log)")
  fi
fi
if ((${#outside[@]})); then
  printf '  not from the prefix: %s\n' "${outside[@]}"
  # On the host a package found elsewhere (e.g. its own /usr) is legitimate, if unexpected.
  if ((DRY)); then record deps FAIL $(( $(date +%s) - t )) "${#outside[@]} not from $PREFIX (deps.txt)"
  else record deps ok $(( $(date +%s) - t )) "warning: ${#outside[@]} not from the prefix (deps.txt)"; fi
else
  record deps ok $(( $(date +%s) - t )) "all *_DIR under the prefix (deps.txt)"
fi

if ((DRY)); then
  log "dry run: stopping after configure (build dir $BUILD, prefix $PREFIX kept for inspection)"
  exit "$FAILED"
fi

# ---------------------------------------------------------------- build
t=$(date +%s)
: >"$OUT/build.log"
if run_limited "$OUT/build.log" cmake --build "$BUILD" -j "$JOBS"; then
  record build ok $(( $(date +%s) - t )) "-j$JOBS"
else
  rc=$?; tail_log "$OUT/build.log" 60
  record build "$([[ $rc == 124 ]] && echo TIMEOUT || echo FAIL)" $(( $(date +%s) - t )) "see build.log"
  exit 1
fi

# ---------------------------------------------------------------- GPU tests
t=$(date +%s)
: >"$OUT/ctest_gpu.log"
rem=$(left); per_test=$(( rem < 300 ? rem : 300 ))
(( per_test < 1 )) && per_test=1
run_limited "$OUT/ctest_gpu.log" ctest --test-dir "$BUILD" -L gpu --output-on-failure --no-tests=error \
    --timeout "$per_test" --output-junit "$OUT/ctest_gpu.xml"
rc=$?
cat "$OUT/ctest_gpu.log" | grep -E 'tests passed|tests failed|Skipped|\*\*\*Failed|Timeout' | tail -n 20
total_t="$(grep -oE 'out of [0-9]+' "$OUT/ctest_gpu.log" | tail -1 | grep -oE '[0-9]+' || echo 0)"
failed_t="$(grep -oE '[0-9]+ tests failed' "$OUT/ctest_gpu.log" | tail -1 | grep -oE '^[0-9]+' || echo '?')"
skipped_t="$(grep -cE '\(Skipped\)$' "$OUT/ctest_gpu.log" || true)"
detail="$(( total_t - ${failed_t/\?/0} - skipped_t )) passed, $failed_t failed, $skipped_t skipped of $total_t"
if (( rc == 0 )) && (( total_t > 0 && skipped_t == total_t )); then
  record ctest_gpu FAIL $(( $(date +%s) - t )) "$detail: every GPU test skipped (no usable CUDA device?)"
elif (( rc == 0 )); then
  record ctest_gpu ok $(( $(date +%s) - t )) "$detail"
else
  record ctest_gpu "$([[ $rc == 124 ]] && echo TIMEOUT || echo FAIL)" $(( $(date +%s) - t )) "$detail (ctest rc $rc)"
fi

# ---------------------------------------------------------------- benchmarks
t=$(date +%s)
benches=()
for b in "$BUILD"/bin/bench_*; do [[ -f "$b" && -x "$b" ]] && benches+=("$b"); done
if ((${#benches[@]} == 0)); then
  record bench ok $(( $(date +%s) - t )) "0 binaries (none built yet)"
else
  bpass=0; bfail=0; bnames=()
  for b in "${benches[@]}"; do
    name="$(basename "$b")"; blog="$OUT/$name.log"; bt=$(date +%s)
    rem=$(left); lim="${ZERODIFF_BENCH_TIMEOUT_S:-120}"; (( rem < lim )) && lim=$rem
    args=()
    # Google Benchmark binaries also write machine-readable results.
    grep -q benchmark_out_format "$b" 2>/dev/null &&
      args+=("--benchmark_out=$OUT/$name.json" --benchmark_out_format=json)
    # shellcheck disable=SC2206
    [[ -n "${ZERODIFF_BENCH_ARGS:-}" ]] && args+=(${ZERODIFF_BENCH_ARGS})
    mkdir -p "$OUT/bench/$name"
    if (( lim < 5 )); then
      echo "budget exhausted" >"$blog"; brc=124
    else
      ( cd "$OUT/bench/$name" && ZERODIFF_BENCH_OUT_DIR="$OUT/bench/$name" \
          timeout -k 5 "$lim" "$b" "${args[@]}" ) >"$blog" 2>&1
      brc=$?
    fi
    if (( brc == 0 )); then bpass=$((bpass + 1)); s=ok
    else bfail=$((bfail + 1)); s="FAIL rc $brc"; tail_log "$blog" 20; fi
    bnames+=("$name: $s, $(( $(date +%s) - bt ))s")
    log "bench $name: $s in $(( $(date +%s) - bt )) s"
  done
  rmdir "$OUT"/bench/* "$OUT/bench" 2>/dev/null || true   # keep only folders a benchmark wrote to
  record bench "$( ((bfail)) && echo FAIL || echo ok)" $(( $(date +%s) - t )) \
         "$bpass passed, $bfail failed of ${#benches[@]} [$(IFS=';'; echo "${bnames[*]}")]"
fi

exit "$FAILED"
