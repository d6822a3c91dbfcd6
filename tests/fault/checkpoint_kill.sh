#!/usr/bin/env bash
# fault: kill -9 during a checkpoint write leaves the previous checkpoint intact and loadable, and a resume picks
# the newest complete one and ends exactly where an uninterrupted run ends.
#
# A base run of zerodiff-train (shapes VAE, 2 steps, checkpoint every 2) is copied, then resumed to step 4 with
# ZERODIFF_FAULT=<point>@<n> (src/core/FaultInjection.cpp): the process SIGKILLs itself in the n-th file it
# writes (part of the file written) or at the n-th folder rename, for n = 1, 2, ... until a run gets through — a sweep over
# every write of the run: checkpoint-4's files, trainer_state.json, the export folder. After each kill, a plain
# `--resume latest` must succeed and export weights byte-identical to those of the uninterrupted reference run.
#
#   checkpoint_kill.sh ZERODIFF_TRAIN SOURCE_DIR WORK_DIR
set -euo pipefail
train="$1" root="$2" work="$3"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rm -rf "$work"
mkdir -p "$work"
cd "$root"
# shellcheck source=common.sh
source "$here/common.sh"
make_base_and_reference "$work"

kills=0
for point in atomic_file.mid_write atomic_dir.before_rename; do
  completed=0
  for n in $(seq 1 40); do
    run="$work/run-$point-$n"
    cp -a "$work/base" "$run"
    set +e
    # shellcheck disable=SC2046
    ZERODIFF_FAULT="$point@$n" "$train" $(run_args "$run" 4) --resume latest >"$run.killed.log" 2>&1
    rc=$?
    set -e
    if [[ $rc -eq 0 ]]; then
      [[ $n -gt 1 ]] || { echo "FAIL: $point was never reached"; exit 1; }
      echo "$point: the run reaches it $((n - 1)) times; each kill recovered"
      rm -rf "$run"
      completed=1
      break
    fi
    [[ $rc -eq 137 ]] || { echo "FAIL: $point@$n: exit $rc, expected 137 (SIGKILL)"; cat "$run.killed.log"; exit 1; }
    kills=$((kills + 1))
    # The previous checkpoint is intact and every listed checkpoint is complete: resume, and end like the reference.
    # shellcheck disable=SC2046
    "$train" $(run_args "$run" 4) --resume latest >"$run.resume.log" 2>&1 \
      || { echo "FAIL: resume after $point@$n"; ls -laR "$run"; cat "$run.resume.log"; exit 1; }
    grep -qE "resumed from .*checkpoint-(2|4) at step (2|4)" "$run.resume.log" \
      || { echo "FAIL: $point@$n: resume did not start from a checkpoint"; cat "$run.resume.log"; exit 1; }
    grep -q "trained 4 steps" "$run.resume.log" || { echo "FAIL: $point@$n: no step 4"; cat "$run.resume.log"; exit 1; }
    [[ "$(export_hash "$run")" == "$ref_hash" ]] \
      || { echo "FAIL: $point@$n: the export after the kill and resume differs from the uninterrupted run"; exit 1; }
    test -s "$run/checkpoints/checkpoint-2/trainer_state.json" \
      || { echo "FAIL: $point@$n: checkpoint-2 damaged"; ls -la "$run/checkpoints/checkpoint-2"; exit 1; }
    rm -rf "$run"
  done
  [[ $completed -eq 1 ]] || { echo "FAIL: $point is reached more than 40 times; the sweep did not cover the run"; exit 1; }
done
[[ $kills -ge 4 ]] || { echo "FAIL: only $kills kill points"; exit 1; }
echo "PASS: $kills kill -9 points during checkpoint and export writes; every resume exported the reference weights ($ref_hash)"
