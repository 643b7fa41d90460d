/*!
The Conjur database as tests and the demo need it: the schema (`sql/conjur-schema.sql`),
the grants for the `replicator` role, the leader's publication (through [`crate::ops::setup`],
the same SQL `pgsieve setup` runs), and the names Conjur gives to ids and replica sets.
*/

use tokio_postgres::GenericClient;

use super::cluster::{CONJUR_DB, Cluster, REPLICATOR_ROLE};
use super::error::{HarnessError, PgContext};

/// Conjur's schema: tables, keys, enums, id and authz functions, triggers.
pub const SCHEMA_SQL: &str = include_str!("../../sql/conjur-schema.sql");

/// The account Conjur Enterprise puts replica-set groups in.
pub const SYSTEM_ACCOUNT: &str = "system";

/// Loads [`SCHEMA_SQL`] into an empty database, atomically (one simple-query batch runs
/// as one implicit transaction).
pub async fn load_schema(client: &impl GenericClient) -> Result<(), HarnessError> {
    client
        .batch_execute(SCHEMA_SQL)
        .await
        .ctx(|| "loading the Conjur schema".to_string())
}

/// Lets `replicator` read every table in `public` (for the initial copy and the leader
/// queries of a backfill). Run after [`load_schema`]: it covers existing tables only.
pub async fn grant_replicator(client: &impl GenericClient) -> Result<(), HarnessError> {
    client
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA public TO {REPLICATOR_ROLE};
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {REPLICATOR_ROLE};"
        ))
        .await
        .ctx(|| "granting SELECT to replicator".to_string())
}

/// Runs [`crate::ops::setup::setup_statements`] for `publication` (idempotent).
pub async fn prepare_leader(
    client: &impl GenericClient,
    publication: &str,
) -> Result<(), HarnessError> {
    for stmt in crate::ops::setup::setup_statements(publication) {
        client
            .batch_execute(&stmt)
            .await
            .ctx(|| format!("preparing publication {publication}"))?;
    }
    Ok(())
}

/// Connects to the cluster's `conjur` database as superuser, loads the schema and grants
/// `replicator` read access; returns the connection for further setup.
pub async fn prepare_conjur(cluster: &Cluster) -> Result<tokio_postgres::Client, HarnessError> {
    let client = cluster.connect(CONJUR_DB).await?;
    load_schema(&client).await?;
    grant_replicator(&client).await?;
    Ok(client)
}

/// A Conjur id, `account:kind:identifier`.
pub fn id(account: &str, kind: &str, identifier: &str) -> String {
    format!("{account}:{kind}:{identifier}")
}

/// A Conjur Enterprise replica set: policy `conjur/replication-sets/<name>` in `account`
/// (`system` in Enterprise; the seed's scripts used the customer account).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicaSet {
    /// The account of the set's policy and data group.
    pub account: String,
    /// The set's short name.
    pub name: String,
}

impl ReplicaSet {
    /// Set `name` in account `system`.
    pub fn new(name: impl Into<String>) -> Self {
        ReplicaSet {
            account: SYSTEM_ACCOUNT.to_string(),
            name: name.into(),
        }
    }

    /// Set `name` in `account`.
    pub fn in_account(account: impl Into<String>, name: impl Into<String>) -> Self {
        ReplicaSet {
            account: account.into(),
            name: name.into(),
        }
    }

    /// `<account>:policy:conjur/replication-sets/<name>`.
    pub fn policy_id(&self) -> String {
        id(
            &self.account,
            "policy",
            &format!("conjur/replication-sets/{}", self.name),
        )
    }

    /// The data group: `<account>:group:conjur/replication-sets/<name>/replicated-data`.
    /// What it may execute (or see) is in the set.
    pub fn data_group(&self) -> String {
        id(
            &self.account,
            "group",
            &format!("conjur/replication-sets/{}/replicated-data", self.name),
        )
    }
}
