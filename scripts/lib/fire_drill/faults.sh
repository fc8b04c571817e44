# shellcheck shell=bash
# The fire drill's hands: farol, the load, the faults and the stressors, for
# scripts/fire-drill. Sourced after common.sh, postgres.sh, farol.sh and
# scripts/stand-ins/monitoring-stack.sh.
#
# Every process started here runs in its own session (setsid), so that one signal to its
# process group ends it with any children (stress-ng's workers), and is registered in
# DRILL_PIDS, so that the exit trap (drill_end_all, through stack_on_exit) ends whatever
# still runs, also on Ctrl-C or SIGTERM.
#
#   drill_spawn NAME LOG CMD...   start CMD in the background; its pid in DRILL_PIDS[NAME]
#   drill_end NAME [SIGNAL]       send SIGNAL (TERM) to NAME's group, wait up to 10 s, KILL
#   drill_end_all                 drill_end for everything still registered
#   drill_run NAME CMD...         run CMD to its end as a background job waited for: a
#                                 signal to the script is handled at once, not after CMD
#   farol_start, farol_stop       farol with the drill's settings (see farol_start)
#   proxy_start, proxy_stop       the TCP proxy between farol and PostgreSQL (tcp_proxy.py)
#   proxy_freeze, proxy_thaw      the proxy stopped (SIGSTOP) and continued (SIGCONT): a
#                                 database that hangs
#   collector_start, collector_stop
#                                 the stand-in trace collector farol sends its spans to
#                                 (examples/otlp_sink.rs)
#   drill_knob KEY VALUE          write CONFIG_DIR/KEY atomically (farol applies it live)
#   replace_file FILE             FILE's content replaced by stdin atomically (a target
#                                 file: Prometheus never reads half of it)
#   load_start SCENARIO [CONNECTIONS DELAY_MS], load_stop
#                                 paced wrk traffic (lib/fire_drill/load.lua), per scenario
# Needs: DRILL_WORK, FAROL_BIN, FAROL_PORT, FAROL_CONFIG_DIR, FAROL_DB_URL, PG_PORT,
# PROXY_PORT, COLLECTOR_PORT, OTLP_SINK_BIN, STACK_PYTHON, and the LOAD_*, FAROL_DB_TIMEOUT_MS and
# FAROL_MAX_CONNECTIONS settings of scripts/fire-drill.

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

drill_run() {
  local name=$1 rc=0
  shift
  setsid "$@" </dev/null &
  DRILL_PIDS[$name]=$!
  wait "${DRILL_PIDS[$name]}" || rc=$?
  unset "DRILL_PIDS[$name]"
  return "$rc"
}

# farol as the drill needs it: fault injection allowed (CHAOS_ENABLED is read at start-up
# only), the hot keys in CONFIG_DIR, a short drain so that stopping it is quick, and the
# database timeouts stated rather than implied (/health must answer within
# DB_QUERY_TIMEOUT_MS while PostgreSQL is down). Logs append to farol.log across restarts.
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

# A stopped process's listening socket still completes connections into its backlog, and
# its open sockets still take what is written to them until their buffers fill: to farol
# the database is there and never answers (a hung server, a path that drops everything),
# where proxy_stop refuses at once.
proxy_freeze() { kill -STOP -- "-${DRILL_PIDS[proxy]}"; }
proxy_thaw() { kill -CONT -- "-${DRILL_PIDS[proxy]}"; }

# the trace collector farol sends its spans to (every request sampled), which the traces
# scenario stops and starts again on the same port. farol's queue is at its cap (8192
# spans, several seconds of the drill's load): the windows, shortened 30 times, would
# otherwise count a stall of a second (a stressor, the memory given back) as lost traces.
collector_start() {
  drill_spawn collector "$DRILL_WORK/collector.log" env PORT="$COLLECTOR_PORT" "$OTLP_SINK_BIN"
  wait_until 15 "the trace collector" bash -c "exec 3<>/dev/tcp/127.0.0.1/$COLLECTOR_PORT" \
    || die "the trace collector stand-in did not start (log: $DRILL_WORK/collector.log)"
}

collector_stop() { drill_end collector TERM; }

farol_pid() { echo "${DRILL_PIDS[farol]:-none}"; }

# A temporary file in the same directory, then rename: the reader never sees half of it.
# (A knob's is hidden: farol reads every other file of CONFIG_DIR as a key.)
replace_file() {
  cat >"$1.tmp"
  mv -f "$1.tmp" "$1"
}
drill_knob() {
  printf '%s\n' "$2" >"$FAROL_CONFIG_DIR/.$1.tmp"
  mv -f "$FAROL_CONFIG_DIR/.$1.tmp" "$FAROL_CONFIG_DIR/$1"
}

# wrk stops at -d by itself (the bound); the drill stops it sooner with SIGINT, on which
# wrk prints its summary (and load.lua its DRILL_SUMMARY line) before exiting.
# load_start SCENARIO [CONNECTIONS DELAY_MS]: LOAD_CONNECTIONS and LOAD_DELAY_MS unless given
load_start() {
  drill_spawn load "$DRILL_WORK/load-$1.log" wrk -t1 -c"${2:-$LOAD_CONNECTIONS}" -d"${LOAD_MAX_SECONDS}s" \
    -s "$DRILL_LIB/load.lua" "http://127.0.0.1:$FAROL_PORT" -- "${3:-$LOAD_DELAY_MS}"
}

load_stop() { drill_end load INT; }
