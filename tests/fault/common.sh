# Shared by the fault scripts (sourced): a small zerodiff-train run of the shapes VAE on the CPU.
#   run_args OUTPUT_DIR MAX_STEPS [extra key=value ...]   the arguments of such a run
#   export_hash RUN_DIR                                    one hash over every file of RUN_DIR/final
#   free_port                                              a loopback port free now (the kernel's choice)
#   make_base_and_reference WORK                           WORK/base: 2 steps, checkpoint-2; WORK/ref: base resumed
#                                                           to 4 steps, uninterrupted; sets ref_hash
export OMP_NUM_THREADS=1
run_args() {
  local out="$1" steps="$2"
  shift 2
  echo configs/demo/shapes_vae.yaml trainer.accelerator=cpu trainer.checkpoint_every=2 trainer.log_every=1 \
       trainer.keep_last=0 data.batch_size=4 data.synthetic_size=64 "trainer.output_dir=$out" \
       "trainer.max_steps=$steps" "$@"
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export_hash() { (cd "$1/final" && find . -type f | sort | xargs sha256sum | sha256sum | cut -c1-16); }
make_base_and_reference() {
  local work="$1"
  # shellcheck disable=SC2046
  "$train" $(run_args "$work/base" 2) >"$work/base.log" 2>&1 || { cat "$work/base.log"; exit 1; }
  cp -a "$work/base" "$work/ref"
  # shellcheck disable=SC2046
  "$train" $(run_args "$work/ref" 4) --resume latest >"$work/ref.log" 2>&1 || { cat "$work/ref.log"; exit 1; }
  ref_hash="$(export_hash "$work/ref")"
}
