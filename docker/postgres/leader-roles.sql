-- The role pgsieve reads the leader as: not a superuser. REPLICATION for the
-- slot and the stream, SELECT for the initial copy and backfills; heartbeats
-- (pg_logical_emit_message) need nothing more. Run once on the leader's
-- `conjur` database as the tables' owner, with
-- `psql -v pw="$password" -f leader-roles.sql`; then `pgsieve setup`
-- (publication, policy_log's replica identity) as the tables' owner.
CREATE ROLE replicator LOGIN REPLICATION PASSWORD :'pw';
GRANT USAGE ON SCHEMA public TO replicator;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO replicator;
