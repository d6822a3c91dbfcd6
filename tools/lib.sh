# tools/lib.sh — shell helpers shared by tools/build.sh, tools/test.sh, tools/sanitize.sh, tools/fuzz.sh and .ci/run;
# sourced by scripts that run under `set -e`.
#
#   cores                       the cores this process may use, for -j: nproc without OMP_NUM_THREADS and
#                               OMP_THREAD_LIMIT (GNU nproc obeys them, so after `export OMP_NUM_THREADS=1`, which the
#                               test scripts set for LibTorch, a plain $(nproc) is 1 and ctest -j $(nproc) runs serially)
#   phase_begin NAME            starts timing phase NAME (ends the previous one, if any)
#   phase_end                   appends "NAME<TAB>seconds<TAB>ok" to $ZERODIFF_PHASE_LOG (when set); a script that
#                               exits inside a phase (a failure under set -e) logs it as FAILED from its EXIT trap
#   phase_note NAME TEXT        appends "NAME<TAB>TEXT<TAB>" (a figure that is not a wall time)
#   ctest_label_phases LOG NAME one phase_note per line of the "Label Time Summary" of a ctest log
#   phase_table                 prints the phases logged so far as a table (.ci/run, at its end)

cores() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }

_zd_phase=""
_zd_phase_t0=0

_zd_phase_log() {
  [[ -n "${ZERODIFF_PHASE_LOG:-}" ]] && printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$ZERODIFF_PHASE_LOG"
  return 0
}

_zd_phase_exit() {
  local rc=$?
  [[ -n "$_zd_phase" ]] && _zd_phase_log "$_zd_phase" "$(( $(date +%s) - _zd_phase_t0 ))" \
    "$( ((rc)) && echo "FAILED (exit $rc)" || echo "left early")"
  return 0
}

phase_begin() {
  [[ -n "$_zd_phase" ]] && phase_end
  _zd_phase="$1"
  _zd_phase_t0=$(date +%s)
  trap _zd_phase_exit EXIT
}

phase_end() {
  [[ -n "$_zd_phase" ]] && _zd_phase_log "$_zd_phase" "$(( $(date +%s) - _zd_phase_t0 ))" ok
  _zd_phase=""
}

phase_note() { _zd_phase_log "$1" "$2" ""; }

ctest_label_phases() {
  # After its summary ctest prints "Label Time Summary:" and lines like "unit    = 123.45 sec*proc (148 tests)".
  # (none when no test ran, e.g. -R matched nothing: not an error)
  sed -n '/^Label Time Summary:/,/^$/p' "$1" | { grep -E '^[a-z0-9_]+ +=' || true; } | while read -r label _ secs _ count _; do
    phase_note "$2: label $label" "$secs s summed over ${count#(} tests"
  done
}

phase_table() {
  [[ -n "${ZERODIFF_PHASE_LOG:-}" && -s "$ZERODIFF_PHASE_LOG" ]] || return 0
  echo "[ci] phase times (wall seconds; a ctest label's line sums its tests' own times, which overlap two at a time)"
  awk -F'\t' '{ if ($3 == "") printf "  %-32s %s\n", $1, $2; else printf "  %-32s %6d s  %s\n", $1, $2, $3 }' \
    "$ZERODIFF_PHASE_LOG"
}
