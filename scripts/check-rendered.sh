#!/usr/bin/env bash
# Builds the book quietly, then checks the rendered pages in headless Chromium,
# driven by Playwright from the venv (scripts/check-rendered.py): console errors
# and failed requests, math rendered, images loaded, internal links and anchors,
# no playground buttons, search works, screenshots of three pages in
# target/book-screenshots/.
#
#   scripts/check-rendered.sh                  mdbook build, then check target/book
#   scripts/check-rendered.sh --book DIR       check a book built elsewhere (no build)
#   other arguments go to the Python script:   --query WORD  --timeout S  --src DIR  --screenshots DIR
#
# Exit status: 0 all good, 1 a problem in the book, 2 the check could not run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

build=1
for a in "$@"; do
  case "$a" in --book|--book=*) build=0 ;; esac
done
if [ "$build" = 1 ]; then
  command -v mdbook >/dev/null 2>&1 || { echo "error: mdbook not found: run scripts/setup.sh" >&2; exit 2; }
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  if ! mdbook build >"$log" 2>&1; then
    cat "$log" >&2
    echo "error: mdbook build failed" >&2
    exit 1
  fi
fi

# Playwright lives in the venv that scripts/setup.sh made.
py="$(venv_python)" || exit 2
exec "$py" "$ROOT/scripts/check-rendered.py" "$@"
