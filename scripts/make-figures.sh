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
