#!/usr/bin/env bash
# One-time (and idempotent) setup for Diffusion, Executed.
#
#   - a Python virtual environment with torch==2.11.0 from PyPI (libtorch for tch 0.24.0),
#     plus numpy, safetensors, scipy and diffusers 0.42.1 for the parity scripts,
#     playwright 1.65.2 (drives the system's Chromium; its browser download is never
#     used) and pytest 9.2.0 for scripts/check-rendered.sh and scripts/tests;
#   - the symlink .libtorch -> <venv>/.../site-packages/torch that .cargo/config.toml uses;
#   - mdBook 0.5.3 and the mdbook-katex 0.10.0 preprocessor (cargo install --locked);
#   - Fashion-MNIST from Debian's dataset-fashion-mnist (when root on Debian);
#   - Chromium from Debian's chromium package (when root on Debian), for scripts/check-rendered.sh.
#
# Environment:
#   DIFFUSION_VENV   where the venv lives (default: <repo>/.venv). CI points it at a cache.
#   SKIP_DATA=1      do not try to install Fashion-MNIST.
# Safe to re-run: every step checks before it acts.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # ROOT, linked_venv, venv_python
# Without DIFFUSION_VENV, keep using the venv that .libtorch already points at
# (set up earlier with DIFFUSION_VENV), else the default .venv in the repo.
VENV="${DIFFUSION_VENV:-$(linked_venv)}"
VENV="${VENV:-$ROOT/.venv}"
TORCH_VERSION="2.11.0"
DIFFUSERS_VERSION="0.42.1"
PLAYWRIGHT_VERSION="1.65.2"
PYTEST_VERSION="9.2.0"
MDBOOK_VERSION="0.5.3"   # the version mdbook-katex 0.10.0 is built against
MDBOOK_KATEX_VERSION="0.10.0"
DATA_DIR="/usr/share/datasets/fashion-mnist"

say() { printf '[setup] %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- Python and the venv ---------------------------------------------------
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 \
  || die "python3 not found: install Python 3.10+ with pip and venv (Debian: apt-get install python3 python3-venv python3-pip), then re-run scripts/setup.sh"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "$("$PYTHON" --version 2>&1) is too old: torch $TORCH_VERSION needs Python 3.10 or newer"

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment at $VENV"
  "$PYTHON" -m venv "$VENV" || die "could not create a venv at $VENV (Debian: apt-get install python3-venv)"
fi
VPY="$VENV/bin/python"

have_torch="$("$VPY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
if [ "$have_torch" != "$TORCH_VERSION" ]; then
  if [ -n "$have_torch" ]; then say "venv has torch $have_torch; replacing it with torch==$TORCH_VERSION"; fi
  say "pip install torch==$TORCH_VERSION (a large download the first time)"
  "$VPY" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" \
    || die "pip could not install torch==$TORCH_VERSION into $VENV: check that PyPI is reachable"
fi
"$VPY" -c 'import numpy, safetensors, scipy, yaml' 2>/dev/null \
  || "$VPY" -m pip install --quiet --disable-pip-version-check numpy safetensors scipy pyyaml \
  || die "pip could not install numpy, safetensors, scipy and pyyaml into $VENV"
# pip install NAME==VERSION unless the venv has exactly that version.
pip_pin() { # name version
  local have
  have="$("$VPY" -c 'import sys, importlib.metadata as m; print(m.version(sys.argv[1]))' "$1" 2>/dev/null || true)"
  if [ "$have" != "$2" ]; then
    say "pip install $1==$2"
    "$VPY" -m pip install --quiet --disable-pip-version-check "$1==$2" \
      || die "pip could not install $1==$2 into $VENV: check that PyPI is reachable"
  fi
}
# diffusers: the reference UNet2DModel for the parity test and the time-to-quality benchmark.
pip_pin diffusers "$DIFFUSERS_VERSION"
# playwright: scripts/check-rendered.py drives the system's Chromium with it (installed
# below). Never `playwright install`: its browser download needs more than PyPI.
pip_pin playwright "$PLAYWRIGHT_VERSION"
# pytest: the tests of the scripts themselves (scripts/tests).
pip_pin pytest "$PYTEST_VERSION"

TORCH_DIR="$("$VPY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
[ -f "$TORCH_DIR/lib/libtorch_cpu.so" ] || die "$TORCH_DIR/lib has no libtorch_cpu.so: the torch wheel looks broken; delete $VENV and re-run"
if [ "$(readlink "$ROOT/.libtorch" 2>/dev/null)" != "$TORCH_DIR" ]; then
  ln -sfn "$TORCH_DIR" "$ROOT/.libtorch"
  say "linked .libtorch -> $TORCH_DIR"
fi

# --- mdBook -----------------------------------------------------------------
install_crate() { # name version binary
  local have
  have="$("$3" --version 2>/dev/null | awk '{print $NF}' | sed 's/^v//' || true)"
  if [ "$have" != "$2" ]; then
    say "cargo install --locked $1 --version $2"
    # From a neutral folder, so the project's .cargo/config.toml does not apply.
    (cd / && cargo install --locked --quiet "$1" --version "$2") || die "cargo install $1 $2 failed"
  fi
}
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (https://rustup.rs)"
install_crate mdbook "$MDBOOK_VERSION" mdbook
install_crate mdbook-katex "$MDBOOK_KATEX_VERSION" mdbook-katex

# --- Chart font -------------------------------------------------------------
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "apt-get install fonts-dejavu-core (text in the charts)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null; } \
    || say "warning: could not install fonts-dejavu-core; charts will report the missing font"
fi

# --- Chromium (scripts/check-rendered.sh loads the built book in it) ---------
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "apt-get install chromium (headless browser for scripts/check-rendered.sh)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || say "warning: could not install chromium; scripts/check-rendered.sh will say how to get it"
  else
    say "Chromium is not installed (scripts/check-rendered.sh needs it). Get it with:"
    say "    sudo apt-get install chromium"
  fi
fi

# --- Fashion-MNIST ----------------------------------------------------------
if [ "${SKIP_DATA:-0}" != 1 ] && [ ! -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "apt-get install dataset-fashion-mnist"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
      || say "warning: could not install dataset-fashion-mnist; the data examples will say how to get it"
  else
    say "Fashion-MNIST is not installed. Get it with:"
    say "    sudo apt-get install dataset-fashion-mnist     (Debian/Ubuntu, installs to $DATA_DIR)"
    say "or put the four IDX files (train-images-idx3-ubyte.gz, …) in a folder and pass --data-dir FOLDER."
  fi
fi
say "ready: torch $TORCH_VERSION at $TORCH_DIR, python $(venv_python)"
