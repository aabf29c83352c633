"""The deploy workflow (.github/workflows/deploy.yml) cannot run here, so this
checks what can be checked: the YAML parses, it builds with the mdBook and
mdbook-katex versions that scripts/setup.sh pins, with the same `mdbook build`
that scripts/test.sh runs, and it publishes the folder that book.toml builds
into, with a site-url set for the Pages address.

    python scripts/check-deploy.py      # exit 1 with one line per problem
"""
import os
import re
import sys
import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
problems = []
wf_path = os.path.join(ROOT, ".github/workflows/deploy.yml")
try:
    wf = yaml.safe_load(open(wf_path, encoding="utf-8"))
except yaml.YAMLError as e:
    sys.exit(f"error: {wf_path}: not valid YAML ({e})")
steps = [s for job in wf["jobs"].values() for s in job.get("steps", [])]
runs = "\n".join(s.get("run", "") for s in steps)
setup = open(os.path.join(ROOT, "scripts/setup.sh"), encoding="utf-8").read()
test = open(os.path.join(ROOT, "scripts/test.sh"), encoding="utf-8").read()
for name, var in (("mdbook", "MDBOOK_VERSION"), ("mdbook-katex", "MDBOOK_KATEX_VERSION")):
    pinned = re.search(rf'^{var}="([^"]+)"', setup, re.M).group(1)
    if f"cargo install --locked {name} --version {pinned}" not in runs:
        problems.append(f"deploy.yml does not install {name} {pinned}, the version scripts/setup.sh pins")
if not re.search(r"^mdbook build$", runs, re.M):
    problems.append("deploy.yml does not run `mdbook build`")
if not re.search(r"^mdbook build$", test, re.M):
    problems.append("scripts/test.sh does not run `mdbook build`: the deploy would build what CI never checked")
book = tomllib.load(open(os.path.join(ROOT, "book.toml"), "rb"))
artifact = [s["with"]["path"] for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact")]
if artifact != [book["build"]["build-dir"]]:
    problems.append(f"deploy.yml uploads {artifact}, but book.toml builds into {book['build']['build-dir']}")
if not any(s.get("uses", "").startswith("actions/deploy-pages") for s in steps):
    problems.append("deploy.yml has no actions/deploy-pages step")
if not book.get("output", {}).get("html", {}).get("site-url"):
    problems.append("book.toml: [output.html] site-url is not set (the Pages address)")
for p in problems:
    print(f"error: {p}")
if problems:
    sys.exit(1)
print("ok: deploy workflow: valid YAML, pinned mdBook and mdbook-katex, `mdbook build` as in test.sh, uploads the build dir, site-url set")
