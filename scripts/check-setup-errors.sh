#!/usr/bin/env bash
# Bad setups must give one clear line, not a wall of compiler output:
#   no Python, the venv missing at build time, a wrong torch version.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
# Each cargo call gets an empty target dir, so that cargo caches no failed
# `rustc -vV` probe in the real one.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

expect() { # description, expected text, command...
  local what="$1" want="$2"; shift 2
  if "$@" >"$tmp/out" 2>&1; then
    cat "$tmp/out"; echo "error: $what: the command succeeded" >&2; exit 1
  fi
  grep -q "$want" "$tmp/out" || { cat "$tmp/out"; echo "error: $what: no '$want' in the output" >&2; exit 1; }
  local lines; lines=$(wc -l < "$tmp/out")
  [ "$lines" -le 6 ] || { cat "$tmp/out"; echo "error: $what: $lines lines of output, expected a short message" >&2; exit 1; }
  echo "ok: $what -> $(grep -m1 "$want" "$tmp/out")"
}

expect "no python" "python3 not found" env PYTHON="$tmp/no-python3" bash scripts/setup.sh
expect "venv missing at build time" "libtorch not found" env CARGO_TARGET_DIR="$tmp/target1" LIBTORCH="$tmp/missing-venv/torch" cargo build --quiet -p forward
mkdir -p "$tmp/torch/lib" && : > "$tmp/torch/lib/libtorch_cpu.so"
echo "__version__ = '2.10.0+cpu'" > "$tmp/torch/version.py"
expect "wrong torch version" "needs torch==2.11.0" env CARGO_TARGET_DIR="$tmp/target2" LIBTORCH="$tmp/torch" cargo build --quiet -p forward
