#!/usr/bin/env bash
# Time to quality: the same UNet config and the same recipe trained by the
# book's tch code and by plain PyTorch + diffusers (scripts/bench/train_diffusers.py),
# side by side, each with THREADS threads (1 each by default, on a 2-core
# machine, so that machine noise hits both alike). After each CPU-time budget
# both models are sampled the same way (DDIM-50, w = 3, N per-class samples,
# seed 0, with the book's sampler) and measured with the book's classifier.
# Prints img/s, accuracy and FD for each side and the ratios ours / theirs.
#
#   scripts/bench/time_to_quality.sh                  # budgets 5,10,20 CPU-minutes, N = 1000
#   BUDGETS=1,2 N=200 scripts/bench/time_to_quality.sh   # a quick look
#
# Work folder: target/time-to-quality (removed at the start of each run).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"
BUDGETS="${BUDGETS:-5,10,20}"
N="${N:-1000}"
THREADS="${THREADS:-1}"
RECIPE="${RECIPE:---model unet --block-out-channels 16,32,64 --lr 1e-3 --ema-decay 0.999 --loss-weighting min-snr-5}"  # the default run's recipe
PY="$(venv_python)"
cargo build --quiet --release --example train --example sample --example evaluate
bin="$(target_dir)/release/examples"
WORK="$(target_dir)/time-to-quality"
rm -rf "$WORK"; mkdir -p "$WORK/ours" "$WORK/theirs"
COMMON="--dataset fashion-mnist --p-uncond 0.1 --seed 0 --samples 0 --checkpoint-every 100000 --keep 1"
export OMP_NUM_THREADS="$THREADS"

# The recipe, as the book's trainer writes it into a checkpoint: one step, thrown away.
"$bin/train" $RECIPE $COMMON --steps 1 --out "$WORK/recipe" > /dev/null
like="$(ls "$WORK"/recipe/ckpt-*.safetensors)"
echo "recipe: $RECIPE; budgets $BUDGETS CPU-minutes; $THREADS thread(s) per side, side by side; N = $N"

# diffusers in the background, ours in the foreground, at the same time.
"$PY" scripts/bench/train_diffusers.py --like "$like" --out "$WORK/theirs" --cpu-minutes "$BUDGETS" --threads "$THREADS" &
theirs=$!
resume=""
for m in ${BUDGETS//,/ }; do
  "$bin/train" $RECIPE $COMMON --steps 100000000 --cpu-minutes "$m" --out "$WORK/ours" $resume > /dev/null
  resume="--resume"
  cp "$(ls "$WORK"/ours/ckpt-*.safetensors | tail -1)" "$WORK/ours/snap-$m.safetensors"
  tail -1 "$WORK/ours/loss.csv" | awk -F, -v m="$m" '{print m, $1, $5}' >> "$WORK/ours/log.txt"
  echo "ours: $m CPU-min budget reached at step $(tail -1 "$WORK/ours/log.txt" | cut -d' ' -f2)"
done
wait "$theirs"

export OMP_NUM_THREADS="$(nproc)"
files=()
for m in ${BUDGETS//,/ }; do
  for side in ours theirs; do
    f="$WORK/$side/samples-$m.safetensors"
    "$bin/sample" --checkpoint "$WORK/$side/snap-$m.safetensors" --sampler ddim --steps 50 --guidance 3 \
      --per-class $((N / 10)) --seed 0 --no-grid --save-tensors "$f" > /dev/null
    files+=("$f")
  done
done
"$bin/evaluate" --samples "${files[@]}" --csv "$WORK/eval.csv" > "$WORK/eval.txt"

python3 - "$WORK" "$BUDGETS" "$(grep -oP -- '--batch-size \K[0-9]+' <<< "$RECIPE" || echo 128)" <<'PY'
import csv, sys
work, budgets, batch = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
ev = list(csv.reader(open(f"{work}/eval.csv")))[1:][2:]  # skip the real-data and noise rows
logs = {s: {l.split()[0]: l.split() for l in open(f"{work}/{s}/log.txt")} for s in ("ours", "theirs")}
print(f"{'CPU-min':>7} | {'ours img/s':>10} {'theirs img/s':>12} {'ratio':>6} | {'ours acc':>8} {'theirs acc':>10} | {'ours FD':>8} {'theirs FD':>9} {'FD ratio':>8}")
for i, m in enumerate(budgets):
    rate = {}
    for s in ("ours", "theirs"):
        _, steps, cpu = logs[s][m]
        rate[s] = int(steps) * batch / float(cpu)  # images per CPU-second (per thread)
    o, t = ev[2 * i], ev[2 * i + 1]
    fo, ft = float(o[3]), float(t[3])
    print(f"{m:>7} | {rate['ours']:>10.1f} {rate['theirs']:>12.1f} {rate['ours'] / rate['theirs']:>6.2f} | "
          f"{float(o[2]):>8.3f} {float(t[2]):>10.3f} | {fo:>8.2f} {ft:>9.2f} {fo / ft:>8.2f}")
print("img/s are images per CPU-second of one thread; FD ratio < 1 means ours is better at equal CPU time.")
PY
