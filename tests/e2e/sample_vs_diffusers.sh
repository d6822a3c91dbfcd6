#!/usr/bin/env bash
# e2e: zerodiff-sample writes a PNG from tests/data/pipeline/tiny_sd; diffusers' StableDiffusionPipeline, run on
# the same folder with the same prompt, negative prompt, sampler and seed (case "euler" of cases.json, first
# prompt), must give the same 8-bit image within one level. Exit 77 (ctest SKIP) without a .venv with diffusers.
#
#   sample_vs_diffusers.sh ZERODIFF_SAMPLE SOURCE_DIR WORK_DIR
set -euo pipefail
sample="$1" root="$2" work="$3"
python="$root/.venv/bin/python"
mkdir -p "$work"
out="$work/euler_seed1.png"
rm -f "$out"
cases="$root/tests/data/pipeline/cases.json"
prompt=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompts"][0])' "$cases")
negative=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["negative_prompts"][0])' "$cases")
"$sample" --model "$root/tests/data/pipeline/tiny_sd" --prompt "$prompt" --negative-prompt "$negative" \
  --scheduler euler --steps 10 --guidance 7.5 --seed 1 --device cpu --out "$out"
test -s "$out"
if [[ ! -x "$python" ]] || ! "$python" -c 'import diffusers, transformers, PIL' >/dev/null 2>&1; then
  echo "SKIPPED: no .venv with diffusers; the PNG was written but not compared"
  exit 77
fi
TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONWARNINGS=ignore \
  "$python" "$root/tools/fixtures/check_pipeline_load.py" "$root/tests/data/pipeline/tiny_sd" --png "$out" --case euler
