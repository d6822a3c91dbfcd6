#!/usr/bin/env bash
# e2e (label dist): zerodiff-train under the .venv's torchrun, 2 processes, strategy zero2 (then zero3), Gloo:
# trains 4 steps of the shapes VAE with checkpoints, resumes to 6 from the sharded checkpoint, and checks the
# checkpoint holds every rank's files and the export exists. A resume with another world size must fail clearly.
# Exit 77 (ctest SKIP) without .venv/bin/torchrun.
#
#   torchrun_zero2.sh ZERODIFF_TRAIN SOURCE_DIR WORK_DIR
set -euo pipefail
train="$1" root="$2" work="$3"
torchrun="$root/.venv/bin/torchrun"
[[ -x "$torchrun" ]] || { echo "SKIPPED: no $torchrun (run tools/setup.sh)"; exit 77; }
rm -rf "$work"
mkdir -p "$work"
cd "$root"
common=(configs/demo/shapes_vae.yaml trainer.strategy=zero2 trainer.accelerator=cpu trainer.checkpoint_every=2
        trainer.log_every=1 trainer.keep_last=0 "trainer.output_dir=$work/run" data.batch_size=4 data.synthetic_size=64)
port=$((29600 + RANDOM % 2000))
export OMP_NUM_THREADS=1
"$torchrun" --nproc-per-node 2 --master-port "$port" --no-python "$train" "${common[@]}" trainer.max_steps=4 \
  2>&1 | tee "$work/first.log"
grep -q "strategy zero2 on 2 processes" "$work/first.log"
ckpt="$work/run/checkpoints/checkpoint-4"
for f in model.safetensors optimizer.rank-0-of-2.safetensors optimizer.rank-1-of-2.safetensors \
         rng.rank-0-of-2.safetensors rng.rank-1-of-2.safetensors trainer_state.json; do
  test -s "$ckpt/$f" || { echo "FAIL: $ckpt/$f missing"; exit 1; }
done
"$torchrun" --nproc-per-node 2 --master-port "$port" --no-python "$train" "${common[@]}" trainer.max_steps=6 \
  --resume latest 2>&1 | tee "$work/resume.log"
grep -q "resumed from .*checkpoint-4 at step 4" "$work/resume.log"
grep -q "trained 6 steps" "$work/resume.log"
test -s "$work/run/final/diffusion_pytorch_model.safetensors" -o -s "$work/run/final/vae/diffusion_pytorch_model.safetensors" \
  || { echo "FAIL: no export under $work/run/final"; ls -R "$work/run/final"; exit 1; }
# Another world size cannot continue a sharded checkpoint: a clear error, no hang.
if "$torchrun" --nproc-per-node 3 --master-port "$port" --no-python "$train" "${common[@]}" trainer.max_steps=8 \
     --resume latest >"$work/wrong.log" 2>&1; then
  echo "FAIL: resuming 2-rank shards on 3 ranks succeeded"; exit 1
fi
grep -q "written by 2 processes (per-rank files: generator states, ZeRO optimizer shards); this run has 3" "$work/wrong.log" \
  || { cat "$work/wrong.log"; exit 1; }
# zero3 (the VAE trainer has no units: the whole model is one unit around each step) trains and exports.
"$torchrun" --nproc-per-node 2 --master-port "$port" --no-python "$train" configs/demo/shapes_vae.yaml \
  trainer.strategy=zero3 trainer.accelerator=cpu trainer.max_steps=3 trainer.log_every=1 \
  "trainer.output_dir=$work/run3" data.batch_size=4 data.synthetic_size=64 2>&1 | tee "$work/zero3.log"
grep -q "strategy zero3 on 2 processes" "$work/zero3.log"
grep -q "trained 3 steps" "$work/zero3.log"
test -s "$work/run3/final/diffusion_pytorch_model.safetensors" || { echo "FAIL: no zero3 export"; exit 1; }
echo "PASS: torchrun zero2 train, sharded checkpoint, resume; zero3 train and export"
