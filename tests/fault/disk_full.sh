#!/usr/bin/env bash
# fault: a full disk during a checkpoint write fails with a clear error and loses nothing.
#
# The disk is a file-size limit (RLIMIT_FSIZE through `ulimit -f`, SIGXFSZ ignored, so a write past it fails with
# EFBIG as a full disk fails with ENOSPC; the same write path handles both). A base run writes checkpoint-2; the
# resumed run under a 32 KiB limit must stop at checkpoint-4 naming the file and the cause, leave checkpoint-2 and
# no partial checkpoint-4; a resume without the limit then ends byte-identical to an uninterrupted run.
#
#   disk_full.sh ZERODIFF_TRAIN SOURCE_DIR WORK_DIR
set -euo pipefail
train="$1" root="$2" work="$3"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rm -rf "$work"
mkdir -p "$work"
cd "$root"
# shellcheck source=common.sh
source "$here/common.sh"
make_base_and_reference "$work"

run="$work/run"
cp -a "$work/base" "$run"
set +e
# shellcheck disable=SC2046
# The log goes through a pipe to a writer outside the limit, so the limit only hits the run's own files.
( trap '' XFSZ; ulimit -f 32; exec "$train" $(run_args "$run" 4) --resume latest ) 2>&1 | cat >"$work/full.log"
rc=${PIPESTATUS[0]}
set -e
cat "$work/full.log"
[[ $rc -ne 0 && $rc -lt 128 ]] || { echo "FAIL: exit $rc, expected a clean error exit"; exit 1; }
grep -qE "zerodiff-train: error: .*/checkpoint-4/.*write failed: File too large \(previous file left untouched\)" \
  "$work/full.log" || { echo "FAIL: the error does not name the file and the cause"; exit 1; }
[[ ! -e "$run/checkpoints/checkpoint-4" ]] || { echo "FAIL: a partial checkpoint-4 is visible"; exit 1; }
leftovers="$(find "$run" -name '.*' -o -name '*.tmp.*')"
[[ -z "$leftovers" ]] || { echo "FAIL: debris left: $leftovers"; exit 1; }
# shellcheck disable=SC2046
"$train" $(run_args "$run" 4) --resume latest >"$work/resume.log" 2>&1 || { cat "$work/resume.log"; exit 1; }
grep -q "resumed from .*checkpoint-2 at step 2" "$work/resume.log" || { cat "$work/resume.log"; exit 1; }
[[ "$(export_hash "$run")" == "$ref_hash" ]] || { echo "FAIL: the export differs from the uninterrupted run"; exit 1; }
echo "PASS: a full disk at checkpoint-4 stopped the run clearly; checkpoint-2 resumed to the reference weights"
