#!/usr/bin/env bash
# Train the book's class-conditional Fashion-MNIST model from scratch on the CPU
# and measure it: the recipe behind crates/training/pretrained/fashion-cfg.
#
#   scripts/train-from-scratch.sh            # 4500 steps (~18 min on 2 idle cores)
#   STEPS=3000 scripts/train-from-scratch.sh # a shorter run
#
# Then: 1000 DDIM-50 samples at guidance w = 3 (100 per class), evaluated with
# the shipped classifier. Everything lands in $OUT (default out/from-scratch).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
STEPS="${STEPS:-4500}"
OUT="${OUT:-$ROOT/out/from-scratch}"
if compgen -G "$OUT/ckpt-*.safetensors" >/dev/null; then
  echo "error: $OUT already holds checkpoints: delete it, or set OUT=another/folder" >&2
  exit 1
fi
bash scripts/setup.sh
cargo build --quiet --release --example train --example sample --example evaluate

start=$(date +%s)
target_dir="$(target_dir)"
"$target_dir/release/examples/train" --dataset fashion-mnist --model seed --channels 64 \
  --full-res-skip --steps "$STEPS" --batch-size 128 --p-uncond 0.1 --lr 2e-3 --ema-decay 0.995 --seed 0 \
  --checkpoint-every 500 --keep 2 --out "$OUT"
echo "training took $(( $(date +%s) - start )) s (wall clock, including the final sample grid)"

ckpt="$(ls "$OUT"/ckpt-*.safetensors | tail -n 1)"
"$target_dir/release/examples/sample" --checkpoint "$ckpt" --sampler ddim --steps 50 \
  --guidance 3 --per-class 100 --seed 0 --no-grid \
  --save-tensors "$OUT/ddim50-w3.safetensors"
"$target_dir/release/examples/evaluate" --samples "$OUT/ddim50-w3.safetensors"
