#!/usr/bin/env bash
# Data loader throughput, zerodiff vs Python (Pillow + torchvision through torch.utils.data.DataLoader), on
# the same image folders in the same run. Prints a Markdown table: median images/s of each side over the
# rounds, every round's figure, and the ratio zerodiff / python.
#
#   bash benchmarks/run_data_loader.sh            # about 2.5 minutes on 2 cores (folders made once: +30 s)
#
# For each resolution R in $RESOLUTIONS the folder out/bench/emoji-R (Noto Color Emoji at R x R, ~1,360
# PNGs, made by tools/data/make_emoji_dataset.py when missing) is loaded at R px: decode + random crop + flip +
# normalise + collate, no resize (the images already have the training size, as in a pre-processed set).
# For each (R, workers) the loaders run alternately, A B C A B C ..., $ROUNDS rounds, so that drift in the
# machine's load hits every side alike:
#   zerodiff         bench_data_loader as a training run uses it
#   zerodiff, 1 thr  the same under OMP_NUM_THREADS=1: ATen single-threaded inside the workers, as torch's
#                    worker processes are (torch.set_num_threads(1)); with LibTorch's OpenMP backend the
#                    loader's c10::ParallelGuard does not do this (see docs/performance.md). SERIAL=0 skips it.
#   python           benchmarks/python/data_loader_peer.py (Pillow + torchvision, torch DataLoader)
#
# Environment: ZERODIFF_BUILD_DIR (build/; bench_data_loader is built there with tools/build.sh when
# missing), ZERODIFF_PYTHON (.venv/bin/python), RESOLUTIONS ("256 512"), WORKERS ("1 2"), ROUNDS (3),
# BATCH (16), BATCHES (timed batches; default 64 at 256 px, scaled by (256/R)^2, at least 8), WARMUP (4),
# MAX_SECONDS (8: a run stops timing after the batch that passes it, so a slow configuration cannot stretch
# the whole run; its figure stays images over measured seconds),
# BENCH_DATA (out/bench: where the folders are made), BENCH_LOGS (out/bench/logs: every run's output).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="${ZERODIFF_BUILD_DIR:-$ROOT/build}"
BIN="$BUILD/bin/bench_data_loader"
PY="${ZERODIFF_PYTHON:-$ROOT/.venv/bin/python}"
PEER="$ROOT/benchmarks/python/data_loader_peer.py"
RESOLUTIONS="${RESOLUTIONS:-256 512}"
WORKERS="${WORKERS:-1 2}"
ROUNDS="${ROUNDS:-3}"
BATCH="${BATCH:-16}"
WARMUP="${WARMUP:-4}"
SERIAL="${SERIAL:-1}"
MAX_SECONDS="${MAX_SECONDS:-8}"
DATA="${BENCH_DATA:-$ROOT/out/bench}"
LOGS="${BENCH_LOGS:-$DATA/logs}"

# shellcheck source=benchmarks/lib.sh
source "$ROOT/benchmarks/lib.sh"

if [[ ! -x "$BIN" ]]; then
  log "$BIN missing: building (tools/build.sh, benchmarks on)"
  ZERODIFF_BUILD_DIR="$BUILD" bash "$ROOT/tools/build.sh" -DZERODIFF_BUILD_BENCHMARKS=ON >&2
fi
"$PY" -c 'import torchvision' 2>/dev/null ||
  { echo "error: $PY cannot import torchvision (pinned in requirements.txt; run bash tools/setup.sh)" >&2; exit 1; }
mkdir -p "$DATA" "$LOGS"
for res in $RESOLUTIONS; do
  dir="$DATA/emoji-$res"
  if [[ ! -f "$dir/metadata.jsonl" ]]; then
    log "making $dir (Noto Color Emoji at ${res}x${res})"
    "$PY" "$ROOT/tools/data/make_emoji_dataset.py" --out "$dir" --resolution "$res" >&2
  fi
done

# figure LINE: the images/s figure of a "...: N images/s (...)" line.
figure() { sed -n 's/.*: \([0-9.]*\) images\/s .*/\1/p' <<<"$1"; }
run_one() {  # run_one SIDE RES WORKERS BATCHES ROUND -> prints the figure; SIDE: zerodiff, zerodiff1, python
  local side=$1 res=$2 k=$3 n=$4 round=$5 out line
  local args=(--data "$DATA/emoji-$res" --resolution "$res" --workers "$k" --batch "$BATCH" --batches "$n" --warmup "$WARMUP"
              --max-seconds "$MAX_SECONDS")
  case $side in
    zerodiff) out="$("$BIN" "${args[@]}" 2>&1)" || { echo "$out" >&2; return 1; } ;;
    zerodiff1) out="$(OMP_NUM_THREADS=1 "$BIN" "${args[@]}" 2>&1)" || { echo "$out" >&2; return 1; } ;;
    python) out="$("$PY" "$PEER" "${args[@]}" 2>&1)" || { echo "$out" >&2; return 1; } ;;
  esac
  printf '%s\n' "$out" >"$LOGS/${side}-${res}px-${k}w-round${round}.log"
  line="$(grep -E "^(zerodiff|python) loader:" <<<"$out")" || { echo "$out" >&2; return 1; }
  log "$side: $line"
  figure "$line"
}

model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
start=$(date +%s)
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
rows=()
for res in $RESOLUTIONS; do
  n="${BATCHES:-$(( 64 * 256 * 256 / (res * res) ))}"
  (( n < 8 )) && n=8
  for k in $WORKERS; do
    zd=(); z1=(); py=()
    for ((r = 1; r <= ROUNDS; r++)); do
      zd+=("$(run_one zerodiff "$res" "$k" "$n" "$r")")
      ((SERIAL)) && z1+=("$(run_one zerodiff1 "$res" "$k" "$n" "$r")")
      py+=("$(run_one python "$res" "$k" "$n" "$r")")
    done
    row="| $res px | $k | $BATCH x $n | $(cell 1 "${zd[@]}") |"
    ((SERIAL)) && row+=" $(cell 1 "${z1[@]}") |"
    row+=" $(cell 1 "${py[@]}") | **$(ratio 1 "${zd[*]}" "${py[*]}")** |"
    ((SERIAL)) && row+=" **$(ratio 1 "${z1[*]}" "${py[*]}")** |"
    rows+=("$row")
  done
done

echo
echo "Data loader throughput, images/s: median of $ROUNDS rounds (each round's figure in brackets); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "Machine: $(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) cores, $model; load average $load_start at start, $(cut -d' ' -f1-3 /proc/loadavg) at end; run took $(( $(date +%s) - start )) s"
echo "zerodiff: $BIN; python: $("$PY" -c 'import torch, torchvision, PIL; print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, Pillow {PIL.__version__}")')"
echo
if ((SERIAL)); then
  echo "| resolution | workers | batch x timed batches | zerodiff | zerodiff, OMP_NUM_THREADS=1 | python | zerodiff / python | zerodiff 1 thr / python |"
  echo "|---|---|---|---|---|---|---|---|"
else
  echo "| resolution | workers | batch x timed batches | zerodiff | python | zerodiff / python |"
  echo "|---|---|---|---|---|---|"
fi
printf '%s\n' "${rows[@]}"
