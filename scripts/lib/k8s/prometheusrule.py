"""The production PrometheusRule and AlertmanagerConfig, generated from monitoring/'s rule
files and alertmanager.yml for the shared Prometheus and Alertmanager of a cluster: what
changes and why is in docs/kubernetes.md ("The alerts: generated, not copied"). A pg_*
metric without a CloudNativePG equivalent in PG_TO_CNPG stops the generation. Run through
scripts/gen-prometheusrule."""

from __future__ import annotations

import argparse
import difflib
import glob
import os
import pathlib
import re
import sys

import yaml

import monitoring_config as mc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
RULES_GLOB = os.path.join(REPO, "monitoring", "prometheus", "rules", "*.yml")
# alerts with no compose counterpart (the database's volumes), appended after compose's
PRODUCTION_RULES_GLOB = os.path.join(REPO, "monitoring", "prometheus", "production", "*.yml")
ALERTMANAGER = os.path.join(REPO, "monitoring", "alertmanager", "alertmanager.yml")
OUTPUT = os.path.join(REPO, "deploy", "k8s", "overlays", "production", "prometheusrule.yaml")
AM_OUTPUT = os.path.join(REPO, "deploy", "k8s", "overlays", "production", "alertmanagerconfig.yaml")
# the nodes' alerts, Prometheus's and Alertmanager's own: the platform's, as in kube-prometheus
PLATFORM_GROUPS = {"host", "prometheus", "alertmanager"}
# compose's own, which production says otherwise: a restart is FarolPodRestarted's there
# (kube-state-metrics' restart count, monitoring/prometheus/production/pods.yml)
COMPOSE_ONLY_GROUPS = {"farol-restarts"}
# the production expression of a rule whose compose one cannot say it
PRODUCTION_EXPR = {
    # the exporter is in the database's pod: a failed scrape is the instance down at once
    # (a lost node or pod), unless every kube-state-metrics sample of the last 5 minutes
    # reported the pod Ready, one of them in the last 2 minutes (four scrapes: a
    # kube-state-metrics lost with the node leaves old ones; one silent longer counts as
    # down, and pages), the target is 5 minutes old, and its scrapes in
    # those minutes either all failed or changed more than once: a scrape path broken for good
    # or flaky (a NetworkPolicy, a relabelling, timeouts), ScrapeTargetDown's ticket when
    # steady. Then it counts as up, so that PostgresDown resolves and stops holding
    # farol's pages back. A lost node changes it once (after a failed scrape in the 5
    # minutes before, more: then it counts as down once kube-state-metrics reports the pod
    # not Ready, or has said nothing for 2 minutes). Without `cluster` (which `up` has
    # not) the sides are one series, with no gap; without kube-state-metrics every failed
    # scrape counts as down
    "instance:postgres_up:gapless": (
        'max without (cluster) (cnpg_collector_up)\n'
        '  or\n'
        '(\n'
        '  up{job="postgres"} == 0\n'
        '    unless on (namespace, pod)\n'
        '  (\n'
        '    min by (namespace, pod) (min_over_time(kube_pod_status_ready{condition="true"}[5m])) == 1\n'
        '      and on (namespace, pod)\n'
        '    max by (namespace, pod) (last_over_time(kube_pod_status_ready{condition="true"}[2m]))\n'
        '      and on (namespace, pod)\n'
        '    (\n'
        '      max by (namespace, pod) (max_over_time(up{job="postgres"}[5m])) == 0\n'
        '        or\n'
        '      max by (namespace, pod) (changes(up{job="postgres"}[5m])) > 1\n'
        '    )\n'
        '      and on (namespace, pod)\n'
        '    max by (namespace, pod) (up{job="postgres"} offset 5m)\n'
        '  )\n'
        ')\n'
        '  or\n'
        'clamp(up{job="postgres"}, 1, 1)\n'),
    # the standbys expected are the Cluster's (a Pending or re-cloning one has no target);
    # farol's own query counts the WAL senders streaming (database-monitoring.yaml)
    "PostgresReplicationBroken": (
        'max by (namespace) (cnpg_farol_replication_streaming{role="primary"}) == 0\n'),
    "PostgresReplicationDegraded": (
        'max by (namespace) (cnpg_farol_replication_streaming{role="primary"}) < STANDBYS > 0\n'),
    # a query failed (cnpg_last_error) or the collector's own work did, while the server answers
    "PostgresExporterQueryFailing": (
        '(\n'
        '  max by (namespace, job, instance, role) (cnpg_last_error) > 0\n'
        '    or\n'
        '  max by (namespace, job, instance, role) (cnpg_collector_last_collection_error) > 0\n'
        ')\n'
        '  and on (namespace, job, instance)\n'
        'max by (namespace, job, instance) (cnpg_collector_up) > 0\n'),
    # the Barman Cloud plugin's newest backup (0 before the first: then it fires too)
    "PostgresBackupTooOld": (
        'time() - max by (namespace) (barman_cloud_cloudnative_pg_io_last_available_backup_timestamp) > 26 * 3600\n'),
}

DATABASE = os.path.join(REPO, "deploy", "k8s", "overlays", "production", "database.yaml")


def cluster() -> dict:
    with open(DATABASE, encoding="utf-8") as f:
        return next(d for d in yaml.safe_load_all(f) if d and d.get("kind") == "Cluster")


def standbys() -> int:
    count = int(cluster()["spec"]["instances"]) - 1
    if count < 1:
        # PostgresReplicationBroken would page for ever on a cluster without standbys
        raise ValueError(f"{DATABASE}: the Cluster declares no standby; the replication alerts expect one")
    return count


# words of an expression replaced with what the Cluster declares
PLACEHOLDERS = {"STANDBYS": standbys, "INSTANCES": lambda: standbys() + 1}


def production_expr(name: str, expr: str) -> str:
    """PRODUCTION_EXPR's or compose's expression, with the Cluster's counts in its placeholders."""
    expr = PRODUCTION_EXPR.get(name, expr)
    for word, value in PLACEHOLDERS.items():
        expr = re.sub(rf"\b{word}\b", lambda _, value=value: str(value()), expr)
    return expr


# postgres_exporter metric -> (CloudNativePG metric, label matchers it needs), from
# CloudNativePG's collector and its default monitoring queries
PG_TO_CNPG = {
    "pg_up": ("cnpg_collector_up", ""),
    "pg_stat_activity_count": ("cnpg_backends_total", ""),
    "pg_settings_max_connections": ("cnpg_pg_settings_setting", 'name="max_connections"'),
    # the primary's view of each standby's replay lag in bytes (computed alike by both)
    "pg_stat_replication_pg_wal_lsn_diff": ("cnpg_pg_stat_replication_replay_diff_bytes", ""),
    "pg_stat_archiver_failed_count": ("cnpg_pg_stat_archiver_failed_count", ""),
    "pg_stat_archiver_archived_count": ("cnpg_pg_stat_archiver_archived_count", ""),
    # the WAL segments waiting to be archived (both count pg_wal/archive_status/*.ready)
    "pg_wal_archive_ready_segments": ("cnpg_collector_pg_wal_archive_status", 'value="ready"'),
}
# a quoted string (left alone: a label value may well read "pg_..."), or a
# postgres_exporter metric name with its label matchers if any
PG_METRIC = re.compile(r"""("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|\b(pg_[a-zA-Z0-9_]+)\b(\{[^}]*\})?""")

HEADER = """\
# GENERATED by scripts/gen-prometheusrule from monitoring/prometheus/rules/*.yml and
# monitoring/prometheus/production/*.yml: do not edit. Change the rule files (or the
# pg_* -> cnpg_* map of scripts/lib/k8s/prometheusrule.py) and run
# scripts/gen-prometheusrule; `scripts/validate k8s` fails while this file differs from a
# fresh generation.
#
# The alerts of compose and the fire drill, for the Prometheus operator of a shared
# cluster: every selector scoped to farol's namespace and every alert labelled with it,
# the host alerts left to the platform, the PostgreSQL expressions on CloudNativePG's
# metrics instead of postgres_exporter's, the scrape-target alerts on this overlay's jobs,
# and last the alerts that only a cluster has (the database's volume claims).
"""


class UnmappedMetric(Exception):
    pass


def to_cnpg(expr: str) -> str:
    """expr on CloudNativePG's metrics, existing label matchers merged with those needed."""
    def swap(match: re.Match) -> str:
        if match.group(1):
            return match.group(1)
        name, matchers = match.group(2), (match.group(3) or "{}")[1:-1].strip()
        if name not in PG_TO_CNPG:
            raise UnmappedMetric(f"{name} has no CloudNativePG equivalent in PG_TO_CNPG")
        cnpg, needed = PG_TO_CNPG[name]
        merged = ", ".join(m for m in (needed, matchers) if m)
        return f"{cnpg}{{{merged}}}" if merged else cnpg
    return PG_METRIC.sub(swap, expr)


def load_groups(patterns: tuple[str, ...] = (RULES_GLOB, PRODUCTION_RULES_GLOB)) -> list[dict]:
    """Every group of the files of each pattern in turn, files in name order."""
    groups = []
    for pattern in patterns:
        files = sorted(glob.glob(pattern))
        if not files:
            raise FileNotFoundError(f"no rule files match {pattern}")
        for path in files:
            with open(path, encoding="utf-8") as f:
                groups += (yaml.safe_load(f) or {}).get("groups") or []
    return groups


TARGET_ALERTS = ("ScrapeTargetDown", "ScrapeTargetFlaky", "ScrapeJobAbsent")
OTHER_JOBS = 'job!="farol"'


def namespace() -> str:
    return mc.production_targets()["farol"]["namespace"]


def production_target_expr(alert: str, expr: str) -> str:
    """The scrape-target alerts on this overlay's jobs: ScrapeJobAbsent on each, the others'
    `job!="farol"` on the overlay's other jobs (not on whatever else is scraped in the
    namespace)."""
    jobs = sorted({t["job"] for t in mc.production_targets().values()})
    if alert == "ScrapeJobAbsent":
        return "\nor ".join(f'absent(up{{job="{j}"}})' for j in jobs) + "\n"
    if OTHER_JOBS not in expr:
        raise ValueError(f"{alert} has no {OTHER_JOBS} to put the overlay's jobs in")
    return expr.replace(OTHER_JOBS, 'job=~"' + "|".join(j for j in jobs if j != "farol") + '"')


def convert(groups: list[dict]) -> list[dict]:
    scope = f'namespace="{namespace()}"'
    out = []
    for group in groups:
        if group["name"] in PLATFORM_GROUPS | COMPOSE_ONLY_GROUPS:
            continue
        rules = []
        for rule in group.get("rules") or []:
            rule = dict(rule)
            name = rule.get("alert")
            if name in TARGET_ALERTS:
                expr = production_target_expr(name, str(rule["expr"]))
            else:
                expr = to_cnpg(production_expr(name or rule["record"], str(rule["expr"])))
            rule["expr"] = mc.scope_selectors(expr, scope)
            # an alert, or a record of a constant (no selector gives it a namespace): two
            # deployments' must not write one series
            if name or rule["expr"] == expr:
                rule["labels"] = {**rule.get("labels", {}), "namespace": namespace()}
            if "annotations" in rule:
                rule["annotations"] = {k: to_cnpg(str(v)) for k, v in rule["annotations"].items()}
            rules.append(rule)
        out.append({**group, "rules": rules})
    return out


AM_HEADER = """\
# GENERATED by scripts/gen-prometheusrule from monitoring/alertmanager/alertmanager.yml: do
# not edit. Change that file and run scripts/gen-prometheusrule; `scripts/validate k8s`
# fails while this file differs from a fresh generation.
#
# The routes and inhibitions of compose and the fire drill, for the shared Alertmanager of
# the Prometheus operator, which adds namespace="farol" to every route and inhibition: the
# alerts of farol's namespace only (the PrometheusRule labels them all with it). The
# receivers are webhooks whose URLs come from the Secret farol-alerting (alerting.env, not
# committed; alerting.env.example shows the keys): a pager, a ticket queue, a heartbeat.
"""
_AM_MATCHER = re.compile(r'^\s*(\w+)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


def matchers(texts: list[str]) -> list[dict]:
    out = []
    for text in texts:
        match = _AM_MATCHER.match(text)
        if not match:
            raise ValueError(f"cannot read the Alertmanager matcher {text!r}")
        name, op, value = match.groups()
        out.append({"name": name, "matchType": op, "value": value})
    return out


def routes_platform_alert(route: dict, platform: set[str]) -> bool:
    """A route that matches by name an alert of the platform's groups, which the
    PrometheusRule leaves out (other alerts that reach farol's namespace keep their routes)."""
    return any(m["name"] == "alertname" and m["matchType"] == "=" and m["value"] in platform
               for m in matchers(route.get("matchers") or []))


def _route(route: dict, platform: set[str]) -> dict:
    keys = {"receiver": "receiver", "group_by": "groupBy", "group_wait": "groupWait",
            "group_interval": "groupInterval", "repeat_interval": "repeatInterval",
            "continue": "continue"}
    out = {keys[k]: v for k, v in route.items() if k in keys}
    if route.get("matchers"):
        out["matchers"] = matchers(route["matchers"])
    children = [_route(r, platform) for r in route.get("routes") or [] if not routes_platform_alert(r, platform)]
    if children:
        out["routes"] = children
    return out


def platform_alerts() -> set[str]:
    return {r["alert"] for g in load_groups((RULES_GLOB,)) if g["name"] in PLATFORM_GROUPS
            for r in g.get("rules") or [] if "alert" in r}


def alertmanager_config(config: dict, platform: set[str]) -> dict:
    """Compose's routing for the operator; a route for an alert of the platform's groups,
    which the PrometheusRule leaves out, would match nothing there, and is left out too."""
    receivers = []
    for receiver in config["receivers"]:
        hooks = receiver.get("webhook_configs") or []
        out = {"name": receiver["name"]}
        if hooks:
            out["webhookConfigs"] = [{"urlSecret": {"name": "farol-alerting", "key": receiver["name"]},
                                      "sendResolved": bool(h.get("send_resolved", False))} for h in hooks]
        receivers.append(out)
    inhibit = [{"sourceMatch": matchers(r["source_matchers"]), "targetMatch": matchers(r["target_matchers"]),
                "equal": r.get("equal", [])} for r in config.get("inhibit_rules", [])]
    return {
        "apiVersion": "monitoring.coreos.com/v1alpha1",
        "kind": "AlertmanagerConfig",
        "metadata": {"name": "farol", "labels": {"app.kubernetes.io/name": "farol"}},
        "spec": {"route": _route(config["route"], platform), "receivers": receivers, "inhibitRules": inhibit},
    }


def render_alertmanager_config() -> str:
    with open(ALERTMANAGER, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    return dump(AM_HEADER, alertmanager_config(config, platform_alerts()))


def prometheus_rule(groups: list[dict]) -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "farol", "labels": {"app.kubernetes.io/name": "farol"}},
        "spec": {"groups": convert(groups)},
    }


class BlockDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks and lists indented under their key, as in the
    sources and the other manifests."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


BlockDumper.add_representer(str, _str)


def dump(header: str, doc: dict) -> str:
    return header + yaml.dump(doc, Dumper=BlockDumper, sort_keys=False, width=1000, allow_unicode=True)


def render(groups: list[dict]) -> str:
    return dump(HEADER, prometheus_rule(groups))


def main() -> int:
    parser = argparse.ArgumentParser(description="Generate the production PrometheusRule and AlertmanagerConfig.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="exit 1, with a diff, if a committed file differs from a fresh generation")
    mode.add_argument("--stdout", action="store_true", help="print instead of writing the files")
    args = parser.parse_args()
    try:
        outputs = [(OUTPUT, render(load_groups())), (AM_OUTPUT, render_alertmanager_config())]
    except (UnmappedMetric, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    stale = 0
    for path, text in outputs:
        name = os.path.relpath(path, REPO)
        committed = pathlib.Path(path).read_text(encoding="utf-8") if args.check and os.path.exists(path) else ""
        if args.stdout:
            sys.stdout.write(text)
        elif not args.check:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote {name}")
        elif committed == text:
            print(f"{name} is up to date")
        else:
            sys.stdout.writelines(difflib.unified_diff(
                committed.splitlines(True), text.splitlines(True), "committed", "generated"))
            print(f"{name} is stale: run scripts/gen-prometheusrule", file=sys.stderr)
            stale += 1
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
