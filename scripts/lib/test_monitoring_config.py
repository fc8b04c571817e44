#!/usr/bin/env python3
"""Tests of monitoring_config.py, above all of the fire drill's generator: from the real
files it may change durations, and only durations, and each one it changes must shrink."""

import tempfile
import unittest
from pathlib import Path

import monitoring_config as mc


def durations(doc, kind):
    """Every duration of a loaded document, in document order, with its role and path."""
    found = []
    mc.map_durations(doc, kind, lambda d, role, path: found.append((d, role, path)) or d)
    return found


def normalised(doc, kind):
    return mc.map_durations(doc, kind, lambda d, role, path: "<duration>")


class Durations(unittest.TestCase):
    def test_parse_and_format(self):
        for text, ms in [("0s", 0), ("250ms", 250), ("15s", 15_000), ("5m", 300_000),
                         ("1h30m", 5_400_000), ("3d", 259_200_000), ("4w2d", 2_592_000_000),
                         ("1w", 604_800_000), ("1y", 31_536_000_000)]:
            self.assertEqual(mc.parse_duration(text), ms)
            self.assertEqual(mc.format_duration(ms), text)
        self.assertEqual(mc.parse_duration("30d"), 2_592_000_000)
        self.assertEqual(mc.format_duration(mc.parse_duration("90m")), "1h30m")
        for bad in ["", "5", "m5", "5 m", "1.5h", "5mm"]:
            with self.assertRaises(ValueError):
                mc.parse_duration(bad)

    def test_promql_durations_are_ranges_subqueries_and_offsets_only(self):
        expr = ('sum by (job) (rate(x{code=~"5..", note="[1m] offset 2h"}[5m]))'
                ' / job:farol_api_errors:ratio_rate30d offset 1h'
                ' + max_over_time(rate(y[1m])[30m:15s]) * 3600')
        found = [expr[a:b] for a, b, _ in mc.promql_durations(expr)]
        self.assertEqual(found, ["5m", "1h", "1m", "30m", "15s"])
        shrunk = mc.map_promql_durations(expr, lambda d: "<" + d + ">")
        self.assertIn("job:farol_api_errors:ratio_rate30d offset <1h>", shrunk)
        self.assertIn('note="[1m] offset 2h"', shrunk)

    def test_predict_linear_horizon_is_a_duration_in_seconds(self):
        expr = "predict_linear(avail{fs=\"a,b\"}[6h], 24 * 3600) < 0"
        self.assertEqual([expr[a:b] for a, b, _ in mc.promql_durations(expr)], ["6h", "24 * 3600"])
        shrunk = mc.map_promql_durations(expr, lambda d: mc.format_duration(mc.parse_duration(d) // 60))
        self.assertEqual(shrunk, "predict_linear(avail{fs=\"a,b\"}[6m], 1440) < 0")

    def test_alert_signals_split_set_operators_before_comparisons(self):
        expr = "(a > 1 and b{x=\"<\"} > 2) or (c > 3 and on (job) d == 0)"
        self.assertEqual(mc.alert_signals(expr),
                         [("a", ["1"]), ('b{x="<"}', ["2"]), ("c", ["3"]), ("d", ["0"])])


class Drill(unittest.TestCase):
    factor = 60

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.out = Path(cls.tmp.name)
        mc.drill(cls.out, mc.MONITORING, cls.factor)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def pairs(self):
        for kind, rel in mc.config_files(mc.MONITORING):
            yield kind, rel, mc.load_yaml(mc.MONITORING / rel), mc.load_yaml(self.out / rel)

    def test_only_durations_change(self):
        files = 0
        for kind, rel, original, drill in self.pairs():
            files += 1
            self.assertEqual(normalised(original, kind), normalised(drill, kind), rel)
        self.assertGreaterEqual(files, 3)

    def test_every_duration_shrinks(self):
        count = 0
        for kind, rel, original, drill in self.pairs():
            before, after = durations(original, kind), durations(drill, kind)
            self.assertEqual(len(before), len(after), rel)
            for (old, role, path), (new, _, _) in zip(before, after, strict=True):
                count += 1
                old_ms, new_ms = mc.parse_duration(old), mc.parse_duration(new)
                if old_ms == 0:
                    self.assertEqual(new_ms, 0)
                    continue
                self.assertLess(new_ms, old_ms, f"{rel} {path}: {old} -> {new}")
                floor = 4000 if role == "window" else 1000   # 4 scrapes at 1 s
                if path[-1] == "group_wait":
                    floor = 3000                             # 3 evaluations at 1 s
                self.assertGreaterEqual(new_ms, floor, f"{rel} {path}: {old} -> {new}")
        self.assertGreater(count, 30)

    def test_windows_keep_their_order(self):
        """The multi-window alerts need long windows to stay longer than short ones."""
        for kind, rel, original, drill in self.pairs():
            if kind != "rules":
                continue
            before = [mc.parse_duration(d) for d, role, _ in durations(original, kind) if role == "window"]
            after = [mc.parse_duration(d) for d, role, _ in durations(drill, kind) if role == "window"]
            for (b1, a1) in zip(before, after, strict=True):
                for (b2, a2) in zip(before, after, strict=True):
                    if b1 < b2:
                        self.assertLess(a1, a2, rel)

    def test_a_factor_that_breaks_a_subquerys_steps_is_refused_by_name(self):
        self.assertEqual(mc.subquery_steps('sum_over_time(x{a="[1h:1m]"}[719h:1h] offset 1h) + y[5m]'),
                         [("719h", "1h")])
        for factor, why in [(7, "not 719"), (16, "not a whole number of its group's evaluations (1m became 4s)"),
                            (3600, "held at the floor of a range")]:
            with self.subTest(factor=factor), tempfile.TemporaryDirectory() as tmp:
                with self.assertRaises(SystemExit) as refused:
                    mc.drill(tmp, mc.MONITORING, factor)
                self.assertIn(f"--factor {factor}: prometheus/rules/slo.yml: the subquery [719h:1h]",
                              str(refused.exception))
                self.assertIn(why, str(refused.exception))
                self.assertEqual(list(Path(tmp).iterdir()), [], "a refused factor writes nothing")

    def test_the_fire_drills_factor_keeps_every_subquery(self):
        with tempfile.TemporaryDirectory() as tmp:
            mc.drill(tmp, mc.MONITORING, 30)   # scripts/fire-drill's
            self.assertIn("[23h58m:2m] offset 2m", (Path(tmp) / "prometheus/rules/slo.yml").read_text())

    def test_known_values(self):
        slo = (self.out / "prometheus/rules/slo.yml").read_text()
        self.assertIn("[1h12m]", slo)            # 3 d
        self.assertIn("[11h59m:1m] offset 1m", slo)   # 30 d less an hour, tiled by the hour, an hour back
        self.assertIn("[6m]", slo)               # 6 h
        self.assertIn("slo:sli_error:ratio_rate30d", slo)   # names stay
        prometheus = mc.load_yaml(self.out / "prometheus/prometheus.yml")
        self.assertEqual(prometheus["global"]["scrape_interval"], "1s")
        self.assertEqual(prometheus["global"]["evaluation_interval"], "1s")
        host = mc.load_yaml(self.out / "prometheus/rules/host.yml")["groups"][0]["rules"][0]
        self.assertEqual(host["for"], "5s")
        self.assertIn("[4s]", host["expr"])      # 2 m, held at the floor of four scrapes
        disk = mc.load_yaml(self.out / "prometheus/rules/host.yml")["groups"][0]["rules"][2]
        self.assertIn("[6m], 1440)", disk["expr"])   # 6 h of trend projected 24 h: / 60
        am = mc.load_yaml(self.out / "alertmanager/alertmanager.yml")["route"]
        self.assertEqual((am["group_wait"], am["group_interval"], am["repeat_interval"]),
                         ("3s", "5s", "12m"))
        self.assertTrue((self.out / "prometheus/targets/farol.yml").is_file())
        self.assertTrue((self.out / "blackbox/blackbox.yml").is_file())


class Lookback(unittest.TestCase):
    RULES = [{"record": "slo:sli_error:ratio_rate30d", "expr": "sum(rate(x[30d])) / sum(rate(y[30d]))"},
             {"alert": "LastMonth", "expr": "rate(x[5d] offset 28d) > 0"},
             {"alert": "Subquery", "expr": "max_over_time(rate(x[5m])[31d:1h]) > 0"}]

    @staticmethod
    def compose(*command):
        return {"services": {"prometheus": {"command": ["--config.file=/etc/prometheus/prometheus.yml", *command]}}}

    def problems(self, *command):
        return mc.lookback_problems(self.compose(*command), self.RULES)

    def test_each_rule_reading_further_back_than_the_retention_is_named(self):
        problems = self.problems("--storage.tsdb.retention.time=29d")
        self.assertEqual(len(problems), 3, problems)
        self.assertIn("slo:sli_error:ratio_rate30d reads 30d back, more than the 29d", problems[0])
        self.assertIn("LastMonth reads 33d back", problems[1])   # a range and its offset add up
        self.assertIn("Subquery reads 31d back", problems[2])
        self.assertEqual(self.problems("--storage.tsdb.retention.time=33d"), [])

    def test_the_flag_in_any_spelling_and_the_default(self):
        self.assertEqual(self.problems("--storage.tsdb.retention.time", "40d"), [])
        self.assertEqual(self.problems("--storage.tsdb.retention=40d"), [])
        string = {"services": {"prometheus": {"command": "--storage.tsdb.retention.time=40d --web.enable-lifecycle"}}}
        self.assertEqual(mc.lookback_problems(string, self.RULES), [])
        self.assertIn("more than the 15d Prometheus keeps (docker-compose.yml: the default)", self.problems()[0])

    def test_a_size_limit_or_a_malformed_value_is_refused_with_its_flag(self):
        self.assertIn("--storage.tsdb.retention.size",
                      self.problems("--storage.tsdb.retention.time=40d", "--storage.tsdb.retention.size=10GB")[0])
        self.assertEqual(self.problems("--storage.tsdb.retention.time=1.5d"),
                         ["docker-compose.yml: prometheus --storage.tsdb.retention.time='1.5d' is not a duration"])

    def test_the_real_rules_fit_the_real_retention(self):
        compose = mc.load_yaml(mc.MONITORING / "docker-compose.yml")
        self.assertEqual(mc.lookback_problems(compose, list(mc.rules())), [])


class RunbookQueries(unittest.TestCase):
    def test_every_line_of_a_promql_block_is_one_query(self):
        queries = {(path.stem, n): expr for path, n, expr in mc.runbook_queries()}
        self.assertEqual(queries[("PostgresDown", 1)], "instance:postgres_up:gapless == 0")
        self.assertEqual(queries[("PostgresDown", 2)], "pg_up == 0")
        self.assertEqual(queries[("PostgresWalArchivingFailing", 3)], "pg_stat_archiver_last_archive_age")
        self.assertNotIn(("PostgresDown", 3), queries)
        self.assertTrue(all(expr and "```" not in expr for expr in queries.values()))


if __name__ == "__main__":
    unittest.main(verbosity=1)
