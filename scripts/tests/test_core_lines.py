"""scripts/core-lines.py counts what issue #18 asks for, and its gate can fail.

    "$(source scripts/lib.sh && venv_python)" -m pytest scripts/tests/test_core_lines.py
"""
import importlib.util
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "core-lines.py"

spec = importlib.util.spec_from_file_location("core_lines", SCRIPT)
core_lines = importlib.util.module_from_spec(spec)
spec.loader.exec_module(core_lines)


def test_counts_code_only():
    src = """//! A crate comment.
use tch::Tensor; // a trailing comment

/* a block
   comment */
pub fn f() -> i64 {
    // inside
    1
}

#[cfg(test)]
mod tests {
    #[test]
    fn t() {
        if true { assert!(true); }
    }
}
pub fn g() {}
"""
    # use, fn f's three lines, fn g: the comments, blanks and test module are out.
    assert core_lines.code_lines(src) == 5


def test_gate_fails_above_the_limit_and_passes_below():
    run = lambda n: subprocess.run(
        [sys.executable, str(SCRIPT), "--max", str(n)], capture_output=True, text=True
    )
    total = int(run(10**9).stdout.strip().splitlines()[-1].split()[-1])
    low = run(total - 1)
    assert low.returncode == 1
    assert f"the core holds {total} lines, more than {total - 1}" in low.stderr
    assert run(total).returncode == 0
