"""ci_parity.py catches each way a workflow can drift from .ci/run, and accepts the rest.

    python3 -m unittest discover -s scripts/lib/workflows -p 'test_*.py'

Each test builds a small repository (a .ci/run, some executable scripts, one workflow)
in a temporary directory and checks what ci_parity.check reports.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import textwrap
import unittest
from pathlib import Path

from ci_parity import check

CI_RUN = """\
#!/usr/bin/env bash
set -euo pipefail
. scripts/lib/common.sh
need cargo jq
run() { "$@"; }
run scripts/install-deps
run cargo clippy --all-targets --locked -- -D warnings
timeout 1200 cargo test --locked 2>&1
"$REPO_ROOT"/scripts/validate
scripts/e2e-compose --force  # a comment naming scripts/not-run must not count
"""


class CiParity(unittest.TestCase):
    def setUp(self) -> None:
        self.repo = Path(tempfile.mkdtemp())
        self.addCleanup(lambda: __import__("shutil").rmtree(self.repo))
        for script in ("scripts/install-deps", "scripts/validate", "scripts/e2e-compose",
                       "scripts/not-run", ".ci/run"):
            path = self.repo / script
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(CI_RUN if script == ".ci/run" else "#!/usr/bin/env bash\n")
            path.chmod(0o755)
        (self.repo / "Dockerfile").write_text("FROM scratch\n")

    def findings(self, steps: str) -> list[str]:
        workflow = self.repo / ".github/workflows/w.yml"
        workflow.parent.mkdir(parents=True, exist_ok=True)
        workflow.write_text("on: push\njobs:\n  j:\n    runs-on: ubuntu-24.04\n    steps:\n"
                            + textwrap.indent(textwrap.dedent(steps), "      "))
        with contextlib.redirect_stdout(io.StringIO()):
            return check([workflow], self.repo / ".ci/run", self.repo)

    def test_scripts_and_cargo_commands_that_ci_runs_pass(self) -> None:
        self.assertEqual(self.findings("""\
            - run: sudo scripts/install-deps monitoring
            - run: ./scripts/validate
            - run: "$GITHUB_WORKSPACE/scripts/e2e-compose"
            - run: ${{ github.workspace }}/scripts/validate docker
            - run: |
                cargo clippy --all-targets --locked \\
                  -- -D warnings
                cargo test --locked 2>&1 | tee test.log
            - uses: some/action@0123456789012345678901234567890123456789
              with:
                args: scripts/not-run
            - run: docker build -f Dockerfile . && kubectl apply -k deploy/k8s
            """), [])

    def test_a_script_that_ci_does_not_run_is_reported(self) -> None:
        findings = self.findings("- run: scripts/validate && scripts/not-run\n")
        self.assertEqual(len(findings), 1)
        self.assertIn("scripts/not-run, which .ci/run does not run", findings[0])

    def test_a_script_behind_a_wrapper_or_in_a_pipeline_is_still_a_call(self) -> None:
        for run in ("timeout 60 ./scripts/not-run", "echo x | scripts/not-run",
                    "FOO=1 sudo -E scripts/not-run", "bash scripts/not-run"):
            with self.subTest(run=run):
                self.assertEqual(len(self.findings(f"- run: {run}\n")), 1)

    def test_a_missing_script_is_reported(self) -> None:
        findings = self.findings("- run: scripts/fire-dril --quick\n")
        self.assertEqual(len(findings), 1)
        self.assertIn("scripts/fire-dril does not exist", findings[0])

    def test_a_cargo_command_must_match_word_for_word(self) -> None:
        for run in ("cargo clippy --all-targets -- -D warnings", "cargo test", "cargo fmt --check"):
            with self.subTest(run=run):
                findings = self.findings(f"- run: {run}\n")
                self.assertEqual(len(findings), 1)
                self.assertIn(f"runs `{run}`, which .ci/run does not run", findings[0])

    def test_comments_and_mentions_are_not_calls(self) -> None:
        self.assertEqual(self.findings("""\
            - run: |
                # scripts/not-run is for later
                need cargo
                echo done
            """), [])

    def test_a_missing_ci_run_fails(self) -> None:
        (self.repo / ".ci/run").unlink()
        self.assertEqual(len(self.findings("- run: scripts/validate\n")), 1)


if __name__ == "__main__":
    unittest.main()
