"""The checks of the security area (security.sh) that need more than a command line; run
with the tools' venv python, where checkov and detect-secrets live.

  security_checks.py checkov NAME CHECKOV-ARGS...    every failed check, skip without a
                                                     reason, or empty scan is a finding
  security_checks.py checkov-render NAME RENDER.yaml the same over a kustomize render
  security_checks.py compose NAME CONFIG.yaml        the compose hardening policy
  security_checks.py secrets                         detect-secrets: tree and git history
"""

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile

from detect_secrets.transformers.config import ConfigFileTransformer, EagerConfigFileTransformer
from detect_secrets.transformers.exceptions import ParsingError
from detect_secrets.transformers.yaml import YAMLTransformer


def checkov(name, args):
    # checkov 3.3's bundled workflow schema predates the `attestations` permission and
    # rejects an expression in `cancel-in-progress`: a valid workflow would be silently
    # skipped (0 resources, green). check-jsonschema checks the schema in the workflows area.
    import checkov.github_actions.runner as gha_runner
    import checkov.github_actions.utils as gha_utils

    gha_utils.is_schema_valid = gha_runner.is_schema_valid = lambda config: True
    from checkov.main import Checkov

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        Checkov(argv=["--skip-download", "--output", "json", *args]).run()
    reports = json.loads(out.getvalue()) if out.getvalue().strip() else []
    reports = reports if isinstance(reports, list) else [reports]
    findings = 0
    total = dict.fromkeys(("passed", "failed", "skipped"), 0)
    for report in reports:
        for key in total:
            total[key] += report.get("summary", {}).get(key, 0)
        results = report.get("results", {})
        for check in results.get("failed_checks", []):
            findings += 1
            lines = check.get("file_line_range") or [0, 0]
            print(f"    FAILED {check['check_id']} {check['check_name']}: {check['resource']} "
                  f"({os.path.basename(check['file_path'])}:{lines[0]}-{lines[1]})")
        for check in results.get("skipped_checks", []):
            reason = (check.get("check_result", {}).get("suppress_comment") or "").strip()
            if not reason or reason == "No comment provided":
                findings += 1
                print(f"    SKIPPED WITHOUT A REASON {check['check_id']}: {check['resource']}")
            else:
                print(f"    skipped {check['check_id']} on {check['resource']}: {reason}")
    if sum(total.values()) == 0:
        findings += 1
        print(f"    checkov scanned nothing in {name}: a parse failure would look like this")
    print(f"  checkov {name}: {total['passed']} checks passed, "
          f"{total['failed']} failed, {total['skipped']} skipped")
    return 1 if findings else 0


def checkov_render(name, render):
    """checkov over a render read as Kubernetes reads YAML (checkov's YAML 1.1 parser takes
    kustomize's plain `=` for a tag and scans nothing)."""
    import yaml

    from k8s.render import KubernetesLoader

    with open(render) as f:
        docs = [d for d in yaml.load_all(f, Loader=KubernetesLoader) if d]
    with tempfile.TemporaryDirectory() as out:
        # the file's name is the one checkov prints beside each finding
        normalised = os.path.join(out, os.path.basename(render))
        with open(normalised, "w") as f:
            yaml.safe_dump_all(docs, f, sort_keys=False)
        return checkov(name, ["--framework", "kubernetes", "--file", normalised])


# an environment variable that, by its name, holds a secret's value rather than its path
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|_PASS$|_PASS_|SECRET|TOKEN|PRIVATE_KEY|API_KEY")

# rule -> (what it demands, test of a normalised service: True when it holds)
COMPOSE_RULES = {
    "privileged": ("not privileged", lambda s: not s.get("privileged")),
    "host-namespaces": ("no host network, PID or IPC namespace",
                        lambda s: "host" not in (s.get("network_mode"), s.get("pid"), s.get("ipc"))),
    "docker-socket": ("no Docker socket (it is root on the host)",
                      lambda s: not any(v.get("source", "").endswith("docker.sock") for v in s.get("volumes", []))),
    "host-root": ("no bind mount of the host's root",
                  lambda s: not any(v.get("type") == "bind" and v.get("source") == "/" for v in s.get("volumes", []))),
    "capabilities": ("cap_drop ALL, no cap_add",
                     lambda s: "ALL" in s.get("cap_drop", []) and not s.get("cap_add")),
    "no-new-privileges": ("security_opt no-new-privileges:true",
                          lambda s: "no-new-privileges:true" in s.get("security_opt", [])),
    "read-only": ("read_only root filesystem", lambda s: s.get("read_only") is True),
    "non-root": ("an explicit non-root user", lambda s: str(s.get("user", "")).split(":")[0] not in ("", "0", "root")),
    "loopback-ports": ("published ports on 127.0.0.1 only",
                       lambda s: all(p.get("host_ip") == "127.0.0.1" for p in s.get("ports", []))),
    "secret-files": ("secrets as files (`X_FILE`, a compose secret), never an environment value "
                     "that `docker inspect` shows",
                     lambda s: not [k for k in s.get("environment") or {} if SECRET_NAME.search(k)
                                    and not k.endswith("FILE")]),
    "limits": ("memory and pids limits",
               lambda s: all(s.get("deploy", {}).get("resources", {}).get("limits", {}).get(k)
                             for k in ("memory", "pids"))),
}


def compose(name, config_path):
    """The hardening policy (checkov has none for compose) on `docker compose config`'s YAML
    (its JSON drops the x- fields); a service waives a rule with `x-security-exceptions: {RULE: why}`."""
    import yaml

    with open(config_path) as f:
        services = yaml.safe_load(f)["services"]
    findings, waived = [], []
    for service_name, service in sorted(services.items()):
        exceptions = service.get("x-security-exceptions") or {}
        findings += [f"{service_name}: x-security-exceptions names no rule '{rule}' (rules: {', '.join(COMPOSE_RULES)})"
                     for rule in exceptions if rule not in COMPOSE_RULES]
        for rule, (demand, holds) in COMPOSE_RULES.items():
            reason = str(exceptions.get(rule, "")).strip()
            if holds(service):
                continue
            if reason:
                waived.append(f"{service_name}: {rule} waived: {reason}")
            else:
                findings.append(f"{service_name}: {rule}: {demand}")
    for line in waived + [f"FAILED {finding}" for finding in findings]:
        print(f"    {line}")
    print(f"  compose policy {name}: {len(services)} services x {len(COMPOSE_RULES)} rules, "
          f"{len(findings)} findings, {len(waived)} waived in the file")
    return 1 if findings else 0


# The pip lock (scripts/install-deps): names, versions and the public sha256 of each file, which
# detect-secrets takes for hex secrets, by the hundred (it joins a requirement's continued lines,
# so no line pattern singles the hashes out). Generated by make tools-lock; test_tools_lock.py
# holds it to requirements, hashes and comments, so nothing else hides there. In the tree, or
# under a blob id in history.
PIP_LOCK = r"^([0-9a-f]{40,64}/)?scripts/tools-lock\.txt$"


def detect_secrets(paths, cwd, extra=()):
    """(file, line, type, hashed secret) of each finding; -n: never verify a candidate with its
    vendor (offline, and a leak must not be replayed)."""
    if not paths:
        return []
    out = subprocess.run(["detect-secrets", "scan", "-n", f"--exclude-files={PIP_LOCK}", *extra, *paths],
                         cwd=cwd, check=True, capture_output=True, text=True, timeout=600).stdout
    return [(path, s["line_number"], s["type"], s["hashed_secret"])
            for path, found in json.loads(out)["results"].items() for s in found]


def git(*args, **kwargs):
    return subprocess.run(["git", *args], check=True, capture_output=True, timeout=300, **kwargs).stdout


# a `pragma: allowlist secret` comment and what follows it on the line
PRAGMA = re.compile(r"\s*(#|//|/\*|<!--|--|;)\s*pragma: allowlist[ -]secret.*$")


def unmarked(line):
    """A line (bytes) without its allowlist comment: what identifies a finding across a file's
    versions (detect-secrets' hash of a YAML value changes when a comment is added)."""
    return PRAGMA.sub("", line.decode("utf-8", "replace")).strip()


def line_text(path, number):
    """Line NUMBER of PATH, unmarked."""
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    return unmarked(lines[number - 1]) if 0 < number <= len(lines) else ""


def read_whole(path, content):
    """Whether detect-secrets may read this version other than line by line, so that it must
    be scanned whole: YAML (by its name, as a document), INI (with a section of its own, or,
    a file of no known type, under one that detect-secrets adds, where an unquoted value
    counts), or not UTF-8 (detect-secrets skips such a file, which must not take the other
    versions' lines with it)."""
    if YAMLTransformer().should_parse_file(path):
        return True
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return True
    for transformer in (ConfigFileTransformer(), EagerConfigFileTransformer()):
        if transformer.should_parse_file(path):
            file = io.StringIO(text)
            file.name = path
            try:
                if transformer.parse_file(file):
                    return True
            except ParsingError:
                pass
    return False


# the lines on either side that detect-secrets shows a plugin with a line (get_code_snippet)
CONTEXT = 5


def history_files(root):
    """Every file version ever committed, written under ROOT for one detect-secrets run; returns
    {written file: [(its line, a blob with it there, its number in that blob)]}.
    A version that detect-secrets may read other than line by line (read_whole) is written
    whole, under its blob id. Every other path's versions are written as one file, under a
    directory named after the path: of each version, in git's order (newest first), the
    lines that no version before it had, each with the CONTEXT lines around it in that
    version, each run of lines after an empty line. A line that no version changed is
    scanned once, not once a version, which keeps the scan's time from growing with the
    history; a new line is scanned beside its own neighbours. Lines split as detect-secrets
    splits them (on \\n, \\r\\n and \\r)."""
    paths = {}
    for line in git("rev-list", "--objects", "--all").decode().splitlines():
        sha, _, path = line.partition(" ")
        if path:
            paths.setdefault(sha, path)
    batch = git("cat-file", "--batch", input="".join(f"{s}\n" for s in paths).encode())
    written, seen, offset = {}, {}, 0
    while offset < len(batch):
        header_end = batch.index(b"\n", offset)
        sha, kind, size = batch[offset:header_end].decode().split()
        offset = header_end + 1 + int(size) + 1
        if kind != "blob":
            continue
        content, path = batch[header_end + 1:offset - 1], paths[sha]
        lines = content.splitlines()
        if read_whole(path, content):
            written[os.path.join(sha, path)] = [(line, sha, i + 1) for i, line in enumerate(lines)]
            continue
        known = seen.setdefault(path, set())
        new = [i for i, line in enumerate(lines) if line not in known]
        known.update(lines)
        keep = sorted({j for i in new for j in range(max(0, i - CONTEXT), min(len(lines), i + CONTEXT + 1))})
        hunks = written.setdefault(os.path.join(hashlib.sha1(path.encode()).hexdigest(), path), [])
        for n, i in enumerate(keep):
            if n == 0 or i != keep[n - 1] + 1:
                # an empty line between runs of lines: a `pragma: allowlist nextline secret`
                # ending one run must not reach the first line of the next
                hunks.append((b"", sha, 0))
            hunks.append((lines[i], sha, i + 1))
    for name, lines in written.items():
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        with open(os.path.join(root, name), "wb") as f:
            f.write(b"\n".join(line for line, _, _ in lines))
    return written


def secrets():
    tree = [p for p in git("ls-files", "-z", "--cached", "--others", "--exclude-standard").decode().split("\0")
            if p and os.path.isfile(p)]
    current = detect_secrets(tree, ".")
    # lines marked `pragma: allowlist secret` were judged no secret; so is the same line in
    # an older version of a file
    allowed = {line_text(path, line) for path, line, _, _ in detect_secrets(tree, ".", ["--only-allowlisted"])}

    with tempfile.TemporaryDirectory() as root:
        written = history_files(root)
        history = []
        for name, line, kind, hashed in detect_secrets(list(written), root):
            text, blob, number = written[name][line - 1]
            if unmarked(text) not in allowed:
                history.append((name.partition("/")[2], blob, number, kind, hashed))

    seen_now = {f[3] for f in current}
    in_history_only = [f for f in history if f[4] not in seen_now]
    for path, line, kind, _ in current:
        print(f"    FAILED {path}:{line}: {kind} (a secret? remove it and rotate it; a test value? "
              f"end that line with a comment `pragma: allowlist secret (why)`)")
    for path, blob, number, kind, _ in in_history_only:
        print(f"    FAILED in git history: {path}:{number} (blob {blob[:12]}): {kind}: rotate it; it stays in history")
    commits = len(set(git("rev-list", "--all").split()))
    print(f"  secret scan: {len(tree)} files in the working tree; git history ({commits} commits) as "
          f"{len(written)} files; {len(current)} findings in the tree, {len(in_history_only)} only in history, "
          f"{len(allowed)} lines marked as no secret")
    return 1 if current or in_history_only else 0


if __name__ == "__main__":
    COMMANDS = {"checkov": lambda a: checkov(a[0], a[1:]), "checkov-render": lambda a: checkov_render(*a),
                "compose": lambda a: compose(*a), "secrets": lambda a: secrets()}
    if sys.argv[1] not in COMMANDS:
        sys.exit(f"unknown command {sys.argv[1]}")
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
