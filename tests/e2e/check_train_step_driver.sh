#!/usr/bin/env bash
# ctest e2e.bench_train_step_driver: runs benchmarks/run_train_step.sh (configured by the environment ctest sets)
# and fails when the driver fails or its Markdown table lacks a well-formed row for CONFIGS (figures are not
# checked: docs/performance.md holds them). Both conditions count: the exit status and the parsed row.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$(bash "$ROOT/benchmarks/run_train_step.sh")"
rc=$?
printf '%s\n' "$out"
if ((rc != 0)); then
  echo "[check] run_train_step.sh exited with $rc" >&2
  exit 1
fi
IFS=: read -r model mode batch steps <<<"${CONFIGS%% *}"
num='[0-9.]+'
row="^\| $model \| $mode \| $batch x $steps \| \*\*$num\*\* \($num(, $num)*\) \| \*\*$num\*\* \($num(, $num)*\) \| \*\*${num}x\*\* \| $num \| $num \| $num \|\$"
if ! grep -Eq "$row" <<<"$out"; then
  echo "[check] no table row matching: $row" >&2
  exit 1
fi
echo "[check] driver ok: $model $mode row present"
