//! Building the Conjur model from whole tables: the leader's, in the slot's
//! exported snapshot (initial copy), or the follower's own (restart: its
//! model tables are replicated in full, so they describe the model at
//! exactly the LSN the follower has applied).

use pgsieve_filters::{FilterError, Model, ReplicaSetSpec};
use tokio_postgres::Client;

/// Why the model could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Reading a table failed.
    #[error("reading {table} to build the replica-set model: {source}")]
    Query {
        /// Table name.
        table: &'static str,
        /// The database error.
        source: tokio_postgres::Error,
    },
    /// A row holds an id the model rejects.
    #[error("building the replica-set model: {0}")]
    Filter(#[from] FilterError),
}

/// Reads `role_memberships`, `permissions` and `resources` through `client`
/// (in whatever transaction/snapshot the caller opened) into a model.
pub async fn model_from_tables(
    client: &Client,
    sets: Vec<ReplicaSetSpec>,
) -> Result<Model, BootstrapError> {
    let mut builder = Model::builder(sets)?;
    let query = |table: &'static str, sql: &'static str| async move {
        client
            .query(sql, &[])
            .await
            .map_err(|source| BootstrapError::Query { table, source })
    };
    for row in query(
        "role_memberships",
        "SELECT role_id, member_id, ownership FROM role_memberships",
    )
    .await?
    {
        builder.add_membership(row.get(0), row.get(1), row.get(2))?;
    }
    for row in query(
        "permissions",
        "SELECT resource_id, role_id, privilege FROM permissions",
    )
    .await?
    {
        builder.add_permission(row.get(0), row.get(1), row.get(2))?;
    }
    for row in query("resources", "SELECT resource_id, owner_id FROM resources").await? {
        builder.add_resource(row.get(0), row.get(1))?;
    }
    Ok(builder.build())
}
