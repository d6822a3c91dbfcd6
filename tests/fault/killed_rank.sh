#!/usr/bin/env bash
# fault: one rank of a 2-process run is killed with SIGKILL; the other exits with a clear error, at the latest
# after the collective timeout (trainer.dist_timeout_s; asserted: within it plus 10 s of teardown), never hanging.
#
# The two processes are started as torchrun would start them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), but
# without torchrun, whose agent would tear the survivor down itself.
#
#   killed_rank.sh ZERODIFF_TRAIN SOURCE_DIR WORK_DIR
set -euo pipefail
train="$1" root="$2" work="$3"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rm -rf "$work"
mkdir -p "$work"
cd "$root"
# shellcheck source=common.sh
source "$here/common.sh"
timeout_s=20
# A free port now (the kernel's choice), rather than a random one that may collide with a parallel test.
port="$(free_port)"
pids=()
for r in 0 1; do
  # shellcheck disable=SC2046
  RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    "$train" $(run_args "$work/run" 100000 trainer.strategy=ddp trainer.checkpoint_every=0 \
                 "trainer.dist_timeout_s=$timeout_s") >"$work/rank$r.log" 2>&1 &
  pids+=($!)
done
trap 'kill -9 "${pids[@]}" 2>/dev/null || true' EXIT
# Wait until training runs (rank 0 logs steps), then kill rank 1.
for _ in $(seq 1 1800); do
  grep -q '"step":3' "$work/run/metrics.jsonl" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "FAIL: rank 0 ended before step 3"; cat "$work/rank0.log"; exit 1; }
  sleep 0.1
done
grep -q '"step":3' "$work/run/metrics.jsonl" || { echo "FAIL: no step 3 within 180 s"; cat "$work/rank0.log"; exit 1; }
kill -9 "${pids[1]}" || { echo "FAIL: rank 1 had already ended"; cat "$work/rank1.log"; exit 1; }
killed_at=$(date +%s%N)
set +e
wait "${pids[0]}"
rc=$?
set -e
elapsed_ms=$(( ($(date +%s%N) - killed_at) / 1000000 ))
tail -5 "$work/rank0.log"
[[ $rc -ne 0 && $rc -lt 128 ]] || { echo "FAIL: rank 0 exit $rc, expected a clean error exit"; exit 1; }
grep -qF "(a peer process probably died or stopped responding; collective timeout $timeout_s s)" "$work/rank0.log" &&
  grep -qE "zerodiff-train: error \(rank 0\): .* failed: " \
  "$work/rank0.log" || { echo "FAIL: rank 0's error does not say what happened"; exit 1; }
(( elapsed_ms < (timeout_s + 10) * 1000 )) || { echo "FAIL: rank 0 took $elapsed_ms ms to stop"; exit 1; }
echo "PASS: rank 1 killed; rank 0 stopped after $elapsed_ms ms with a clear error (timeout $timeout_s s)"
