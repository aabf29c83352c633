#!/usr/bin/env bash
# Measure the shipped model for its model card: DDPM-1000, DDIM-50 and DDIM-20
# at guidance w = 0, 1, 3, each with N = 1000 samples (100 per class, seed 0),
# evaluated against the Fashion-MNIST test set with the shipped classifier.
# Writes the table into crates/training/pretrained/fashion-cfg.md between
# the <!-- metrics --> markers.
#
#   scripts/model-card.sh              # about an hour on 2 CPU cores (57 min for the shipped UNet; DDPM dominates)
#   N=200 scripts/model-card.sh        # a quick look (not for the card: n < 1000)
#
# Sample files are kept in target/model-card and reused when newer than the model.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
N="${N:-1000}"
MODEL=crates/training/pretrained/fashion-cfg.safetensors
CARD=crates/training/pretrained/fashion-cfg.md
OUT="$(target_dir)/model-card/n$N"
mkdir -p "$OUT"
cargo build --quiet --release --example sample --example evaluate
bin="$(target_dir)/release/examples"

files=()
for spec in ddpm:1000 ddim:50 ddim:20; do
  for w in 0 1 3; do files+=("$OUT/${spec/:/}-w$w.safetensors"); done
done
# The quick DDIM rows first, DDPM (20× the network calls) last.
for spec in ddim:20 ddim:50 ddpm:1000; do
  sampler="${spec%:*}" steps="${spec#*:}"
  for w in 0 1 3; do
    f="$OUT/$sampler$steps-w$w.safetensors"
    if [ -f "$f" ] && [ "$f" -nt "$MODEL" ]; then continue; fi
    echo "==> $sampler-$steps, w = $w, n = $N"
    start=$(date +%s)
    steps_flag=(); [ "$sampler" = ddim ] && steps_flag=(--steps "$steps")   # DDPM takes all T steps
    "$bin/sample" --pretrained fashion-cfg --sampler "$sampler" "${steps_flag[@]}" --guidance "$w" \
      --per-class $((N / 10)) --seed 0 --no-grid --save-tensors "$f" --device cpu
    echo "    $(( $(date +%s) - start )) s"
  done
done

echo "==> evaluate"
"$bin/evaluate" --samples "${files[@]}" --markdown "$OUT/table.md" --csv "$OUT/table.csv"
if [ "$N" -ge 1000 ]; then
  python3 - "$CARD" "$OUT/table.md" <<'PY'
import re, sys
card, table = sys.argv[1], open(sys.argv[2]).read()
text = open(card).read()
new, k = re.subn(r"(<!-- metrics:begin -->\n).*?(<!-- metrics:end -->)", lambda m: m.group(1) + table + m.group(2), text, flags=re.S)
if k != 1:
    sys.exit(f"{card}: no <!-- metrics:begin --> … <!-- metrics:end --> block")
open(card, "w").write(new)
print(f"updated {card}")
PY
fi
