#!/usr/bin/env bash
# zerodiff setup: installs everything the build, the tests and the tools need, idempotently.
#
#   bash tools/setup.sh
#
# 1. Debian packages (apt-get), skipping those already installed.
# 2. A Python virtualenv holding the pinned requirements.txt (torch==2.11.0 gives LibTorch; diffusers,
#    transformers, ... are the reference stack for fixtures and parity round trips).
#    The venv lives in a per-user cache keyed by the torch version and the hash of requirements.txt,
#    $ZERODIFF_CACHE (default ~/.cache/zerodiff)/venv-torch-<ver>, so every clone reuses one 3 GB
#    install; the checkout's `.venv` is a symlink to it. ZERODIFF_VENV=/path overrides the location.
# 3. Nothing else: a user with LibTorch elsewhere passes -DTorch_DIR=... (or ZERODIFF_TORCH_DIR=...
#    to tools/build.sh), and CMake then uses that LibTorch instead of the venv's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TORCH_VERSION="$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' requirements.txt)"
CACHE="${ZERODIFF_CACHE:-$HOME/.cache/zerodiff}"
VENV="${ZERODIFF_VENV:-$CACHE/venv-torch-$TORCH_VERSION}"

log() { printf '[setup] %s\n' "$*"; }

# ---------------------------------------------------------------- Debian packages
APT_PACKAGES=(
  build-essential cmake ninja-build ccache git python3 python3-venv
  libyaml-cpp-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libhwy-dev
  libgtest-dev libgmock-dev libbenchmark-dev libgloo-dev
  clang-14 libclang-rt-14-dev llvm-14
  libre2-dev libstb-dev libwebp-dev zlib1g-dev
  fonts-noto-color-emoji
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# python3/python3-venv may come from elsewhere (pyenv); only ask apt when no working python exists.
if command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; then
  filtered=()
  for p in "${missing[@]}"; do [[ "$p" == python3 || "$p" == python3-venv ]] || filtered+=("$p"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages: all present"
fi

# ---------------------------------------------------------------- Python venv
REQ_HASH="$(sha256sum requirements.txt | cut -c1-16)"
STAMP="$VENV/.zerodiff-requirements-$REQ_HASH"
if [[ ! -f "$STAMP" ]]; then
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtualenv $VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
  fi
  log "pip install -r requirements.txt into $VENV (first time: about 1-3 minutes, ~4 GB)"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt
  rm -f "$VENV"/.zerodiff-requirements-*
  touch "$STAMP"
else
  log "virtualenv $VENV: up to date"
fi
# The original CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz, 49,408 tokens) ships inside open-clip-torch;
# install that package alone (--no-deps: reading one data file needs none of its dependencies). Idempotent: skipped
# when the pinned version is already there.
OPEN_CLIP_VERSION=3.3.0
if ! "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("open-clip-torch") != sys.argv[1])' \
    "$OPEN_CLIP_VERSION" 2>/dev/null; then
  log "pip install --no-deps open-clip-torch==$OPEN_CLIP_VERSION (the CLIP BPE vocabulary)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "open-clip-torch==$OPEN_CLIP_VERSION"
fi
if [[ "$(readlink .venv 2>/dev/null || true)" != "$VENV" ]]; then
  if [[ -e .venv && ! -L .venv ]]; then
    log "keeping existing .venv directory (not a symlink); using it as is"
  else
    ln -sfn "$VENV" .venv
  fi
fi
"$ROOT/.venv/bin/python" -c 'import torch; print("[setup] torch", torch.__version__, "CUDA", torch.version.cuda)'
