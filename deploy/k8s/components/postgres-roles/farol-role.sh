#!/usr/bin/env bash
# The database's first start only (the postgres image runs /docker-entrypoint-initdb.d
# once, on an empty volume, against a server on its socket alone): farol's own role,
# FAROL_DB_USER, owner of POSTGRES_DB but not a superuser, so that a compromised farol
# cannot run programs in the database's container (COPY ... TO PROGRAM) or read its files.
# It may read the server's statistics (pg_monitor), for the PostgreSQL exporter, which
# logs in as it. The image's superuser (POSTGRES_USER) then loses its password: it
# remains reachable over the container's own socket only (`docker compose exec db psql
# -U postgres`), never over the network.
set -Eeuo pipefail

: "${FAROL_DB_USER:?set FAROL_DB_USER, the role farol logs in as}"
if [ "$FAROL_DB_USER" = "$POSTGRES_USER" ]; then
  # The entrypoint stops here, but the volume is initialised: the next start skips this
  # script and would serve the superuser, with this password, to the network. Without
  # its password it serves no one there, and farol fails to log in, loudly.
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --dbname postgres \
    <<<'ALTER ROLE CURRENT_USER PASSWORD NULL;'
  echo "error: FAROL_DB_USER is the superuser $POSTGRES_USER: farol needs a role of its own." \
    "This volume's superuser has no password now, so it serves no one over the network:" \
    "choose another name and remove the volume (docker compose down --volumes)" >&2
  exit 1
fi
# the password from the environment inside psql, never on a command line (/proc shows those)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --dbname postgres \
  --set app="$FAROL_DB_USER" --set db="$POSTGRES_DB" <<'SQL'
\getenv password POSTGRES_PASSWORD
CREATE ROLE :"app" LOGIN PASSWORD :'password';
ALTER DATABASE :"db" OWNER TO :"app";
GRANT pg_monitor TO :"app";
ALTER ROLE CURRENT_USER PASSWORD NULL;
SQL
echo "farol's role $FAROL_DB_USER made, owner of $POSTGRES_DB, not a superuser"
