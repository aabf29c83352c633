#!/usr/bin/env bash
# Runs `mdbook test` on a book (default: this repo's) against the workspace crates.
#
#   scripts/book-test.sh [BOOK_ROOT]
#
# mdbook test runs `rustdoc --test -L DIR` on each chapter. Two traps:
#   - rustdoc fails with E0464 ("multiple candidates") when the target's deps
#     folder holds stale copies of a crate from older builds. We therefore ask
#     cargo which rlibs the current build uses and link exactly those into a
#     clean folder.
#   - the snippets link libtorch: its folder goes in -L for the linker and in
#     LD_LIBRARY_PATH for running.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BOOK="${1:-$ROOT}"
TORCH_LIB="$(torch_lib)"
TARGET="$(target_dir)"
DEPS="$TARGET/book-deps"

artifacts="$(cd "$ROOT" && cargo build --quiet --workspace --lib --message-format=json \
  | python3 -c '
import json, sys
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and "custom-build" not in m["target"]["kind"]:
        for f in m["filenames"]:
            if f.endswith((".rlib", ".so")):
                print(f)
')"
rm -rf "$DEPS" && mkdir -p "$DEPS"
while IFS= read -r f; do ln -sf "$f" "$DEPS/"; done <<< "$artifacts"

cd "$BOOK"
LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" mdbook test -L "$DEPS" -L "$TORCH_LIB"
