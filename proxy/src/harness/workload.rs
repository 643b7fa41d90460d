/*!
Writes to a Conjur database the way Conjur does, so the leader's WAL looks like
production's: accounts, policy loads (one transaction: a `policy_versions` row stamped
at commit, then roles → memberships → resources → permissions → annotations, with the
triggers adding ownership memberships, textsearch and `policy_log` rows), secret writes
through the API path (insert + trim to 20 in one transaction), rotation (no trim),
expiration updates (every version), replica sets and grant changes.

Bulk writes use one `INSERT … SELECT FROM unnest($arrays)` per table, so a load of 10⁵
rows is one transaction of a handful of statements.

Functions that must be atomic take `&mut impl GenericClient` and open a transaction
(a savepoint when given a transaction); the others run on whatever they are given.
*/

use std::time::SystemTime;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio_postgres::GenericClient;

use super::conjur::{ReplicaSet, id};
use super::error::{HarnessError, PgContext};

/// Conjur's default `SECRETS_VERSION_LIMIT`: the API keeps the newest 20 versions.
pub const SECRETS_VERSION_LIMIT: i64 = 20;
/// Conjur's default `POLICIES_VERSION_LIMIT`.
pub const POLICIES_VERSION_LIMIT: i64 = 20;

/// A `roles` row of a policy load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRow {
    /// `account:kind:identifier`.
    pub role_id: String,
    /// The policy that defines it.
    pub policy_id: Option<String>,
}

/// A `role_memberships` row: `member_id` is a member of `role_id` (inherits its rights).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRow {
    /// The role granted.
    pub role_id: String,
    /// The member receiving it.
    pub member_id: String,
    /// Whether the member may grant it further.
    pub admin_option: bool,
    /// The policy that defines the grant.
    pub policy_id: Option<String>,
}

/// A `resources` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRow {
    /// `account:kind:identifier`.
    pub resource_id: String,
    /// Its owner (a role).
    pub owner_id: String,
    /// The policy that defines it.
    pub policy_id: Option<String>,
}

/// A `permissions` row: `role_id` holds `privilege` on `resource_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionRow {
    /// Free-form: read, execute, update, …
    pub privilege: String,
    /// The resource.
    pub resource_id: String,
    /// The role holding it.
    pub role_id: String,
    /// The policy that defines it.
    pub policy_id: Option<String>,
}

/// An `annotations` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationRow {
    /// The annotated resource.
    pub resource_id: String,
    /// Annotation name.
    pub name: String,
    /// Annotation value.
    pub value: String,
    /// The policy that defines it.
    pub policy_id: Option<String>,
}

/// One policy load: the version row's fields and the records it upserts.
///
/// Loading order follows Conjur's FKs: the load's policies (roles, then resources) level
/// by level (parents first), then the other roles, memberships, resources, permissions
/// and annotations. A policy's owner must exist before the load or be a policy of it.
#[derive(Debug, Clone, Default)]
pub struct PolicyLoad {
    /// The policy loaded (`policy_versions.resource_id`); must exist.
    pub policy_id: String,
    /// The role loading it (`policy_versions.role_id`).
    pub loader: String,
    /// The policy text stored in the version row.
    pub text: String,
    /// Roles to create.
    pub roles: Vec<RoleRow>,
    /// Memberships to create.
    pub memberships: Vec<MembershipRow>,
    /// Resources to create (or re-own).
    pub resources: Vec<ResourceRow>,
    /// Permissions to create.
    pub permissions: Vec<PermissionRow>,
    /// Annotations to create or update.
    pub annotations: Vec<AnnotationRow>,
}

impl PolicyLoad {
    /// An empty load of `policy_id` by `loader`.
    pub fn new(policy_id: impl Into<String>, loader: impl Into<String>) -> Self {
        PolicyLoad {
            policy_id: policy_id.into(),
            loader: loader.into(),
            ..PolicyLoad::default()
        }
    }

    /// Number of rows the load writes directly (triggers add more).
    pub fn row_count(&self) -> usize {
        self.roles.len()
            + self.memberships.len()
            + self.resources.len()
            + self.permissions.len()
            + self.annotations.len()
    }

    /// Adds a role and a resource with the same id (user, host, group, layer, policy).
    pub fn role_resource(&mut self, role_id: &str, owner_id: &str, policy_id: Option<&str>) {
        self.roles.push(RoleRow {
            role_id: role_id.to_string(),
            policy_id: policy_id.map(str::to_string),
        });
        self.resource(role_id, owner_id, policy_id);
    }

    /// Adds a resource only (variable, webservice).
    pub fn resource(&mut self, resource_id: &str, owner_id: &str, policy_id: Option<&str>) {
        self.resources.push(ResourceRow {
            resource_id: resource_id.to_string(),
            owner_id: owner_id.to_string(),
            policy_id: policy_id.map(str::to_string),
        });
    }

    /// Adds a membership: `member_id` joins `role_id`.
    pub fn grant(&mut self, role_id: &str, member_id: &str, policy_id: Option<&str>) {
        self.memberships.push(MembershipRow {
            role_id: role_id.to_string(),
            member_id: member_id.to_string(),
            admin_option: false,
            policy_id: policy_id.map(str::to_string),
        });
    }

    /// Adds a permission: `role_id` may `privilege` on `resource_id`.
    pub fn permit(
        &mut self,
        role_id: &str,
        privilege: &str,
        resource_id: &str,
        policy_id: Option<&str>,
    ) {
        self.permissions.push(PermissionRow {
            privilege: privilege.to_string(),
            resource_id: resource_id.to_string(),
            role_id: role_id.to_string(),
            policy_id: policy_id.map(str::to_string),
        });
    }

    /// Adds an annotation.
    pub fn annotate(
        &mut self,
        resource_id: &str,
        name: &str,
        value: &str,
        policy_id: Option<&str>,
    ) {
        self.annotations.push(AnnotationRow {
            resource_id: resource_id.to_string(),
            name: name.to_string(),
            value: value.to_string(),
            policy_id: policy_id.map(str::to_string),
        });
    }
}

/// Creates an account as Conjur does (idempotent): the `admin` user (a role owning its
/// own resource), the `root` policy owned by admin, admin's credentials and the
/// account's token-signing key in `slosilo_keystore`.
pub async fn create_account(
    client: &mut impl GenericClient,
    account: &str,
) -> Result<(), HarnessError> {
    let admin = id(account, "user", "admin");
    let root = id(account, "policy", "root");
    let mut rng = StdRng::seed_from_u64(seed_of(account));
    let mut key = vec![0u8; 64];
    rng.fill_bytes(&mut key);
    let fingerprint: String = (0..32)
        .map(|_| format!("{:02x}", rng.r#gen::<u8>()))
        .collect();
    let api_key = fake_ciphertext(&mut rng, 32);
    let tx = client
        .transaction()
        .await
        .ctx(|| "beginning create_account".into())?;
    tx.execute(
        "INSERT INTO roles (role_id) VALUES ($1), ($2) ON CONFLICT DO NOTHING",
        &[&admin, &root],
    )
    .await
    .ctx(|| format!("creating account {account}: roles"))?;
    tx.execute(
        "INSERT INTO resources (resource_id, owner_id) VALUES ($1, $1), ($2, $1)
         ON CONFLICT DO NOTHING",
        &[&admin, &root],
    )
    .await
    .ctx(|| format!("creating account {account}: resources"))?;
    tx.execute(
        "INSERT INTO credentials (role_id, api_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&admin, &api_key],
    )
    .await
    .ctx(|| format!("creating account {account}: credentials"))?;
    tx.execute(
        "INSERT INTO slosilo_keystore (id, key, fingerprint) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&format!("authn:{account}"), &key, &fingerprint],
    )
    .await
    .ctx(|| format!("creating account {account}: slosilo key"))?;
    tx.commit()
        .await
        .ctx(|| format!("committing account {account}"))
}

/// Loads a policy in one transaction, as Conjur's loader does: a new `policy_versions`
/// row (finished at commit by the deferred trigger), the records (upserts), then the
/// version trim to [`POLICIES_VERSION_LIMIT`]. Returns the new version number.
pub async fn load_policy(
    client: &mut impl GenericClient,
    load: &PolicyLoad,
) -> Result<i32, HarnessError> {
    let tx = client
        .transaction()
        .await
        .ctx(|| "beginning a policy load".into())?;
    let version = begin_policy_version(&tx, &load.policy_id, &load.loader, &load.text).await?;
    insert_records(&tx, load).await?;
    trim_policy_versions(&tx, &load.policy_id).await?;
    tx.commit()
        .await
        .ctx(|| format!("committing the load of {}", load.policy_id))?;
    Ok(version)
}

/// Inserts the `policy_versions` row that makes `policy_id` the current policy of this
/// transaction (`finished_at` NULL until commit). Returns the version the trigger chose.
pub async fn begin_policy_version(
    c: &impl GenericClient,
    policy_id: &str,
    loader: &str,
    text: &str,
) -> Result<i32, HarnessError> {
    let sha = format!("{:016x}{:016x}", seed_of(text), seed_of(policy_id));
    let row = c
        .query_one(
            "INSERT INTO policy_versions (resource_id, role_id, policy_text, policy_sha256, client_ip)
             VALUES ($1, $2, $3, $4, '127.0.0.1') RETURNING version",
            &[&policy_id, &loader, &text, &sha],
        )
        .await
        .ctx(|| format!("inserting a policy version of {policy_id}"))?;
    Ok(row.get(0))
}

/// Deletes all but the newest [`POLICIES_VERSION_LIMIT`] versions of `policy_id` (Conjur's
/// `PolicyVersion#after_save`); cascades to their `policy_log` rows.
pub async fn trim_policy_versions(
    c: &impl GenericClient,
    policy_id: &str,
) -> Result<u64, HarnessError> {
    c.execute(
        "DELETE FROM policy_versions WHERE resource_id = $1 AND version <= (
           SELECT max(version) FROM policy_versions WHERE resource_id = $1) - $2::int8",
        &[&policy_id, &POLICIES_VERSION_LIMIT],
    )
    .await
    .ctx(|| format!("trimming policy versions of {policy_id}"))
}

/// Upserts a load's records in FK-safe order, without a version row or transaction.
pub async fn insert_records(c: &impl GenericClient, load: &PolicyLoad) -> Result<(), HarnessError> {
    let is_policy = |id: &str| id.split(':').nth(1) == Some("policy");
    let depth = |id: &str| id.matches('/').count();
    let mut levels: Vec<usize> = load
        .roles
        .iter()
        .map(|r| &r.role_id)
        .chain(load.resources.iter().map(|r| &r.resource_id))
        .filter(|id| is_policy(id))
        .map(|id| depth(id))
        .collect();
    levels.sort_unstable();
    levels.dedup();
    for level in levels {
        let at = |id: &str| is_policy(id) && depth(id) == level;
        insert_roles(c, load.roles.iter().filter(|r| at(&r.role_id))).await?;
        insert_resources(c, load.resources.iter().filter(|r| at(&r.resource_id))).await?;
    }
    insert_roles(c, load.roles.iter().filter(|r| !is_policy(&r.role_id))).await?;
    insert_memberships(c, &load.memberships).await?;
    insert_resources(
        c,
        load.resources.iter().filter(|r| !is_policy(&r.resource_id)),
    )
    .await?;
    insert_permissions(c, &load.permissions).await?;
    insert_annotations(c, &load.annotations).await?;
    Ok(())
}

async fn insert_roles<'a>(
    c: &impl GenericClient,
    rows: impl Iterator<Item = &'a RoleRow>,
) -> Result<(), HarnessError> {
    let (ids, policies): (Vec<&str>, Vec<Option<&str>>) = rows
        .map(|r| (r.role_id.as_str(), r.policy_id.as_deref()))
        .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    c.execute(
        "INSERT INTO roles (role_id, policy_id)
         SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (role_id) DO NOTHING",
        &[&ids, &policies],
    )
    .await
    .ctx(|| format!("inserting {} roles", ids.len()))?;
    Ok(())
}

async fn insert_memberships(
    c: &impl GenericClient,
    rows: &[MembershipRow],
) -> Result<(), HarnessError> {
    if rows.is_empty() {
        return Ok(());
    }
    let roles: Vec<&str> = rows.iter().map(|r| r.role_id.as_str()).collect();
    let members: Vec<&str> = rows.iter().map(|r| r.member_id.as_str()).collect();
    let admin: Vec<bool> = rows.iter().map(|r| r.admin_option).collect();
    let policies: Vec<Option<&str>> = rows.iter().map(|r| r.policy_id.as_deref()).collect();
    c.execute(
        "INSERT INTO role_memberships (role_id, member_id, admin_option, ownership, policy_id)
         SELECT r, m, a, false, p FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[]) AS u(r, m, a, p)
         ON CONFLICT (role_id, member_id, ownership) DO UPDATE SET admin_option = EXCLUDED.admin_option
         WHERE role_memberships.admin_option IS DISTINCT FROM EXCLUDED.admin_option",
        &[&roles, &members, &admin, &policies],
    )
    .await
    .ctx(|| format!("inserting {} role memberships", rows.len()))?;
    Ok(())
}

async fn insert_resources<'a>(
    c: &impl GenericClient,
    rows: impl Iterator<Item = &'a ResourceRow>,
) -> Result<(), HarnessError> {
    let mut ids = Vec::new();
    let mut owners = Vec::new();
    let mut policies = Vec::new();
    for r in rows {
        ids.push(r.resource_id.as_str());
        owners.push(r.owner_id.as_str());
        policies.push(r.policy_id.as_deref());
    }
    if ids.is_empty() {
        return Ok(());
    }
    c.execute(
        "INSERT INTO resources (resource_id, owner_id, policy_id)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
         ON CONFLICT (resource_id) DO UPDATE SET owner_id = EXCLUDED.owner_id
         WHERE resources.owner_id IS DISTINCT FROM EXCLUDED.owner_id",
        &[&ids, &owners, &policies],
    )
    .await
    .ctx(|| format!("inserting {} resources", ids.len()))?;
    Ok(())
}

async fn insert_permissions(
    c: &impl GenericClient,
    rows: &[PermissionRow],
) -> Result<(), HarnessError> {
    if rows.is_empty() {
        return Ok(());
    }
    let privileges: Vec<&str> = rows.iter().map(|r| r.privilege.as_str()).collect();
    let resources: Vec<&str> = rows.iter().map(|r| r.resource_id.as_str()).collect();
    let roles: Vec<&str> = rows.iter().map(|r| r.role_id.as_str()).collect();
    let policies: Vec<Option<&str>> = rows.iter().map(|r| r.policy_id.as_deref()).collect();
    c.execute(
        "INSERT INTO permissions (privilege, resource_id, role_id, policy_id)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING",
        &[&privileges, &resources, &roles, &policies],
    )
    .await
    .ctx(|| format!("inserting {} permissions", rows.len()))?;
    Ok(())
}

async fn insert_annotations(
    c: &impl GenericClient,
    rows: &[AnnotationRow],
) -> Result<(), HarnessError> {
    if rows.is_empty() {
        return Ok(());
    }
    let resources: Vec<&str> = rows.iter().map(|r| r.resource_id.as_str()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let values: Vec<&str> = rows.iter().map(|r| r.value.as_str()).collect();
    let policies: Vec<Option<&str>> = rows.iter().map(|r| r.policy_id.as_deref()).collect();
    c.execute(
        "INSERT INTO annotations (resource_id, name, value, policy_id)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
         ON CONFLICT (resource_id, name) DO UPDATE SET value = EXCLUDED.value
         WHERE annotations.value IS DISTINCT FROM EXCLUDED.value",
        &[&resources, &names, &values, &policies],
    )
    .await
    .ctx(|| format!("inserting {} annotations", rows.len()))?;
    Ok(())
}

/// Adds a secret version the way `POST /secrets` does: insert (the trigger numbers it)
/// and delete all but the newest [`SECRETS_VERSION_LIMIT`], in one transaction.
/// Returns the new version.
pub async fn add_secret(
    client: &mut impl GenericClient,
    variable: &str,
    value: &[u8],
) -> Result<i32, HarnessError> {
    let tx = client
        .transaction()
        .await
        .ctx(|| "beginning add_secret".into())?;
    let version = insert_secret(&tx, variable, value, None).await?;
    tx.execute(
        "DELETE FROM secrets WHERE resource_id = $1 AND version <= (
           SELECT max(version) FROM secrets WHERE resource_id = $1) - $2::int8",
        &[&variable, &SECRETS_VERSION_LIMIT],
    )
    .await
    .ctx(|| format!("trimming secrets of {variable}"))?;
    tx.commit()
        .await
        .ctx(|| format!("committing a secret of {variable}"))?;
    Ok(version)
}

/// Adds a secret version the way rotation does: insert only, no trim (so a rotated
/// variable may exceed 20 versions until the next API write). Returns the version.
pub async fn rotate_secret(
    c: &impl GenericClient,
    variable: &str,
    value: &[u8],
    expires_at: Option<SystemTime>,
) -> Result<i32, HarnessError> {
    insert_secret(c, variable, value, expires_at).await
}

async fn insert_secret(
    c: &impl GenericClient,
    variable: &str,
    value: &[u8],
    expires_at: Option<SystemTime>,
) -> Result<i32, HarnessError> {
    let row = c
        .query_one(
            "INSERT INTO secrets (resource_id, value, expires_at) VALUES ($1, $2, $3::timestamptz)
             RETURNING version",
            &[&variable, &value, &expires_at],
        )
        .await
        .ctx(|| format!("inserting a secret of {variable}"))?;
    Ok(row.get(0))
}

/// Sets `expires_at` on every version of `variable` (`Secret.update_expiration`; `None`
/// clears it). Returns the number of rows updated.
pub async fn set_expiration(
    c: &impl GenericClient,
    variable: &str,
    expires_at: Option<SystemTime>,
) -> Result<u64, HarnessError> {
    c.execute(
        "UPDATE secrets SET expires_at = $2::timestamptz WHERE resource_id = $1",
        &[&variable, &expires_at],
    )
    .await
    .ctx(|| format!("setting the expiration of {variable}"))
}

/// Inserts `versions` versions of each variable in one statement (values are fake
/// Conjur ciphertexts of `value_len` bytes, deterministic from `seed`). For bulk
/// population; no trimming. Returns the number of rows.
pub async fn add_secret_versions(
    c: &impl GenericClient,
    variables: &[String],
    versions: usize,
    value_len: usize,
    seed: u64,
) -> Result<u64, HarnessError> {
    if variables.is_empty() || versions == 0 {
        return Ok(0);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ids: Vec<&str> = Vec::with_capacity(variables.len() * versions);
    let mut values: Vec<Vec<u8>> = Vec::with_capacity(variables.len() * versions);
    for _ in 0..versions {
        for v in variables {
            ids.push(v);
            values.push(fake_ciphertext(&mut rng, value_len));
        }
    }
    c.execute(
        "INSERT INTO secrets (resource_id, value) SELECT * FROM unnest($1::text[], $2::bytea[])",
        &[&ids, &values],
    )
    .await
    .ctx(|| format!("inserting {} secret versions", ids.len()))
}

/// Bytes shaped like a Conjur secret: `'G'` ‖ 16-byte tag ‖ 12-byte IV ‖ ciphertext.
pub fn fake_ciphertext(rng: &mut impl RngCore, plaintext_len: usize) -> Vec<u8> {
    let mut v = vec![0u8; 1 + 16 + 12 + plaintext_len];
    rng.fill_bytes(&mut v);
    if let Some(first) = v.first_mut() {
        *first = b'G';
    }
    v
}

/// Makes each set's data group a member of the matching layer (`layers[i]`
/// into `sets[i]`) in one transaction: the usual way a test puts whole apps
/// into replica sets.
pub async fn grant_layers_to_sets(
    client: &impl GenericClient,
    layers: &[String],
    sets: &[ReplicaSet],
) -> Result<(), HarnessError> {
    let changes: Vec<Change> = layers
        .iter()
        .zip(sets)
        .map(|(layer, set)| Change::GrantRole {
            role: layer.clone(),
            member: set.data_group(),
        })
        .collect();
    apply_changes(client, None, &changes).await.map(drop)
}

/// Creates a replica set as `evoke replication-set create` does (idempotent): the
/// account if missing, policies `conjur`, `conjur/replication-sets` and
/// `conjur/replication-sets/<name>`, and the set's data group, in one policy load.
pub async fn create_replica_set(
    client: &mut impl GenericClient,
    set: &ReplicaSet,
) -> Result<(), HarnessError> {
    let acct = set.account.as_str();
    create_account(client, acct).await?;
    let admin = id(acct, "user", "admin");
    let root = id(acct, "policy", "root");
    let conjur = id(acct, "policy", "conjur");
    let sets = id(acct, "policy", "conjur/replication-sets");
    let policy = set.policy_id();
    let mut load = PolicyLoad::new(&root, &admin);
    load.text = format!("- !policy conjur/replication-sets/{}", set.name);
    load.role_resource(&conjur, &admin, Some(&root));
    load.role_resource(&sets, &conjur, Some(&conjur));
    load.role_resource(&policy, &sets, Some(&sets));
    load.role_resource(&set.data_group(), &policy, Some(&policy));
    load_policy(client, &load).await?;
    Ok(())
}

/// One change to the authorization graph (what a policy update does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `member` joins `role` (e.g. the data group joins a layer).
    GrantRole {
        /// The role granted.
        role: String,
        /// Who receives it.
        member: String,
    },
    /// `member` leaves `role` (non-ownership membership).
    RevokeRole {
        /// The role revoked.
        role: String,
        /// Who loses it.
        member: String,
    },
    /// `role` gets `privilege` on `resource`.
    Permit {
        /// Who gets it.
        role: String,
        /// read, execute, …
        privilege: String,
        /// On what.
        resource: String,
    },
    /// `role` loses `privilege` on `resource`.
    Deny {
        /// Who loses it.
        role: String,
        /// read, execute, …
        privilege: String,
        /// On what.
        resource: String,
    },
    /// `resource` gets a new owner (the trigger moves the ownership membership).
    SetOwner {
        /// The resource.
        resource: String,
        /// Its new owner.
        owner: String,
    },
    /// Deletes a resource; for a policy, its whole subtree cascades.
    DeleteResource {
        /// The resource.
        resource: String,
    },
    /// Deletes a role; resources it owns cascade.
    DeleteRole {
        /// The role.
        role: String,
    },
}

impl Change {
    /// `role` gets `execute` on `resource`: the grant that puts a variable's
    /// secrets in a replica set (the demo's and the bench's live grant).
    pub fn permit_execute(role: String, resource: String) -> Change {
        Change::Permit {
            role,
            privilege: "execute".into(),
            resource,
        }
    }

    /// `role` loses `execute` on `resource`: the revoke of [`Change::permit_execute`].
    pub fn deny_execute(role: String, resource: String) -> Change {
        Change::Deny {
            role,
            privilege: "execute".into(),
            resource,
        }
    }
}

/// Applies `changes` in order on `c`, without a transaction or version row. Grants
/// and permits carry `policy` as their `policy_id`. Returns rows changed per change.
pub async fn apply_changes(
    c: &impl GenericClient,
    policy: Option<&str>,
    changes: &[Change],
) -> Result<Vec<u64>, HarnessError> {
    let mut counts = Vec::with_capacity(changes.len());
    for change in changes {
        let n = match change {
            Change::GrantRole { role, member } => c
                .execute(
                    "INSERT INTO role_memberships (role_id, member_id, admin_option, ownership, policy_id)
                     VALUES ($1, $2, false, false, $3) ON CONFLICT DO NOTHING",
                    &[role, member, &policy],
                )
                .await,
            Change::RevokeRole { role, member } => c
                .execute(
                    "DELETE FROM role_memberships WHERE role_id = $1 AND member_id = $2 AND NOT ownership",
                    &[role, member],
                )
                .await,
            Change::Permit {
                role,
                privilege,
                resource,
            } => c
                .execute(
                    "INSERT INTO permissions (privilege, resource_id, role_id, policy_id)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[privilege, resource, role, &policy],
                )
                .await,
            Change::Deny {
                role,
                privilege,
                resource,
            } => c
                .execute(
                    "DELETE FROM permissions WHERE privilege = $1 AND resource_id = $2 AND role_id = $3",
                    &[privilege, resource, role],
                )
                .await,
            Change::SetOwner { resource, owner } => c
                .execute(
                    "UPDATE resources SET owner_id = $2 WHERE resource_id = $1",
                    &[resource, owner],
                )
                .await,
            Change::DeleteResource { resource } => c
                .execute("DELETE FROM resources WHERE resource_id = $1", &[resource])
                .await,
            Change::DeleteRole { role } => c
                .execute("DELETE FROM roles WHERE role_id = $1", &[role])
                .await,
        }
        .ctx(|| format!("applying {change:?}"))?;
        counts.push(n);
    }
    Ok(counts)
}

/// Applies `changes` as a policy update of `policy_id` by `loader`: one transaction
/// with a new version row (stamped at commit) and the version trim. Returns the
/// version number.
pub async fn policy_change(
    client: &mut impl GenericClient,
    policy_id: &str,
    loader: &str,
    changes: &[Change],
) -> Result<i32, HarnessError> {
    let tx = client
        .transaction()
        .await
        .ctx(|| "beginning a policy change".into())?;
    let text = format!("# {} change(s)", changes.len());
    let version = begin_policy_version(&tx, policy_id, loader, &text).await?;
    apply_changes(&tx, Some(policy_id), changes).await?;
    trim_policy_versions(&tx, policy_id).await?;
    tx.commit()
        .await
        .ctx(|| format!("committing a change of {policy_id}"))?;
    Ok(version)
}

/// A stable 64-bit seed from a string (FNV-1a), for deterministic fake data.
pub(crate) fn seed_of(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Picks one element; `None` when empty.
pub(crate) fn pick<'a, T>(rng: &mut impl Rng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        None
    } else {
        items.get(rng.gen_range(0..items.len()))
    }
}
