"""What each scenario of the fire drill (scripts/fire-drill) expects of every alert.

Every alert of monitoring/prometheus/rules is judged in every scenario: it is expected to
- "fire": fire in Prometheus after the fault, reach the webhook, resolve after the fix
  and reach the webhook resolved; an alert of `once` fires on a burst that the fault
  causes once (statements left running when the database hangs): it may resolve before
  the fix, and its firing need not coincide with the others';
- "signal": an inhibit-only alert (severity none): fire in Prometheus after the fault,
  never reach the webhook (its route notifies no one), resolve after the fix;
- "inhibited": fire in Prometheus, be held back by Alertmanager's inhibition (seen
  suppressed, inhibited by one of the named alerts) and never reach the webhook;
- "held": a slow SLO tier in the full drill: fire in Prometheus, be held back by its fast
  tier while the fault lasts (no notification before the fix), then reach the webhook as
  its ticket once the fast tier has resolved, and resolve in the settle phase;
- "allowed": fire or stay quiet, reported either way (the reason is printed);
- "quiet" (everything not named): never fire, never reach the webhook.
The Watchdog is judged over the whole drill instead (drill.py).

The full drill runs every scenario and must show every alert of the rules fired (or
inhibited) at least once: `uncovered()` names any that no scenario does. `--quick` runs
the scenarios marked quick.
"""

from dataclasses import dataclass, field, replace

# Host alerts on CPU and memory are not caused by the application: on a 2-core machine wrk,
# farol, PostgreSQL, Prometheus and anything else running (a build) can push CPU past 80 %,
# so outside the stress scenarios they may fire, and the table says when they did.
HOST_LOAD = "fire or quiet: host load (2 cores shared by wrk, farol, PostgreSQL, Prometheus and any other work)"
# The slow SLO tiers (ErrorBudgetBurnSlow, LatencyBudgetBurnSlow) need bad requests over
# windows of hours and days (6 h is 12 min in the drill): after the first scenario with
# 5xx (or slow answers) they fire, and resolve only once their short windows no longer
# hold any.
SLOW_BURN = "fire or quiet: an earlier scenario's bad requests stay in the slow tier's windows"

# What holds back farol's own alerts when its primary is down: the signal of the outage
# now (from its first failed scrape) and the page (a minute more after it), and for the
# windowed alerts the 10-minute tail.
DATABASE_NOW = ("PostgresPrimaryUnreachable", "PostgresDown")
DATABASE_TAIL = (*DATABASE_NOW, "PostgresPrimaryRecentlyDown")


@dataclass(frozen=True)
class Scenario:
    name: str                      # the id scripts/fire-drill uses
    title: str
    fault: str                     # what is done, for the table's notes
    fire: tuple = ()
    signal: tuple = ()             # inhibit-only alerts that must fire silently
    held: dict = field(default_factory=dict)        # slow tier -> the fast tiers holding it back
    inhibited: dict = field(default_factory=dict)   # alert -> the alerts that may inhibit it
    allowed: dict = field(default_factory=dict)     # alert -> why it may fire
    resolve_later: tuple = ()      # alerts of `held` that resolve in the settle phase
    once: tuple = ()               # alerts of `fire` that may resolve before the fix
    quick: bool = True             # part of --quick

    def __post_init__(self):
        if not set(self.once) <= set(self.fire):
            raise ValueError(f"{self.name}: once names alerts not in fire: {set(self.once) - set(self.fire)}")

    def expectation(self, alert):
        """(kind, detail) of one alert in this scenario."""
        if alert in self.fire:
            return "fire", ""
        if alert in self.signal:
            return "signal", ""
        if alert in self.held:
            return "held", self.held[alert]
        if alert in self.inhibited:
            return "inhibited", self.inhibited[alert]
        if alert in self.allowed:
            return "allowed", self.allowed[alert]
        return "quiet", ""

    def resolved_since(self, alert, fired, fix):
        """From when a resolved notification of `alert` counts, given the times of its
        firing notifications since the fault: the fix, or for an alert of `once` (which
        may resolve before it) its last firing notification."""
        return fired[-1] if alert in self.once and fired else fix

    def watched(self):
        """The alerts whose firing and resolving the scenario waits for."""
        return tuple(self.fire) + tuple(self.signal) + tuple(self.inhibited) + tuple(self.held)

    def resolving(self):
        """The alerts the scenario waits to see resolved after its fix."""
        return tuple(a for a in self.watched() if a not in self.resolve_later)


_HOST = {"HostHighCpuUsage": HOST_LOAD, "HostHighMemoryUsage": HOST_LOAD}
_SLOW = {"ErrorBudgetBurnSlow": SLOW_BURN, "LatencyBudgetBurnSlow": SLOW_BURN}
_USUAL = {**_SLOW, **_HOST}

SCENARIOS = [
    Scenario("baseline", "0 baseline", "load only, no fault: every alert stays quiet",
             allowed=_USUAL),
    Scenario("errors", "1 errors under load", "CHAOS_ERROR_RATE raised in CONFIG_DIR, then 0",
             fire=("HttpHighErrorRate", "ErrorBudgetBurnFast"), allowed=_USUAL),
    Scenario("latency", "2 latency", "CHAOS_LATENCY_MS raised in CONFIG_DIR, then 0",
             fire=("HttpHighLatency", "LatencyBudgetBurnFast"), allowed=_USUAL),
    Scenario("offline", "3 service offline", "farol stopped (SIGTERM), then started again",
             fire=("FarolDown",), signal=("FarolAllInstancesDown",),
             inhibited={"FarolHealthCheckFailing": ("FarolDown", "FarolAllInstancesDown")},
             allowed=_USUAL),
    Scenario("database", "4 database down", "PostgreSQL stopped under load, then started again",
             fire=("PostgresDown",), signal=("PostgresPrimaryUnreachable", "PostgresPrimaryRecentlyDown"),
             inhibited={"FarolHealthCheckFailing": DATABASE_NOW,
                        "HttpHighErrorRate": DATABASE_TAIL, "ErrorBudgetBurnFast": DATABASE_TAIL},
             allowed=_USUAL),
    Scenario("database-cut", "5 farol cut off from a database that is up",
             "the TCP proxy between farol and PostgreSQL stopped (the exporter still reaches it), then started",
             fire=("FarolHealthCheckFailing", "HttpHighErrorRate", "ErrorBudgetBurnFast"), allowed=_USUAL),
    Scenario("database-hung", "5b a database that hangs",
             "the TCP proxy between farol and PostgreSQL frozen (SIGSTOP: connections and bytes taken, "
             "nothing answered; the exporter still reaches PostgreSQL), then continued",
             fire=("FarolStatementsLeftRunning", "FarolHealthCheckFailing", "HttpHighErrorRate",
                   "ErrorBudgetBurnFast"),
             # the statements running when it froze, once: later requests wait for a
             # connection that never completes, and leave no statement behind
             once=("FarolStatementsLeftRunning",),
             allowed={**_USUAL, **dict.fromkeys(("HttpHighLatency", "LatencyBudgetBurnFast"),
                                                "fire or quiet: requests wait for their query or connect timeout")}),
    Scenario("exporter", "6 exporter stopped", "the PostgreSQL exporter stopped, then started again",
             fire=("ScrapeTargetDown",), allowed=_USUAL),
    Scenario("exporter-blind", "6b exporter queries failing",
             "the PostgreSQL exporter started again as a role without pg_monitor (its custom query "
             "of the WAL segments waiting is refused), then as before",
             fire=("PostgresExporterQueryFailing",), allowed=_USUAL),
    Scenario("slo-absent", "7b SLO metrics absent",
             "a build without the SLO histogram (up, /health ok) declared as a farol target, then removed",
             fire=("SLOMetricAbsent",), allowed=_USUAL),
    Scenario("traces", "7c traces lost", "the stand-in trace collector stopped, then started on the same port",
             fire=("FarolTraceSpansDropped",), allowed=_USUAL),
    Scenario("http-connections", "7d farol's connections held",
             "slow clients (a request head begun, never finished; cut off at farol's 10 s head timeout "
             "and opened again) holding 95 % of farol's MAX_CONNECTIONS, then closed",
             fire=("FarolConnectionsNearLimit",), allowed=_USUAL),
    Scenario("target-absent", "7 a job without targets",
             "the node exporter's target removed from its target file, then put back",
             fire=("ScrapeJobAbsent",), allowed=_SLOW, quick=False),
    Scenario("connections", "8 connections", "client connections held past 80 % of max_connections, then closed",
             fire=("PostgresTooManyConnections",), allowed=_USUAL, quick=False),
    Scenario("disk", "9 disk", "a loop-mounted ext4 filesystem of the drill's own filled past 90 %, then emptied",
             fire=("HostDiskFillingUp",), allowed=_USUAL, quick=False),
    Scenario("cpu", "10a CPU stress", "stress-ng on every core (nice 19) until the alert fires",
             fire=("HostHighCpuUsage",), allowed=_SLOW),
    Scenario("memory", "10b memory stress", "memory filled past the threshold until the alert fires",
             fire=("HostHighMemoryUsage",),
             allowed={**_SLOW,
                      "HostHighCpuUsage": "fire or quiet: filling memory keeps a core busy, on top of the load"},
             quick=False),
    Scenario("replication-degraded", "11a replication degraded",
             "one of two streaming standbys (each with its exporter, a role=replica target) stops "
             "streaming: its primary_conninfo emptied, then put back",
             fire=("PostgresReplicationDegraded",), allowed=_USUAL),
    Scenario("replication", "11b replication broken", "both standbys stop streaming, then stream again",
             fire=("PostgresReplicationBroken",), allowed=_USUAL),
    Scenario("replication-lag", "12 replication lag",
             "replay paused on a standby while the primary switches 12 WAL segments, then resumed",
             fire=("PostgresReplicationLagging",), allowed=_USUAL),
    Scenario("archiving", "13 WAL archiving failing",
             "the archive directory made unwritable (a segment switched every 3 s), then writable",
             fire=("PostgresWalArchivingFailing",),
             # the same fault seen from the queue: segments wait, none is archived
             inhibited={"PostgresWalArchivingStalled": ("PostgresWalArchivingFailing",)},
             allowed=_USUAL),
    Scenario("archiving-hung", "13b WAL archiving hung",
             "the archive command held, neither ending nor failing (a segment switched every 3 s), "
             "then let go",
             fire=("PostgresWalArchivingStalled",), allowed=_USUAL),
    Scenario("backup", "14 backup too old",
             "the last backup's time recorded as 27 h ago, then a real pg_dump and its time",
             fire=("PostgresBackupTooOld",), allowed=_USUAL),
]

# Not a scenario but the full drill's last phase: light load until every alert, the slow
# burn included, has resolved. The slow burn fires in the full drill's first error
# scenario and is judged here: it must resolve and its resolved notification arrive.
SETTLE = Scenario("settle", "after the drill", "load only, until nothing but the Watchdog fires")
# slow tier -> (the scenario whose fault first makes it fire, its fast tier). In the full
# drill the page comes first in both, as it does in production: the fast tier needs 14.4x
# the budget's burn over its short windows, the slow tier 30 s of `for:` on top of its
# lines. The latency scenario's load keeps its rate up when answers slow down (see
# LATENCY_LOAD_* in scripts/fire-drill) for that: from 8 closed-loop connections the slow
# requests' share of the 1-hour window (2 minutes in the drill) rose so slowly that the
# ticket fired first.
SLOW_BURN_FIRST = {"ErrorBudgetBurnSlow": ("errors", "ErrorBudgetBurnFast"),
                   "LatencyBudgetBurnSlow": ("latency", "LatencyBudgetBurnFast")}

BY_NAME = {s.name: s for s in [*SCENARIOS, SETTLE]}
# Alerts that keep firing across scenarios once fired (their windows outlast them): a
# scenario does not wait for them to be quiet before its fault.
PERSISTS = tuple(SLOW_BURN_FIRST)
# What keeps such an alert firing: the slow burn's windows hold every 5xx of the drill,
# so it resolves a window after the last scenario with 5xx, which is the last in which the
# fast burn fired or was held back, not after the scenario where it first fired.
FED_BY = {slow: fast for slow, (_, fast) in SLOW_BURN_FIRST.items()}


def last_fed(alert, scenarios, fixes):
    """The time from which a persisting alert's resolution is bounded: the latest fix
    (fixes: {scenario name: time}) of the scenarios that feed it (FED_BY)."""
    feeder = FED_BY.get(alert, alert)
    fed = [fixes[s.name] for s in scenarios if s.name in fixes and feeder in s.watched()]
    return max(fed) if fed else None


def for_run(quick):
    """The scenarios of a run, with the slow tiers judged as they can be in that run: in
    the full drill each is held back by its fast tier in its first scenario, delivered
    once that resolves, and resolves in the settle phase; --quick has no settle phase, so
    there they may fire or not."""
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
