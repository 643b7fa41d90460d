-- The role pgsieve applies changes as on a Conjur follower: not a superuser.
-- Run once on the follower's `conjur` database after Conjur's schema exists
-- (the docker kit's 20-conjur.sh does), as the database owner, with
-- `psql -v pw="$password" -f follower-roles.sql`. PostgreSQL 15 or later
-- (GRANT SET ON PARAMETER). tests/docker_kit.rs runs a sidecar as this role.
CREATE ROLE pgsieve LOGIN PASSWORD :'pw';
-- Conjur's triggers must not fire for replicated rows (the leader's WAL
-- already carries the rows they made).
GRANT SET ON PARAMETER session_replication_role TO pgsieve;
-- Progress is stored in a replication origin, in the same transaction as
-- the data (exactly once).
GRANT EXECUTE ON FUNCTION
  pg_catalog.pg_replication_origin_create(text),
  pg_catalog.pg_replication_origin_drop(text),
  pg_catalog.pg_replication_origin_oid(text),
  pg_catalog.pg_replication_origin_session_setup(text),
  pg_catalog.pg_replication_origin_session_reset(),
  pg_catalog.pg_replication_origin_session_is_setup(),
  pg_catalog.pg_replication_origin_session_progress(boolean),
  pg_catalog.pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone),
  pg_catalog.pg_replication_origin_xact_reset(),
  pg_catalog.pg_replication_origin_advance(text, pg_lsn),
  pg_catalog.pg_replication_origin_progress(text, boolean)
  TO pgsieve;
-- Conjur's tables: written only by pgsieve.
GRANT USAGE ON SCHEMA public TO pgsieve;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO pgsieve;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO pgsieve;
