#!/usr/bin/env bash
# The README's test command: setup, then every check of the book and its code.
# Exits non-zero on the first failure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
step() { printf '\n==> %s\n' "$*"; }

step "setup"
bash scripts/setup.sh

step "bad setups give one clear line"
bash scripts/check-setup-errors.sh

step "gates: cargo fmt --check, clippy with warnings as errors, the core at most 2,200 lines"
cargo fmt --all --check || { echo "error: the tree is not rustfmt-formatted: run cargo fmt --all" >&2; exit 1; }
cargo clippy --workspace --all-targets --quiet -- -D warnings
python3 scripts/core-lines.py --max 2200

step "cargo test --workspace"
cargo test --workspace --quiet

step "cargo build --workspace --examples"
cargo build --workspace --examples --quiet

step "examples end to end: train, resume, every sampler reproducible, bad CLI values"
bash scripts/check-examples.sh

step "classroom kit: assignments build, score 0, full marks with solutions, a wrong answer loses only its task"
bash scripts/check-classroom.sh

step "book sources: no hand-copied Rust, anchors pair up, files and images exist"
python3 scripts/check-book.py

step "math ↔ code map: every function and test it names exists"
python3 scripts/check-math-map.py

step "mdbook test"
bash scripts/book-test.sh

step "the book check can fail: a broken snippet must fail mdbook test"
bash scripts/check-book-test-fails.sh

step "mdbook build"
mdbook build
[ -f "$ROOT/target/book/index.html" ] || { echo "error: mdbook build produced no index.html" >&2; exit 1; }

step "deploy workflow: valid YAML, the pinned tools, the same mdbook build"
"$(venv_python)" scripts/check-deploy.py

step "the rendered book in headless Chromium: no console errors, math rendered, images loaded, links resolve, search works"
bash scripts/check-rendered.sh --book "$ROOT/target/book"

step "the scripts' own tests (pytest scripts/tests): the rendered check fails a broken book, exits 2 when it cannot run"
"$(venv_python)" -m pytest -q -p no:cacheprovider scripts/tests

step "all checks passed"
