#!/bin/bash
# example/postgres entrypoint: initialise the cluster on first start, then run PostgreSQL
# in the foreground as the postgres user.
#
# First start (no $PGDATA/PG_VERSION): initdb, then create the role $POSTGRES_USER (default
# blog) with the password $POSTGRES_PASSWORD (required; from the app's env file) and the
# database $POSTGRES_DB (default blog) owned by it. The password reaches psql through
# its environment (\getenv), never a command line.
#
# Authentication: TCP (the Compose network) needs the password (scram-sha-256); the
# local socket inside the container trusts, as the official postgres image does, so
# `docker compose exec db pg_dump -U blog blog` works for backups (reaching that socket
# takes root on the host already).
set -euo pipefail

PGDATA=${PGDATA:-/var/lib/postgresql/data}
POSTGRES_USER=${POSTGRES_USER:-blog}
POSTGRES_DB=${POSTGRES_DB:-blog}
export PGDATA POSTGRES_USER POSTGRES_DB

as_postgres() {
  setpriv --reuid=postgres --regid=postgres --init-groups -- env HOME=/var/lib/postgresql "$@"
}

if [ "${1:-}" != postgres ]; then
  exec "$@"
fi

cd /var/lib/postgresql
install -d -o postgres -g postgres -m 0700 "$PGDATA"
install -d -o postgres -g postgres -m 2775 /run/postgresql

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "entrypoint: POSTGRES_PASSWORD is not set (it comes from the app's env file)" >&2
    exit 1
  fi
  echo "entrypoint: initialising a new cluster in $PGDATA" >&2
  as_postgres initdb -D "$PGDATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  printf "\n# relaunch example/postgres\nlisten_addresses = '*'\npassword_encryption = scram-sha-256\n" >> "$PGDATA/postgresql.conf"
  printf "host all all all scram-sha-256\n" >> "$PGDATA/pg_hba.conf"
  as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  as_postgres psql -v ON_ERROR_STOP=1 -q -U postgres -d postgres <<'SQL'
\getenv pw POSTGRES_PASSWORD
\getenv role POSTGRES_USER
\getenv db POSTGRES_DB
CREATE ROLE :"role" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"role";
SQL
  as_postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "entrypoint: cluster ready (database $POSTGRES_DB, role $POSTGRES_USER)" >&2
fi

shift
exec setpriv --reuid=postgres --regid=postgres --init-groups -- env HOME=/var/lib/postgresql postgres -D "$PGDATA" "$@"
