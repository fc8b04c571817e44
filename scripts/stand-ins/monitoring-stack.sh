# shellcheck shell=bash
# The monitoring stack of monitoring/, run locally from Debian's packages on 127.0.0.1 with
# free ports: for scripts/check-queries and the fire drill. Sourced after common.sh (and
# postgres.sh, for PG_URL).
#
#   stack_start WORK_DIR FAROL_ADDR [CONFIG_DIR]
#       CONFIG_DIR is shaped like monitoring/ (the default; the fire drill passes what
#       scripts/drill-config wrote). Its prometheus/ and alertmanager/ are copied to
#       WORK_DIR/config with local addresses (_stack_render; farol at FAROL_ADDR), then the
#       webhook receiver, Alertmanager, node, PostgreSQL (at $PG_URL) and blackbox exporters
#       and Prometheus start, each waited for. Sets STACK_PROMETHEUS_URL,
#       STACK_ALERTMANAGER_URL, STACK_WEBHOOK_LOG (JSON lines), STACK_WEBHOOK_REFUSE (the
#       receiver's paths to answer 503, one a line), STACK_PORTS[name],
#       STACK_LOG_DIR, STACK_TEXTFILE_DIR (the node exporter's textfile collector reads it).
#       Extra Prometheus flags: STACK_PROMETHEUS_ARGS (split on spaces).
#   stack_stop                 ends what stack_start started, then the stack_on_exit
#                              commands, newest first; the EXIT trap (INT and TERM exit through it)
#   stack_on_exit COMMAND...   run COMMAND then too (the caller's farol, PostgreSQL)
#   stack_python               STACK_PYTHON: a python3 with PyYAML (the tools' venv, else the system's)
#   stack_add_postgres NAME DSN      one more PostgreSQL exporter, on port STACK_PORTS[NAME]
#   stack_kill NAME, stack_revive NAME   stop one process of the stack, start it again
#   stack_restart_postgres DSN       the PostgreSQL exporter again, reading another data source

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

# _stack_render CONFIG_DIR OUT_DIR FROM=TO...: a stand-in for the compose network (the
# folder's README): CONFIG_DIR's prometheus/ and alertmanager/ copied to OUT_DIR, each
# compose address FROM (a whole host:port: "app:5000" is not in "myapp:50001") replaced by
# TO in prometheus.yml, its target files and alertmanager.yml, nothing else changed. An
# address that no longer occurs there (outside comment lines) is an error, so the
# rendering cannot drift silently.
_stack_render() {
  local source=$1 out=$2 pair from files
  shift 2
  mkdir -p "$out"
  cp -R "$source/prometheus" "$source/alertmanager" "$out/"
  files=("$out/prometheus/prometheus.yml" "$out"/prometheus/targets/*.yml "$out/alertmanager/alertmanager.yml")
  for pair in "$@"; do
    from=${pair%%=*}
    FROM=$from perl -ne '$n++ if !/^\s*#/ && /(?<![\w.-])\Q$ENV{FROM}\E(?!\w)/; END { exit !$n }' "${files[@]}" \
      || die "$from no longer in the configuration of $source; update monitoring-stack.sh"
    FROM=$from TO=${pair#*=} perl -pi -e 's/(?<![\w.-])\Q$ENV{FROM}\E(?!\w)/$ENV{TO}/g' "${files[@]}"
  done
}

stack_start() {
  local work=$1 farol=$2 config=${3:-$REPO_ROOT/monitoring} name resend
  need prometheus prometheus-alertmanager prometheus-node-exporter \
    prometheus-postgres-exporter prometheus-blackbox-exporter curl perl
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
  # the addresses of monitoring/docker-compose.yml, as they appear in its configuration
  _stack_render "$config" "$work/config" "app:5000=$farol" \
    "localhost:9090=127.0.0.1:${STACK_PORTS[prometheus]}" \
    "alertmanager:9093=127.0.0.1:${STACK_PORTS[alertmanager]}" \
    "host.docker.internal:9100=127.0.0.1:${STACK_PORTS[node]}" \
    "postgres-exporter:9187=127.0.0.1:${STACK_PORTS[postgres]}" \
    "blackbox-exporter:9115=127.0.0.1:${STACK_PORTS[blackbox]}" \
    "webhook-receiver:8080=127.0.0.1:${STACK_PORTS[webhook]}"

  STACK_WEBHOOK_LOG=$work/webhook.jsonl
  : >"$STACK_WEBHOOK_LOG"
  # the receiver's paths listed in this file are answered 503 (a receiver failing)
  STACK_WEBHOOK_REFUSE=$work/webhook-refuse
  rm -f "$STACK_WEBHOOK_REFUSE"
  _stack_run webhook "http://127.0.0.1:${STACK_PORTS[webhook]}/-/healthy" \
    env WEBHOOK_REFUSE_FILE="$STACK_WEBHOOK_REFUSE" \
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
  resend=$("$STACK_PYTHON" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["global"]["evaluation_interval"])' \
    "$work/config/prometheus/prometheus.yml")
  # shellcheck disable=SC2086 # STACK_PROMETHEUS_ARGS: extra flags, split on purpose
  _stack_run prometheus "$STACK_PROMETHEUS_URL/-/ready" \
    prometheus --config.file="$work/config/prometheus/prometheus.yml" \
    --storage.tsdb.path="$work/prometheus-data" --web.listen-address="127.0.0.1:${STACK_PORTS[prometheus]}" \
    --rules.alert.resend-delay="$resend" --enable-feature=exemplar-storage $STACK_PROMETHEUS_ARGS
  export STACK_PROMETHEUS_URL STACK_ALERTMANAGER_URL STACK_WEBHOOK_LOG STACK_WEBHOOK_REFUSE STACK_LOG_DIR STACK_TEXTFILE_DIR
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

# _stack_end PID...: TERM, up to 10 s to exit, then KILL; each reaped
_stack_end() {
  local pid deadline=$((SECONDS + 10))
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

stack_kill() {
  local name=$1 pid=${STACK_PID_OF[$1]:-} kept=() p
  [ -n "$pid" ] || die "stack_kill: no process named $name"
  _stack_end "$pid"
  # reaped: its pid may be reused by anything, which stack_stop must not signal
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
  local i
  _stack_end "${STACK_PIDS[@]}"
  STACK_PIDS=()
  for ((i = ${#STACK_ON_EXIT[@]} - 1; i >= 0; i--)); do
    eval "${STACK_ON_EXIT[i]}" 2>/dev/null || true   # e.g. kill: it may be gone already
  done
  STACK_ON_EXIT=()
}
