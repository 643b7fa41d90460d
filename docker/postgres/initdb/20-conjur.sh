#!/bin/sh
# Run by the official postgres image on first start, after 10-pgsieve.sh.
# Creates the `conjur` database with Conjur's schema (the file the tests load,
# mounted at /etc/pgsieve/conjur-schema.sql) and pgsieve's non-superuser
# role: `replicator` on the leader, `pgsieve` on a follower
# (docker/postgres/*-roles.sql). In a real deployment Conjur creates the
# schema; only the roles and `pgsieve setup` are yours.
set -eu
conf_dir=/etc/pgsieve/postgres
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE conjur"
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d conjur -f /etc/pgsieve/conjur-schema.sql
case "${PGSIEVE_ROLE:?set PGSIEVE_ROLE to leader or follower}" in
  leader) pw_file=${REPLICATOR_PASSWORD_FILE:?set REPLICATOR_PASSWORD_FILE} ;;
  *) pw_file=${PGSIEVE_PASSWORD_FILE:?set PGSIEVE_PASSWORD_FILE} ;;
esac
pw=$(head -n 1 "$pw_file")
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d conjur -v pw="$pw" \
  -f "$conf_dir/$PGSIEVE_ROLE-roles.sql"
