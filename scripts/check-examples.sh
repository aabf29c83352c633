#!/usr/bin/env bash
# End-to-end checks of the examples on a tiny model trained on synthetic shapes:
#   - train, then --resume to a later step;
#   - every sampler, twice with the same --seed: byte-identical PNG, tensors and trace;
#   - bad CLI values give one clear line;
#   - the shipped model, the evaluator, the sweep and the bug museum, on real Fashion-MNIST.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo build --quiet --example train --example sample   # debug: test.sh has built it already
BIN="$(target_dir)/debug/examples"

train=("$BIN/train" --dataset synthetic --model seed --channels 32 --batch-size 16 --timesteps 100 --samples 0 --checkpoint-every 5 --out "$tmp/run")
"${train[@]}" --steps 5 > /dev/null
"${train[@]}" --steps 10 --resume > "$tmp/resume.log"
grep -q "resuming from .*ckpt-00000005.safetensors" "$tmp/resume.log" || { cat "$tmp/resume.log"; echo "error: --resume did not continue from step 5" >&2; exit 1; }
ck="$tmp/run/ckpt-00000010.safetensors"
[ -f "$ck" ] || { echo "error: no checkpoint at step 10" >&2; exit 1; }
echo "ok: train and --resume (synthetic shapes, 10 steps)"

# The diffusers-layout UNet, from flags and from its own config.json, with the new recipe options.
unet=("$BIN/train" --dataset synthetic --model unet --block-out-channels 16,32 --attention-levels 1
  --batch-size 8 --timesteps 100 --samples 0 --checkpoint-every 2 --loss-weighting min-snr-5
  --lr-decay cosine --prediction v)
"${unet[@]}" --steps 2 --out "$tmp/unet" > /dev/null
"$BIN/sample" --checkpoint "$tmp/unet/ckpt-00000002.safetensors" --sampler ddim --steps 5 --n 4 --out "$tmp/unet.png" > /dev/null
cat > "$tmp/unet.json" <<'JSON'
{"_class_name": "UNet2DModel", "in_channels": 1, "out_channels": 1, "block_out_channels": [16, 32],
 "layers_per_block": 1, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
 "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 8, "attention_head_dim": 8,
 "num_class_embeds": 5}
JSON
"${unet[@]}" --steps 1 --unet-config "$tmp/unet.json" --out "$tmp/unet-json" > /dev/null
sed 's/"num_class_embeds": 5}/"num_class_embeds": 5, "time_embedding_type": "fourier"}/' "$tmp/unet.json" > "$tmp/fourier.json"
out="$("${unet[@]}" --steps 1 --unet-config "$tmp/fourier.json" --out "$tmp/unet-f" 2>&1 || true)"
grep -q "time_embedding_type.*not supported" <<< "$out" || { echo "$out"; echo "error: an unsupported diffusers setting was not refused by name" >&2; exit 1; }
echo "ok: UNet (diffusers layout) trains from flags and from a config.json; unsupported settings are refused"

# A folder saved by diffusers itself (UNet2DModel + DDPMScheduler) samples with the book's sampler.
"$(venv_python)" scripts/parity/diffusers_pipeline.py "$tmp/diffusers" > /dev/null
"$BIN/sample" --diffusers "$tmp/diffusers/pipeline" --per-class 1 --steps 5 --out "$tmp/diffusers.png" > "$tmp/d.log"
grep -q "the weights of diffusers:" "$tmp/d.log" || { cat "$tmp/d.log"; echo "error: sample --diffusers did not load the folder" >&2; exit 1; }
echo "ok: sample --diffusers loads a diffusers pipeline folder (cosine schedule, v-prediction)"

for s in "ddpm --variance small" "ddpm --variance large" "ddim --steps 10 --eta 0" "ddim --steps 10 --eta 1 --spacing linspace" "ddim --steps 7 --eta 0.5 --spacing leading" \
         "euler --steps 10" "heun --steps 5 --karras 7" "dpm-solver-pp --steps 10 --spacing linspace"; do
  for i in 1 2; do
    # shellcheck disable=SC2086
    "$BIN/sample" --checkpoint "$ck" --sampler $s --n 4 --seed 11 --out "$tmp/$i.png" \
      --save-tensors "$tmp/$i.safetensors" --trace "$tmp/$i.trace.safetensors" > /dev/null
  done
  for f in .png .safetensors .trace.safetensors; do
    cmp -s "$tmp/1$f" "$tmp/2$f" || { echo "error: sampler '$s': same seed, different $f files" >&2; exit 1; }
  done
  echo "ok: --sampler $s: same seed, byte-identical PNG, tensors and trace"
done

for i in 1 2; do
  "$BIN/sample" --checkpoint "$ck" --sampler ddim --steps 10 --guidance 3 --per-class 2 --seed 5 \
    --out "$tmp/g$i.png" --save-tensors "$tmp/g$i.safetensors" > "$tmp/g.log"
done
cmp -s "$tmp/g1.safetensors" "$tmp/g2.safetensors" || { echo "error: guided sampling is not reproducible" >&2; exit 1; }
grep -q "8 samples" "$tmp/g.log" || { cat "$tmp/g.log"; echo "error: --per-class 2 with 4 classes should give 8 samples" >&2; exit 1; }
echo "ok: guided sampling (--guidance 3 --per-class 2) is reproducible"

expect_error() { # expected text, args...
  local want="$1"; shift
  if "$@" > "$tmp/err" 2>&1; then echo "error: '$*' succeeded" >&2; exit 1; fi
  grep -q -- "$want" "$tmp/err" || { cat "$tmp/err"; echo "error: '$*' did not say '$want'" >&2; exit 1; }
}
expect_error "batch-size 0" "$BIN/train" --batch-size 0 --out "$tmp/x"
expect_error "steps 0" "$BIN/train" --steps 0 --out "$tmp/x"
expect_error "unknown dataset" "$BIN/train" --dataset imagenet --out "$tmp/x"
expect_error "p-uncond 1.5" "$BIN/train" --p-uncond 1.5 --out "$tmp/x"
expect_error "already holds checkpoints" "${train[@]}" --steps 12
expect_error "0 sampling steps" "$BIN/sample" --checkpoint "$ck" --steps 0
expect_error "η = -1" "$BIN/sample" --checkpoint "$ck" --eta -1
expect_error "invalid value 'uniform' for '--spacing" "$BIN/sample" --checkpoint "$ck" --spacing uniform
expect_error "No such file" "$BIN/sample" --checkpoint "$tmp/missing.safetensors"
expect_error "is negative" "$BIN/sample" --checkpoint "$ck" --guidance -1
expect_error "class 12 is out of range" "$BIN/sample" --checkpoint "$ck" --class 1,12
expect_error "eta (DDIM's noise; the ODE solvers add none) does nothing" "$BIN/sample" --checkpoint "$ck" --sampler heun --eta 0.5
expect_error "karras 0: ρ must be a positive number" "$BIN/sample" --checkpoint "$ck" --sampler dpm-solver-pp --karras 0
echo "ok: bad CLI values give one clear line"

# --- the shipped model and the evaluator (real Fashion-MNIST) ---------------
cargo build --quiet -p examples --example evaluate --example measure_sweep --example bug_museum --example few_steps
"$BIN/sample" --pretrained fashion-cfg --sampler ddim --steps 10 --guidance 3 --per-class 20 --seed 0 \
  --no-grid --save-tensors "$tmp/p.safetensors" > /dev/null
"$BIN/evaluate" --samples "$tmp/p.safetensors" --markdown "$tmp/p.md" > "$tmp/eval.log" 2>&1
for want in "real train images (floor)" "clipped Gaussian noise (ceiling)" "DDIM-10 w=3"; do
  grep -q "$want" "$tmp/eval.log" || { cat "$tmp/eval.log"; echo "error: evaluate printed no '$want' row" >&2; exit 1; }
done
grep -q "^| DDIM-10 w=3" "$tmp/p.md" || { echo "error: evaluate --markdown wrote no table" >&2; exit 1; }
echo "ok: sample --pretrained fashion-cfg, then evaluate: reference rows and the samples' row"

py="$(venv_python)"
"$py" - "$tmp" <<'PY'
import sys, numpy as np
from safetensors.numpy import save_file
d = sys.argv[1]
rng = np.random.default_rng(0)
lab = (np.arange(200) % 10).astype(np.int64)
save_file({"images": rng.random((200, 1, 28, 28), dtype=np.float32) * 255, "labels": lab}, f"{d}/bytes.safetensors")
save_file({"images": rng.random((200, 1, 28, 28), dtype=np.float32) * 2 - 1, "labels": lab[:199]}, f"{d}/count.safetensors")
save_file({"images": rng.random((200, 3, 32, 32), dtype=np.float32) * 2 - 1, "labels": lab}, f"{d}/shape.safetensors")
save_file({"images": rng.random((100, 1, 28, 28), dtype=np.float32) * 2 - 1, "labels": lab[:100]}, f"{d}/few.safetensors")
PY
expect_error "expected \[−1, 1\]" "$BIN/evaluate" --samples "$tmp/bytes.safetensors"
expect_error "labels have shape \[199\]" "$BIN/evaluate" --samples "$tmp/count.safetensors"
expect_error "the classifier needs \[N, 1, 28, 28\]" "$BIN/evaluate" --samples "$tmp/shape.safetensors"
expect_error "no 'images' tensor" "$BIN/evaluate" --samples "$ck"
expect_error "no pretrained diffusion model 'nope'" "$BIN/sample" --pretrained nope
"$BIN/evaluate" --no-reference --samples "$tmp/few.safetensors" > /dev/null 2> "$tmp/few.log"
grep -q "Fréchet distance is unreliable" "$tmp/few.log" || { cat "$tmp/few.log"; echo "error: no warning for 100 samples < 128 features" >&2; exit 1; }
echo "ok: evaluate refuses bad sample files with one line, and warns below 128 samples"

"$BIN/measure_sweep" --guidance 1 --steps 5 --n 20 --out "$tmp/sweep" > /dev/null
[ -s "$tmp/sweep/guidance.png" ] && [ -s "$tmp/sweep/steps.md" ] || { echo "error: measure_sweep wrote no figure/table" >&2; exit 1; }
"$BIN/few_steps" --evaluations 3 --n 20 --out "$tmp/few" > "$tmp/few.txt"
grep -q "^| DPM-Solver++(2M) | 3 |" "$tmp/few/few_steps.md" && grep -q "^| Heun | 3 |" "$tmp/few/few_steps.md" && [ -s "$tmp/few/few_steps.png" ] \
  || { cat "$tmp/few.txt"; echo "error: few_steps wrote no table row per sampler, or no chart" >&2; exit 1; }
"$BIN/bug_museum" --only w_convention,ddim_sigma --n 20 --out "$tmp/museum" > "$tmp/museum.log"
grep -q "w_convention: accuracy" "$tmp/museum.log" && [ -s "$tmp/museum/bug-ddim_sigma.png" ] \
  || { cat "$tmp/museum.log"; echo "error: bug_museum did not report its exhibits" >&2; exit 1; }
expect_error "unknown exhibit 'typo'" "$BIN/bug_museum" --only typo --out "$tmp/museum"
echo "ok: measure_sweep, few_steps and bug_museum (tiny settings)"
