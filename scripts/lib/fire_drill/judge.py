"""The fire drill's verdicts, pure functions of what drill.py recorded (test_drill.py feeds
them made-up evidence): every alert in every scenario against scenarios.py, the database
scenario's /health checks, the Watchdog, coverage, and the table.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import scenarios as sc

WATCHDOG = "Watchdog"


@dataclass(frozen=True)
class Notice:
    t: float
    path: str
    alert: str
    status: str       # firing | resolved


def events_by_scenario(events):
    """{scenario: {event: time}} (the last of each kind) and {scenario: {event: extras}}."""
    times, extras = {}, {}
    for e in events:
        times.setdefault(e["scenario"], {})[e["event"]] = e["t"]
        extras.setdefault(e["scenario"], {})[e["event"]] = {k: v for k, v in e.items()
                                                             if k not in ("t", "event", "scenario")}
    return times, extras


@dataclass
class Interval:
    start: float
    end: float | None     # None: still firing when the drill ended


def firing_intervals(samples, eval_s):
    """Firing intervals from the timestamps of an alert's ALERTS{alertstate="firing"} samples,
    one per evaluation (eval_s) of its group; a gap of more than two evaluations ends one."""
    intervals = []
    for t in sorted(samples):
        if intervals and t - intervals[-1][1] <= 2.5 * eval_s:
            intervals[-1][1] = t
        else:
            intervals.append([t, t])
    return [Interval(a, b + eval_s) for a, b in intervals]


def close_open(intervals, firing_now):
    """The last interval left open (end None) if the alert is firing now."""
    if not firing_now or not intervals:
        return intervals
    return [*intervals[:-1], Interval(intervals[-1].start, None)]


@dataclass
class Row:
    scenario: str
    alert: str
    expected: str
    observed: str
    to_fire: str = ""
    webhook: str = ""
    to_resolve: str = ""
    bound: str = ""         # the bounds the configuration allows: notify / resolve
    result: str = "ok"      # ok | FAIL | n/a | -  (allowed)
    load: str = ""


@dataclass(frozen=True)
class Bounds:
    """The longest the configuration allows, in seconds: fault to firing notification and fix to
    resolved one; for silent alerts, to Prometheus firing and resolving."""
    notify: float
    resolve: float
    prometheus_fire: float
    prometheus_resolve: float

    def text(self, silent=False):
        if silent:
            return f"<= {self.prometheus_fire:.0f} s / <= {self.prometheus_resolve:.0f} s"
        return f"<= {self.notify:.0f} s / <= {self.resolve:.0f} s"


def _secs(x):
    return f"{x:.1f} s"


def _overlapping(intervals, start, end):
    return [iv for iv in intervals if iv.start < end and (iv.end is None or iv.end > start)]


def _verdict(row, problems, ok_text):
    row.observed = "; ".join(problems) if problems else ok_text
    row.result = "FAIL" if problems else "ok"
    return row


# A held slow tier is told at its group's next flush after its fast tier resolved, with room to spare.
HELD_NOTICE_S = 60.0


def judge_held(row, sources, fault, released, end, in_window, notices, suppressions, bounds):
    """A slow SLO tier in its first scenario: held back by its fast tier, no notice before
    `released` (the fast tier's last firing ended), told within HELD_NOTICE_S after it."""
    row.expected = f"held back by {' or '.join(sources)} while it fires, then notified"
    problems = []
    after = [iv for iv in in_window if iv.end is None or iv.end > fault]
    if any(iv.start < fault and (iv.end is None or iv.end > fault) for iv in in_window):
        problems.append("already firing before the fault")
    held = [t for t, by in suppressions if fault <= t <= end and by & set(sources)]
    sent = [n.t for n in notices if n.status == "firing" and n.t >= fault]
    early = [t for t in sent if t < released]
    if not after:
        problems.append("did not fire")
    else:
        row.to_fire = _secs(max(0.0, after[0].start - fault))
        row.to_resolve = "after the drill"
    if after and not held:
        problems.append(f"never seen held back by {' or '.join(sources)}")
    if early:
        problems.append(f"reached the webhook +{_secs(early[0] - fault)} after the fault, while its fast tier fired")
    elif after and not sent:
        problems.append("never reached the webhook after its fast tier resolved")
    elif sent and sent[0] - released > HELD_NOTICE_S:
        problems.append(f"told {sent[0] - released:.0f} s after its fast tier resolved, past {HELD_NOTICE_S:.0f} s")
    row.webhook = (f"+{_secs(sent[0] - released)} after the page resolved / later" if sent and not early else
                   "REACHED early" if early else "NO")
    if bounds:
        row.bound = bounds.text(silent=True)
    return _verdict(row, problems, "fired, held back, notified after the page")


def judge(scenario, alert, marks, intervals, notices, suppressions, bounds=None, others=None):
    """One table row: how `alert` behaved in `scenario`. marks: {start, fault, fix, end};
    suppressions: [(t, {inhibitors})]; bounds (Bounds) checked when given; others: every
    alert's intervals (a held alert is judged against its holder's)."""
    kind, detail = scenario.expectation(alert)
    start, end = marks["start"], marks["end"]
    fault, fix = marks.get("fault", start), marks.get("fix", end)
    in_window = _overlapping(intervals, start, end)
    firing_notices = [n for n in notices if n.status == "firing" and start <= n.t <= end]
    row = Row(scenario.title, alert, kind, "")
    if kind in ("fire", "signal"):
        problems = []
        before = [iv for iv in in_window if iv.start < fault and (iv.end is None or iv.end > fault)]
        after = [iv for iv in in_window if iv.start >= fault]
        if before:
            problems.append("already firing before the fault")
        if after:
            row.to_fire = _secs(after[0].start - fault)
            last = after[-1]
            if last.end is None or last.end > end:
                problems.append("did not resolve")
            else:
                row.to_resolve = "before the fix" if last.end < fix else _secs(last.end - fix)
            if kind == "fire" and after[0].start >= fix:
                problems.append("fired only after the fix")
            if kind == "fire" and alert not in scenario.once and last.end is not None and last.end < fix:
                problems.append("resolved before the fix")
            if len(after) > 1:
                row.observed = f"fired {len(after)} times"
        else:
            problems.append("did not fire")
        if kind == "fire":
            sent = [n.t for n in firing_notices if fault <= n.t]
            since = scenario.resolved_since(alert, sent, fix)
            resolved = [n.t for n in notices if n.status == "resolved" and since <= n.t <= end]
            told = ("NO" if not resolved else "before the fix" if resolved[0] < fix
                    else "+" + _secs(resolved[0] - fix))
            row.webhook = f"{'+' + _secs(sent[0] - fault) if sent else 'NO'} / {told}"
            if not sent:
                problems.append("never reached the webhook")
            if after and not resolved:
                problems.append("resolved notification missing")
            if bounds:
                row.bound = bounds.text()
                if sent and sent[0] - fault > bounds.notify:
                    problems.append(f"notified {sent[0] - fault:.0f} s after the fault, past its bound")
                if resolved and resolved[0] - fix > bounds.resolve:
                    problems.append(f"resolved {resolved[0] - fix:.0f} s after the fix, past its bound")
        else:
            row.expected = "signal (notifies no one)"
            row.webhook = "REACHED" if firing_notices else "silent"
            if firing_notices:
                problems.append("reached the webhook, though its route notifies no one")
            if bounds:
                row.bound = bounds.text(silent=True)
                if after and after[0].start - fault > bounds.prometheus_fire:
                    problems.append(f"fired {after[0].start - fault:.0f} s after the fault, past its bound")
                if after and after[-1].end is not None and after[-1].end - fix > bounds.prometheus_resolve:
                    problems.append(f"resolved {after[-1].end - fix:.0f} s after the fix, past its bound")
        _verdict(row, problems, row.observed or (
            "fired, notified, resolved" if kind == "fire" else "fired silently, resolved"))
    elif kind == "held":
        source_ends = [iv.end if iv.end is not None else float("inf") for a in detail
                       for iv in _overlapping((others or {}).get(a, []), fault, end)]
        row = judge_held(row, detail, fault, max(source_ends, default=fix), end, in_window, notices,
                         suppressions, bounds)
    elif kind == "inhibited":
        sources = detail
        row.expected = f"inhibited by {' or '.join(sources)}"
        problems = []
        after = [iv for iv in in_window if iv.end is None or iv.end > fault]
        held = [t for t, by in suppressions if fault <= t <= end and by & set(sources)]
        if not after:
            problems.append("did not fire in Prometheus (inhibition not exercised)")
        else:
            row.to_fire = _secs(max(0.0, after[0].start - fault))
            if after[-1].end is None or after[-1].end > end:
                problems.append("did not resolve")
            else:
                row.to_resolve = _secs(max(0.0, after[-1].end - fix))
                if bounds and after[-1].end - fix > bounds.prometheus_resolve:
                    problems.append(f"resolved {after[-1].end - fix:.0f} s after the fix, past its bound")
        if after and not held:
            problems.append(f"never seen inhibited by {' or '.join(sources)}")
        if bounds:
            row.bound = bounds.text(silent=True)
        leaks = [n.t for n in firing_notices if n.t >= fault]
        if leaks:
            when = (f"+{_secs(leaks[0] - fix)} after the fix" if leaks[0] >= fix
                    else f"+{_secs(leaks[0] - fault)} after the fault")
            row.webhook = f"REACHED ({when})"
            problems.append(f"reached the webhook {when}")
        else:
            row.webhook = "silent"
        held_by = set().union(*(by for t, by in suppressions if fault <= t <= end)) & set(sources)
        _verdict(row, problems, f"fired, held back by {', '.join(sorted(held_by))}, silent")
    else:
        if in_window:
            first = in_window[0]
            since = max(0.0, first.start - fault) if first.start >= fault else None
            row.to_fire = _secs(since) if since is not None else "before"
            ended = in_window[-1].end
            row.to_resolve = ("still firing" if ended is None or ended > end
                              else _secs(max(0.0, ended - fix)))
            held = {s for t, sources in suppressions if start <= t <= end for s in sources}
            row.webhook = "yes" if firing_notices else ("silent (inhibited by " + ", ".join(sorted(held)) + ")"
                                                        if held else "silent")
            row.observed = "fired"
        elif firing_notices:
            row.webhook = "yes"
            row.observed = "notified (a repeat)"
        else:
            row.observed = "quiet"
        if kind == "allowed":
            row.expected = "fire or quiet"
            row.result = "-"
        else:
            row.result = "FAIL" if (in_window or firing_notices) else "ok"
            if row.result == "FAIL":
                row.observed = "FIRED: " + row.observed
    return row


def health_rows(title, marks, extras, recorder, bound_ms):
    """/health answers 503 within bound_ms while PostgreSQL is down, and the same farol
    process answers 200 again by itself once it is back."""
    fault, fix, end = marks["fault"], marks["fix"], marks["end"]
    during = [r for r in recorder if fault <= r["t"] <= fix and "health_ms" in r]
    # from the first 503 on (PostgreSQL takes a moment to stop), every answer must be a fast 503
    first = next((i for i, r in enumerate(during) if r.get("health") == 503), None)
    rows = []
    if first is None:
        rows.append(Row(title, "/health while down", f"503 within {bound_ms} ms",
                        "never answered 503", result="FAIL"))
    else:
        outage = during[first:]
        bad = [r for r in outage if r.get("health") != 503 or r["health_ms"] > bound_ms]
        worst = max(r["health_ms"] for r in outage)
        observed = f"{len(outage) - len(bad)}/{len(outage)} answers 503, slowest {worst:.0f} ms"
        if bad:
            b = bad[0]
            observed += (f"; +{b['t'] - fault:.1f} s: {b.get('health') or b.get('health_error')}"
                         f" in {b['health_ms']:.0f} ms")
        rows.append(Row(title, "/health while down", f"503 within {bound_ms} ms", observed,
                        to_fire=_secs(outage[0]["t"] - fault), result="FAIL" if bad else "ok"))
    back = next((r for r in recorder if fix <= r["t"] <= end and r.get("health") == 200), None)
    same = extras.get("fault", {}).get("pid") == extras.get("end", {}).get("pid") and extras.get("fault", {}).get("pid")
    if back and same:
        observed, result = f"200 again, same process (pid {extras['fault']['pid']})", "ok"
    elif back:
        observed, result = "200 again, but farol was restarted", "FAIL"
    else:
        observed, result = "no 200 after PostgreSQL returned", "FAIL"
    rows.append(Row(title, "farol recovers by itself", "200, same process", observed,
                    to_resolve=_secs(back["t"] - fix) if back else "", result=result))
    return rows


def watchdog_row(notices, start, end, every_s, eval_s, stalls=(), refused=()):
    """The Watchdog's notifications keep arriving over the whole drill, no gap (from the start,
    until the end) longer than its bound, leaving out the time in which the whole machine
    was frozen (stalls: [(from, to)]) and that in which the drill had its receiver refuse
    them (refused: [(from, to)]); the row says how much was left out."""
    times = sorted(n.t for n in notices if n.alert == WATCHDOG and n.status == "firing" and start <= n.t <= end)
    bound = 2 * every_s + eval_s + 5
    expected = f"every <= {bound:.0f} s"
    if not times:
        return Row("whole drill", WATCHDOG, expected, "never arrived", webhook="NO", result="FAIL")

    def within(spans, a, b):
        """Seconds of [a, b] inside the union of spans (an instant in two counts once)."""
        edges, covered = sorted((max(a, s), min(b, t)) for s, t in spans if min(b, t) > max(a, s)), 0.0
        reach = a
        for s, t in edges:
            covered += max(0.0, t - max(s, reach))
            reach = max(reach, t)
        return covered
    gaps = [(b - a, within(stalls, a, b), within(refused, a, b), within([*stalls, *refused], a, b))
            for a, b in zip([start, *times], [*times, end], strict=True)]
    worst, worst_frozen, worst_refused, worst_left_out = max(gaps, key=lambda g: g[0] - g[3])
    observed = f"{len(times)} notifications, longest gap {worst - worst_left_out:.1f} s"
    left_out = [f"{worst_frozen:.1f} s of it the machine frozen"] * bool(worst_frozen) + \
        [f"{worst_refused:.1f} s of it refused by its receiver"] * bool(worst_refused)
    if left_out:
        observed += f" ({worst:.1f} s, {', '.join(left_out)})"
    return Row("whole drill", WATCHDOG, expected, observed, webhook="yes",
               result="ok" if worst - worst_left_out <= bound else "FAIL")


def load_summary(path):
    """req/s and errors from wrk's output (load.lua prints one DRILL_SUMMARY line)."""
    if not Path(path).exists():
        return ""
    for line in Path(path).read_text().splitlines():
        if line.startswith("DRILL_SUMMARY "):
            s = json.loads(line.split(" ", 1)[1])
            seconds = s["duration_us"] / 1e6 or 1
            http = s["status"]
            socket = s["connect"] + s["read"] + s["write"] + s["timeout"]
            text = f"{s['requests'] / seconds:.0f} req/s, {100 * http / max(1, s['requests']):.1f} % HTTP errors"
            if socket:
                text += f", {socket} socket errors"
            return text
    return "no summary (wrk killed?)"


def build_rows(events, alert_names, intervals, notices, recorder, loads, health_bound_ms, stack_times,
               scenarios=None, bounds=None, skips=()):
    """Every alert judged in every scenario that ran; one that could not run fails unless skipped."""
    times, extras = events_by_scenario(events)
    bounds = bounds or {}
    suppress = {}
    for r in recorder:
        for name, state in (r.get("am") or {}).items():
            if isinstance(state, list):
                suppress.setdefault(name, []).append((r["t"], set(state)))
    rows = []
    for scenario in scenarios or sc.SCENARIOS:
        marks = times.get(scenario.name)
        if scenario.name in skips:
            rows.append(Row(scenario.title, "(scenario)", "run", "skipped on request (--skip)", result="n/a"))
            continue
        if not marks or "start" not in marks:
            rows.append(Row(scenario.title, "(scenario)", "run", "NOT RUN", result="FAIL"))
            continue
        marks.setdefault("end", stack_times["end"])
        first = len(rows)
        if "skip" in marks:
            reason = extras[scenario.name]["skip"].get("note", "")
            rows.append(Row(scenario.title, "(scenario)", "run",
                            f"COULD NOT RUN: {reason} (name it in --skip to run without it)", result="FAIL"))
        else:
            quiet, judged = [], []
            for alert in alert_names:
                row = judge(scenario, alert, marks, intervals.get(alert, []),
                            [n for n in notices if n.alert == alert], suppress.get(alert, []),
                            bounds.get(alert), others=intervals)
                if row.expected in ("quiet", "fire or quiet") and row.observed == "quiet":
                    quiet.append(alert)
                else:
                    judged.append(row)
            rank = {"fire": 0, "signal (notifies no one)": 0, "fire or quiet": 2, "quiet": 3}
            rows += sorted(judged, key=lambda r: rank.get(r.expected, 1))   # 1: inhibited by …
            if scenario.name == "database" and "fault" in marks and "fix" in marks:
                rows += health_rows(scenario.title, marks, extras[scenario.name], recorder, health_bound_ms)
            rows.append(Row(scenario.title, f"{len(quiet)} other alerts", "quiet", "quiet"))
        if len(rows) > first:
            rows[first].load = loads.get(scenario.name, "")
    return rows


def coverage_row(alert_names, scenarios, skips):
    """Every alert covered by a scenario: n/a when only skipped scenarios would have, else FAIL."""
    never = sc.uncovered(alert_names, scenarios)
    if never:
        return Row("whole drill", "every alert", "covered by a scenario",
                   f"NO SCENARIO FOR: {', '.join(never)}", result="FAIL")
    missing = sc.uncovered(alert_names, [s for s in scenarios if s.name not in skips])
    if missing:
        return Row("whole drill", "every alert", "covered by a scenario",
                   f"NOT PROVEN (skipped): {', '.join(missing)}", result="n/a")
    return Row("whole drill", "every alert", "covered by a scenario",
               f"all {len([a for a in alert_names if a != WATCHDOG])} proven by a scenario", result="ok")


def render_table(rows):
    header = Row("scenario", "alert", "expected", "observed", "fault→firing",
                 "webhook firing/resolved", "fix→resolved", "bound notify/resolve", "result",
                 "load during the scenario")
    cols = ["result", "scenario", "alert", "expected", "observed", "to_fire", "webhook", "to_resolve", "bound",
            "load"]
    table = [[getattr(r, c) for c in cols] for r in [header, *rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    text, previous = [], None
    for i, line in enumerate(table):
        if i > 1 and line[1] != previous:
            text.append("")
        previous = line[1]
        text.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            text.append("  ".join("-" * w for w in widths))
    md = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in table[1:]]
    return "\n".join(text), "\n".join(md)


def settle_row(marks, intervals, expect_idle, notices=(), later=(), bounds=None):
    """After the drill: the full drill must find everything resolved, and the alerts left to
    resolve here (`later`: [(alert, from when)]) told resolved within their bound;
    --quick only reports what is still firing."""
    still = sorted(n for n, ivs in intervals.items() if n != WATCHDOG and ivs and ivs[-1].end is None)
    rows = []
    if marks and "start" in marks:
        late = sorted((ivs[-1].end - marks["start"], n) for n, ivs in intervals.items()
                      if n != WATCHDOG and ivs and ivs[-1].end is not None
                      and marks["start"] <= ivs[-1].end <= marks.get("end", time.time()))
        resolved = ", ".join(f"{n} +{t:.0f} s" for t, n in late)
    else:
        resolved = ""
    if not expect_idle:
        return [Row("after the drill", "every alert", "not waited for (--quick)",
                    f"still firing: {', '.join(still)}" if still else "all resolved", result="-")]
    observed = f"still firing: {', '.join(still)}" if still else "all resolved"
    if resolved:
        observed += f" ({resolved} into the wait)"
    rows.append(Row("after the drill", "every alert", "resolved", observed, result="FAIL" if still else "ok"))
    for alert, fixed_at in later:
        ivs = intervals.get(alert, [])
        sent = [n.t for n in notices if n.alert == alert and n.status == "resolved" and n.t >= fixed_at]
        row = Row("after the drill", alert, "resolved, notified", "")
        problems = []
        if not ivs or ivs[-1].end is None:
            problems.append("did not resolve")
        else:
            row.to_resolve = _secs(max(0.0, ivs[-1].end - fixed_at))
        if not sent:
            problems.append("resolved notification missing")
        else:
            row.webhook = f"resolved +{_secs(sent[-1] - fixed_at)}"
        bound = (bounds or {}).get(alert)
        if bound:
            row.bound = bound.text()
            if sent and sent[-1] - fixed_at > bound.resolve:
                problems.append("resolved past its bound")
        rows.append(_verdict(row, problems, "resolved, notified"))
    return rows
