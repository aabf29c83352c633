#!/usr/bin/env bash
# Sampling with glibc's default allocator settings against the book's
# (util::keep_freed_memory: no mmap for large blocks, no trimming), side by
# side and interleaved run by run. Workload: the shipped model, DDIM-20 with
# guidance w = 3, 500 images in one batch (what model-card.sh and the sweeps do).
# Prints each run, the medians, and the ratio default / tuned.
#
#   scripts/bench/allocator.sh [REPEATS=3]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"
REPEATS="${1:-3}"
cargo build --quiet --release --example sample
BIN="$(target_dir)/release/examples/sample"
args=(--pretrained fashion-cfg --sampler ddim --steps 20 --guidance 3 --per-class 50 --batch-size 500 --seed 0 --no-grid --device cpu)
timed() { # prints "wall user sys" in seconds (bash's time keyword)
  local TIMEFORMAT='%R %U %S'
  { time "$@" > /dev/null 2>&1; } 2>&1
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); 500 images × 20 steps × 2 passes; $REPEATS runs each"
d=() t=()
for rep in $(seq "$REPEATS"); do
  a=$(DIFFUSION_DEFAULT_MALLOC=1 timed "$BIN" "${args[@]}")
  b=$(timed "$BIN" "${args[@]}")
  echo "run $rep: default wall/user/sys $a s | tuned $b s"
  d+=("${a%% *}") t+=("${b%% *}")
done
python3 - "${d[*]}" "${t[*]}" <<'PY'
import statistics, sys
d = [float(x) for x in sys.argv[1].split()]
t = [float(x) for x in sys.argv[2].split()]
md, mt = statistics.median(d), statistics.median(t)
print(f"median wall: default {md:.1f} s, tuned {mt:.1f} s, ratio default/tuned {md / mt:.2f}x")
PY
