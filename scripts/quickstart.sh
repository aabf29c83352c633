#!/usr/bin/env bash
# The README's main-job command: set everything up, run the forward-diffusion
# chapter on real Fashion-MNIST, build the book, and say where everything is.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
OUT="${OUT:-$ROOT/out}"

echo "==> setup"
bash scripts/setup.sh

echo "==> what tch sees"
cargo run --quiet --example device_info

echo "==> chapter 'Forward diffusion' on Fashion-MNIST (release build; the first one compiles libtorch's wrapper)"
cargo run --quiet --release --example forward_process -- --out "$OUT/forward"

echo "==> building the book"
mdbook build 2>&1 | grep -v '^ INFO' || true
BOOK="$ROOT/target/book"   # build-dir in book.toml
[ -f "$BOOK/index.html" ] || { echo "error: mdbook build failed" >&2; exit 1; }

cat <<MSG

Done.
  the book:     $BOOK/index.html   (or: mdbook serve --open)
  the figures:  $OUT/forward/      (noising_*.png, schedules.png, schedules.csv)
  run a chapter yourself:  cargo run --release --example forward_process -- --help
MSG
