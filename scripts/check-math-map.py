#!/usr/bin/env python3
"""Keeps the "math <-> code" appendix true.

Usage: python3 scripts/check-math-map.py [PATH_TO_MD]
       (default: book/appendix-math-code.md)

The appendix is one Markdown table with the columns Equation, Where in the
book, Code and Test. For every row this script checks that

  (a) every link in the "Where in the book" and "Code" columns points to a
      chapter file that exists (relative to the page) and, if it has a
      #fragment, to a heading id of that chapter, computed the way mdBook
      computes it (duplicates get -1, -2, ...);
  (b) every `crate::path::name` in the Code column exists in
      crates/<crate>/src: a `fn`, `struct`, `enum`, `trait`, `type`, `const`
      or enum variant `name`; a `Type::method` must be a `fn method` inside an
      `impl ... Type` block; `crate::module::name` must live in that module's
      file. Each code path must be linked, and the linked section must show a
      listing ({{#include ...}}) whose lines contain the definition;
  (c) every `crates/<crate>/{tests,src}/<file>.rs::test_name` in the Test
      column names a file that exists and contains `fn test_name(` with a
      #[test] attribute a few lines above it.

It prints one `error: ...` line per problem and exits 1 if there is any (or
if the table has fewer than MIN_ROWS rows, so that deleting the table cannot
make it pass). Python 3 standard library only.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MD = os.path.join(ROOT, "book", "appendix-math-code.md")
MIN_ROWS = 12
COLUMNS = ("equation", "where in the book", "code", "test")
# How many lines above `fn name(` a #[test] may sit (doc comments, #[ignore], ...).
TEST_ATTR_WINDOW = 6

errors = []


def error(msg):
    if msg not in errors:
        errors.append(msg)


def rel(path):
    r = os.path.relpath(path, ROOT)
    return path if r.startswith("..") else r


# --------------------------------------------------------------------------
# mdBook heading ids
# --------------------------------------------------------------------------

GREEK = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ϵ",
    "varepsilon": "ε", "zeta": "ζ", "eta": "η", "theta": "θ", "vartheta": "ϑ",
    "iota": "ι", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ",
    "pi": "π", "rho": "ρ", "sigma": "σ", "tau": "τ", "upsilon": "υ",
    "phi": "ϕ", "varphi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω",
    "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ", "Xi": "Ξ",
    "Pi": "Π", "Sigma": "Σ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω",
}


def math_text(tex):
    """Approximates the text KaTeX renders for inline math, which is what
    mdBook sees in a heading: Greek commands become letters, \\bar adds the
    modifier macron 'ˉ', other commands, braces, ^, _, '-' and spaces vanish."""
    out = []
    i = 0
    while i < len(tex):
        c = tex[i]
        if c == "\\":
            m = re.match(r"\\([A-Za-z]+)", tex[i:])
            if not m:  # \{ \, \; ...
                i += 2
                continue
            name = m.group(1)
            i += len(m.group(0))
            if name in GREEK:
                out.append(GREEK[name])
            elif name in ("bar", "overline"):
                # \bar X and \bar{X}: the argument, then the macron
                rest = tex[i:].lstrip()
                i = len(tex) - len(rest)
                if rest.startswith("{"):
                    depth, j = 0, 0
                    for j, ch in enumerate(rest):
                        depth += ch == "{"
                        depth -= ch == "}"
                        if depth == 0:
                            break
                    out.append(math_text(rest[1:j]))
                    i += j + 1
                elif rest.startswith("\\"):
                    m2 = re.match(r"\\[A-Za-z]+", rest)
                    out.append(math_text(m2.group(0)))
                    i += len(m2.group(0))
                elif rest:
                    out.append(rest[0])
                    i += 1
                out.append("ˉ")
            continue
        if c not in "{}^_- \t":
            out.append(c)
        i += 1
    return "".join(out)


def heading_text(md):
    """The plain text of a heading's Markdown, roughly as mdBook sees it."""
    # inline math first ($$…$$ or $…$), so that '_' inside it is not text
    md = re.sub(r"\$\$(.+?)\$\$|\$(.+?)\$",
                lambda m: math_text(m.group(1) or m.group(2)), md)
    md = re.sub(r"`+([^`]*)`+", r"\1", md)                 # inline code
    md = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", md)      # links, images
    md = re.sub(r"!?\[([^\]]*)\]\[[^\]]*\]", r"\1", md)     # reference links
    md = re.sub(r"<[^>]+>", "", md)                         # inline HTML
    md = re.sub(r"(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])", "", md)  # _emphasis_
    return md


def normalize_id(text):
    """mdBook's normalize_id: keep alphanumerics, '_' and '-', whitespace
    becomes '-', everything else is dropped; lowercase."""
    out = []
    for ch in text:
        if ch.isalnum() or ch in "_-":
            out.append(ch.lower())
        elif ch.isspace():
            out.append("-")
    return "".join(out)


FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def headings(path):
    """[(level, id, line_index)] for every heading of a chapter, in order."""
    lines = read(path).splitlines()
    found = []
    seen = {}
    fence = None
    for n, line in enumerate(lines):
        m = FENCE.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
            elif m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if fence is not None:
            continue
        level, text = None, None
        m = re.match(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$", line)
        if m:
            level, text = len(m.group(1)), (m.group(2) or "")
            text = re.sub(r"[ \t]+#+$", "", text)   # closing hashes
        elif (n > 0 and lines[n - 1].strip() and not lines[n - 1].startswith(("#", "|", ">", "-", "*", "```"))
              and re.match(r"^ {0,3}(=+|-+)[ \t]*$", line)):
            # setext heading: the previous line, underlined
            level = 1 if line.strip()[0] == "=" else 2
            text = lines[n - 1].strip()
            n -= 1
        if level is None:
            continue
        custom = re.search(r"\{#([^}\s]+)[^}]*\}\s*$", text)
        if custom:
            hid = custom.group(1)
        else:
            base = normalize_id(heading_text(text).strip())
            count = seen.get(base, 0)
            hid = base if count == 0 else "%s-%d" % (base, count)
            seen[base] = count + 1
        found.append((level, hid, n))
    return found


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

_cache = {}


def read(path):
    if path not in _cache:
        with open(path, encoding="utf-8") as f:
            _cache[path] = f.read()
    return _cache[path]


def crate_dir(name):
    """crates/<dir> for a crate name: classifier_free -> crates/classifier-free."""
    for cand in (name.replace("_", "-"), name):
        d = os.path.join(ROOT, "crates", cand)
        if os.path.isfile(os.path.join(d, "Cargo.toml")):
            return d
    return None


def rust_files(d):
    out = []
    for base, dirs, files in os.walk(d):
        dirs.sort()
        out += [os.path.join(base, f) for f in sorted(files) if f.endswith(".rs")]
    return out


# --------------------------------------------------------------------------
# Rust: blanking strings/comments, impl blocks, definitions
# --------------------------------------------------------------------------


def blank_strings_and_comments(src):
    """The source with string/char literals and comments replaced by spaces
    (newlines kept), so that braces can be counted and names searched."""
    out = list(src)
    i, n = 0, len(src)

    def blank(a, b):
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif c in "br" and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")) \
                and re.match(r'b?r#*"', src[i:i + 300]):
            m = re.match(r'b?r(#*)"', src[i:])  # raw string r"…", r#"…"#
            end = src.find('"' + m.group(1), i + len(m.group(0)))
            j = n if end < 0 else end + 1 + len(m.group(1))
            blank(i, j)
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            blank(i, j + 1)
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'", src[i:])
            if m:  # a char literal; otherwise a lifetime
                blank(i, i + len(m.group(0)))
                i += len(m.group(0))
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def block_end(code, open_brace):
    """Index just past the brace matching code[open_brace] == '{'."""
    depth = 0
    for k in range(open_brace, len(code)):
        if code[k] == "{":
            depth += 1
        elif code[k] == "}":
            depth -= 1
            if depth == 0:
                return k + 1
    return len(code)


def item_defined(code, name):
    return re.search(r"\b(fn|struct|enum|trait|type|const|static|union|mod)\s+%s\b" % re.escape(name), code)


def method_defined(code, type_name, method):
    """`fn method` inside some `impl<...> [Trait for] Type<...> {...}`."""
    for m in re.finditer(r"\bimpl\b[^{;]*?\b%s\b[^{;]*\{" % re.escape(type_name), code):
        header = m.group(0)
        # `impl Type for Other` implements for Other: the name must be the self type.
        if re.search(r"\bfor\b", header) and not re.search(r"\bfor\s+(?:[\w:]+::)?%s\b" % re.escape(type_name), header):
            continue
        body = code[m.end() - 1:block_end(code, m.end() - 1)]
        if re.search(r"\bfn\s+%s\b" % re.escape(method), body):
            return True
    return False


def variant_defined(code, enum_name, variant):
    for m in re.finditer(r"\benum\s+%s\b[^{]*\{" % re.escape(enum_name), code):
        body = code[m.end() - 1:block_end(code, m.end() - 1)]
        if re.search(r"(^|[{,\s])%s\s*[,({}]" % re.escape(variant), body):
            return True
    return False


def module_files(src_dir, files, module_path):
    """The files of `a::b` under src_dir: src/a/b.rs, src/a/b/mod.rs, or, for
    inline modules, the parent file. None if there is no such module."""
    base = src_dir
    parents = [os.path.join(src_dir, "lib.rs")]
    for mod in module_path:
        cands = [os.path.join(base, mod + ".rs"), os.path.join(base, mod, "mod.rs")]
        hit = [c for c in cands if os.path.isfile(c)]
        if hit:
            parents = hit
            base = os.path.join(base, mod)
            continue
        inline = [p for p in parents if os.path.isfile(p)
                  and re.search(r"\bmod\s+%s\s*\{" % re.escape(mod), blank_strings_and_comments(read(p)))]
        if not inline:
            return None
        parents = inline
        base = os.path.join(base, mod)
    # a directory module also owns the files below it
    extra = [f for f in files if f.startswith(base + os.sep)]
    return sorted(set(parents + extra))


def check_code_path(path, where):
    """Returns (files, name) where the item was found, or None after an error."""
    parts = path.split("::")
    if len(parts) < 2 or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
        error("%s: `%s` is not a crate::path::name" % (where, path))
        return None
    d = crate_dir(parts[0])
    if d is None:
        error("%s: `%s`: there is no crate %s (crates/%s/Cargo.toml)" % (where, path, parts[0], parts[0].replace("_", "-")))
        return None
    src_dir = os.path.join(d, "src")
    files = rust_files(src_dir)
    # split into modules (lowercase) and the item chain (Type, Type::method, Enum::Variant)
    mods, rest = [], parts[1:]
    while len(rest) > 1 and not rest[0][0].isupper():
        mods.append(rest.pop(0))
    scope = files if not mods else module_files(src_dir, files, mods)
    if scope is None:
        error("%s: `%s`: no module %s in %s" % (where, path, "::".join(mods), rel(src_dir)))
        return None
    codes = {f: blank_strings_and_comments(read(f)) for f in scope}
    name = rest[-1]
    if len(rest) == 1:
        hits = [f for f, c in codes.items() if item_defined(c, name)]
        what = "a fn/struct/enum/trait/const `%s`" % name
    elif len(rest) == 2:
        owner, member = rest
        if not any(re.search(r"\b(struct|enum|trait|type|union)\s+%s\b" % re.escape(owner), c) for c in codes.values()):
            error("%s: `%s`: no type %s in %s" % (where, path, owner, ", ".join(rel(f) for f in scope)))
            return None
        hits = [f for f, c in codes.items()
                if method_defined(c, owner, member) or variant_defined(c, owner, member)
                or re.search(r"\btrait\s+%s\b[^{]*\{" % re.escape(owner), c) and re.search(r"\bfn\s+%s\b" % re.escape(member), c)]
        what = "a method `fn %s` in an `impl %s` block (or a variant %s::%s)" % (member, owner, owner, member)
    else:
        error("%s: `%s`: too many levels after the modules" % (where, path))
        return None
    if not hits:
        error("%s: `%s`: %s not found in %s" % (where, path, what, ", ".join(rel(f) for f in scope) or rel(src_dir)))
        return None
    return hits, name


# --------------------------------------------------------------------------
# Links and listings
# --------------------------------------------------------------------------


def section_lines(chapter, fragment):
    """Lines of the chapter section that starts at heading #fragment (up to the
    next heading of the same or a higher level); the whole chapter if no
    fragment. None if the fragment is not a heading id."""
    lines = read(chapter).splitlines()
    if not fragment:
        return lines
    hs = headings(chapter)
    for k, (level, hid, n) in enumerate(hs):
        if hid == fragment:
            end = len(lines)
            for level2, _, n2 in hs[k + 1:]:
                if level2 <= level:
                    end = n2
                    break
            return lines[n:end]
    return None


def check_link(target, md_dir, where):
    """Checks chapter.md#fragment; returns the section's lines or None."""
    if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
        error("%s: link %s is not a chapter of the book" % (where, target))
        return None
    file_part, _, fragment = target.partition("#")
    if not file_part.endswith(".md"):
        error("%s: link %s must point to a chapter file (*.md)" % (where, target))
        return None
    chapter = os.path.normpath(os.path.join(md_dir, file_part))
    if not os.path.isfile(chapter):
        error("%s: link %s: chapter file %s does not exist" % (where, target, rel(chapter)))
        return None
    lines = section_lines(chapter, fragment)
    if lines is None:
        ids = ", ".join(h[1] for h in headings(chapter))
        error("%s: link %s: %s has no heading with id '%s' (its ids: %s)" % (where, target, rel(chapter), fragment, ids))
    return lines


INCLUDE = re.compile(r"\{\{#(?:include|rustdoc_include)\s+([^}\s]+)\s*\}\}")


def listing_text(chapter, spec):
    """The lines an {{#include path[:anchor|:a:b]}} shows, or None."""
    m = re.match(r"^(.*?\.rs)(?::(.*))?$", spec)
    if not m:
        return None
    path = os.path.normpath(os.path.join(os.path.dirname(os.path.realpath(chapter)), m.group(1)))
    if not os.path.isfile(path):
        return None
    lines = read(path).splitlines()
    sel = m.group(2)
    if not sel:
        return "\n".join(lines)
    if re.fullmatch(r"\d*(:\d*)?", sel):
        a, _, b = sel.partition(":")
        start = int(a) - 1 if a else 0
        end = int(b) if b else (start + 1 if not _ else len(lines))
        return "\n".join(lines[start:end])
    out, inside = [], False
    for line in lines:
        if re.search(r"ANCHOR_END:\s*%s\b" % re.escape(sel), line):
            inside = False
        elif re.search(r"ANCHOR:\s*%s\b" % re.escape(sel), line):
            inside = True
        elif inside:
            out.append(line)
    return "\n".join(out) if out else None


def shows_listing(section, chapter, name):
    for line in section:
        for spec in INCLUDE.findall(line):
            text = listing_text(chapter, spec)
            if text and re.search(r"\b(fn|struct|enum|trait|type|const)\s+%s\b" % re.escape(name), text):
                return True
    return False


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------


def split_row(line):
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    cells, cur, in_code = [], [], False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] == "|":
            cur.append("|")
            i += 2
            continue
        if c == "`":
            in_code = not in_code
        if c == "|" and not in_code:
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    cells.append("".join(cur).strip())
    return cells


def parse_table(text):
    """(column index by name, [(line number, cells)]) of the first table whose
    header has the four columns."""
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if not line.lstrip().startswith("|"):
            continue
        header = [c.lower() for c in split_row(line)]
        if not all(col in header for col in COLUMNS):
            continue
        if n + 1 >= len(lines) or not re.fullmatch(r"\|?(\s*:?-{3,}:?\s*\|)*\s*:?-{3,}:?\s*\|?", lines[n + 1].strip()):
            error("line %d: the table header is not followed by a |---| separator" % (n + 1))
            return None, []
        rows = []
        for k in range(n + 2, len(lines)):
            if not lines[k].lstrip().startswith("|"):
                break
            rows.append((k + 1, split_row(lines[k])))
        return {col: header.index(col) for col in COLUMNS}, rows
    return None, []


LINK = re.compile(r"\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`]+)`")


def main(argv):
    md = os.path.abspath(argv[1]) if len(argv) > 1 else DEFAULT_MD
    if not os.path.isfile(md):
        print("error: %s does not exist" % md)
        return 1
    md_dir = os.path.dirname(md)
    cols, rows = parse_table(read(md))
    if cols is None and not errors:
        error("%s: no table with the columns %s" % (rel(md), ", ".join(repr(c) for c in COLUMNS)))
    if cols is not None and len(rows) < MIN_ROWS:
        error("%s: the table has %d rows; the map needs at least %d" % (rel(md), len(rows), MIN_ROWS))

    for lineno, cells in rows:
        where = "%s:%d" % (rel(md), lineno)
        if len(cells) != len(COLUMNS) or len(cells) <= max(cols.values()):
            error("%s: %d cells, expected %d" % (where, len(cells), len(COLUMNS)))
            continue
        eq, place, code, test = (cells[cols[c]] for c in COLUMNS)

        if not re.search(r"\$[^$]+\$", eq):
            error("%s: the Equation cell has no $…$ formula" % where)
        if re.search(r"\\tilde\b", eq):
            error("%s: use \\widetilde, not \\tilde, in the Equation cell" % where)

        place_links = LINK.findall(place)
        if not place_links:
            error("%s: the 'Where in the book' cell has no [chapter](file.md#section) link" % where)
        for _, target in place_links:
            check_link(target, md_dir, where)

        # Code: every `crate::path` must exist and be linked to the section showing it.
        code_links = {}
        for label, target in LINK.findall(code):
            for p in CODE.findall(label):
                code_links[p] = target
        paths = [p for p in CODE.findall(code) if "::" in p]
        if not paths:
            error("%s: the Code cell has no `crate::path::name`" % where)
        for p in paths:
            found = check_code_path(p, where)
            target = code_links.get(p)
            if target is None:
                error("%s: `%s` is not linked to the book section that shows it" % (where, p))
                continue
            section = check_link(target, md_dir, where)
            if found and section is not None:
                chapter = os.path.normpath(os.path.join(md_dir, target.partition("#")[0]))
                if not shows_listing(section, chapter, found[1]):
                    error("%s: `%s` is linked to %s, but no {{#include}} listing there contains `%s`"
                          % (where, p, target, found[1]))

        # Test: crates/<crate>/{tests,src}/<file>.rs::name, with #[test] above.
        tests = CODE.findall(test)
        if not tests:
            error("%s: the Test cell has no `crates/<crate>/tests/<file>.rs::test_name`" % where)
        for t in tests:
            m = re.fullmatch(r"(crates/[^/\s]+/(?:tests|src)/[^\s:]+\.rs)::([A-Za-z_][A-Za-z0-9_]*)", t)
            if not m:
                error("%s: `%s` is not crates/<crate>/tests/<file>.rs::test_name (or src/)" % (where, t))
                continue
            f = os.path.join(ROOT, m.group(1))
            if not os.path.isfile(f):
                error("%s: `%s`: %s does not exist" % (where, t, m.group(1)))
                continue
            lines = blank_strings_and_comments(read(f)).splitlines()
            fn = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+%s\s*\(" % re.escape(m.group(2)))
            defs = [k for k, line in enumerate(lines) if fn.search(line)]
            if not defs:
                error("%s: `%s`: no `fn %s(` in %s" % (where, t, m.group(2), m.group(1)))
            elif not any(any(re.search(r"#\[\s*(?:[\w:]+::)?test\b", lines[j])
                             for j in range(max(0, k - TEST_ATTR_WINDOW), k)) for k in defs):
                error("%s: `%s`: fn %s has no #[test] attribute above it" % (where, t, m.group(2)))

    for e in errors:
        print("error: " + e)
    if errors:
        return 1
    print("ok: math ↔ code map: %d rows, every function and test exists" % len(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
