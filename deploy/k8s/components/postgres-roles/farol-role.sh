#!/usr/bin/env bash
# The database's first start only (the postgres image runs /docker-entrypoint-initdb.d
# once, on an empty volume, against a server on its socket alone): farol's own role,
# FAROL_DB_USER, owner of POSTGRES_DB but not a superuser, so that a compromised farol
# cannot run programs in the database's container (COPY ... TO PROGRAM) or read its files.
# Where the PostgreSQL exporter watches the server (compose's monitoring stack), a role of
# its own, FAROL_MONITOR_USER, with the password in FAROL_MONITOR_PASSWORD_FILE, may read
# the server's statistics (pg_monitor) and nothing else; farol's role may not, so that a
# compromised farol reads no other session's queries or the server's settings. The
# image's superuser (POSTGRES_USER) then loses its password: it
# remains reachable over the container's own socket only (`docker compose exec db psql
# -U postgres`), never over the network.
set -Eeuo pipefail
# no statement of these sessions is written to the server's log, failed or not, whatever
# its settings: some carry a password
export PGOPTIONS="-c log_min_error_statement=panic -c log_statement=none -c log_min_duration_statement=-1 \
-c log_min_duration_sample=-1 -c log_transaction_sample_rate=0"

: "${FAROL_DB_USER:?set FAROL_DB_USER, the role farol logs in as}"
# The superuser loses its password first: if anything below fails, the entrypoint stops
# but the volume is initialised, and the next start (which skips this script) must not
# serve the superuser, with this password, to the network. This server listens on its
# socket only, where it trusts its own user, so nothing below needs the password.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --dbname postgres \
  <<<'ALTER ROLE CURRENT_USER PASSWORD NULL;'
refuse() {
  echo "error: $1. This volume's superuser has no password, so it serves no one over the" \
    "network: fix it and remove the volume (docker compose down --volumes)" >&2
  exit 1
}
if [ "$FAROL_DB_USER" = "$POSTGRES_USER" ]; then
  # farol then fails to log in, loudly
  refuse "FAROL_DB_USER is the superuser $POSTGRES_USER: farol needs a role of its own"
fi
if [ -n "${FAROL_MONITOR_USER:-}" ]; then
  case $FAROL_MONITOR_USER in
    "$POSTGRES_USER" | "$FAROL_DB_USER" | pg_*)
      refuse "FAROL_MONITOR_USER is $FAROL_MONITOR_USER: the monitoring role must be one of its own, not a built-in one" ;;
  esac
  [ -r "${FAROL_MONITOR_PASSWORD_FILE:-}" ] && [ -s "$FAROL_MONITOR_PASSWORD_FILE" ] ||
    refuse "FAROL_MONITOR_PASSWORD_FILE (${FAROL_MONITOR_PASSWORD_FILE:-unset}) is no file this user (uid $(id -u)) can read a password from"
  FAROL_MONITOR_PASSWORD=$(<"$FAROL_MONITOR_PASSWORD_FILE")
  # deploy/compose/dev-db-monitor-password: public, as farol's development one, which farol
  # itself refuses in production
  if [ "${APP_MODE:-development}" = production ] && [ "$FAROL_MONITOR_PASSWORD" = farol-monitor-dev-only ]; then
    refuse "APP_MODE is production and the monitoring role's password is the public development one: set FAROL_DB_MONITOR_PASSWORD_FILE"
  fi
  export FAROL_MONITOR_PASSWORD
fi
# the passwords from the environment inside psql, never on a command line (/proc shows those)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --dbname postgres \
  --set app="$FAROL_DB_USER" --set db="$POSTGRES_DB" <<'SQL'
\getenv password POSTGRES_PASSWORD
CREATE ROLE :"app" LOGIN PASSWORD :'password';
ALTER DATABASE :"db" OWNER TO :"app";
SQL
echo "farol's role $FAROL_DB_USER made, owner of $POSTGRES_DB, not a superuser"
if [ -n "${FAROL_MONITOR_USER:-}" ]; then
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --dbname postgres \
    --set monitor="$FAROL_MONITOR_USER" <<'SQL'
\getenv password FAROL_MONITOR_PASSWORD
CREATE ROLE :"monitor" LOGIN PASSWORD :'password';
GRANT pg_monitor TO :"monitor";
SQL
  echo "the monitoring role $FAROL_MONITOR_USER made, with pg_monitor and nothing more"
fi
