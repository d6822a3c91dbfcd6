# benchmarks/lib.sh — shell helpers the benchmark drivers (benchmarks/run_*.sh) share; sourced, not run.
#
#   log MESSAGE...            "[bench] MESSAGE" on stderr
#   median [DECIMALS]         the median of the numbers on stdin (whitespace or newline separated), DECIMALS
#                             (default 1) after the point; the mean of the middle two for an even count
#   cell DECIMALS FIGURE...   a Markdown table cell: "**median** (f1, f2, ...)"
#   ratio DECIMALS "A..." "B..."  median(A) / median(B) as "1.23x" (medians taken at DECIMALS first)

log() { printf '[bench] %s\n' "$*" >&2; }

median() {
  tr ' ' '\n' | grep . | sort -g | awk -v d="${1:-1}" '
    { v[NR] = $1 }
    END { printf("%." d "f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

cell() {
  local decimals="$1"
  shift
  echo "**$(printf '%s\n' "$@" | median "$decimals")** ($(echo "$*" | sed 's/ /, /g'))"
}

ratio() {
  awk -v a="$(printf '%s\n' $2 | median "$1")" -v b="$(printf '%s\n' $3 | median "$1")" \
    'BEGIN { printf "%.2fx", a / b }'
}
