# Shared helpers for the scripts (sourced, not run).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# Cargo's target folder (honours CARGO_TARGET_DIR and .cargo/config.toml).
target_dir() {
  cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# torch/lib of the venv that .libtorch points at.
torch_lib() {
  local t
  t="$(readlink -f "$ROOT/.libtorch" 2>/dev/null)" || true
  [ -n "$t" ] && [ -f "$t/lib/libtorch_cpu.so" ] || { echo "error: .libtorch is missing: run scripts/setup.sh" >&2; return 1; }
  printf '%s/lib\n' "$t"
}

# The venv that scripts/setup.sh made: the one .libtorch points into
# (<venv>/lib/pythonX.Y/site-packages/torch). Prints nothing when there is none.
# The one place the scripts know where the venv is (Rust: util::venv_python).
linked_venv() {
  local t v
  t="$(readlink -f "$ROOT/.libtorch" 2>/dev/null)" || return 0
  v="${t%/lib/python*/site-packages/torch}"
  if [ "$v" != "$t" ] && [ -x "$v/bin/python" ]; then printf '%s\n' "$v"; fi
  return 0
}

# The venv's python: torch, numpy, safetensors, scipy, pyyaml, diffusers, playwright, pytest.
venv_python() {
  local v; v="$(linked_venv)"
  [ -n "$v" ] || { echo "error: .libtorch does not point into a venv with a python: run scripts/setup.sh" >&2; return 1; }
  printf '%s\n' "$v/bin/python"
}
