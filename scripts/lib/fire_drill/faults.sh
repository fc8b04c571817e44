# shellcheck shell=bash
# The fire drill's hands (sourced by scripts/fire-drill): farol, the proxy, the trace
# collector, the load and the knobs. Every process runs in its own session, registered in
# DRILL_PIDS, so that one signal to its group ends it with its children, and the exit trap
# (drill_end_all) ends whatever still runs, also on Ctrl-C or SIGTERM.

declare -A DRILL_PIDS=()
DRILL_LIB=$REPO_ROOT/scripts/lib/fire_drill

drill_spawn() {
  local name=$1 log=$2
  shift 2
  setsid "$@" >>"$log" 2>&1 </dev/null &
  DRILL_PIDS[$name]=$!
}

drill_end() {
  local name=$1 sig=${2:-TERM} pid deadline
  pid=${DRILL_PIDS[$name]:-}
  [ -n "$pid" ] || return 0
  kill -"$sig" -- "-$pid" 2>/dev/null || true
  kill -CONT -- "-$pid" 2>/dev/null || true   # a frozen process acts on the signal once continued
  deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "DRILL_PIDS[$name]"
}

drill_end_all() {
  local name
  for name in "${!DRILL_PIDS[@]}"; do drill_end "$name"; done
}

# drill_run NAME CMD...: CMD run to its end as a background job waited for, so that a
# signal to the script is handled at once
drill_run() {
  local name=$1 rc=0
  shift
  setsid "$@" </dev/null &
  DRILL_PIDS[$name]=$!
  wait "${DRILL_PIDS[$name]}" || rc=$?
  unset "DRILL_PIDS[$name]"
  return "$rc"
}

# fault injection allowed, a short drain, and the database timeouts stated: /health must
# answer within DB_QUERY_TIMEOUT_MS while PostgreSQL is down
farol_start() {
  farol_command "$FAROL_PORT" "$FAROL_DB_URL" CHAOS_ENABLED=true CONFIG_DIR="$FAROL_CONFIG_DIR" \
    MAX_CONNECTIONS="$FAROL_MAX_CONNECTIONS" \
    DB_CONNECT_TIMEOUT_MS="$FAROL_DB_TIMEOUT_MS" DB_QUERY_TIMEOUT_MS="$FAROL_DB_TIMEOUT_MS" \
    SHUTDOWN_DELAY_MS=0 SHUTDOWN_TIMEOUT_MS=2000 \
    OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$COLLECTOR_PORT" OTEL_BSP_SCHEDULE_DELAY=1000 \
    OTEL_BSP_MAX_QUEUE_SIZE=8192
  drill_spawn farol "$DRILL_WORK/farol.log" "${FAROL_CMD[@]}"
  farol_wait_ready "$FAROL_PORT" "$DRILL_WORK/farol.log" 30 "$(farol_pid)"
}

farol_stop() { drill_end farol TERM; }

proxy_start() {
  drill_spawn proxy "$DRILL_WORK/proxy.log" "$STACK_PYTHON" "$DRILL_LIB/tcp_proxy.py" \
    "$PROXY_PORT" 127.0.0.1 "$PG_PORT"
  wait_until 10 "the proxy" bash -c "exec 3<>/dev/tcp/127.0.0.1/$PROXY_PORT" \
    || die "the TCP proxy did not start (log: $DRILL_WORK/proxy.log)"
}

proxy_stop() { drill_end proxy TERM; }

# A stopped process's sockets still complete connections into the backlog and take bytes:
# to farol the database is there and never answers, where proxy_stop refuses at once.
proxy_freeze() { kill -STOP -- "-${DRILL_PIDS[proxy]}"; }
proxy_thaw() { kill -CONT -- "-${DRILL_PIDS[proxy]}"; }

# farol's span queue is at its cap (8192): else the windows, shortened 30 times, would count
# a stall of a second (a stressor, the memory given back) as lost traces
collector_start() {
  drill_spawn collector "$DRILL_WORK/collector.log" env PORT="$COLLECTOR_PORT" "$OTLP_SINK_BIN"
  wait_until 15 "the trace collector" bash -c "exec 3<>/dev/tcp/127.0.0.1/$COLLECTOR_PORT" \
    || die "the trace collector stand-in did not start (log: $DRILL_WORK/collector.log)"
}

collector_stop() { drill_end collector TERM; }

farol_pid() { echo "${DRILL_PIDS[farol]:-none}"; }

# A temporary file, then rename: the reader never sees half of it. (A knob's is hidden:
# farol reads every other file of CONFIG_DIR as a key.)
replace_file() {
  cat >"$1.tmp"
  mv -f "$1.tmp" "$1"
}
drill_knob() {
  printf '%s\n' "$2" >"$FAROL_CONFIG_DIR/.$1.tmp"
  mv -f "$FAROL_CONFIG_DIR/.$1.tmp" "$FAROL_CONFIG_DIR/$1"
}

# load_start SCENARIO [CONNECTIONS DELAY_MS]: wrk, bounded by -d; stopped with SIGINT, on which
# it prints its summary (and load.lua its DRILL_SUMMARY line)
load_start() {
  drill_spawn load "$DRILL_WORK/load-$1.log" wrk -t1 -c"${2:-$LOAD_CONNECTIONS}" -d"${LOAD_MAX_SECONDS}s" \
    -s "$DRILL_LIB/load.lua" "http://127.0.0.1:$FAROL_PORT" -- "${3:-$LOAD_DELAY_MS}"
}

load_stop() { drill_end load INT; }
