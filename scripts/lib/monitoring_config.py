#!/usr/bin/env python3
"""Reads, checks and derives the monitoring configuration in monitoring/.

    monitoring_config.py drill OUT_DIR [--factor N] [--source DIR]
        The fire drill's variant of DIR (default: monitoring/): every duration of the rule
        files, prometheus.yml and alertmanager.yml divided by N (default 60), nothing else
        changed. OUT_DIR gets the layout of monitoring/ (prometheus/, alertmanager/,
        blackbox/), so scripts/stand-ins/monitoring-stack.sh can start from it as from the
        original.
    monitoring_config.py check-queries --prometheus URL [--source DIR] [--may-be-empty KEY]...
        Runs every PromQL expression of every rule and dashboard panel against a live
        Prometheus: each must parse, and each must return data unless its KEY is listed.
    monitoring_config.py check-runbooks [--write]
        Every alert (compose's and production's) has docs/runbooks/<alert>.md and every
        runbook an alert; every runbook_url (rules and their tests) is built from
        Cargo.toml's package.repository. --write rewrites the URLs that are not.
    monitoring_config.py check-dashboards
        The Grafana dashboards: JSON, units, variables, data source uids, threshold lines.
    monitoring_config.py check-static-files
        What cannot run here (Grafana provisioning, Loki, Alloy): syntax and references;
        and that Prometheus keeps as much history as the longest range a rule reads.
    monitoring_config.py records | alert-threshold ALERT
        The recording rules' names; the constant an alert compares against.
    monitoring_config.py check-rule-tests
        Every recording rule is compared in a unit test; every rule file has its tests.
    monitoring_config.py check-alert-coverage
        Every alert has a unit test that fires it, a runbook and a fire-drill scenario.
    monitoring_config.py check-inhibitions --alertmanager URL --scenario NAME|list
        Sends a scenario's alerts to a running Alertmanager (the real alertmanager.yml) and
        checks which of them it inhibits. The alerts carry the labels of each topology:
        compose's (prometheus.yml and its target files) and production's (the
        ServiceMonitor, PodMonitor and Probe of the production overlay).

Standard library and PyYAML only (scripts/stand-ins/monitoring-stack.sh finds a python3
that has it).
"""

import argparse
import contextlib
import json
import math
import re
import shlex
import shutil
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
MONITORING = REPO_ROOT / "monitoring"

# ---------------------------------------------------------------------------------------
# Durations, as Prometheus and Alertmanager write them: "1h30m", "5m", "0s", "250ms".

_UNITS_MS = [("y", 365 * 86_400_000), ("w", 7 * 86_400_000), ("d", 86_400_000),
             ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)]
_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_duration(text):
    """Milliseconds of a duration such as "1h30m"; ValueError if it is not one."""
    match = _DURATION.match(text)
    if not text or not match:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * ms for n, (_, ms) in zip(match.groups(), _UNITS_MS, strict=True) if n)


def format_duration(ms):
    """The shortest spelling of a duration, as Prometheus prints one ("1h12m", "0s")."""
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS_MS:
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts)


# ---------------------------------------------------------------------------------------
# Just enough of a PromQL lexer to find durations and the top-level structure of an
# expression, without being fooled by strings, label matchers or names such as
# job:farol_api_errors:ratio_rate30d (a recording rule's name is not a duration).

_TOKEN = re.compile(r"""
      (?P<ws>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?!\w))
    | (?P<variable>\$\w+|\$\{[^}]*\})
    | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w:]))
    | (?P<ident>[A-Za-z_:][\w:]*)
    | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=,@:])
    | (?P<open>[(\[{])
    | (?P<close>[)\]}])
""", re.VERBOSE)


def _tokens(expr):
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match:
            raise ValueError(f"cannot read PromQL at {pos}: {expr[pos:pos + 20]!r}")
        kind = match.lastgroup
        if kind not in ("ws", "comment"):
            yield kind, match.group(), match.start(), match.end()
        pos = match.end()


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
             "offset", "bool", "inf", "nan", "atan2",
             # aggregation operators, which may take their `by (...)` before the parenthesis
             "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
             "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def scope_selectors(expr, matcher):
    """expr with `matcher` (e.g. namespace="farol") added to every series selector: each
    metric name, with its label matchers if any. Function names, keywords, label names
    in by(...)/on(...) lists and inside braces, ranges and subquery steps in brackets, and
    strings are left alone. A selector it cannot scope safely stops it (ValueError): one
    without a metric name ({__name__=~"..."}), or one that already matches the label."""
    label = re.match(r"\s*(\w+)", matcher).group(1)
    tokens = list(_tokens(expr))
    inserts = []   # (position, text)
    depth_braces, depth_brackets, label_list = 0, 0, None
    for i, (kind, text, start, end) in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else (None, "", len(expr), len(expr))
        if text == "{":
            before = tokens[i - 1] if i else (None, "", 0, 0)
            if not depth_braces and (before[0] != "ident" or before[1].lower() in _KEYWORDS):
                raise ValueError(f"a selector without a metric name cannot be scoped: {expr[start:start + 40]!r}")
            depth_braces += 1
            continue
        if text == "}":
            depth_braces -= 1
            continue
        if depth_braces:
            if kind == "ident" and text == label and nxt[0] == "op":
                raise ValueError(f"a selector already matches {label}: {expr!r}")
            continue
        if text in ("[", "]"):
            depth_brackets += 1 if text == "[" else -1
            continue
        if depth_brackets:
            continue   # a range or a subquery's "[1h:30s]": no selector in there
        if label_list is not None:
            if text == "(":
                label_list += 1
            elif text == ")":
                label_list -= 1
                if label_list == 0:
                    label_list = None
            continue
        if kind != "ident":
            continue
        if text in _LABEL_LISTS:
            if nxt[1] == "(":
                label_list = 0
            continue
        if text.lower() in _KEYWORDS or nxt[1] == "(":
            continue   # a keyword or a function
        if nxt[1] == "{":
            # the matching "}" token: a brace inside a quoted label value is a string's
            close = next(t[2] for t in tokens[i + 2:] if t[1] == "}")
            inner = expr[nxt[3]:close].strip()
            inserts.append((close, (", " if inner else "") + matcher))
        else:
            inserts.append((end, "{" + matcher + "}"))
    for position, text in sorted(inserts, reverse=True):
        expr = expr[:position] + text + expr[position:]
    return expr


def promql_durations(expr):
    """(start, end, unit) of every duration in expr: range selectors and subqueries
    ("[5m]", "[1h:30s]") and offsets ("offset 5m"), unit "duration"; and the horizon of
    predict_linear(), a number of seconds ("24 * 3600"), unit "seconds"."""
    spans = []
    tokens = list(_tokens(expr))
    for i, (kind, text, _start, end) in enumerate(tokens):
        if text == "[":
            close = expr.index("]", end)
            inner = expr[end:close]
            offset = end
            for part in inner.split(":"):
                stripped = part.strip()
                if stripped:
                    begin = offset + part.index(stripped)
                    parse_duration(stripped)
                    spans.append((begin, begin + len(stripped), "duration"))
                offset += len(part) + 1
        elif kind == "ident" and text.lower() == "offset" and i + 1 < len(tokens):
            j = i + 1
            if tokens[j][1] == "-":
                j += 1
            parse_duration(tokens[j][1])
            spans.append((tokens[j][2], tokens[j][3], "duration"))
        elif kind == "ident" and text == "predict_linear" and i + 1 < len(tokens) and tokens[i + 1][1] == "(":
            depth, comma = 0, None
            for _, t, s, _ in tokens[i + 1:]:
                depth += t in "([{"
                depth -= t in ")]}"
                if t == "," and depth == 1:
                    comma = s
                if depth == 0:
                    horizon = expr[comma + 1:s] if comma is not None else ""
                    if constant_value(horizon.strip()) is not None:
                        begin = comma + 1 + horizon.index(horizon.strip())
                        spans.append((begin, begin + len(horizon.strip()), "seconds"))
                    break
    return sorted(spans)


def map_promql_durations(expr, fn):
    """expr with every duration d replaced by fn(d) (both as text; a number of seconds is
    handed to fn as a duration, and written back as seconds when fn returns one)."""
    for start, end, unit in reversed(promql_durations(expr)):
        text = expr[start:end]
        if unit == "seconds":
            replaced = fn(format_duration(round(constant_value(text) * 1000)))
            with contextlib.suppress(ValueError):   # not a duration (a placeholder): written as it is
                replaced = f"{parse_duration(replaced) / 1000:g}"
        else:
            replaced = fn(text)
        expr = expr[:start] + replaced + expr[end:]
    return expr


_COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
_SET_OPERATORS = {"and", "or", "unless"}
_MODIFIERS = re.compile(r"^\s*(?:bool\s+)?(?:(?:on|ignoring)\s*\([^)]*\)\s*)?"
                        r"(?:(?:group_left|group_right)\s*(?:\([^)]*\))?\s*)?")


def _top_level(expr):
    """Tokens of expr outside any bracket, with their positions."""
    depth = 0
    for kind, text, start, end in _tokens(expr):
        if kind == "open":
            depth += 1
        elif kind == "close":
            depth -= 1
        elif depth == 0:
            yield kind, text, start, end


def _unwrap(expr):
    """expr without parentheses that enclose all of it."""
    expr = expr.strip()
    while expr.startswith("("):
        depth = 0
        for kind, _text, start, _ in _tokens(expr):
            last = start   # the closing bracket's, or the last token's if none closes it
            if kind == "open":
                depth += 1
            elif kind == "close":
                depth -= 1
                if depth == 0:
                    break
        if last != len(expr) - 1:
            break
        expr = expr[1:-1].strip()
    return expr


def _split(expr, operators):
    parts, last = [], 0
    for _kind, text, start, end in _top_level(expr):
        if text in operators:
            parts.append((expr[last:start], text))
            last = end
    parts.append((expr[last:], None))
    return parts


def alert_signals(expr):
    """The measurements an alert's expression compares to its thresholds, with the
    thresholds: [(signal expression, [threshold expressions])]. `a > 0.8 and b == 0`
    gives [("a", ["0.8"]), ("b", ["0"])]; parenthesised operands are opened. Set
    operators bind more loosely than comparisons, so they are split first."""
    expr = _unwrap(_MODIFIERS.sub("", expr, count=1))
    operands = _split(expr, _SET_OPERATORS)
    if len(operands) > 1:
        return [signal for operand, _ in operands for signal in alert_signals(operand)]
    pieces = _split(expr, _COMPARISONS)
    if len(pieces) == 1:
        return [(expr, [])]
    signal = _unwrap(pieces[0][0])
    thresholds = [_unwrap(_MODIFIERS.sub("", piece, count=1)) for piece, _ in pieces[1:]]
    if len(_split(signal, _SET_OPERATORS)) > 1:
        return alert_signals(signal)
    return [(signal, thresholds)]


def constant_value(expr):
    """The number a constant PromQL expression such as "(14.4 * (1 - 0.999))" stands
    for, or None when it is not made of numbers and arithmetic only."""
    if not re.fullmatch(r"[\d.eE+\-*/() ]+", expr):
        return None
    try:
        return float(eval(expr, {"__builtins__": {}}, {}))  # only digits and operators
    except (SyntaxError, ZeroDivisionError, TypeError):
        return None


# ---------------------------------------------------------------------------------------
# The configuration files, and the durations in them.

# Keys whose values are durations, per kind of file. Rule expressions are read with the
# PromQL lexer above.
_DURATION_KEYS = {
    "prometheus": {"scrape_interval", "scrape_timeout", "evaluation_interval",
                   "refresh_interval", "timeout"},
    "alertmanager": {"group_wait", "group_interval", "repeat_interval", "resolve_timeout"},
    "rules": {"interval", "for", "keep_firing_for"},
}


def map_durations(node, kind, fn, path=()):
    """A copy of a loaded YAML document with every duration d replaced by
    fn(d, role, path), role being "interval" (how often, how long to wait) or "window"
    (a PromQL range or offset)."""
    if isinstance(node, dict):
        result = {}
        for key, value in node.items():
            here = path + (key,)
            if key in _DURATION_KEYS[kind] and isinstance(value, str):
                result[key] = fn(value, "interval", here)
            elif kind == "rules" and key == "expr" and isinstance(value, str):
                result[key] = map_promql_durations(value, lambda d, here=here: fn(d, "window", here))
            else:
                result[key] = map_durations(value, kind, fn, here)
        return result
    if isinstance(node, list):
        return [map_durations(item, kind, fn, path + (i,)) for i, item in enumerate(node)]
    return node


def config_files(source):
    """(kind, path relative to source) of every file with durations in a monitoring/-shaped
    directory."""
    source = Path(source)
    files = [("prometheus", Path("prometheus/prometheus.yml")),
             ("alertmanager", Path("alertmanager/alertmanager.yml"))]
    files += [("rules", p.relative_to(source)) for p in sorted((source / "prometheus/rules").glob("*.yml"))]
    return files


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def yaml_text(doc, header):
    """DOC as YAML, HEADER's lines as comments above it."""
    text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return "".join(f"# {line}\n" for line in header.splitlines()) + text


def dump_yaml(doc, path, header):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml_text(doc, header))


# ---------------------------------------------------------------------------------------
# drill

INTERVAL_FLOOR_MS = 1000     # no scrape, evaluation or wait below a second
WINDOWS_PER_SCRAPE = 4       # a range keeps at least four scrapes: rate() needs two
# Alertmanager's group_wait keeps at least three evaluations. Production does not need
# it: there an inhibiting alert fires first by a minute of `for:` or more (FarolDown 1m,
# the alerts it inhibits 2m; PostgresPrimaryUnreachable has no `for:`), far more than a
# scrape can delay it. Shrunk, that minute is two seconds, no longer more than the delays
# that do not shrink (1 s scrapes and evaluations), and the inhibited alert may fire a
# moment first: a group_wait of three evaluations gives the inhibitor, in a new
# notification group, the seconds production's `for:` gap gives it. It makes the drill
# more forgiving than production on exactly that order, which the rule tests (and the
# `for:` durations) carry instead. A group still open from an earlier firing (Prometheus
# re-sends a resolved alert for 15 minutes) has no group_wait: it notifies at its next
# tick, which is why the database's inhibitions start from a signal without a `for:`.
GROUP_WAIT_EVALUATIONS = 3


def drill_shrinker(factor, window_floor_ms, group_wait_floor_ms=INTERVAL_FLOOR_MS):
    """fn for map_durations: divide by factor, rounded to whole seconds, never below the
    floor of its role (a group_wait's own), never longer than the original, zero staying
    zero."""
    def shrink(text, role, path):
        ms = parse_duration(text)
        if ms == 0:
            return text
        floor = window_floor_ms if role == "window" else INTERVAL_FLOOR_MS
        if path and path[-1] == "group_wait":
            floor = max(floor, group_wait_floor_ms)
        scaled = round(ms / factor / 1000) * 1000
        return format_duration(min(ms, max(floor, scaled)))
    return shrink


def drill(out_dir, source, factor):
    source, out_dir = Path(source), Path(out_dir)
    if factor <= 1:
        raise SystemExit("--factor must be greater than 1")
    prometheus = load_yaml(source / "prometheus/prometheus.yml")
    scrape_ms = parse_duration(prometheus.get("global", {}).get("scrape_interval", "1m"))
    drill_scrape_ms = max(INTERVAL_FLOOR_MS, round(scrape_ms / factor / 1000) * 1000)
    evaluation_ms = parse_duration(prometheus.get("global", {}).get("evaluation_interval", "1m"))
    drill_evaluation_ms = max(INTERVAL_FLOOR_MS, round(evaluation_ms / factor / 1000) * 1000)
    shrink = drill_shrinker(factor, WINDOWS_PER_SCRAPE * drill_scrape_ms,
                            GROUP_WAIT_EVALUATIONS * drill_evaluation_ms)
    for kind, rel in config_files(source):
        doc = map_durations(load_yaml(source / rel), kind, shrink)
        dump_yaml(doc, out_dir / rel,
                  f"Generated by scripts/drill-config --factor {factor} from monitoring/{rel}:\n"
                  "every duration divided, nothing else changed. Do not edit; regenerate.")
    # Files without durations come along unchanged, so that out_dir is complete.
    for rel in ("prometheus/targets", "blackbox"):
        if (source / rel).is_dir():
            shutil.copytree(source / rel, out_dir / rel, dirs_exist_ok=True)
    print(f"drill configuration (durations / {factor}) written to {out_dir}")


# ---------------------------------------------------------------------------------------
# The PromQL expressions of the rules and dashboards

def rules(source=MONITORING, folder="rules"):
    """Every rule of the rule files: dicts with file, group and the rule's own keys. The
    folder is compose's rules/ (what Prometheus loads here) or production/ (the alerts
    that only the production PrometheusRule has)."""
    for path in sorted((Path(source) / "prometheus" / folder).glob("*.yml")):
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                yield {"file": path.name, "group": group["name"], **rule}


def dashboards(source=MONITORING):
    for path in sorted((Path(source) / "grafana/dashboards").glob("*.json")):
        with open(path) as f:
            yield path, json.load(f)


def panels(dashboard):
    """Every panel, also those folded into rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_variables(dashboard):
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def panel_datasource_type(panel, target):
    ds = target.get("datasource") or panel.get("datasource") or {}
    return ds.get("type") if isinstance(ds, dict) else None


# ---------------------------------------------------------------------------------------
# check-queries

class Prometheus:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def get(self, path, **params):
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:
            body = json.load(err)
        if body.get("status") != "success":
            raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr):
        return self.get("/api/v1/query", query=expr)["result"]

    def label_values(self, label, match):
        return self.get(f"/api/v1/label/{label}/values", **{"match[]": match})


def _grafana_variable_values(prom, dashboard):
    """Each query variable of a dashboard resolved to its first value, in order (later
    variables may use earlier ones), as a dashboard would show it by default."""
    values = {}
    for name, var in dashboard_variables(dashboard).items():
        if var.get("type") != "query":
            continue
        definition = var.get("definition") or var.get("query", {}).get("query", "")
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", definition.strip())
        if not match:
            raise ValueError(f"variable {name}: only label_values(selector, label) is supported")
        selector = _substitute(match.group(1), values)
        found = prom.label_values(match.group(2), selector)
        if not found:
            raise ValueError(f"variable {name}: {definition} has no values")
        values[name] = sorted(found)[0]
    return values


def _substitute(expr, values):
    """A panel's expression as Grafana sends it: its variables filled in."""
    builtins = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
    def fill(match):
        name = match.group(1) or match.group(2)
        if name in builtins:
            return builtins[name]
        if name not in values:
            return match.group(0)
        # escaped for the regex matcher, then for the PromQL string around it, as
        # Grafana's Prometheus data source does
        return re.escape(values[name]).replace("\\", "\\\\")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", fill, expr)


# What the alerting depends on across jobs, checked on the live data: the blackbox probe of
# /health carries the instance label of farol's own scrape target, so that Alertmanager's
# FarolDown inhibition (equal: instance) silences the probe's alert. (key, expr, data?)
INVARIANTS = [
    ("invariant:probe-instance-is-farol-target",
     'probe_success{job="farol-health"} and on (instance) up{job="farol"}', True),
    ("invariant:no-probe-without-farol-target",
     'probe_success{job="farol-health"} unless on (instance) up{job="farol"}', False),
    # the labels Alertmanager's inhibitions compare are on the live series
    ("invariant:farol-and-database-series-carry-namespace",
     'up{job=~"farol|farol-health|postgres", namespace=""}', False),
    ("invariant:database-series-carry-role", 'pg_up{role=""}', False),
    ("invariant:farol-and-its-database-share-a-namespace",
     'count by (namespace) (up{job="farol"}) and on (namespace) count by (namespace) (pg_up{role="primary"})', True),
]


def check_queries(prometheus_url, source, may_be_empty):
    prom = Prometheus(prometheus_url)
    checks = []   # (key, where, expr, must_have_data)
    all_rules = list(rules(source))
    names = [r.get("alert") for r in all_rules]
    for rule in all_rules:
        name = rule.get("record") or rule["alert"]
        if names.count(name) > 1:   # one alert, one rule per severity: keys name both
            name = f"{name}[{rule.get('labels', {}).get('severity')}]"
        if "sloth_id" in rule.get("labels", {}):   # one record per SLO: keys name the SLO
            name = f"{name}[{rule['labels']['sloth_id']}]"
        if "record" in rule:
            checks.append((f"record:{name}", f"{rule['file']}", rule["expr"], True))
            continue
        checks.append((f"alert:{name}", f"{rule['file']}", rule["expr"], False))
        for i, (signal, _) in enumerate(alert_signals(rule["expr"]), 1):
            checks.append((f"signal:{name}:{i}", f"{rule['file']}", signal, True))
    for path, dashboard in dashboards(source):
        values = _grafana_variable_values(prom, dashboard)
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                if panel_datasource_type(panel, target) != "prometheus" or not target.get("expr"):
                    continue
                key = f"panel:{dashboard['uid']}:{panel['title']}:{target.get('refId', 'A')}"
                checks.append((key, path.name, _substitute(target["expr"], values), True))
    # the runbooks' queries must parse and run; on a healthy run most have nothing to show
    for path, number, expr in runbook_queries():
        checks.append((f"runbook:{path.stem}:{number}", path.name, expr, False))
    unknown = set(may_be_empty) - {key for key, *_ in checks}
    failures = 0
    rows = []
    for key, where, expr, must in checks:
        must = must and key not in may_be_empty
        try:
            result = prom.query(expr)
            if result:
                status = f"ok, {len(result)} series"
            elif must:
                status, failures = "FAILED: no data", failures + 1
            else:
                status = "ok, empty (allowed)"
        except ValueError as err:
            status, failures = f"FAILED: {err}", failures + 1
        rows.append((key, where, status))
    for key, expr, want_data in INVARIANTS:
        result = prom.query(expr)
        if bool(result) == want_data:
            status = f"ok, {len(result)} series" if result else "ok, empty"
        else:
            status, failures = f"FAILED: {'no data' if want_data else result}", failures + 1
        rows.append((key, "prometheus.yml", status))
    width = max(len(k) for k, *_ in rows)
    print(f"{'query':<{width}}  {'file':<22} result")
    for key, where, status in rows:
        print(f"{key:<{width}}  {where:<22} {status}")
    for key in sorted(unknown):
        print(f"stale entry in the may-be-empty list: {key}")
    print(f"\n{len(rows) - failures} passed, {failures + len(unknown)} failed")
    return 1 if failures or unknown else 0


def runbook_queries():
    """The PromQL of the runbooks: every line of their ```promql blocks is one query.
    [(path, number within the runbook, expression)]"""
    queries = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        lines = [line.strip() for block in re.findall(r"^\s*```promql\n(.*?)^\s*```", path.read_text(), re.M | re.S)
                 for line in block.splitlines()]
        queries += [(path, n, expr) for n, expr in enumerate((line for line in lines if line), 1)]
    return queries


# ---------------------------------------------------------------------------------------
# check-runbooks

RUNBOOKS = REPO_ROOT / "docs/runbooks"
RUNBOOK_SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation")
# page: wakes someone; ticket: working hours; none: an inhibit-only signal that notifies
# no one (alertmanager.yml routes it to a receiver without configurations).
SEVERITIES = ("page", "ticket", "none")


def runbook_base():
    """The one place the repository URL is set: Cargo.toml's package.repository."""
    with open(REPO_ROOT / "Cargo.toml", "rb") as f:
        repository = tomllib.load(f).get("package", {}).get("repository")
    if not repository:
        raise SystemExit("Cargo.toml has no package.repository: the runbook URLs are built from it")
    return repository.rstrip("/") + "/blob/main/docs/runbooks"


def check_runbooks(write):
    base = runbook_base()
    problems = []
    alerts = {r["alert"]: r for r in [*rules(), *rules(folder="production")] if "alert" in r}
    for name, rule in alerts.items():
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not annotations.get(key):
                problems.append(f"alert {name} has no {key}")
        if rule.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"alert {name}: severity must be one of {', '.join(SEVERITIES)}")
        runbook = RUNBOOKS / f"{name}.md"
        if not runbook.is_file():
            problems.append(f"alert {name} has no runbook docs/runbooks/{name}.md")
        else:
            headings = re.findall(r"^## (.+?)\s*$", runbook.read_text(), re.M)
            if headings != list(RUNBOOK_SECTIONS):
                problems.append(f"docs/runbooks/{name}.md: sections {headings}, expected {list(RUNBOOK_SECTIONS)}")
    for path in sorted(RUNBOOKS.glob("*.md")):
        if path.stem not in alerts:
            problems.append(f"runbook {path.relative_to(REPO_ROOT)} has no alert")
    # runbook_url lines, in the rule files and the expectations of their tests: each
    # belongs to the alert named last before it.
    stale = 0
    for path in sorted((MONITORING / "prometheus").glob("*/*.yml")):
        lines = path.read_text().splitlines(keepends=True)
        alert = None
        for i, line in enumerate(lines):
            named = re.match(r"\s*-?\s*(?:alert|alertname):\s*(\w+)", line)
            if named:
                alert = named.group(1)
            url = re.match(r"(\s*runbook_url:\s*)(\S.*?)\s*$", line)
            if url:
                want = f"{base}/{alert}.md"
                if url.group(2).strip("\"'") != want:
                    stale += 1
                    if write:
                        lines[i] = f"{url.group(1)}{want}\n"
                    else:
                        problems.append(f"{path.relative_to(REPO_ROOT)}:{i + 1}: runbook_url is not {want}")
        if write:
            path.write_text("".join(lines))
    if write and stale:
        print(f"rewrote {stale} runbook_url lines from {base}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("(scripts/lib/monitoring_config.py check-runbooks --write rewrites the URLs)", file=sys.stderr)
        return 1
    print(f"{len(alerts)} alerts, each with its runbook and a runbook_url under {base}")
    return 0


# ---------------------------------------------------------------------------------------
# check-rule-tests

def check_rule_tests():
    """Every recording rule is compared in a unit test, and every rule file has its test
    file (that every alert fires in one is check_alert_coverage's)."""
    tests_dir = MONITORING / "prometheus/tests"
    compared, tested_files = set(), set()
    for path in sorted(tests_dir.glob("*.yml")):
        doc = load_yaml(path)
        tested_files.update(Path(f).name for f in doc.get("rule_files", []))
        for test in doc.get("tests", []):
            for case in test.get("promql_expr_test", []):
                compared.update(re.findall(r"[A-Za-z_:][\w:]*", case["expr"]))
    problems = []
    for path in sorted((MONITORING / "prometheus/rules").glob("*.yml")):
        if path.name not in tested_files:
            problems.append(f"rules/{path.name} has no test file in tests/")
    all_rules = list(rules())
    for rule in all_rules:
        if "record" in rule and rule["record"] not in compared:
            problems.append(f"recording rule {rule['record']} is compared in no test")
    problems += check_target_alerts(all_rules)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        records = sum("record" in rule for rule in all_rules)
        print(f"{records} recording rules, each compared in a unit test; ScrapeJobAbsent watches every scrape job")
    return 1 if problems else 0


def check_alert_coverage():
    """Every alert has the three proofs: a unit test in which it fires, a runbook, and a
    scenario of the full fire drill that fires, holds back or inhibits it (the Watchdog
    is judged over the whole drill instead). A new alert without one fails here."""
    from fire_drill import scenarios as sc

    tested = set()
    for path in sorted((MONITORING / "prometheus/tests").glob("*.yml")):
        for test in load_yaml(path).get("tests", []):
            tested.update(c["alertname"] for c in test.get("alert_rule_test", []) if c.get("exp_alerts"))
    drilled = {a for s in sc.for_run(quick=False) for a in s.watched()} | {"Watchdog"}
    alerts = sorted({r["alert"] for r in rules() if "alert" in r})
    problems = []
    for alert in alerts:
        missing = [what for what, ok in (("a unit test that fires it", alert in tested),
                                         (f"docs/runbooks/{alert}.md", (RUNBOOKS / f"{alert}.md").is_file()),
                                         ("a fire-drill scenario", alert in drilled)) if not ok]
        if missing:
            problems.append(f"alert {alert} lacks {', '.join(missing)}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{len(alerts)} alerts, each with a unit test, a runbook and a fire-drill scenario")
    return 1 if problems else 0


def check_target_alerts(all_rules):
    """ScrapeJobAbsent watches exactly the scrape jobs of prometheus.yml."""
    jobs = {job["job_name"] for job in load_yaml(MONITORING / "prometheus/prometheus.yml")["scrape_configs"]}
    absent = next((r for r in all_rules if r.get("alert") == "ScrapeJobAbsent"), None)
    if absent is None:
        return ["no ScrapeJobAbsent alert: a job without targets would go unnoticed"]
    watched = set(re.findall(r'absent\(up\{job="([^"]+)"\}\)', absent["expr"]))
    if watched != jobs:
        return [f"ScrapeJobAbsent watches {sorted(watched)}, prometheus.yml scrapes {sorted(jobs)}"]
    return []


# ---------------------------------------------------------------------------------------
# check-inhibitions: the inhibit_rules of alertmanager.yml, on a running Alertmanager

# The label sets of each topology, read from the files that make them, and the alerts of
# each scenario built from them with the labels the rules keep (an aggregation keeps only
# its `by` labels, a plain comparison every label of the series).

def compose_targets():
    """{job: labels of its one target} in compose: prometheus.yml's jobs and the labels of
    their target files (the probe job reads farol's and keeps its address as instance)."""
    prom = load_yaml(MONITORING / "prometheus/prometheus.yml")
    targets = {}
    for job in prom["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            for path in sd["files"]:
                for group in load_yaml(MONITORING / "prometheus" / path) or []:
                    targets[job["job_name"]] = {"job": job["job_name"], "instance": group["targets"][0],
                                                **group.get("labels", {})}
    return targets


def production_targets():
    """{job: labels} that the production overlay's ServiceMonitor, PodMonitors and Probe
    give their series (deploy/k8s/overlays/production/monitoring.yaml, the base's
    namespace): the operator adds namespace, pod, service, endpoint and container; the
    relabelings and static labels of the manifests add the rest."""
    deploy = REPO_ROOT / "deploy/k8s"
    namespace = load_yaml(deploy / "base/kustomization.yaml")["namespace"]
    manifests = [d for d in yaml.safe_load_all((deploy / "overlays/production/monitoring.yaml").read_text()) if d]
    docs = {d["kind"]: d for d in manifests if d["kind"] != "PodMonitor"}
    # the database's instances and the Pooler's PgBouncers, told apart by what they select
    pod_monitors = {}
    for monitor in (d for d in manifests if d["kind"] == "PodMonitor"):
        role = "pooler" if "cnpg.io/poolerName" in monitor["spec"]["selector"].get("matchLabels", {}) else "database"
        if role in pod_monitors:
            raise SystemExit(f"monitoring.yaml: two PodMonitors for the {role}; the inhibition and target "
                             "checks expect one each")
        pod_monitors[role] = monitor
    if set(pod_monitors) != {"database", "pooler"}:
        raise SystemExit(f"monitoring.yaml: PodMonitors for {sorted(pod_monitors)}, expected the database's "
                         "and the pooler's")

    def relabelings(monitor):
        return monitor["spec"]["podMetricsEndpoints"][0].get("relabelings", [])

    def job_of(monitor):
        """The job label a PodMonitor's relabelings give, else the operator's default."""
        job = {r["targetLabel"]: r.get("replacement") for r in relabelings(monitor)}.get("job")
        return job or f"{namespace}/{monitor['metadata']['name']}"

    database = pod_monitors["database"]
    relabel = {r["targetLabel"]: r.get("replacement") for r in relabelings(database)}
    # `role` must come from the pod labels CloudNativePG sets, or no series has it
    role_sources = {src for r in relabelings(database) if r["targetLabel"] == "role"
                    for src in r.get("sourceLabels", [])}
    if role_sources and not role_sources <= {"__meta_kubernetes_pod_label_role",
                                             "__meta_kubernetes_pod_label_cnpg_io_instanceRole"}:
        raise SystemExit(f"the PodMonitor's role relabeling reads {sorted(role_sources)},"
                         " not CloudNativePG's pod labels")
    probe = docs["Probe"]["spec"]
    return {
        "farol": {"job": "farol", "namespace": namespace, "instance": "10.1.0.11:9464", "pod": "farol-7d9f-a",
                  "service": "farol-metrics", "endpoint": "metrics", "container": "farol"},
        "postgres": {"job": job_of(database),
                     "namespace": namespace, "instance": "10.1.0.21:9187", "pod": "farol-db-1",
                     "container": "postgres", "endpoint": "metrics",
                     **({"role": "primary"} if "role" in relabel else {})},
        "pgbouncer": {"job": job_of(pod_monitors["pooler"]), "namespace": namespace,
                      "instance": "10.1.0.31:9127", "pod": "farol-db-pooler-rw-5c8d-a",
                      "container": "pgbouncer", "endpoint": "metrics"},
        # the operator labels a static target with the Probe's namespace
        "farol-health": {"job": probe["jobName"], "instance": probe["targets"]["staticConfig"]["static"][0],
                         "namespace": namespace, **probe["targets"]["staticConfig"].get("labels", {})},
    }


def _keep(labels, *names):
    return {k: v for k, v in labels.items() if k in names}


def _alert(name, severity, labels):
    return {"alertname": name, "severity": severity, **labels}


def inhibition_scenarios():
    """{scenario: [(alert labels, inhibited?)]} for both topologies."""
    scenarios = {}
    for topology, targets in (("compose", compose_targets()), ("production", production_targets())):
        farol, probe, pg = targets["farol"], targets["farol-health"], targets["postgres"]
        other_pod = {**farol, "instance": "10.1.0.12:9464", "pod": "farol-7d9f-b"}
        per_instance = lambda name, t: _alert(name, "page", _keep(t, "namespace", "job", "instance"))  # noqa: E731
        job_level = lambda name, sev, farol=farol: _alert(name, sev, _keep(farol, "namespace", "job"))  # noqa: E731
        health = _alert("FarolHealthCheckFailing", "page", probe)
        budget_fast, budget_slow = job_level("ErrorBudgetBurnFast", "page"), job_level("ErrorBudgetBurnSlow", "ticket")
        slo_tier = lambda name, sev, tier, slo, level=job_level: {  # noqa: E731
            **level(name, sev), "burnrate_tier": tier, "sloth_id": slo}
        scenarios[f"{topology}: one farol instance down"] = [
            (_alert("FarolDown", "page", farol), False),
            (per_instance("HttpHighErrorRate", farol), True),
            (per_instance("HttpHighLatency", farol), True),
            # its own probe (compose: the probe's instance is the target's address)
            (health, topology == "compose"),
            # another instance, and the service's budget: one pod down explains neither
            (per_instance("HttpHighErrorRate", other_pod), False),
            (budget_fast, False),
            (budget_slow, False),
            (_alert("Watchdog", "ticket", {}), False),
        ]
        scenarios[f"{topology}: every farol instance down"] = [
            (_alert("FarolDown", "page", farol), False),
            (_alert("FarolDown", "page", other_pod), False),
            (job_level("FarolAllInstancesDown", "none"), False),
            (health, True),
            (budget_fast, True),
            (budget_slow, True),
            (per_instance("HttpHighLatency", other_pod), True),
            (_alert("PostgresDown", "page", pg), False),
        ]
        primary = {**pg, "role": "primary"}
        scenarios[f"{topology}: farol's primary down"] = [
            (_alert("PostgresPrimaryUnreachable", "none", primary), False),
            (_alert("PostgresDown", "page", primary), False),
            (health, True),
            (per_instance("HttpHighErrorRate", farol), True),
            (budget_fast, True),
            # a primary that does not answer: every 503 waits for the connect timeout
            (job_level("LatencyBudgetBurnFast", "page"), True),
            (job_level("LatencyBudgetBurnSlow", "ticket"), False),
            # not explained by the database: slow answers, a farol down, a budget spent
            (per_instance("HttpHighLatency", farol), False),
            (_alert("FarolDown", "page", other_pod), False),
            (budget_slow, False),
            (_alert("PostgresTooManyConnections", "ticket", primary), False),
            # its rule waits the outage out itself (rules/farol.yml): no inhibition
            (_alert("FarolStatementsLeftRunning", "ticket", _keep(farol, "namespace", "job", "instance")), False),
        ]
        # the minute before the page: the signal alone holds them back
        scenarios[f"{topology}: farol's primary unreachable, not yet paged"] = [
            (_alert("PostgresPrimaryUnreachable", "none", primary), False),
            (health, True),
            (per_instance("HttpHighErrorRate", farol), True),
            (budget_fast, True),
            (job_level("LatencyBudgetBurnFast", "page"), True),
        ]
        # back, in the page's last minute (keep_firing_for): the probe catching up
        scenarios[f"{topology}: farol's primary back, its page's last minute"] = [
            (_alert("PostgresDown", "page", primary), False),
            (_alert("PostgresPrimaryRecentlyDown", "none", _keep(pg, "namespace")), False),
            (health, True),
            (per_instance("HttpHighErrorRate", farol), True),
        ]
        scenarios[f"{topology}: after the primary's outage"] = [
            (_alert("PostgresPrimaryRecentlyDown", "none", _keep(pg, "namespace")), False),
            (per_instance("HttpHighErrorRate", farol), True),
            (budget_fast, True),
            (job_level("LatencyBudgetBurnFast", "page"), True),
            # not windowed: a failing probe now is a new problem
            (health, False),
            (budget_slow, False),
        ]
        scenarios[f"{topology}: a replica or another team's database down"] = [
            (_alert("PostgresDown", "ticket", {**pg, "role": "replica", "instance": "10.1.0.22:9187"}), False),
            (_alert("PostgresDown", "page", {**pg, "role": "primary", "namespace": "billing"}), False),
            (_alert("PostgresPrimaryUnreachable", "none", {**pg, "role": "primary", "namespace": "billing"}), False),
            (_alert("PostgresPrimaryRecentlyDown", "none", {"namespace": "billing"}), False),
            # a replica down explains no standby count: another may have stopped streaming
            (_alert("PostgresReplicationBroken", "page", _keep(pg, "namespace")), False),
            (health, False),
            (per_instance("HttpHighErrorRate", farol), False),
            (budget_fast, False),
        ]
        availability, latency = "farol-requests-availability", "farol-requests-latency"
        scenarios[f"{topology}: an SLO burning fast"] = [
            (slo_tier("ErrorBudgetBurnFast", "page", "fast", availability), False),
            (slo_tier("ErrorBudgetBurnSlow", "ticket", "slow", availability), True),
            # another SLO's slow tier, and the same SLO in another namespace: not explained
            (slo_tier("LatencyBudgetBurnSlow", "ticket", "slow", latency), False),
            ({**slo_tier("ErrorBudgetBurnSlow", "ticket", "slow", availability), "namespace": "billing"}, False),
        ]
        scenarios[f"{topology}: every farol instance down, SLO tiers firing"] = [
            (job_level("FarolAllInstancesDown", "none"), False),
            (slo_tier("LatencyBudgetBurnFast", "page", "fast", latency), True),
            (slo_tier("LatencyBudgetBurnSlow", "ticket", "slow", latency), True),
        ]
        if topology == "production":
            claim = lambda sev, name, ns=pg["namespace"]: _alert(  # noqa: E731
                "PostgresVolumeFillingUp", sev, {"namespace": ns, "persistentvolumeclaim": name})
            scenarios[f"{topology}: a database volume filling"] = [
                (claim("page", "farol-db-1"), False),
                (claim("ticket", "farol-db-1"), True),
                # another claim, and the same claim in another namespace: not explained
                (claim("ticket", "farol-db-2"), False),
                (claim("ticket", "farol-db-1", "billing"), False),
                (_alert("PostgresVolumeStatsMissing", "ticket", _keep(pg, "namespace")), False),
            ]
        # the server's archiving failing: its stall is held back, another server's is not
        scenarios[f"{topology}: WAL archiving failing"] = [
            (_alert("PostgresWalArchivingFailing", "ticket", primary), False),
            (_alert("PostgresWalArchivingStalled", "ticket", primary), True),
            (_alert("PostgresWalArchivingStalled", "ticket", {**pg, "role": "replica", "instance": "10.1.0.22:9187"}),
             False),
            (_alert("PostgresWalArchivingStalled", "ticket", {**primary, "namespace": "billing"}), False),
            (_alert("PostgresWalArchivingStalled", "ticket", {**primary, "job": "postgres-billing"}), False),
            # an alert of that name that is no ticket (routed to no one) holds nothing back
            (_alert("PostgresWalArchivingFailing", "none", {**primary, "instance": "10.1.0.23:9187"}), False),
            (_alert("PostgresWalArchivingStalled", "ticket", {**primary, "instance": "10.1.0.23:9187"}), False),
            (_alert("PostgresDown", "page", primary), False),
        ]
        scenarios[f"{topology}: a scrape target down"] = [
            (_alert("ScrapeTargetDown", "ticket", pg), False),
            (_alert("ScrapeJobAbsent", "ticket", {"job": "farol-health"}), False),
            (_alert("PostgresPrimaryUnreachable", "none", primary), False),
            (_alert("PostgresDown", "page", primary), False),
            (health, True),   # by PostgresPrimaryUnreachable, not by the target alerts
            (per_instance("HttpHighLatency", farol), False),
        ]
    return scenarios


def check_inhibitions(alertmanager_url, scenario):
    import time
    base = alertmanager_url.rstrip("/")
    alerts = inhibition_scenarios()[scenario]
    body = json.dumps([{"labels": labels, "annotations": {"summary": "inhibition test"}}
                       for labels, _ in alerts]).encode()
    request = urllib.request.Request(f"{base}/api/v2/alerts", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(f"{base}/api/v2/alerts", timeout=10) as resp:
            got = {json.dumps(a["labels"], sort_keys=True): a["status"] for a in json.load(resp)}
        problems = []
        for labels, inhibited in alerts:
            status = got.get(json.dumps(labels, sort_keys=True))
            if status is None:
                problems.append(f"{labels['alertname']} {labels}: not received")
            elif bool(status.get("inhibitedBy")) != inhibited:
                problems.append(f"{labels['alertname']} {labels}: {'not ' if inhibited else ''}inhibited, "
                                f"state {status.get('state')}")
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for problem in problems:
        print(f"{scenario}: {problem}", file=sys.stderr)
    if not problems:
        silenced = sum(1 for _, i in alerts if i)
        print(f"inhibitions, {scenario}: {silenced} of {len(alerts)} alerts suppressed, as expected")
    return 1 if problems else 0


# ---------------------------------------------------------------------------------------
# check-dashboards

NO_UNIT_PANELS = {"row", "text", "logs"}   # nothing numeric to put a unit on
THRESHOLD_NOTE = re.compile(r"Threshold line = alert (\w+)")


def provisioned_datasources():
    uids = {}
    for path in (MONITORING / "grafana/provisioning/datasources").glob("*.yml"):
        for ds in load_yaml(path).get("datasources", []):
            uids[ds["uid"]] = ds["type"]
    return uids


def check_dashboards():
    problems = []
    datasources = provisioned_datasources()
    alert_thresholds = {}
    for rule in rules():
        if "alert" in rule:
            values = [constant_value(t) for _, ts in alert_signals(rule["expr"]) for t in ts]
            alert_thresholds[rule["alert"]] = {v for v in values if v is not None}
    # Alerts on a measured level (not a 0/1 state) must be drawn on some panel.
    drawn_needed = {a for a, vs in alert_thresholds.items() if any(v not in (0.0,) for v in vs)}
    drawn = set()
    count = 0
    uids = set()
    for path, dashboard in dashboards():
        count += 1
        where = path.name
        if dashboard.get("uid") in uids or not dashboard.get("uid"):
            problems.append(f"{where}: missing or duplicate uid")
        uids.add(dashboard.get("uid"))
        variables = dashboard_variables(dashboard)
        for name in ("job", "instance"):
            if name not in variables:
                problems.append(f"{where}: no ${name} variable")
        for name, var in variables.items():
            ds = var.get("datasource")
            if isinstance(ds, dict) and datasources.get(ds.get("uid")) != ds.get("type"):
                problems.append(f"{where}: variable {name} uses data source {ds}, not a provisioned one")
        ids = set()
        for panel in panels(dashboard):
            title = f"{where}: panel {panel.get('title')!r}"
            if panel.get("id") in ids:
                problems.append(f"{title}: duplicate id {panel.get('id')}")
            ids.add(panel.get("id"))
            if panel.get("type") == "row":
                continue
            for target in panel.get("targets", []) or [{}]:
                ds = target.get("datasource") or panel.get("datasource")
                if not isinstance(ds, dict) or datasources.get(ds.get("uid")) != ds.get("type"):
                    problems.append(f"{title}: data source {ds} is not a provisioned one ({datasources})")
            defaults = panel.get("fieldConfig", {}).get("defaults", {})
            if panel.get("type") not in NO_UNIT_PANELS and not defaults.get("unit"):
                problems.append(f"{title}: no unit")
            note = THRESHOLD_NOTE.search(panel.get("description", ""))
            if note:
                alert = note.group(1)
                steps = defaults.get("thresholds", {}).get("steps", [])
                lines = {s["value"] for s in steps if s.get("value") is not None}
                style = defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode", "off")
                if alert not in alert_thresholds:
                    problems.append(f"{title}: names alert {alert}, which does not exist")
                elif not lines or not all(any(math.isclose(line, v, rel_tol=1e-9) for v in alert_thresholds[alert])
                                          for line in lines):
                    problems.append(f"{title}: threshold lines {sorted(lines)} are not alert {alert}'s "
                                    f"thresholds {sorted(alert_thresholds[alert])}")
                elif panel.get("type") == "timeseries" and style == "off":
                    problems.append(f"{title}: thresholds of alert {alert} are not drawn (thresholdsStyle)")
                else:
                    drawn.add(alert)
    for alert in sorted(drawn_needed - drawn):
        problems.append(f"alert {alert}: its threshold is drawn on no panel")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{count} dashboards: units, variables, data sources and the thresholds of "
          f"{len(drawn)} alerts agree")
    return 0


# ---------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------
# Small questions the shell scripts ask of the rules

def recording_rules():
    return [rule["record"] for rule in rules() if "record" in rule]


def alert_threshold(name):
    """The first constant an alert's expression compares against (e.g. 0.85)."""
    rule = next((r for r in rules() if r.get("alert") == name), None)
    if rule is None:
        raise SystemExit(f"no alert named {name} in {MONITORING}/prometheus/rules")
    threshold = next(
        (constant_value(t) for _, ts in alert_signals(rule["expr"]) for t in ts), None)
    if threshold is None:
        raise SystemExit(f"{name}: its expression compares against no constant")
    return threshold


# ---------------------------------------------------------------------------------------
# The monitoring files that nothing here can run

# Prometheus's retention when no flag sets one
DEFAULT_RETENTION = "15d"
RETENTION_FLAGS = ("--storage.tsdb.retention.time", "--storage.tsdb.retention")   # the second deprecated
RETENTION_SIZE_FLAG = "--storage.tsdb.retention.size"


def prometheus_flags(compose):
    """The compose Prometheus's command as {flag: value}, from "--flag=value" or "--flag"
    "value", in a list or a string."""
    command = (compose.get("services", {}).get("prometheus") or {}).get("command") or []
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    flags = {}
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        name, sep, value = arg.partition("=")
        if not sep and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
        flags[name] = value
    return flags


def rule_lookback_ms(expr):
    """How far back a rule reads: its longest range or offset, or a range plus the offset
    that follows it. Nested subqueries, whose ranges add up too, are not summed."""
    spans = [expr[start:end] for start, end, unit in promql_durations(expr) if unit == "duration"]
    longest = max((parse_duration(d) for d in spans), default=0)
    for window, offset in re.findall(r"\[\s*(\w+)\s*(?::\s*\w*\s*)?\]\s*offset\s+(\w+)", expr):
        longest = max(longest, parse_duration(window) + parse_duration(offset))
    return longest


def lookback_problems(compose, all_rules):
    """A rule that reads further back than Prometheus keeps computes over what is left,
    without a word: the SLO's 30-day budget over 15 days of data. Every rule's lookback
    against the retention compose gives Prometheus (a size limit, which can drop data
    sooner, cannot be proven to fit and is refused)."""
    flags = prometheus_flags(compose)
    if RETENTION_SIZE_FLAG in flags:
        return [f"docker-compose.yml: prometheus sets {RETENTION_SIZE_FLAG}, which can drop data sooner "
                f"than the rules read back; this check cannot prove it does not"]
    flag = next((f for f in RETENTION_FLAGS if f in flags), None)
    text = flags[flag] if flag else DEFAULT_RETENTION
    try:
        retention = parse_duration(text)
    except ValueError:
        return [f"docker-compose.yml: prometheus {flag}={text!r} is not a duration"]
    problems = []
    for rule in all_rules:
        lookback = rule_lookback_ms(str(rule["expr"]))
        if lookback > retention:
            days, rest = divmod(lookback, 86_400_000)
            back = f"{days}d" if days and not rest else format_duration(lookback)   # 30d, not 4w2d
            problems.append(f"{rule.get('record') or rule.get('alert')} reads {back} back, "
                            f"more than the {text} Prometheus keeps (docker-compose.yml: {flag or 'the default'})")
    return list(dict.fromkeys(problems))   # one line for the records of every SLO


def check_static_files():
    """What cannot run here (no Grafana, Loki or Alloy binaries): syntax, and that what the
    files refer to exists."""
    problems = []

    def load(path):
        try:
            return yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            problems.append(f"{path}: {err}")
            return {}

    compose = load(MONITORING / "docker-compose.yml")
    mounts = {}   # container path -> host path, per service
    for name, service in compose.get("services", {}).items():
        for volume in service.get("volumes", []):
            host, container = volume.split(":")[:2]
            mounts[(name, container)] = host
            local = host.startswith((".", "/")) and not host.startswith("/var/run") and host != "/"
            if local and not (MONITORING / host).exists():
                problems.append(f"docker-compose.yml: {name} mounts {host}, which does not exist")
    # Grafana: provisioning files parse, the dashboards folder the provider reads is mounted.
    for path in (MONITORING / "grafana/provisioning").rglob("*.yml"):
        doc = load(path)
        for provider in doc.get("providers", []):
            folder = provider["options"]["path"]
            if mounts.get(("grafana", folder)) != "./grafana/dashboards":
                problems.append(f"{path}: provider path {folder} is not where compose mounts grafana/dashboards")
    # Loki: parses, and stores under the volume compose gives it.
    loki = load(MONITORING / "loki/loki.yml")
    if loki.get("common", {}).get("path_prefix") != "/loki" or ("loki", "/loki") not in {(k[0], k[1]) for k in mounts}:
        problems.append("loki.yml: path_prefix must be /loki, the loki-data volume")
    # Alloy: balanced braces and quotes, every component reference defined, the Loki URL is
    # the compose service's.
    alloy = (MONITORING / "alloy/config.alloy").read_text()
    code = re.sub(r'"(?:[^"\\]|\\.)*"', '""', re.sub(r"//[^\n]*", "", alloy))
    if code.count("{") != code.count("}") or code.count("[") != code.count("]"):
        problems.append("config.alloy: unbalanced braces or brackets")
    defined = set(re.findall(r'^([a-z_.]+)\s+"(\w+)"\s*\{', alloy, re.M))
    for kind, label in re.findall(r"\b((?:discovery|loki)\.[a-z_]+)\.(\w+)\.(?:targets|rules|receiver|output)\b", code):
        if (kind, label) not in defined:
            problems.append(f"config.alloy: {kind}.{label} is used but not defined")
    if "http://loki:3100/loki/api/v1/push" not in alloy or "loki" not in compose.get("services", {}):
        problems.append("config.alloy: must push to the compose service loki")
    problems += lookback_problems(compose, list(rules()))
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("drill")
    p.add_argument("out_dir")
    p.add_argument("--factor", type=int, default=60)
    p.add_argument("--source", default=str(MONITORING))
    p = sub.add_parser("check-queries")
    p.add_argument("--prometheus", required=True)
    p.add_argument("--source", default=str(MONITORING))
    p.add_argument("--may-be-empty", action="append", default=[], metavar="KEY")
    p = sub.add_parser("check-runbooks")
    p.add_argument("--write", action="store_true")
    sub.add_parser("check-dashboards")
    sub.add_parser("check-static-files")
    sub.add_parser("records")
    p = sub.add_parser("alert-threshold")
    p.add_argument("alert")
    sub.add_parser("check-rule-tests")
    sub.add_parser("check-alert-coverage")
    p = sub.add_parser("check-inhibitions")
    p.add_argument("--alertmanager", required=True)
    p.add_argument("--scenario", required=True, help="a scenario name; `list` prints them")
    args = parser.parse_args(argv)
    if args.command == "drill":
        drill(args.out_dir, args.source, args.factor)
    elif args.command == "check-queries":
        return check_queries(args.prometheus, args.source, args.may_be_empty)
    elif args.command == "check-runbooks":
        return check_runbooks(args.write)
    elif args.command == "check-dashboards":
        return check_dashboards()
    elif args.command == "check-static-files":
        return check_static_files()
    elif args.command == "records":
        print("\n".join(recording_rules()))
    elif args.command == "alert-threshold":
        print(alert_threshold(args.alert))
    elif args.command == "check-rule-tests":
        return check_rule_tests()
    elif args.command == "check-alert-coverage":
        return check_alert_coverage()
    elif args.command == "check-inhibitions":
        if args.scenario == "list":
            print("\n".join(inhibition_scenarios()))
            return 0
        return check_inhibitions(args.alertmanager, args.scenario)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
