#!/bin/sh
# Run by the official postgres image on first start (/docker-entrypoint-initdb.d).
# Includes the same configuration fragments the test harness, `pgsieve demo`
# and `pgsieve bench` use (docker/postgres/*.conf, mounted at
# /etc/pgsieve/postgres) and lets the replication role in over the network.
# PGSIEVE_ROLE is `leader` or `follower`.
set -eu
conf_dir=/etc/pgsieve/postgres
role=${PGSIEVE_ROLE:?set PGSIEVE_ROLE to leader or follower}
{
  echo "include '$conf_dir/common.conf'"
  echo "include '$conf_dir/$role.conf'"
} >> "$PGDATA/postgresql.conf"
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
