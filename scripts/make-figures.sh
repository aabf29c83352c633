#!/usr/bin/env bash
# Regenerates every figure and console output that the book includes
# (book/figures/*, book/generated/*). Run after changing an example.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
GEN="$ROOT/book/generated"
FIG="$ROOT/book/figures"
mkdir -p "$GEN" "$FIG"

echo "==> device_info"
cargo run --quiet --example device_info > "$GEN/device_info.txt"

echo "==> forward_process"
cargo run --quiet --release --example forward_process -- --out "$FIG/forward" > "$GEN/forward_process.txt"

echo "==> network_summary"
cargo run --quiet --release --example network_summary -- --figure-dir "$FIG/network" > "$GEN/network_summary.txt"

echo "==> parity with PyTorch"
cargo test --quiet -p network --test parity -- --nocapture 2>/dev/null | grep -E "Δ|written" > "$GEN/parity.txt"

echo "==> train (the chapter's default run: a few minutes on 2 cores)"
rm -rf "$ROOT/target/figures-train"
cargo run --quiet --release --example train -- --out "$ROOT/target/figures-train" 2>&1 | grep -v '^\s*$' > "$GEN/train.txt"
mkdir -p "$FIG/training"
cp "$ROOT/target/figures-train/loss.png" "$ROOT/target/figures-train/samples.png" "$FIG/training/"

echo "==> training throughput against PyTorch"
bash scripts/bench/train_throughput.sh 5 20 > "$GEN/train_throughput.txt"

CKPT="$ROOT/target/figures-train/ckpt-00001500.safetensors"
mkdir -p "$FIG/reverse"
echo "==> sample (DDPM) from the training chapter's checkpoint"
cargo run --quiet --release --example sample -- --checkpoint "$CKPT" --sampler ddpm --n 20 --seed 0 \
  --out "$FIG/reverse/ddpm.png" --trajectory "$FIG/reverse/ddpm-trajectory.png" --gif "$FIG/reverse/ddpm.gif" \
  | sed "s|$ROOT/||g" > "$GEN/sample_ddpm.txt"

echo "==> ddim_study"
cargo run --quiet --release --example ddim_study -- --checkpoint "$CKPT" --out "$ROOT/target/figures-ddim" \
  | sed "s|$ROOT/||g" > "$GEN/ddim_study.txt"
cp "$ROOT"/target/figures-ddim/{steps,grids,inversion,interpolation}.png "$FIG/reverse/"
