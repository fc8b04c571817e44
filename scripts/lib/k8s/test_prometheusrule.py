"""Tests of prometheusrule.py on the real rule files and alertmanager.yml: every group, rule,
route and inhibition kept, every selector scoped, nothing else changed but the PostgreSQL
metrics and the scrape-target alerts, the committed files fresh, promtool and the
custom-resource checks satisfied."""

from __future__ import annotations

import contextlib
import functools
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

mc = gen.mc   # imported by the generator, from scripts/lib

PG = re.compile(r"\bpg_[a-zA-Z0-9_]+")
# a series selector of the generated rules, or a quoted string (skipped): a metric name
# (not a function: no "(" after it) and its matchers; the rules have no bare {...}
SELECTOR = re.compile(r"""("(?:[^"\\]|\\.)*")|\b((?:barman_cloud_|cnpg_|container_|farol_|job:|instance:|"""
                      r"""kube_|kubelet_|namespace:|pg_|probe_|process_|http_server_|slo:|sloth_|up\b|ALERTS\b)[\w:]*)"""
                      r"""(?!\s*\()(\{[^}]*\})?""")


def rule_name(rule: dict) -> str:
    return rule.get("alert") or rule.get("record")


class GeneratorOnTheRealRules(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.source = gen.load_groups()
        cls.text = gen.render(cls.source)
        cls.generated = yaml.safe_load(cls.text)["spec"]["groups"]

    def kept_source(self):
        return [g for g in self.source if g["name"] not in gen.PLATFORM_GROUPS | gen.COMPOSE_ONLY_GROUPS]

    def pairs(self):
        for src_group, out_group in zip(self.kept_source(), self.generated, strict=True):
            yield from zip(src_group["rules"], out_group["rules"], strict=True)

    def test_every_group_and_rule_appears_in_order_but_the_platform_s(self):
        self.assertIn("host", {g["name"] for g in self.source})
        self.assertEqual([(g["name"], [rule_name(r) for r in g["rules"]]) for g in self.kept_source()],
                         [(g["name"], [rule_name(r) for r in g["rules"]]) for g in self.generated])
        # the alerts of docs/monitoring.md that live in monitoring/ are all there
        alerts = {rule_name(r) for g in self.generated for r in g["rules"] if "alert" in r}
        self.assertLessEqual({"FarolDown", "HttpHighErrorRate", "PostgresDown",
                              "PostgresTooManyConnections", "Watchdog"}, alerts)
        # compose's restart ticket is FarolPodRestarted's business there: not both
        self.assertIn("FarolPodRestarted", alerts)
        self.assertNotIn("FarolRestarting", alerts)
        self.assertFalse({"HostHighCpuUsage", "HostHighMemoryUsage"} & alerts)

    def test_groups_keep_their_settings(self):
        for src, out in zip(self.kept_source(), self.generated, strict=True):
            self.assertEqual({k: v for k, v in src.items() if k != "rules"},
                             {k: v for k, v in out.items() if k != "rules"})

    def test_every_selector_is_scoped_and_every_alert_labelled_with_the_namespace(self):
        for src, out in self.pairs():
            expr = out["expr"]
            self.assertNotIn("{}", expr)
            selectors = [m for m in SELECTOR.finditer(expr) if not m.group(1)]
            # a constant (the Watchdog, the SLOs' objective and period) has nothing to scope
            self.assertTrue(selectors or re.fullmatch(r"vector\(?[\d. ()-]+\)?", expr.strip()), rule_name(src))
            for match in selectors:
                self.assertIn('namespace="farol"', match.group(3) or "", f"{rule_name(src)}: {match.group(0)}")
            if "alert" in src:
                self.assertEqual(out["labels"], {**src.get("labels", {}), "namespace": "farol"})

    def test_only_the_postgres_metrics_and_the_target_alerts_differ(self):
        unscope = re.compile(r'(, )?namespace="farol"(, )?')
        changed = set()
        for src, out in self.pairs():
            drop = ("expr", "annotations", "labels")
            self.assertEqual({k: v for k, v in src.items() if k not in drop},
                             {k: v for k, v in out.items() if k not in drop}, rule_name(src))
            if rule_name(src) in gen.TARGET_ALERTS:
                changed.add(rule_name(src))
                for job in ("node", "prometheus", "alertmanager", "blackbox"):
                    self.assertNotIn(f'"{job}"', out["expr"], "the platform watches its own exporters")
                continue
            after_expr = unscope.sub(lambda m: ", " if m.group(1) and m.group(2) else "", out["expr"])
            after_expr = after_expr.replace("{}", "")
            before_expr = gen.production_expr(rule_name(src), src["expr"])
            texts = [("expr", before_expr, after_expr)] + [
                (k, v, out["annotations"][k]) for k, v in (src.get("annotations") or {}).items()]
            for what, before, after in texts:
                if PG.search(before):
                    changed.add(rule_name(src))
                    self.assertIsNone(PG.search(after), f"{rule_name(src)} {what}: {after}")
                    self.assertIn("cnpg_", after)
                else:
                    self.assertEqual(before, after, f"{rule_name(src)} {what}")
        self.assertEqual({"PostgresTooManyConnections",
                          "PostgresReplicationLagging",
                          "PostgresWalArchivingFailing", "PostgresWalArchivingStalled",
                          "ScrapeTargetDown", "ScrapeTargetFlaky", "ScrapeJobAbsent"}, changed)

    def test_the_target_runbooks_query_the_jobs_the_alerts_watch(self):
        # the runbooks' queries name the overlay's jobs by hand: a job renamed or added in the
        # overlay must show there too, or on-call would query a different set than the alert
        rules = {rule_name(r): r for g in self.generated for r in g["rules"]}
        checked = []
        for alert in ("ScrapeTargetDown", "ScrapeTargetFlaky"):
            watched = set(re.findall(r'job=~"([^"]+)"', rules[alert]["expr"]))
            self.assertEqual(1, len(watched), alert)
            with open(os.path.join(gen.REPO, "docs", "runbooks", f"{alert}.md"), encoding="utf-8") as f:
                queried = set(re.findall(r'job=~"([^"]+)"', f.read()))
            if queried:
                self.assertEqual(watched, queried, f"{alert}'s runbook queries other jobs than the alert")
                checked.append(alert)
        self.assertIn("ScrapeTargetFlaky", checked)

    def test_postgres_down_and_its_signal_read_one_reachability_series_down_on_a_failed_scrape(self):
        rules = {rule_name(r): r for g in self.generated for r in g["rules"]}
        series = 'instance:postgres_up:gapless{role="primary", namespace="farol"}'
        ns = 'namespace="farol"'
        up, ready = f'up{{job="postgres", {ns}}}', f'kube_pod_status_ready{{condition="true", {ns}}}'
        self.assertEqual(rules["instance:postgres_up:gapless"]["expr"], "\n".join([
            f"max without (cluster) (cnpg_collector_up{{{ns}}})",
            "  or",
            "(",
            f"  {up} == 0",
            "    unless on (namespace, pod)",
            "  (",
            f"    min by (namespace, pod) (min_over_time({ready}[5m])) == 1",
            "      and on (namespace, pod)",
            f"    max by (namespace, pod) (last_over_time({ready}[2m]))",
            "      and on (namespace, pod)",
            "    (",
            f"      max by (namespace, pod) (max_over_time({up}[5m])) == 0",
            "        or",
            f"      max by (namespace, pod) (changes({up}[5m])) > 1",
            "    )",
            "      and on (namespace, pod)",
            f"    max by (namespace, pod) ({up} offset 5m)",
            "  )",
            ")",
            "  or",
            f"clamp({up}, 1, 1)",
            ""]))
        down = [r for g in self.generated for r in g["rules"] if r.get("alert") == "PostgresDown"]
        self.assertEqual(["page", "ticket"], [r["labels"]["severity"] for r in down])
        self.assertEqual(down[0]["expr"], f"{series} == 0\n")
        self.assertEqual(down[1]["expr"], 'instance:postgres_up:gapless{role!="primary", namespace="farol"} == 0\n')
        # the inhibitor sees what the page sees, without its for:, with both bounds
        signal = rules["PostgresPrimaryUnreachable"]
        self.assertTrue(signal["expr"].startswith(f"{series} == 0\n"))
        self.assertIn(f"changes({series}[15m]) > 2", signal["expr"])
        self.assertIn(f"1 - avg_over_time({series}[15m]) > 0.2", signal["expr"])
        self.assertNotIn("for", signal)
        self.assertNotIn("keep_firing_for", signal, "a flapping primary must not hold farol's pages back for good")

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


class AlertmanagerConfigOnTheRealFile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(gen.ALERTMANAGER, encoding="utf-8") as f:
            cls.source = yaml.safe_load(f)
        cls.text = gen.render_alertmanager_config()
        cls.generated = yaml.safe_load(cls.text)["spec"]

    def test_the_same_routes_in_the_same_order(self):
        def flat(route, as_text):
            """(receiver or None where inherited, matchers as text, depth) of every route,
            depth first."""
            def walk(node, depth):
                yield node.get("receiver"), sorted(as_text(m) for m in node.get("matchers") or []), depth
                for child in node.get("routes") or []:
                    yield from walk(child, depth + 1)
            return list(walk(route, 0))
        source = flat(self.source["route"], lambda m: m.replace(" ", ""))
        generated = flat(self.generated["route"], lambda m: f'{m["name"]}{m["matchType"]}"{m["value"]}"')
        # but the two routes of AlertmanagerNotificationsFailing, an alert of the platform's groups
        platform = [r for r in source if 'alertname="AlertmanagerNotificationsFailing"' in r[1]]
        self.assertEqual(len(platform), 2)
        self.assertEqual([r for r in source if r not in platform], generated)
        self.assertGreater(len(source), 3)

    def test_only_a_route_naming_a_platform_alert_exactly_is_left_out(self):
        config = {"receivers": [{"name": "page"}], "inhibit_rules": [], "route": {"receiver": "page", "routes": [
            {"matchers": ['alertname = "Gone"'], "receiver": "page"},
            {"matchers": ['alertname = "Gone"', 'severity = "page"'], "receiver": "page"},
            {"matchers": ['alertname =~ "Gone|Kept"'], "receiver": "page"},
            {"matchers": ['alertname != "Gone"'], "receiver": "page"},
            {"matchers": ['alertname = "KubePodCrashLooping"'], "receiver": "page"},
            {"matchers": ['severity = "page"'], "receiver": "page",
             "routes": [{"matchers": ['alertname = "Gone"'], "receiver": "page"}]}]}}
        kept = gen.alertmanager_config(config, {"Gone"})["spec"]["route"]["routes"]
        self.assertEqual([[f'{m["name"]}{m["matchType"]}{m["value"]}' for m in r["matchers"]] for r in kept],
                         [["alertname=~Gone|Kept"], ["alertname!=Gone"], ["alertname=KubePodCrashLooping"],
                          ["severity=page"]])
        self.assertNotIn("routes", kept[-1])
        self.assertIn("AlertmanagerNotificationsFailing", gen.platform_alerts())
        self.assertNotIn("FarolDown", gen.platform_alerts())

    def test_every_inhibition_is_kept(self):
        self.assertEqual(len(self.source["inhibit_rules"]), len(self.generated["inhibitRules"]))
        for src, out in zip(self.source["inhibit_rules"], self.generated["inhibitRules"], strict=True):
            self.assertEqual(src.get("equal", []), out["equal"])
            self.assertEqual(len(src["source_matchers"]), len(out["sourceMatch"]))
            self.assertEqual(len(src["target_matchers"]), len(out["targetMatch"]))

    def test_every_webhook_url_is_a_key_of_the_example_secret_and_none_is_committed(self):
        example = os.path.join(os.path.dirname(gen.AM_OUTPUT), "alerting.env.example")
        with open(example, encoding="utf-8") as f:
            keys = {line.split("=", 1)[0] for line in f if "=" in line and not line.startswith("#")}
        for receiver in self.generated["receivers"]:
            for hook in receiver.get("webhookConfigs", []):
                self.assertEqual(hook["urlSecret"]["name"], "farol-alerting")
                self.assertIn(hook["urlSecret"]["key"], keys)
                self.assertNotIn("url", hook)

    def test_the_committed_file_is_a_fresh_generation(self):
        with open(gen.AM_OUTPUT, encoding="utf-8") as f:
            self.assertEqual(f.read(), self.text, "run scripts/gen-prometheusrule")


SCOPE = functools.partial(mc.scope_selectors, matcher='namespace="farol"')


class Rewrites(unittest.TestCase):
    # (rewrite, expression, what it becomes or the error that refuses it)
    CASES = [
        # metric names get the matcher, functions and label lists do not
        (SCOPE, 'sum by (job) (rate(up{job="a"}[5m])) > 0 and on (job) x',
         'sum by (job) (rate(up{job="a", namespace="farol"}[5m])) > 0 and on (job) x{namespace="farol"}'),
        # aggregations with their `by` first, and recording names
        (SCOPE, "max by (namespace) (job:farol_api_errors:ratio_rate5m) > 6 * 0.001",
         'max by (namespace) (job:farol_api_errors:ratio_rate5m{namespace="farol"}) > 6 * 0.001'),
        (SCOPE, "max_over_time(rate(x[5m])[1h:30s]) atan2 y[1h:]",
         'max_over_time(rate(x{namespace="farol"}[5m])[1h:30s]) atan2 y{namespace="farol"}[1h:]'),
        # strings, and braces inside them, are left alone
        (SCOPE, 'x{route="/a/{id}", job="up"} offset 5m', 'x{route="/a/{id}", job="up", namespace="farol"} offset 5m'),
        # what cannot be scoped safely stops it
        (SCOPE, '{__name__=~"up|x"} == 0', ValueError),
        (SCOPE, 'sum({job="a"})', ValueError),
        (SCOPE, 'up{namespace="other"} == 0', ValueError),
        (SCOPE, 'rate(x{job="a", namespace=~"f.*"}[5m])', ValueError),
        # each known metric, existing matchers kept, other names left alone, an unmapped one refused
        (gen.to_cnpg, "pg_up == 0", "cnpg_collector_up == 0"),
        (gen.to_cnpg, "sum(pg_stat_activity_count)", "sum(cnpg_backends_total)"),
        (gen.to_cnpg, "max(pg_settings_max_connections)", 'max(cnpg_pg_settings_setting{name="max_connections"})'),
        (gen.to_cnpg, 'pg_settings_max_connections{instance="db:9187"}',
         'cnpg_pg_settings_setting{name="max_connections", instance="db:9187"}'),
        (gen.to_cnpg, 'pg_up{job="postgres"} == 0', 'cnpg_collector_up{job="postgres"} == 0'),
        (gen.to_cnpg, "cnpg_collector_up == 0", "cnpg_collector_up == 0"),
        (gen.to_cnpg, "my_pg_up == 0", "my_pg_up == 0"),
        (gen.to_cnpg, 'up{job="pg_up"} == 0', 'up{job="pg_up"} == 0'),
        (gen.to_cnpg, "rate(pg_stat_database_xact_commit[5m])", gen.UnmappedMetric),
    ]

    def test_each_case(self):
        for rewrite, expr, wanted in self.CASES:
            with self.subTest(expr):
                if isinstance(wanted, str):
                    self.assertEqual(rewrite(expr), wanted)
                else:
                    self.assertRaises(wanted, rewrite, expr)


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
            # both outputs in the temporary directory: writing must not touch the
            # committed files, which other checks read meanwhile
            with mock.patch.object(gen, "OUTPUT", out), \
                    mock.patch.object(gen, "AM_OUTPUT", os.path.join(tmp, "alertmanagerconfig.yaml")):
                self.assertEqual(self.run_main("--check"), 1)
                self.assertEqual(self.run_main(), 0)
                self.assertEqual(self.run_main("--check"), 0)


if __name__ == "__main__":
    unittest.main()
