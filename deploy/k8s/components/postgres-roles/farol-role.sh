#!/usr/bin/env bash
# The database's first start only (the postgres image runs /docker-entrypoint-initdb.d
# once, on an empty volume, against a server on its socket alone): farol's own role,
# FAROL_DB_USER, owner of POSTGRES_DB but not a superuser, so that a compromised farol
# cannot run programs in the database's container (COPY ... TO PROGRAM) or read its files,
# nor read the server's statistics (no pg_monitor: other sessions' queries, the server's
# settings). The image's superuser (POSTGRES_USER) then loses its password: it remains
# reachable over the container's own socket only (`docker compose exec db psql -U
# postgres`), never over the network. (Compose's monitoring role, which may read those
# statistics, is deploy/compose/db-start.sh's, made once the server listens.)
set -Eeuo pipefail
# no statement of these sessions is written to the server's log, failed or not, whatever
# its settings: one carries a password
export PGOPTIONS="-c log_min_error_statement=panic -c log_statement=none -c log_min_duration_statement=-1 \
-c log_min_duration_sample=-1 -c log_transaction_sample_rate=0"

# The superuser loses its password first: if anything below fails, the entrypoint stops
# but the volume is initialised, and the next start (which skips this script) must not
# serve the superuser, with this password, to the network. This server listens on its
# socket only, where it trusts its own user, so nothing below needs the password.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --dbname postgres \
  <<<'ALTER ROLE CURRENT_USER PASSWORD NULL;'
: "${FAROL_DB_USER:?set FAROL_DB_USER, the role farol logs in as, and remove this volume (its superuser has no password now)}"
if [ "$FAROL_DB_USER" = "$POSTGRES_USER" ]; then
  # farol then fails to log in, loudly
  echo "error: FAROL_DB_USER is the superuser $POSTGRES_USER: farol needs a role of its own." \
    "This volume's superuser has no password, so it serves no one over the network: fix it" \
    "and remove the volume (docker compose down --volumes)" >&2
  exit 1
fi
# the password from the environment inside psql, never on a command line (/proc shows those)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --dbname postgres \
  --set app="$FAROL_DB_USER" --set db="$POSTGRES_DB" <<'SQL'
\getenv password POSTGRES_PASSWORD
CREATE ROLE :"app" LOGIN PASSWORD :'password';
ALTER DATABASE :"db" OWNER TO :"app";
SQL
echo "farol's role $FAROL_DB_USER made, owner of $POSTGRES_DB, not a superuser"
