#!/usr/bin/env python3
"""Checks the *rendered* book in headless Chromium, driven by Playwright.

The built book is served over http under book.toml's site-url (other sites are
blocked). Every page must load without console errors, uncaught exceptions,
failed requests or HTTP errors; show its math rendered by KaTeX (no raw `$$`,
`\\(`, `$…\\alpha…$`, no .katex-error); have every <img> loaded; link only to
files and #ids in the build; have no runnable Rust playground. The search box
must find --query. Screenshots of three pages go to <build dir>/../book-screenshots/.

Prints `ok  NAME` or `FAIL NAME: problem` lines and a summary. Exit status: 0 all
good, 1 a problem in the book, 2 the check could not run. Chromium is the
system's (CHROMIUM=/path, else chromium on PATH), never Playwright's download.
"""
import argparse
import functools
import http.server
import json
import os
import pathlib
import re
import shutil
import signal
import sys
import threading
import time
import urllib.parse

try:
    import tomllib
    from playwright.sync_api import Error as PlaywrightError, sync_playwright
except ImportError as e:
    print(f"error: {sys.executable} has no {e.name} (needs Python 3.11+ and playwright): "
          "run scripts/setup.sh, then scripts/check-rendered.sh (it uses the venv)", file=sys.stderr)
    sys.exit(2)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCREENSHOT_PAGES = ["index.html", "forward.html", "guidance.html"]


class SetupError(Exception):
    """The check could not run at all (exit 2)."""


def show(path):
    """path relative to the current folder when it is below it, else absolute."""
    rel = os.path.relpath(path)
    return os.path.abspath(path) if rel.startswith("..") else rel


def toml_get(path, *keys, default=None):
    """book.toml's [keys[0].keys[1]…] value (default when path is None or it is unset)."""
    if not path:
        return default
    with open(path, "rb") as f:
        value = tomllib.load(f)
    for k in keys:
        value = value.get(k, {}) if isinstance(value, dict) else {}
    return default if value == {} else value


def find_book_toml(start):
    d = os.path.abspath(start)
    while not os.path.isfile(os.path.join(d, "book.toml")):
        if os.path.dirname(d) == d:
            return None
        d = os.path.dirname(d)
    return os.path.join(d, "book.toml")


def md_has_math(text):
    """True when markdown, outside fenced blocks and code spans, has $$ or $…$."""
    body = re.sub(r"(?ms)^\s*(`{3,}|~{3,}).*?^\s*\1[^\n]*$", "", text)
    body = re.sub(r"(`+)(?:.|\n)*?\1", "", body).replace("\\$", "")
    return "$$" in body or re.search(r"\$[^$\s](?:[^$\n]*?[^$\s])?\$", body) is not None


def math_pages(src):
    """The built .html paths (relative) whose markdown has math."""
    pages = set()
    if not src or not os.path.isdir(src):
        return pages
    for dirpath, _, files in os.walk(src):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), src).replace(os.sep, "/")
            if f.endswith(".md") and f != "SUMMARY.md" and \
                    md_has_math(pathlib.Path(src, rel).read_text("utf-8")):
                pages.add(rel[:-3] + ".html")
                if f == "README.md":
                    pages.add(rel[:-len("README.md")] + "index.html")
    summary = os.path.join(src, "SUMMARY.md")
    if os.path.isfile(summary):   # index.html is a copy of the first chapter
        m = re.search(r"\]\(\s*<?([^)>\s]+\.md)", pathlib.Path(summary).read_text("utf-8"))
        if m and m.group(1).lstrip("./")[:-3] + ".html" in pages:
            pages.add("index.html")
    return pages | {"print.html"} if pages else pages


RAW_MATH = [(re.compile(r"\$\$"), "raw $$"), (re.compile(r"\\\("), "raw \\("), (re.compile(r"\\\["), "raw \\["),
            (re.compile(r"\$[^$\s][^$\n]{0,200}?[_^\\][^$\n]{0,200}?[^$\s]\$"), "raw inline math")]


def raw_math_problems(text):
    problems = []
    for pattern, what in RAW_MATH:
        hits = list(pattern.finditer(text))
        for m in hits[:3]:
            snippet = " ".join(text[max(0, m.start() - 30):m.end() + 30].split())
            problems.append(f"{what} in the visible text: …{snippet}…")
        if len(hits) > 3:
            problems.append(f"{what}: {len(hits) - 3} more")
    return problems


class Handler(http.server.SimpleHTTPRequestHandler):
    """The book under its site-url (prefix), nothing cached, nothing logged."""
    prefix = "/"

    def log_message(self, *args):
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")   # each page fetches its own files
        super().end_headers()

    def send_head(self):
        if self.path.startswith(self.prefix):
            return super().send_head()
        self.send_error(404, f"outside the site-url {self.prefix}")
        return None

    def translate_path(self, path):
        return super().translate_path("/" + path[len(self.prefix):])


def serve(directory, prefix):
    handler = functools.partial(type("BookHandler", (Handler,), {"prefix": prefix}), directory=directory)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads, srv.handle_error = True, lambda *a: None   # a dropped connection is no problem
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def find_chromium():
    env = os.environ.get("CHROMIUM")
    for name in [env] if env else ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]:
        if shutil.which(name):
            return shutil.which(name)
    raise SetupError(f"CHROMIUM={env} is not an executable" if env else "chromium not found: install it "
                     "(Debian/Ubuntu: sudo apt-get install chromium) or point CHROMIUM=/path/to/chrome at one")


JS_WAIT = """async (ms) => {   // images (lazy ones too) and fonts, at most ms
  const imgs = Array.from(document.images);
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  const loaded = imgs.map(i => i.complete || new Promise(r => { i.onload = i.onerror = r; }));
  await Promise.race([Promise.all([...loaded, document.fonts.ready]), new Promise(r => setTimeout(r, ms))]);
}"""

JS_CHECK = """() => {
  const all = s => Array.from(document.querySelectorAll(s));
  // The visible text outside code and rendered math (hidden while innerText is read).
  const style = document.createElement('style');
  style.textContent = 'pre, code, .katex, .katex-display, script, style, noscript, template, textarea '
                    + '{ display: none !important; }';
  document.head.appendChild(style);
  const text = document.body.innerText;
  style.remove();
  return {text, katex: all('.katex').length,
    katexErrors: all('.katex-error').map(e => `${e.title} in ${e.textContent.slice(0, 80)}`),
    playButtons: all('.play-button').length, playgrounds: all('.playground').length,
    images: Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]),
    links: all('a[href]').map(a => [a.getAttribute('href'), a.href]),
    ids: all('[id]').map(e => e.id).concat(all('a[name]').map(e => e.name))};
}"""

SEARCH = """(() => {   // mdBook 0.5 ids, else 0.4's
  const el = id => document.getElementById('mdbook-' + id) || document.getElementById(id);
  const bar = el('searchbar'), wrap = el('search-wrapper'), ul = el('searchresults');
  const first = ul && ul.querySelector('li a'), header = el('searchresults-header');
  return {bar: !!bar, open: !!bar && document.activeElement === bar && !(wrap && wrap.classList.contains('hidden')),
          n: ul ? ul.children.length : 0, value: bar && bar.value, first: first && first.getAttribute('href'),
          header: header ? header.innerText.trim() : ''};
})()"""


class Checker:
    def __init__(self, args, page, origin, prefix):
        self.args, self.page, self.origin, self.prefix = args, page, origin, prefix
        self.book, self.ms = os.path.abspath(args.book), args.timeout * 1000
        self.cur = []          # the problems of the page being checked
        self.owner = {}        # request -> the problems of the page that made it
        self.http_errors = set()
        self.inflight, self.last_request = set(), 0.0
        self.problem_count, self.shots = 0, []
        self.counts = {"images": 0, "links": 0, "math": 0}
        page.on("console", self.on_console)
        page.on("pageerror", lambda e: self.cur.append(f"uncaught exception: {e.name}: {e.message}"))
        page.on("request", self.on_request)
        page.on("requestfinished", lambda r: self.inflight.discard(r))
        page.on("requestfailed", self.on_failed)
        page.on("response", self.on_response)

    def on_request(self, r):
        self.owner[r] = self.cur
        self.inflight.add(r)
        self.last_request = time.monotonic()

    def on_console(self, msg):
        # Chromium's "Failed to load resource" lines repeat what the response and
        # requestfailed events say (and cover its own favicon probes): skipped.
        if msg.type in ("error", "assert") and not msg.text.startswith("Failed to load resource"):
            self.cur.append(f"console.{msg.type}: {msg.text}")

    def on_response(self, r):
        if r.status >= 400:
            self.http_errors.add(r.url)
            self.owner.get(r.request, self.cur).append(f"HTTP {r.status} for {r.url}")

    def on_failed(self, r):
        self.inflight.discard(r)
        owner, why = self.owner.get(r, self.cur), r.failure or ""
        if (owner is not self.cur and "ERR_ABORTED" in why) or r.url in self.http_errors:
            return   # aborted as we navigated on, or after an HTTP error already reported
        why = "blocked: the book must not need another site" if "BLOCKED_BY_CLIENT" in why else why
        owner.append(f"request failed: {r.url}: {why}")

    def open(self, rel, problems):
        """Loads rel and waits for its images, fonts and a quiet network."""
        self.cur = problems
        self.inflight.clear()
        try:
            self.page.goto(self.origin + self.prefix + urllib.parse.quote(rel), timeout=self.ms)
            self.page.evaluate(JS_WAIT, self.ms / 2)
        except PlaywrightError as e:
            problems.append(f"did not load: {str(e).splitlines()[0]}")
            return False
        deadline = time.monotonic() + self.args.timeout / 2
        while self.inflight or time.monotonic() - self.last_request < 0.3:
            if time.monotonic() > deadline:
                busy = ", ".join(sorted(r.url for r in self.inflight)[:3])
                problems.append(f"network still busy after {self.args.timeout / 2:.0f} s: {busy}")
                break
            self.page.wait_for_timeout(50)
        return True

    def check_page(self, rel):
        problems = []
        if not self.open(rel, problems):
            return problems, None
        info = self.page.evaluate(JS_CHECK)
        self.counts["images"] += len(info["images"])
        self.counts["math"] += bool(info["katex"])
        problems += raw_math_problems(info["text"])
        problems += [f"KaTeX error: {e}" for e in info["katexErrors"]]
        if rel in self.math and info["katex"] == 0:
            problems.append("its markdown has math but no .katex element was rendered")
        problems += [f"image not loaded: {src} (complete={str(done).lower()}, naturalWidth={w})"
                     for src, done, w in info["images"] if not done or w == 0]
        if info["playButtons"] or info["playgrounds"]:
            problems.append(f"{info['playButtons']} playground run button(s), {info['playgrounds']} "
                            ".playground block(s): Rust blocks must not be runnable")
        if rel in SCREENSHOT_PAGES:
            out = os.path.join(self.args.screenshots, rel[:-5] + ".png")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            self.page.evaluate("() => window.scrollTo(0, 0)")
            png = self.page.screenshot(path=out)   # the PNG header has its width and height
            w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
            self.shots.append(f"{show(out)} ({w}×{h})")
        return problems, info

    def check_links(self, rel, info):
        problems, seen = [], set()
        for href, url in info["links"]:
            if href.startswith("#"):
                # A same-page anchor. 404.html has <base href="/site-url/">, so the browser
                # resolves it against the site's root; it is meant for the page itself.
                url = self.origin + self.prefix + urllib.parse.quote(rel) + href
            u = urllib.parse.urlsplit(url)
            if f"{u.scheme}://{u.netloc}" != self.origin or url in seen:
                continue
            seen.add(url)
            self.counts["links"] += 1
            path = urllib.parse.unquote(u.path)
            if not path.startswith(self.prefix):
                problems.append(f"broken link {href}: {path} is outside the site-url {self.prefix}")
                continue
            path = path[len(self.prefix):]
            path += "index.html" if path == "" or path.endswith("/") else ""
            if os.path.isdir(os.path.join(self.book, path)):
                path += "/index.html"
            if not os.path.isfile(os.path.join(self.book, path)):
                problems.append(f"broken link {href}: {path} is not in the build")
                continue
            frag, target = urllib.parse.unquote(u.fragment), self.infos.get(path)
            if frag and target and frag not in target["ids"]:
                problems.append(f"broken anchor {href}: {path} has no element with id \"{frag}\"")
        return problems

    def check_search(self):
        problems = []
        if not self.open("index.html", problems):
            return problems, ""
        if not self.page.evaluate(SEARCH)["bar"]:
            return problems + ["index.html has no search bar (#mdbook-searchbar / #searchbar): is search enabled?"], ""
        self.page.keyboard.press("s")   # as a reader would
        try:
            self.page.wait_for_function(f"{SEARCH}.open", timeout=self.ms)
        except PlaywrightError:
            return problems + ["pressing 's' did not open and focus the search bar"], ""
        self.page.keyboard.type(self.args.query)   # key by key: keyup runs mdBook's search
        try:   # until the results header names the whole query
            self.page.wait_for_function(f"{SEARCH}.header.includes({json.dumps(self.args.query)})", timeout=self.ms)
        except PlaywrightError:
            pass
        r = self.page.evaluate(SEARCH)
        if r["n"] == 0:
            return problems + [f"searching for {r['value']!r} showed no result (header: {r['header']!r})"], ""
        first = urllib.parse.unquote(urllib.parse.urlsplit(r["first"] or "").path).lstrip("/")
        if not os.path.isfile(os.path.join(self.book, first)):
            problems.append(f"the first search result links to {r['first']!r}, which is not in the build")
        return problems, f"{r['value']!r}: {r['header']} (first: {r['first']})"

    def check_config(self):
        toml = self.args.book_toml
        if not toml:
            return [f"no book.toml above {self.book}: cannot verify [output.html.playground] runnable = false"]
        runnable = toml_get(toml, "output", "html", "playground", "runnable", default=True)
        if runnable is not False:
            return [f"{show(toml)}: [output.html.playground] runnable is {str(runnable).lower()} "
                    "(mdBook's default is true): set runnable = false"]
        return []

    def report(self, name, problems, ok=""):
        problems = list(dict.fromkeys(problems))
        for p in problems:
            print(f"FAIL {name}: {p}")
        if not problems:
            print(f"ok  {name}{ok}")
        self.problem_count += len(problems)

    def run(self, pages):
        self.math = math_pages(self.args.src)
        states, self.infos = {}, {}
        for rel in pages:
            states[rel], self.infos[rel] = self.check_page(rel)
        search, summary = self.check_search()
        for rel in pages:
            links = self.check_links(rel, self.infos[rel]) if self.infos[rel] else []
            self.report(rel, states[rel] + links)
        self.report("screenshots", [f"{p} is not in the build" for p in SCREENSHOT_PAGES if p not in pages])
        if self.shots:
            print("      " + ", ".join(self.shots))
        self.report("search", search, f" {summary}")
        self.report("book.toml", self.check_config())


def check(args):
    start, book = time.monotonic(), os.path.abspath(args.book)
    if not os.path.isfile(os.path.join(book, "index.html")):
        raise SetupError(f"{show(book)}/index.html does not exist: run `mdbook build` first")
    pages = sorted(os.path.relpath(os.path.join(d, f), book).replace(os.sep, "/")
                   for d, _, fs in os.walk(book) for f in fs if f.endswith(".html"))
    site = toml_get(args.book_toml, "output", "html", "site-url", default="/").strip("/")
    prefix = f"/{site}/" if site else "/"
    exe = find_chromium()
    srv = serve(book, prefix)
    origin = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        with sync_playwright() as pw:
            try:   # Playwright's own browser download is never used
                browser = pw.chromium.launch(executable_path=exe, timeout=args.timeout * 1000,
                                             args=["--disable-gpu", "--disable-dev-shm-usage"])
            except PlaywrightError as e:
                raise SetupError(f"could not start {exe}: {e}") from None
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            # print.html calls window.print() on load; a headless print dialog helps nobody.
            context.add_init_script("window.print = () => {};")
            # The book must work offline (KaTeX and its fonts are vendored): no other site.
            context.route(lambda url: not url.startswith((origin, "data:", "blob:")),
                          lambda route: route.abort("blockedbyclient"))
            checker = Checker(args, context.new_page(), origin, prefix)
            checker.run(pages)
            browser.close()
    finally:
        srv.shutdown()
    c = checker.counts
    print(f"check-rendered: {len(pages)} pages ({c['math']} with math), {c['images']} images, "
          f"{c['links']} links; {checker.problem_count} problem(s) "
          f"in {time.monotonic() - start:.1f} s ({show(book)})")
    return 1 if checker.problem_count else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--book", help="the built book (default: build-dir from book.toml, target/book)")
    ap.add_argument("--src", help="the markdown sources (default: src from book.toml)")
    ap.add_argument("--screenshots", help="where the PNGs go (default: book-screenshots next to --book)")
    ap.add_argument("--query", default="alpha_bar", help="what to type into the search bar")
    ap.add_argument("--timeout", type=float, default=20, help="seconds to wait for anything (default 20)")
    args = ap.parse_args()

    args.book_toml = find_book_toml(args.book) if args.book else os.path.join(ROOT, "book.toml")
    if args.book_toml and not os.path.isfile(args.book_toml):
        args.book_toml = None
    base = os.path.dirname(args.book_toml) if args.book_toml else ROOT
    args.book = args.book or os.path.join(base, toml_get(args.book_toml, "build", "build-dir", default="book"))
    if not args.src and args.book_toml:
        args.src = os.path.join(base, toml_get(args.book_toml, "book", "src", default="src"))
    if not args.screenshots:
        args.screenshots = os.path.join(os.path.dirname(os.path.abspath(args.book)), "book-screenshots")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so the browser is closed
    try:
        return check(args)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PlaywrightError as e:
        print(f"error: the browser check broke down: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
