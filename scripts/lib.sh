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

# The python of the venv that .libtorch points into (numpy, safetensors, scipy).
venv_python() {
  local t; t="$(torch_lib)" || return 1
  printf '%s\n' "${t%/lib/python*/site-packages/torch/lib}/bin/python"
}
