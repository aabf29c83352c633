#!/usr/bin/env python3
"""Checks the *rendered* book in a real browser (headless Chromium over the
DevTools protocol; Python 3 standard library only):

  1. every HTML page of the built book loads, served over http://127.0.0.1 (not
     file://, which would hide fetch errors), without a console error, an
     uncaught exception, a failed request or an HTTP error status;
  2. math is rendered: no raw `$$`, `\\(`, `\\[` or `$…\\alpha…$` left in the
     visible text outside code, no KaTeX error, and every page whose markdown
     has math has at least one .katex element;
  3. every <img> has loaded (complete, naturalWidth > 0);
  4. screenshots of three key pages go to <build dir>/../book-screenshots/;
  5. every same-origin <a href> names a file that exists in the build and, if
     it has a #fragment, an element with that id in the target page;
  6. no Rust block is runnable on the playground (no .play-button, no
     pre.playground; book.toml has [output.html.playground] runnable = false),
     and the search box finds a query.

Prints `ok  page.html` or one `FAIL page.html: problem` line per problem, then a
summary; exits 1 on any problem, 2 if the check itself cannot run (no
Chromium, no built book).

    python3 scripts/check-rendered.py [--book target/book] [--src book]
                                      [--query alpha_bar] [--timeout 20]
"""
import argparse
import base64
import functools
import hashlib
import http.server
import json
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCREENSHOT_PAGES = ["index.html", "forward.html", "guidance.html"]
VIEWPORT = (1280, 900)


def show(path):
    """path relative to the current folder when it is below it, else absolute."""
    rel = os.path.relpath(path)
    return os.path.abspath(path) if rel.startswith("..") else rel


class SetupError(Exception):
    """The check could not run at all (exit 2)."""


# --- book.toml ----------------------------------------------------------------

def load_toml(path):
    try:
        import tomllib  # Python 3.11+
        with open(path, "rb") as f:
            return tomllib.load(f)
    except ImportError:
        pass
    # Tiny fallback for Pythons before 3.11: [a.b] tables and `key = scalar` lines.
    cfg = table = {}
    for line in open(path, encoding="utf-8"):
        line = re.sub(r"\s+#[^\"']*$", "", line).strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^\[([^\]]+)\]$", line)
        if m:
            table = cfg
            for part in m.group(1).split("."):
                table = table.setdefault(part.strip(), {})
            continue
        m = re.match(r"^([\w.-]+)\s*=\s*(.+)$", line)
        if m:
            v = m.group(2).strip()
            if v in ("true", "false"):
                v = v == "true"
            elif v[:1] in "\"'":
                v = v[1:-1]
            table[m.group(1)] = v
    return cfg


def find_book_toml(start):
    d = os.path.abspath(start)
    while True:
        p = os.path.join(d, "book.toml")
        if os.path.isfile(p):
            return p
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


# --- which pages have math in their markdown ----------------------------------

def md_has_math(text):
    out, fence = [], None
    for line in text.split("\n"):
        s = line.strip()
        m = re.match(r"^(`{3,}|~{3,})", s)
        if fence:
            if m and s.startswith(fence):
                fence = None
            continue
        if m:
            fence = m.group(1)
            continue
        out.append(line)
    body = "\n".join(out)
    body = re.sub(r"(`+)(?:.|\n)*?\1", "", body)   # inline code spans
    body = body.replace("\\$", "")                 # escaped dollars
    return "$$" in body or re.search(r"\$[^$\s](?:[^$\n]*?[^$\s])?\$", body) is not None


def math_pages(src):
    """The set of built .html paths (relative) whose markdown has math."""
    pages, any_math = set(), False
    if not src or not os.path.isdir(src):
        return pages
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".md") or f == "SUMMARY.md":
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, src).replace(os.sep, "/")
            if md_has_math(open(path, encoding="utf-8").read()):
                any_math = True
                pages.add(rel[:-3] + ".html")
                if os.path.basename(rel) == "README.md":
                    pages.add(rel[: -len("README.md")] + "index.html")
    summary = os.path.join(src, "SUMMARY.md")
    if os.path.isfile(summary):   # index.html is a copy of the first chapter
        m = re.search(r"\]\(\s*<?([^)>\s]+\.md)", open(summary, encoding="utf-8").read())
        if m and m.group(1).lstrip("./")[:-3] + ".html" in pages:
            pages.add("index.html")
    if any_math:
        pages.add("print.html")
    return pages


# --- a minimal WebSocket client (RFC 6455, client side) -------------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _mask(data, key):
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


class WebSocket:
    def __init__(self, url, timeout):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "ws":
            raise SetupError(f"unsupported WebSocket URL {url}")
        deadline = time.monotonic() + timeout
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        self.buf = bytearray()
        self.frag = None  # (opcode, [payloads]) of a fragmented message in progress
        key = base64.b64encode(os.urandom(16)).decode()
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        self.sock.sendall((
            f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        if len(lines[0].split()) < 2 or lines[0].split()[1] != "101":
            raise SetupError(f"WebSocket handshake refused: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != want:
            raise SetupError("WebSocket handshake: bad Sec-WebSocket-Accept")

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError from None
        if not data:
            raise ConnectionError("the browser closed the DevTools connection")
        self.buf += data

    def _send_frame(self, opcode, payload):
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        key = os.urandom(4)
        self.sock.settimeout(30)
        self.sock.sendall(head + key + _mask(payload, key))

    def send(self, text):
        self._send_frame(0x1, text.encode("utf-8"))

    def _parse_frame(self):
        """One complete frame from the buffer, or None if more bytes are needed."""
        b = self.buf
        if len(b) < 2:
            return None
        fin, opcode = b[0] & 0x80, b[0] & 0x0F
        masked, n, pos = b[1] & 0x80, b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, pos = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, pos = struct.unpack("!Q", b[2:10])[0], 10
        key = None
        if masked:
            if len(b) < pos + 4:
                return None
            key, pos = bytes(b[pos:pos + 4]), pos + 4
        if len(b) < pos + n:
            return None
        payload = bytes(b[pos:pos + n])
        del b[:pos + n]
        if key:
            payload = _mask(payload, key)
        return bool(fin), opcode, payload

    def recv(self, deadline):
        """The next text/binary message (reassembled from fragments) as str."""
        while True:
            frame = self._parse_frame()
            if frame is None:
                self._fill(deadline)
                continue
            fin, opcode, payload = frame
            if opcode == 0x9:            # ping
                self._send_frame(0xA, payload)
            elif opcode == 0xA:          # pong
                pass
            elif opcode == 0x8:          # close
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise ConnectionError(f"the browser closed the DevTools connection (code {code})")
            elif opcode in (0x1, 0x2):
                if fin:
                    return payload.decode("utf-8")
                self.frag = (opcode, [payload])
            elif opcode == 0x0:          # continuation
                if self.frag is None:
                    raise ConnectionError("WebSocket: continuation frame without a start")
                self.frag[1].append(payload)
                if fin:
                    data = b"".join(self.frag[1])
                    self.frag = None
                    return data.decode("utf-8")
            else:
                raise ConnectionError(f"WebSocket: unknown opcode {opcode}")

    def close(self):
        try:
            self._send_frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


# --- the DevTools protocol -------------------------------------------------------

class CDPError(Exception):
    pass


class CDP:
    def __init__(self, ws, on_event):
        self.ws, self.on_event = ws, on_event
        self.next_id, self.results = 0, {}

    def pump(self, deadline):
        msg = json.loads(self.ws.recv(deadline))
        if "id" in msg:
            self.results[msg["id"]] = msg
        else:
            self.on_event(msg)

    def call(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while mid not in self.results:
            try:
                self.pump(deadline)
            except TimeoutError:
                raise TimeoutError(f"no answer to {method} within {timeout} s") from None
        r = self.results.pop(mid)
        if "error" in r:
            raise CDPError(f"{method}: {r['error'].get('message')}")
        return r.get("result", {})

    def wait_until(self, cond, timeout):
        """Processes messages until cond() is true; False on timeout."""
        deadline = time.monotonic() + timeout
        while not cond():
            try:
                self.pump(deadline)
            except TimeoutError:
                return cond()
        return True

    def pump_for(self, seconds):
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.pump(deadline)
            except TimeoutError:
                return


# --- Chromium --------------------------------------------------------------------

def find_chromium():
    env = os.environ.get("CHROMIUM")
    if env:
        if shutil.which(env):
            return shutil.which(env)
        raise SetupError(f"CHROMIUM={env} is not an executable")
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    raise SetupError("chromium not found: install it (Debian/Ubuntu: sudo apt-get install chromium) "
                     "or point CHROMIUM=/path/to/chrome at a Chrome/Chromium binary")


class Browser:
    def __init__(self, timeout):
        self.exe = find_chromium()
        self.profile = tempfile.mkdtemp(prefix="check-rendered-chromium-")
        self.stderr_tail = []
        self.proc = subprocess.Popen(
            [self.exe, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "--hide-scrollbars",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-default-apps", "--mute-audio",
             "--disable-dev-shm-usage", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)   # its own process group, so cleanup gets every child
        found = queue.Queue()

        def read_stderr():
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                self.stderr_tail = (self.stderr_tail + [line])[-20:]
                m = re.search(r"DevTools listening on (ws://\S+)", line)
                if m:
                    found.put(m.group(1))
        threading.Thread(target=read_stderr, daemon=True).start()

        deadline = time.monotonic() + timeout
        self.ws_url = None
        while self.ws_url is None:
            try:
                self.ws_url = found.get(timeout=0.1)
                break
            except queue.Empty:
                pass
            port_file = os.path.join(self.profile, "DevToolsActivePort")
            if os.path.isfile(port_file):   # the same URL, written by Chromium
                lines = open(port_file).read().split()
                if len(lines) >= 2:
                    self.ws_url = f"ws://127.0.0.1:{lines[0]}{lines[1]}"
                    break
            if self.proc.poll() is not None:
                raise SetupError(f"{self.exe} exited with status {self.proc.returncode} before DevTools "
                                 "was ready:\n    " + "\n    ".join(self.stderr_tail[-8:]))
            if time.monotonic() > deadline:
                raise SetupError(f"{self.exe} printed no DevTools URL within {timeout} s:\n    "
                                 + "\n    ".join(self.stderr_tail[-8:]))

    def close(self, cdp=None):
        if cdp is not None:
            try:
                cdp.call("Browser.close", timeout=3)
            except Exception:
                pass
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=3)
                    break
                except subprocess.TimeoutExpired:
                    continue
        shutil.rmtree(self.profile, ignore_errors=True)


# --- the local web server -----------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    # The book's site-url (book.toml): pages that use absolute links, such as
    # 404.html, reach the files under it, as they do on the published site.
    prefix = ""

    def log_message(self, *args):
        pass

    def translate_path(self, path):
        if self.prefix and path.startswith(self.prefix):
            path = "/" + path[len(self.prefix):]
        return super().translate_path(path)


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass   # the browser dropping a connection is not our business


def serve(directory):
    import tomllib
    book_toml = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "book.toml")
    with open(book_toml, "rb") as f:
        site = tomllib.load(f).get("output", {}).get("html", {}).get("site-url", "/")
    QuietHandler.prefix = site.rstrip("/") + "/" if site.strip("/") else ""
    srv = QuietServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=directory))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


# --- JavaScript run in each page --------------------------------------------------------

JS_WAIT = """async (timeoutMs) => {
  const imgs = Array.from(document.images);
  for (const i of imgs) if (i.loading === 'lazy') i.loading = 'eager';
  const loaded = Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r, {once: true});
    i.addEventListener('error', r, {once: true});
  })));
  const timer = new Promise(r => setTimeout(r, timeoutMs));
  await Promise.race([Promise.all([loaded, document.fonts.ready]), timer]);
  return true;
}"""

JS_CHECK = """() => {
  const out = {};
  // Visible text outside code and rendered math (hidden while innerText is read).
  const style = document.createElement('style');
  style.textContent = 'pre, code, .katex, .katex-display, script, style, noscript, template, textarea '
                    + '{ display: none !important; }';
  document.head.appendChild(style);
  out.text = document.body.innerText;
  style.remove();
  out.katex = document.querySelectorAll('.katex').length;
  out.katexErrors = Array.from(document.querySelectorAll('.katex-error'))
    .map(e => (e.getAttribute('title') || '') + ' in ' + e.textContent.slice(0, 80));
  out.playButtons = document.querySelectorAll('.play-button').length;
  out.playgrounds = document.querySelectorAll('pre.playground, .playground').length;
  out.images = Array.from(document.images).map(i => ({
    src: i.getAttribute('src'), url: i.currentSrc || i.src,
    complete: i.complete, width: i.naturalWidth}));
  out.links = Array.from(document.querySelectorAll('a[href]')).map(a => ({
    href: a.getAttribute('href'), url: a.href}));
  out.ids = Array.from(document.querySelectorAll('[id]')).map(e => e.id)
    .concat(Array.from(document.querySelectorAll('a[name]')).map(e => e.getAttribute('name')));
  return out;
}"""

RAW_MATH = [
    (re.compile(r"\$\$"), "raw $$"),
    (re.compile(r"\\\("), "raw \\("),
    (re.compile(r"\\\["), "raw \\["),
    (re.compile(r"\$[^$\s][^$\n]{0,200}?[_^\\][^$\n]{0,200}?[^$\s]\$"), "raw inline math"),
]


def raw_math_problems(text):
    problems = []
    for pattern, what in RAW_MATH:
        hits = list(pattern.finditer(text))
        for m in hits[:3]:
            a, b = max(0, m.start() - 30), min(len(text), m.end() + 30)
            snippet = " ".join(text[a:b].split())
            problems.append(f"{what} in the visible text: …{snippet}…")
        if len(hits) > 3:
            problems.append(f"{what}: {len(hits) - 3} more")
    return problems


# --- the check -------------------------------------------------------------------------

class PageState:
    def __init__(self, name):
        self.name = name
        self.problems = []          # (kind, url, message)
        self.inflight = {}          # requestId -> url
        self.loaded = False
        self.ignored_urls = set()
        self.last_activity = time.monotonic()

    def add(self, message, kind="page", url=None):
        if (kind, url, message) not in self.problems:
            self.problems.append((kind, url, message))

    def messages(self):
        failed_urls = {u for k, u, _ in self.problems if k == "network"} | self.ignored_urls
        # Chrome also logs "Failed to load resource" for a URL already reported.
        return [m for k, u, m in self.problems if not (k == "lognet" and u in failed_urls)]


class Checker:
    def __init__(self, args):
        self.args = args
        self.book = os.path.abspath(args.book)
        self.session = None
        self.current = None
        self.owner = {}              # requestId -> PageState
        self.ignored = set()         # requestIds of the browser's own favicon probes
        self.problem_count = 0
        self.counts = {"images": 0, "links": 0, "math": 0}

    # Events from the browser -------------------------------------------------------
    def on_event(self, msg):
        if msg.get("sessionId") != self.session or self.current is None:
            return
        method, p = msg.get("method"), msg.get("params", {})
        cur = self.current
        if method == "Page.loadEventFired":
            cur.loaded = True
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = (d.get("exception") or {}).get("description") or d.get("text", "exception")
            where = f" ({d.get('url')}:{d.get('lineNumber', 0) + 1})" if d.get("url") else ""
            cur.add(f"uncaught exception: {text.splitlines()[0] if text else text}{where}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            parts = []
            for a in p.get("args", []):
                v = a.get("value", a.get("unserializableValue", a.get("description", a.get("type"))))
                parts.append(v if isinstance(v, str) else json.dumps(v))
            cur.add(f"console.{p.get('type')}: {' '.join(parts)}")
        elif method == "Log.entryAdded":
            e = p.get("entry", {})
            if e.get("level") == "error":
                kind = "lognet" if e.get("source") == "network" else "log"
                url = e.get("url")
                cur.add(f"console ({e.get('source')}): {e.get('text')}" + (f" [{url}]" if url else ""), kind, url)
        elif method.startswith("Network."):
            rid = p.get("requestId")
            owner = self.owner.get(rid, cur)
            owner.last_activity = time.monotonic()
            if method == "Network.requestWillBeSent":
                url = p.get("request", {}).get("url", "")
                if (urllib.parse.urlsplit(url).path == "/favicon.ico"
                        and p.get("initiator", {}).get("type") == "other"):
                    # Chrome asks for /favicon.ico by itself when a page links no icon
                    # (toc.html, the no-JS sidebar frame); the page did not request it.
                    self.ignored.add(rid)
                    cur.ignored_urls.add(url)
                    return
                self.owner[rid] = cur
                cur.inflight[rid] = url
            elif rid in self.ignored:
                return
            elif method == "Network.responseReceived":
                r = p.get("response", {})
                if r.get("status", 0) >= 400:
                    owner.add(f"HTTP {r.get('status')} for {r.get('url')}", "network", r.get("url"))
            elif method == "Network.loadingFinished":
                owner.inflight.pop(rid, None)
            elif method == "Network.loadingFailed":
                url = owner.inflight.pop(rid, None)
                if p.get("canceled") and owner is not cur:
                    return   # aborted because we navigated on
                if any(k == "network" and u == url for k, u, _ in owner.problems):
                    return   # Chrome aborts a stylesheet after its HTTP 404: said already
                why = p.get("errorText", "") + (f" ({p['blockedReason']})" if p.get("blockedReason") else "")
                owner.add(f"request failed: {url}: {why}", "network", url)

    # Helpers -----------------------------------------------------------------------
    def js(self, fn, *args, timeout=30):
        expr = f"({fn})({', '.join(json.dumps(a) for a in args)})"
        r = self.cdp.call("Runtime.evaluate", {"expression": expr, "awaitPromise": True,
                                               "returnByValue": True}, self.session, timeout=timeout)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CDPError("check script failed: " + ((d.get("exception") or {}).get("description") or d.get("text")))
        return r.get("result", {}).get("value")

    def wait_idle(self, state, quiet=0.3, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if not state.inflight and now - state.last_activity >= quiet:
                return True
            if now >= deadline:
                return False
            self.cdp.pump_for(min(0.05, deadline - now))

    def open(self, state, rel):
        """Navigates to rel and waits for load, images, fonts and a quiet network."""
        self.current = state
        url = f"{self.origin}/{urllib.parse.quote(rel)}"
        r = self.cdp.call("Page.navigate", {"url": url}, self.session, timeout=self.args.timeout)
        if r.get("errorText"):
            state.add(f"navigation failed: {r['errorText']}")
            return False
        if not self.cdp.wait_until(lambda: state.loaded, self.args.timeout):
            state.add(f"no load event within {self.args.timeout} s")
            return False
        self.js(JS_WAIT, int(self.args.timeout * 1000 / 2), timeout=self.args.timeout)
        if not self.wait_idle(state, timeout=self.args.timeout / 2):
            pending = ", ".join(sorted(set(filter(None, state.inflight.values())))[:3])
            state.add(f"network still busy after {self.args.timeout / 2:.0f} s: {pending}")
        return True

    # The checks --------------------------------------------------------------------
    def check_page(self, rel):
        state = PageState(rel)
        if not self.open(state, rel):
            return state, None
        info = self.js(JS_CHECK)
        self.counts["images"] += len(info["images"])
        self.counts["math"] += bool(info["katex"])
        for p in raw_math_problems(info["text"]):
            state.add(p)
        for e in info["katexErrors"]:
            state.add(f"KaTeX error: {e}")
        if rel in self.math and info["katex"] == 0:
            state.add("its markdown has math but no .katex element was rendered")
        for img in info["images"]:
            if not img["complete"] or img["width"] == 0:
                state.add(f"image not loaded: {img['src']} "
                          f"(complete={str(img['complete']).lower()}, naturalWidth={img['width']})")
        if info["playButtons"] or info["playgrounds"]:
            state.add(f"{info['playButtons']} playground run button(s), {info['playgrounds']} "
                      ".playground block(s): Rust blocks must not be runnable")
        if rel in SCREENSHOT_PAGES:
            self.screenshot(state, rel)
        return state, info

    def screenshot(self, state, rel):
        self.js("() => window.scrollTo(0, 0)")
        data = self.cdp.call("Page.captureScreenshot", {"format": "png"}, self.session,
                             timeout=self.args.timeout)["data"]
        png = base64.b64decode(data)
        out = os.path.join(self.shots, rel[:-5] + ".png")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as f:
            f.write(png)
        w, h = struct.unpack("!II", png[16:24]) if png[:8] == b"\x89PNG\r\n\x1a\n" else (0, 0)
        if w == 0:
            state.add(f"screenshot {out} is not a PNG")
        self.screenshots.append(f"{show(out)} ({w}×{h})")

    def check_links(self, infos):
        ids = {rel: set(info["ids"]) for rel, info in infos.items() if info}
        problems = {}
        static_ids = {}
        for rel, info in infos.items():
            if not info:
                continue
            seen = set()
            for link in info["links"]:
                u = urllib.parse.urlsplit(link["url"])
                if link["href"].startswith("#"):
                    # A same-page anchor. 404.html has <base href="/">, so the browser
                    # resolves its heading anchors against the root; they are meant for
                    # the page itself, wherever it is served.
                    u = urllib.parse.urlsplit(f"{self.origin}/{urllib.parse.quote(rel)}{link['href']}")
                if f"{u.scheme}://{u.netloc}" != self.origin or u.geturl() in seen:
                    continue
                seen.add(u.geturl())
                self.counts["links"] += 1
                path = urllib.parse.unquote(u.path)
                if QuietHandler.prefix and path.startswith(QuietHandler.prefix):
                    path = path[len(QuietHandler.prefix):]   # the site-url, as the server maps it
                path = path.lstrip("/")
                if path == "" or path.endswith("/"):
                    path += "index.html"
                full = os.path.join(self.book, *path.split("/"))
                if os.path.isdir(full):
                    path, full = path + "/index.html", os.path.join(full, "index.html")
                if not os.path.isfile(full):
                    problems.setdefault(rel, []).append(
                        f"broken link {link['href']}: {path} is not in the build")
                    continue
                frag = urllib.parse.unquote(u.fragment)
                if not frag or not path.endswith(".html"):
                    continue
                if path not in ids:   # a page we did not load: read its ids from the file
                    if path not in static_ids:
                        html = open(full, encoding="utf-8", errors="replace").read()
                        static_ids[path] = set(re.findall(r"""\b(?:id|name)\s*=\s*["']([^"']+)["']""", html))
                    target_ids = static_ids[path]
                else:
                    target_ids = ids[path]
                if frag not in target_ids:
                    problems.setdefault(rel, []).append(
                        f"broken anchor {link['href']}: {path} has no element with id \"{frag}\"")
        return problems

    def check_search(self):
        state = PageState("search")
        query = self.args.query
        if not self.open(state, "index.html"):
            return state, ""
        has = self.js("""() => !!(document.getElementById('mdbook-searchbar') || document.getElementById('searchbar'))""")
        if not has:
            state.add("index.html has no search bar (#mdbook-searchbar / #searchbar): is search enabled?")
            return state, ""
        key = lambda t, **k: self.cdp.call("Input.dispatchKeyEvent", dict(type=t, **k), self.session)
        # Press "s", as a reader would, to open the search bar.
        key("keyDown", key="s", code="KeyS", windowsVirtualKeyCode=83, text="s")
        key("keyUp", key="s", code="KeyS", windowsVirtualKeyCode=83)
        opened = lambda: self.js("""() => {
            const bar = document.getElementById('mdbook-searchbar') || document.getElementById('searchbar');
            const wrap = document.getElementById('mdbook-search-wrapper') || document.getElementById('search-wrapper');
            return document.activeElement === bar && !(wrap && wrap.classList.contains('hidden'));
        }""")
        deadline = time.monotonic() + self.args.timeout
        while not opened():
            if time.monotonic() > deadline:
                state.add("pressing 's' did not open and focus the search bar")
                return state, ""
            self.cdp.pump_for(0.05)
        # Type the query key by key (keyup is what triggers mdBook's search).
        for ch in query:
            k = {"key": ch, "text": ch}
            if ch.isalpha() and ch.isascii():
                k.update(code="Key" + ch.upper(), windowsVirtualKeyCode=ord(ch.upper()))
            elif ch.isdigit():
                k.update(code="Digit" + ch, windowsVirtualKeyCode=ord(ch))
            elif ch == "_":
                k.update(code="Minus", windowsVirtualKeyCode=189, modifiers=8)
            elif ch == " ":
                k.update(code="Space", windowsVirtualKeyCode=32)
            key("keyDown", **k)
            k.pop("text")
            key("keyUp", **k)
        results = lambda: self.js("""() => {
            const ul = document.getElementById('mdbook-searchresults') || document.getElementById('searchresults');
            const hd = document.getElementById('mdbook-searchresults-header') || document.getElementById('searchresults-header');
            const bar = document.getElementById('mdbook-searchbar') || document.getElementById('searchbar');
            return {n: ul ? ul.children.length : 0, header: hd ? hd.innerText : '', value: bar.value,
                    first: ul && ul.firstElementChild ? ul.firstElementChild.querySelector('a').getAttribute('href') : ''};
        }""")
        deadline = time.monotonic() + self.args.timeout
        r = results()
        while r["n"] == 0 and time.monotonic() < deadline:
            self.cdp.pump_for(0.1)
            r = results()
        self.wait_idle(state, timeout=self.args.timeout / 2)
        if r["n"] == 0:
            state.add(f"searching for {r['value']!r} showed no result (header: {r['header']!r})")
            return state, ""
        first = urllib.parse.unquote(urllib.parse.urlsplit(r["first"] or "").path).lstrip("/")
        if not os.path.isfile(os.path.join(self.book, *first.split("/"))):
            state.add(f"the first search result links to {r['first']!r}, which is not in the build")
        return state, f"{r['value']!r}: {r['header'].strip()} (first: {r['first']})"

    def check_config(self):
        toml = self.args.book_toml
        if not toml:
            return [f"no book.toml above {self.book}: cannot verify [output.html.playground] runnable = false"]
        cfg = load_toml(toml)
        runnable = cfg.get("output", {}).get("html", {}).get("playground", {}).get("runnable", True)
        if runnable is not False:
            return [f"{show(toml)}: [output.html.playground] runnable is {json.dumps(runnable)} "
                    "(mdBook's default is true): set runnable = false"]
        return []

    def report(self, name, problems):
        if problems:
            for p in problems:
                print(f"FAIL {name}: {p}")
        else:
            print(f"ok  {name}")
        self.problem_count += len(problems)

    def run(self):
        start = time.monotonic()
        if not os.path.isfile(os.path.join(self.book, "index.html")):
            raise SetupError(f"{self.book}/index.html does not exist: run `mdbook build` first")
        self.math = math_pages(self.args.src)
        self.shots = self.args.screenshots
        self.screenshots = []
        pages = sorted(os.path.relpath(os.path.join(d, f), self.book).replace(os.sep, "/")
                       for d, _, fs in os.walk(self.book) for f in fs if f.endswith(".html"))
        srv = serve(self.book)
        self.origin = f"http://127.0.0.1:{srv.server_address[1]}"
        browser, self.cdp = None, None
        try:
            browser = Browser(self.args.timeout)
            self.cdp = CDP(WebSocket(browser.ws_url, self.args.timeout), self.on_event)
            target = self.cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.cdp.call("Target.attachToTarget",
                                         {"targetId": target, "flatten": True})["sessionId"]
            for m in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
                self.cdp.call(m, session=self.session)
            self.cdp.call("Network.setCacheDisabled", {"cacheDisabled": True}, self.session)
            # print.html calls window.print() on load; a headless print dialog helps nobody.
            self.cdp.call("Page.addScriptToEvaluateOnNewDocument",
                          {"source": "window.print = function () {};"}, self.session)
            self.cdp.call("Emulation.setDeviceMetricsOverride",
                          {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1,
                           "mobile": False}, self.session)

            states, infos = {}, {}
            for rel in pages:
                states[rel], infos[rel] = self.check_page(rel)
            search_state, search_summary = self.check_search()
            self.current = None
            link_problems = self.check_links(infos)
            for rel in pages:
                self.report(rel, states[rel].messages() + link_problems.get(rel, []))
            missing = [p for p in SCREENSHOT_PAGES if p not in pages]
            self.report("screenshots", [f"{p} is not in the build" for p in missing])
            if self.screenshots:
                print("      " + ", ".join(self.screenshots))
            sp = search_state.messages()
            if sp:
                self.report("search", sp)
            else:
                print(f"ok  search {search_summary}")
            self.report("book.toml", self.check_config())
        finally:
            self.current = None
            if browser:
                browser.close(self.cdp)
            srv.shutdown()
        took = time.monotonic() - start
        c = self.counts
        print(f"check-rendered: {len(pages)} pages ({c['math']} with math), {c['images']} images, "
              f"{c['links']} links; {self.problem_count} problem(s) "
              f"in {took:.1f} s ({show(self.book)})")
        return 1 if self.problem_count else 0


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
    cfg = load_toml(args.book_toml) if args.book_toml else {}
    base = os.path.dirname(args.book_toml) if args.book_toml else ROOT
    if not args.book:
        args.book = os.path.join(base, cfg.get("build", {}).get("build-dir", "book"))
    if not args.src and args.book_toml:
        args.src = os.path.join(base, cfg.get("book", {}).get("src", "src"))
    if not args.screenshots:
        args.screenshots = os.path.join(os.path.dirname(os.path.abspath(args.book)), "book-screenshots")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so `finally` kills Chromium
    try:
        return Checker(args).run()
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (TimeoutError, ConnectionError, CDPError) as e:
        print(f"error: the browser check broke down: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
