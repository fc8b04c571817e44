#!/usr/bin/env bash
# Entrypoint of the postgres stand-in (README.md): the official entrypoint's first start
# for the variables this project uses. As root it prepares the directories and drops to
# postgres. Socket connections are trusted, network ones need the password, as upstream.
set -Eeuo pipefail

# file_env VAR [DEFAULT]: VAR from the environment, or read from the file named by VAR_FILE
file_env() {
  local var=$1 file_var="${1}_FILE" default=${2:-} value
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    echo "error: both $var and $file_var are set (but are exclusive)" >&2
    exit 1
  fi
  value=${!var:-$default}
  [ -z "${!file_var:-}" ] || value=$(<"${!file_var}")
  export "$var=$value"
  unset "$file_var"
}

if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi

if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 0700 "$PGDATA"
  exec gosu postgres "${BASH_SOURCE[0]}" "$@"
fi

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  if [ -z "$POSTGRES_PASSWORD" ]; then
    echo 'error: the database is uninitialized and no superuser password is given:' \
      'set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE' >&2
    exit 1
  fi
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as upstream
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
  printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"

  # a server on the socket only, so that nothing connects before the setup is done
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
  if [ "$POSTGRES_DB" != postgres ]; then
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --dbname postgres \
      --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
  fi
  # the scripts of /docker-entrypoint-initdb.d, in order, as upstream: an executable one
  # run, any other sourced
  export POSTGRES_USER POSTGRES_DB POSTGRES_PASSWORD
  for script in /docker-entrypoint-initdb.d/*.sh; do
    [ -e "$script" ] || continue
    echo "running $script"
    if [ -x "$script" ]; then
      "$script"
    else
      # shellcheck disable=SC1090 # the image's user's scripts
      . "$script"
    fi
  done
  pg_ctl -D "$PGDATA" -m fast -w stop
  unset POSTGRES_PASSWORD
  echo 'PostgreSQL init process complete; ready for start up.'
fi

exec "$@"
