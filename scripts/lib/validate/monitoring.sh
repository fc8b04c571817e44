# shellcheck shell=bash
# monitoring/: Prometheus and Alertmanager configuration, the rules and their unit tests,
# routing and inhibitions on a real Alertmanager, runbooks, dashboards, the fire drill's
# generator's output (its unit tests run in the python area), and what can only be read
# (Grafana provisioning, Loki, Alloy, compose file). Needs `scripts/install-deps monitoring
# lint` (lint: slokit); no network; a few minutes, most of them the SLO rules' unit tests.

# shellcheck source=scripts/stand-ins/monitoring-stack.sh
. "$REPO_ROOT/scripts/stand-ins/monitoring-stack.sh"

# _check DESCRIPTION COMMAND...: run COMMAND quietly; on failure show its output.
_check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then
    ok "$what"
  else
    printf '%s\n' "$out" >&2
    warn "FAILED: $what"
    return 1
  fi
}

validate_monitoring() {
  need promtool amtool prometheus-alertmanager prometheus-blackbox-exporter curl slokit
  stack_python
  local py=$STACK_PYTHON tool=$REPO_ROOT/scripts/lib/monitoring_config.py failed=0 receiver labels tmp
  local am_config=monitoring/alertmanager/alertmanager.yml
  # global, not local: the trap fires when this area's bash process ends, after the function returned
  MONITORING_TMP=$(mktemp -d)
  trap 'rm -rf "$MONITORING_TMP"' EXIT
  tmp=$MONITORING_TMP

  _check "the SLO spec is in sloth's format (slokit validate and lint)" \
    bash -c 'slokit validate -i monitoring/slo/farol.yml && slokit lint -i monitoring/slo/farol.yml' || failed=1
  _check "SLO rules, tests and dashboard rows match monitoring/slo/ (make slo)" \
    "$py" "$REPO_ROOT/scripts/lib/slo.py" generate --check || failed=1
  _check "latency SLO thresholds are bucket bounds of HTTP_BUCKETS (the live /metrics: make queries)" \
    "$py" "$REPO_ROOT/scripts/lib/slo.py" check-buckets --source-buckets || failed=1
  _check "promtool check config (prometheus.yml and its rule files)" \
    promtool check config monitoring/prometheus/prometheus.yml || failed=1
  _check "promtool check rules" promtool check rules monitoring/prometheus/rules/*.yml || failed=1
  # One promtool per file, two at a time: promtool runs on one core, and the two SLO
  # files (each evaluates every rule at every step of hours or days of data) take a
  # minute or more each. Each file's output is printed whole, under its name.
  # shellcheck disable=SC2016 # the inner shells expand $1, $out and $rc
  _check "promtool test rules: $(cd monitoring/prometheus && echo tests/*.yml)" \
    bash -c 'cd monitoring/prometheus && printf "%s\0" tests/*.yml \
      | xargs -0 -n 1 -P 2 sh -c '\''out=$(promtool test rules "$1" 2>&1); rc=$?; printf "%s\n" "$out"; exit "$rc"'\'' promtool-test' \
    || failed=1
  _check "every recording rule is compared in a unit test" \
    "$py" "$tool" check-rule-tests || failed=1
  _check "every alert has a unit test, a runbook and a fire-drill scenario" \
    "$py" "$tool" check-alert-coverage || failed=1
  _check "blackbox exporter configuration" \
    prometheus-blackbox-exporter --config.check --config.file=monitoring/blackbox/blackbox.yml || failed=1

  _check "amtool check-config" amtool check-config "$am_config" || failed=1
  # Routing: each severity to its receiver, the Watchdog to its own whatever its severity,
  # a failing receiver to the pager and the ticket queue both, and an alert without a
  # severity to the default.
  while read -r receiver labels; do
    # shellcheck disable=SC2086 # labels: several name=value words
    _check "route: {$labels} -> $receiver" \
      amtool config routes test --config.file="$am_config" --verify.receivers="$receiver" $labels || failed=1
  done <<'ROUTES'
page     alertname=HttpHighErrorRate severity=page instance=farol:5000
page     alertname=PostgresDown severity=page
inhibit-only alertname=PostgresPrimaryUnreachable severity=none
ticket   alertname=HostHighCpuUsage severity=ticket
ticket   alertname=SomethingNew
page     alertname=PostgresVolumeFillingUp severity=page persistentvolumeclaim=farol-db-1
ticket   alertname=PostgresVolumeFillingUp severity=ticket persistentvolumeclaim=farol-db-1
watchdog alertname=Watchdog severity=ticket
watchdog alertname=Watchdog severity=page
page,ticket alertname=AlertmanagerNotificationsFailing severity=page integration=webhook
ROUTES
  _check_inhibitions "$py" "$tool" "$tmp" || failed=1

  _check "runbooks: one per alert, every runbook_url built from Cargo.toml's repository" \
    "$py" "$tool" check-runbooks || failed=1
  _check "dashboards: JSON, units, \$job/\$instance, data source uids, alert thresholds drawn" \
    "$py" "$tool" check-dashboards || failed=1

  _check "drill-config output passes promtool and amtool" \
    bash -c "'$REPO_ROOT/scripts/drill-config' '$tmp/drill' >/dev/null \
      && promtool check config '$tmp/drill/prometheus/prometheus.yml' \
      && amtool check-config '$tmp/drill/alertmanager/alertmanager.yml'" || failed=1

  _check "read-only checks: Grafana provisioning, Loki, Alloy, compose file" \
    _check_static_files "$py" "$tool" || failed=1
  return "$failed"
}

# The inhibit_rules, on a real Alertmanager with the project's alertmanager.yml: each
# scenario's alerts are sent to a fresh instance, which must suppress exactly the expected
# ones. Notifications go nowhere (the compose receiver's address does not resolve here).
_check_inhibitions() {
  local py=$1 tool=$2 tmp=$3 scenario port pid failed=0 n=0 scenarios
  mapfile -t scenarios < <("$py" "$tool" check-inhibitions --alertmanager none --scenario list)
  for scenario in "${scenarios[@]}"; do
    n=$((n + 1))
    port=$(free_port)
    prometheus-alertmanager --config.file=monitoring/alertmanager/alertmanager.yml \
      --storage.path="$tmp/am-$n" --web.listen-address="127.0.0.1:$port" \
      --cluster.listen-address= >"$tmp/am-$n.log" 2>&1 &
    pid=$!
    if wait_until 20 "Alertmanager" curl -fsS -o /dev/null "http://127.0.0.1:$port/-/ready"; then
      _check "inhibitions, $scenario" "$py" "$tool" check-inhibitions \
        --alertmanager "http://127.0.0.1:$port" --scenario "$scenario" || failed=1
    else
      cat "$tmp/am-$n.log" >&2
      failed=1
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  return "$failed"
}

# What cannot run here (no Grafana, Loki or Alloy binaries): syntax, references.
_check_static_files() {
  "$1" "$2" check-static-files || return 1
  if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    GRAFANA_ADMIN_PASSWORD_FILE=/dev/null docker compose -f monitoring/docker-compose.yml config -q || return 1
  else
    warn "docker compose is not installed: monitoring/docker-compose.yml only parsed as YAML"
  fi
}
