#!/usr/bin/env bash
# Training throughput of SeedUNet (28×28×1, batch 64) in tch and in plain
# PyTorch (the venv's torch), with the same thread count, interleaved run by
# run so that machine noise hits both alike. Prints the median img/s of each
# and the ratio tch / PyTorch.
#
#   scripts/bench/train_throughput.sh [REPEATS=5] [STEPS=20]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"
REPEATS="${1:-5}"
STEPS="${2:-20}"
THREADS="${THREADS:-$(nproc)}"
PY="$(readlink -f .libtorch)/../../../../bin/python"
cargo build --quiet --release --example bench_train
BIN="$(target_dir)/release/examples/bench_train"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); threads $THREADS; batch 64; $STEPS timed steps per run; $REPEATS runs each"
results="$(mktemp)"
for rep in $(seq "$REPEATS"); do
  for c in 64 128; do
    # Alternate which side goes first, so neither always runs on a warmer machine.
    if [ $((rep % 2)) = 1 ]; then
      r=$("$BIN" --channels "$c" --steps "$STEPS" --threads "$THREADS" | awk '{print $2}')
      p=$("$PY" scripts/bench/train_throughput.py --channels "$c" --steps "$STEPS" --threads "$THREADS" | awk '{print $2}')
    else
      p=$("$PY" scripts/bench/train_throughput.py --channels "$c" --steps "$STEPS" --threads "$THREADS" | awk '{print $2}')
      r=$("$BIN" --channels "$c" --steps "$STEPS" --threads "$THREADS" | awk '{print $2}')
    fi
    echo "$c $r $p" >> "$results"
    echo "  run $rep  C=$c  tch $r img/s  pytorch $p img/s"
  done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print()
print(f"{'model':<16}{'tch img/s':>12}{'PyTorch img/s':>16}{'ratio':>8}")
for c in ("64", "128"):
    r = statistics.median(float(x[1]) for x in rows if x[0] == c)
    p = statistics.median(float(x[2]) for x in rows if x[0] == c)
    print(f"{'SeedUNet C=' + c:<16}{r:>12.1f}{p:>16.1f}{r / p:>7.2f}x")
PY
rm -f "$results"
