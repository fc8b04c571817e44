"""The production PrometheusRule's own expressions and alerts, run by promtool on series shaped
like CloudNativePG's, PgBouncer's and the kubelet's: no CloudNativePG runs here for the fire
drill to break."""

import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import prometheusrule as gen
import yaml

# one file per evaluation interval that its cases need
TESTS = sorted(glob.glob(os.path.join(gen.REPO, "monitoring", "prometheus", "production", "tests", "*.test.yml")))


class ProductionRulesOnCloudNativePGSeries(unittest.TestCase):
    def test_the_postgres_alerts_fire_and_stay_quiet_on_cloudnativepg_series(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool is needed: scripts/install-deps monitoring")
        groups = yaml.safe_load(gen.render(gen.load_groups()))["spec"]["groups"]
        # the texts are test_prometheusrule.py's business: here, when each alert fires
        for group in groups:
            for rule in group["rules"]:
                rule.pop("annotations", None)
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "rules.yml"), "w") as f:
                yaml.safe_dump({"groups": groups}, f)
            names = []
            for path in TESTS:
                names.append(os.path.basename(path))
                shutil.copy(path, os.path.join(tmp, names[-1]))
            done = subprocess.run([promtool, "test", "rules", *names], cwd=tmp,
                                  capture_output=True, text=True, timeout=300, check=False)
        self.assertIn("cloudnativepg.test.yml", names)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_every_production_only_alert_fires_here_at_each_severity(self):
        # compose's alerts have tests of their own (monitoring/prometheus/tests) and the
        # fire drill; those of monitoring/prometheus/production/ have only these
        tests = []
        for path in TESTS:
            with open(path) as f:
                tests += yaml.safe_load(f)["tests"]
        fired = {(case["alertname"], alert["exp_labels"]["severity"])
                 for test in tests
                 for case in test.get("alert_rule_test", []) for alert in case["exp_alerts"] or []}
        wanted = {(r["alert"], r["labels"]["severity"])
                  for g in gen.load_groups((gen.PRODUCTION_RULES_GLOB,)) for r in g["rules"] if "alert" in r}
        self.assertTrue(wanted)
        self.assertLessEqual(wanted, fired)

    def test_the_volume_alerts_watch_the_claims_of_the_cluster_as_named(self):
        # CloudNativePG names an instance's claims after its Cluster: a rename must not
        # leave the alerts watching claims that no longer exist
        name = gen.cluster()["metadata"]["name"]
        claims = {m for g in gen.load_groups((gen.PRODUCTION_RULES_GLOB,)) for r in g["rules"]
                  for m in re.findall(r'persistentvolumeclaim=~"([^"]*)"', r["expr"])}
        self.assertTrue(claims)
        for claim in claims:
            self.assertRegex(f"{name}-1", f"^(?:{claim})$")
            self.assertTrue(claim.startswith(name + "-"), claim)

    def test_the_pod_alerts_gate_on_the_deployment_as_named(self):
        # FarolPodMetricsMissing stays quiet while this Deployment is scaled to zero: a
        # rename must not leave it reading a Deployment that no longer exists
        with open(os.path.join(gen.REPO, "deploy", "k8s", "base", "deployment.yaml")) as f:
            name = yaml.safe_load(f)["metadata"]["name"]
        gates = {m for g in gen.load_groups((gen.PRODUCTION_RULES_GLOB,)) for r in g["rules"]
                 for m in re.findall(r'kube_deployment_spec_replicas\{deployment="([^"]*)"', r["expr"])}
        self.assertEqual(gates, {name})


if __name__ == "__main__":
    unittest.main()
