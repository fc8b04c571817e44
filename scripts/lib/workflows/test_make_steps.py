"""Tests of make_steps.py: each way a step can look run without being run is caught.

    pytest scripts/lib/workflows        (make validate AREAS=python runs them all)
"""

import unittest

import yaml
from make_steps import check

TARGETS = {"test", "lint", "validate"}


def workflow(steps_of_lint="      - run: make lint\n", on="[push, pull_request]", job_extra=""):
    return yaml.safe_load(f"""
on: {on}
jobs:
  check:
{job_extra}    steps:
      - run: make test
{steps_of_lint}""")


class MakeSteps(unittest.TestCase):
    def test_every_step_run_exactly(self):
        self.assertEqual(check(["test", "lint"], TARGETS, [workflow()]), [])

    def test_a_step_no_job_runs(self):
        self.assertEqual(check(["test", "lint", "validate"], TARGETS, [workflow()]),
                         ["make validate: a step of make ci that no job certainly runs"])

    def test_steps_that_may_not_run_or_may_fail_unseen_do_not_count(self):
        for lint in ("      - run: make lint || true\n", "      - run: make -s lint\n",
                     "      - if: false\n        run: make lint\n",
                     "      - run: make lint\n        continue-on-error: true\n",
                     "      - run: |\n          echo make lint\n"):
            with self.subTest(lint=lint):
                self.assertEqual(check(["lint"], TARGETS, [workflow(lint)]),
                                 ["make lint: a step of make ci that no job certainly runs"])

    def test_a_job_that_may_not_run_does_not_count(self):
        self.assertTrue(check(["test"], TARGETS, [workflow(job_extra="    if: false\n")]))
        self.assertTrue(check(["test"], TARGETS, [workflow(on="[workflow_dispatch]")]))

    def test_an_unknown_target_and_an_empty_step_list(self):
        self.assertEqual(check(["test"], TARGETS, [workflow("      - run: make lnit\n")]),
                         ["make lnit: not a target of the Makefile"])
        self.assertTrue(check([], TARGETS, [workflow()]))


if __name__ == "__main__":
    unittest.main()
