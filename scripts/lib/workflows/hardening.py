"""The hardening rules of the workflows that actionlint, zizmor and the schema let through.

    python3 hardening.py WORKFLOW...

- the top-level `permissions` exists and grants nothing, or only `read`;
- every job states its own `permissions` (least privilege per job, not inherited);
- `id-token: write` only in a job that publishes (pushes with packages: write);
- every actions/checkout step has `persist-credentials: false`, so no later step (or an
  uploaded workspace) can use the token git keeps;
- a pull_request-triggered workflow has a `concurrency` group that cancels superseded
  runs of a pull request.
Prints each rule; exits 1 on any finding. test_hardening.py shows each one caught.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def triggers(document: dict) -> set[str]:
    # YAML 1.1 reads a bare `on` key as True
    on = document.get("on", document.get(True))
    if isinstance(on, str):
        return {on}
    return set(on or [])


def findings(workflow: Path) -> list[str]:
    document = yaml.safe_load(workflow.read_text()) or {}
    name = workflow.name
    found = []

    top = document.get("permissions")
    if top is None:
        found.append(f"{name}: no top-level permissions (the repository default applies, possibly write-all)")
    elif top != {} and (not isinstance(top, dict) or any(v not in ("read", "none") for v in top.values())):
        found.append(f"{name}: top-level permissions grant more than read: {top}")

    for job_id, job in (document.get("jobs") or {}).items():
        permissions = job.get("permissions")
        if permissions is None:
            found.append(f"{name}: job {job_id} does not state its permissions")
        elif isinstance(permissions, dict) and permissions.get("id-token") == "write" \
                and permissions.get("packages") != "write":
            found.append(f"{name}: job {job_id} has id-token: write but publishes nothing")
        elif isinstance(permissions, str) and permissions != "read-all":
            found.append(f"{name}: job {job_id} has permissions: {permissions}")
        for step in job.get("steps") or []:
            uses = str(step.get("uses", ""))
            if uses.startswith("actions/checkout@") \
                    and (step.get("with") or {}).get("persist-credentials") is not False:
                found.append(f"{name}: job {job_id}: actions/checkout without persist-credentials: false")

    if "pull_request" in triggers(document):
        concurrency = document.get("concurrency")
        cancel = concurrency.get("cancel-in-progress") if isinstance(concurrency, dict) else None
        # true, or an expression that is true for pull requests
        if not (cancel is True or "pull_request" in str(cancel)):
            found.append(f"{name}: no concurrency group cancelling superseded pull request runs")
    return found


def main() -> int:
    all_findings = []
    for workflow in map(Path, sys.argv[1:]):
        found = findings(workflow)
        all_findings += found
        if not found:
            print(f"  ok {workflow.name}: read-only top level, permissions per job, id-token only to "
                  "publish, checkout without persisted credentials, superseded runs cancelled")
    for finding in all_findings:
        print(f"  FINDING {finding}")
    return 1 if all_findings else 0


if __name__ == "__main__":
    sys.exit(main())
