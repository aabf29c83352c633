"""scripts/check-math-map.py must fail, with a clear line, on a broken table.

Each case runs the script on a copy of book/appendix-math-code.md with one
thing broken, against one built book (mdbook build, once) and a test list in
the format of `cargo test --workspace --tests -- --list 2>&1`, written here
from the table itself, so no cargo is run. (A misspelled Rust path is the
compiler's to catch: cargo fails to build crates/examples/tests/math_map.rs.)

    "$(source scripts/lib.sh && venv_python)" -m pytest scripts/tests/test_math_map.py
"""
import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-math-map.py"
TABLE = (ROOT / "book" / "appendix-math-code.md").read_text(encoding="utf-8")

spec = importlib.util.spec_from_file_location("check_math_map", SCRIPT)
mm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mm)


def cargo_list(table, drop=()):
    """What `cargo test --workspace --tests -- --list 2>&1` prints for the
    tests the table names (less `drop`), each binary with one test more, and
    a doc-test block to ignore."""
    _, libs = mm.workspace()
    binaries = {}
    for crate, file, name in re.findall(mm.TEST.pattern, table):
        if file.startswith("src/"):  # unit tests: in the library's binary, under their module
            key, name = ("unittests src/lib.rs", libs[crate]), "tests::" + name
        else:
            key = (file, pathlib.Path(file).stem)
        binaries.setdefault(key, {"another_test"})
        if name.rpartition("::")[2] not in drop:
            binaries[key].add(name)
    out = ["    Finished `test` profile [optimized + debuginfo] target(s) in 0.16s"]
    for (src, stem), names in sorted(binaries.items()):
        out.append("     Running %s (target/debug/deps/%s-0123456789abcdef)" % (src, stem))
        out += ["%s: test" % n for n in sorted(names)] + ["", "%d tests, 0 benchmarks" % len(names)]
    out += ["   Doc-tests forward", "crates/forward/src/lib.rs - Schedule (line 1): test"]
    return "\n".join(out) + "\n"


@pytest.fixture(scope="session")
def book(tmp_path_factory):
    return mm.build_book(str(tmp_path_factory.mktemp("mdbook")))


def check(tmp_path, book, table=TABLE, listing=None):
    (tmp_path / "appendix-math-code.md").write_text(table, encoding="utf-8")
    (tmp_path / "list.txt").write_text(cargo_list(table) if listing is None else listing, encoding="utf-8")
    r = subprocess.run([sys.executable, str(SCRIPT), "--book", book, "--list", str(tmp_path / "list.txt"),
                        str(tmp_path / "appendix-math-code.md")], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def broken(old, new):
    assert old in TABLE, "the appendix changed: pick another entry to break"
    return TABLE.replace(old, new, 1)


def test_the_real_table_passes(tmp_path, book):
    rc, out = check(tmp_path, book)
    assert rc == 0, out
    assert out.startswith("ok: math ↔ code map: ")


def test_a_missing_anchor_fails(tmp_path, book):
    rc, out = check(tmp_path, book, broken("(forward.md#the-posterior)", "(forward.md#the-posteriors)"))
    assert rc == 1
    assert "link forward.md#the-posteriors: the built forward.md has no id 'the-posteriors'" in out, out


def test_a_missing_chapter_fails(tmp_path, book):
    rc, out = check(tmp_path, book, broken("(ddim.md#the-math)", "(dddim.md#the-math)"))
    assert rc == 1
    assert "link dddim.md#the-math: the built book has no page for dddim.md" in out, out


def test_a_missing_test_name_fails(tmp_path, book):
    old = "forward.rs::q_sample_has_the_closed_form_mean_and_variance"
    table = broken(old, "forward.rs::q_sample_was_renamed")
    rc, out = check(tmp_path, book, table, cargo_list(TABLE))  # the list still has the old name
    assert rc == 1
    assert ("`crates/forward/tests/forward.rs::q_sample_was_renamed`: no test q_sample_was_renamed "
            "in the crates/forward/tests/forward.rs test binary") in out, out


def test_a_test_that_lost_its_attribute_fails(tmp_path, book):
    rc, out = check(tmp_path, book, listing=cargo_list(TABLE, drop={"embedding_matches_formula_in_f64"}))
    assert rc == 1
    assert "no test embedding_matches_formula_in_f64 in the crates/network/src/lib.rs test binary" in out, out


def test_a_file_with_no_test_binary_fails(tmp_path, book):
    table = broken("crates/reverse/tests/samplers.rs::", "crates/reverse/tests/sampler.rs::")
    rc, out = check(tmp_path, book, table, cargo_list(TABLE))
    assert rc == 1
    assert "no test binary for crates/reverse/tests/sampler.rs" in out, out


def test_two_binaries_for_one_file_fail(tmp_path, book):
    listing = cargo_list(TABLE)
    block = re.search(r" +Running tests/forward\.rs .*?\n\n", listing, re.S).group(0)
    rc, out = check(tmp_path, book, listing=listing + block)
    assert rc == 1
    assert "2 test binaries run tests/forward.rs (one per crate)" in out, out


def test_a_path_linked_to_a_section_without_its_listing_fails(tmp_path, book):
    table = broken("[`reverse::ddim_step`](ddim.md#the-code)", "[`reverse::ddim_step`](ddim.md#the-math)")
    rc, out = check(tmp_path, book, table)
    assert rc == 1
    assert "`reverse::ddim_step` is linked to ddim.md#the-math, but no listing there shows `fn ddim_step`" in out, out


def test_a_new_path_needs_the_generated_file_rewritten(tmp_path, book):
    run = "[`reverse::Pipeline::run`](ddpm.md#the-code)"
    rc, out = check(tmp_path, book, broken(run, run + ", [`reverse::Pipeline::sample`](ddpm.md#the-code)"))
    assert rc == 1
    assert ("crates/examples/tests/math_map.rs is out of date with the table: "
            "run python3 scripts/check-math-map.py --write") in out, out


def test_a_truncated_table_fails(tmp_path, book):
    rc, out = check(tmp_path, book, "\n".join(TABLE.splitlines()[:24]) + "\n")
    assert rc == 1
    assert re.search(r"the table has \d rows; the map needs at least 12", out), out
