"""Static checks of the book's sources (run by scripts/test.sh):
  - every ```rust block is either an {{#include …}} of compiled code (marked
    `ignore`, since the code is compiled by cargo) or a snippet that
    `mdbook test` runs (not `ignore`); nothing is hand-copied and untested;
  - every {{#include file:anchor}} names an ANCHOR that exists, and every
    ANCHOR in the crates has its ANCHOR_END;
  - every included file and every image the chapters show exists;
  - every chapter of the reading path (not the introduction or appendices)
    ends with Run it → Summary → Exercises, with at least 3 exercises, each
    with its hint behind <details>.
Prints one line per problem and exits 1 if there is any."""
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BOOK = os.path.join(ROOT, "book")
problems = []

# ANCHOR pairs in the crates.
anchors = {}
for dirpath, _, files in os.walk(os.path.join(ROOT, "crates")):
    if "/target" in dirpath or "/fuzz/target" in dirpath:
        continue
    for f in files:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(dirpath, f)
        text = open(path, encoding="utf-8").read()
        opened = re.findall(r"ANCHOR: (\w+)", text)
        closed = re.findall(r"ANCHOR_END: (\w+)", text)
        for name in set(opened) | set(closed):
            if opened.count(name) != closed.count(name):
                problems.append(f"{os.path.relpath(path, ROOT)}: ANCHOR {name} opened {opened.count(name)}× but closed {closed.count(name)}×")
        anchors[os.path.realpath(path)] = set(opened)

fence = re.compile(r"^\s*```(\S*)\s*$")
for f in sorted(os.listdir(BOOK)):
    if not f.endswith(".md"):
        continue
    path = os.path.join(BOOK, f)
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        m = fence.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        info, start = m.group(1), i
        j = i + 1
        while j < len(lines) and not lines[j].lstrip().startswith("```"):
            j += 1
        body = lines[i + 1:j]
        i = j + 1
        where = f"book/{f}:{start + 1}"
        if info.split(",")[0] != "rust":
            continue
        attrs = info.split(",")[1:]
        includes = [l for l in body if "{{#include" in l or "{{#rustdoc_include" in l]
        if includes:
            if len(body) != len(includes):
                problems.append(f"{where}: a Rust block mixes an include with hand-written lines")
        elif "ignore" in attrs:
            problems.append(f"{where}: an `ignore`d Rust block that is not included from compiled code (hand-copied code drifts)")
    for m in re.finditer(r"\{\{#(?:rustdoc_)?include ([^}:]+)(?::(\w+))?\}\}", "\n".join(lines)):
        target = os.path.realpath(os.path.join(BOOK, m.group(1)))
        if not os.path.exists(target):
            problems.append(f"book/{f}: included file {m.group(1)} does not exist")
        elif m.group(2) and m.group(2) not in anchors.get(target, set()):
            problems.append(f"book/{f}: anchor {m.group(2)} not found in {m.group(1)}")
    for m in re.finditer(r"!\[[^\]]*\]\(([^)]+)\)", "\n".join(lines)):
        if not os.path.exists(os.path.join(BOOK, m.group(1))):
            problems.append(f"book/{f}: image {m.group(1)} does not exist")

# Chapter anatomy, for the chapters of SUMMARY.md's reading path.
summary = open(os.path.join(BOOK, "SUMMARY.md"), encoding="utf-8").read()
for title, f in re.findall(r"^- \[([^\]]+)\]\(([^)]+)\)", summary, re.M):
    if title.startswith("Appendix"):
        continue
    text = open(os.path.join(BOOK, f), encoding="utf-8").read()
    heads = [(m.start(), m.group(2).strip()) for m in re.finditer(r"^(#{2,3}) (.+)$", text, re.M)]
    pos = {}
    for at, h in heads:
        for want in ("Run it", "Summary", "Exercises"):
            if h == want or h.startswith(want + ":"):
                pos.setdefault(want, at)
    missing = [w for w in ("Run it", "Summary", "Exercises") if w not in pos]
    if missing:
        problems.append(f"book/{f}: no {', '.join(repr(m) for m in missing)} section")
        continue
    if not pos["Run it"] < pos["Summary"] < pos["Exercises"]:
        problems.append(f"book/{f}: sections out of order: want Run it → Summary → Exercises")
    exercises = text[pos["Exercises"]:]
    n_ex = len(re.findall(r"^\d+\. ", exercises, re.M))
    n_hint = exercises.count("<details>")
    if n_ex < 3 or n_hint < n_ex:
        problems.append(f"book/{f}: {n_ex} exercises and {n_hint} <details> hints: want ≥ 3 exercises, each with a hint")

for p in problems:
    print(f"error: {p}")
if problems:
    sys.exit(1)
print(f"ok: book sources: every Rust block is included from compiled code or tested, anchors pair up, files and images exist, every chapter has Run it → Summary → Exercises (≥ 3, with hints)")
