"""hardening.py catches each rule broken, one at a time, in an otherwise sound workflow.

    pytest scripts/lib/workflows        (make validate AREAS=python runs them all)
"""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

from hardening import findings

SOUND = """\
on: [push, pull_request]
permissions: {}
concurrency:
  group: ${{ github.workflow }}-${{ github.ref }}
  cancel-in-progress: ${{ github.event_name == 'pull_request' }}
jobs:
  test:
    runs-on: ubuntu-24.04
    permissions:
      contents: read
    steps:
      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1
        with:
          persist-credentials: false
  publish:
    runs-on: ubuntu-24.04
    permissions:
      contents: read
      packages: write
      id-token: write
    steps:
      - run: echo publish
"""


class Hardening(unittest.TestCase):
    def findings(self, text: str) -> list[str]:
        with tempfile.TemporaryDirectory() as directory:
            workflow = Path(directory) / "w.yml"
            workflow.write_text(text)
            return findings(workflow)

    def test_the_sound_workflow_passes(self) -> None:
        self.assertEqual(self.findings(SOUND), [])

    def test_each_broken_rule_is_found(self) -> None:
        broken = {
            "no top-level permissions": SOUND.replace("permissions: {}\n", ""),
            "top-level permissions grant more than read": SOUND.replace("permissions: {}", "permissions: write-all"),
            "top-level permissions grant more than read: {'contents': 'write'}":
                SOUND.replace("permissions: {}", "permissions:\n  contents: write"),
            "job test does not state its permissions":
                SOUND.replace("    permissions:\n      contents: read\n    steps:\n      - uses",
                              "    steps:\n      - uses"),
            "job publish has id-token: write but publishes nothing": SOUND.replace("      packages: write\n", ""),
            "actions/checkout without persist-credentials: false":
                SOUND.replace("persist-credentials: false", "persist-credentials: true"),
            "no concurrency group cancelling superseded pull request runs":
                SOUND.replace("${{ github.event_name == 'pull_request' }}", "false"),
        }
        for expected, text in broken.items():
            with self.subTest(expected=expected):
                self.assertNotEqual(text, SOUND)
                found = self.findings(text)
                self.assertEqual(len(found), 1, found)
                self.assertIn(expected, found[0])

    def test_checkout_without_a_with_block_is_found(self) -> None:
        text = SOUND.replace("        with:\n          persist-credentials: false\n", "")
        self.assertEqual(len(self.findings(text)), 1)


if __name__ == "__main__":
    unittest.main()
