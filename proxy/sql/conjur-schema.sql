-- Conjur's PostgreSQL schema (final state of its migrations, v1.24 line), written for
-- pgsieve's tests, demo and benches from /work/shared/conjur-schema.md (a fact sheet of
-- Conjur's migrations; no Conjur code was copied). It recreates what shapes the leader's
-- WAL: the 14 tables plus schema_migrations, their keys, CASCADE foreign keys and CHECKs,
-- hstore and the two enums, the id functions, and the triggers (version numbering,
-- owner <-> membership sync, textsearch upkeep, policy_log capture, finished_at stamping).
-- The same file loads on followers: the triggers stay defined there, and pgsieve applies
-- with session_replication_role = replica so they do not fire.
-- Load into an empty database, in one transaction (load_schema does).

CREATE EXTENSION IF NOT EXISTS hstore;

CREATE TYPE policy_log_op AS ENUM ('INSERT', 'DELETE', 'UPDATE');
CREATE TYPE policy_log_kind AS ENUM ('roles', 'role_memberships', 'resources', 'permissions', 'annotations');

-- ---------------------------------------------------------------------------------------
-- Ids: account:kind:identifier. account and kind are NULL when empty; the identifier is
-- everything after the second ':' (it may contain ':').

CREATE FUNCTION account(id text) RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT NULLIF(split_part(id, ':', 1), '')
$$;

CREATE FUNCTION kind(id text) RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT NULLIF(split_part(id, ':', 2), '')
$$;

CREATE FUNCTION identifier(id text) RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT substring(id FROM '^[^:]*:[^:]*:(.*)$')
$$;

-- ---------------------------------------------------------------------------------------
-- Tables

CREATE TABLE schema_migrations (
  filename text PRIMARY KEY
);

CREATE TABLE roles (
  role_id text PRIMARY KEY,
  created_at timestamp NOT NULL DEFAULT transaction_timestamp(),
  policy_id text,
  CONSTRAINT has_account CHECK (account(role_id) IS NOT NULL),
  CONSTRAINT has_kind CHECK (kind(role_id) IS NOT NULL),
  CONSTRAINT verify_policy_kind CHECK (kind(policy_id) = 'policy')
);
CREATE INDEX roles_account_idx ON roles (account(role_id));
CREATE INDEX roles_kind_idx ON roles (kind(role_id));
CREATE INDEX roles_account_kind_idx ON roles (account(role_id), kind(role_id));

CREATE TABLE resources (
  resource_id text PRIMARY KEY,
  owner_id text NOT NULL REFERENCES roles (role_id) ON DELETE CASCADE,
  created_at timestamp NOT NULL DEFAULT transaction_timestamp(),
  policy_id text REFERENCES resources (resource_id) ON DELETE CASCADE,
  CONSTRAINT has_account CHECK (account(resource_id) IS NOT NULL),
  CONSTRAINT has_kind CHECK (kind(resource_id) IS NOT NULL),
  CONSTRAINT verify_policy_kind CHECK (kind(policy_id) = 'policy')
);
CREATE INDEX resources_account_idx ON resources (account(resource_id));
CREATE INDEX resources_kind_idx ON resources (kind(resource_id));
CREATE INDEX resources_account_kind_idx ON resources (account(resource_id), kind(resource_id));

ALTER TABLE roles ADD CONSTRAINT roles_policy_id_fkey
  FOREIGN KEY (policy_id) REFERENCES resources (resource_id) ON DELETE CASCADE;

CREATE TABLE role_memberships (
  role_id text NOT NULL REFERENCES roles (role_id) ON DELETE CASCADE,
  member_id text NOT NULL REFERENCES roles (role_id) ON DELETE CASCADE,
  admin_option boolean NOT NULL DEFAULT false,
  ownership boolean NOT NULL DEFAULT false,
  policy_id text REFERENCES resources (resource_id) ON DELETE CASCADE,
  PRIMARY KEY (role_id, member_id, ownership),
  CONSTRAINT verify_policy_kind CHECK (kind(policy_id) = 'policy')
);
CREATE INDEX role_memberships_member ON role_memberships (member_id);

CREATE TABLE permissions (
  privilege text NOT NULL,
  resource_id text NOT NULL REFERENCES resources (resource_id) ON DELETE CASCADE,
  role_id text NOT NULL REFERENCES roles (role_id) ON DELETE CASCADE,
  policy_id text REFERENCES resources (resource_id) ON DELETE CASCADE,
  CONSTRAINT permissions_pkey PRIMARY KEY (resource_id, role_id, privilege),
  CONSTRAINT verify_policy_kind CHECK (kind(policy_id) = 'policy')
);

CREATE TABLE annotations (
  resource_id text NOT NULL REFERENCES resources (resource_id) ON DELETE CASCADE,
  name text NOT NULL,
  value text NOT NULL,
  policy_id text REFERENCES resources (resource_id) ON DELETE CASCADE,
  PRIMARY KEY (resource_id, name),
  CONSTRAINT verify_policy_kind CHECK (kind(policy_id) = 'policy')
);
CREATE INDEX annotations_name_index ON annotations (name);

CREATE TABLE secrets (
  resource_id text NOT NULL REFERENCES resources (resource_id) ON DELETE CASCADE,
  version integer NOT NULL,
  value bytea NOT NULL,
  expires_at timestamp,
  PRIMARY KEY (resource_id, version)
);
CREATE INDEX secrets_account_kind_identifier_idx
  ON secrets (account(resource_id), kind(resource_id), identifier(resource_id) text_pattern_ops);
CREATE INDEX secrets_resource_id_index ON secrets (resource_id);

CREATE TABLE credentials (
  role_id text PRIMARY KEY REFERENCES roles (role_id) ON DELETE CASCADE,
  client_id text REFERENCES roles (role_id) ON DELETE CASCADE,
  api_key bytea,
  encrypted_hash bytea,
  expiration timestamp,
  restricted_to cidr[] NOT NULL DEFAULT '{}',
  updated_at timestamp
);

CREATE TABLE policy_versions (
  resource_id text NOT NULL REFERENCES resources (resource_id) ON DELETE CASCADE,
  role_id text NOT NULL REFERENCES roles (role_id) ON DELETE CASCADE,
  version integer NOT NULL,
  created_at timestamptz NOT NULL DEFAULT transaction_timestamp(),
  policy_text text NOT NULL,
  policy_sha256 text NOT NULL,
  finished_at timestamptz,
  client_ip text,
  PRIMARY KEY (resource_id, version),
  CONSTRAINT created_before_finish CHECK (created_at <= finished_at)
);

-- No primary key (as in Conjur): rows are only inserted by the policy_log triggers and
-- deleted by the cascade from policy_versions.
CREATE TABLE policy_log (
  policy_id text NOT NULL,
  version integer NOT NULL,
  operation policy_log_op NOT NULL,
  kind policy_log_kind NOT NULL,
  subject hstore NOT NULL,
  at timestamptz NOT NULL DEFAULT clock_timestamp(),
  FOREIGN KEY (policy_id, version) REFERENCES policy_versions (resource_id, version) ON DELETE CASCADE
);
CREATE INDEX policy_log_policy_id_version_index ON policy_log (policy_id, version);

CREATE TABLE resources_textsearch (
  resource_id text PRIMARY KEY
    CONSTRAINT resources_textsearch_resource_id_fkey REFERENCES resources (resource_id) ON DELETE CASCADE,
  textsearch tsvector
);
CREATE INDEX resources_ts_index ON resources_textsearch USING gist (textsearch);

CREATE TABLE host_factory_tokens (
  token_sha256 varchar(64) PRIMARY KEY,
  token bytea NOT NULL,
  resource_id text NOT NULL REFERENCES resources (resource_id) ON DELETE CASCADE,
  cidr cidr[] NOT NULL DEFAULT '{}',
  expiration timestamp
);

CREATE TABLE authenticator_configs (
  id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  resource_id text NOT NULL UNIQUE REFERENCES resources (resource_id) ON DELETE CASCADE,
  enabled boolean NOT NULL DEFAULT false
);

CREATE TABLE issuers (
  issuer_id text,
  account text,
  issuer_type text NOT NULL,
  max_ttl integer NOT NULL,
  data bytea,
  created_at timestamp NOT NULL DEFAULT transaction_timestamp(),
  modified_at timestamp NOT NULL,
  policy_id text NOT NULL REFERENCES resources (resource_id) ON DELETE CASCADE,
  CONSTRAINT issuer_pk PRIMARY KEY (account, issuer_id)
);

CREATE TABLE slosilo_keystore (
  id text PRIMARY KEY,
  key bytea NOT NULL,
  fingerprint text NOT NULL UNIQUE
);

-- ---------------------------------------------------------------------------------------
-- Version numbering: max+1 per resource (1 if none), overwriting whatever was given.

CREATE FUNCTION secrets_next_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.version := COALESCE((SELECT max(s.version) FROM secrets s WHERE s.resource_id = NEW.resource_id), 0) + 1;
  RETURN NEW;
END
$$;
CREATE TRIGGER secrets_version BEFORE INSERT ON secrets
  FOR EACH ROW EXECUTE FUNCTION secrets_next_version();

CREATE FUNCTION policy_versions_next_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.version := COALESCE((SELECT max(p.version) FROM policy_versions p WHERE p.resource_id = NEW.resource_id), 0) + 1;
  RETURN NEW;
END
$$;
CREATE TRIGGER policy_versions_version BEFORE INSERT ON policy_versions
  FOR EACH ROW EXECUTE FUNCTION policy_versions_next_version();

-- ---------------------------------------------------------------------------------------
-- Current policy version: the one row with finished_at IS NULL (a load in progress).
-- A new version finishes any unfinished one (only_one_current); the deferred constraint
-- trigger stamps the new one at commit, so the WAL has its INSERT (NULL) then an UPDATE.

CREATE FUNCTION policy_versions_finish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE policy_versions SET finished_at = clock_timestamp() WHERE finished_at IS NULL;
  RETURN NEW;
END
$$;
CREATE TRIGGER only_one_current BEFORE INSERT ON policy_versions
  FOR EACH ROW EXECUTE FUNCTION policy_versions_finish();
CREATE CONSTRAINT TRIGGER finish_current AFTER INSERT ON policy_versions
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (NEW.finished_at IS NULL) EXECUTE FUNCTION policy_versions_finish();

CREATE FUNCTION current_policy_version() RETURNS SETOF policy_versions
  LANGUAGE sql STABLE AS $$
  SELECT * FROM policy_versions WHERE finished_at IS NULL
$$;

-- Same, with policy_text nulled so the (possibly TOASTed) YAML is not read.
CREATE FUNCTION current_policy_version_no_policy_text() RETURNS SETOF policy_versions
  LANGUAGE sql STABLE AS $$
  SELECT resource_id, role_id, version, created_at, NULL::text, policy_sha256, finished_at, client_ip
  FROM policy_versions WHERE finished_at IS NULL
$$;

-- ---------------------------------------------------------------------------------------
-- Owner <-> membership: when a resource is also a role, its owner is an admin member of
-- it (ownership = true). BEFORE triggers, so the membership precedes the resource in WAL.

CREATE FUNCTION grant_role_membership_to_owner(p_role_id text, p_grantee text, p_policy_id text)
  RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM roles r WHERE r.role_id = p_role_id)
     AND NOT EXISTS (SELECT 1 FROM role_memberships m
                     WHERE m.role_id = p_role_id AND m.member_id = p_grantee
                       AND m.ownership AND m.admin_option) THEN
    INSERT INTO role_memberships (role_id, member_id, admin_option, ownership, policy_id)
    VALUES (p_role_id, p_grantee, true, true, p_policy_id)
    ON CONFLICT (role_id, member_id, ownership) DO UPDATE SET admin_option = true;
  END IF;
END
$$;

CREATE FUNCTION delete_role_membership_of_owner(p_role_id text, p_owner_id text)
  RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM role_memberships m
  WHERE m.role_id = p_role_id AND m.member_id = p_owner_id AND m.ownership;
END
$$;

CREATE FUNCTION grant_role_membership_to_owner_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM grant_role_membership_to_owner(NEW.resource_id, NEW.owner_id, NEW.policy_id);
  RETURN NEW;
END
$$;
CREATE TRIGGER grant_role_membership_to_owner BEFORE INSERT ON resources
  FOR EACH ROW EXECUTE FUNCTION grant_role_membership_to_owner_trigger();

CREATE FUNCTION update_role_membership_of_owner_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.owner_id IS DISTINCT FROM OLD.owner_id THEN
    PERFORM delete_role_membership_of_owner(OLD.resource_id, OLD.owner_id);
    PERFORM grant_role_membership_to_owner(NEW.resource_id, NEW.owner_id, NEW.policy_id);
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER update_role_membership_of_owner BEFORE UPDATE ON resources
  FOR EACH ROW EXECUTE FUNCTION update_role_membership_of_owner_trigger();

CREATE FUNCTION delete_role_membership_of_owner_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM delete_role_membership_of_owner(OLD.resource_id, OLD.owner_id);
  RETURN OLD;
END
$$;
CREATE TRIGGER delete_role_membership_of_owner BEFORE DELETE ON resources
  FOR EACH ROW EXECUTE FUNCTION delete_role_membership_of_owner_trigger();

-- ---------------------------------------------------------------------------------------
-- Text search: A = identifier (./- as spaces) and the `name` annotation, B = the other
-- annotations, C = the kind.

-- plpgsql rather than sql: a plpgsql function keeps its plans across the trigger calls of
-- a bulk load (a non-inlined sql function is planned again on every call).
CREATE FUNCTION tsvector(r resources) RETURNS tsvector LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN setweight(to_tsvector('pg_catalog.english', translate(coalesce(identifier(r.resource_id), ''), './-', '   ')), 'A')
      || setweight(to_tsvector('pg_catalog.english',
           coalesce((SELECT a.value FROM annotations a WHERE a.resource_id = r.resource_id AND a.name = 'name'), '')), 'A')
      || setweight(to_tsvector('pg_catalog.english',
           coalesce((SELECT string_agg(a.value, ' ' ORDER BY a.name) FROM annotations a
                     WHERE a.resource_id = r.resource_id AND a.name <> 'name'), '')), 'B')
      || setweight(to_tsvector('pg_catalog.english', coalesce(kind(r.resource_id), '')), 'C');
END
$$;

CREATE FUNCTION resource_update_textsearch() RETURNS trigger LANGUAGE plpgsql
  SET search_path FROM CURRENT AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO resources_textsearch (resource_id, textsearch) VALUES (NEW.resource_id, tsvector(NEW));
  ELSE
    UPDATE resources_textsearch SET textsearch = tsvector(NEW) WHERE resource_id = NEW.resource_id;
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER resource_update_textsearch AFTER INSERT OR UPDATE ON resources
  FOR EACH ROW EXECUTE FUNCTION resource_update_textsearch();

-- Recomputes the parent's vector; does nothing when the parent is already gone (cascade).
CREATE FUNCTION annotation_update_textsearch() RETURNS trigger LANGUAGE plpgsql
  SET search_path FROM CURRENT AS $$
DECLARE
  rid text;
BEGIN
  IF TG_OP = 'DELETE' THEN rid := OLD.resource_id; ELSE rid := NEW.resource_id; END IF;
  UPDATE resources_textsearch t SET textsearch = tsvector(r)
  FROM resources r
  WHERE r.resource_id = rid AND t.resource_id = rid;
  RETURN NULL;
END
$$;
CREATE TRIGGER annotation_update_textsearch AFTER INSERT OR UPDATE OR DELETE ON annotations
  FOR EACH ROW EXECUTE FUNCTION annotation_update_textsearch();

-- ---------------------------------------------------------------------------------------
-- policy_log: statement-level capture on the 5 policy tables, during a policy load only
-- (while a current version exists). A row is logged when its policy_id is the current
-- policy or lies under it; `subject` holds its primary key columns.

CREATE FUNCTION policy_log_roles() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE cur record;
BEGIN
  SELECT resource_id, version INTO cur FROM current_policy_version_no_policy_text() LIMIT 1;
  IF NOT FOUND THEN RETURN NULL; END IF;
  IF TG_OP = 'DELETE' THEN
    INSERT INTO policy_log (policy_id, version, operation, kind, subject)
    SELECT cur.resource_id, cur.version, 'DELETE', 'roles', hstore('role_id', o.role_id)
    FROM old_rows o
    WHERE o.policy_id = cur.resource_id OR o.policy_id LIKE cur.resource_id || '/%';
  ELSE
    INSERT INTO policy_log (policy_id, version, operation, kind, subject)
    SELECT cur.resource_id, cur.version, TG_OP::policy_log_op, 'roles', hstore('role_id', n.role_id)
    FROM new_rows n
    WHERE n.policy_id = cur.resource_id OR n.policy_id LIKE cur.resource_id || '/%';
  END IF;
  RETURN NULL;
END
$$;

CREATE FUNCTION policy_log_role_memberships() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE cur record;
BEGIN
  SELECT resource_id, version INTO cur FROM current_policy_version_no_policy_text() LIMIT 1;
  IF NOT FOUND THEN RETURN NULL; END IF;
  IF TG_OP = 'DELETE' THEN
    INSERT INTO policy_log (policy_id, version, operation, kind, subject)
    SELECT cur.resource_id, cur.version, 'DELETE', 'role_memberships',
           hstore(ARRAY['role_id', 'member_id', 'ownership'], ARRAY[o.role_id, o.member_id, o.ownership::text])
    FROM old_rows o
    WHERE o.policy_id = cur.resource_id OR o.policy_id LIKE cur.resource_id || '/%';
  ELSE
    INSERT INTO policy_log (policy_id, version, operation, kind, subject)
    SELECT cur.resource_id, cur.version, TG_OP::policy_log_op, 'role_memberships',
           hstore(ARRAY['role_id', 'member_id', 'ownership'], ARRAY[n.role_id, n.member_id, n.ownership::text])
    FROM new_rows n
    WHERE n.policy_id = cur.resource_id OR n.policy_id LIKE cur.resource_id || '/%';
  END IF;
  RETURN NULL;
END
$$;

CREATE FUNCTION policy_log_resources() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE cur record;
BEGIN
  SELECT resource_id, version INTO cur FROM current_policy_version_no_policy_text() LIMIT 1;
  IF NOT FOUND THEN RETURN NULL; END IF;
  IF TG_OP = 'DELETE' THEN
    INSERT INTO policy_log (policy_id, version, operation, kind, subject)
    SELECT cur.resource_id, cur.version, 'DELETE', 'resources', hstore('resource_id', o.resource_id)
    FROM old_rows o
    WHERE o.policy_id = cur.resource_id OR o.policy_id LIKE cur.resource_id || '/%';
  ELSE
    INSERT INTO policy_log (policy_id, version, operation, kind, subject)
    SELECT cur.resource_id, cur.version, TG_OP::policy_log_op, 'resources', hstore('resource_id', n.resource_id)
    FROM new_rows n
    WHERE n.policy_id = cur.resource_id OR n.policy_id LIKE cur.resource_id || '/%';
  END IF;
  RETURN NULL;
END
$$;

CREATE FUNCTION policy_log_permissions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE cur record;
BEGIN
  SELECT resource_id, version INTO cur FROM current_policy_version_no_policy_text() LIMIT 1;
  IF NOT FOUND THEN RETURN NULL; END IF;
  IF TG_OP = 'DELETE' THEN
    INSERT INTO policy_log (policy_id, version, operation, kind, subject)
    SELECT cur.resource_id, cur.version, 'DELETE', 'permissions',
           hstore(ARRAY['resource_id', 'role_id', 'privilege'], ARRAY[o.resource_id, o.role_id, o.privilege])
    FROM old_rows o
    WHERE o.policy_id = cur.resource_id OR o.policy_id LIKE cur.resource_id || '/%';
  ELSE
    INSERT INTO policy_log (policy_id, version, operation, kind, subject)
    SELECT cur.resource_id, cur.version, TG_OP::policy_log_op, 'permissions',
           hstore(ARRAY['resource_id', 'role_id', 'privilege'], ARRAY[n.resource_id, n.role_id, n.privilege])
    FROM new_rows n
    WHERE n.policy_id = cur.resource_id OR n.policy_id LIKE cur.resource_id || '/%';
  END IF;
  RETURN NULL;
END
$$;

CREATE FUNCTION policy_log_annotations() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE cur record;
BEGIN
  SELECT resource_id, version INTO cur FROM current_policy_version_no_policy_text() LIMIT 1;
  IF NOT FOUND THEN RETURN NULL; END IF;
  IF TG_OP = 'DELETE' THEN
    INSERT INTO policy_log (policy_id, version, operation, kind, subject)
    SELECT cur.resource_id, cur.version, 'DELETE', 'annotations',
           hstore(ARRAY['resource_id', 'name'], ARRAY[o.resource_id, o.name])
    FROM old_rows o
    WHERE o.policy_id = cur.resource_id OR o.policy_id LIKE cur.resource_id || '/%';
  ELSE
    INSERT INTO policy_log (policy_id, version, operation, kind, subject)
    SELECT cur.resource_id, cur.version, TG_OP::policy_log_op, 'annotations',
           hstore(ARRAY['resource_id', 'name'], ARRAY[n.resource_id, n.name])
    FROM new_rows n
    WHERE n.policy_id = cur.resource_id OR n.policy_id LIKE cur.resource_id || '/%';
  END IF;
  RETURN NULL;
END
$$;

-- Transition tables allow one event per trigger, hence three triggers per table.
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['roles', 'role_memberships', 'resources', 'permissions', 'annotations'] LOOP
    EXECUTE format('CREATE TRIGGER policy_log AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION policy_log_%s()', t, t);
    EXECUTE format('CREATE TRIGGER policy_log_u AFTER UPDATE ON %I REFERENCING NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION policy_log_%s()', t, t);
    EXECUTE format('CREATE TRIGGER policy_log_d AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION policy_log_%s()', t, t);
  END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Authorization. Edge (role_id = P, member_id = M): M is a member of P and inherits P's
-- privileges and ownerships. all_roles(X) is X's reflexive-transitive upward closure.

CREATE FUNCTION all_roles(p_role_id text) RETURNS TABLE (role_id text, admin_option boolean)
  LANGUAGE sql STABLE STRICT AS $$
  WITH RECURSIVE up(role_id, admin_option) AS (
    SELECT p_role_id, true
    UNION
    SELECT m.role_id, m.admin_option FROM role_memberships m JOIN up ON m.member_id = up.role_id
  )
  SELECT up.role_id, bool_or(up.admin_option) FROM up GROUP BY up.role_id
$$;

-- Is `ancestor` in the upward closure of `p_role_id` (is p_role_id a member of it)?
CREATE FUNCTION is_role_ancestor_of(ancestor text, p_role_id text) RETURNS boolean
  LANGUAGE sql STABLE STRICT AS $$
  SELECT EXISTS (SELECT 1 FROM all_roles(p_role_id) a WHERE a.role_id = ancestor)
$$;

-- The role, or a role it transitively belongs to, owns the resource or holds the
-- privilege on it. NULL when the resource does not exist.
CREATE FUNCTION is_role_allowed_to(p_role_id text, p_privilege text, p_resource_id text) RETURNS boolean
  LANGUAGE sql STABLE STRICT AS $$
  SELECT EXISTS (
    SELECT 1 FROM all_roles(p_role_id) a
    WHERE a.role_id = r.owner_id
       OR EXISTS (SELECT 1 FROM permissions p
                  WHERE p.resource_id = r.resource_id AND p.role_id = a.role_id AND p.privilege = p_privilege))
  FROM resources r WHERE r.resource_id = p_resource_id
$$;

-- Same with any privilege, expanding downward from the owner and permission holders.
CREATE FUNCTION is_resource_visible(p_resource_id text, p_role_id text) RETURNS boolean
  LANGUAGE sql STABLE STRICT AS $$
  WITH RECURSIVE down(role_id) AS (
    SELECT r.owner_id FROM resources r WHERE r.resource_id = p_resource_id
    UNION
    SELECT p.role_id FROM permissions p WHERE p.resource_id = p_resource_id
    UNION
    SELECT m.member_id FROM role_memberships m JOIN down ON m.role_id = down.role_id
  )
  SELECT EXISTS (SELECT 1 FROM down WHERE down.role_id = p_role_id)
$$;

-- Resources the role can see: owned by, or with any permission held by, its closure.
CREATE FUNCTION visible_resources(p_role_id text) RETURNS SETOF resources
  LANGUAGE sql STABLE STRICT AS $$
  WITH closure AS (SELECT a.role_id FROM all_roles(p_role_id) a)
  SELECT r.* FROM resources r
  WHERE r.owner_id IN (SELECT role_id FROM closure)
     OR EXISTS (SELECT 1 FROM permissions p
                WHERE p.resource_id = r.resource_id AND p.role_id IN (SELECT role_id FROM closure))
$$;
