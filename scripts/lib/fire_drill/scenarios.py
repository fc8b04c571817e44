"""What each scenario of the fire drill (scripts/fire-drill) expects of every alert: the kinds
(fire, signal, inhibited, held, allowed, quiet) are described in docs/fire-drill.md, "How it
judges". The full drill must cover every alert of the rules; `--quick` (`make ci`) runs those
marked quick, which must prove every page: a ticket's scenario may be left to the full drill.
"""

from dataclasses import dataclass, field, replace

HOST_LOAD = "fire or quiet: host load (2 cores shared by wrk, farol, PostgreSQL, Prometheus and any other work)"
SLOW_BURN = "fire or quiet: an earlier scenario's bad requests stay in the slow tier's windows"

# What holds back farol's own alerts when its primary is down: the outage's signal and page,
# and for the windowed alerts the 10-minute tail.
DATABASE_NOW = ("PostgresPrimaryUnreachable", "PostgresDown")
DATABASE_TAIL = (*DATABASE_NOW, "PostgresPrimaryRecentlyDown")


@dataclass(frozen=True)
class Scenario:
    name: str                      # the id scripts/fire-drill uses
    title: str
    fire: tuple = ()
    signal: tuple = ()             # inhibit-only alerts that must fire silently
    held: dict = field(default_factory=dict)        # slow tier -> the fast tiers holding it back
    inhibited: dict = field(default_factory=dict)   # alert -> the alerts that may inhibit it
    allowed: dict = field(default_factory=dict)     # alert -> why it may fire
    resolve_later: tuple = ()      # alerts of `held` that resolve in the settle phase
    once: tuple = ()               # alerts of `fire` that may resolve before the fix
    quick: bool = True             # part of --quick
    refuses_watchdog: bool = False  # its fault has the Watchdog's receiver refuse it: a gap by design

    def __post_init__(self):
        # `("A")` is a string, not a tuple: `in` would then match any alert named inside "A"
        names = {"fire": self.fire, "signal": self.signal, "resolve_later": self.resolve_later, "once": self.once,
                 **{f"held[{k}]": v for k, v in self.held.items()},
                 **{f"inhibited[{k}]": v for k, v in self.inhibited.items()}}
        for what, value in names.items():
            if isinstance(value, str):
                raise TypeError(f"{self.name}: {what} is the string {value!r}, not a tuple of alert names")
        if not set(self.once) <= set(self.fire):
            raise ValueError(f"{self.name}: once names alerts not in fire: {set(self.once) - set(self.fire)}")

    def expectation(self, alert):
        """(kind, detail) of one alert in this scenario."""
        for kind, named in (("fire", self.fire), ("signal", self.signal), ("held", self.held),
                            ("inhibited", self.inhibited), ("allowed", self.allowed)):
            if alert in named:
                return kind, named[alert] if isinstance(named, dict) else ""
        return "quiet", ""

    def resolved_since(self, alert, fired, fix):
        """From when a resolved notification counts: the fix, or for an alert of `once`
        (which may resolve before it) its last firing notification since the fault."""
        return fired[-1] if alert in self.once and fired else fix

    def watched(self):
        return tuple(self.fire) + tuple(self.signal) + tuple(self.inhibited) + tuple(self.held)

    def resolving(self):
        return tuple(a for a in self.watched() if a not in self.resolve_later)


_HOST = {"HostHighCpuUsage": HOST_LOAD, "HostHighMemoryUsage": HOST_LOAD}
_SLOW = {"ErrorBudgetBurnSlow": SLOW_BURN, "LatencyBudgetBurnSlow": SLOW_BURN}
_USUAL = {**_SLOW, **_HOST}

SCENARIOS = [
    Scenario("baseline", "0 baseline", allowed=_USUAL),
    Scenario("errors", "1 errors under load", fire=("HttpHighErrorRate", "ErrorBudgetBurnFast"), allowed=_USUAL),
    Scenario("latency", "2 latency", fire=("HttpHighLatency", "LatencyBudgetBurnFast"), allowed=_USUAL),
    Scenario("offline", "3 service offline", fire=("FarolDown",), signal=("FarolAllInstancesDown",),
             inhibited={"FarolHealthCheckFailing": ("FarolDown", "FarolAllInstancesDown")}, allowed=_USUAL),
    Scenario("crash-loop", "3b farol restarting", fire=("FarolRestarting",),
             allowed={**_USUAL, **dict.fromkeys(
                 ("FarolDown", "FarolAllInstancesDown", "FarolHealthCheckFailing"),
                 "fire or quiet: each restart leaves farol down for a moment, near FarolDown's for: in drill time")},
             quick=False),
    Scenario("database", "4 database down",
             fire=("PostgresDown",), signal=("PostgresPrimaryUnreachable", "PostgresPrimaryRecentlyDown"),
             inhibited={"FarolHealthCheckFailing": DATABASE_NOW,
                        "HttpHighErrorRate": DATABASE_TAIL, "ErrorBudgetBurnFast": DATABASE_TAIL},
             allowed=_USUAL),
    Scenario("database-cut", "5 farol cut off from a database that is up",
             fire=("FarolHealthCheckFailing", "HttpHighErrorRate", "ErrorBudgetBurnFast"), allowed=_USUAL),
    Scenario("database-hung", "5b a database that hangs",
             fire=("FarolStatementsLeftRunning", "FarolHealthCheckFailing", "HttpHighErrorRate",
                   "ErrorBudgetBurnFast"),
             # the statements running when it froze, once: later requests wait for a
             # connection that never completes, and leave no statement behind
             once=("FarolStatementsLeftRunning",),
             allowed={**_USUAL, **dict.fromkeys(("HttpHighLatency", "LatencyBudgetBurnFast"),
                                                "fire or quiet: requests wait for their query or connect timeout")}),
    Scenario("exporter", "6 exporter stopped", fire=("ScrapeTargetDown",), allowed=_USUAL),
    Scenario("exporter-blind", "6b exporter queries failing", fire=("PostgresExporterQueryFailing",),
             allowed=_USUAL),
    Scenario("slo-absent", "7b SLO metrics absent", fire=("SLOMetricAbsent",), allowed=_USUAL),
    Scenario("traces", "7c traces lost", fire=("FarolTraceSpansDropped",), allowed=_USUAL, quick=False),
    Scenario("http-connections", "7d farol's connections held", fire=("FarolConnectionsNearLimit",),
             allowed=_USUAL),
    Scenario("rule-failing", "7e a rule failing", fire=("PrometheusRuleFailures",), allowed=_USUAL),
    Scenario("bad-config", "7f a rule file refused", fire=("PrometheusBadConfig",), allowed=_USUAL),
    Scenario("rule-slow", "7g a rule group too slow", fire=("PrometheusMissingRuleEvaluations",), allowed=_USUAL,
             quick=False),
    Scenario("alertmanager-bad-config", "7h alertmanager.yml refused", fire=("AlertmanagerBadConfig",),
             allowed={**_USUAL, "AlertmanagerNotificationsFailing":
                      "fire or quiet: the good reload of the fix cancels any notification still in flight, "
                      "which Alertmanager counts as failed"}),
    Scenario("receiver-failing", "7i a receiver failing", fire=("AlertmanagerNotificationsFailing",),
             allowed=_USUAL, refuses_watchdog=True),
    Scenario("target-absent", "7 a job without targets", fire=("ScrapeJobAbsent",), allowed=_SLOW, quick=False),
    Scenario("connections", "8 connections", fire=("PostgresTooManyConnections",), allowed=_USUAL, quick=False),
    Scenario("disk", "9 disk", fire=("HostDiskFillingUp",), allowed=_USUAL, quick=False),
    Scenario("cpu", "10a CPU stress", fire=("HostHighCpuUsage",), allowed=_SLOW),
    Scenario("memory", "10b memory stress", fire=("HostHighMemoryUsage",),
             allowed={**_SLOW,
                      "HostHighCpuUsage": "fire or quiet: filling memory keeps a core busy, on top of the load",
                      **dict.fromkeys(("PrometheusMissingRuleEvaluations", "AlertmanagerNotificationsFailing"),
                                      "fire or quiet: giving the memory back freezes every process for seconds, "
                                      "rule evaluations and notification retries among them")},
             quick=False),
    Scenario("replication-degraded", "11a replication degraded", fire=("PostgresReplicationDegraded",),
             allowed=_USUAL, quick=False),
    Scenario("replication", "11b replication broken", fire=("PostgresReplicationBroken",), allowed=_USUAL),
    Scenario("replication-lag", "12 replication lag", fire=("PostgresReplicationLagging",), allowed=_USUAL),
    Scenario("archiving", "13 WAL archiving failing", fire=("PostgresWalArchivingFailing",),
             # the same fault seen from the queue: segments wait, none is archived
             inhibited={"PostgresWalArchivingStalled": ("PostgresWalArchivingFailing",)}, allowed=_USUAL),
    Scenario("archiving-hung", "13b WAL archiving hung", fire=("PostgresWalArchivingStalled",), allowed=_USUAL,
             quick=False),
    Scenario("backup", "14 backup too old", fire=("PostgresBackupTooOld",), allowed=_USUAL),
]

# Not a scenario but the full drill's last phase: light load until every alert, the slow
# burn included, has resolved; the slow burns are judged there.
SETTLE = Scenario("settle", "after the drill")
# slow tier -> (the scenario whose fault first makes it fire, its fast tier, which must page first)
SLOW_BURN_FIRST = {"ErrorBudgetBurnSlow": ("errors", "ErrorBudgetBurnFast"),
                   "LatencyBudgetBurnSlow": ("latency", "LatencyBudgetBurnFast")}

BY_NAME = {s.name: s for s in [*SCENARIOS, SETTLE]}
# Alerts that keep firing across scenarios once fired: a scenario does not wait for them to be quiet.
PERSISTS = tuple(SLOW_BURN_FIRST)
# The slow burn resolves a window after the last scenario in which its fast tier fired or was
# held back (its windows hold every 5xx of the drill), not after the one where it first fired.
FED_BY = {slow: fast for slow, (_, fast) in SLOW_BURN_FIRST.items()}


def last_fed(alert, scenarios, fixes):
    """From when a persisting alert's resolution is bounded: the latest fix of the scenarios that feed it."""
    feeder = FED_BY.get(alert, alert)
    fed = [fixes[s.name] for s in scenarios if s.name in fixes and feeder in s.watched()]
    return max(fed) if fed else None


def for_run(quick):
    """The scenarios of a run. In the full drill each slow tier is held back by its fast tier
    in its first scenario and resolves in the settle phase; --quick has none, so it is allowed."""
    chosen = [s for s in SCENARIOS if s.quick or not quick]
    if quick:
        return chosen
    out = []
    for s in chosen:
        held = {slow: (fast,) for slow, (name, fast) in SLOW_BURN_FIRST.items() if name == s.name}
        if held:
            allowed = {k: v for k, v in s.allowed.items() if k not in held}
            s = replace(s, held=held, allowed=allowed, resolve_later=tuple(held))
        out.append(s)
    return out


def uncovered(alerts, scenarios):
    """The alerts (but the Watchdog) that no scenario expects to fire, signal or inhibit."""
    covered = {a for s in scenarios for a in s.watched()}
    return sorted(a for a in alerts if a != "Watchdog" and a not in covered)
