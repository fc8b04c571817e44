"""make_steps.py catches each way a step can look run without being run."""

import unittest

import yaml
from make_steps import check

TARGETS = {"test", "lint", "validate"}
NOT_RUN = "make {}: a step of make ci that no job certainly runs"


def workflow(steps_of_lint="      - run: make lint\n", on="[push, pull_request]", job_extra=""):
    return yaml.safe_load(f"""
on: {on}
jobs:
  check:
{job_extra}    steps:
      - run: make test
{steps_of_lint}""")


class MakeSteps(unittest.TestCase):
    def test_check(self):
        # (steps of make ci, the workflow, the findings)
        cases = [
            (["test", "lint"], workflow(), []),
            (["test", "lint", "validate"], workflow(), [NOT_RUN.format("validate")]),
            # steps that may not run, or may fail unseen
            *((["lint"], workflow(lint), [NOT_RUN.format("lint")]) for lint in (
                "      - run: make lint || true\n", "      - run: make -s lint\n",
                "      - if: false\n        run: make lint\n",
                "      - run: make lint\n        continue-on-error: true\n",
                "      - run: |\n          echo make lint\n")),
            # a job that may not run
            (["test"], workflow(job_extra="    if: false\n"), [NOT_RUN.format("test")]),
            (["test"], workflow(on="[workflow_dispatch]"), [NOT_RUN.format("test")]),
            (["test"], workflow("      - run: make lnit\n"), ["make lnit: not a target of the Makefile"]),
            ([], workflow(), ["the Makefile's CI_STEPS is empty: nothing to check"]),
        ]
        for steps, document, findings in cases:
            with self.subTest(steps=steps, workflow=document):
                self.assertEqual(check(steps, TARGETS, [document]), findings)


if __name__ == "__main__":
    unittest.main()
