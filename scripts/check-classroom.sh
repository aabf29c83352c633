#!/usr/bin/env bash
# Tests of the classroom kit itself:
#   1. a generated assignment builds, and scores 0 on every removed task;
#   2. with the solutions pasted back it scores full marks;
#   3. a deliberately wrong q_sample (1 − ᾱ instead of √(1 − ᾱ)) loses the points
#      of that task and no others.
# The assignment shares one target dir and the venv's libtorch path, so only the
# workspace crates are rebuilt between the three runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
LIBTORCH="$(readlink -f .libtorch)"
export LIBTORCH
export CARGO_TARGET_DIR="$(target_dir)/classroom"
a="$tmp/assignment"

bash scripts/make-assignment.sh "$a" > /dev/null
ln -s "$LIBTORCH" "$a/.libtorch"
grep -q 'todo!("TASK q_sample' "$a/crates/forward/src/lib.rs" || { echo "error: q_sample was not removed" >&2; exit 1; }
# The todo!() stubs leave unused parameters: show the compiler's output only if the build fails.
(cd "$a" && cargo build --quiet --workspace) > "$tmp/build.log" 2>&1 \
  || { cat "$tmp/build.log"; echo "error: the generated assignment does not build" >&2; exit 1; }
echo "ok: the generated assignment builds"

score() { # expected per-task points as "name=points …"
  bash scripts/grade.sh "$a" --json "$tmp/grade.json" > "$tmp/grade.txt" 2>&1 || true
  python3 - "$tmp/grade.json" "$@" <<'PY' || { cat "$tmp/grade.txt"; exit 1; }
import json, sys
got = {r["task"]: r["points"] for r in json.load(open(sys.argv[1]))["tasks"]}
want = dict((k, int(v)) for k, v in (a.split("=") for a in sys.argv[2:]))
bad = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
if bad:
    print("error: unexpected scores (got, wanted):", bad, file=sys.stderr)
    sys.exit(1)
PY
}
all_tasks="betas q_sample time_embedding ddpm_step ddim_step guidance dpm_update flow_loss"
score $(for t in $all_tasks; do echo "$t=0"; done)
echo "ok: every removed task scores 0"

python3 scripts/classroom/kit.py restore "$a" > /dev/null
score $(for t in $all_tasks; do echo "$t=10"; done)
echo "ok: with the solutions pasted back, every task scores full marks"

python3 - "$a/crates/forward/src/lib.rs" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
right = "t.gather(&self.sqrt_one_minus_alpha_bar, x0) * noise"
assert right in s, "q_sample solution not found"
open(p, "w").write(s.replace(right, "(1f64 - t.gather(&self.alpha_bar, x0)) * noise"))
PY
score betas=10 q_sample=0 time_embedding=10 ddpm_step=10 ddim_step=10 guidance=10 dpm_update=10 flow_loss=10
echo "ok: a wrong q_sample (1 − ᾱ for √(1 − ᾱ)) loses exactly the q_sample points"
# scripts/make-figures.sh keeps this last table for the instructors' chapter.
[ -z "${GRADE_EXAMPLE_OUT:-}" ] || cp "$tmp/grade.txt" "$GRADE_EXAMPLE_OUT"
