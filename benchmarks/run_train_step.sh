#!/usr/bin/env bash
# One Stable Diffusion training step, zerodiff (bench_train_step) vs diffusers + torch (python/train_step_peer.py),
# run alternately in the same session: A B A B ..., $ROUNDS rounds per configuration, so that drift in the machine's
# load hits both sides alike. Prints a Markdown table: median samples/s of each side over the rounds (every round's
# figure in brackets), the ratio zerodiff / python, and each side's peak RSS (median over the rounds).
#
#   bash benchmarks/run_train_step.sh            # about 11 minutes on 2 cores
#
# Environment:
#   CONFIGS     "model:mode:batch:steps ..." (default "tiny:pre:8:8 tiny:enc:8:8 100m:pre:2:6 100m:enc:2:5
#               sd15:pre:1:4"); model tiny | 100m | sd15, mode pre (precomputed latents and text embeddings) |
#               enc (VAE and text encoder in the step); latents 32x32 (LATENT)
#   ROUNDS (3), WARMUP (2 untimed steps per run), LATENT (32), THREADS (0 = each side's default: all cores)
#   DEVICE (cpu | cuda; on cuda the memory columns are the CUDA caching allocator's peak of allocated bytes),
#   PRECISION (fp32 | bf16-mixed); the GPU row of issue #12: CONFIGS="sd15:pre:8:10" LATENT=64 DEVICE=cuda
#               PRECISION=bf16-mixed
#   ZD_ARGS     extra bench_train_step arguments (e.g. "--optimizer hybrid_adam --attention sdpa")
#   PY_ARGS     extra train_step_peer.py arguments (e.g. "--optimizer-impl fused")
#   ZERODIFF_BUILD_DIR (build/; bench_train_step is built there with tools/build.sh when missing),
#   ZERODIFF_PYTHON (.venv/bin/python), BENCH_LOGS (out/bench/logs: every run's output)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="${ZERODIFF_BUILD_DIR:-$ROOT/build}"
BIN="$BUILD/bin/bench_train_step"
PY="${ZERODIFF_PYTHON:-$ROOT/.venv/bin/python}"
PEER="$ROOT/benchmarks/python/train_step_peer.py"
CONFIGS="${CONFIGS:-tiny:pre:8:8 tiny:enc:8:8 100m:pre:2:6 100m:enc:2:5 sd15:pre:1:4}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-2}"
LATENT="${LATENT:-32}"
THREADS="${THREADS:-0}"
DEVICE="${DEVICE:-cpu}"
PRECISION="${PRECISION:-fp32}"
ZD_ARGS="${ZD_ARGS:-}"
PY_ARGS="${PY_ARGS:-}"
LOGS="${BENCH_LOGS:-$ROOT/out/bench/logs}"

# shellcheck source=benchmarks/lib.sh
source "$ROOT/benchmarks/lib.sh"

if [[ ! -x "$BIN" ]]; then
  log "$BIN missing: building (tools/build.sh, benchmarks on)"
  ZERODIFF_BUILD_DIR="$BUILD" bash "$ROOT/tools/build.sh" -DZERODIFF_BUILD_BENCHMARKS=ON >&2
fi
"$PY" -c 'import diffusers, transformers' 2>/dev/null ||
  { echo "error: $PY cannot import diffusers and transformers (pinned in requirements.txt; run bash tools/setup.sh)" >&2; exit 1; }
mkdir -p "$LOGS"

# run_one SIDE MODEL MODE BATCH STEPS ROUND -> prints "samples_per_s peak_rss_mib"
run_one() {
  local side=$1 model=$2 mode=$3 batch=$4 steps=$5 round=$6 out line
  local args=(--model "$model" --mode "$mode" --batch "$batch" --steps "$steps" --warmup "$WARMUP" --latent "$LATENT"
              --threads "$THREADS" --device "$DEVICE" --precision "$PRECISION")
  if [[ $side == zerodiff ]]; then
    # shellcheck disable=SC2086
    out="$("$BIN" "${args[@]}" $ZD_ARGS 2>&1)" || { echo "$out" >&2; return 1; }
  else
    # shellcheck disable=SC2086
    out="$("$PY" "$PEER" "${args[@]}" $PY_ARGS 2>&1)" || { echo "$out" >&2; return 1; }
  fi
  printf '%s\n' "$out" >"$LOGS/train-step-${side}-${model}-${mode}-b${batch}-round${round}.log"
  line="$(grep -E "^(zerodiff|python) train step:" <<<"$out")" || { echo "$out" >&2; return 1; }
  log "$line"
  if [[ $DEVICE == cuda ]]; then
    sed -n 's/.*: \([0-9.]*\) samples\/s .* peak CUDA allocated \([0-9.]*\) MiB.*/\1 \2/p' <<<"$line"
  else
    sed -n 's/.*: \([0-9.]*\) samples\/s .* peak RSS \([0-9.]*\) MiB.*/\1 \2/p' <<<"$line"
  fi
}

cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
start=$(date +%s)
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
rows=()
for c in $CONFIGS; do
  IFS=: read -r model mode batch steps <<<"$c"
  zd=(); py=(); zd_rss=(); py_rss=()
  for ((r = 1; r <= ROUNDS; r++)); do
    for side in zerodiff python; do
      res="$(run_one "$side" "$model" "$mode" "$batch" "$steps" "$r")" || { log "$side $c round $r failed"; exit 1; }
      read -r s m <<<"$res"
      [[ -n ${s:-} && -n ${m:-} ]] || { log "$side $c round $r: no figures parsed (see $LOGS)"; exit 1; }
      if [[ $side == zerodiff ]]; then zd+=("$s"); zd_rss+=("$m"); else py+=("$s"); py_rss+=("$m"); fi
    done
  done
  zr="$(printf '%s\n' "${zd_rss[@]}" | median 1)"; pr="$(printf '%s\n' "${py_rss[@]}" | median 1)"
  rows+=("| $model | $mode | $batch x $steps | $(cell 3 "${zd[@]}") | $(cell 3 "${py[@]}") | **$(ratio 3 "${zd[*]}" "${py[*]}")** | $zr | $pr | $(awk -v a="$zr" -v b="$pr" 'BEGIN { printf "%.2f", a / b }') |")
done

echo
echo "Training step, samples/s: median of $ROUNDS rounds (each round's figure in brackets), latents ${LATENT}x${LATENT}, device $DEVICE, precision $PRECISION; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "Machine: $(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) cores, $cpu; load average $load_start at start, $(cut -d' ' -f1-3 /proc/loadavg) at end; run took $(( $(date +%s) - start )) s"
echo "zerodiff: $BIN $ZD_ARGS; python: $PEER $PY_ARGS ($("$PY" -c 'import torch, diffusers, transformers; print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}")'))"
echo
mem="peak RSS"; [[ $DEVICE == cuda ]] && mem="peak CUDA allocated"
echo "| model | mode | batch x timed steps | zerodiff samples/s | python samples/s | zerodiff / python | zerodiff $mem MiB | python $mem MiB | memory ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
