#!/usr/bin/env bash
# The README demo command: set up, build, and run the main job — a text-to-image latent diffusion model
# trained from scratch on real images (the Noto Color Emoji set, captions from Unicode names):
#   1. build the dataset            out/data/emoji-32/ (1,361 images + metadata.jsonl)
#   2. train the VAE                configs/demo/emoji_vae.yaml -> out/emoji/vae/final
#   3. train the text-to-image LDM  configs/demo/emoji_ldm.yaml -> out/emoji/ldm/final (diffusers folder)
#   4. sample grid                  out/emoji/ldm/samples/final.png (8 prompts)
#   5. fine-tune it on the animals   configs/demo/emoji_animals.yaml -> out/emoji/animals/final
#      (the 118 animal emoji, out/data/emoji-animals-32), its grid out/emoji/animals/samples/final.png
# Re-running resumes each stage from its latest checkpoint (finished stages are skipped).
#
#   bash tools/demo.sh [extra key.path=value overrides for both stages]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${ZERODIFF_BUILD_DIR:-$ROOT/build}"
cd "$ROOT"

bash tools/setup.sh
bash tools/build.sh
TRAIN="$BUILD/bin/zerodiff-train"
"$TRAIN" --version
start=$(date +%s)

if [[ ! -f out/data/emoji-32/metadata.jsonl ]]; then
  echo "[demo] building the emoji dataset (out/data/emoji-32)"
  .venv/bin/python tools/data/make_emoji_dataset.py --out out/data/emoji-32 --resolution 32
fi
if [[ ! -f out/data/emoji-animals-32/metadata.jsonl ]]; then
  echo "[demo] building the animal subset (out/data/emoji-animals-32)"
  .venv/bin/python tools/data/make_emoji_dataset.py --out out/data/emoji-animals-32 --resolution 32 --subset animals
fi

stage() {  # stage NAME CONFIG FINAL_DIR
  if [[ -f "$3/config.json" || -f "$3/model_index.json" ]]; then
    echo "[demo] $1: already trained ($3)"
    return
  fi
  echo "[demo] $1: $2"
  "$TRAIN" "$2" --resume latest "${@:4}"
}
stage "VAE" configs/demo/emoji_vae.yaml out/emoji/vae/final "$@"
stage "text-to-image LDM" configs/demo/emoji_ldm.yaml out/emoji/ldm/final "$@"
stage "fine-tune on the animals" configs/demo/emoji_animals.yaml out/emoji/animals/final "$@"

echo
echo "[demo] done in $(( $(date +%s) - start )) s after the build"
echo "[demo] sample grid:     $ROOT/out/emoji/ldm/samples/final.png"
echo "[demo] diffusers folder: $ROOT/out/emoji/ldm/final (StableDiffusionPipeline.from_pretrained loads it)"
echo "[demo] metrics:         $ROOT/out/emoji/ldm/metrics.jsonl"
echo "[demo] fine-tuned on the animals: $ROOT/out/emoji/animals/final, grid $ROOT/out/emoji/animals/samples/final.png"
