#!/usr/bin/env python3
"""Keeps the "math <-> code" appendix true by asking the tools, not imitating them.

    python3 scripts/check-math-map.py [--write] [--book DIR] [--list FILE] [TABLE]

TABLE (default book/appendix-math-code.md) holds one Markdown table with the
columns Equation | Where in the book | Code | Test. For every row:

  * Links. Each [..](chapter.md#id) must name a page and an id of the built
    book: the book is built with `mdbook build` into a temporary folder (or
    read from --book DIR) and the ids inside each page's <main> are collected
    with html.parser. A Code path's link must lead to a section (its heading up
    to the next heading of the same level) with a listing (<pre>) that shows
    the item's definition (`fn name`, `struct name`, ...).
  * Rust paths. Every `crate::path` of the Code column is named in RUST_FILE,
    which this script generates (--write) and rustfmt formats; compiling it,
    as `cargo test --workspace` does, is what proves each path exists. Without
    --write the script fails if RUST_FILE is not what the table generates.
  * Tests. Each `crates/<dir>/{src,tests}/<file>.rs::name` must be listed by
    `cargo test --workspace --tests -- --list` under that file's test binary
    (--list FILE reads that command's saved output, stderr and stdout in one).

Prints one `error:` line per problem and exits 1 if there is any.
"""
import argparse
import html.parser
import os
import posixpath
import re
import subprocess
import sys
import tempfile
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOK_SRC = os.path.join(ROOT, "book")
DEFAULT_TABLE = os.path.join(BOOK_SRC, "appendix-math-code.md")
RUST_FILE = "crates/examples/tests/math_map.rs"
COLUMNS = ("equation", "where in the book", "code", "test")
MIN_ROWS = 12  # so that deleting the table cannot make the check pass
LIST_CMD = ["cargo", "test", "--workspace", "--tests", "--", "--list"]
CARGO_BIN = os.path.join(os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")), "bin")
os.environ["PATH"] = CARGO_BIN + os.pathsep + os.environ["PATH"]  # mdbook, cargo, rustfmt, as lib.sh does

LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`]+)`")
RUST_PATH = re.compile(r"[A-Za-z_]\w*(::[A-Za-z_]\w*)+")
TEST = re.compile(r"crates/([^/\s]+)/((?:src|tests)/[^\s:]+\.rs)::([A-Za-z_]\w*)")
RUNNING = re.compile(r"^\s*Running (?:unittests )?(.+?) \((.+)\)\s*$")


def run(cmd, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    try:
        return subprocess.run(cmd, cwd=ROOT, text=True, **kw)
    except FileNotFoundError:
        sys.exit("error: %s not found: run scripts/setup.sh" % cmd[0])


# ---------------------------------------------------------------- the table

def read_table(text, errors):
    """[(line number, {column: cell})] of the first table with the four columns."""
    lines = text.splitlines()
    for n, line in enumerate(lines):
        header = [c.strip().lower() for c in split_row(line)] if line.lstrip().startswith("|") else []
        if sorted(header) != sorted(COLUMNS):
            continue
        rows = []
        for k in range(n + 2, len(lines)):
            if not lines[k].lstrip().startswith("|"):
                break
            cells = split_row(lines[k])
            if len(cells) != len(header):
                errors.append("line %d: %d cells, expected %d" % (k + 1, len(cells), len(header)))
            else:
                rows.append((k + 1, dict(zip(header, cells))))
        return rows
    errors.append("no table with the columns " + " | ".join(COLUMNS))
    return []


def split_row(line):
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


# ---------------------------------------------------------------- the built book

class Page(html.parser.HTMLParser):
    """The ids inside <main>, and its headings and listings in order."""

    def __init__(self, text):
        super().__init__()
        self.ids, self.events, self.main, self.pre = set(), [], 0, 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.main += tag == "main"
        if not self.main:
            return
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if re.fullmatch(r"h[1-6]", tag):
            self.events.append(["h", int(tag[1]), a.get("id")])
        elif tag == "pre":
            self.pre += 1
            self.events.append(["pre", ""])

    def handle_endtag(self, tag):
        if tag == "main" and self.main:
            self.main -= 1
        elif tag == "pre" and self.pre:
            self.pre -= 1

    def handle_data(self, data):
        if self.pre:
            self.events[-1][1] += data

    def listings(self, anchor):
        """The <pre> texts of the section that starts at heading #anchor (the
        whole page without an anchor); None if no heading has that id."""
        start, level = (0, 0) if not anchor else next(
            ((k, e[1]) for k, e in enumerate(self.events) if e[0] == "h" and e[2] == anchor), (None, 0))
        if start is None:
            return None
        out = []
        for e in self.events[start + 1 if anchor else 0:]:
            if e[0] == "h" and e[1] <= level:
                break
            if e[0] == "pre":
                out.append(e[1])
        return out


class Book:
    def __init__(self, html_dir, table):
        self.dir, self.pages = html_dir, {}
        inside = os.path.relpath(os.path.dirname(table), BOOK_SRC)
        self.base = "" if inside.startswith("..") else inside  # the table's folder in the book

    def page(self, md):
        """The Page that chapter md (relative to the table) became, or None."""
        rel = posixpath.normpath(posixpath.join(self.base, md))[:-len(".md")] + ".html"
        if rel not in self.pages:
            path = os.path.join(self.dir, rel)
            self.pages[rel] = Page(open(path, encoding="utf-8").read()) if os.path.isfile(path) else None
        return self.pages[rel]

    def check_link(self, target, where, errors):
        """Checks chapter.md[#id]; returns (Page, id) or None."""
        md, _, anchor = target.partition("#")
        if not md.endswith(".md") or "://" in md:
            errors.append("%s: link %s is not a chapter of the book (chapter.md#id)" % (where, target))
            return None
        page = self.page(md)
        if page is None:
            errors.append("%s: link %s: the built book has no page for %s (is it in SUMMARY.md?)"
                          % (where, target, md))
            return None
        if anchor and anchor not in page.ids:
            headings = ", ".join(e[2] for e in page.events if e[0] == "h" and e[2])
            errors.append("%s: link %s: the built %s has no id '%s' (its headings: %s)"
                          % (where, target, md, anchor, headings))
            return None
        return page, anchor


def build_book(tmp):
    out = os.path.join(tmp, "book")
    r = run(["mdbook", "build", "-d", out])
    if r.returncode != 0:
        sys.exit(r.stdout + r.stderr + "error: mdbook build failed")
    return out


# ---------------------------------------------------------------- the crates

def workspace():
    """(edition, {crate folder under crates/: the library's Rust name})."""
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        ws = tomllib.load(f)["workspace"]
    libs = {}
    for member in ws["members"]:
        with open(os.path.join(ROOT, member, "Cargo.toml"), "rb") as f:
            toml = tomllib.load(f)
        name = toml.get("lib", {}).get("name", toml["package"]["name"].replace("-", "_"))
        libs[posixpath.basename(member)] = name
    return ws["package"]["edition"], libs


def rust_file(paths, libs, edition):
    """RUST_FILE's text: `use path as _;` for an item, `let _ = path;` for a
    `Type::member`, which `use` cannot name."""
    src = ["// @generated by `python3 scripts/check-math-map.py --write` from the table in",
           "// book/appendix-math-code.md: do not edit. Compiling this file is the check that every",
           "// Rust path in the table's Code column exists. The workspace crates are glob-imported so",
           "// that `Type::method` also finds trait methods.",
           "#![allow(unused_imports)]", "", "#[test]", "fn every_rust_path_in_the_math_map_exists() {"]
    src += ["    use ::%s::*;" % lib for name, lib in sorted(libs.items()) if name != "examples"] + [""]
    members = {p for p in paths if len(p.split("::")) > 2 and p.split("::")[-2][0].isupper()}
    src += ["    use ::%s as _;" % p for p in sorted(set(paths) - members)] + [""]
    src += ["    let _ = ::%s;" % p for p in sorted(members)]
    r = run(["rustfmt", "--edition", edition, "--emit", "stdout"], input="\n".join(src + ["}"]) + "\n")
    if r.returncode != 0:
        sys.exit(r.stderr + "error: rustfmt failed on the generated %s" % RUST_FILE)
    return r.stdout


def test_binaries(text):
    """[(source as cargo prints it, binary name without its hash, {test names})]."""
    out = []
    for line in text.splitlines():
        m = RUNNING.match(line)
        if m:
            out.append((m.group(1), os.path.basename(m.group(2)).rsplit("-", 1)[0], set()))
        elif line.lstrip().startswith("Doc-tests"):
            out.append(("doc-tests", "", set()))
        elif out and line.endswith(": test"):
            out[-1][2].add(line[:-len(": test")])
    return out


def check_test(crate, file, name, where, binaries, libs, errors):
    """Unit tests anywhere in src/ run in the library's binary, which cargo
    prints as `src/lib.rs` and names after the library; tests/x.rs runs in its
    own, but that name can repeat across crates."""
    if crate not in libs:
        errors.append("%s: `crates/%s`: no such workspace crate" % (where, crate))
        return
    if file.startswith("src/"):
        hits = [b for b in binaries if b[0] == "src/lib.rs" and b[1] == libs[crate]]
    else:
        hits = [b for b in binaries if b[0] == file]
    label, cmd = "crates/%s/%s" % (crate, file), " ".join(LIST_CMD)
    if not hits:
        errors.append("%s: `%s::%s`: no test binary for %s in `%s`" % (where, label, name, label, cmd))
    elif len(hits) > 1:
        errors.append("%s: `%s::%s`: %d test binaries run %s (one per crate); the list cannot tell them apart: "
                      "rename one" % (where, label, name, len(hits), file))
    elif not any(t == name or t.endswith("::" + name) for t in hits[0][2]):
        errors.append("%s: `%s::%s`: no test %s in the %s test binary of `%s` (renamed, or lost its #[test]?)"
                      % (where, label, name, name, label, cmd))


# ---------------------------------------------------------------- main

def check_row(where, row, book, binaries, libs, errors):
    """Checks one row; returns its Rust paths and tests."""
    if not re.search(r"\$[^$]+\$", row["equation"]):
        errors.append("%s: the Equation cell has no $...$ formula" % where)
    if re.search(r"\\tilde\b", row["equation"]):
        errors.append("%s: use \\widetilde, not \\tilde, in the Equation cell" % where)

    places = LINK.findall(row["where in the book"])
    if not places:
        errors.append("%s: the 'Where in the book' cell has no [chapter](file.md#id) link" % where)
    for _, target in places:
        book.check_link(target, where, errors)

    links = {p: target for label, target in LINK.findall(row["code"]) for p in CODE.findall(label)}
    paths = [p for p in CODE.findall(row["code"]) if "::" in p]
    if not paths:
        errors.append("%s: the Code cell has no `crate::path`" % where)
    for p in paths:
        if not RUST_PATH.fullmatch(p):
            errors.append("%s: `%s` is not a Rust path" % (where, p))
            continue
        if p not in links:
            errors.append("%s: `%s` is not linked to the book section that shows it" % (where, p))
            continue
        found = book.check_link(links[p], where, errors)
        name = p.rsplit("::", 1)[1]
        definition = re.compile(r"\b(fn|struct|enum|trait|type|const|static|mod)\s+%s\b" % name)
        if found and not any(definition.search(t) for t in found[0].listings(found[1]) or []):
            errors.append("%s: `%s` is linked to %s, but no listing there shows `fn %s` (or struct, enum, ...)"
                          % (where, p, links[p], name))

    tests = CODE.findall(row["test"])
    if not tests:
        errors.append("%s: the Test cell has no `crates/<crate>/tests/<file>.rs::test_name`" % where)
    for t in tests:
        m = TEST.fullmatch(t)
        if m:
            check_test(*m.groups(), where, binaries, libs, errors)
        else:
            errors.append("%s: `%s` is not crates/<crate>/{src,tests}/<file>.rs::test_name" % (where, t))
    return [p for p in paths if RUST_PATH.fullmatch(p)], tests


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("table", nargs="?", default=DEFAULT_TABLE)
    ap.add_argument("--write", action="store_true", help="regenerate %s from the table" % RUST_FILE)
    ap.add_argument("--book", help="a built book to read instead of running mdbook build")
    ap.add_argument("--list", help="saved output of: %s 2>&1" % " ".join(LIST_CMD))
    args = ap.parse_args(argv)
    table = os.path.abspath(args.table)
    errors = []
    rows = read_table(open(table, encoding="utf-8").read(), errors)
    if len(rows) < MIN_ROWS:
        errors.append("the table has %d rows; the map needs at least %d" % (len(rows), MIN_ROWS))
    edition, libs = workspace()

    if args.list:
        listing = open(args.list, encoding="utf-8").read()
    else:
        r = run(LIST_CMD, stderr=subprocess.STDOUT)  # one stream keeps each name after its binary
        if r.returncode != 0:
            sys.exit(r.stdout[-3000:] + "\nerror: `%s` failed" % " ".join(LIST_CMD))
        listing = r.stdout
    binaries = test_binaries(listing)

    shown = os.path.relpath(table, ROOT)
    shown = table if shown.startswith("..") else shown
    paths, tests = set(), set()
    with tempfile.TemporaryDirectory() as tmp:
        book = Book(os.path.abspath(args.book) if args.book else build_book(tmp), table)
        for lineno, row in rows:
            p, t = check_row("%s:%d" % (shown, lineno), row, book, binaries, libs, errors)
            paths.update(p)
            tests.update(t)

    generated = rust_file(paths, libs, edition)
    target = os.path.join(ROOT, RUST_FILE)
    if args.write:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write(generated)
        print("wrote %s (%d paths)" % (RUST_FILE, len(paths)))
    elif not os.path.isfile(target) or open(target, encoding="utf-8").read() != generated:
        errors.append("%s is out of date with the table: run python3 scripts/check-math-map.py --write" % RUST_FILE)

    for e in errors:
        print("error: " + e)
    if errors:
        return 1
    print("ok: math ↔ code map: %d rows; every link and listing is in the built book, %d Rust paths are in %s"
          " for rustc, %d tests are in `%s`" % (len(rows), len(paths), RUST_FILE, len(tests), " ".join(LIST_CMD)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
