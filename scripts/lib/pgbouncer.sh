# shellcheck shell=bash
# PgBouncer in transaction pooling mode in front of a throwaway PostgreSQL of postgres.sh,
# for the bench and the pooler drill. Sourced after common.sh and postgres.sh.
#
#   pgbouncer_start DIR PORT UPSTREAM_PORT [SERVER_CONNECTIONS]
#                         PgBouncer on 127.0.0.1:PORT pooling every database of the server
#                         on UPSTREAM_PORT with SERVER_CONNECTIONS (4) server connections
#                         each; sets PGBOUNCER_URL (the database farol, user farol).
#                         PGBOUNCER_IGNORE: start-up parameters to ignore (e.g. options)
#   pgbouncer_check DIR   stops the caller (die) when that PgBouncer has exited, with its
#                         log's last lines (it exits on a fatal fault of its own)
#   pgbouncer_version     prints the binary's version ("PgBouncer 1.18.0")
#   pgbouncer_stop DIR    stops it (SIGTERM: at once, its clients cut)
#
# Like PostgreSQL, PgBouncer refuses to run as root: as root it runs as `postgres`.
# Trust authentication, as the throwaway cluster's.

PGBOUNCER_BIN=${PGBOUNCER_BIN:-/usr/sbin/pgbouncer}

pgbouncer_start() {
  local dir=$1 port=$2 upstream=$3 pool=${4:-4}
  [ -x "$PGBOUNCER_BIN" ] || die "PgBouncer not found at $PGBOUNCER_BIN (scripts/install-deps database)"
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
    chmod a+x "$(dirname "$dir")"
  fi
  printf '"farol" ""\n' >"$dir/userlist.txt"
  cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$upstream
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $pool
max_client_conn = 2000
server_reset_query =
ignore_startup_parameters = ${PGBOUNCER_IGNORE:-}
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
  _pg_run "$PGBOUNCER_BIN" -d "$dir/pgbouncer.ini" >/dev/null 2>&1 \
    || { tail -5 "$dir/pgbouncer.log" >&2 2>/dev/null || true; die "PgBouncer did not start in $dir"; }
  local tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -le 200 ] || { tail -5 "$dir/pgbouncer.log" >&2 2>/dev/null || true; die "PgBouncer did not listen on $port within 10 s"; }
    sleep 0.05
  done
  PGBOUNCER_URL="postgres://farol@127.0.0.1:$port/farol?sslmode=disable"
  export PGBOUNCER_URL
}

# Whether process PID runs. A zombie counts as gone: where nothing reaps the daemon (a
# container's init may not), its exit leaves one, which `kill -0` still finds.
_pid_alive() {
  local state
  state=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

pgbouncer_check() {
  local dir=$1 pid
  pid=$(cat "$dir/pgbouncer.pid" 2>/dev/null) && _pid_alive "$pid" && return 0
  tail -3 "$dir/pgbouncer.log" >&2 2>/dev/null || true
  die "PgBouncer ($dir) has exited"
}

pgbouncer_version() {
  "$PGBOUNCER_BIN" --version | head -1
}

pgbouncer_stop() {
  local dir=$1 pid tries=0
  pid=$(cat "$dir/pgbouncer.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  while _pid_alive "$pid" && [ "$tries" -lt 100 ]; do
    tries=$((tries + 1))
    sleep 0.05
  done
}
