#!/usr/bin/env bash
# The compose database's entrypoint, and the one owner of its monitoring role: the image's
# own entrypoint (docker-entrypoint.sh, which sets up an empty volume with farol-role.sh,
# farol's role, and then runs the server), and, on every start, once the server listens on
# the network, the monitoring role FAROL_MONITOR_USER: it logs in with the password in
# FAROL_MONITOR_PASSWORD_FILE and holds pg_monitor, and farol's role holds no pg_monitor.
# A volume made before that role existed (farol's role with pg_monitor, no monitoring
# role) then needs no hand-run upgrade: without it the exporter cannot log in, and
# PostgresDown pages while the database is up and holds back farol's own pages. A changed
# password file takes effect at the next start. On an empty volume a wrong setting of that
# role stops the start before anything is made; on a set-up one it is logged and the
# database keeps serving farol: a monitoring role is not worth an outage. In production the
# public development password takes the role's login away instead.
#
#   db-start.sh postgres [ARGS...]   the container's command: the server, then the roles
#   db-start.sh --roles              the roles alone, against the running server
#                                    (docker compose exec db bash /usr/local/lib/farol/db-start.sh --roles)
set -Euo pipefail

log() { echo "db-start: $*" >&2; }

# psql as the image's superuser over the socket, where the server trusts its own user.
# No statement of this session is written to the server's log, failed (log_min_error_statement)
# or not (log_statement, and the logging of slow or sampled statements), whatever the
# server's settings: one carries the password. No statement waits long on a lock, so a stop
# of the server is not held up by this.
superuser_psql() {
  PGOPTIONS="-c log_min_error_statement=panic -c log_statement=none -c log_min_duration_statement=-1 \
-c log_min_duration_sample=-1 -c log_transaction_sample_rate=0 -c lock_timeout=5s -c statement_timeout=30s" \
    psql -v ON_ERROR_STOP=1 --quiet --no-psqlrc --no-password --username "${POSTGRES_USER:-postgres}" \
    --dbname postgres "$@"
}

# The monitoring role's settings, checked before any is used: prints its password, or says
# what is wrong and fails: 3 for the public development password in production, else 2.
monitor_password() {   # monitor_password MONITOR APP
  local password
  case $1 in
    "${POSTGRES_USER:-postgres}" | "$2" | pg_*)
      log "error: FAROL_MONITOR_USER is $1: the monitoring role must be one of its own, not the superuser, farol's or a built-in one"
      return 2 ;;
  esac
  if ! password=$(<"${FAROL_MONITOR_PASSWORD_FILE:-/nonexistent}") || [ -z "$password" ]; then
    log "error: FAROL_MONITOR_PASSWORD_FILE (${FAROL_MONITOR_PASSWORD_FILE:-unset}) is no file this user (uid $(id -u)) can read a password from"
    return 2
  fi
  # deploy/compose/dev-db-monitor-password is public, as farol's development one, which
  # farol itself refuses in production
  if [ "${APP_MODE:-development}" = production ] && [ "$password" = farol-monitor-dev-only ]; then
    log "error: APP_MODE is production and the monitoring role's password is the public development one: set FAROL_DB_MONITOR_PASSWORD_FILE"
    return 3
  fi
  printf '%s' "$password"
}

# Takes pg_monitor from farol's role, makes the monitoring role or puts it right, and checks
# both: 0 when they are in place, 1 when a statement failed (worth another try), 2 when the
# settings or what the roles hold are refused (not).
monitor_role() {
  local monitor=${FAROL_MONITOR_USER:-} app=${FAROL_DB_USER:-} password memberships refused=0
  if [ -z "$monitor" ]; then
    log "no FAROL_MONITOR_USER: no monitoring role to keep"
    return 0
  fi
  # a volume whose first start farol-role.sh refused is left as that left it
  if [ -z "$app" ] || [ "$app" = "${POSTGRES_USER:-postgres}" ]; then
    log "error: FAROL_DB_USER (${app:-unset}) is no role of farol's own; the roles left as they are"
    return 2
  fi
  # farol's role reads no statistics, whatever becomes of the monitoring role's settings
  superuser_psql --set app="$app" <<'SQL' || { log "error: pg_monitor could not be taken from farol's role $app"; return 1; }
SET client_min_messages = warning;
SELECT format('REVOKE pg_monitor FROM %I', :'app')
  WHERE EXISTS (SELECT FROM pg_auth_members WHERE roleid = 'pg_monitor'::regrole
                  AND member = (SELECT oid FROM pg_roles WHERE rolname = :'app')) \gexec
SQL
  password=$(monitor_password "$monitor" "$app") || refused=$?
  if [ "$refused" = 3 ]; then
    # in production a role that logs in with a public password is open to whoever reaches
    # the database, farol included: it logs in no more, and its sessions end, until its
    # password is set
    superuser_psql --set monitor="$monitor" <<'SQL' || { log "error: the monitoring role $monitor could not be locked: it may still log in with the public password"; return 1; }
SELECT format('ALTER ROLE %I NOLOGIN PASSWORD NULL', :'monitor') WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = :'monitor') \gexec
SELECT count(pg_terminate_backend(pid)) AS ended FROM pg_stat_activity WHERE usename = :'monitor' \gset
SQL
    log "error: the monitoring role $monitor may not log in, and its sessions have ended, until its password is set: the PostgreSQL exporter is refused"
    return 2
  fi
  [ "$refused" = 0 ] || return 2
  # the password from the environment inside psql, never on a command line (/proc shows those)
  FAROL_MONITOR_PASSWORD=$password superuser_psql --set monitor="$monitor" --set app="$app" <<'SQL' || return 1
SET client_min_messages = warning;
\getenv password FAROL_MONITOR_PASSWORD
SELECT format('CREATE ROLE %I', :'monitor') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'monitor') \gexec
ALTER ROLE :"monitor" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'password';
GRANT pg_monitor TO :"monitor";
SQL
  # what the roles hold now, granted directly or through another role
  memberships=$(superuser_psql -tA --set monitor="$monitor" --set app="$app" <<'SQL'
SELECT coalesce((SELECT pg_has_role(oid, 'pg_monitor', 'member') FROM pg_roles WHERE rolname = :'app'), false),
       (SELECT coalesce(string_agg(DISTINCT g.rolname, ',' ORDER BY g.rolname), '') FROM pg_auth_members m
          JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = :'monitor'));
SQL
  ) || return 1
  case $memberships in
    "f|pg_monitor") ;;
    "t|"*) log "error: farol's role $app still reads the server's statistics (pg_monitor through another role)"; return 2 ;;
    *) log "error: the monitoring role $monitor is a member of ${memberships#*|}, not of pg_monitor alone"; return 2 ;;
  esac
  log "the monitoring role $monitor is in place, with pg_monitor and nothing more"
}

if [ "${1:-}" = --roles ]; then
  monitor_role || { log "error: the monitoring role is not in place (what failed is above)"; exit 1; }
  exit 0
fi

# An empty volume is set up (by the image's entrypoint, when it starts the server) only with
# settings the monitoring role can be made from: a refusal leaves nothing to undo, and a start
# with them put right sets it up. Until then each start (the restart policy's) says so again.
data=${PGDATA:-/var/lib/postgresql/data}
# (the image's entrypoint runs the server, and sets a volume up, for `postgres` or options)
if [[ ${1:-} == postgres || ${1:-} == -* ]] && [ ! -s "$data/PG_VERSION" ] && [ -n "${FAROL_MONITOR_USER:-}" ] &&
  ! monitor_password "$FAROL_MONITOR_USER" "${FAROL_DB_USER:-}" >/dev/null; then
  log "error: no $data/PG_VERSION, and the volume is not set up until the monitoring role's settings are put right"
  exit 1
fi

# The signals the server acts on, passed on to it (HUP: reload its configuration); set
# before it starts, so that none arriving meanwhile is dropped.
server='' pending='' signalled=0
forward() {
  signalled=1
  if [ -n "$server" ]; then kill -"$1" "$server" 2>/dev/null; else pending=$1; fi
}
for signal in INT TERM QUIT HUP; do
  # shellcheck disable=SC2064 # the signal's name, now
  trap "forward $signal" "$signal"
done
# A background command of a script starts with SIGINT and SIGQUIT ignored: their defaults
# back, as the server had them as process 1.
env --default-signal=INT,QUIT docker-entrypoint.sh "$@" &
server=$!
[ -z "$pending" ] || kill -"$pending" "$server" 2>/dev/null

# In the background, so that this shell is always in `wait` below, where a stop signal is
# passed on at once. The network listener is the server for good: on a first start the
# image's set-up runs a server on the socket alone, then stops it.
(
  until pg_isready --quiet --host=127.0.0.1 --port=5432; do
    kill -0 "$server" 2>/dev/null || exit 0
    sleep 1
  done
  # a failed statement (a lock held, a server still busy) is tried again, six times over a
  # minute or more; what is refused is not
  for delay in 2 4 8 16 30 -; do
    monitor_role
    status=$?
    [ "$status" = 1 ] && [ "$delay" != - ] || break
    log "trying again in $delay s"
    sleep "$delay"
    kill -0 "$server" 2>/dev/null || exit 0
  done
  [ "$status" = 0 ] || log "error: the monitoring role is not in place: the PostgreSQL exporter may not log in"
) &

# A trapped signal ends `wait` early: wait again, for the server's own exit and status
# (bash keeps the status of a child it has reaped for the next `wait` on it).
while :; do
  signalled=0
  wait "$server"
  status=$?
  [ "$signalled" = 1 ] || break
done
exit "$status"
