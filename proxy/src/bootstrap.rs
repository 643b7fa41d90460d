//! Building the Conjur model from the leader's tables, always: at a snapshot
//! tied to a stream position (a slot's exported snapshot). A follower's own
//! tables are never read to decide anything: a row written there by anyone
//! must not widen what it receives (ARCHITECTURE.md, "Trust model").

use std::sync::Arc;

use pgsieve_filters::{FilterError, Model, ReplicaSetSpec};
use pgsieve_protocol::Lsn;
use tokio_postgres::Client;

use crate::source::{
    CreatedSlot, ReplicationConnection, SnapshotAction, SourceConfig, SourceError,
};

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
/// (a leader session inside the snapshot the caller imported) into a model.
pub async fn model_from_tables(
    client: &Client,
    sets: Vec<ReplicaSetSpec>,
) -> Result<Model, BootstrapError> {
    let mut builder = Model::builder(sets)?;
    for_each_row(
        client,
        "role_memberships",
        "SELECT role_id, member_id, ownership FROM public.role_memberships",
        |row| builder.add_membership(row.get(0), row.get(1), row.get(2)),
    )
    .await?;
    for_each_row(
        client,
        "permissions",
        "SELECT resource_id, role_id, privilege FROM public.permissions",
        |row| builder.add_permission(row.get(0), row.get(1), row.get(2)),
    )
    .await?;
    for_each_row(
        client,
        "resources",
        "SELECT resource_id, owner_id FROM public.resources",
        |row| builder.add_resource(row.get(0), row.get(1)),
    )
    .await?;
    Ok(builder.build())
}

/// Runs `sql` and hands each row to `add` as it arrives: a leader with a
/// million resources is never held in memory as rows besides the model.
async fn for_each_row(
    client: &Client,
    table: &'static str,
    sql: &str,
    mut add: impl FnMut(&tokio_postgres::Row) -> Result<(), FilterError>,
) -> Result<(), BootstrapError> {
    let query = |source| BootstrapError::Query { table, source };
    let rows = client
        .query_raw(sql, std::iter::empty::<&str>())
        .await
        .map_err(query)?;
    futures_util::pin_mut!(rows);
    while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows)
        .await
        .map_err(query)?
    {
        add(&row)?;
    }
    Ok(())
}

/// A leader SQL session inside a snapshot a logical slot exported: the
/// leader's tables exactly as of the slot's consistent point. Every
/// transaction that committed before [`LeaderSnapshot::at`] is in it, and no
/// later one. Build the model in it, bring the followers to it, then
/// [`LeaderSnapshot::finish`].
pub struct LeaderSnapshot {
    client: Arc<Client>,
    at: Lsn,
}

/// Why a leader snapshot could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The replication connection failed.
    #[error("opening a leader snapshot: {0}")]
    Source(#[from] SourceError),
    /// The SQL session could not import it.
    #[error("importing the leader snapshot: {0}")]
    Sql(#[from] tokio_postgres::Error),
    /// The leader exported none.
    #[error("the leader exported no snapshot for slot {0}")]
    NoSnapshot(String),
}

impl LeaderSnapshot {
    /// Creates temporary slot `name` on a new replication connection, imports
    /// its snapshot into `client` (idle) and drops the slot: an imported
    /// snapshot lives as long as the importing transaction.
    pub async fn temporary(
        source: &SourceConfig,
        name: &str,
        client: Arc<Client>,
    ) -> Result<Self, SnapshotError> {
        let mut slot = ReplicationConnection::connect(source).await?;
        let created = slot.create_slot(name, true, SnapshotAction::Export).await?;
        Self::import(&created, client).await
    }

    /// Imports the snapshot `created` exported into `client` (idle), before
    /// the creating connection runs any other command.
    pub async fn import(created: &CreatedSlot, client: Arc<Client>) -> Result<Self, SnapshotError> {
        let snapshot = created
            .snapshot_name
            .as_deref()
            .ok_or_else(|| SnapshotError::NoSnapshot(created.slot_name.clone()))?;
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'"
            ))
            .await?;
        Ok(Self {
            client,
            at: created.consistent_point,
        })
    }

    /// The stream position of the snapshot: transactions committed before it
    /// are in it.
    pub fn at(&self) -> Lsn {
        self.at
    }

    /// The session inside the snapshot.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Ends the snapshot transaction.
    pub async fn finish(self) -> Result<(), SnapshotError> {
        self.client.batch_execute("COMMIT").await?;
        Ok(())
    }
}

/// Name of the temporary slot that gives process `pid` of production slot
/// `slot` its session-start snapshot (unique per slot and process; ≤ 63
/// bytes, PostgreSQL's limit).
pub fn snapshot_slot_name(slot: &str, pid: u32) -> String {
    let suffix = format!("_snap_{pid}");
    let keep = 63usize.saturating_sub(suffix.len()).min(slot.len());
    format!("{}{suffix}", &slot[..keep])
}

#[cfg(test)]
mod tests {
    use super::snapshot_slot_name;

    #[test]
    fn snapshot_slot_names_fit_postgres() {
        assert_eq!(snapshot_slot_name("pgsieve", 42), "pgsieve_snap_42");
        let long = "s".repeat(63);
        assert_eq!(snapshot_slot_name(&long, 4_000_000).len(), 63);
    }
}
