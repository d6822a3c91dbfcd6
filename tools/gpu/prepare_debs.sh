#!/usr/bin/env bash
# Step 1 of the offline-GPU-host flow (DESIGN.md §5): run on a CONNECTED Debian machine.
#
#   bash tools/gpu/prepare_debs.sh
#
# Downloads (apt-get download, no root needed for the download itself) into tools/gpu/debs/ (git-ignored)
# the .deb files of the build-time dependencies an offline GPU host lacks: the -dev packages of
# tools/setup.sh, their runtime libraries, and ninja. Only what those packages need beyond a stock
# Linux: libc6, libgcc-s1, libstdc++6 (and gcc-*-base) are assumed present on the host and skipped, as
# are catch2 and googletest (source-only packages pulled by libspdlog-dev / libgtest-dev, unused here).
# Runtime package names (libyaml-cpp0.7, libspdlog1.10, libfmt9, libre2-9, libabsl*, libsharpyuv0, ...)
# are not hard-coded: they are resolved with `apt-cache depends` from the -dev seeds until closure,
# so the script follows Debian releases.
#
# Idempotent: a .deb already present (same package, version, architecture) is not downloaded again;
# other versions of a listed package are removed so that run_gpu.sh never unpacks two of them.
# Writes debs/MANIFEST.txt (package, version, size, sha256) and fails if the total exceeds 50 MiB.
#
# Environment: ZERODIFF_DEBS_DIR (default tools/gpu/debs), ZERODIFF_DEBS_MAX_MIB (50).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEBS="${ZERODIFF_DEBS_DIR:-$HERE/debs}"
MAX_MIB="${ZERODIFF_DEBS_MAX_MIB:-50}"

SEEDS=(
  libyaml-cpp-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libhwy-dev
  libgtest-dev libgmock-dev libbenchmark-dev libre2-dev libstb-dev libwebp-dev zlib1g-dev
  ninja-build
)
# Assumed on any recent glibc Linux host (or irrelevant to the build): never downloaded.
BASE_RE='^(libc6|libgcc-s1|libgcc1|libstdc\+\+6|gcc-[0-9]+-base|libc-dev|libc6-dev|catch2|googletest)$'

log() { printf '[prepare_debs] %s\n' "$*"; }
die() { printf '[prepare_debs] error: %s\n' "$*" >&2; exit 1; }

command -v apt-get >/dev/null && command -v apt-cache >/dev/null || die "needs a Debian/Ubuntu machine (apt-get)"
SUDO=""; [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null && SUDO="sudo"
updated=0
apt_update() {
  ((updated)) && return 0
  log "apt-get update"
  $SUDO apt-get update -qq || die "apt-get update failed"
  updated=1
}

# The package lists are needed once: update only when a seed is unknown to apt-cache.
for p in "${SEEDS[@]}"; do
  if ! apt-cache show --no-all-versions "$p" >/dev/null 2>&1; then apt_update; break; fi
done

# ---------------------------------------------------------------- resolve the package set
# Depends (and Pre-Depends) of one package: the first alternative of each, ":any" stripped.
deps_of() {
  apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
                    --no-enhances "$1" 2>/dev/null |
    awk '
      /^[ ]*(\|)?(Pre)?Depends:/ {
        alt = ($1 ~ /^\|/); name = $2; sub(/:any$/, "", name)
        if (!skip) print name
        skip = alt   # "|Depends: a" is followed by its alternatives; keep the first only
        next
      }'
}

declare -A want=()
queue=("${SEEDS[@]}")
while ((${#queue[@]})); do
  p="${queue[0]}"; queue=("${queue[@]:1}")
  [[ -n "${want[$p]:-}" ]] && continue
  [[ "$p" =~ $BASE_RE ]] && continue
  if [[ "$p" == \<*\> ]]; then die "virtual dependency $p: pick a provider and add it to SEEDS"; fi
  apt-cache show --no-all-versions "$p" >/dev/null 2>&1 || die "unknown package $p (apt-cache show)"
  want[$p]=1
  while read -r d; do
    [[ -z "$d" || "$d" =~ $BASE_RE || -n "${want[$d]:-}" ]] && continue
    queue+=("$d")
  done < <(deps_of "$p")
done
mapfile -t PKGS < <(printf '%s\n' "${!want[@]}" | sort)
log "${#PKGS[@]} packages: ${PKGS[*]}"

# ---------------------------------------------------------------- download
mkdir -p "$DEBS"
cd "$DEBS"
# apt-get download as root runs the fetcher as _apt, which must be able to write here.
[[ $(id -u) -eq 0 ]] && { chmod 0755 "$DEBS" 2>/dev/null || true; }

fetched=0; kept=0
declare -a FILES=()
for p in "${PKGS[@]}"; do
  ver="$(apt-cache show --no-all-versions "$p" | sed -n 's/^Version: //p' | head -1)"
  arch="$(apt-cache show --no-all-versions "$p" | sed -n 's/^Architecture: //p' | head -1)"
  file="${p}_${ver//:/%3a}_${arch}.deb"
  # Another version of the same package (left by an older run): remove it.
  for old in "${p}"_*.deb; do
    [[ -e "$old" && "$old" != "$file" ]] || continue
    [[ "$old" =~ ^${p//+/\\+}_[^_]+_[^_]+\.deb$ ]] || continue
    log "removing stale $old"; rm -f -- "$old"
  done
  if [[ -s "$file" ]] && dpkg-deb --info "$file" >/dev/null 2>&1; then
    kept=$((kept + 1))
  else
    rm -f -- "$file"
    if ! apt-get download -qq "$p=$ver" >/dev/null 2>&1; then
      # Stale package lists (404): refresh once and retry with the new candidate.
      apt_update
      ver="$(apt-cache show --no-all-versions "$p" | sed -n 's/^Version: //p' | head -1)"
      file="${p}_${ver//:/%3a}_${arch}.deb"
      apt-get download -qq "$p=$ver" >/dev/null || die "apt-get download $p=$ver failed"
    fi
    [[ -s "$file" ]] || die "expected $file after apt-get download $p"
    fetched=$((fetched + 1))
  fi
  FILES+=("$file")
done

# Anything else in the folder is not part of the set (e.g. a package dropped from SEEDS).
for f in *.deb; do
  [[ -e "$f" ]] || continue
  keep=0; for g in "${FILES[@]}"; do [[ "$f" == "$g" ]] && { keep=1; break; }; done
  ((keep)) || { log "removing $f (not in the package set)"; rm -f -- "$f"; }
done

# ---------------------------------------------------------------- manifest + size check
{
  printf '# zerodiff offline GPU host .debs, made by tools/gpu/prepare_debs.sh on %s (%s)\n' \
         "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown}")"
  printf '# package version bytes sha256 file\n'
  for f in "${FILES[@]}"; do
    printf '%s %s %s %s %s\n' "$(dpkg-deb -f "$f" Package)" "$(dpkg-deb -f "$f" Version)" \
           "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)" "$f"
  done
} > MANIFEST.txt

total=0
for f in "${FILES[@]}"; do
  total=$((total + $(stat -c %s "$f")))
  printf '  %9d  %s\n' "$(stat -c %s "$f")" "$f"
done
mib="$(awk -v b="$total" 'BEGIN { printf "%.2f", b / 1048576 }')"
log "$fetched downloaded, $kept already present; ${#FILES[@]} files, total $total bytes = $mib MiB in $DEBS"
if (( total > MAX_MIB * 1048576 )); then
  die "total $mib MiB exceeds the ${MAX_MIB} MiB budget"
fi
log "next: carry the repository (with tools/gpu/debs/) to the GPU host and run: bash tools/gpu/run_gpu.sh out/"
