#!/usr/bin/env bash
# Train the book's class-conditional Fashion-MNIST model from scratch on the CPU
# and measure it: the recipe behind crates/training/pretrained/fashion-cfg.
#
#   scripts/train-from-scratch.sh             # 8000 steps (about 40 min on 2 idle cores)
#   STEPS=3000 scripts/train-from-scratch.sh  # a shorter run
#
# It checkpoints every 1000 steps; run it again with the same OUT to resume an
# interrupted run (RESUME=1), bit for bit.
#
# Then: 1000 DDIM-50 samples at guidance w = 3 (100 per class), evaluated with
# the shipped classifier. Everything lands in $OUT (default out/from-scratch).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
STEPS="${STEPS:-8000}"
OUT="${OUT:-$ROOT/out/from-scratch}"
resume=()
if compgen -G "$OUT/ckpt-*.safetensors" >/dev/null; then
  if [ "${RESUME:-0}" != 1 ]; then
    echo "error: $OUT already holds checkpoints: RESUME=1 continues that run; or delete it, or set OUT=another/folder" >&2
    exit 1
  fi
  resume=(--resume)
fi
bash scripts/setup.sh
cargo build --quiet --release --example train --example sample --example evaluate

start=$(date +%s)
target_dir="$(target_dir)"
"$target_dir/release/examples/train" --dataset fashion-mnist --model unet --block-out-channels 16,32,64 \
  --steps "$STEPS" --batch-size 128 --p-uncond 0.1 --lr 1e-3 --ema-decay 0.999 --loss-weighting min-snr-5 \
  --seed 0 --checkpoint-every 1000 --keep 3 --out "$OUT" "${resume[@]}"
echo "training took $(( $(date +%s) - start )) s (wall clock, including the final sample grid)"

ckpt="$(ls "$OUT"/ckpt-*.safetensors | tail -n 1)"
"$target_dir/release/examples/sample" --checkpoint "$ckpt" --sampler ddim --steps 50 \
  --guidance 3 --per-class 100 --seed 0 --no-grid \
  --save-tensors "$OUT/ddim50-w3.safetensors"
"$target_dir/release/examples/evaluate" --samples "$OUT/ddim50-w3.safetensors"
