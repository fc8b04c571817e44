"""`slo.py backfill-tiles` on a real Prometheus: six hours of raw request counters, no tiles;
the backfilled blocks moved into its data directory; then the generated period rule reads
those six hours, as monitoring/slo/README.md ("Backfilling the tiles") says it will."""

import json
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request
from pathlib import Path

import slo
from reliability.httpload import free_port

ROUTE = 'job="farol",namespace="backfill",http_route="/api/v1/notes",http_request_method="POST"'
REQUESTS_A_MINUTE = 600      # 10 a second
BAD_HOURS = 3                # the first three of six hours: 1 % of requests answer 500


def raw_counters(start, end):
    """OpenMetrics text (no space after a label's comma): a 201 and a 500 series, each with
    its count and its le="0.25" bucket (90 % of requests within it), a sample a minute from
    start to end."""
    series = {}
    counts = {"201": 0, "500": 0}
    for t in range(start, end + 1, 60):
        bad = 6 if t - start < BAD_HOURS * 3600 else 0
        counts["201"] += REQUESTS_A_MINUTE - bad
        counts["500"] += bad
        for code, count in counts.items():
            labels = f'{ROUTE},http_response_status_code="{code}"'
            series.setdefault("count", []).append(f"http_server_request_duration_seconds_count{{{labels}}} {count} {t}")
            series.setdefault("bucket", []).append(
                f'http_server_request_duration_seconds_bucket{{{labels},le="0.25"}} {count * 0.9} {t}')
    lines = []
    for suffix in ("count", "bucket"):
        lines.append(f"# TYPE http_server_request_duration_seconds_{suffix} gauge")
        lines += sorted(series[suffix], key=lambda line: (line.split("}")[0], int(line.split()[-1])))
    return "\n".join(lines) + "\n# EOF\n"


class Prometheus:
    """Prometheus on data_dir, its API on 127.0.0.1, no rules; scraping only itself, every
    second, if scrape_self (so that its head holds samples)."""

    def __init__(self, data_dir, work, scrape_self=False):
        config = work / "prometheus.yml"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        scrapes = (f"scrape_configs:\n  - job_name: self\n    scrape_interval: 1s\n"
                   f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n" if scrape_self else "")
        config.write_text("global: {}\n" + scrapes)
        with open(work / "prometheus.log", "a") as log:   # the child keeps its own copy
            self.process = subprocess.Popen(
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
                 "--storage.tsdb.retention.time=90d", f"--web.listen-address={self.url.removeprefix('http://')}"],
                stdout=log, stderr=subprocess.STDOUT)
        for _ in range(300):
            if self.process.poll() is not None:
                break
            try:
                urllib.request.urlopen(self.url + "/-/ready", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        log = (work / "prometheus.log").read_text().splitlines()[-5:]
        raise AssertionError(f"Prometheus on {data_dir} did not become ready:\n" + "\n".join(log))

    def query(self, expr, at):
        answer = json.load(urllib.request.urlopen(
            self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": at}), timeout=30))
        return [(row["metric"], float(row["value"][1])) for row in answer["data"]["result"]]

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def period_expr():
    """The generated period rule's expression, one per SLO, by SLO id."""
    rules = slo.load_yaml(slo.MONITORING / "prometheus/rules/slo.yml")
    return {rule["labels"]["sloth_id"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]
            if rule.get("record", "").startswith("slo:sli_error:ratio_rate") and "sum_over_time" in rule["expr"]}


class BackfillTiles(unittest.TestCase):
    def test_the_period_reads_the_backfilled_hours(self):
        for tool in ("prometheus", "promtool"):
            self.assertIsNotNone(shutil.which(tool), f"{tool} is needed: scripts/install-deps monitoring")
        end = int(time.time()) // 3600 * 3600 - 3600          # an hour boundary, an hour back
        start = end - 6 * 3600
        exprs = period_expr()
        self.assertEqual(len(exprs), 2, exprs)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "raw.om").write_text(raw_counters(start, end))
            subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(work / "raw.om"),
                            str(work / "data")], check=True, capture_output=True)

            prometheus = Prometheus(work / "data", work)
            try:
                before = {sid: prometheus.query(expr, end) for sid, expr in exprs.items()}
                backfill = ["backfill-tiles", f"--url={prometheus.url}", f"--start={start}", f"--end={end}"]
                slo.main([*backfill, f"--output-dir={work / 'out'}"])
                with self.assertRaises(SystemExit) as again:
                    slo.main([*backfill, f"--output-dir={work / 'out'}"])
                self.assertIn("already holds blocks", str(again.exception))
                with self.assertRaises(SystemExit) as empty:   # the hour before the raw series
                    slo.main(["backfill-tiles", f"--url={prometheus.url}", f"--start={start - 7200}",
                              f"--end={start - 3600}", f"--output-dir={work / 'empty'}"])
                self.assertIn("promtool wrote no block", str(empty.exception))
            finally:
                prometheus.stop()
            self.assertEqual(before, {sid: [] for sid in exprs}, "no tiles yet: the period reads nothing")

            blocks = list((work / "out/blocks").iterdir())
            self.assertTrue(blocks, "promtool wrote no block")
            for block in blocks:
                block.rename(work / "data" / block.name)
            prometheus = Prometheus(work / "data", work)
            try:
                after = {sid: prometheus.query(expr, end) for sid, expr in exprs.items()}
                tiles = prometheus.query('count by (sloth_id) (slo:sli_total:rate1h{owner="farol"})', end - 3600)
            finally:
                prometheus.stop()

        # the current hour and five whole hours, all of them backfilled: three of the six
        # hours at 1 % bad, so half of 1 %; 10 % of requests over 250 ms throughout
        for sid, share in (("farol-requests-availability", 0.005), ("farol-requests-latency", 0.1)):
            (labels, value), = after[sid]
            self.assertEqual(labels, {"namespace": "backfill", "job": "farol"}, sid)
            self.assertAlmostEqual(value, share, places=9, msg=sid)
        self.assertEqual(sorted((labels["sloth_id"], value) for labels, value in tiles),
                         [("farol-requests-availability", 1.0), ("farol-requests-latency", 1.0)],
                         "the tiles carry their rules' labels")

    def test_an_end_in_prometheus_s_head_is_refused(self):
        """Blocks reaching into the head make Prometheus drop its write-ahead log's older
        samples, of every series, at its next restart: an --end from the head's first
        sample on is refused, one before it reaches promtool."""
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            prometheus = Prometheus(work / "data", work, scrape_self=True)
            try:
                for _ in range(100):   # a few seconds of scrapes in the head
                    stats = json.load(urllib.request.urlopen(prometheus.url + "/api/v1/status/tsdb"))
                    head, last = (stats["data"]["headStats"][k] // 1000 for k in ("minTime", "maxTime"))
                    if stats["data"]["headStats"]["numSeries"] and last - head >= 3:
                        break
                    time.sleep(0.1)
                self.assertGreaterEqual(last - head, 3, "not 3 s of samples in the head after 10 s of scrapes")
                for end in (head + 1, head):
                    with self.subTest(end=end - head), self.assertRaises(SystemExit) as refused:
                        slo.backfill_tiles(prometheus.url, work / "out", None, str(end))
                    self.assertIn("reaches into what Prometheus", str(refused.exception))
                self.assertFalse((work / "out").exists(), "nothing written")
                with self.assertRaises(SystemExit) as before:   # no tile series in a self-scrape
                    slo.backfill_tiles(prometheus.url, work / "out", str(head - 3600), str(head - 1))
                self.assertIn("promtool wrote no block", str(before.exception))
            finally:
                prometheus.stop()

    def test_the_production_tiles_are_scoped_to_farol_s_namespace(self):
        rules = slo.live_tile_rules("production", "1h")
        self.assertEqual(sorted(r["record"] for r in rules),
                         ["slo:sli_error:rate1h"] * 2 + ["slo:sli_total:rate1h"] * 2)
        for rule in rules:
            self.assertEqual(rule["expr"].count('namespace="farol"'), rule["expr"].count("http_server_request"), rule)

    def test_times_are_unix_seconds_or_rfc3339_with_an_offset(self):
        self.assertEqual(slo.parse_time("1796601600"), 1796601600)
        self.assertEqual(slo.parse_time("1796601600.781"), 1796601600)
        self.assertEqual(slo.parse_time("2026-12-07T00:00:00Z"), 1796601600)
        self.assertEqual(slo.parse_time("2026-12-07T01:00:00+01:00"), 1796601600)
        for text, why in [("2026-12-07T00:00:00", "has no offset"), ("yesterday", "neither unix seconds")]:
            with self.subTest(text), self.assertRaises(SystemExit) as refused:
                slo.parse_time(text)
            self.assertIn(why, str(refused.exception))

    def test_a_start_not_before_the_end_is_refused(self):
        with tempfile.TemporaryDirectory() as tmp, self.assertRaises(SystemExit) as refused:
            slo.backfill_tiles("http://127.0.0.1:9", tmp, "2026-12-02T00:00:00Z", "2026-12-01T00:00:00Z")
        self.assertIn("is not before --end", str(refused.exception))


if __name__ == "__main__":
    unittest.main()
