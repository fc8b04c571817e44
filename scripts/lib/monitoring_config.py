#!/usr/bin/env python3
"""Reads, checks and derives the monitoring configuration in monitoring/ (docs/monitoring.md).

    drill OUT_DIR [--factor N] [--source DIR]   the fire drill's copy: every duration / N (60)
    check-queries --prometheus URL [--may-be-empty KEY]...   every rule, panel and runbook
        query against a live Prometheus: each parses, and returns data unless KEY is listed
    check-runbooks [--write]   one runbook per alert; runbook_urls from Cargo.toml (--write fixes)
    check-dashboards | check-static-files | check-rule-tests | check-alert-coverage
    records | alert-threshold ALERT   the recording rules' names; the constant an alert compares with
    check-inhibitions --alertmanager URL --scenario NAME|list   a scenario's alerts, with each
        topology's labels (compose's and production's), sent to a running Alertmanager

Standard library and PyYAML only (scripts/stand-ins/monitoring-stack.sh finds a python3 that has it).
"""

import argparse
import contextlib
import json
import math
import re
import shlex
import shutil
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
MONITORING = REPO_ROOT / "monitoring"
RUNBOOKS = REPO_ROOT / "docs/runbooks"

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
    parts = []
    for unit, size in _UNITS_MS:
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts) or "0s"


# Just enough of a PromQL lexer to find durations and the top-level structure of an
# expression, without being fooled by strings, label matchers or names such as
# job:farol_api_errors:ratio_rate30d (a recording rule's name is not a duration).
# (promql-parser, the Rust parser's binding, would need scripts/install-deps to install it,
# and scope_selectors must edit the expression's own text, not a re-printed AST.)
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
    """(kind, text, start, end) of every token but whitespace and comments."""
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match:
            raise ValueError(f"cannot read PromQL at {pos}: {expr[pos:pos + 20]!r}")
        if match.lastgroup not in ("ws", "comment"):
            yield match.lastgroup, match.group(), match.start(), match.end()
        pos = match.end()


_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = _LABEL_LISTS | {
    "and", "or", "unless", "offset", "bool", "inf", "nan", "atan2",
    # aggregation operators, which may take their `by (...)` before the parenthesis
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio"}


def scope_selectors(expr, matcher):
    """expr with `matcher` (e.g. namespace="farol") added to every series selector (a metric
    name, with its label matchers if any); functions, keywords, label lists, ranges and
    strings are left alone. ValueError for a selector it cannot scope safely: one without a
    metric name ({__name__=~"..."}), or one that already matches the label."""
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
        elif text == "}":
            depth_braces -= 1
        elif depth_braces:
            if kind == "ident" and text == label and nxt[0] == "op":
                raise ValueError(f"a selector already matches {label}: {expr!r}")
        elif text in ("[", "]"):
            depth_brackets += 1 if text == "[" else -1
        elif depth_brackets:
            continue   # a range or a subquery's "[1h:30s]": no selector in there
        elif label_list is not None:
            label_list += (text == "(") - (text == ")")
            if text == ")" and label_list == 0:
                label_list = None
        elif kind != "ident":
            continue
        elif text in _LABEL_LISTS:
            if nxt[1] == "(":
                label_list = 0
        elif text.lower() in _KEYWORDS or nxt[1] == "(":
            continue   # a keyword or a function
        elif nxt[1] == "{":
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
    """(start, end, unit) of every duration in expr: ranges and subqueries ("[5m]",
    "[1h:30s]") and offsets, unit "duration"; predict_linear()'s horizon, a number of
    seconds ("24 * 3600"), unit "seconds"."""
    spans = []
    tokens = list(_tokens(expr))
    for i, (kind, text, _start, end) in enumerate(tokens):
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if text == "[":
            offset = end
            for part in expr[end:expr.index("]", end)].split(":"):
                stripped = part.strip()
                if stripped:
                    begin = offset + part.index(stripped)
                    parse_duration(stripped)
                    spans.append((begin, begin + len(stripped), "duration"))
                offset += len(part) + 1
        elif kind == "ident" and text.lower() == "offset" and nxt is not None:
            j = i + 2 if nxt == "-" else i + 1
            parse_duration(tokens[j][1])
            spans.append((tokens[j][2], tokens[j][3], "duration"))
        elif kind == "ident" and text == "predict_linear" and nxt == "(":
            depth, comma = 0, None
            for _, t, s, _ in tokens[i + 1:]:
                depth += (t in "([{") - (t in ")]}")
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


def _split(expr, operators):
    """[(operand, the operator after it or None)], split at operators outside brackets."""
    parts, last, depth = [], 0, 0
    for kind, text, start, end in _tokens(expr):
        depth += (kind == "open") - (kind == "close")
        if depth == 0 and kind not in ("open", "close") and text in operators:
            parts.append((expr[last:start], text))
            last = end
    parts.append((expr[last:], None))
    return parts


def _unwrap(expr):
    """expr without parentheses that enclose all of it."""
    expr = expr.strip()
    while expr.startswith("("):
        depth = 0
        for kind, _text, start, _ in _tokens(expr):
            last = start   # the first bracket's close, or the last token's if none closes it
            depth += (kind == "open") - (kind == "close")
            if depth == 0:
                break
        if last != len(expr) - 1:
            break
        expr = expr[1:-1].strip()
    return expr


def alert_signals(expr):
    """The measurements an alert's expression compares to its thresholds, with the
    thresholds: `a > 0.8 and b == 0` gives [("a", ["0.8"]), ("b", ["0"])]; parenthesised
    operands are opened. Set operators bind more loosely than comparisons: split first."""
    expr = _unwrap(_MODIFIERS.sub("", expr, count=1))
    operands = _split(expr, _SET_OPERATORS)
    if len(operands) > 1:
        return [signal for operand, _ in operands for signal in alert_signals(operand)]
    pieces = _split(expr, _COMPARISONS)
    if len(pieces) == 1:
        return [(expr, [])]
    signal = _unwrap(pieces[0][0])
    if len(_split(signal, _SET_OPERATORS)) > 1:
        return alert_signals(signal)
    return [(signal, [_unwrap(_MODIFIERS.sub("", piece, count=1)) for piece, _ in pieces[1:]])]


def constant_value(expr):
    """The number a constant expression such as "(14.4 * (1 - 0.999))" stands for, or None
    when it is not made of numbers and arithmetic only."""
    if not re.fullmatch(r"[\d.eE+\-*/() ]+", expr):
        return None
    try:
        return float(eval(expr, {"__builtins__": {}}, {}))  # only digits and operators
    except (SyntaxError, ZeroDivisionError, TypeError):
        return None


# The configuration files, and the durations in them: keys whose values are durations, per
# kind of file (rule expressions are read with the PromQL lexer above).
_DURATION_KEYS = {
    "prometheus": {"scrape_interval", "scrape_timeout", "evaluation_interval", "refresh_interval", "timeout"},
    "alertmanager": {"group_wait", "group_interval", "repeat_interval", "resolve_timeout"},
    "rules": {"interval", "for", "keep_firing_for"},
}


def map_durations(node, kind, fn, path=()):
    """A copy of a loaded YAML document with every duration d replaced by fn(d, role, path),
    role being "interval" (how often, how long to wait) or "window" (a PromQL range or offset)."""
    if isinstance(node, dict):
        return {key: map_durations(value, kind, fn, path + (key,)) for key, value in node.items()}
    if isinstance(node, list):
        return [map_durations(item, kind, fn, path + (i,)) for i, item in enumerate(node)]
    if not isinstance(node, str) or not path:
        return node
    if path[-1] in _DURATION_KEYS[kind]:
        return fn(node, "interval", path)
    if kind == "rules" and path[-1] == "expr":
        return map_promql_durations(node, lambda d: fn(d, "window", path))
    return node


def config_files(source):
    """(kind, path relative to source) of every file with durations in a monitoring/-shaped directory."""
    files = [("prometheus", Path("prometheus/prometheus.yml")), ("alertmanager", Path("alertmanager/alertmanager.yml"))]
    return files + [("rules", p.relative_to(source)) for p in sorted((Path(source) / "prometheus/rules").glob("*.yml"))]


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def yaml_text(doc, header):
    """DOC as YAML, HEADER's lines as comments above it."""
    text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return "".join(f"# {line}\n" for line in header.splitlines()) + text


def dump_yaml(doc, path, header):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml_text(doc, header))


# drill: no scrape, evaluation or wait below a second; a range keeps at least four scrapes
# (rate() needs two); group_wait at least three evaluations, so that an inhibiting alert in
# a new group arrives before the first notification, as production's minute of `for:` gap
# ensures (docs/fire-drill.md, "Time, shortened").
INTERVAL_FLOOR_MS = 1000
WINDOWS_PER_SCRAPE = 4
GROUP_WAIT_EVALUATIONS = 3


def _scaled(ms, factor):
    return round(ms / factor / 1000) * 1000   # whole seconds


def drill_shrinker(factor, window_floor_ms, group_wait_floor_ms=INTERVAL_FLOOR_MS):
    """fn for map_durations: divide by factor, never below the floor of its role (a
    group_wait's own), never longer than the original, zero staying zero."""
    def shrink(text, role, path):
        ms = parse_duration(text)
        if ms == 0:
            return text
        floor = window_floor_ms if role == "window" else INTERVAL_FLOOR_MS
        if path and path[-1] == "group_wait":
            floor = max(floor, group_wait_floor_ms)
        return format_duration(min(ms, max(floor, _scaled(ms, factor))))
    return shrink


def subquery_steps(expr):
    """(range, step) as written, of every subquery in expr: "[719h:1h]" gives ("719h", "1h")."""
    found = []
    for _, text, _, end in _tokens(expr):
        parts = expr[end:expr.index("]", end)].split(":") if text == "[" else []
        if len(parts) == 2 and parts[1].strip():
            found.append(tuple(part.strip() for part in parts))
    return found


def check_subquery_steps(original, shrunk, evaluation, factor, rel):
    """Each subquery keeps its count of steps, and a step that was a whole number of its
    group's evaluations stays one: the SLO period sums one tile a step (slo.py,
    period_rules), and would otherwise take one tile more at some evaluations than at
    others, or tiles that overlap or leave gaps. evaluation: the global evaluation
    interval as written, before and after."""
    def steps(doc, default):
        return [(r, s, group.get("interval", default)) for group in doc.get("groups", [])
                for rule in group["rules"] for r, s in subquery_steps(rule["expr"])]
    for (r0, s0, i0), (r1, s1, i1) in zip(steps(original, evaluation[0]), steps(shrunk, evaluation[1]),
                                          strict=True):
        (range0, step0, every0), (range1, step1, every1) = (
            [parse_duration(d) for d in written] for written in ((r0, s0, i0), (r1, s1, i1)))
        broken = []
        if range1 * step0 != range0 * step1:
            held = "rounded to whole seconds" if step1 == _scaled(step0, factor) else "held at the floor of a range"
            broken.append(f"{range1 / step1:.6g} steps, not {range0 // step0} (the step {held})")
        if step0 % every0 == 0 and step1 % every1:
            broken.append(f"a step that is not a whole number of its group's evaluations ({i0} became {i1})")
        if broken:
            raise SystemExit(f"--factor {factor}: {rel}: the subquery [{r0}:{s0}] becomes [{r1}:{s1}]: "
                             f"{'; and '.join(broken)}; pick another factor")


def drill(out_dir, source, factor):
    source, out_dir = Path(source), Path(out_dir)
    if factor <= 1:
        raise SystemExit("--factor must be greater than 1")
    defaults = load_yaml(source / "prometheus/prometheus.yml").get("global", {})
    scrape_ms, evaluation_ms = (max(INTERVAL_FLOOR_MS, _scaled(parse_duration(defaults.get(key, "1m")), factor))
                                for key in ("scrape_interval", "evaluation_interval"))
    shrink = drill_shrinker(factor, WINDOWS_PER_SCRAPE * scrape_ms, GROUP_WAIT_EVALUATIONS * evaluation_ms)
    evaluation = (defaults.get("evaluation_interval", "1m"), format_duration(evaluation_ms))
    written = []   # every file checked before any is written: a refused factor leaves nothing half-made
    for kind, rel in config_files(source):
        original = load_yaml(source / rel)
        shrunk = map_durations(original, kind, shrink)
        if kind == "rules":
            check_subquery_steps(original, shrunk, evaluation, factor, rel)
        written.append((shrunk, rel))
    for shrunk, rel in written:
        dump_yaml(shrunk, out_dir / rel,
                  f"Generated by scripts/drill-config --factor {factor} from monitoring/{rel}:\n"
                  "every duration divided, nothing else changed. Do not edit; regenerate.")
    for rel in ("prometheus/targets", "blackbox"):   # no durations: copied, so that out_dir is complete
        if (source / rel).is_dir():
            shutil.copytree(source / rel, out_dir / rel, dirs_exist_ok=True)
    print(f"drill configuration (durations / {factor}) written to {out_dir}")


def rules(source=MONITORING, folder="rules"):
    """Every rule of the rule files: dicts with file, group and the rule's own keys. folder:
    compose's rules/ (what Prometheus loads here) or production/ (the PrometheusRule's own alerts)."""
    for path in sorted((Path(source) / "prometheus" / folder).glob("*.yml")):
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                yield {"file": path.name, "group": group["name"], **rule}


def dashboards(source=MONITORING):
    for path in sorted((Path(source) / "grafana/dashboards").glob("*.json")):
        yield path, json.loads(path.read_text())


def panels(dashboard):
    """Every panel, also those folded into rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_variables(dashboard):
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def _report(problems, success=None):
    """Problems to stderr and 1, or the success line (if any) and 0."""
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems and success:
        print(success)
    return 1 if problems else 0


# ---------------------------------------------------------------------------------------
# check-queries

def _prometheus(url, path, **params):
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}", timeout=30) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as err:
        body = json.load(err)
    if body.get("status") != "success":
        raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
    return body["data"]


def _query(url, expr):
    return _prometheus(url, "/api/v1/query", query=expr)["result"]


def _grafana_variable_values(url, dashboard):
    """Each query variable resolved to its first value, in order (later variables may use
    earlier ones), as a dashboard shows it by default."""
    values = {}
    for name, var in dashboard_variables(dashboard).items():
        if var.get("type") != "query":
            continue
        definition = var.get("definition") or var.get("query", {}).get("query", "")
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", definition.strip())
        if not match:
            raise ValueError(f"variable {name}: only label_values(selector, label) is supported")
        found = _prometheus(url, f"/api/v1/label/{match.group(2)}/values",
                            **{"match[]": _substitute(match.group(1), values)})
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
        # escaped for the regex matcher, then for the PromQL string, as Grafana's data source does
        return re.escape(values[name]).replace("\\", "\\\\")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", fill, expr)


# What the alerting depends on across jobs, checked on the live data: the blackbox probe of
# /health carries the instance label of farol's own scrape target, so that FarolDown's
# inhibition (equal: instance) silences the probe's alert; the labels the inhibitions
# compare are on the live series. (key, expr, data?)
INVARIANTS = [
    ("invariant:probe-instance-is-farol-target",
     'probe_success{job="farol-health"} and on (instance) up{job="farol"}', True),
    ("invariant:no-probe-without-farol-target",
     'probe_success{job="farol-health"} unless on (instance) up{job="farol"}', False),
    ("invariant:farol-and-database-series-carry-namespace",
     'up{job=~"farol|farol-health|postgres", namespace=""}', False),
    ("invariant:database-series-carry-role", 'pg_up{role=""}', False),
    ("invariant:farol-and-its-database-share-a-namespace",
     'count by (namespace) (up{job="farol"}) and on (namespace) count by (namespace) (pg_up{role="primary"})', True),
]


def check_queries(url, may_be_empty):
    checks = []   # (key, file, expr, must have data)
    all_rules = list(rules())
    names = [r.get("alert") for r in all_rules]
    for rule in all_rules:
        name = rule.get("record") or rule["alert"]
        if names.count(name) > 1:   # one alert, one rule per severity: keys name both
            name = f"{name}[{rule.get('labels', {}).get('severity')}]"
        if "sloth_id" in rule.get("labels", {}):   # one record per SLO: keys name the SLO
            name = f"{name}[{rule['labels']['sloth_id']}]"
        if "record" in rule:
            checks.append((f"record:{name}", rule["file"], rule["expr"], True))
            continue
        checks.append((f"alert:{name}", rule["file"], rule["expr"], False))
        for i, (signal, _) in enumerate(alert_signals(rule["expr"]), 1):
            checks.append((f"signal:{name}:{i}", rule["file"], signal, True))
    for path, dashboard in dashboards():
        values = _grafana_variable_values(url, dashboard)
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                ds = target.get("datasource") or panel.get("datasource") or {}
                if not isinstance(ds, dict) or ds.get("type") != "prometheus" or not target.get("expr"):
                    continue
                key = f"panel:{dashboard['uid']}:{panel['title']}:{target.get('refId', 'A')}"
                checks.append((key, path.name, _substitute(target["expr"], values), True))
    # the runbooks' queries must parse and run; on a healthy run most have nothing to show
    for path, number, expr in runbook_queries():
        checks.append((f"runbook:{path.stem}:{number}", path.name, expr, False))
    unknown = set(may_be_empty) - {key for key, *_ in checks}
    failures, rows = 0, []
    for key, where, expr, must in checks:
        try:
            result = _query(url, expr)
            if result:
                status = f"ok, {len(result)} series"
            elif must and key not in may_be_empty:
                status, failures = "FAILED: no data", failures + 1
            else:
                status = "ok, empty (allowed)"
        except ValueError as err:
            status, failures = f"FAILED: {err}", failures + 1
        rows.append((key, where, status))
    for key, expr, want_data in INVARIANTS:
        result = _query(url, expr)
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
    """[(path, number within the runbook, expression)]: every line of the runbooks' ```promql blocks."""
    queries = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        lines = [line.strip() for block in re.findall(r"^\s*```promql\n(.*?)^\s*```", path.read_text(), re.M | re.S)
                 for line in block.splitlines()]
        queries += [(path, n, expr) for n, expr in enumerate((line for line in lines if line), 1)]
    return queries


# ---------------------------------------------------------------------------------------
# check-runbooks, check-rule-tests, check-alert-coverage

RUNBOOK_SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation")
# page: wakes someone; ticket: working hours; none: an inhibit-only signal that notifies
# no one (alertmanager.yml routes it to a receiver without configurations).
SEVERITIES = ("page", "ticket", "none")


def runbook_base():
    """The one place the repository URL is set: Cargo.toml's package.repository."""
    repository = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text()).get("package", {}).get("repository")
    if not repository:
        raise SystemExit("Cargo.toml has no package.repository: the runbook URLs are built from it")
    return repository.rstrip("/") + "/blob/main/docs/runbooks"


def check_runbooks(write):
    base = runbook_base()
    problems = []
    alerts = {r["alert"]: r for r in [*rules(), *rules(folder="production")] if "alert" in r}
    for name, rule in alerts.items():
        annotations = rule.get("annotations", {})
        problems += [f"alert {name} has no {key}" for key in ("summary", "description", "runbook_url")
                     if not annotations.get(key)]
        if rule.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"alert {name}: severity must be one of {', '.join(SEVERITIES)}")
        runbook = RUNBOOKS / f"{name}.md"
        if not runbook.is_file():
            problems.append(f"alert {name} has no runbook docs/runbooks/{name}.md")
            continue
        headings = re.findall(r"^## (.+?)\s*$", runbook.read_text(), re.M)
        if headings != list(RUNBOOK_SECTIONS):
            problems.append(f"docs/runbooks/{name}.md: sections {headings}, expected {list(RUNBOOK_SECTIONS)}")
    problems += [f"runbook {path.relative_to(REPO_ROOT)} has no alert"
                 for path in sorted(RUNBOOKS.glob("*.md")) if path.stem not in alerts]
    # runbook_url lines, in the rule files and their tests' expectations: each belongs to
    # the alert named last before it.
    stale = 0
    for path in sorted((MONITORING / "prometheus").glob("*/*.yml")):
        lines = path.read_text().splitlines(keepends=True)
        alert = None
        for i, line in enumerate(lines):
            named = re.match(r"\s*-?\s*(?:alert|alertname):\s*(\w+)", line)
            alert = named.group(1) if named else alert
            url = re.match(r"(\s*runbook_url:\s*)(\S.*?)\s*$", line)
            want = f"{base}/{alert}.md"
            if url and url.group(2).strip("\"'") != want:
                stale += 1
                if write:
                    lines[i] = f"{url.group(1)}{want}\n"
                else:
                    problems.append(f"{path.relative_to(REPO_ROOT)}:{i + 1}: runbook_url is not {want}")
        if write:
            path.write_text("".join(lines))
    if write and stale:
        print(f"rewrote {stale} runbook_url lines from {base}")
    if problems:
        problems.append("(scripts/lib/monitoring_config.py check-runbooks --write rewrites the URLs)")
    return _report(problems, f"{len(alerts)} alerts, each with its runbook and a runbook_url under {base}")


def _tests():
    for path in sorted((MONITORING / "prometheus/tests").glob("*.yml")):
        yield load_yaml(path)


def check_rule_tests():
    """Every recording rule is compared in a unit test, every rule file has its test file,
    and ScrapeJobAbsent watches exactly the scrape jobs of prometheus.yml."""
    compared, tested_files = set(), set()
    for doc in _tests():
        tested_files.update(Path(f).name for f in doc.get("rule_files", []))
        for test in doc.get("tests", []):
            for case in test.get("promql_expr_test", []):
                compared.update(re.findall(r"[A-Za-z_:][\w:]*", case["expr"]))
    problems = [f"rules/{path.name} has no test file in tests/"
                for path in sorted((MONITORING / "prometheus/rules").glob("*.yml")) if path.name not in tested_files]
    all_rules = list(rules())
    problems += [f"recording rule {rule['record']} is compared in no test"
                 for rule in all_rules if "record" in rule and rule["record"] not in compared]
    jobs = {job["job_name"] for job in load_yaml(MONITORING / "prometheus/prometheus.yml")["scrape_configs"]}
    absent = next((r for r in all_rules if r.get("alert") == "ScrapeJobAbsent"), None)
    if absent is None:
        problems.append("no ScrapeJobAbsent alert: a job without targets would go unnoticed")
    else:
        watched = set(re.findall(r'absent\(up\{job="([^"]+)"\}\)', absent["expr"]))
        if watched != jobs:
            problems.append(f"ScrapeJobAbsent watches {sorted(watched)}, prometheus.yml scrapes {sorted(jobs)}")
    records = sum("record" in rule for rule in all_rules)
    return _report(problems, f"{records} recording rules, each compared in a unit test; "
                             "ScrapeJobAbsent watches every scrape job")


def check_alert_coverage():
    """Every alert has a unit test in which it fires, a runbook, and a scenario of the full
    fire drill that fires, holds back or inhibits it (the Watchdog: the whole drill)."""
    from fire_drill import scenarios as sc

    tested = {c["alertname"] for doc in _tests() for test in doc.get("tests", [])
              for c in test.get("alert_rule_test", []) if c.get("exp_alerts")}
    drilled = {a for s in sc.for_run(quick=False) for a in s.watched()} | {"Watchdog"}
    alerts = sorted({r["alert"] for r in rules() if "alert" in r})
    problems = []
    for alert in alerts:
        missing = [what for what, ok in (("a unit test that fires it", alert in tested),
                                         (f"docs/runbooks/{alert}.md", (RUNBOOKS / f"{alert}.md").is_file()),
                                         ("a fire-drill scenario", alert in drilled)) if not ok]
        if missing:
            problems.append(f"alert {alert} lacks {', '.join(missing)}")
    return _report(problems, f"{len(alerts)} alerts, each with a unit test, a runbook and a fire-drill scenario")


# ---------------------------------------------------------------------------------------
# check-inhibitions: the inhibit_rules of alertmanager.yml, on a running Alertmanager, with
# the label sets of each topology read from the files that make them; each alert keeps the
# labels its rule keeps (an aggregation its `by` labels, a comparison every label).

def compose_targets():
    """{job: labels of its one target} in compose: prometheus.yml's jobs and the labels of
    their target files (the probe job reads farol's and keeps its address as instance)."""
    targets = {}
    for job in load_yaml(MONITORING / "prometheus/prometheus.yml")["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            for path in sd["files"]:
                for group in load_yaml(MONITORING / "prometheus" / path) or []:
                    targets[job["job_name"]] = {"job": job["job_name"], "instance": group["targets"][0],
                                                **group.get("labels", {})}
    return targets


def production_targets():
    """{job: labels} that the production overlay's ServiceMonitor, PodMonitors and Probe give
    their series (deploy/k8s/overlays/production/monitoring.yaml, the base's namespace): the
    operator adds namespace, pod, service, endpoint and container; the manifests the rest."""
    deploy = REPO_ROOT / "deploy/k8s"
    namespace = load_yaml(deploy / "base/kustomization.yaml")["namespace"]
    manifests = [d for d in yaml.safe_load_all((deploy / "overlays/production/monitoring.yaml").read_text()) if d]
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
    relabelings = {role: m["spec"]["podMetricsEndpoints"][0].get("relabelings", []) for role, m in pod_monitors.items()}
    relabel = {role: {r["targetLabel"]: r.get("replacement") for r in rs} for role, rs in relabelings.items()}
    # a PodMonitor's job: its relabeling's, else the operator's default
    job = {role: relabel[role].get("job") or f"{namespace}/{m['metadata']['name']}" for role, m in pod_monitors.items()}
    # `role` must come from the pod labels CloudNativePG sets, or no series has it
    role_sources = {src for r in relabelings["database"] if r["targetLabel"] == "role"
                    for src in r.get("sourceLabels", [])}
    if role_sources and not role_sources <= {"__meta_kubernetes_pod_label_role",
                                             "__meta_kubernetes_pod_label_cnpg_io_instanceRole"}:
        raise SystemExit(f"the PodMonitor's role relabeling reads {sorted(role_sources)},"
                         " not CloudNativePG's pod labels")
    probes = {d["spec"]["jobName"]: d["spec"] for d in manifests if d["kind"] == "Probe"}
    if set(probes) != {"farol-health", "farol-public"}:
        raise SystemExit(f"monitoring.yaml: Probes of jobs {sorted(probes)}, expected farol-health (the Service) "
                         "and farol-public (the public URL)")
    # the operator labels a static target with the Probe's namespace
    probed = {job: {"job": job, "instance": probe["targets"]["staticConfig"]["static"][0], "namespace": namespace,
                    **probe["targets"]["staticConfig"].get("labels", {})} for job, probe in probes.items()}
    return {
        "farol": {"job": "farol", "namespace": namespace, "instance": "10.1.0.11:9464", "pod": "farol-7d9f-a",
                  "service": "farol-metrics", "endpoint": "metrics", "container": "farol"},
        "postgres": {"job": job["database"], "namespace": namespace, "instance": "10.1.0.21:9187", "pod": "farol-db-1",
                     "container": "postgres", "endpoint": "metrics",
                     **({"role": "primary"} if "role" in relabel["database"] else {})},
        "pgbouncer": {"job": job["pooler"], "namespace": namespace, "instance": "10.1.0.31:9127",
                      "pod": "farol-db-pooler-rw-5c8d-a", "container": "pgbouncer", "endpoint": "metrics"},
        **probed,
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
        # the public URL (production only), held back only when nothing behind it answers
        public = [(_alert("FarolPublicEndpointFailing", "page", targets["farol-public"]), True)] \
            if "farol-public" in targets else []
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
            *[(alert, False) for alert, _ in public],
            (budget_fast, False),
            (budget_slow, False),
            (_alert("Watchdog", "ticket", {}), False),
        ]
        scenarios[f"{topology}: every farol instance down"] = [
            (_alert("FarolDown", "page", farol), False),
            (_alert("FarolDown", "page", other_pod), False),
            (job_level("FarolAllInstancesDown", "none"), False),
            (health, True),
            *public,
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
            (per_instance("HttpHighLatency", farol), True),
            (job_level("LatencyBudgetBurnSlow", "ticket"), False),
            # not explained by the database: a farol down, a budget spent, the public path
            (_alert("FarolDown", "page", other_pod), False),
            *[(alert, False) for alert, _ in public],
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
            (per_instance("HttpHighLatency", farol), True),
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
            # its 2-minute window still holds the outage's slow 503s
            (per_instance("HttpHighLatency", farol), True),
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
            # by PostgresPrimaryUnreachable, not by the target alerts
            (health, True),
            (per_instance("HttpHighLatency", farol), True),
            (_alert("FarolDown", "page", farol), False),
        ]
    return scenarios



def check_inhibitions(alertmanager_url, scenario):
    if scenario == "list":
        print("\n".join(inhibition_scenarios()))
        return 0
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
                problems.append(f"{scenario}: {labels['alertname']} {labels}: not received")
            elif bool(status.get("inhibitedBy")) != inhibited:
                problems.append(f"{scenario}: {labels['alertname']} {labels}: {'not ' if inhibited else ''}"
                                f"inhibited, state {status.get('state')}")
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    silenced = sum(1 for _, i in alerts if i)
    return _report(problems, f"inhibitions, {scenario}: {silenced} of {len(alerts)} alerts suppressed, as expected")


# ---------------------------------------------------------------------------------------
# check-dashboards

NO_UNIT_PANELS = {"row", "text", "logs"}   # nothing numeric to put a unit on
THRESHOLD_NOTE = re.compile(r"Threshold line = alert (\w+)")


def check_dashboards():
    problems = []
    datasources = {ds["uid"]: ds["type"] for path in (MONITORING / "grafana/provisioning/datasources").glob("*.yml")
                   for ds in load_yaml(path).get("datasources", [])}

    def provisioned(ds):
        return isinstance(ds, dict) and datasources.get(ds.get("uid")) == ds.get("type")

    alert_thresholds = {}
    for rule in rules():
        if "alert" in rule:
            values = [constant_value(t) for _, ts in alert_signals(rule["expr"]) for t in ts]
            alert_thresholds[rule["alert"]] = {v for v in values if v is not None}
    # Alerts on a measured level (not a 0/1 state) must be drawn on some panel.
    drawn_needed = {a for a, vs in alert_thresholds.items() if any(v != 0.0 for v in vs)}
    drawn, uids, count = set(), set(), 0
    for path, dashboard in dashboards():
        count += 1
        where = path.name
        if dashboard.get("uid") in uids or not dashboard.get("uid"):
            problems.append(f"{where}: missing or duplicate uid")
        uids.add(dashboard.get("uid"))
        variables = dashboard_variables(dashboard)
        problems += [f"{where}: no ${name} variable" for name in ("job", "instance") if name not in variables]
        for name, var in variables.items():
            ds = var.get("datasource")
            if isinstance(ds, dict) and not provisioned(ds):
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
                if not provisioned(ds):
                    problems.append(f"{title}: data source {ds} is not a provisioned one ({datasources})")
            defaults = panel.get("fieldConfig", {}).get("defaults", {})
            if panel.get("type") not in NO_UNIT_PANELS and not defaults.get("unit"):
                problems.append(f"{title}: no unit")
            note = THRESHOLD_NOTE.search(panel.get("description", ""))
            if not note:
                continue
            alert = note.group(1)
            lines = {s["value"] for s in defaults.get("thresholds", {}).get("steps", []) if s.get("value") is not None}
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
    problems += [f"alert {alert}: its threshold is drawn on no panel" for alert in sorted(drawn_needed - drawn)]
    return _report(problems, f"{count} dashboards: units, variables, data sources and the thresholds of "
                             f"{len(drawn)} alerts agree")


# ---------------------------------------------------------------------------------------
# Small questions the shell scripts ask of the rules

def recording_rules():
    return [rule["record"] for rule in rules() if "record" in rule]


def alert_threshold(name):
    """The first constant an alert's expression compares against (e.g. 0.85)."""
    rule = next((r for r in rules() if r.get("alert") == name), None)
    if rule is None:
        raise SystemExit(f"no alert named {name} in {MONITORING}/prometheus/rules")
    threshold = next((constant_value(t) for _, ts in alert_signals(rule["expr"]) for t in ts), None)
    if threshold is None:
        raise SystemExit(f"{name}: its expression compares against no constant")
    return threshold


# ---------------------------------------------------------------------------------------
# check-static-files: what nothing here can run (no Grafana, Loki or Alloy binaries):
# syntax, what the files refer to, and that Prometheus keeps what the rules read.

DEFAULT_RETENTION = "15d"   # Prometheus's, when no flag sets one
RETENTION_FLAGS = ("--storage.tsdb.retention.time", "--storage.tsdb.retention")   # the second deprecated
RETENTION_SIZE_FLAG = "--storage.tsdb.retention.size"


def prometheus_flags(compose):
    """The compose Prometheus's command as {flag: value}, from "--flag=value" or "--flag"
    "value", in a list or a string."""
    command = (compose.get("services", {}).get("prometheus") or {}).get("command") or []
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    flags = {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            name, sep, value = arg.partition("=")
            if not sep and i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
            flags[name] = value
    return flags


def rule_lookback_ms(expr):
    """How far back a rule reads: its longest range or offset, or a range plus the offset
    that follows it (nested subqueries, whose ranges add up too, are not summed)."""
    spans = [expr[start:end] for start, end, unit in promql_durations(expr) if unit == "duration"]
    longest = max((parse_duration(d) for d in spans), default=0)
    for window, offset in re.findall(r"\[\s*(\w+)\s*(?::\s*\w*\s*)?\]\s*offset\s+(\w+)", expr):
        longest = max(longest, parse_duration(window) + parse_duration(offset))
    return longest


def lookback_problems(compose, all_rules):
    """Every rule that reads further back than compose's Prometheus keeps: it would compute
    over what is left without a word (the SLO's 30-day budget over 15 days). A size limit,
    which can drop data sooner, cannot be proven to fit and is refused."""
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
    problems = []

    def load(path):
        try:
            return yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            problems.append(f"{path}: {err}")
            return {}

    compose = load(MONITORING / "docker-compose.yml")
    mounts = {}   # (service, container path) -> host path
    for name, service in compose.get("services", {}).items():
        for volume in service.get("volumes", []):
            host, container = volume.split(":")[:2]
            mounts[(name, container)] = host
            local = host.startswith((".", "/")) and not host.startswith("/var/run") and host != "/"
            if local and not (MONITORING / host).exists():
                problems.append(f"docker-compose.yml: {name} mounts {host}, which does not exist")
    # Grafana: provisioning files parse, the dashboards folder the provider reads is mounted.
    for path in (MONITORING / "grafana/provisioning").rglob("*.yml"):
        for provider in load(path).get("providers", []):
            folder = provider["options"]["path"]
            if mounts.get(("grafana", folder)) != "./grafana/dashboards":
                problems.append(f"{path}: provider path {folder} is not where compose mounts grafana/dashboards")
    # Loki: parses, and stores under the volume compose gives it.
    if load(MONITORING / "loki/loki.yml").get("common", {}).get("path_prefix") != "/loki" \
            or ("loki", "/loki") not in mounts:
        problems.append("loki.yml: path_prefix must be /loki, the loki-data volume")
    # Alloy: balanced braces and brackets, every component reference defined, the Loki URL
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
    return _report(problems + lookback_problems(compose, list(rules())))


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("drill")
    p.add_argument("out_dir")
    p.add_argument("--factor", type=int, default=60)
    p.add_argument("--source", default=str(MONITORING))
    p = sub.add_parser("check-queries")
    p.add_argument("--prometheus", required=True)
    p.add_argument("--may-be-empty", action="append", default=[], metavar="KEY")
    sub.add_parser("check-runbooks").add_argument("--write", action="store_true")
    sub.add_parser("alert-threshold").add_argument("alert")
    p = sub.add_parser("check-inhibitions")
    p.add_argument("--alertmanager", required=True)
    p.add_argument("--scenario", required=True, help="a scenario name; `list` prints them")
    for name in ("check-dashboards", "check-static-files", "records", "check-rule-tests", "check-alert-coverage"):
        sub.add_parser(name)
    args = parser.parse_args(argv)
    commands = {
        "drill": lambda: drill(args.out_dir, args.source, args.factor),
        "check-queries": lambda: check_queries(args.prometheus, args.may_be_empty),
        "check-runbooks": lambda: check_runbooks(args.write),
        "check-dashboards": check_dashboards,
        "check-static-files": check_static_files,
        "records": lambda: print("\n".join(recording_rules())),
        "alert-threshold": lambda: print(alert_threshold(args.alert)),
        "check-rule-tests": check_rule_tests,
        "check-alert-coverage": check_alert_coverage,
        "check-inhibitions": lambda: check_inhibitions(args.alertmanager, args.scenario),
    }
    return commands[args.command]() or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
