#!/bin/sh
# Run by the official postgres image on first start, after 10-pgsieve.sh.
# Creates the `conjur` database with Conjur's schema (the file the tests load,
# mounted at /etc/pgsieve/conjur-schema.sql) and, on the leader, the
# non-superuser replication role pgsieve connects as. In a real deployment
# Conjur creates the schema; only the role and `pgsieve setup` are yours.
set -eu
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE conjur"
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d conjur -f /etc/pgsieve/conjur-schema.sql
if [ "${PGSIEVE_ROLE:-}" = leader ]; then
  pw=$(head -n 1 "${REPLICATOR_PASSWORD_FILE:?set REPLICATOR_PASSWORD_FILE}")
  psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d conjur -v pw="$pw" <<'SQL'
CREATE ROLE replicator LOGIN REPLICATION PASSWORD :'pw';
GRANT USAGE ON SCHEMA public TO replicator;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO replicator;
SQL
fi
