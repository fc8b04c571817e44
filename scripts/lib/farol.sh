# shellcheck shell=bash
# farol for a harness, started one way by every script: the same binary, the same
# defaults, the same wait. Sourced after common.sh. The caller runs the command in the
# background with its own process bookkeeping (a trap, stack_on_exit or drill_spawn).
#
#   farol_binary [debug]
#       FAROL_BIN as given, else target/release/farol (or target/debug/farol) built now.
#   farol_command PORT DATABASE_URL [VAR=VALUE...]
#       FAROL_CMD, an array: `farol serve` on 127.0.0.1:PORT against DATABASE_URL, with
#       JSON logs at info and migrations at start, the caller's own settings on top, and
#       nothing else: not the caller's environment (a stray METRICS_PORT or
#       DATABASE_URL_FILE would change what the harness measures), not a .env.
#   farol_wait_ready PORT LOG [SECONDS] [PID]
#       Until /readyz answers 200 (within SECONDS, 30 by default), checked every 10 ms;
#       else, or as soon as PID has exited, the log's last lines and exit. FAROL_READY_MS:
#       how long the wait took.

farol_binary() {
  local profile=${1:-release}
  if [ -n "${FAROL_BIN:-}" ]; then
    [ -x "$FAROL_BIN" ] || die "no farol binary at FAROL_BIN=$FAROL_BIN"
    # absolute: farol_command runs it from /
    FAROL_BIN=$(realpath -- "$FAROL_BIN")
    return 0
  fi
  need cargo
  step "building farol ($profile)"
  local flags=(--quiet --locked --manifest-path "$REPO_ROOT/Cargo.toml" --bin farol)
  [ "$profile" = debug ] || flags+=(--release)
  timeout 1200 cargo build "${flags[@]}"
  FAROL_BIN=$REPO_ROOT/target/$profile/farol
}

farol_command() {
  local port=$1 database_url=$2
  shift 2
  [ -n "${FAROL_BIN:-}" ] || die "farol_command: call farol_binary first"
  # shellcheck disable=SC2034 # for the caller, which sources this file
  # from /: `farol serve` reads ./.env when there is one, and the caller's working
  # directory may be the repository, with a developer's .env in it
  # MIMALLOC_ALLOW_THP=0 as the image sets it (src/allocator.rs)
  FAROL_CMD=(env -i -C / PATH="$PATH"
    DATABASE_URL="$database_url" HOST=127.0.0.1 PORT="$port" LOG_FORMAT=json LOG_LEVEL=info
    MIGRATE_ON_START=true MIMALLOC_ALLOW_THP=0 "$@" "$FAROL_BIN" serve)
}

farol_wait_ready() {
  local port=$1 log=$2 limit_ms=$((${3:-30} * 1000)) pid=${4:-} started
  started=$(date +%s%N)
  FAROL_READY_MS=0
  until curl -fs --max-time 1 -o /dev/null "http://127.0.0.1:$port/readyz"; do
    FAROL_READY_MS=$((($(date +%s%N) - started) / 1000000))
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2 2>/dev/null || true
      die "farol exited before it became ready (log: $log)"
    fi
    if [ "$FAROL_READY_MS" -ge "$limit_ms" ]; then
      tail -n 20 "$log" >&2 2>/dev/null || true
      die "farol did not become ready on port $port within $((limit_ms / 1000)) s (log: $log)"
    fi
    sleep 0.01
  done
  FAROL_READY_MS=$((($(date +%s%N) - started) / 1000000))
}
