"""The GitHub workflows run what .ci/run runs: nothing of the repository's own that CI skips.

    python3 ci_parity.py [--repo DIR] [--ci-run .ci/run] WORKFLOW...

Every `run:` step of every job is read as shell. A token naming a repository script
(an executable file of the repository, or any path under scripts/, .ci/ or tests/, given
plainly, as ./path or after $GITHUB_WORKSPACE/) is a call to that script: .ci/run must
call the same script (arguments may differ: `scripts/install-deps lint` installs a part
of what `scripts/install-deps` does). A `cargo` command must be in .ci/run word for
word, flags included: `cargo clippy` without `-D warnings` is not the same check.
.ci/run is read the same way, for its scripts and cargo commands. Prints what each step
calls; exits 1 if a step calls something .ci/run does not run, or a script that does not
exist. test_ci_parity.py shows each case.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

# Where repository scripts live: a path under these is a script call even before the
# file exists (so a misspelt or missing script is reported, not silently ignored).
SCRIPT_DIRS = ("scripts/", ".ci/", "tests/")
# Prefixes that still name a file of the checkout: ./x, $GITHUB_WORKSPACE/x, ${VAR}/x,
# and a ${{ github.workspace }}/x expression (replaced by GHEXPR before tokenising).
PREFIX = re.compile(r"^(?:\./|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?/|GHEXPR/)")
GH_EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.S)
# Tokens that end one simple command (shlex with punctuation_chars yields these).
OPERATORS = {";", ";;", "&", "&&", "|", "||", "|&", "(", ")", "{", "}", "!"}
# A redirection operator (`>`, `2>&1` arrives as "2", ">&", "1"): it, its target and the
# file descriptor number before it are not part of the command.
REDIRECT = re.compile(r"^[<>&|]*[<>][<>&|]*$")
# `cargo X` is a cargo command when X is one of these (or +toolchain): `need cargo jq`
# mentions cargo without running it.
CARGO_SUBCOMMANDS = {
    "audit", "bench", "build", "check", "clippy", "deny", "doc", "fetch", "fmt", "fuzz",
    "install", "llvm-cov", "metadata", "nextest", "run", "test", "tree", "update",
}


@dataclass(frozen=True)
class Calls:
    scripts: frozenset[str]
    cargo: frozenset[tuple[str, ...]]


def logical_lines(text: str) -> list[str]:
    """Shell lines with backslash continuations joined and ${{ }} expressions replaced."""
    text = GH_EXPRESSION.sub("GHEXPR", text)
    return text.replace("\\\n", " ").splitlines()


def tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:
        # an unbalanced quote (a string spanning lines, a heredoc's prose): words it is
        return [word for word in line.split("#", 1)[0].split()]


def simple_commands(line: str) -> list[list[str]]:
    commands, current = [], []
    words = iter(tokens(line))
    for token in words:
        if REDIRECT.match(token):
            if current and current[-1].isdigit():
                current.pop()
            next(words, None)
        elif token in OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [command for command in commands if command]


def repository_path(token: str, repo: Path) -> str | None:
    """The repository script a token names, or None."""
    path = PREFIX.sub("", token)
    if not path or path.startswith(("/", "-")) or "=" in path or "$" in path:
        return None
    if path.startswith(SCRIPT_DIRS) and re.fullmatch(r"[\w.+/-]+", path):
        return path
    candidate = repo / path
    if "/" in path and candidate.is_file() and os.access(candidate, os.X_OK):
        return path
    return None


def calls(text: str, repo: Path) -> Calls:
    scripts: set[str] = set()
    cargo: set[tuple[str, ...]] = set()
    for line in logical_lines(text):
        for command in simple_commands(line):
            for i, token in enumerate(command):
                script = repository_path(token, repo)
                if script:
                    scripts.add(script)
                following = command[i + 1] if i + 1 < len(command) else ""
                if token == "cargo" and (following in CARGO_SUBCOMMANDS or following.startswith("+")):  # pragma: allowlist secret (a shell word compared with "cargo", no token)
                    cargo.add(tuple(command[i:]))
    return Calls(frozenset(scripts), frozenset(cargo))


def run_steps(workflow: Path) -> list[tuple[str, str]]:
    """(job/step name, run text) of every run step of the workflow."""
    document = yaml.safe_load(workflow.read_text()) or {}
    steps = []
    for job_id, job in (document.get("jobs") or {}).items():
        for step in job.get("steps") or []:
            if isinstance(step, dict) and "run" in step:
                name = step.get("name") or str(step["run"]).strip().splitlines()[0]
                steps.append((f"{job_id} / {name}", str(step["run"])))
    return steps


def check(workflows: list[Path], ci_run: Path, repo: Path) -> list[str]:
    if not ci_run.is_file():
        return [f"{ci_run} does not exist: nothing to compare the workflows with"]
    ci = calls(ci_run.read_text(), repo)
    print(f"{ci_run.relative_to(repo) if ci_run.is_relative_to(repo) else ci_run} runs "
          f"{len(ci.scripts)} scripts and {len(ci.cargo)} cargo commands")
    findings = []
    counted = {"steps": 0, "scripts": 0, "cargo": 0}
    for workflow in workflows:
        for where, text in run_steps(workflow):
            counted["steps"] += 1
            step = calls(text, repo)
            for script in sorted(step.scripts):
                counted["scripts"] += 1
                if not (repo / script).is_file():
                    findings.append(f"{workflow.name}: {where}: {script} does not exist")
                elif script not in ci.scripts:
                    findings.append(f"{workflow.name}: {where}: calls {script}, which .ci/run does not run")
                else:
                    print(f"  ok {workflow.name}: {where}: {script}")
            for command in sorted(step.cargo):
                counted["cargo"] += 1
                shown = shlex.join(command)
                if command not in ci.cargo:
                    findings.append(f"{workflow.name}: {where}: runs `{shown}`, which .ci/run does not run "
                                    f"(it runs: {'; '.join(sorted(shlex.join(c) for c in ci.cargo)) or 'no cargo'})")
                else:
                    print(f"  ok {workflow.name}: {where}: {shown}")
    print(f"{counted['steps']} run steps: {counted['scripts']} script calls, {counted['cargo']} cargo commands")
    return findings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path.cwd())
    parser.add_argument("--ci-run", type=Path)
    parser.add_argument("workflows", type=Path, nargs="+")
    args = parser.parse_args()
    repo = args.repo.resolve()
    findings = check(args.workflows, (args.ci_run or repo / ".ci/run").resolve(), repo)
    for finding in findings:
        print(f"  FINDING {finding}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
