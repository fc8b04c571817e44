"""Tests of slo.py's settings: a period tile the rules cannot sum right stops the generator
with a message naming it (the rules and their promtool tests are checked by `make validate`)."""

import tempfile
import unittest
from pathlib import Path

import yaml

import slo


class PeriodTile(unittest.TestCase):
    def load_with(self, tile):
        settings = yaml.safe_load(slo.SETTINGS.read_text())
        settings["period_tile"] = tile
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "alerting.yml"
            path.write_text(yaml.safe_dump(settings))
            return slo.load_settings(path)

    def test_the_committed_tile_loads(self):
        self.assertEqual("1h", self.load_with("1h")["period_tile"])

    def test_a_tile_the_rules_cannot_sum_right_is_refused_by_name(self):
        for tile, why in [("7h", "does not divide"), ("30d", "does not divide"),
                          ("90s", "whole number"), ("30s", "whole number"),
                          ("5m", "guard window"), ("6h", "guard window")]:
            with self.subTest(tile=tile), self.assertRaises(SystemExit) as refused:
                self.load_with(tile)
            self.assertIn(f"period_tile {tile}", str(refused.exception))
            self.assertIn(why, str(refused.exception))


class SpecLabels(unittest.TestCase):
    def test_the_label_that_marks_the_current_tile_is_refused_by_name(self):
        for where, labelled in [("SLO requests-availability", lambda spec: spec["slos"][0]),
                                ("the spec's labels", lambda spec: spec)]:
            spec = yaml.safe_load(slo.SPEC.read_text())
            labelled(spec).setdefault("labels", {})[slo.CURRENT_TILE_LABEL] = "current"
            with self.subTest(where), tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "farol.yml"
                path.write_text(yaml.safe_dump(spec))
                with self.assertRaises(SystemExit) as refused:
                    slo.load_spec(path)
                self.assertIn(f"{where}: the label {slo.CURRENT_TILE_LABEL}", str(refused.exception))

    def test_an_sli_not_summed_by_namespace_and_job_is_refused_by_name(self):
        query = slo.load_yaml(slo.SPEC)["slos"][0]["sli"]["events"]["error_query"]
        for bad in [query.replace("by (namespace, job)", "by (namespace, job, http_route)"),
                    query + " / 2", "max" + query.removeprefix("sum")]:
            spec = yaml.safe_load(slo.SPEC.read_text())
            spec["slos"][0]["sli"]["events"]["error_query"] = bad
            with self.subTest(bad[-40:]), tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "farol.yml"
                path.write_text(yaml.safe_dump(spec))
                with self.assertRaises(SystemExit) as refused:
                    slo.load_spec(path)
                self.assertIn("error_query is not one `sum by (namespace, job)", str(refused.exception))

    def test_the_committed_spec_loads(self):
        self.assertTrue(slo.load_spec())


if __name__ == "__main__":
    unittest.main()
