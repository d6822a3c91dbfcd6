#!/usr/bin/env bash
# fault: a rank killed (SIGKILL) while writing its part of a sharded checkpoint. The other rank must stop with a
# clear error, the previous checkpoint must stay complete, and a resume of both ranks must end byte-identical to
# an uninterrupted 2-rank run.
#
# Two zerodiff-train processes (zero2: every rank writes its optimizer shard and generator state), started as
# torchrun starts them. A base run writes checkpoint-2; the resumed run to step 4 has ZERODIFF_FAULT set on rank 1
# only, at its first file write (its staged shard of checkpoint-4) or at its n-th.
#
#   rank_killed_in_checkpoint.sh ZERODIFF_TRAIN SOURCE_DIR WORK_DIR
set -euo pipefail
train="$1" root="$2" work="$3"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rm -rf "$work"
mkdir -p "$work"
cd "$root"
# shellcheck source=common.sh
source "$here/common.sh"

# run2 NAME OUT STEPS RANK1_FAULT [extra args...]: both ranks; sets rc0 and rc1; logs in $work/NAME.rank<r>.log
run2() {
  local name="$1" out="$2" steps="$3" fault="$4"
  shift 4
  local port pids=()
  port="$(free_port)"
  for r in 0 1; do
    local f=""
    [[ $r -eq 1 ]] && f="$fault"
    # shellcheck disable=SC2046
    ZERODIFF_FAULT="$f" RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$train" $(run_args "$out" "$steps" trainer.strategy=zero2 trainer.dist_timeout_s=30) "$@" \
      >"$work/$name.rank$r.log" 2>&1 &
    pids+=($!)
  done
  set +e
  wait "${pids[0]}"; rc0=$?
  wait "${pids[1]}"; rc1=$?
  set -e
}

run2 base "$work/base" 2 ""
[[ $rc0 -eq 0 && $rc1 -eq 0 ]] || { echo "FAIL: base run"; cat "$work"/base.rank*.log; exit 1; }
cp -a "$work/base" "$work/ref"
run2 ref "$work/ref" 4 "" --resume latest
[[ $rc0 -eq 0 && $rc1 -eq 0 ]] || { echo "FAIL: reference run"; cat "$work"/ref.rank*.log; exit 1; }
ref_hash="$(export_hash "$work/ref")"

kills=0
for n in 1 2; do  # rank 1 writes two files per checkpoint: its optimizer shard and its generator states
  run="$work/run-$n"
  cp -a "$work/base" "$run"
  run2 "killed-$n" "$run" 4 "atomic_file.mid_write@$n" --resume latest
  [[ $rc1 -eq 137 ]] || { echo "FAIL: @$n: rank 1 exit $rc1, expected 137 (SIGKILL)"; cat "$work/killed-$n.rank1.log"; exit 1; }
  [[ $rc0 -ne 0 && $rc0 -lt 128 ]] || { echo "FAIL: @$n: rank 0 exit $rc0, expected a clean error exit"; cat "$work/killed-$n.rank0.log"; exit 1; }
  grep -qF "a peer process probably died or stopped responding" "$work/killed-$n.rank0.log" \
    || { echo "FAIL: @$n: rank 0's error does not say what happened"; tail -3 "$work/killed-$n.rank0.log"; exit 1; }
  [[ ! -e "$run/checkpoints/checkpoint-4" ]] || { echo "FAIL: @$n: a partial checkpoint-4 is visible"; exit 1; }
  kills=$((kills + 1))
  run2 "resume-$n" "$run" 4 "" --resume latest
  [[ $rc0 -eq 0 && $rc1 -eq 0 ]] || { echo "FAIL: @$n: resume"; cat "$work"/resume-$n.rank*.log; exit 1; }
  grep -q "resumed from .*checkpoint-2 at step 2" "$work/resume-$n.rank0.log" \
    || { echo "FAIL: @$n: resume did not start from checkpoint-2"; cat "$work/resume-$n.rank0.log"; exit 1; }
  [[ "$(export_hash "$run")" == "$ref_hash" ]] || { echo "FAIL: @$n: export differs from the uninterrupted run"; exit 1; }
done
echo "PASS: rank 1 killed at $kills points of its checkpoint-4 writes; rank 0 stopped clearly; checkpoint-2 resumed to the reference weights ($ref_hash)"
