#!/usr/bin/env bash
# A throwaway PostgreSQL cluster from the server binaries on the machine, for scripts
# (bench, fire drill, fuzzing, query checks, the reliability drills). Sourced after
# common.sh (the Python drills call its functions through bash: reliability/httpload.py's
# shell()).
#
#   pg_start DIR PORT     initdb (once) and start a cluster in DIR on 127.0.0.1:PORT;
#                         prints nothing, sets PG_URL (postgres://farol@127.0.0.1:PORT/farol);
#                         PG_MAX_CONNECTIONS (200) sets its max_connections;
#                         PG_EXTRA_CONF, lines of postgresql.conf, is added to its settings
#   pg_standby_start PRIMARY_DIR DIR PORT NAME
#                         a streaming standby of the cluster in PRIMARY_DIR (pg_basebackup
#                         -R), started in DIR on 127.0.0.1:PORT, streaming as NAME (its
#                         application_name); returns once the primary reports it
#                         streaming; sets STANDBY_URL
#   pg_stop DIR           fast shutdown (keeps the data)
#   pg_resume DIR         start it again after pg_stop
#
# initdb and postgres refuse to run as root, so as root they run as the `postgres`
# system user and DIR is handed to it. Trust authentication on loopback only.

PG_BIN=${PG_BIN:-$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}

_pg_run() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  local dir=$1 port=$2
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin)"
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
    # the postgres user must be able to reach DIR (mktemp -d parents are 0700)
    chmod a+x "$(dirname "$dir")"
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    _pg_run "$PG_BIN/initdb" -D "$dir/data" -U farol --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; die "initdb failed in $dir"; }
  fi
  printf '%s\n' "port = $port" "listen_addresses = '127.0.0.1'" "unix_socket_directories = '$dir'" \
    "max_connections = ${PG_MAX_CONNECTIONS:-200}" "fsync = off" "synchronous_commit = off" "full_page_writes = off" \
    > "$dir/data/postgresql.auto.conf"
  [ -z "${PG_EXTRA_CONF:-}" ] || printf '%s\n' "$PG_EXTRA_CONF" >>"$dir/data/postgresql.auto.conf"
  PG_PORT=$port PG_DIR=$dir
  pg_resume "$dir"
  _pg_run "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U farol -d postgres -qtAc \
    "SELECT 1 FROM pg_database WHERE datname='farol'" | grep -q 1 \
    || _pg_run "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U farol -d postgres -qc "CREATE DATABASE farol" >/dev/null
  PG_URL="postgres://farol@127.0.0.1:$port/farol?sslmode=disable"
  export PG_URL PG_PORT PG_DIR
}

pg_standby_start() {
  local primary=$1 dir=$2 port=$3 name=$4 primary_port
  primary_port=$(awk -F' = ' '$1 == "port" {p = $2} END {print p}' "$primary/data/postgresql.auto.conf")
  mkdir -p "$dir"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
  # --checkpoint=fast: a spread checkpoint could hold the copy for minutes
  _pg_run timeout 120 "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U farol -D "$dir/data" -R -X stream --checkpoint=fast \
    >"$dir/basebackup.log" 2>&1 || { cat "$dir/basebackup.log" >&2; die "pg_basebackup of $primary failed"; }
  # The copy brings the primary's settings: the last line of each wins. Reconnect to a
  # primary that comes back within half a second (the default waits 5 s).
  printf '%s\n' "port = $port" "unix_socket_directories = '$dir'" "archive_mode = off" \
    "wal_retrieve_retry_interval = '500ms'" "cluster_name = '$name'" >>"$dir/data/postgresql.auto.conf"
  pg_resume "$dir"
  wait_until 30 "$name to stream" _pg_streaming "$primary_port" "$name" \
    || die "the standby in $dir does not stream from the primary (log: $dir/postgres.log)"
  STANDBY_URL="postgres://farol@127.0.0.1:$port/farol?sslmode=disable"
  export STANDBY_URL
}
_pg_streaming() {
  [ "$(_pg_run "$PG_BIN/psql" -h 127.0.0.1 -p "$1" -U farol -d postgres -qtAc \
    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = '$2'")" -ge 1 ]
}

pg_resume() {
  local dir=$1
  _pg_run "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 start >/dev/null \
    || { tail -20 "$dir/postgres.log" >&2; die "PostgreSQL did not start in $dir"; }
}

pg_stop() {
  local dir=$1
  [ -f "$dir/data/postmaster.pid" ] || return 0
  _pg_run "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
}
