"""The production PrometheusRule's PostgreSQL alerts, run by promtool on series shaped like
CloudNativePG's (its instances' and its PgBouncers') and the kubelet's: the expressions
that differ from compose's (the replication counts, the backup age) and the alerts compose
has not (the volumes, the pooler) are proven here, since no CloudNativePG runs on this
machine for the fire drill to break.
Needs promtool (scripts/install-deps monitoring)."""

import os
import re
import shutil
import subprocess
import tempfile
import textwrap
import unittest

import prometheusrule as gen
import yaml

# The labels the production PodMonitor gives CloudNativePG's series (monitoring.yaml).
POD = 'namespace="farol", job="postgres", pod="farol-db-{n}", instance="10.1.0.{n}:9187"'
# ... and the labels the Pooler's PodMonitor gives PgBouncer's.
BOUNCER = 'namespace="farol", job="pgbouncer", pod="farol-db-pooler-rw-{p}", instance="10.1.0.{n}:9127"'


def volume(severity: str, claim: str) -> str:
    """The expected labels of PostgresVolumeFillingUp for one claim: one alert per claim,
    whichever node reports it."""
    return f"{{exp_labels: {{severity: {severity}, namespace: farol, persistentvolumeclaim: {claim}}}}}"


def capacities(match: re.Match) -> str:
    """The input series of a line `CAPACITIES LABELS CLAIM...`: each claim's capacity, 1000
    bytes for 80 minutes, with the labels LABELS stands for (replaced below)."""
    indent, labels, claims = match.group(1), match.group(2), match.group(3).split()
    return "".join(f'{indent}- series: kubelet_volume_stats_capacity_bytes{{{labels}, persistentvolumeclaim="{c}"}}\n'
                   f"{indent}  values: 1000x80\n" for c in claims)


TESTS = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  # Two standbys expected (three instances). Both stream until 2m, one from 3m (Degraded
  # after 5 minutes), none from 9m (Broken after 1 minute, Degraded quiet), both from 12m.
  - interval: 1m
    input_series:
      - series: cnpg_farol_replication_streaming{POD1, role="primary"}
        values: 2 2 2 1 1 1 1 1 1 0 0 0 2 2 2
    alert_rule_test:
      - {eval_time: 7m, alertname: PostgresReplicationDegraded, exp_alerts: []}
      - eval_time: 8m
        alertname: PostgresReplicationDegraded
        exp_alerts: [{exp_labels: {severity: ticket, namespace: farol}}]
      - {eval_time: 9m, alertname: PostgresReplicationBroken, exp_alerts: []}
      - eval_time: 10m
        alertname: PostgresReplicationBroken
        exp_alerts: [{exp_labels: {severity: page, namespace: farol}}]
      - {eval_time: 10m, alertname: PostgresReplicationDegraded, exp_alerts: []}
      - {eval_time: 12m, alertname: PostgresReplicationBroken, exp_alerts: []}
  # The primary not scraped (its pod gone): no count, no replication alert (PostgresDown's).
  - interval: 1m
    input_series:
      - series: cnpg_farol_replication_streaming{POD1, role="primary"}
        values: 0 stale
      - series: up{POD2, role="replica"}
        values: 1x10
    alert_rule_test:
      - {eval_time: 5m, alertname: PostgresReplicationBroken, exp_alerts: []}
      - {eval_time: 5m, alertname: PostgresReplicationDegraded, exp_alerts: []}
  # One failed scrape of the primary's pod (no cnpg_collector_up then), after 15 minutes of
  # history: the inhibit-only signal fires for that scrape and no longer; the page needs a
  # minute of it.
  - interval: 1m
    input_series:
      - series: up{POD1, role="primary"}
        values: 1x15 0 1 1 1
      - series: cnpg_collector_up{POD1, role="primary", cluster="farol-db"}
        values: 1x15 stale 1 1 1
    alert_rule_test:
      - eval_time: 16m
        alertname: PostgresPrimaryUnreachable
        exp_alerts: SIGNAL1
      - {eval_time: 17m, alertname: PostgresPrimaryUnreachable, exp_alerts: []}
      - {eval_time: 17m, alertname: PostgresDown, exp_alerts: []}
  # Its scrapes failing every other time: only the first failure in 15 minutes counts.
  # Then the database down on every other scrape and the scrape failing on the others (a
  # hung pod's). One series (cnpg_collector_up without its cluster label, or the
  # failed scrape) is down without a gap: PostgresDown pages after a minute, and the
  # signal ends once the primary has been down more than a fifth of 15 minutes (at 46m,
  # 4 samples down in the window).
  - interval: 1m
    input_series:
      - series: up{POD1, role="primary"}
        values: 1x15 0 1 0 1 0 1 1x20 1 0 1 0 1 0 1 0 1 0
      - series: cnpg_collector_up{POD1, role="primary", cluster="farol-db"}
        values: 1x15 stale 1 stale 1 stale 1 1x20 0 stale 0 stale 0 stale 0 stale 0 stale
    alert_rule_test:
      - eval_time: 16m
        alertname: PostgresPrimaryUnreachable
        exp_alerts: SIGNAL1
      - {eval_time: 18m, alertname: PostgresPrimaryUnreachable, exp_alerts: []}
      - {eval_time: 20m, alertname: PostgresPrimaryUnreachable, exp_alerts: []}
      - {eval_time: 20m, alertname: PostgresDown, exp_alerts: []}
      - eval_time: 43m
        alertname: PostgresPrimaryUnreachable
        exp_alerts: SIGNAL1
      - {eval_time: 43m, alertname: PostgresDown, exp_alerts: []}
      - eval_time: 44m
        alertname: PostgresDown
        exp_alerts: DOWN1
      - eval_time: 45m
        alertname: PostgresPrimaryUnreachable
        exp_alerts: SIGNAL1
      - {eval_time: 46m, alertname: PostgresPrimaryUnreachable, exp_alerts: []}
      - eval_time: 52m
        alertname: PostgresDown
        exp_alerts: DOWN1
  # A standby's pod not scraped: the ticket, no page, no signal.
  - interval: 1m
    input_series:
      - series: up{POD2, role="replica"}
        values: 1x5 0x5
      - series: cnpg_collector_up{POD2, role="replica", cluster="farol-db"}
        values: 1x5 stale
    alert_rule_test:
      - {eval_time: 6m, alertname: PostgresDown, exp_alerts: []}
      - eval_time: 7m
        alertname: PostgresDown
        exp_alerts:
          - exp_labels:
              {severity: ticket, namespace: farol, job: postgres, pod: farol-db-2, instance: "10.1.0.2:9187",
               role: replica}
      - {eval_time: 7m, alertname: PostgresPrimaryUnreachable, exp_alerts: []}
  # Every instance exports the plugin's last backup; the same value from each. A backup at
  # t=0, none since: too old after 26 hours. A cluster never backed up exports 0.
  - interval: 30m
    input_series:
      - series: barman_cloud_cloudnative_pg_io_last_available_backup_timestamp{POD1, role="primary"}
        values: 0x60
      - series: barman_cloud_cloudnative_pg_io_last_available_backup_timestamp{POD2, role="replica"}
        values: 0x60
    alert_rule_test:
      - {eval_time: 26h, alertname: PostgresBackupTooOld, exp_alerts: []}
      - eval_time: 26h30m
        alertname: PostgresBackupTooOld
        exp_alerts: [{exp_labels: {severity: ticket, namespace: farol}}]
  # A standby 200 MiB behind (the primary's view), and archiving failing on the primary.
  - interval: 1m
    input_series:
      - series: cnpg_pg_stat_replication_replay_diff_bytes{POD1, role="primary", application_name="farol-db-2"}
        values: 209715200x10
      - series: cnpg_pg_stat_archiver_failed_count{POD1, role="primary"}
        values: 0 3 6 9 12 15 18 21 24 27 30 33 36
      - series: cnpg_pg_stat_archiver_archived_count{POD1, role="primary"}
        values: 5x12
    alert_rule_test:
      - eval_time: 6m
        alertname: PostgresReplicationLagging
        exp_alerts:
          - exp_labels:
              {severity: ticket, namespace: farol, job: postgres, instance: "10.1.0.1:9187", role: primary,
               application_name: farol-db-2}
      - eval_time: 11m
        alertname: PostgresWalArchivingFailing
        exp_alerts:
          - exp_labels:
              {severity: ticket, namespace: farol, job: postgres, instance: "10.1.0.1:9187", pod: farol-db-1,
               role: primary}
  # archive_command hanging on the primary from 1m: two segments wait, none is archived
  # and none fails; the standby (archive_mode=always, say) has nothing waiting and
  # archives its own: neither its count nor its archiving is the primary's. The segments
  # go out at 20m.
  - interval: 1m
    input_series:
      - series: cnpg_collector_pg_wal_archive_status{POD1, role="primary", value="ready"}
        values: 0 2x18 0x4
      - series: cnpg_collector_pg_wal_archive_status{POD1, role="primary", value="done"}
        values: 40x19 42x4
      - series: cnpg_pg_stat_archiver_archived_count{POD1, role="primary"}
        values: 5 6x18 8 9 10 11
      - series: cnpg_pg_stat_archiver_failed_count{POD1, role="primary"}
        values: 0x23
      - series: cnpg_collector_pg_wal_archive_status{POD2, role="replica", value="ready"}
        values: 0x23
      - series: cnpg_collector_pg_wal_archive_status{POD2, role="replica", value="done"}
        values: 40+1x23
      - series: cnpg_pg_stat_archiver_archived_count{POD2, role="replica"}
        values: 0+1x23
      - series: cnpg_pg_stat_archiver_failed_count{POD2, role="replica"}
        values: 0x23
    alert_rule_test:
      - {eval_time: 14m, alertname: PostgresWalArchivingStalled, exp_alerts: []}
      - eval_time: 17m
        alertname: PostgresWalArchivingStalled
        exp_alerts:
          - exp_labels:
              {severity: ticket, namespace: farol, job: postgres, instance: "10.1.0.1:9187", pod: farol-db-1,
               role: primary}
      - {eval_time: 20m, alertname: PostgresWalArchivingStalled, exp_alerts: []}
  # The primary's PostgreSQL down from 2m, its pod up: CloudNativePG's collector skips its
  # queries (the archiver's counters vanish) but still exports its last count of waiting
  # segments. No stall: that is PostgresDown's.
  - interval: 1m
    input_series:
      - series: cnpg_collector_pg_wal_archive_status{POD1, role="primary", value="ready"}
        values: 1x30
      - series: cnpg_pg_stat_archiver_archived_count{POD1, role="primary"}
        values: 5 6 stale
      - series: cnpg_pg_stat_archiver_failed_count{POD1, role="primary"}
        values: 0 0 stale
    alert_rule_test:
      - {eval_time: 20m, alertname: PostgresWalArchivingStalled, exp_alerts: []}
      - {eval_time: 30m, alertname: PostgresWalArchivingStalled, exp_alerts: []}
  # CloudNativePG's collector, from 2m: on farol-db-1 a query fails (cnpg_last_error; its
  # instance-level collection is fine) while the server answers; on farol-db-3 the
  # instance-level collection fails: both tickets after 10 minutes. On farol-db-2 the
  # collection fails because its server is down: PostgresDown's, not this.
  - interval: 1m
    input_series:
      - series: cnpg_last_error{POD1, role="primary"}
        values: 0 0 1x12
      - series: cnpg_collector_last_collection_error{POD1, role="primary"}
        values: 0x14
      - series: cnpg_collector_up{POD1, role="primary", cluster="farol-db"}
        values: 1x14
      - series: cnpg_last_error{POD2, role="replica"}
        values: 0 0 1x12
      - series: cnpg_collector_last_collection_error{POD2, role="replica"}
        values: 0 0 1x12
      - series: cnpg_collector_up{POD2, role="replica", cluster="farol-db"}
        values: 1 1 0x12
      - series: cnpg_last_error{POD3, role="replica"}
        values: 0x14
      - series: cnpg_collector_last_collection_error{POD3, role="replica"}
        values: 0 0 1x12
      - series: cnpg_collector_up{POD3, role="replica", cluster="farol-db"}
        values: 1x14
    alert_rule_test:
      - {eval_time: 11m, alertname: PostgresExporterQueryFailing, exp_alerts: []}
      - eval_time: 12m
        alertname: PostgresExporterQueryFailing
        exp_alerts:
          - exp_labels: {severity: ticket, namespace: farol, job: postgres, instance: "10.1.0.1:9187", role: primary}
          - exp_labels: {severity: ticket, namespace: farol, job: postgres, instance: "10.1.0.3:9187", role: replica}
  # farol's statements left running while its primary's pod is gone (15m to 18m; the page
  # from 17m): FarolStatementsLeftRunning waits the outage out, and 8 minutes after it, by
  # when those statements have left its 10-minute window. Statements left running again
  # from 40m with the primary up: the ticket, 5 minutes on. The guard reads ALERTS of the
  # generated alerts, so their production labels (role, namespace) are what is tested.
  - interval: 1m
    input_series:
      - series: up{POD1, role="primary"}
        values: 1x15 0x3 1x45
      - series: cnpg_collector_up{POD1, role="primary", cluster="farol-db"}
        values: 1x15 stale _x2 1x45
      - series: farol_db_abandoned_statements_total{FAROL, outcome="still_running"}
        values: 0x15 4 8 12 12x22 14 16 18 20 22 24 26 28x15
      - series: farol_db_abandoned_statements_total{FAROL, outcome="cancelled"}
        values: 0x63
    alert_rule_test:
      - eval_time: 17m
        alertname: PostgresDown
        exp_alerts: DOWN1
      - {eval_time: 20m, alertname: FarolStatementsLeftRunning, exp_alerts: []}
      - {eval_time: 26m, alertname: FarolStatementsLeftRunning, exp_alerts: []}
      - {eval_time: 30m, alertname: FarolStatementsLeftRunning, exp_alerts: []}
      - {eval_time: 45m, alertname: FarolStatementsLeftRunning, exp_alerts: []}
      - eval_time: 48m
        alertname: FarolStatementsLeftRunning
        exp_alerts: [{exp_labels: {severity: ticket, namespace: farol, job: farol, instance: "10.1.1.1:5000"}}]
  # The database's volume claims, as the kubelet reports them (capacity 1000 bytes here).
  # farol-db-1's data volume at 9.5 % free from 5m: the page after 5 minutes; its ticket
  # too after an hour (Alertmanager holds it back while the page fires). farol-db-2's WAL
  # volume at 28 % free, emptying by 1 a minute: full in 3.8 hours once it has the 50
  # minutes of history the page needs, so the page, and the ticket. farol-db-3's, fresh and
  # filling fast but more than 50 % free: nothing. farol-db-4 steady at 19 % free: the
  # ticket alone; farol-db-7 at 11 %: the ticket, no page; farol-db-9 at 21 %: nothing.
  # farol-db-6 at 39 %, emptying by 1 a minute (full in 6.5 hours): the ticket alone.
  # farol-db-8 at 39 %, emptying by 0.05 a minute (full in 5.4 days): nothing; farol-db-10
  # at 45 % emptying by 0.5 a minute (full in 15 hours, but above 40 % free): nothing.
  # farol-db-12 at 45 % emptying by 1.6 a minute: below 40 % from 32m, and at 36 % and
  # full within 4 hours when its page fires (the 50 minutes of history from 50m).
  # Another namespace's farol-db-1, and a claim of another name, both nearly full: nothing.
  - interval: 1m
    input_series:
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-1"}
        values: 500x4 95x76
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-2-wal"}
        values: 283-1x80
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-3"}
        values: 900-5x80
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-4"}
        values: 190x80
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-6"}
        values: 390-1x80
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-7"}
        values: 110x80
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-8"}
        values: 390-0.05x80
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-9"}
        values: 210x80
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-10"}
        values: 450-0.5x80
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-12"}
        values: 450-1.6x80
      - series: kubelet_volume_stats_available_bytes{ELSEWHERE, persistentvolumeclaim="farol-db-1"}
        values: 10x80
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="storage-loki-0"}
        values: 10x80
      CAPACITIES KUBELET farol-db-1 farol-db-2-wal farol-db-3 farol-db-4 farol-db-6 farol-db-7 farol-db-8
      CAPACITIES KUBELET farol-db-9 farol-db-10 farol-db-12 storage-loki-0
      CAPACITIES ELSEWHERE farol-db-1
    alert_rule_test:
      - {eval_time: 9m, alertname: PostgresVolumeFillingUp, exp_alerts: []}
      - eval_time: 10m
        alertname: PostgresVolumeFillingUp
        exp_alerts: [VOLUME_PAGE_1]
      - eval_time: 54m
        alertname: PostgresVolumeFillingUp
        exp_alerts: [VOLUME_PAGE_1]
      - eval_time: 57m
        alertname: PostgresVolumeFillingUp
        exp_alerts: [VOLUME_PAGE_1, VOLUME_PAGE_2, VOLUME_PAGE_12]
      - eval_time: 75m
        alertname: PostgresVolumeFillingUp
        exp_alerts: [VOLUME_PAGE_1, VOLUME_PAGE_2, VOLUME_PAGE_12, VOLUME_TICKET_1, VOLUME_TICKET_2, VOLUME_TICKET_4,
                     VOLUME_TICKET_6, VOLUME_TICKET_7]
  # farol-db-1 at 35 % free, steady on node-1; at 90m its pod moves to node-2, whose new
  # series starts with a 7-minute burst (7 %): the old node's samples give the claim its
  # trend, and nothing fires. farol-db-5, created at 0 at 35 % free, with the same burst:
  # no page without 50 minutes of history. farol-db-11, a new instance's claim filled from
  # empty to 35 % free in 10 minutes by its clone, then steady: no page once it has the
  # history, its trend flat over the last 15 minutes.
  - interval: 1m
    input_series:
      - series: kubelet_volume_stats_capacity_bytes{KUBELET, persistentvolumeclaim="farol-db-1"}
        values: 1000x89 stale
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-1"}
        values: 350x89 stale
      - series: kubelet_volume_stats_capacity_bytes{NODE2, persistentvolumeclaim="farol-db-1"}
        values: _x89 1000x20
      - series: kubelet_volume_stats_available_bytes{NODE2, persistentvolumeclaim="farol-db-1"}
        values: _x89 350-10x7 280x13
      - series: kubelet_volume_stats_capacity_bytes{KUBELET, persistentvolumeclaim="farol-db-5"}
        values: 1000x20
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-5"}
        values: 350-10x7 280x13
      - series: kubelet_volume_stats_capacity_bytes{KUBELET, persistentvolumeclaim="farol-db-11"}
        values: 1000x70
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-11"}
        values: 1000-65x10 350x60
    alert_rule_test:
      - {eval_time: 15m, alertname: PostgresVolumeFillingUp, exp_alerts: []}
      - {eval_time: 62m, alertname: PostgresVolumeFillingUp, exp_alerts: []}
      - {eval_time: 97m, alertname: PostgresVolumeFillingUp, exp_alerts: []}
      - {eval_time: 105m, alertname: PostgresVolumeFillingUp, exp_alerts: []}
  # The page's first five minutes (farol-db-2-wal from 50m) are not yet the page:
  - interval: 1m
    input_series:
      - series: kubelet_volume_stats_capacity_bytes{KUBELET, persistentvolumeclaim="farol-db-2-wal"}
        values: 1000x60
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-2-wal"}
        values: 390-2x60
    alert_rule_test:
      - {eval_time: 54m, alertname: PostgresVolumeFillingUp, exp_alerts: []}
  # 39 % free, emptying by 4.8 an hour: full in 81 hours, within 4 days but not 3, nor 4 hours.
  # The ticket after an hour of it (the trend needs two samples: from 5m), no page.
  - interval: 5m
    input_series:
      - series: kubelet_volume_stats_capacity_bytes{KUBELET, persistentvolumeclaim="farol-db-1"}
        values: 1000x20
      - series: kubelet_volume_stats_available_bytes{KUBELET, persistentvolumeclaim="farol-db-1"}
        values: 390-0.4x20
    alert_rule_test:
      - {eval_time: 60m, alertname: PostgresVolumeFillingUp, exp_alerts: []}
      - eval_time: 70m
        alertname: PostgresVolumeFillingUp
        exp_alerts: [VOLUME_TICKET_1]
  # Statistics for three data claims, then for two (farol-db-3 unmounted at 11m and not
  # back; farol-db-1 reported by two nodes counts once; a WAL claim does not count): the
  # ticket after an hour. None in the namespace at all: the ticket too.
  - interval: 1m
    input_series:
      - series: kubelet_volume_stats_capacity_bytes{KUBELET, persistentvolumeclaim="farol-db-1"}
        values: 1000x80
      - series: kubelet_volume_stats_capacity_bytes{NODE2, persistentvolumeclaim="farol-db-1"}
        values: 1000x80
      - series: kubelet_volume_stats_capacity_bytes{NODE2, persistentvolumeclaim="farol-db-2"}
        values: 1000x80
      - series: kubelet_volume_stats_capacity_bytes{KUBELET, persistentvolumeclaim="farol-db-3"}
        values: 1000x10 stale
      - series: kubelet_volume_stats_capacity_bytes{KUBELET, persistentvolumeclaim="farol-db-3-wal"}
        values: 1000x80
    alert_rule_test:
      - {eval_time: 10m, alertname: PostgresVolumeStatsMissing, exp_alerts: []}
      - {eval_time: 65m, alertname: PostgresVolumeStatsMissing, exp_alerts: []}
      - eval_time: 75m
        alertname: PostgresVolumeStatsMissing
        exp_alerts: [{exp_labels: {severity: ticket, namespace: farol}}]
  - interval: 1m
    input_series:
      - series: kubelet_volume_stats_capacity_bytes{ELSEWHERE, persistentvolumeclaim="farol-db-1"}
        values: 1000x70
    alert_rule_test:
      - {eval_time: 55m, alertname: PostgresVolumeStatsMissing, exp_alerts: []}
      - eval_time: 65m
        alertname: PostgresVolumeStatsMissing
        exp_alerts: [{exp_labels: {severity: ticket, namespace: farol}}]
  # PgBouncer a: 10 transactions a second, each waiting 30 ms for a server connection
  # (18 s of waiting a minute, in microseconds), over the 25 ms line from 1m: the ticket
  # after its 15 minutes. PgBouncer b beside it, serving the same load without waiting.
  - interval: 1m
    input_series:
      - series: cnpg_pgbouncer_stats_total_xact_count{BOUNCER_A, database="farol"}
        values: 0+600x40
      - series: cnpg_pgbouncer_stats_total_wait_time{BOUNCER_A, database="farol"}
        values: 0+18000000x40
      - series: cnpg_pgbouncer_stats_total_xact_count{BOUNCER_B, database="farol"}
        values: 0+600x40
      - series: cnpg_pgbouncer_stats_total_wait_time{BOUNCER_B, database="farol"}
        values: 0x40
    alert_rule_test:
      - {eval_time: 14m, alertname: PgBouncerClientsWaiting, exp_alerts: []}
      - eval_time: 17m
        alertname: PgBouncerClientsWaiting
        exp_alerts: [{exp_labels: {severity: ticket, namespace: farol, pod: farol-db-pooler-rw-a}}]
  # Quiet: 20 ms a transaction, under the line (a); 400 transactions an outage queued,
  # served over two minutes at 2 s each, over the line for the 5 minutes they stay in the
  # window and no longer (b, from 10m; a 15-minute window would keep them over it for 16);
  # 30 transactions a minute, each waiting 100 ms, under the traffic guard (c); the admin
  # console waiting, farol's database not (d); a PgBouncer restarted (its counters back
  # to 0 at 12m) serving without waiting (e).
  - interval: 1m
    input_series:
      - series: cnpg_pgbouncer_stats_total_xact_count{BOUNCER_A, database="farol"}
        values: 0+600x40
      - series: cnpg_pgbouncer_stats_total_wait_time{BOUNCER_A, database="farol"}
        values: 0+12000000x40
      - series: cnpg_pgbouncer_stats_total_xact_count{BOUNCER_B, database="farol"}
        values: 0+600x40
      - series: cnpg_pgbouncer_stats_total_wait_time{BOUNCER_B, database="farol"}
        values: 0x10 400000000 800000000x29
      - series: cnpg_pgbouncer_stats_total_xact_count{BOUNCER_C, database="farol"}
        values: 0+30x40
      - series: cnpg_pgbouncer_stats_total_wait_time{BOUNCER_C, database="farol"}
        values: 0+3000000x40
      - series: cnpg_pgbouncer_stats_total_xact_count{BOUNCER_D, database="farol"}
        values: 0+600x40
      - series: cnpg_pgbouncer_stats_total_wait_time{BOUNCER_D, database="farol"}
        values: 0x40
      - series: cnpg_pgbouncer_stats_total_xact_count{BOUNCER_D, database="pgbouncer"}
        values: 0+600x40
      - series: cnpg_pgbouncer_stats_total_wait_time{BOUNCER_D, database="pgbouncer"}
        values: 0+60000000x40
      - series: cnpg_pgbouncer_stats_total_xact_count{BOUNCER_E, database="farol"}
        values: 5000+600x11 0+600x28
      - series: cnpg_pgbouncer_stats_total_wait_time{BOUNCER_E, database="farol"}
        values: 9000000000x11 0x28
    alert_rule_test:
      - {eval_time: 12m, alertname: PgBouncerClientsWaiting, exp_alerts: []}
      - {eval_time: 20m, alertname: PgBouncerClientsWaiting, exp_alerts: []}
      - {eval_time: 26m, alertname: PgBouncerClientsWaiting, exp_alerts: []}
      - {eval_time: 30m, alertname: PgBouncerClientsWaiting, exp_alerts: []}
  # A pool held: hardly a transaction served (none counts a wait), the oldest in the queue
  # waiting 1 s at every scrape from 0m (a), the ticket after 15 minutes; one that waited
  # a second now and then, under it between, is not held (b).
  - interval: 1m
    input_series:
      - series: cnpg_pgbouncer_pools_maxwait{BOUNCER_A, database="farol", user="farol"}
        values: 1x30
      - series: cnpg_pgbouncer_stats_total_xact_count{BOUNCER_A, database="farol"}
        values: 0x30
      - series: cnpg_pgbouncer_pools_maxwait{BOUNCER_B, database="farol", user="farol"}
        values: 1 1 1 0 1 1 1 0 1 1 1 0 1 1 1 0 1 1 1 0 1 1 1 0 1 1 1 0 1 1
      - series: cnpg_pgbouncer_pools_maxwait{BOUNCER_C, database="pgbouncer", user="pgbouncer"}
        values: 5x30
    alert_rule_test:
      - {eval_time: 14m, alertname: PgBouncerClientsWaiting, exp_alerts: []}
      - eval_time: 16m
        alertname: PgBouncerClientsWaiting
        exp_alerts: [{exp_labels: {severity: ticket, namespace: farol, pod: farol-db-pooler-rw-a}}]
"""
TESTS = re.sub(r"^( +)CAPACITIES (\w+) (.+)\n", capacities, TESTS, flags=re.M)
TESTS = TESTS.replace("POD1", POD.format(n=1)).replace("POD2", POD.format(n=2)).replace(
    "POD3", POD.format(n=3)).replace(
    # the inhibit-only signal and the page of the primary, farol-db-1, with its scrape
    # target's labels (no `cluster`: one series whichever side of the `or` it comes from)
    "SIGNAL1", '[{exp_labels: {severity: none, namespace: farol, job: postgres, pod: farol-db-1, '
               'instance: "10.1.0.1:9187", role: primary}}]').replace(
    "KUBELET", 'namespace="farol", job="kubelet", instance="node-1"').replace(
    "FAROL", 'namespace="farol", job="farol", pod="farol-7d9c-abcde", instance="10.1.1.1:5000"').replace(
    "BOUNCER_A", BOUNCER.format(p="a", n=31)).replace("BOUNCER_B", BOUNCER.format(p="b", n=32)).replace(
    "BOUNCER_C", BOUNCER.format(p="c", n=33)).replace("BOUNCER_D", BOUNCER.format(p="d", n=34)).replace(
    "BOUNCER_E", BOUNCER.format(p="e", n=35)).replace(
    "ELSEWHERE", 'namespace="other", job="kubelet", instance="node-1"').replace(
    "NODE2", 'namespace="farol", job="kubelet", instance="node-2"').replace(
    # farol-db-12's before farol-db-1's, whose name is a prefix of it
    "VOLUME_PAGE_12", volume("page", "farol-db-12")).replace(
    "VOLUME_PAGE_1", volume("page", "farol-db-1")).replace(
    "VOLUME_PAGE_2", volume("page", "farol-db-2-wal")).replace(
    "VOLUME_TICKET_1", volume("ticket", "farol-db-1")).replace(
    "VOLUME_TICKET_2", volume("ticket", "farol-db-2-wal")).replace(
    "VOLUME_TICKET_4", volume("ticket", "farol-db-4")).replace(
    "VOLUME_TICKET_6", volume("ticket", "farol-db-6")).replace(
    "VOLUME_TICKET_7", volume("ticket", "farol-db-7")).replace(
    "DOWN1", '[{exp_labels: {severity: page, namespace: farol, job: postgres, pod: farol-db-1, '
             'instance: "10.1.0.1:9187", role: primary}}]')


class ProductionRulesOnCloudNativePGSeries(unittest.TestCase):
    def test_the_postgres_alerts_fire_and_stay_quiet_on_cloudnativepg_series(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool is needed: scripts/install-deps monitoring")
        groups = yaml.safe_load(gen.render(gen.load_groups()))["spec"]["groups"]
        # the texts are test_prometheusrule.py's business: here, when each alert fires
        for group in groups:
            for rule in group["rules"]:
                rule.pop("annotations", None)
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "rules.yml"), "w") as f:
                yaml.safe_dump({"groups": groups}, f)
            with open(os.path.join(tmp, "tests.yml"), "w") as f:
                f.write(textwrap.dedent(TESTS))
            done = subprocess.run([promtool, "test", "rules", "tests.yml"], cwd=tmp,
                                  capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_every_production_only_alert_fires_here_at_each_severity(self):
        # compose's alerts have tests of their own (monitoring/prometheus/tests) and the
        # fire drill; those of monitoring/prometheus/production/ have only these
        fired = {(case["alertname"], alert["exp_labels"]["severity"])
                 for test in yaml.safe_load(textwrap.dedent(TESTS))["tests"]
                 for case in test.get("alert_rule_test", []) for alert in case["exp_alerts"] or []}
        wanted = {(r["alert"], r["labels"]["severity"])
                  for g in gen.load_groups((gen.PRODUCTION_RULES_GLOB,)) for r in g["rules"] if "alert" in r}
        self.assertTrue(wanted)
        self.assertLessEqual(wanted, fired)

    def test_the_volume_alerts_watch_the_claims_of_the_cluster_as_named(self):
        # CloudNativePG names an instance's claims after its Cluster: a rename must not
        # leave the alerts watching claims that no longer exist
        name = gen.cluster()["metadata"]["name"]
        claims = {m for g in gen.load_groups((gen.PRODUCTION_RULES_GLOB,)) for r in g["rules"]
                  for m in re.findall(r'persistentvolumeclaim=~"([^"]*)"', r["expr"])}
        self.assertTrue(claims)
        for claim in claims:
            self.assertRegex(f"{name}-1", f"^(?:{claim})$")
            self.assertTrue(claim.startswith(name + "-"), claim)


if __name__ == "__main__":
    unittest.main()
