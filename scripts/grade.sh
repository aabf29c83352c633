#!/usr/bin/env bash
# Grades a student workspace with the book's own tests: a per-task table
# (tests passed, points), a total, and DIR/grade.json.
#
#   scripts/grade.sh DIR [--json FILE]
# DIR needs libtorch: run scripts/setup.sh in it first (or link DIR/.libtorch).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dir="${1:?usage: scripts/grade.sh DIR [--json FILE]}"
shift
[ -f "$dir/Cargo.toml" ] || { echo "error: $dir is not a workspace (no Cargo.toml)" >&2; exit 2; }
[ -f "$dir/.libtorch/lib/libtorch_cpu.so" ] || { echo "error: $dir has no libtorch: run scripts/setup.sh in it" >&2; exit 2; }
python3 "$ROOT/scripts/classroom/kit.py" grade "$dir" "$@"
