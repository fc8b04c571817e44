#!/usr/bin/env python3
"""Tests of the fire drill's judge, its configuration adjustment and the memory stressor's
refusals: the verdicts must fail when the alerting misbehaves, not only pass when it behaves.
"""

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import drill
import judge as jd
import scenarios as sc
from judge import Interval, Notice

HERE = Path(__file__).resolve().parent

MARKS = {"start": 100.0, "fault": 110.0, "fix": 150.0, "end": 200.0}
DATABASE = sc.BY_NAME["database"]
ERRORS = sc.BY_NAME["errors"]


def notice(t, alert, status="firing"):
    return Notice(t, "/page", alert, status)


class Intervals(unittest.TestCase):
    def test_samples_group_into_intervals_split_by_gaps(self):
        samples = [10, 11, 12, 13, 20, 21]
        ivs = jd.firing_intervals(samples, eval_s=1)
        self.assertEqual([(iv.start, iv.end) for iv in ivs], [(10, 14), (20, 22)])

    def test_a_slower_groups_samples_are_one_interval_at_its_own_spacing(self):
        ivs = jd.firing_intervals([10, 12, 14, 16], eval_s=2)
        self.assertEqual([(iv.start, iv.end) for iv in ivs], [(10, 18)])

    def test_only_an_alert_firing_now_has_an_open_interval(self):
        ivs = jd.firing_intervals([1, 2, 10, 11], 1)
        self.assertEqual(jd.close_open(ivs, firing_now=False), ivs)
        self.assertEqual([iv.end for iv in jd.close_open(ivs, firing_now=True)], [3, None])


class JudgeFire(unittest.TestCase):
    def test_fired_notified_resolved_passes(self):
        row = jd.judge(ERRORS, "HttpHighErrorRate", dict(MARKS), [Interval(115, 160)],
                       [notice(116, "HttpHighErrorRate"), notice(163, "HttpHighErrorRate", "resolved")], [])
        self.assertEqual(row.result, "ok", row)
        self.assertEqual((row.to_fire, row.to_resolve), ("5.0 s", "10.0 s"))
        self.assertEqual(row.webhook, "+6.0 s / +13.0 s")

    def test_failures(self):
        told = [notice(116, "HttpHighErrorRate"), notice(163, "HttpHighErrorRate", "resolved")]
        for intervals, notices, why in [
            ([Interval(115, None)], told[:1], "did not resolve"),
            ([Interval(105, 160)], told, "already firing before the fault"),
            ([Interval(115, 160)], [], "never reached the webhook"),
            ([], [], "did not fire"),
        ]:
            with self.subTest(why):
                row = jd.judge(ERRORS, "HttpHighErrorRate", dict(MARKS), intervals, notices, [])
                self.assertEqual(row.result, "FAIL", why)
                self.assertIn(why, row.observed)

    def test_only_an_alert_of_once_may_resolve_before_the_fix(self):
        hung, name = sc.BY_NAME["database-hung"], "FarolStatementsLeftRunning"

        def judge(alert, intervals, notices):
            return jd.judge(hung, alert, dict(MARKS), intervals, notices, [])

        row = judge(name, [Interval(128, 140)], [notice(130, name), notice(142, name, "resolved")])
        self.assertEqual(row.result, "ok", row)
        self.assertEqual((row.webhook, row.to_resolve), ("+20.0 s / before the fix", "before the fix"))
        err = "HttpHighErrorRate"
        for alert, intervals, notices, why in [
            # not of once: resolved before the fix, and told so before it too
            (err, [Interval(128, 140)], [notice(130, err), notice(142, err, "resolved")],
             "resolved notification missing"),
            # resolved before the fix, told after it
            (err, [Interval(128, 140)], [notice(130, err), notice(152, err, "resolved")], "resolved before the fix"),
            # once still means fired after the fault and told
            (name, [Interval(128, 140)], [], "never reached the webhook"),
            # fired twice, told resolved only after the first
            (name, [Interval(120, 125), Interval(130, 140)],
             [notice(121, name), notice(126, name, "resolved"), notice(131, name)], "resolved notification missing"),
            # first fired after the fix: not the fault's doing
            (name, [Interval(160, 170)], [notice(161, name), notice(172, name, "resolved")],
             "fired only after the fix"),
        ]:
            row = judge(alert, intervals, notices)
            self.assertEqual(row.result, "FAIL", why)
            self.assertIn(why, row.observed)

    def test_once_names_only_alerts_that_fire(self):
        with self.assertRaises(ValueError):
            sc.Scenario("x", "x", fire=("A",), once=("B",))

    def test_a_bare_string_is_refused_where_alert_names_go(self):
        for bad in ({"fire": ("HostHighCpuUsage")}, {"signal": "PostgresDown"},
                    {"inhibited": {"FarolHealthCheckFailing": ("FarolDown")}},
                    {"held": {"ErrorBudgetBurnSlow": "ErrorBudgetBurnFast"}}):
            with self.subTest(bad), self.assertRaisesRegex(TypeError, "not a tuple of alert names"):
                sc.Scenario("x", "x", **bad)
        sc.Scenario("x", "x", fire=("HostHighCpuUsage",), allowed={"PostgresDown": "a reason is text"})


SIGNAL = "PostgresPrimaryUnreachable"


class JudgeInhibited(unittest.TestCase):
    def test_fired_held_back_silent_passes(self):
        row = jd.judge(DATABASE, "HttpHighErrorRate", dict(MARKS), [Interval(120, 152)], [], [(121, {SIGNAL})])
        self.assertEqual(row.result, "ok", row)
        self.assertEqual(row.webhook, "silent")

    def test_failures(self):
        for intervals, notices, suppressions, why in [
            # the inhibiting alert resolved first; the window still held the errors
            ([Interval(120, 170)], [notice(158, "HttpHighErrorRate")], [(121, {SIGNAL})], "after the fix"),
            # paged before its inhibitor fired
            ([Interval(112, 152)], [notice(113, "HttpHighErrorRate")], [(121, {SIGNAL})], "after the fault"),
            ([], [], [], "not exercised"),
            # held back by another alert is not this inhibition
            ([Interval(120, 152)], [], [(121, {"FarolDown"})], "never seen inhibited"),
        ]:
            with self.subTest(why):
                row = jd.judge(DATABASE, "HttpHighErrorRate", dict(MARKS), intervals, notices, suppressions)
                self.assertEqual(row.result, "FAIL", why)
                self.assertIn(why, row.observed)


class JudgeSignalsAndBounds(unittest.TestCase):
    BOUNDS = jd.Bounds(notify=20, resolve=30, prometheus_fire=15, prometheus_resolve=25)

    def test_a_signal_fires_silently_and_resolves(self):
        offline = sc.BY_NAME["offline"]
        row = jd.judge(offline, "FarolAllInstancesDown", dict(MARKS), [Interval(114, 152)], [], [], self.BOUNDS)
        self.assertEqual((row.result, row.webhook), ("ok", "silent"), row)
        leaked = jd.judge(offline, "FarolAllInstancesDown", dict(MARKS), [Interval(114, 152)],
                          [notice(115, "FarolAllInstancesDown")], [], self.BOUNDS)
        self.assertEqual(leaked.result, "FAIL")
        self.assertIn("notifies no one", leaked.observed)

    def test_slower_than_the_configuration_allows_fails(self):
        late = jd.judge(ERRORS, "HttpHighErrorRate", dict(MARKS), [Interval(115, 160)],
                        [notice(135, "HttpHighErrorRate"), notice(163, "HttpHighErrorRate", "resolved")], [],
                        self.BOUNDS)
        self.assertEqual(late.result, "FAIL")
        self.assertIn("past its bound", late.observed)
        self.assertEqual(late.bound, "<= 20 s / <= 30 s")
        on_time = jd.judge(ERRORS, "HttpHighErrorRate", dict(MARKS), [Interval(115, 160)],
                           [notice(116, "HttpHighErrorRate"), notice(163, "HttpHighErrorRate", "resolved")], [],
                           self.BOUNDS)
        self.assertEqual(on_time.result, "ok", on_time)

    def test_inhibited_by_either_of_its_inhibitors(self):
        tail = jd.judge(DATABASE, "ErrorBudgetBurnFast", dict(MARKS), [Interval(120, 152)], [],
                        [(160, {"PostgresPrimaryRecentlyDown"})])
        self.assertEqual(tail.result, "ok", tail)

    def test_the_slow_burn_is_held_back_by_the_fast_then_notified_and_resolves_after_the_drill(self):
        errors = next(s for s in sc.for_run(quick=False) if s.name == "errors")
        self.assertEqual(errors.expectation("ErrorBudgetBurnSlow"), ("held", ("ErrorBudgetBurnFast",)))
        latency = next(s for s in sc.for_run(quick=False) if s.name == "latency")
        self.assertEqual(latency.expectation("LatencyBudgetBurnSlow"), ("held", ("LatencyBudgetBurnFast",)))
        self.assertEqual(latency.resolving(), ("HttpHighLatency", "LatencyBudgetBurnFast"))
        held = [(135, {"ErrorBudgetBurnFast"})]
        # MARKS: fault 110, fix 150; the page fires 115 to 160: suppressed while it fires,
        # told once it has resolved
        page = {"ErrorBudgetBurnFast": [Interval(115, 160)]}

        def judge(sent_at, suppressions):
            notices = [notice(sent_at, "ErrorBudgetBurnSlow")] if sent_at else []
            return jd.judge(errors, "ErrorBudgetBurnSlow", dict(MARKS), [Interval(130, None)], notices,
                            suppressions, others=page)
        row = judge(165, held)
        self.assertEqual((row.result, row.to_resolve), ("ok", "after the drill"), row)
        # early; after the fix but while the page still fires; much later; never held; never sent
        for sent_at, suppressions in [(140, held), (155, held), (400, held), (165, []), (None, held)]:
            self.assertEqual(judge(sent_at, suppressions).result, "FAIL", (sent_at, suppressions))
        quick = next(s for s in sc.for_run(quick=True) if s.name == "errors")
        self.assertEqual(quick.expectation("ErrorBudgetBurnSlow")[0], "allowed")
        settled = jd.settle_row({"start": 300.0, "end": 900.0}, {"ErrorBudgetBurnSlow": [Interval(130, 800)]},
                                True, [notice(805, "ErrorBudgetBurnSlow", "resolved")],
                                [("ErrorBudgetBurnSlow", 150.0)])
        self.assertEqual([r.result for r in settled], ["ok", "ok"])
        missing = jd.settle_row({"start": 300.0, "end": 900.0}, {"ErrorBudgetBurnSlow": [Interval(130, 800)]},
                                True, [], [("ErrorBudgetBurnSlow", 150.0)])
        self.assertEqual(missing[1].result, "FAIL")

    def test_the_slow_burn_is_bounded_from_the_last_scenario_with_5xx(self):
        full = sc.for_run(quick=False)
        fixes = {"errors": 100.0, "latency": 200.0, "database": 300.0, "database-cut": 400.0, "cpu": 500.0}
        self.assertEqual(sc.last_fed("ErrorBudgetBurnSlow", full, fixes), 400.0)
        self.assertEqual(sc.last_fed("ErrorBudgetBurnSlow", full, {"latency": 200.0}), None)

    def test_an_alert_reading_records_is_bounded_by_their_windows(self):
        import drill
        rules = [{"record": "r:ratio6h", "expr": "sum(rate(x[6m])) / sum(rate(y[6m]))"},
                 {"record": "r:left", "expr": "1 - r:ratio6h / 0.001"},
                 {"record": "r:ratio5m", "expr": "sum(rate(x[10s]))"}]
        windows = drill.recorded_windows(rules)
        self.assertEqual(windows, {"r:ratio6h": 360, "r:left": 360, "r:ratio5m": 10})
        self.assertEqual(drill.expr_window("r:left > 0 and r:ratio5m > 1", windows), 360)
        self.assertEqual(drill.expr_window("rate(z[2m]) > 1 and r:ratio5m > 1", windows), 120)

    def test_the_full_drill_must_prove_every_alert(self):
        names = ["FarolDown", "Watchdog", "SomethingNew"]
        row = jd.coverage_row(names, sc.for_run(quick=False), set())
        self.assertEqual(row.result, "FAIL")
        self.assertIn("SomethingNew", row.observed)
        self.assertEqual(jd.coverage_row(["FarolDown", "Watchdog"], sc.for_run(quick=False), set()).result, "ok")

    def test_the_quick_drill_proves_every_page(self):
        import monitoring_config as mc
        pages = {r["alert"] for r in mc.rules() if r.get("labels", {}).get("severity") == "page"}
        self.assertIn("FarolDown", pages)
        # fired, and so delivered: a signal notifies no one, an inhibited alert is held back
        quick = {a for s in sc.for_run(quick=True) for a in s.fire}
        self.assertEqual(pages - quick, set())

    def test_a_skip_excuses_only_the_alerts_of_the_skipped_scenario(self):
        full = sc.for_run(quick=False)
        excused = jd.coverage_row(["FarolDown", "HostDiskFillingUp", "Watchdog"], full, {"disk"})
        self.assertEqual(excused.result, "n/a")
        self.assertIn("HostDiskFillingUp", excused.observed)
        not_excused = jd.coverage_row(["HostDiskFillingUp", "SomethingNew", "Watchdog"], full, {"disk"})
        self.assertEqual(not_excused.result, "FAIL")
        self.assertIn("SomethingNew", not_excused.observed)


class JudgeQuietAndAllowed(unittest.TestCase):
    def test_quiet_alert_firing_in_the_window_fails(self):
        row = jd.judge(ERRORS, "PostgresDown", dict(MARKS), [Interval(130, 140)], [], [])
        self.assertEqual(row.result, "FAIL")

    def test_firing_outside_the_window_is_not_this_scenarios_business(self):
        row = jd.judge(ERRORS, "PostgresDown", dict(MARKS), [Interval(20, 40)], [], [])
        self.assertEqual((row.result, row.observed), ("ok", "quiet"))

    def test_allowed_alerts_are_reported_not_judged(self):
        row = jd.judge(ERRORS, "ErrorBudgetBurnSlow", dict(MARKS), [Interval(130, None)],
                          [notice(131, "ErrorBudgetBurnSlow")], [])
        self.assertEqual((row.result, row.observed, row.to_resolve), ("-", "fired", "still firing"))

    def test_every_scenario_judges_host_alerts_strictly_only_under_stress(self):
        for s in sc.SCENARIOS:
            kind, _ = s.expectation("HostDiskFillingUp")
            self.assertEqual(kind, "fire" if s.name == "disk" else "quiet", s.name)
        self.assertEqual(sc.BY_NAME["cpu"].expectation("HostHighMemoryUsage")[0], "quiet")


class Checks(unittest.TestCase):
    def test_watchdog_gap_longer_than_its_bound_fails(self):
        regular = [notice(t, "Watchdog") for t in range(0, 101, 4)]
        self.assertEqual(jd.watchdog_row(regular, 0, 100, every_s=4, eval_s=1).result, "ok")
        gap = [n for n in regular if not 40 < n.t < 70]
        row = jd.watchdog_row(gap, 0, 100, every_s=4, eval_s=1)
        self.assertEqual(row.result, "FAIL")
        self.assertIn("longest gap 32.0 s", row.observed)   # 40 -> 72
        self.assertEqual(jd.watchdog_row([], 0, 100, 4, 1).result, "FAIL")

    def test_a_frozen_machine_is_not_the_watchdog_s_gap_but_only_for_as_long_as_it_was_frozen(self):
        regular = [notice(t, "Watchdog") for t in range(0, 101, 4)]
        gap = [n for n in regular if not 40 < n.t < 70]         # 40 -> 72: 32 s
        frozen = jd.watchdog_row(gap, 0, 100, every_s=4, eval_s=1, stalls=[(45, 50), (52, 70)])
        self.assertEqual(frozen.result, "ok")                  # 32 - 23 = 9 s
        self.assertIn("longest gap 9.0 s (32.0 s, 23.0 s of it the machine frozen)", frozen.observed)
        partly = jd.watchdog_row(gap, 0, 100, every_s=4, eval_s=1, stalls=[(45, 50)])
        self.assertEqual(partly.result, "FAIL")                # 27 s left
        elsewhere = jd.watchdog_row(gap, 0, 100, every_s=4, eval_s=1, stalls=[(80, 99)])
        self.assertEqual(elsewhere.result, "FAIL")

    def test_a_refused_watchdog_is_left_out_of_its_gap_but_only_while_refused(self):
        regular = [notice(t, "Watchdog") for t in range(0, 101, 4)]
        gap = [n for n in regular if not 40 < n.t < 70]         # 40 -> 72: 32 s
        refused = jd.watchdog_row(gap, 0, 100, every_s=4, eval_s=1, stalls=[(42, 44)], refused=[(44, 66)])
        self.assertEqual(refused.result, "ok")                 # 32 - 2 - 22 = 8 s
        self.assertIn("longest gap 8.0 s (32.0 s, 2.0 s of it the machine frozen, "
                      "22.0 s of it refused by its receiver)", refused.observed)
        self.assertEqual(jd.watchdog_row(gap, 0, 100, every_s=4, eval_s=1, refused=[(44, 50)]).result, "FAIL")
        self.assertEqual(jd.watchdog_row(gap, 0, 100, every_s=4, eval_s=1, refused=[(75, 99)]).result, "FAIL")
        # time both frozen and refused is left out once: 32 - 22 = 10 s, not 32 - 44
        both = jd.watchdog_row(gap, 0, 100, every_s=4, eval_s=1, stalls=[(44, 66)], refused=[(44, 66)])
        self.assertEqual(both.result, "ok")
        self.assertIn("longest gap 10.0 s", both.observed)
        self.assertEqual(jd.watchdog_row(gap, 0, 100, every_s=4, eval_s=1, stalls=[(44, 54), (50, 60)],
                                         refused=[(52, 58)]).result, "FAIL")   # 16 s of 32 left out

    def test_health_must_answer_503_fast_and_recover_in_the_same_process(self):
        marks = dict(MARKS)
        extras = {"fault": {"pid": "7"}, "end": {"pid": "7"}}
        rec = [{"t": 111.0 + i, "health": 503, "health_ms": 3.0} for i in range(30)]
        rec.append({"t": 152.0, "health": 200, "health_ms": 4.0})
        self.assertEqual([r.result for r in jd.health_rows("4", marks, extras, rec, 2000)], ["ok", "ok"])
        slow = [dict(r, health_ms=2500.0) if r["t"] == 120.0 else r for r in rec]
        self.assertEqual(jd.health_rows("4", marks, extras, slow, 2000)[0].result, "FAIL")
        restarted = {"fault": {"pid": "7"}, "end": {"pid": "8"}}
        self.assertEqual(jd.health_rows("4", marks, restarted, rec, 2000)[1].result, "FAIL")

    def test_load_summary(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "load.log"
            path.write_text("Running 10s test\nDRILL_SUMMARY " + json.dumps(
                {"requests": 5000, "duration_us": 10_000_000, "status": 1000, "connect": 0,
                 "read": 3, "write": 0, "timeout": 0, "p99_ms": 12.0}) + "\n")
            self.assertEqual(jd.load_summary(path), "500 req/s, 20.0 % HTTP errors, 3 socket errors")


class Rows(unittest.TestCase):
    def test_a_stress_that_could_not_run_safely_says_so_and_is_not_a_pass(self):
        events = [{"t": 10.0, "event": "start", "scenario": "memory"},
                  {"t": 11.0, "event": "skip", "scenario": "memory",
                   "note": "88% used would leave 900 MiB available, below the safety floor of 1024 MiB"},
                  {"t": 12.0, "event": "end", "scenario": "memory"}]
        memory = [sc.BY_NAME["memory"]]
        rows = jd.build_rows(events, ["HostHighMemoryUsage", "HostHighCpuUsage"], {}, [], [], {}, 2000,
                             {"end": 20.0}, memory)
        self.assertEqual([(r.alert, r.result) for r in rows], [("(scenario)", "FAIL")])
        self.assertIn("COULD NOT RUN: 88% used would leave 900 MiB", rows[0].observed)
        # named in --skip: reported, not failed
        rows = jd.build_rows(events, ["HostHighMemoryUsage"], {}, [], [], {}, 2000, {"end": 20.0}, memory,
                             skips={"memory"})
        self.assertEqual([(r.alert, r.result) for r in rows], [("(scenario)", "n/a")])

    def test_a_scenario_that_never_started_fails(self):
        rows = jd.build_rows([], ["HostHighMemoryUsage"], {}, [], [], {}, 2000, {"end": 20.0},
                             [sc.BY_NAME["disk"]])
        self.assertEqual([(r.observed, r.result) for r in rows], [("NOT RUN", "FAIL")])

    def test_quiet_alerts_fold_into_one_row_and_fired_ones_come_first(self):
        events = [{"t": 100.0, "event": "start", "scenario": "errors"},
                  {"t": 110.0, "event": "fault", "scenario": "errors"},
                  {"t": 150.0, "event": "fix", "scenario": "errors"},
                  {"t": 200.0, "event": "end", "scenario": "errors"}]
        intervals = {"HttpHighErrorRate": [Interval(115, 160)], "ErrorBudgetBurnFast": [Interval(112, 170)],
                     "ErrorBudgetBurnSlow": [Interval(120, None)]}
        notices = [notice(116, "HttpHighErrorRate"), notice(163, "HttpHighErrorRate", "resolved"),
                   notice(113, "ErrorBudgetBurnFast"), notice(172, "ErrorBudgetBurnFast", "resolved")]
        names = ["ErrorBudgetBurnSlow", "PostgresDown", "HttpHighErrorRate", "ErrorBudgetBurnFast"]
        rows = jd.build_rows(events, names, intervals, notices, [], {"errors": "700 req/s"}, 2000,
                             {"end": 210.0}, [ERRORS])
        self.assertEqual([(r.alert, r.result) for r in rows],
                         [("HttpHighErrorRate", "ok"), ("ErrorBudgetBurnFast", "ok"),
                          ("ErrorBudgetBurnSlow", "-"), ("1 other alerts", "ok")])
        self.assertEqual(rows[0].load, "700 req/s")


class AdjustConfig(unittest.TestCase):
    def adjusted(self, jobs, work="/w/target/fire-drill"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "prometheus.yml"
            drill.mc.dump_yaml({"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                                "scrape_configs": jobs}, path, "test")
            changed = drill.adjust_config(path, work)
            return changed, drill.mc.load_yaml(path)

    def test_only_the_postgres_jobs_interval_and_timeout_rise(self):
        changed, doc = self.adjusted([{"job_name": "farol"}, {"job_name": "postgres"}, {"job_name": "node"}])
        self.assertEqual(len(changed), 2)
        self.assertEqual(doc["scrape_configs"][0], {"job_name": "farol"})
        self.assertEqual(doc["scrape_configs"][1],
                         {"job_name": "postgres", "scrape_timeout": "2s", "scrape_interval": "2s"})
        self.assertEqual(doc["global"], {"scrape_interval": "1s", "scrape_timeout": "1s"})

    def test_a_configuration_without_a_node_job_is_refused(self):
        with self.assertRaises(SystemExit):
            self.adjusted([{"job_name": "farol"}])

    @unittest.skipUnless(shutil.which("promtool"), "promtool is not installed")
    def test_prometheus_accepts_the_relabelling(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "prometheus.yml"
            drill.mc.dump_yaml({"scrape_configs": [{"job_name": "node", "static_configs": [
                {"targets": ["127.0.0.1:9100"]}]}]}, path, "test")
            drill.adjust_config(path, "/w/target/fire-drill")
            check = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_the_node_job_keeps_the_filesystems_of_the_drills_own_mounts_only(self):
        _, doc = self.adjusted([{"job_name": "node"}], work="/w/target/fire-drill")
        rules = doc["scrape_configs"][0]["metric_relabel_configs"]
        kept = [out for labels in (
            {"__name__": "node_filesystem_avail_bytes", "mountpoint": "/"},
            {"__name__": "node_filesystem_avail_bytes", "mountpoint": "/w/target/fire-drill/disk"},
            {"__name__": "node_filesystem_size_bytes", "mountpoint": "/w/target/fire-drill-other/disk"},
            {"__name__": "node_filesystem_readonly", "mountpoint": "/w/target/fire-drill/disk"},
            {"__name__": "node_cpu_seconds_total", "cpu": "0"},
        ) if (out := relabel(labels, rules)) is not None]
        self.assertEqual(kept, [
            {"__name__": "node_filesystem_avail_bytes", "mountpoint": "/w/target/fire-drill/disk"},
            {"__name__": "node_filesystem_readonly", "mountpoint": "/w/target/fire-drill/disk"},
            {"__name__": "node_cpu_seconds_total", "cpu": "0"},
        ])


def relabel(labels, rules):
    """Prometheus's relabelling for the actions the drill uses (replace, drop, labeldrop):
    the source labels joined by ';', the regex anchored at both ends."""
    labels = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace")
        if action == "labeldrop":
            labels = {k: v for k, v in labels.items() if not re.fullmatch(rule["regex"], k)}
            continue
        value = ";".join(labels.get(name, "") for name in rule["source_labels"])
        matched = re.fullmatch(rule["regex"], value)
        if action == "drop" and matched:
            return None
        if action == "replace" and matched:
            labels[rule["target_label"]] = matched.expand(rule["replacement"])
    return labels


class MemhogRefuses(unittest.TestCase):
    """Both cases are decided before anything is allocated."""

    def run_hog(self, used_share, floor):
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp) / "state.json"
            proc = subprocess.run([sys.executable, str(HERE / "memhog.py"), "--used-share", str(used_share),
                                   "--floor-bytes", str(floor), "--max-seconds", "10",
                                   "--state-file", str(state)], timeout=30)
            return proc.returncode, json.loads(state.read_text())

    def test_refuses_when_the_goal_would_leave_less_than_the_floor(self):
        code, state = self.run_hog(0.99, 1 << 40)
        self.assertEqual(code, 3)
        self.assertIn("below the safety floor", state["refused"])
        self.assertNotIn("crossed_at", state)

    def test_refuses_when_memory_is_already_past_the_goal(self):
        code, state = self.run_hog(0.0001, 0)
        self.assertEqual(code, 3)
        self.assertIn("already", state["refused"])


class WebhookRefusal(unittest.TestCase):
    """The receiver of scenario 7i: a listed path answered 503 and kept out of the notices."""

    def test_a_refused_path_answers_503_and_is_no_notice(self):
        with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()
            log, refuse = Path(tmp) / "webhook.jsonl", Path(tmp) / "refuse"
            refuse.write_text("/watchdog\n")
            receiver = subprocess.Popen(
                [sys.executable, str(Path(__file__).parent.parent / "webhook-receiver.py"), str(port), str(log)],
                env={"WEBHOOK_REFUSE_FILE": str(refuse), "PATH": "/usr/bin:/bin"})
            self.addCleanup(receiver.wait)
            self.addCleanup(receiver.terminate)

            def post(path):
                body = json.dumps({"alerts": [{"labels": {"alertname": path.strip("/")}, "status": "firing"}]})
                request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body.encode(), method="POST")
                for _ in range(50):
                    try:
                        with urllib.request.urlopen(request, timeout=2) as answer:
                            return answer.status
                    except urllib.error.HTTPError as e:
                        return e.code
                    except OSError:   # not listening yet
                        time.sleep(0.1)
                raise AssertionError("the webhook receiver did not start")
            self.assertEqual(post("/watchdog"), 503)
            self.assertEqual(post("/page"), 200)
            refuse.unlink()
            self.assertEqual(post("/watchdog"), 200)
            self.assertEqual([(n.path, n.alert) for n in drill.notices_of(log)],
                             [("/page", "page"), ("/watchdog", "watchdog")])
            self.assertEqual(sum('"refused":true' in line for line in log.read_text().splitlines()), 1)


if __name__ == "__main__":
    unittest.main()
