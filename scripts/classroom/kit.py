"""The classroom kit: make assignments from the book's own code, and grade them
with the book's own tests.

    kit.py make [--only a,b] OUT_DIR      copy the workspace, replace solution regions by todo!()
    kit.py grade DIR [--json FILE]        run each task's tests in DIR, print a table and a total
    kit.py restore DIR                    paste the solutions back into an assignment (for tests)

Solution regions are marked in the crates as mdBook anchors,
    // ANCHOR: SOLUTION_<task>   …   // ANCHOR_END: SOLUTION_<task>
so mdBook strips the markers from every listing. A task may have several regions.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TASKS = json.load(open(os.path.join(ROOT, "scripts", "classroom", "tasks.json")))
BEGIN = re.compile(r"^(\s*)// ANCHOR: SOLUTION_(\w+)\s*$")
END = re.compile(r"^\s*// ANCHOR_END: SOLUTION_(\w+)\s*$")
TODO = re.compile(r'^(\s*)todo!\("TASK (\w+) ')


def task_names():
    return [t["name"] for t in TASKS["tasks"]]


def regions(path):
    """[(task, indent, [lines of the region, markers excluded])] of one source file."""
    out, current = [], None
    for line in open(path, encoding="utf-8").read().split("\n"):
        if current is None and (m := BEGIN.match(line)):
            current = (m.group(2), m.group(1), [])
        elif current is not None and (m := END.match(line)):
            if m.group(1) != current[0]:
                sys.exit(f"error: {path}: SOLUTION_{current[0]} closed by SOLUTION_{m.group(1)}")
            out.append(current)
            current = None
        elif current is not None:
            current[2].append(line)
    if current is not None:
        sys.exit(f"error: {path}: SOLUTION_{current[0]} has no ANCHOR_END")
    return out


def source_files(root):
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    return [f for f in files if f.endswith(".rs") and f.startswith("crates/")]


def make(only, out):
    chosen = set(only or task_names())
    unknown = chosen - set(task_names())
    if unknown:
        sys.exit(f"error: unknown task(s) {', '.join(sorted(unknown))}: choose from {', '.join(task_names())}")
    if os.path.exists(out) and os.listdir(out):
        sys.exit(f"error: {out} exists and is not empty: choose a new folder")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        dst = os.path.join(out, f)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), dst)
    hints = {t["name"]: t["hint"] for t in TASKS["tasks"]}
    found = set()
    for f in source_files(ROOT):
        path = os.path.join(out, f)
        lines, result, skipping = open(path, encoding="utf-8").read().split("\n"), [], None
        for line in lines:
            if skipping is None and (m := BEGIN.match(line)):
                found.add(m.group(2))
                if m.group(2) in chosen:
                    skipping = m.group(2)
                    msg = hints[skipping].replace("\\", "\\\\").replace('"', '\\"')
                    result.append(f'{m.group(1)}todo!("TASK {skipping} (see ASSIGNMENT.md): {msg}")')
                else:
                    result.append(line)
            elif skipping is not None:
                if END.match(line):
                    skipping = None
            else:
                result.append(line)
        open(path, "w", encoding="utf-8").write("\n".join(result))
    missing = chosen - found
    if missing:
        sys.exit(f"error: no solution region for {', '.join(sorted(missing))} in the crates")
    write_readme(out, [t for t in TASKS["tasks"] if t["name"] in chosen])
    print(f"wrote the assignment to {out} ({len(chosen)} task(s): {', '.join(t for t in task_names() if t in chosen)})")


def write_readme(out, tasks):
    pts = TASKS["points_per_task"]
    lines = [
        "# Assignment: diffusion models, executed",
        "",
        "This is a copy of the book's workspace with some function bodies replaced by",
        '`todo!("TASK …")`. Implement them; the tests that grade you are the same tests',
        "that check the book's own code (closed-form statistics, f64 references,",
        "invariants), so an answer is right when it behaves right, however you write it.",
        "",
        "Setup (once): `scripts/setup.sh`. Build: `cargo build`. Grade yourself:",
        "`scripts/grade.sh .` prints a table per task and writes `grade.json`.",
        "",
        "| task | what | where | chapter | points | time |",
        "|------|------|-------|---------|--------|------|",
    ]
    for t in tasks:
        lines.append(f"| `{t['name']}` | {t['title']} | `{t['file']}` | {t['chapter']} | {pts} | ~{t['minutes']} min |")
    lines.append("")
    for t in tasks:
        lines += [f"## `{t['name']}`: {t['title']}", "", t["goal"], "", f"Hint: {t['hint']}", "",
                  "Graded by: " + ", ".join(f"`{pkg}` › `{name}`" for pkg, name in t["tests"]), ""]
    lines += ["Tasks depend on each other only through `betas`: every schedule is built from it,",
              "so finish it first."]
    open(os.path.join(out, "ASSIGNMENT.md"), "w", encoding="utf-8").write("\n".join(lines) + "\n")


def restore(dir_):
    """Pastes the repository's solution regions back over the todo!() lines."""
    for f in source_files(ROOT):
        sols = {}
        for task, _, body in regions(os.path.join(ROOT, f)):
            sols.setdefault(task, []).append(body)
        path = os.path.join(dir_, f)
        if not os.path.exists(path):
            continue
        out = []
        for line in open(path, encoding="utf-8").read().split("\n"):
            m = TODO.match(line)
            if m and sols.get(m.group(2)):
                out.extend(sols[m.group(2)].pop(0))
            else:
                out.append(line)
        open(path, "w", encoding="utf-8").write("\n".join(out))
    print(f"restored the solutions in {dir_}")


def grade(dir_, json_path):
    pts = TASKS["points_per_task"]
    results = {}  # (package, test) -> bool
    build_failed = []
    for pkg in sorted({p for t in TASKS["tasks"] for p, _ in t["tests"]}):
        run = subprocess.run(["cargo", "test", "-p", pkg, "--lib", "--tests", "--no-fail-fast", "--", "--test-threads=2"],
                             cwd=dir_, capture_output=True, text=True)
        text = run.stdout + run.stderr
        if "could not compile" in text:
            build_failed.append(pkg)
        for m in re.finditer(r"^test (\S+) \.\.\. (ok|FAILED)", text, re.M):
            results[(pkg, m.group(1))] = m.group(2) == "ok"
    rows, total = [], 0
    for t in TASKS["tasks"]:
        passed = sum(results.get((p, n), False) for p, n in t["tests"])
        score = round(pts * passed / len(t["tests"]))
        total += score
        rows.append({"task": t["name"], "passed": passed, "tests": len(t["tests"]), "points": score, "max": pts})
    width = max(len(r["task"]) for r in rows)
    print(f"{'task':<{width}}  tests passed  points")
    for r in rows:
        print(f"{r['task']:<{width}}  {r['passed']:>5} / {r['tests']:<5} {r['points']:>3} / {r['max']}")
    maximum = pts * len(rows)
    print(f"{'total':<{width}}  {'':>13} {total:>3} / {maximum}")
    if build_failed:
        print(f"note: these packages did not compile, so their tests count as failed: {', '.join(build_failed)}")
    report = {"tasks": rows, "total": total, "max": maximum, "build_failed": build_failed}
    json.dump(report, open(json_path or os.path.join(dir_, "grade.json"), "w"), indent=2)
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--only", default="")
    m.add_argument("out")
    g = sub.add_parser("grade")
    g.add_argument("dir")
    g.add_argument("--json")
    r = sub.add_parser("restore")
    r.add_argument("dir")
    a = ap.parse_args()
    if a.cmd == "make":
        make([x for x in a.only.split(",") if x], os.path.abspath(a.out))
    elif a.cmd == "grade":
        grade(os.path.abspath(a.dir), a.json)
    else:
        restore(os.path.abspath(a.dir))


if __name__ == "__main__":
    main()
