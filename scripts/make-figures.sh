#!/usr/bin/env bash
# Regenerates every figure and console output that the book includes
# (book/figures/*, book/generated/*). Run after changing an example.
#
#   scripts/make-figures.sh            # everything (~90 min on 2 cores: it trains small models)
#   scripts/make-figures.sh sampling   # only the named parts: setup forward network train recipe ttq bench allocator sampling
#                                      # guidance one_page classroom intro measuring memorisation derivations two_d ode zero_snr flow bugs
# The shipped model's card has its own, longer script: scripts/model-card.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
GEN="$ROOT/book/generated"
FIG="$ROOT/book/figures"
mkdir -p "$GEN" "$FIG"
CKPT="$ROOT/target/figures-train/ckpt-00001800.safetensors"
strip() { sed "s|$ROOT/||g"; }
run() { cargo run --quiet --release --example "$@"; }

part_setup() {
  cargo run --quiet --example device_info > "$GEN/device_info.txt"
}
part_forward() {
  run forward_process -- --out "$FIG/forward" | strip > "$GEN/forward_process.txt"
}
part_network() {
  run network_summary -- --figure-dir "$FIG/network" | strip > "$GEN/network_summary.txt"
  cargo test --quiet -p network --test parity -- --nocapture --test-threads 1 2>/dev/null > "$GEN/.parity.log"
  grep -E "Δ|written" "$GEN/.parity.log" | grep -v '^\[' > "$GEN/parity.txt"
  grep -oE '\[(no-)?attention\] .*' "$GEN/.parity.log" | grep -E "Δ|strict|saved" > "$GEN/parity_unet.txt"
  rm "$GEN/.parity.log"
}
part_train() { # the chapter's default run: about 9 minutes on 2 cores
  rm -rf "$ROOT/target/figures-train"
  run train -- --out "$ROOT/target/figures-train" 2>&1 | grep -v '^\s*$' | strip > "$GEN/train.txt"
  mkdir -p "$FIG/training"
  cp "$ROOT/target/figures-train/loss.png" "$ROOT/target/figures-train/samples.png" "$FIG/training/"
  # What the reader's run reaches: 500 samples (DDIM-50, w = 3), measured.
  run sample -- --checkpoint "$CKPT" --sampler ddim --steps 50 --guidance 3 --per-class 50 --seed 0 \
    --no-grid --save-tensors "$ROOT/target/figures-train/ddim50-w3-n500.safetensors" > /dev/null
  run evaluate -- --samples "$ROOT/target/figures-train/ddim50-w3-n500.safetensors" | strip > "$GEN/train_eval.txt"
}
part_recipe() { # the recipe A/B's table and chart (the runs: scripts/recipe-ab.sh, hours on 2 cores)
  mkdir -p "$FIG/training"
  local chart=()
  grep -q '^[^,]*@' "$GEN/recipe_ab.csv" && chart=(--chart "$FIG/training/recipe_time.png")
  run recipe_report -- --csv "$GEN/recipe_ab.csv" --markdown "$GEN/recipe_ab.md" "${chart[@]}" | strip
}
part_ttq() { # our trainer against PyTorch + diffusers at equal CPU time (~30 min on 2 cores)
  bash scripts/bench/time_to_quality.sh | grep -v '^\(ours\|diffusers\): ' > "$GEN/time_to_quality.txt"
}
part_bench() {
  bash scripts/bench/train_throughput.sh 5 20 > "$GEN/train_throughput.txt"
}
part_allocator() { # glibc's default malloc settings against util::keep_freed_memory (~3 min)
  bash scripts/bench/allocator.sh 3 > "$GEN/allocator.txt"
}
part_sampling() { # the DDPM and DDIM chapters' pictures, from the shipped model (~6 min on 2 cores)
  mkdir -p "$FIG/reverse"
  run sample -- --pretrained fashion-cfg --sampler ddpm --n 20 --seed 0 --out "$FIG/reverse/ddpm.png" \
    --trajectory "$FIG/reverse/ddpm-trajectory.png" --gif "$FIG/reverse/ddpm.gif" | strip > "$GEN/sample_ddpm.txt"
  run ddim_study -- --pretrained fashion-cfg --out "$ROOT/target/figures-ddim" | strip > "$GEN/ddim_study.txt"
  cp "$ROOT"/target/figures-ddim/{steps,grids,inversion,interpolation}.png "$FIG/reverse/"
}
part_guidance() { # the Guidance chapter's pictures, from the shipped model
  mkdir -p "$FIG/guidance"
  run guidance_sweep -- --pretrained fashion-cfg --scales 0,1,2,3,5 --per-class 8 --out "$ROOT/target/figures-guidance" \
    2>&1 | strip > "$GEN/guidance_sweep.txt"
  cp "$ROOT"/target/figures-guidance/{sweep,diversity}.png "$FIG/guidance/"
  run guidance_cost -- --pretrained fashion-cfg | strip > "$GEN/guidance_cost.txt"
}

part_one_page() { # about six minutes on 2 cores
  mkdir -p "$FIG/one_page"
  local o="$ROOT/target/figures-one-page"
  run one_page -- --out "$o" | strip > "$GEN/one_page.txt"
  rm -f "$FIG"/one_page/{ddpm,ddim50_guided3}.png
  run label_grid -- --title "one_page.rs after 1200 steps: two samples per class and sampler" \
    --input "DDPM-1000=$o/ddpm.safetensors" --input "DDIM-50=$o/ddim50.safetensors" \
    --input "DDIM-50, w = 3=$o/ddim50_guided3.safetensors" --out "$FIG/one_page/samples.png" | strip
}

part_classroom() {
  GRADE_EXAMPLE_OUT="$GEN/grade_example.txt" bash scripts/check-classroom.sh
}

part_intro() { # pictures from the shipped model
  mkdir -p "$FIG/intro"
  run sample -- --pretrained fashion-cfg --sampler ddim --steps 50 --guidance 3 --per-class 8 --seed 0 \
    --out "$FIG/intro/samples.png" | strip > "$GEN/intro_sample.txt"
  run sample -- --pretrained fashion-cfg --sampler ddpm --guidance 3 --per-class 1 --seed 1 \
    --out "$FIG/intro/ddpm.png" --gif "$FIG/intro/denoise.gif" --trajectory "$FIG/intro/trajectory.png" \
    | strip >> "$GEN/intro_sample.txt"
}

part_measuring() { # the reference rows, the guidance curve and the DDIM step table of the shipped model
  mkdir -p "$FIG/measuring" "$ROOT/target/measuring"
  run sample -- --pretrained fashion-cfg --sampler ddim --steps 50 --guidance 3 --per-class 100 --seed 0 \
    --no-grid --save-tensors "$ROOT/target/measuring/ddim50-w3.safetensors" | strip > "$GEN/evaluate.txt"
  run evaluate -- --samples "$ROOT/target/measuring/ddim50-w3.safetensors" | strip >> "$GEN/evaluate.txt"
  run measure_sweep -- --n 500 --guidance 0,1,1.5,2,3,5 --steps 10,20,50 --out "$ROOT/target/measuring" | strip > "$GEN/measure_sweep.txt"
  cp "$ROOT/target/measuring/guidance.png" "$FIG/measuring/"
  cp "$ROOT/target/measuring/guidance.md" "$GEN/measuring_guidance.md"
  cp "$ROOT/target/measuring/steps.md" "$GEN/measuring_steps.md"
}

part_derivations() { # "Where the loss comes from": the ELBO's weight that L_simple drops (seconds)
  mkdir -p "$FIG/derivations"
  cargo run --quiet --release -p closed-form --example elbo_weight -- --out "$FIG/derivations" | strip > "$GEN/elbo_weight.txt"
}

part_two_d() { # "Diffusion in two dimensions": an MLP trained in seconds, every figure of the chapter
  mkdir -p "$FIG/two_d"
  cargo run --quiet --release -p closed-form --example two_d -- --out "$FIG/two_d" | strip > "$GEN/two_d.txt"
}

part_memorisation() { # nearest training images of the shipped model's samples (needs part measuring's samples)
  mkdir -p "$FIG/measuring"
  run nearest_neighbours -- --samples "$ROOT/target/measuring/ddim50-w3.safetensors" \
    --out "$FIG/measuring/nearest.png" | strip > "$GEN/nearest_neighbours.txt"
}

part_ode() { # "The score and the ODE": the few-step table, chart and grid (~14 min on 2 cores), the parity table
  mkdir -p "$FIG/ode" "$ROOT/target/few-steps"
  run few_steps -- --out "$ROOT/target/few-steps" | strip > "$GEN/few_steps.txt"
  cp "$ROOT/target/few-steps/few_steps.png" "$ROOT/target/few-steps/few_steps_grid.png" "$FIG/ode/"
  cp "$ROOT/target/few-steps/few_steps.md" "$GEN/few_steps.md"
  cp "$ROOT/target/few-steps/few_steps.csv" "$GEN/few_steps.csv"
  SCHEDULER_PARITY_MD="$GEN/scheduler_parity.md" cargo test --quiet --release -p reverse --test ode diffusers > /dev/null
}

part_zero_snr() { # "The score and the ODE": zero terminal SNR, from two committed models (~6 min)
  # The models (2000 steps each, about 17 min for the pair on 2 cores, one thread each):
  #   train --model unet --block-out-channels 16,32,64 --prediction v --loss-weighting uniform \
  #     --schedule sd_scaled_linear [--zero-terminal-snr] --steps 2000 --samples 0 --out DIR
  # then export_pretrained to crates/training/runs/zsnr-{plain,rescaled}/model.safetensors.
  ZERO_SNR_PARITY_MD="$GEN/zero_snr_parity.md" cargo test --quiet --release -p classifier-free --test zero_snr > /dev/null
  mkdir -p "$FIG/ode" "$ROOT/target/zero-snr"
  local o="$ROOT/target/zero-snr" runs="$ROOT/crates/training/runs" m
  for m in plain rescaled; do
    run sample -- --checkpoint "$runs/zsnr-$m/model.safetensors" --sampler ddim --steps 50 --per-class 100 \
      --seed 0 --no-grid --save-tensors "$o/$m-w1.safetensors" > /dev/null
    run sample -- --checkpoint "$runs/zsnr-$m/model.safetensors" --sampler ddim --steps 50 --per-class 100 \
      --guidance 3 --seed 0 --no-grid --save-tensors "$o/$m-w3.safetensors" > /dev/null
    run sample -- --checkpoint "$runs/zsnr-$m/model.safetensors" --sampler ddim --steps 50 --per-class 2 \
      --guidance 3 --seed 1 --no-grid --save-tensors "$o/$m-w3-grid.safetensors" > /dev/null
  done
  run sample -- --checkpoint "$runs/zsnr-rescaled/model.safetensors" --sampler ddim --steps 50 --per-class 100 \
    --guidance 3 --guidance-rescale 0.7 --seed 0 --no-grid --save-tensors "$o/rescaled-w3-phi.safetensors" > /dev/null
  run sample -- --checkpoint "$runs/zsnr-rescaled/model.safetensors" --sampler ddim --steps 50 --per-class 2 \
    --guidance 3 --guidance-rescale 0.7 --seed 1 --no-grid --save-tensors "$o/rescaled-w3-phi-grid.safetensors" > /dev/null
  run brightness -- --input "SD schedule, w = 1=$o/plain-w1.safetensors" --input "zero SNR, w = 1=$o/rescaled-w1.safetensors" \
    --markdown "$GEN/zero_snr_brightness_w1.md" --chart "$FIG/ode/brightness.png" | strip > /dev/null
  run brightness -- --input "SD schedule, w = 3=$o/plain-w3.safetensors" --input "zero SNR, w = 3=$o/rescaled-w3.safetensors" \
    --input "zero SNR, w = 3, φ = 0.7=$o/rescaled-w3-phi.safetensors" --markdown "$GEN/zero_snr_brightness_w3.md" | strip > /dev/null
  run evaluate -- --samples "$o/plain-w1.safetensors" "$o/rescaled-w1.safetensors" "$o/plain-w3.safetensors" \
    "$o/rescaled-w3.safetensors" "$o/rescaled-w3-phi.safetensors" --markdown "$GEN/zero_snr_eval.md" | strip > /dev/null
  run label_grid -- --title "DDIM-50, w = 3, the same noise: Stable Diffusion's schedule against zero terminal SNR" \
    --input "SD schedule=$o/plain-w3-grid.safetensors" --input "zero SNR=$o/rescaled-w3-grid.safetensors" \
    --input "zero SNR, φ = 0.7=$o/rescaled-w3-phi-grid.safetensors" --out "$FIG/ode/zero_snr_grid.png" | strip
}

part_flow() { # "Flow matching": the 2-D example, and the two committed models of scripts/flow-vs-diffusion.sh (~25 min)
  mkdir -p "$FIG/flow"
  cargo run --quiet --release -p closed-form --example flow_2d -- --out "$FIG/flow" | strip > "$GEN/flow_2d.txt"
  run flow_vs_diffusion -- --out "$ROOT/target/flow-vs-diffusion" | strip > /dev/null
  cp "$ROOT/target/flow-vs-diffusion/flow_vs_diffusion.md" "$GEN/"
  cp "$ROOT"/target/flow-vs-diffusion/flow_vs_diffusion{,_grid}.png "$FIG/flow/"
  # Both models at 20 evaluations and two lower guidance scales (~3 min).
  run flow_vs_diffusion -- --evaluations 20 --guidance 1.5,2 --out "$ROOT/target/flow-vs-diffusion-w" | strip > /dev/null
  cp "$ROOT/target/flow-vs-diffusion-w/flow_vs_diffusion.md" "$GEN/flow_vs_diffusion_w.md"
  run sample -- --checkpoint "$ROOT/crates/training/runs/flow-vs-diffusion/flow/model.safetensors" --sampler euler \
    --steps 20 --guidance 2 --per-class 8 --seed 0 --out "$FIG/flow/fashion_samples.png" | strip > /dev/null
}

part_bugs() { # the bug museum: trains four small models, then eight side-by-side comparisons
  mkdir -p "$FIG/bugs"
  run bug_museum -- --out "$ROOT/target/bug-museum" | strip > "$GEN/bug_museum.txt"
  cp "$ROOT"/target/bug-museum/bug-*.png "$FIG/bugs/"
  cp "$ROOT/target/bug-museum/table.md" "$GEN/bug_museum.md"
  # Exhibit 3 in more detail: both small models at w = 0, 1, 3 (museum defaults: 1000 steps, n = 200).
  local m w files
  for m in correct no-dropout; do
    files=()
    for w in 0 1 3; do
      run sample -- --checkpoint "$ROOT/target/bug-museum/models/$m-1000.safetensors" --guidance "$w" \
        --n 200 --seed 0 --no-grid --save-tensors "$ROOT/target/bug-museum/$m-w$w.safetensors" > /dev/null 2>&1
      files+=("$ROOT/target/bug-museum/$m-w$w.safetensors")
    done
    run evaluate -- --no-reference --samples "${files[@]}" --markdown "$GEN/bug_museum_$m.md" > /dev/null
  done
}

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(setup forward network train recipe ttq bench allocator sampling guidance one_page classroom intro measuring memorisation derivations two_d ode zero_snr flow bugs)
for p in "${parts[@]}"; do
  echo "==> $p"
  "part_$p"
done
