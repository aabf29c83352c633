"""Tests of scripts/check-rendered.py: it passes a small clean book and reports
each kind of problem in a small broken one (exit 1), and exits 2 when it cannot
run. The books are built with mdbook and mdbook-katex (scripts/setup.sh installs
both); the check drives the system's Chromium through Playwright.

    .venv/bin/python -m pytest -q scripts/tests
"""
import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "check-rendered.py")
ENV = dict(os.environ, PATH=os.path.join(os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")), "bin")
           + os.pathsep + os.environ.get("PATH", ""))

spec = importlib.util.spec_from_file_location("check_rendered", SCRIPT)
check_rendered = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_rendered)


def png(width, height):
    """A valid grey PNG of the given size."""
    def chunk(kind, data):
        return struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack("!IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


CLEAN = {
    "SUMMARY.md": "# Summary\n\n[Introduction](intro.md)\n\n- [Forward](forward.md)\n- [Guidance](guidance.md)\n",
    "intro.md": "# Introduction\n\nThe schedule $\\bar\\alpha_t$, called alpha_bar in the code, is in\n"
                "[the forward chapter](forward.md#the-schedule).\n\n![a grey square](figures/square.png)\n",
    "forward.md": "# Forward\n\n## The schedule\n\n$$x_t = \\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\epsilon$$\n",
    "guidance.md": "# Guidance\n\n```rust\nfn main() {\n    println!(\"w = 3\");\n}\n```\n",
}

# Each problem the broken book has, by the page the check must name and a part of its line.
BROKEN = {
    "intro.md": CLEAN["intro.md"] + (
        "\n[gone](nowhere.md), [no anchor](forward.md#no-such-heading), <a href=\"/elsewhere/page.html\">away</a>\n"
        "\n![missing](figures/missing.png)\n"
        "\nA KaTeX error: $\\frac{1}{$ and raw math: \\\\(x\\\\)\n"
        "\n<script>console.error('boom from the test');</script>\n"
        "<script>throw new Error('kaboom');</script>\n"),
}
EXPECTED = {
    "broken-link": ("intro.html", "broken link nowhere.html: nowhere.html is not in the build"),
    "broken-anchor": ("intro.html", 'broken anchor forward.html#no-such-heading: forward.html has no element with id "no-such-heading"'),
    "link-outside-site-url": ("intro.html", "broken link /elsewhere/page.html: /elsewhere/page.html is outside the site-url /tiny/"),
    "broken-image": ("intro.html", "image not loaded: figures/missing.png (complete=true, naturalWidth=0)"),
    "http-404": ("intro.html", "HTTP 404 for http://127.0.0.1:*/tiny/figures/missing.png"),
    "katex-error": ("intro.html", "KaTeX error: ParseError: KaTeX parse error:"),
    "raw-math": ("intro.html", "raw \\( in the visible text: …"),
    "console-error": ("intro.html", "console.error: boom from the test"),
    "uncaught-exception": ("intro.html", "uncaught exception: Error: kaboom"),
    "math-not-rendered": ("guidance.html", "its markdown has math but no .katex element was rendered"),
    "playground-buttons": ("guidance.html", "playground run button(s)"),
    "other-site-requested": ("guidance.html", "request failed: https://play.rust-lang.org/*: blocked: the book must not need another site"),
    "runnable-in-book-toml": ("book.toml", "[output.html.playground] runnable is true"),
    "search-finds-nothing": ("search", "searching for 'zzqxjw' showed no result"),
}


def build(root, pages, broken):
    """Writes and builds a tiny book in root; returns its build dir."""
    os.makedirs(os.path.join(root, "src", "figures"))
    with open(os.path.join(root, "book.toml"), "w") as f:
        f.write(f"""[book]
title = "Tiny"
src = "src"
[build]
build-dir = "out/book"
create-missing = false
[preprocessor.katex]
no-css = true
throw-on-error = {str(not broken).lower()}
[output.html]
site-url = "/tiny/"
[output.html.playground]
runnable = {str(broken).lower()}
""")
    for name, text in pages.items():
        with open(os.path.join(root, "src", name), "w") as f:
            f.write(text)
    with open(os.path.join(root, "src", "figures", "square.png"), "wb") as f:
        f.write(png(24, 16))
    for tool in ("mdbook", "mdbook-katex"):
        assert shutil.which(tool, path=ENV["PATH"]), f"{tool} not found: run scripts/setup.sh"
    subprocess.run(["mdbook", "build"], cwd=root, env=ENV, check=True, capture_output=True)
    return os.path.join(root, "out", "book")


def check(book, *args, env=ENV):
    r = subprocess.run([sys.executable, SCRIPT, "--book", book, "--timeout", "10", *args],
                       env=env, capture_output=True, text=True, timeout=120)
    print(r.stdout, r.stderr)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    book = build(tmp_path_factory.mktemp("clean"), CLEAN, broken=False)
    return (book, *check(book))


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    book = build(root, {**CLEAN, **BROKEN}, broken=True)
    with open(os.path.join(root, "src", "guidance.md"), "a") as f:
        f.write("\nThe guided noise $\\tilde\\epsilon$.\n")   # a stale build: math in the source, not the page
    return check(book, "--query", "zzqxjw")


def test_clean_book_passes(clean):
    book, rc, out = clean
    assert rc == 0, out
    assert "FAIL" not in out
    assert re.search(r"^ok  search 'alpha_bar': \d+ search results? for 'alpha_bar'", out, re.M), out
    assert re.search(r"^check-rendered: 7 pages \(4 with math\), \d+ images, \d+ links; 0 problem", out, re.M), out
    for page in check_rendered.SCREENSHOT_PAGES:
        with open(os.path.join(book, "..", "book-screenshots", page[:-5] + ".png"), "rb") as f:
            head = f.read(24)
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack("!II", head[16:24]) == (1280, 900)


def test_broken_book_exits_1(broken):
    rc, out = broken
    assert rc == 1, out
    assert re.search(r"^check-rendered: .* (\d+) problem", out, re.M)


@pytest.mark.parametrize("name", EXPECTED)
def test_broken_book_reports(broken, name):
    page, text = EXPECTED[name]
    pattern = re.escape(f"FAIL {page}: ") + ".*" + ".*".join(map(re.escape, text.split("*")))
    assert re.search(pattern, broken[1]), f"no line like {pattern!r} in:\n{broken[1]}"


def test_no_book_exits_2(tmp_path):
    rc, out = check(str(tmp_path / "nothing"))
    assert rc == 2 and "index.html does not exist: run `mdbook build` first" in out


def test_no_chromium_exits_2(clean):
    rc, out = check(clean[0], env=dict(ENV, CHROMIUM="/nonexistent/chromium"))
    assert rc == 2 and "CHROMIUM=/nonexistent/chromium is not an executable" in out


@pytest.mark.parametrize("text, math", [
    ("Plain $5 and $6.", False),
    ("Inline $\\alpha_t$ here.", True),
    ("$$x$$", True),
    ("Escaped \\$x\\$ dollars.", False),
    ("Code `$x$` span.", False),
    ("```\n$x_t$\n```\nafter", False),
    ("~~~text\n$$\n~~~\n", False),
])
def test_md_has_math(text, math):
    assert check_rendered.md_has_math(text) is math


def test_raw_math_problems():
    assert check_rendered.raw_math_problems("costs $5 or $6, the sum (a) [b]") == []
    found = check_rendered.raw_math_problems("left $$x$$ and \\(y\\) and \\[z\\] and $\\alpha_t$")
    kinds = [p.split(" in the visible text")[0] for p in found]
    assert list(dict.fromkeys(kinds)) == ["raw $$", "raw \\(", "raw \\[", "raw inline math"]
