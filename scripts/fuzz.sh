#!/usr/bin/env bash
# Fuzzes the dataset parsers (IDX and CIFAR-10) with cargo fuzz / libFuzzer.
#
#   scripts/fuzz.sh [RUNS=1000000]
#
# Installs cargo-fuzz if missing. The toolchain here is stable; cargo fuzz needs
# a few unstable compiler flags, which RUSTC_BOOTSTRAP=1 allows for this build
# only. Seeds each corpus with small valid files so the fuzzer starts past the
# format checks.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS="${1:-1000000}"
command -v cargo-fuzz >/dev/null 2>&1 || (cd / && cargo install --locked --quiet cargo-fuzz)
cd "$ROOT/crates/data/fuzz"
mkdir -p corpus/idx corpus/cifar
python3 - <<'PY'
import struct
def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)
open("corpus/idx/seed-images", "wb").write(idx([2, 3, 3], range(18)))
open("corpus/idx/seed-labels", "wb").write(idx([4], [1, 2, 3, 9]))
rec = lambda label: bytes([label]) + bytes(i % 256 for i in range(3072))
open("corpus/cifar/seed-one", "wb").write(rec(3))
open("corpus/cifar/seed-two", "wb").write(rec(0) + rec(9))
PY
for target in idx cifar; do
  echo "==> fuzz $target: $RUNS runs"
  log="$(mktemp)"
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" "corpus/$target" -- -runs="$RUNS" -max_len=8192 >"$log" 2>&1; then
    tail -30 "$log"
    echo "error: fuzz target $target failed (inputs in crates/data/fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E "DONE|^Done" "$log"
  rm -f "$log"
done
