#!/usr/bin/env bash
# Runs a command with STEWARD_TEST_DATABASE_URL set to a local PostgreSQL database
# `steward_test`, owned by role `steward` (which may create the per-test databases).
#
# Installs PostgreSQL (apt) and creates/starts a cluster if needed. Idempotent. Works as root
# (CI containers, no sudo needed) or as a user with sudo. If STEWARD_TEST_DATABASE_URL is
# already set, it just runs the command.
#
#   scripts/with-postgres.sh cargo test -p steward-store
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
if [ -n "${STEWARD_TEST_DATABASE_URL:-}" ]; then
    exec "$@"
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
    as_postgres() { runuser -u postgres -- "$@"; }
else
    as_root() { sudo "$@"; }
    as_postgres() { sudo -u postgres "$@"; }
fi

if ! command -v pg_lsclusters >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

if [ -z "$(pg_lsclusters --no-header)" ]; then
    as_root pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -n 1)" main >/dev/null
fi
read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n 1)
if [[ "$status" != online* ]]; then
    as_root pg_ctlcluster "$version" "$cluster" start
fi

psql_admin() {
    as_postgres psql --port "$port" --no-psqlrc --quiet --tuples-only --no-align \
        --set ON_ERROR_STOP=1 --command "$1"
}
if [ -z "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = 'steward'")" ]; then
    psql_admin "CREATE ROLE steward LOGIN CREATEDB PASSWORD 'steward'"
fi
if [ -z "$(psql_admin "SELECT 1 FROM pg_database WHERE datname = 'steward_test'")" ]; then
    psql_admin "CREATE DATABASE steward_test OWNER steward"
fi

export STEWARD_TEST_DATABASE_URL="postgres://steward:steward@127.0.0.1:${port}/steward_test"
exec "$@"
