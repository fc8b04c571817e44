#!/usr/bin/env python3
"""The fire drill's eyes: what scripts/fire-drill asks of Prometheus, Alertmanager and the
webhook log while it runs, and the report at the end (scenarios.py says what each scenario
expects, judge.py gives the verdicts). Subcommands (see main()):

    scenarios                 this run's scenarios, in order (DRILL_QUICK=1: --quick's)
    adjust-config             the drill's prometheus.yml adjusted (adjust_config)
    targets, series QUERY     wait until every target is up, or QUERY returns a series
    next-scrape JOB           sleep until --lead s before JOB's next scrape
    mark EVENT SCENARIO       append start, fault, fix, end or skip to the timeline
    record FAROL_URL          every 0.5 s: Alertmanager's view (who inhibits whom) and /health
    wait STATE SCENARIO       until its alerts have fired, resolved, or nothing it judges fires
    report                    judge every alert in every scenario, print the table, exit 1 on a mismatch

Environment: DRILL_WORK, DRILL_CONFIG, and STACK_PROMETHEUS_URL, STACK_ALERTMANAGER_URL,
STACK_WEBHOOK_LOG from scripts/stand-ins/monitoring-stack.sh.
"""

import argparse
import dataclasses
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import judge as jd
import scenarios as sc
from judge import WATCHDOG, Bounds, Notice, events_by_scenario

import monitoring_config as mc

# On top of every bound: a fault taking a moment to show, the recorder's polling, a busy machine.
SLACK_S = 15.0


def expr_window(expr, record_window):
    """The longest range an expression reads, in seconds, through the records it reads."""
    ranges = [mc.parse_duration(expr[a:b]) / 1000 for a, b, kind in mc.promql_durations(expr) if kind == "duration"]
    names = set(re.findall(r"[A-Za-z_:][\w:]*", expr))
    return max(ranges + [w for name, w in record_window.items() if name in names], default=0)


def recorded_windows(rules):
    """{record name: the longest range it reads, in seconds}, through other records."""
    windows = {}
    for _ in range(5):   # passes: the longest chain of records here is four deep
        for rule in rules:
            if "record" in rule:
                windows[rule["record"]] = max(windows.get(rule["record"], 0), expr_window(rule["expr"], windows))
    return windows


def run_scenarios():
    """This run's scenarios, and all of them by name with the settle phase."""
    chosen = sc.for_run(os.environ.get("DRILL_QUICK") == "1")
    return chosen, {s.name: s for s in [*chosen, sc.SETTLE]}


def run_skips():
    return {s for s in os.environ.get("DRILL_SKIP", "").split(",") if s}


_MATCHER = re.compile(r'^\s*(\w+)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


def _matches(matchers, labels):
    """Whether labels pass Alertmanager matchers ("name op value", the value quoted or
    not); one the pattern cannot read stops the drill rather than match by mistake."""
    for text in matchers:
        match = _MATCHER.match(text)
        if not match:
            raise ValueError(f"cannot read the Alertmanager matcher {text!r}")
        name, op, value = match.groups()
        have = labels.get(name, "")
        if (op == "=" and have != value) or (op == "!=" and have == value) or \
                (op == "=~" and not re.fullmatch(value, have)) or (op == "!~" and re.fullmatch(value, have)):
            return False
    return True


def route_timing(route, labels):
    """(group_wait, group_interval) in seconds of the first child route that takes these
    labels (inheriting from the root), else the root's."""
    wait, interval = route.get("group_wait", "30s"), route.get("group_interval", "5m")
    for child in route.get("routes", []):
        if _matches(child.get("matchers", []), labels):
            wait, interval = child.get("group_wait", wait), child.get("group_interval", interval)
            break
    return mc.parse_duration(wait) / 1000, mc.parse_duration(interval) / 1000


def http_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def notices_of(webhook_log):
    """One Notice per alert of each notification the webhook receiver took (not of those it
    refused, scenario 7i's: they reached no one)."""
    return [Notice(e["received_at"], e["path"], a["labels"].get("alertname", "?"), a["status"])
            for e in read_jsonl(webhook_log) if not e.get("refused")
            for a in e["notification"].get("alerts", [])]


def read_jsonl(path):
    """The complete lines of a JSON-lines file (a line being written is read next time)."""
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().split("\n")[:-1] if line.strip()]


class Stack:
    def __init__(self, env=os.environ):
        self.work = Path(env["DRILL_WORK"])
        self.config = Path(env["DRILL_CONFIG"])
        self.prometheus = env.get("STACK_PROMETHEUS_URL", "").rstrip("/")
        self.alertmanager = env.get("STACK_ALERTMANAGER_URL", "").rstrip("/")
        self.webhook_log = env.get("STACK_WEBHOOK_LOG", "/nonexistent")
        prom = mc.load_yaml(self.config / "prometheus/prometheus.yml")
        self.eval_s = mc.parse_duration(prom["global"]["evaluation_interval"]) / 1000
        route = mc.load_yaml(self.config / "alertmanager/alertmanager.yml")["route"]
        # the longest a new group waits: after it, whatever Alertmanager would send has been sent
        self.group_wait_s = max(mc.parse_duration(r.get("group_wait", route["group_wait"]))
                                for r in [route, *route.get("routes", [])]) / 1000
        # the longest scrape interval (one scrape may be missed: twice it)
        scrape_s = max(mc.parse_duration(j.get("scrape_interval", prom["global"]["scrape_interval"]))
                       for j in prom["scrape_configs"]) / 1000
        all_rules = [(group, rule) for path in sorted((self.config / "prometheus/rules").glob("*.yml"))
                     for group in mc.load_yaml(path)["groups"] for rule in group["rules"]]
        record_window = recorded_windows([rule for _, rule in all_rules])
        self.rule_interval_s, self.bounds = {}, {}   # the spacing of each alert's ALERTS samples
        for group, rule in all_rules:
            if "alert" not in rule:
                continue
            every = mc.parse_duration(group["interval"]) / 1000 if "interval" in group else self.eval_s
            self.rule_interval_s[rule["alert"]] = every
            window = expr_window(rule["expr"], record_window)
            pending = mc.parse_duration(rule.get("for", "0s")) / 1000
            tail = mc.parse_duration(rule.get("keep_firing_for", "0s")) / 1000
            wait, interval = route_timing(route, {"alertname": rule["alert"], **rule.get("labels", {})})
            seen = 2 * scrape_s + 2 * every + SLACK_S
            bounds = Bounds(
                notify=window + pending + seen + wait, resolve=window + tail + seen + interval,
                prometheus_fire=window + pending + seen, prometheus_resolve=window + tail + seen)
            # one alert with a rule per severity: the loosest of their bounds
            known = self.bounds.get(rule["alert"])
            self.bounds[rule["alert"]] = bounds if known is None else Bounds(
                *(max(a, b) for a, b in zip(dataclasses.astuple(known), dataclasses.astuple(bounds),
                                            strict=True)))
        watchdog = next(r for r in route.get("routes", []) if 'alertname = "Watchdog"' in r.get("matchers", []))
        self.watchdog_every_s = (mc.parse_duration(watchdog.get("group_interval", route["group_interval"]))
                                 + mc.parse_duration(watchdog.get("repeat_interval", route["repeat_interval"]))) / 1000
        self.events_path = self.work / "events.jsonl"

    def notices(self):
        return notices_of(self.webhook_log)

    def prom_alerts(self):
        """{alertname: state} from Prometheus (firing wins over pending)."""
        states = {}
        for alert in http_json(f"{self.prometheus}/api/v1/alerts")["data"]["alerts"]:
            name = alert["labels"]["alertname"]
            if states.get(name) != "firing":
                states[name] = alert["state"]
        return states

    def am_alerts(self):
        """{alertname: the set of alerts inhibiting it, or "active"}, as Alertmanager sees it now."""
        alerts = http_json(f"{self.alertmanager}/api/v2/alerts")
        by_fp = {a["fingerprint"]: a["labels"].get("alertname", "?") for a in alerts}
        view = {}
        for a in alerts:
            name = a["labels"].get("alertname", "?")
            inhibitors = {by_fp.get(fp, fp) for fp in a["status"].get("inhibitedBy") or []}
            if a["status"]["state"] == "suppressed":
                view[name] = inhibitors or {"(silence)"}
            else:
                view.setdefault(name, "active")
        return view


def cmd_mark(stack, args):
    entry = {"t": args.at or time.time(), "event": args.event, "scenario": args.scenario}
    if args.note:
        entry["note"] = args.note
    for pair in args.extra:
        key, _, value = pair.partition("=")
        entry[key] = value
    with open(stack.events_path, "a") as f:
        f.write(json.dumps(entry) + "\n")
    return 0


def watch_stalls(path, tick=0.1, threshold=1.0):
    """A daemon thread: appends to path every span in which it was not woken for more than
    `threshold` seconds, the machine frozen (it waits on nothing but its own clock)."""
    with open(path, "a", buffering=1) as out:
        before = time.time()
        while True:
            time.sleep(tick)
            now = time.time()
            if now - before > threshold:
                out.write(json.dumps({"from": before + tick, "to": now}) + "\n")
            before = now


def cmd_record(stack, args):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=watch_stalls, args=(stack.work / "stalls.jsonl",), daemon=True).start()
    with open(stack.work / "recorder.jsonl", "a", buffering=1) as out:
        health_url = args.farol.rstrip("/") + "/health"
        while True:
            started = time.time()
            entry = {"t": started}
            try:
                entry["am"] = {k: (sorted(v) if isinstance(v, set) else v) for k, v in stack.am_alerts().items()}
            except (OSError, ValueError) as err:
                entry["am_error"] = str(err)
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(health_url, timeout=3) as resp:
                    entry["health"] = resp.status
            except urllib.error.HTTPError as err:
                entry["health"] = err.code
            except OSError as err:
                entry["health"] = None
                entry["health_error"] = str(getattr(err, "reason", err))
            entry["health_ms"] = round((time.monotonic() - t0) * 1000, 1)
            out.write(json.dumps(entry) + "\n")
            time.sleep(max(0.05, 0.5 - (time.time() - started)))


def cmd_wait(stack, args):
    scenario = run_scenarios()[1][args.scenario]
    times, _ = events_by_scenario(read_jsonl(stack.events_path))
    marks = times.get(scenario.name, {})
    deadline = time.monotonic() + args.timeout
    said = set()

    def say(key, text):
        if key not in said:
            said.add(key)
            print(f"    {text}", flush=True)

    def rel(t, since):
        return f"+{t - since:.1f} s"

    hold_until = None
    # A signal may end before the fault does (PostgresPrimaryUnreachable hands over to
    # PostgresDown): once seen firing since the fault, it has fired.
    signalled = set()
    while True:
        now = time.time()
        try:
            prom, am = stack.prom_alerts(), stack.am_alerts()
        except (OSError, ValueError) as err:
            say(f"error:{err}", f"(could not read the alerts: {err})")
            prom, am = None, None
        notices = stack.notices()
        missing = []
        if prom is not None and args.state == "fired":
            fault = marks["fault"]
            for alert in scenario.fire:
                if prom.get(alert) == "firing":
                    signalled.add(alert)
                    say(f"p:{alert}", f"{alert} firing in Prometheus ({rel(now, fault)})")
                elif alert not in scenario.once or alert not in signalled:
                    missing.append(f"{alert} firing")
                got = [n.t for n in notices if n.alert == alert and n.status == "firing" and n.t >= fault]
                if got:
                    say(f"w:{alert}", f"{alert} reached the webhook ({rel(got[0], fault)})")
                else:
                    missing.append(f"{alert} at the webhook")
            for alert in scenario.signal:
                if prom.get(alert) == "firing":
                    signalled.add(alert)
                    say(f"p:{alert}", f"{alert} firing in Prometheus, notifying no one ({rel(now, fault)})")
                elif alert not in signalled:
                    missing.append(f"{alert} firing")
            for alert, sources in [*scenario.inhibited.items(), *scenario.held.items()]:
                if prom.get(alert) == "firing":
                    say(f"p:{alert}", f"{alert} firing in Prometheus ({rel(now, fault)})")
                else:
                    missing.append(f"{alert} firing")
                by = am.get(alert) if isinstance(am.get(alert), set) else set()
                if by & set(sources):
                    say(f"i:{alert}", f"{alert} held back by Alertmanager, inhibited by "
                                      f"{', '.join(sorted(by & set(sources)))} ({rel(now, fault)})")
                else:
                    missing.append(f"{alert} inhibited by {' or '.join(sources)}")
                if any(n.alert == alert and n.status == "firing" and n.t >= fault for n in notices):
                    say(f"leak:{alert}", f"{alert} REACHED THE WEBHOOK although it should be inhibited")
        elif prom is not None and args.state == "resolved":
            fix = marks["fix"]
            for alert in scenario.resolving():
                if prom.get(alert) == "firing":
                    missing.append(f"{alert} resolved")
                else:
                    say(f"p:{alert}", f"{alert} resolved in Prometheus ({rel(now, fix)})")
            for alert in scenario.fire:
                fired = [n.t for n in notices if n.alert == alert and n.status == "firing" and n.t >= marks["fault"]]
                since = scenario.resolved_since(alert, fired, fix)
                got = [n.t for n in notices if n.alert == alert and n.status == "resolved" and n.t >= since]
                if got:
                    say(f"w:{alert}", f"{alert} resolved at the webhook "
                                      f"({rel(got[0], fix) if got[0] >= fix else 'before the fix'})")
                else:
                    missing.append(f"{alert} resolved at the webhook")
            for alert in scenario.inhibited:
                if any(n.alert == alert and n.status == "firing" and n.t >= fix for n in notices):
                    say(f"leak:{alert}", f"{alert} REACHED THE WEBHOOK after the fix (its inhibition ended first)")
        elif prom is not None:   # quiet, idle
            for alert, state in sorted(prom.items()):
                if alert == WATCHDOG:
                    continue
                kind, _ = scenario.expectation(alert)
                if args.state == "idle" and state == "firing":
                    missing.append(f"{alert} still firing")
                elif args.state == "quiet" and alert in sc.PERSISTS:
                    continue   # fired in an earlier scenario, resolves in the settle phase
                elif args.state == "quiet" and kind != "allowed" and (state == "firing" or alert in scenario.fire):
                    missing.append(f"{alert} still {state}")
            if args.state == "idle":
                # idle means told too: every alert whose last notification said firing
                # has had its resolved one (the slow burn's arrives a group interval
                # after Prometheus resolves it)
                last = {}
                for n in sorted(notices, key=lambda n: n.t):
                    last[n.alert] = n.status
                missing += [f"{alert} resolved at the webhook" for alert, status in sorted(last.items())
                            if alert != WATCHDOG and status == "firing"]
        if prom is not None and not missing:
            if hold_until is None:
                hold = args.hold
                if args.state == "fired" and (scenario.inhibited or scenario.held) or args.state == "resolved":
                    # A moment more than a new group's wait: every group Alertmanager has
                    # has flushed once, so an alert that should stay silent would have
                    # been sent by now if it were going to be.
                    hold = max(hold, stack.group_wait_s + 1)
                hold_until = time.monotonic() + hold
                if hold >= 1:
                    say("hold", f"holding {hold:.0f} s")
            if time.monotonic() >= hold_until:
                return 0
        elif missing:
            hold_until = None
        if time.monotonic() > deadline:
            print(f"    timed out after {args.timeout:.0f} s waiting for: {', '.join(missing)}", flush=True)
            return 1
        time.sleep(0.25)


# postgres_exporter 0.11 sleeps a second before it reports pg_up 0: a 1 s scrape timeout
# would leave pg_up without a sample, and PostgresDown could never fire.
SCRAPE_FLOORS = {"postgres": "2s"}


def own_filesystems_only(work):
    """The node job's metric relabelling that keeps only the filesystem series of mounts under
    the drill's work directory: in the drill's shrunk time a shared disk's real fill rate looks
    30 times steeper. Relabelling has no negative match: mark the own, drop the unmarked, unmark."""
    mark = "__tmp_drill_own_filesystem"   # __tmp_: Prometheus's prefix for scratch labels
    return [
        # the canonical path: the mount table holds no symlink
        {"source_labels": ["__name__", "mountpoint"],
         "regex": f"node_filesystem_.+;{re.escape(os.path.realpath(work))}/.+",
         "target_label": mark, "replacement": "yes"},
        {"source_labels": ["__name__", mark], "regex": "node_filesystem_.+;", "action": "drop"},
        {"regex": mark, "action": "labeldrop"},
    ]


def adjust_config(path, work, floors=SCRAPE_FLOORS):
    """Raises the scrape interval and timeout of the jobs in `floors` and narrows the node job's
    filesystems (nothing else); returns what it changed."""
    doc = mc.load_yaml(path)
    glob = doc.get("global", {})
    changed = []
    if not any(job["job_name"] == "node" for job in doc.get("scrape_configs", [])):
        raise SystemExit(f"{path}: no scrape job named node, whose filesystems the drill must narrow")
    for job in doc.get("scrape_configs", []):
        if job["job_name"] == "node":
            job["metric_relabel_configs"] = job.get("metric_relabel_configs", []) + own_filesystems_only(work)
            changed.append(f"node: filesystem series of mounts under {work} only")
        floor = floors.get(job["job_name"])
        if not floor:
            continue
        timeout = job.get("scrape_timeout", glob.get("scrape_timeout", "10s"))
        interval = job.get("scrape_interval", glob.get("scrape_interval", "1m"))
        if mc.parse_duration(timeout) < mc.parse_duration(floor):
            job["scrape_timeout"] = floor
            if mc.parse_duration(interval) < mc.parse_duration(floor):
                job["scrape_interval"] = floor
            changed.append(f"{job['job_name']}: scrape every {job.get('scrape_interval', interval)}, "
                           f"timeout {floor} (was {interval}, {timeout})")
    mc.dump_yaml(doc, Path(path), "Generated by scripts/drill-config, then scripts/lib/fire_drill/drill.py "
                 "adjust-config:\n" + "\n".join(changed or ["nothing to adjust"]))
    return changed


def cmd_adjust_config(stack, args):
    for line in adjust_config(stack.config / "prometheus/prometheus.yml", stack.work):
        print(f"    {line}")
    return 0


def cmd_next_scrape(stack, args):
    """Sleeps until `lead` seconds before the next scrape of a job: a scrape that missed the
    database fault would delay its inhibitor by half the `for:` of the alerts it holds back."""
    from datetime import datetime
    targets = http_json(f"{stack.prometheus}/api/v1/targets?state=active")["data"]["activeTargets"]
    target = next(t for t in targets if t["labels"].get("job") == args.job)
    stamp = target["lastScrape"].rstrip("Z")
    stamp = stamp[:26] if "." in stamp else stamp      # Python reads microseconds at most
    last = datetime.fromisoformat(stamp + "+00:00").timestamp()
    interval = mc.parse_duration(target.get("scrapeInterval") or "1s") / 1000
    now = time.time()
    nxt = last + interval
    while nxt - args.lead < now + 0.05:
        nxt += interval
    time.sleep(nxt - args.lead - now)
    return 0


def poll(timeout, check):
    """check() -> (done, text) every 0.5 s until done (exit 0) or the timeout (exit 1); prints the last text."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, text = check()
        except (OSError, ValueError) as err:
            done, text = False, str(err)
        if done or time.monotonic() > deadline:
            if text:
                print(f"    {text}")
            return 0 if done else 1
        time.sleep(0.5)


def cmd_targets(stack, args):
    def check():
        targets = http_json(f"{stack.prometheus}/api/v1/targets?state=active")["data"]["activeTargets"]
        down = [f"{t['labels'].get('job')} {t['scrapeUrl']}: {t['health']} {t.get('lastError', '')}".rstrip()
                for t in targets if t["health"] != "up"]
        if targets and not down:
            return True, f"all {len(targets)} scrape targets up"
        return False, "not up: " + "; ".join(down)
    return poll(args.timeout, check)


def cmd_series(stack, args):
    url = f"{stack.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": args.query})

    def check():
        found = bool(http_json(url)["data"]["result"])
        return found, "" if found else f"no series for {args.query} within {args.timeout:.0f} s"
    return poll(args.timeout, check)


def faulted_5xx_share(stack, marks):
    """The share of /api/* requests that farol answered with 5xx between fault and fix,
    from its own metrics (wrk's totals cover the whole scenario); None without data."""
    if "fault" not in marks or "fix" not in marks or marks["fix"] - marks["fault"] < 1:
        return None
    span = f"{max(1, round(marks['fix'] - marks['fault']))}s"
    sel = 'http_server_request_duration_seconds_count{job="farol",http_route=~"/api/.*"'
    expr = (f'sum(increase({sel},http_response_status_code=~"5.."}}[{span}])) '
            f'/ sum(increase({sel}}}[{span}]))')
    try:
        result = http_json(f"{stack.prometheus}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr, "time": f"{marks['fix']:.3f}"}))["data"]["result"]
    except (OSError, ValueError):
        return None
    value = float(result[0]["value"][1]) if result else float("nan")
    return None if value != value else 100 * value


def cmd_report(stack, args):
    events = read_jsonl(stack.events_path)
    if not events:
        print("no events: the drill did not start")
        return 1
    start, end = events[0]["t"], time.time()
    span = int(end - start) + 30
    data = http_json(f"{stack.prometheus}/api/v1/query?" + urllib.parse.urlencode(
        {"query": f'ALERTS{{alertstate="firing"}}[{span}s]', "time": f"{end:.3f}"}), timeout=30)
    firing_now = {name for name, state in stack.prom_alerts().items() if state == "firing"}
    samples = {}
    for series in data["data"]["result"]:
        samples.setdefault(series["metric"]["alertname"], []).extend(float(t) for t, _ in series["values"])
    intervals = {name: jd.close_open(jd.firing_intervals(ts, stack.rule_interval_s.get(name, stack.eval_s)),
                                  name in firing_now)
                 for name, ts in samples.items()}
    # once each: an alert may have a rule per severity
    alert_names = list(dict.fromkeys(r["alert"] for r in mc.rules(stack.config)
                                     if "alert" in r and r["alert"] != WATCHDOG))
    notices = stack.notices()
    recorder = read_jsonl(stack.work / "recorder.jsonl")
    scenarios, _ = run_scenarios()
    skips = run_skips()
    loads = {s.name: jd.load_summary(stack.work / f"load-{s.name}.log") for s in scenarios}
    times, _ = events_by_scenario(events)
    for name, marks in times.items():
        share = faulted_5xx_share(stack, marks)
        if share is not None and loads.get(name):
            loads[name] += f" ({share:.1f} % 5xx while faulted)"
    rows = jd.build_rows(events, alert_names, intervals, notices, recorder, loads, args.health_bound_ms,
                      {"end": end}, scenarios, stack.bounds, skips)
    fixes = {s.name: times[s.name]["fix"] for s in scenarios
             if s.name not in skips and "fix" in times.get(s.name, {})}
    later = [(alert, sc.last_fed(alert, scenarios, fixes) or times.get(s.name, {}).get("fix", start))
             for s in scenarios if s.name not in skips for alert in s.resolve_later]
    rows += jd.settle_row(times.get("settle"), intervals, args.expect_idle, notices, later, stack.bounds)
    stalls = [(s["from"], s["to"]) for s in read_jsonl(stack.work / "stalls.jsonl")]
    # the scenarios in which the drill had the Watchdog's receiver refuse it, fault to fix
    refused = [(times[s.name]["fault"], times[s.name]["fix"]) for s in scenarios
               if s.refuses_watchdog and {"fault", "fix"} <= times.get(s.name, {}).keys()]
    rows.append(jd.watchdog_row(notices, start, end, stack.watchdog_every_s, stack.eval_s, stalls, refused))
    if args.expect_idle:   # the full drill: every alert proven
        rows.append(jd.coverage_row(alert_names, scenarios, skips))
    text, md = jd.render_table(rows)
    print(text)
    (stack.work / "table.md").write_text(md + "\n")
    notes = {}
    for s in scenarios:
        for alert, why in s.allowed.items():
            notes.setdefault(alert, why)
    print("\nfire or quiet:")
    for alert, why in notes.items():
        print(f"  {alert}: {why}")
    failed = [r for r in rows if r.result == "FAIL"]
    untested = [r for r in rows if r.result == "n/a"]
    checked = [r for r in rows if r.result in ("ok", "FAIL")]
    print(f"\n{len(checked) - len(failed)} of {len(checked)} checks passed"
          + (f", {len(untested)} not tested" if untested else "")
          + f" (table: {stack.work / 'table.md'})")
    if skips:
        print(f"SKIPPED on request: {', '.join(sorted(skips))}: what they prove is not proven by this run")
    for r in failed:
        print(f"MISMATCH  {r.scenario}: {r.alert}: expected {r.expected}, observed {r.observed}")
    return 1 if failed else 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("mark")
    p.add_argument("event", choices=["start", "fault", "fix", "end", "skip"])
    p.add_argument("scenario", choices=sorted(sc.BY_NAME))
    p.add_argument("--note")
    p.add_argument("--at", type=float)
    p.add_argument("extra", nargs="*", metavar="KEY=VALUE")
    p = sub.add_parser("record")
    p.add_argument("farol")
    p = sub.add_parser("wait")
    p.add_argument("state", choices=["fired", "resolved", "quiet", "idle"])
    p.add_argument("scenario", choices=sorted(sc.BY_NAME))
    p.add_argument("--timeout", type=float, required=True)
    p.add_argument("--hold", type=float, default=0)
    sub.add_parser("adjust-config")
    sub.add_parser("scenarios")
    p = sub.add_parser("next-scrape")
    p.add_argument("job")
    # pg_stop (runuser, pg_ctl, its signal) took 0.14 s here on an idle machine; the rest
    # is room for a busy one
    p.add_argument("--lead", type=float, default=0.5)
    p = sub.add_parser("targets")
    p.add_argument("--timeout", type=float, required=True)
    p = sub.add_parser("series")
    p.add_argument("query")
    p.add_argument("--timeout", type=float, required=True)
    p = sub.add_parser("report")
    p.add_argument("--health-bound-ms", type=int, default=2000)
    p.add_argument("--expect-idle", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "scenarios":
        print("\n".join(s.name for s in run_scenarios()[0]))
        return 0
    stack = Stack()
    commands = {"mark": cmd_mark, "record": cmd_record, "wait": cmd_wait, "targets": cmd_targets,
                "report": cmd_report, "adjust-config": cmd_adjust_config, "next-scrape": cmd_next_scrape,
                "series": cmd_series}
    return commands[args.command](stack, args)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
