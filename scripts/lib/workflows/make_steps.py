"""The GitHub workflows run every step of `make ci`, and only targets the Makefile has.

    python3 make_steps.py --steps "STEP..." --targets "TARGET..." WORKFLOW...

A step counts only when it certainly runs on a push and on a pull request: a workflow
triggered by both, a job and a step with no `if:` and no `continue-on-error`, and a `run:`
that is exactly `make TARGET`. Exits 1 on any finding, or when the list of steps is empty.
"""

import argparse
import re
import sys
from pathlib import Path

import yaml

MAKE = re.compile(r"make ([a-z0-9][a-z0-9-]*)")


def make_runs(document):
    """(targets certainly run, every target a step names) of one workflow."""
    on = document.get("on", document.get(True))   # YAML 1.1 reads a bare `on` as True
    always = {"push", "pull_request"} <= ({on} if isinstance(on, str) else set(on or []))
    certain, named = set(), set()
    for job in (document.get("jobs") or {}).values():
        for step in job.get("steps") or []:
            run = step.get("run")
            if not isinstance(run, str):
                continue
            named |= {m.group(1) for m in re.finditer(r"(?<![\w-])" + MAKE.pattern, run)}
            exact = MAKE.fullmatch(run.strip())
            if exact and always and not {"if", "continue-on-error"} & (job.keys() | step.keys()):
                certain.add(exact.group(1))
    return certain, named


def check(steps, targets, documents):
    if not steps:
        return ["the Makefile's CI_STEPS is empty: nothing to check"]
    certain, named = set(), set()
    for document in documents:
        c, n = make_runs(document)
        certain |= c
        named |= n
    findings = [f"make {t}: not a target of the Makefile" for t in sorted(named - targets)]
    return findings + [f"make {s}: a step of make ci that no job certainly runs" for s in steps if s not in certain]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", required=True)
    parser.add_argument("--targets", required=True)
    parser.add_argument("workflows", nargs="+")
    args = parser.parse_args()
    findings = check(args.steps.split(), set(args.targets.split()),
                     [yaml.safe_load(Path(w).read_text()) for w in args.workflows])
    for finding in findings:
        print(f"  {finding}", file=sys.stderr)
    sys.exit(1 if findings else 0)
