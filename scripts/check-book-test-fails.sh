#!/usr/bin/env bash
# Proves that `mdbook test` can fail: copy the book, break one snippet's assert,
# and expect scripts/book-test.sh to exit non-zero.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r "$ROOT/book.toml" "$ROOT/book" "$tmp/"
cat > "$tmp/book/SUMMARY.md" <<'MD'
# Summary

- [Broken](broken.md)
MD
cat > "$tmp/book/broken.md" <<'MD'
# Broken

```rust
# extern crate tch; // required for mdbook test
let x = tch::Tensor::from_slice(&[1.0f32, 2.0]);
assert_eq!(x.sum(tch::Kind::Float).double_value(&[]), 4.0, "deliberately wrong");
```
MD
if bash "$ROOT/scripts/book-test.sh" "$tmp" >"$tmp/log" 2>&1; then
  cat "$tmp/log"
  echo "error: mdbook test passed on a deliberately broken snippet" >&2
  exit 1
fi
grep -q "deliberately wrong" "$tmp/log" || { cat "$tmp/log"; echo "error: the broken snippet failed for another reason" >&2; exit 1; }
echo "ok: mdbook test fails on a broken snippet (its assert message was printed)"
