#!/usr/bin/env bash
# Flow matching against diffusion at equal training time ("Flow matching",
# issue #20): the same UNet (16, 32, 64), data, batch, optimiser, EMA and
# label dropout as the Training chapter's unet-s-pt row, trained once as a
# diffusion (ε, min-SNR-5: the shipped model's recipe) and once as a
# rectified flow (velocity, uniform t), each for BUDGET minutes of CPU time.
# The two train side by side with one thread each, so that neither gets a
# quieter machine than the other; the budget is CPU time, so other work on
# the machine slows them down but does not shorten them. An interrupted run
# resumes from its newest checkpoint. Each finished run's EMA weights are
# exported to crates/training/runs/flow-vs-diffusion/NAME/model.safetensors,
# where `scripts/make-figures.sh flow` reads them.
#
#   scripts/flow-vs-diffusion.sh            # 30 CPU-minutes each (15 min of 2 cores)
#   BUDGET=1 scripts/flow-vs-diffusion.sh   # a smoke test
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
BUDGET="${BUDGET:-30}"  # CPU-minutes per model
WORK="${WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/diffusion-executed/flow-vs-diffusion}"
RUNS="${RUNS:-crates/training/runs/flow-vs-diffusion}"
cargo build --quiet --release --example train --example export_pretrained
bin="$(target_dir)/release/examples"
COMMON="--dataset fashion-mnist --model unet --block-out-channels 16,32,64 --lr 1e-3 --ema-decay 0.999
  --p-uncond 0.1 --seed 0 --samples 0 --checkpoint-every 250 --keep 1 --steps 100000000 --cpu-minutes $BUDGET"
declare -A FLAGS=(
  [diffusion]="--objective diffusion --prediction eps --loss-weighting min-snr-5"
  [flow]="--objective flow"
)
pids=()
for name in diffusion flow; do
  mkdir -p "$WORK/$name"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 nice -n 5 "$bin/train" $COMMON ${FLAGS[$name]} --out "$WORK/$name" \
    > "$WORK/$name/train.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for name in diffusion flow; do
  tail -1 "$WORK/$name/train.log"
  ckpt="$(ls "$WORK/$name"/ckpt-*.safetensors | tail -1)"
  mkdir -p "$RUNS/$name"
  "$bin/export_pretrained" --checkpoint "$ckpt" --out "$RUNS/$name/model.safetensors" \
    --command "scripts/flow-vs-diffusion.sh (BUDGET=$BUDGET CPU-minutes, one thread each)" \
    --hardware "$(nproc)-core $(lscpu | sed -n 's/^Model name: *//p' | head -1)" >/dev/null
  echo "$name: $(basename "$ckpt") → $RUNS/$name/model.safetensors"
done
