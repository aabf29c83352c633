#!/usr/bin/env bash
# The training-recipe A/B at equal CPU time (Training chapter, issue #16).
#
# Each row trains for BUDGET minutes of this machine's cores, counted as CPU
# time (`train --cpu-minutes BUDGET×cores`, so that other work on the machine
# does not shorten a row), then
# draws 1000 per-class samples (DDIM-50, seed 0) at w = 3 and at w = 1 and
# measures them with the evaluation crate. Finished rows are appended to
# book/generated/recipe_ab.csv and skipped on the next run, and a row whose
# training was interrupted resumes from its newest checkpoint (the budget
# counts the time already spent), so the table can be built over several
# sittings.
#
#   scripts/recipe-ab.sh                 # every row missing from the table, 15 min each
#   scripts/recipe-ab.sh unet-a unet-a-minsnr   # just these rows
#   STAGES=30,45,60 scripts/recipe-ab.sh unet-a-minsnr   # continue a row to longer budgets
#                                        # (rows NAME@30, NAME@45, NAME@60, one run resumed)
#   N=200 BUDGET=1 OUT_CSV=/tmp/ab.csv scripts/recipe-ab.sh seed   # a smoke test
#
# A constant-rate row at a longer budget is the same run continued, so its
# first 15 minutes are the 15-minute row. A cosine row decays over its own
# budget, so each of its budgets is a run of its own.
#
# Training folders: ~/.cache/diffusion-executed/recipe-ab/ (or $WORK). A row's
# folder may be seeded from crates/training/runs/NAME/ (a committed resumable
# checkpoint and its loss.csv), so that a longer stage can continue on another
# machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
BUDGET="${BUDGET:-15}"         # minutes of training per row, on all cores
CORES="$(nproc)"
N="${N:-1000}"                 # samples per guidance scale
STAGES="${STAGES:-$BUDGET}"    # budgets to stop at and measure, ascending
CSV="${OUT_CSV:-book/generated/recipe_ab.csv}"
# Training folders live outside the clone, so that a later sitting on the same
# machine (a fresh clone) resumes them.
WORK="${WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/diffusion-executed/recipe-ab}"
cargo build --quiet --release --example train --example sample --example evaluate
bin="$(target_dir)/release/examples"

# name | what changes | train flags (on top of the common ones below).
# In the order they run: the baseline, then the networks, then the recipe,
# each recipe row one change from the best network at 15 min, unet-s-pt.
ROWS=$(cat <<'EOF'
seed|shipped recipe: SeedUNet C=64 + full-res path, ε, lr 2e-3, EMA 0.995|--model seed --channels 64 --full-res-skip --lr 2e-3 --ema-decay 0.995
unet-a-minsnr|+ min-SNR-5 weighting|--model unet --block-out-channels 32,64,64 --lr 1e-3 --ema-decay 0.999 --loss-weighting min-snr-5
unet-s|UNet (16,32,64): cheaper|--model unet --block-out-channels 16,32,64 --lr 1e-3 --ema-decay 0.999 --loss-weighting min-snr-5
unet-b|UNet (32,64,128): more capacity at 7×7|--model unet --block-out-channels 32,64,128 --lr 1e-3 --ema-decay 0.999 --loss-weighting min-snr-5
unet-s-pt|unet-s from PyTorch's init (the UNet's init since the fix; rows above: tch's, √6 wider)|--model unet --block-out-channels 16,32,64 --lr 1e-3 --ema-decay 0.999 --loss-weighting min-snr-5
unet-a-pt|unet-a-minsnr from PyTorch's init: (32,64,64)|--model unet --block-out-channels 32,64,64 --lr 1e-3 --ema-decay 0.999 --loss-weighting min-snr-5
unet-b-pt|unet-b from PyTorch's init: (32,64,128)|--model unet --block-out-channels 32,64,128 --lr 1e-3 --ema-decay 0.999 --loss-weighting min-snr-5
s-v|unet-s-pt with v-prediction (min-SNR-5 on v)|--model unet --block-out-channels 16,32,64 --lr 1e-3 --ema-decay 0.999 --loss-weighting min-snr-5 --prediction v
s-eps|unet-s-pt without min-SNR (uniform L_simple)|--model unet --block-out-channels 16,32,64 --lr 1e-3 --ema-decay 0.999 --loss-weighting uniform
s-lr2e-3|unet-s-pt with lr 2e-3|--model unet --block-out-channels 16,32,64 --lr 2e-3 --ema-decay 0.999 --loss-weighting min-snr-5
s-cosine|unet-s-pt with lr 2e-3, warm-up 200, cosine decay to 0.1×|--model unet --block-out-channels 16,32,64 --lr 2e-3 --warmup 200 --lr-decay cosine --ema-decay 0.999 --loss-weighting min-snr-5 --steps COSINE_STEPS
s-ema9995|unet-s-pt with EMA 0.9995|--model unet --block-out-channels 16,32,64 --lr 1e-3 --ema-decay 0.9995 --loss-weighting min-snr-5
s-b256|unet-s-pt with batch 256|--model unet --block-out-channels 16,32,64 --lr 1e-3 --ema-decay 0.999 --loss-weighting min-snr-5 --batch-size 256
s-b64|unet-s-pt with batch 64|--model unet --block-out-channels 16,32,64 --lr 1e-3 --ema-decay 0.999 --loss-weighting min-snr-5 --batch-size 64
EOF
)
COMMON="--dataset fashion-mnist --p-uncond 0.1 --seed 0 --samples 0 --checkpoint-every 250 --keep 1"

if [ ! -f "$CSV" ]; then
  echo "row,change,budget_min,steps,train_s,img_s,acc_w3,fd_w3,prec_w3,rec_w3,acc_w1,fd_w1,prec_w1,rec_w1,flags" > "$CSV"
fi
want=("$@")
selected() { [ ${#want[@]} -eq 0 ] && return 0; local w; for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

# Samples at w = 3 and w = 1 from the newest checkpoint in $1, measured; one CSV row.
measure() { # row change budget dir flags
  local row="$1" change="$2" budget="$3" dir="$4" flags="$5" ckpt w f
  ckpt="$(ls "$dir"/ckpt-*.safetensors | tail -1)"
  for w in 3 1; do
    f="$dir/ddim50-w$w-n$N-$budget.safetensors"
    [ -f "$f" ] && [ "$f" -nt "$ckpt" ] && continue
    nice -n 5 "$bin/sample" --checkpoint "$ckpt" --sampler ddim --steps 50 --guidance "$w" \
      --per-class $((N / 10)) --seed 0 --no-grid --save-tensors "$f"
  done
  "$bin/evaluate" --samples "$dir/ddim50-w3-n$N-$budget.safetensors" "$dir/ddim50-w1-n$N-$budget.safetensors" --csv "$dir/eval.csv"
  python3 - "$row" "$change" "$budget" "$dir" "$flags" "$CORES" >> "$CSV" <<'PY'
import csv, sys
row, change, budget, d, flags, cores = sys.argv[1:]
log = [l.split(",") for l in open(f"{d}/loss.csv").read().split("\n")[1:] if l]
steps, secs = int(float(log[-1][0])), float(log[-1][4]) / int(cores)  # core-seconds per core
batch = int(flags.split("--batch-size ")[1].split()[0]) if "--batch-size" in flags else 128
ev = list(csv.reader(open(f"{d}/eval.csv")))[1:]
w3, w1 = ev[-2], ev[-1]
f = lambda r: [f"{float(r[2]):.3f}", f"{float(r[3]):.2f}", f"{float(r[4]):.3f}", f"{float(r[5]):.3f}"]
out = csv.writer(sys.stdout, lineterminator="\n")
out.writerow([row, change, budget, steps, f"{secs:.0f}", f"{steps * batch / secs:.0f}", *f(w3), *f(w1), flags])
PY
  tail -1 "$CSV"
}

while IFS='|' read -r name change flags; do
  [ -n "$name" ] || continue
  selected "$name" || continue
  for stage in ${STAGES//,/ }; do
    row="$name"; [ "$stage" = 15 ] || row="$name@$stage"
    if grep -q "^$row," "$CSV"; then echo "==> $row: in $CSV already"; continue; fi
    dir="$WORK/$name"
    run_flags="$flags"
    if [[ "$flags" == *COSINE_STEPS* ]]; then
      # A cosine row needs its length in steps: the budget at the speed of
      # the row's first 30 steps on this machine.
      [ "$stage" = 15 ] || dir="$WORK/$name@$stage"
      mkdir -p "$dir"
      if [ ! -f "$dir/steps" ]; then
        probe="$dir-probe"; rm -rf "$probe"
        "$bin/train" ${flags/--steps COSINE_STEPS/} $COMMON --steps 30 --out "$probe" >/dev/null
        python3 - "$probe/loss.csv" "$stage" "$CORES" > "$dir/steps" <<'PY'
import sys
rows = [l.split(",") for l in open(sys.argv[1]).read().split("\n")[1:] if l]
s0, s1, c0, c1 = float(rows[0][0]), float(rows[-1][0]), float(rows[0][4]), float(rows[-1][4])
print(int(float(sys.argv[2]) * float(sys.argv[3]) * 60 * (s1 - s0) / (c1 - c0)))
PY
        rm -rf "$probe"
      fi
      run_flags="${flags/COSINE_STEPS/$(cat "$dir/steps")}"
    elif [[ "$flags" != *--steps* ]]; then
      run_flags="$flags --steps 100000000"
    fi
    mkdir -p "$dir"
    # A run committed to the repository (a sitting's resumable checkpoint, for
    # a next sitting on another machine) seeds an empty folder.
    seed="$ROOT/crates/training/runs/$name"
    if ! ls "$dir"/ckpt-*.safetensors >/dev/null 2>&1 && [ -d "$seed" ]; then
      cp "$seed"/ckpt-*.safetensors "$seed"/loss.csv "$dir"/
    fi
    resume=""
    ls "$dir"/ckpt-*.safetensors >/dev/null 2>&1 && resume="--resume"
    echo "==> $row: $change ($stage min)"
    nice -n 5 "$bin/train" $run_flags $COMMON --cpu-minutes "$(python3 -c "print($stage * $CORES)")" --out "$dir" $resume
    measure "$row" "$change" "$stage" "$dir" "$run_flags"
  done
done <<< "$ROWS"
