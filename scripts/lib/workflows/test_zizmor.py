"""What `make validate` leaves to zizmor (offline, pedantic, any finding fails): the real
workflow passes, and a copy broken in each of these ways fails, so an upgrade that stops
catching one fails here. zizmor accepts explicit opt-outs (`persist-credentials: true`,
`cancel-in-progress: false`, a permission with a comment saying why): no test claims those.
"""

import re
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

WORKFLOW = Path(__file__).resolve().parents[3] / ".github/workflows/main-pipeline.yml"


def first(pattern, replacement):
    return lambda text: re.sub(pattern, replacement, text, count=1, flags=re.M)


# (what is broken, how to break the workflow's text)
CASES = [
    ("checkout keeps the token in .git/config", first(r"^\s+with:\n\s+persist-credentials: false\n", "\n")),
    ("superseded runs are not cancelled", first(r"^concurrency:\n(?:  .*\n)+", "")),
    ("a job may mint OIDC tokens, unexplained",
     first(r"^(    permissions:\n      contents: read\n)", r"\1      id-token: write\n")),
    ("an action pinned by tag", first(r"uses: actions/checkout@[0-9a-f]{40} # (\S+)", r"uses: actions/checkout@\1")),
    ("an untrusted title in a shell script",
     first(r"^(\s+)- run: make fmt-check$", r'\1- run: echo "${{ github.event.pull_request.title }}"')),
]


def zizmor(text):
    """zizmor's exit code on a repository holding only this workflow."""
    with tempfile.TemporaryDirectory() as repo:
        (Path(repo) / ".github/workflows").mkdir(parents=True)
        (Path(repo) / ".github/workflows/main-pipeline.yml").write_text(text)
        return subprocess.run([shutil.which("zizmor") or "zizmor", "--offline", "--no-progress", "--quiet",
                               "--persona", "pedantic", f"{repo}/.github"],
                              capture_output=True, text=True, timeout=120, check=False).returncode


class ZizmorTest(unittest.TestCase):
    def test_the_workflow_passes(self):
        self.assertIsNotNone(shutil.which("zizmor"), "zizmor is missing: scripts/install-deps lint")
        self.assertEqual(zizmor(WORKFLOW.read_text()), 0)

    def test_each_weakening_is_caught(self):
        original = WORKFLOW.read_text()
        for what, breaks in CASES:
            with self.subTest(what):
                broken = breaks(original)
                self.assertNotEqual(broken, original, "the case no longer changes the workflow")
                # 10 and up: findings; below, zizmor failed to read the file, which proves nothing
                self.assertGreaterEqual(zizmor(broken), 10, f"zizmor let through: {what}")


if __name__ == "__main__":
    unittest.main()
