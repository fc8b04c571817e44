"""Tests of the PrometheusRule generator (prometheusrule.py), on the real rule files:
every group, alert and recording rule of monitoring/prometheus/rules appears, in order;
only the PostgreSQL expressions differ, and only by the pg_* -> cnpg_* metrics; the result
is what is committed; promtool accepts it; and it passes the custom-resource checks.

    python3 -m unittest discover -s scripts/lib/k8s -p 'test_prometheusrule.py'
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

import prometheusrule as gen
import yaml
from custom_resources import check_custom_resources
from render import Render

PG = re.compile(r"\bpg_[a-zA-Z0-9_]+")


def rule_name(rule: dict) -> str:
    return rule.get("alert") or rule.get("record")


class GeneratorOnTheRealRules(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.source = gen.load_groups()
        cls.text = gen.render(cls.source)
        cls.generated = yaml.safe_load(cls.text)["spec"]["groups"]

    def pairs(self):
        for src_group, out_group in zip(self.source, self.generated):
            yield from zip(src_group["rules"], out_group["rules"])

    def test_every_group_and_rule_appears_in_order(self):
        self.assertEqual([(g["name"], [rule_name(r) for r in g["rules"]]) for g in self.source],
                         [(g["name"], [rule_name(r) for r in g["rules"]]) for g in self.generated])
        # the alerts of docs/monitoring.md that live in monitoring/ are all there
        alerts = {rule_name(r) for g in self.generated for r in g["rules"] if "alert" in r}
        self.assertLessEqual({"FarolDown", "HttpHighErrorRate", "PostgresDown",
                              "PostgresTooManyConnections", "Watchdog"}, alerts)

    def test_groups_keep_their_settings(self):
        for src, out in zip(self.source, self.generated):
            self.assertEqual({k: v for k, v in src.items() if k != "rules"},
                             {k: v for k, v in out.items() if k != "rules"})

    def test_only_the_postgres_metrics_and_the_target_alerts_differ(self):
        changed = set()
        for src, out in self.pairs():
            self.assertEqual({k: v for k, v in src.items() if k not in ("expr", "annotations")},
                             {k: v for k, v in out.items() if k not in ("expr", "annotations")}, rule_name(src))
            if rule_name(src) in gen.TARGET_ALERTS:
                changed.add(rule_name(src))
                self.assertIn('namespace="farol"', out["expr"])
                for job in ("node", "prometheus", "alertmanager", "blackbox"):
                    self.assertNotIn(job, out["expr"], "the platform watches its own exporters")
                continue
            texts = [("expr", src["expr"], out["expr"])] + [
                (k, v, out["annotations"][k]) for k, v in (src.get("annotations") or {}).items()]
            for what, before, after in texts:
                if PG.search(before):
                    changed.add(rule_name(src))
                    self.assertIsNone(PG.search(after), f"{rule_name(src)} {what}: {after}")
                    self.assertIn("cnpg_", after)
                else:
                    self.assertEqual(before, after, f"{rule_name(src)} {what}")
        self.assertEqual({"PostgresDown", "PostgresTooManyConnections", "TargetDown", "TargetAbsent"}, changed)

    def test_the_committed_file_is_a_fresh_generation(self):
        with open(gen.OUTPUT, encoding="utf-8") as f:
            self.assertEqual(f.read(), self.text, "run scripts/gen-prometheusrule")

    def test_promtool_accepts_the_generated_rules(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool is missing: run scripts/install-deps monitoring")
        with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
            yaml.safe_dump({"groups": self.generated}, f)
            f.flush()
            result = subprocess.run([promtool, "check", "rules", f.name], capture_output=True,
                                    text=True, timeout=60, check=False)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_it_passes_the_custom_resource_checks(self):
        doc = yaml.safe_load(self.text)
        doc["metadata"]["namespace"] = "farol"
        self.assertEqual(list(check_custom_resources(Render([doc]))), [])


class MetricSwap(unittest.TestCase):
    def test_each_known_metric(self):
        self.assertEqual(gen.to_cnpg("pg_up == 0"), "cnpg_collector_up == 0")
        self.assertEqual(gen.to_cnpg("sum(pg_stat_activity_count)"), "sum(cnpg_backends_total)")
        self.assertEqual(gen.to_cnpg("max(pg_settings_max_connections)"),
                         'max(cnpg_pg_settings_setting{name="max_connections"})')

    def test_existing_matchers_are_kept(self):
        self.assertEqual(gen.to_cnpg('pg_settings_max_connections{instance="db:9187"}'),
                         'cnpg_pg_settings_setting{name="max_connections", instance="db:9187"}')
        self.assertEqual(gen.to_cnpg('pg_up{job="postgres"} == 0'), 'cnpg_collector_up{job="postgres"} == 0')

    def test_other_names_are_left_alone(self):
        for expr in ("cnpg_collector_up == 0", "my_pg_up == 0", 'up{job="pg_up"} == 0'):
            self.assertEqual(gen.to_cnpg(expr), expr)

    def test_an_unmapped_metric_stops_the_generation(self):
        with self.assertRaises(gen.UnmappedMetric):
            gen.to_cnpg("rate(pg_stat_database_xact_commit[5m])")


class CheckMode(unittest.TestCase):
    def run_main(self, *args) -> int:
        with mock.patch.object(sys, "argv", ["prometheusrule.py", *args]), \
                contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return gen.main()

    def test_check_fails_on_a_stale_file_and_writing_fixes_it(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "prometheusrule.yaml")
            with open(out, "w", encoding="utf-8") as f:
                f.write("# edited by hand\n")
            with mock.patch.object(gen, "OUTPUT", out):
                self.assertEqual(self.run_main("--check"), 1)
                self.assertEqual(self.run_main(), 0)
                self.assertEqual(self.run_main("--check"), 0)


if __name__ == "__main__":
    unittest.main()
