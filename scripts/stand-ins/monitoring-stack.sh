# shellcheck shell=bash
# The monitoring stack of monitoring/, run locally from Debian's packages on 127.0.0.1 with
# free ports: for scripts/check-queries and the fire drill. Sourced after common.sh (and
# postgres.sh, for PG_URL).
#
#   stack_start WORK_DIR FAROL_ADDR [CONFIG_DIR]
#       CONFIG_DIR is shaped like monitoring/ (the default; the fire drill passes what
#       scripts/drill-config wrote). Its prometheus.yml, target files and alertmanager.yml
#       are rendered into WORK_DIR with local addresses (farol at FAROL_ADDR, host:port),
#       then the webhook receiver, Alertmanager, node exporter, PostgreSQL exporter (at
#       $PG_URL), blackbox exporter and Prometheus (resending firing alerts at its
#       evaluation interval) start, each waited for. Sets:
#         STACK_PROMETHEUS_URL  STACK_ALERTMANAGER_URL  STACK_WEBHOOK_LOG (JSON lines)
#         STACK_PORTS[name]     STACK_LOG_DIR
#         STACK_TEXTFILE_DIR    what the node exporter's textfile collector reads (*.prom)
#       Extra Prometheus flags: set STACK_PROMETHEUS_ARGS (split on spaces) before calling.
#   stack_stop
#       Stops everything stack_start started (by process id), then runs the commands given
#       to stack_on_exit, newest first. stack_start installs it as the EXIT trap (INT and
#       TERM exit through it), so an interrupted script cleans up too.
#   stack_on_exit COMMAND...
#       Also run COMMAND when the stack stops: the caller's own processes (farol,
#       PostgreSQL) join the same trap instead of replacing it. Installs the trap, so it
#       may come before stack_start.
#   stack_python
#       Sets STACK_PYTHON to a python3 that has PyYAML (the tools' venv, else the system's).
#   stack_add_postgres NAME DATA_SOURCE_NAME
#       One more PostgreSQL exporter (a standby's), on the free port STACK_PORTS[NAME];
#       the caller adds its scrape target.
#   stack_kill NAME, stack_revive NAME
#       Stop one process of the stack (e.g. postgres-exporter), and start it again with the
#       same command: the fire drill's exporter-down fault.
#   stack_restart_postgres DATA_SOURCE_NAME
#       Stop the PostgreSQL exporter and start it again on its port, reading another data
#       source: the fire drill's failing-query fault (and, with $PG_URL, its fix).

STACK_PIDS=()
STACK_ON_EXIT=()
declare -A STACK_PORTS=() STACK_PID_OF=() STACK_CMD_OF=()
: "${STACK_PROMETHEUS_ARGS:=}"

stack_python() {
  local candidate
  for candidate in "$TOOLS_DIR/venv/bin/python" python3 /usr/bin/python3; do
    if "$candidate" -c 'import yaml' >/dev/null 2>&1; then
      STACK_PYTHON=$candidate
      return 0
    fi
  done
  die "no python3 with PyYAML: run scripts/install-deps lint (or apt-get install python3-yaml)"
}

stack_on_exit() {
  local quoted
  printf -v quoted '%q ' "$@"
  STACK_ON_EXIT+=("$quoted")
  _stack_trap
}

_stack_trap() {
  trap stack_stop EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# _stack_run NAME READY_URL COMMAND...: start COMMAND in the background, logging to
# STACK_LOG_DIR/NAME.log, and wait until READY_URL answers.
_stack_run() {
  local name=$1 ready=$2 quoted
  shift 2
  "$@" >>"$STACK_LOG_DIR/$name.log" 2>&1 &
  STACK_PIDS+=("$!")
  STACK_PID_OF[$name]=$!
  printf -v quoted '%q ' "$ready" "$@"
  STACK_CMD_OF[$name]=$quoted
  if ! wait_until 30 "$name" curl -fsS -o /dev/null "$ready"; then
    tail -n 20 "$STACK_LOG_DIR/$name.log" >&2
    die "$name did not become ready (log: $STACK_LOG_DIR/$name.log)"
  fi
}

stack_start() {
  local work=$1 farol=$2 config=${3:-$REPO_ROOT/monitoring} name
  need prometheus prometheus-alertmanager prometheus-node-exporter \
    prometheus-postgres-exporter prometheus-blackbox-exporter curl
  [ -n "${PG_URL:-}" ] || die "stack_start: PG_URL is not set (pg_start first)"
  stack_python
  _stack_trap
  mkdir -p "$work"
  work=$(cd "$work" && pwd)
  STACK_LOG_DIR=$work/logs
  mkdir -p "$STACK_LOG_DIR"
  for name in prometheus alertmanager node postgres blackbox webhook; do
    STACK_PORTS[$name]=$(free_port)
  done

  # The addresses of monitoring/docker-compose.yml, as they appear in its configuration.
  "$STACK_PYTHON" "$REPO_ROOT/scripts/stand-ins/local_addresses.py" "$work/config" \
    --source "$config" \
    --address "app:5000=$farol" \
    --address "localhost:9090=127.0.0.1:${STACK_PORTS[prometheus]}" \
    --address "alertmanager:9093=127.0.0.1:${STACK_PORTS[alertmanager]}" \
    --address "host.docker.internal:9100=127.0.0.1:${STACK_PORTS[node]}" \
    --address "postgres-exporter:9187=127.0.0.1:${STACK_PORTS[postgres]}" \
    --address "blackbox-exporter:9115=127.0.0.1:${STACK_PORTS[blackbox]}" \
    --address "webhook-receiver:8080=127.0.0.1:${STACK_PORTS[webhook]}" \
    || die "could not render the monitoring configuration of $config"

  STACK_WEBHOOK_LOG=$work/webhook.jsonl
  : >"$STACK_WEBHOOK_LOG"
  _stack_run webhook "http://127.0.0.1:${STACK_PORTS[webhook]}/-/healthy" \
    "$STACK_PYTHON" "$REPO_ROOT/scripts/lib/webhook-receiver.py" "${STACK_PORTS[webhook]}" "$STACK_WEBHOOK_LOG"
  STACK_ALERTMANAGER_URL=http://127.0.0.1:${STACK_PORTS[alertmanager]}
  # --cluster.listen-address= : no gossip port, one instance only.
  _stack_run alertmanager "$STACK_ALERTMANAGER_URL/-/ready" \
    prometheus-alertmanager --config.file="$work/config/alertmanager/alertmanager.yml" \
    --storage.path="$work/alertmanager" --web.listen-address="127.0.0.1:${STACK_PORTS[alertmanager]}" \
    --cluster.listen-address=
  STACK_TEXTFILE_DIR=$work/textfile
  mkdir -p "$STACK_TEXTFILE_DIR"
  _stack_run node "http://127.0.0.1:${STACK_PORTS[node]}/metrics" \
    prometheus-node-exporter --web.listen-address="127.0.0.1:${STACK_PORTS[node]}" \
    --collector.textfile.directory="$STACK_TEXTFILE_DIR"
  _stack_postgres_exporter postgres-exporter "${STACK_PORTS[postgres]}" "$PG_URL"
  _stack_run blackbox "http://127.0.0.1:${STACK_PORTS[blackbox]}/metrics" \
    prometheus-blackbox-exporter --config.file="$config/blackbox/blackbox.yml" \
    --web.listen-address="127.0.0.1:${STACK_PORTS[blackbox]}"
  STACK_PROMETHEUS_URL=http://127.0.0.1:${STACK_PORTS[prometheus]}
  # A firing alert is sent again only after the resend delay (1m by default): at the
  # evaluation interval instead, an alert that fired before Alertmanager was discovered
  # (the Watchdog, at once) arrives within an interval, in the drill's seconds too.
  local resend
  resend=$("$STACK_PYTHON" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["global"]["evaluation_interval"])' \
    "$work/config/prometheus/prometheus.yml")
  # shellcheck disable=SC2086 # STACK_PROMETHEUS_ARGS: extra flags, split on purpose
  _stack_run prometheus "$STACK_PROMETHEUS_URL/-/ready" \
    prometheus --config.file="$work/config/prometheus/prometheus.yml" \
    --storage.tsdb.path="$work/prometheus-data" --web.listen-address="127.0.0.1:${STACK_PORTS[prometheus]}" \
    --rules.alert.resend-delay="$resend" --enable-feature=exemplar-storage $STACK_PROMETHEUS_ARGS
  export STACK_PROMETHEUS_URL STACK_ALERTMANAGER_URL STACK_WEBHOOK_LOG STACK_LOG_DIR STACK_TEXTFILE_DIR
  ok "monitoring stack up: Prometheus $STACK_PROMETHEUS_URL, Alertmanager $STACK_ALERTMANAGER_URL (logs: $STACK_LOG_DIR)"
}

stack_add_postgres() {
  STACK_PORTS[$1]=$(free_port)
  _stack_postgres_exporter "$1" "${STACK_PORTS[$1]}" "$2"
}
# _stack_postgres_exporter NAME PORT DATA_SOURCE_NAME (with compose's custom query)
_stack_postgres_exporter() {
  _stack_run "$1" "http://127.0.0.1:$2/metrics" \
    env DATA_SOURCE_NAME="$3" prometheus-postgres-exporter --web.listen-address="127.0.0.1:$2" \
    --extend.query-path="$REPO_ROOT/monitoring/postgres-exporter/queries.yaml"
}

stack_restart_postgres() {
  stack_kill postgres-exporter
  _stack_postgres_exporter postgres-exporter "${STACK_PORTS[postgres]}" "$1"
}

stack_kill() {
  local name=$1 pid=${STACK_PID_OF[$1]:-} deadline
  [ -n "$pid" ] || die "stack_kill: no process named $name"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # reaped: its pid may be reused by anything, which stack_stop must not signal
  local kept=() p
  for p in "${STACK_PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  STACK_PIDS=("${kept[@]}")
  unset "STACK_PID_OF[$name]"
}

stack_revive() {
  local name=$1
  [ -n "${STACK_CMD_OF[$name]:-}" ] || die "stack_revive: no process named $name"
  eval "_stack_run $(printf '%q' "$name") ${STACK_CMD_OF[$name]}"
}

stack_stop() {
  local pid i deadline
  for pid in "${STACK_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  deadline=$((SECONDS + 10))
  for pid in "${STACK_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  STACK_PIDS=()
  for ((i = ${#STACK_ON_EXIT[@]} - 1; i >= 0; i--)); do
    eval "${STACK_ON_EXIT[i]}" 2>/dev/null || true   # e.g. kill: it may be gone already
  done
  STACK_ON_EXIT=()
}
