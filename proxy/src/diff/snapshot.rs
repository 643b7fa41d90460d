/*!
A leader session at a snapshot tied to a stream position: a TEMPORARY
logical slot is created with an exported snapshot, an ordinary session
imports it (`REPEATABLE READ READ ONLY`), the model and the published tables
are read in it, and the slot is dropped (closing its connection) once the
snapshot is imported. Every transaction committed before the slot's
consistent point is in the snapshot and none after it, so a follower made
equal to this snapshot may stream from that point.
*/

use std::sync::Arc;

use pgsieve_filters::Model;
use pgsieve_protocol::Lsn;
use tokio_postgres::Client;

use crate::bootstrap::{BootstrapError, model_from_tables};
use crate::config::Config;
use crate::conn::{ConnectError, connect_sql};
use crate::copy::{PublishedTable, published_tables};
use crate::source::SourceConfig;
use crate::source::SourceError;

/// Why the leader snapshot could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The replication connection or the slot failed.
    #[error("leader (temporary slot): {0}")]
    Source(#[from] SourceError),
    /// The SQL session could not be opened.
    #[error(transparent)]
    Connect(Box<ConnectError>),
    /// A statement failed.
    #[error("leader: {what}: {source}")]
    Sql {
        /// The step.
        what: &'static str,
        /// The database error.
        source: tokio_postgres::Error,
    },
    /// The model could not be built.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The slot came without a snapshot, or the publication is empty.
    #[error("{0}")]
    Setup(String),
}

/// An open leader session at a slot's snapshot.
pub struct LeaderSnapshot {
    /// The session, inside the snapshot's transaction.
    pub leader: Arc<Client>,
    /// The slot's consistent point: the snapshot's stream position.
    pub consistent_point: Lsn,
    /// The model at the snapshot (every follower's replica set).
    pub model: Model,
    /// The publication's tables at the snapshot.
    pub tables: Vec<PublishedTable>,
}

impl LeaderSnapshot {
    /// Opens a snapshot of `config`'s leader; `purpose` names the temporary
    /// slot (`pgsieve_<purpose>_<pid>`).
    pub async fn open(config: &Config, purpose: &str) -> Result<LeaderSnapshot, SnapshotError> {
        let mut source = SourceConfig::for_leader(config);
        source.application_name = format!("pgsieve-{purpose}");
        let leader = connect_sql(&config.leader.pg, "the leader")
            .await
            .map_err(|e| SnapshotError::Connect(Box::new(e)))?;
        let slot = format!("pgsieve_{purpose}_{}", std::process::id());
        let snapshot = crate::bootstrap::LeaderSnapshot::temporary(&source, &slot, leader.clone())
            .await
            .map_err(|e| match e {
                crate::bootstrap::SnapshotError::Source(e) => SnapshotError::Source(e),
                crate::bootstrap::SnapshotError::Sql(source) => SnapshotError::Sql {
                    what: "importing the temporary slot's snapshot",
                    source,
                },
                other => SnapshotError::Setup(other.to_string()),
            })?;
        let consistent_point = snapshot.at();
        let model = model_from_tables(&leader, config.replica_sets().0).await?;
        let tables = published_tables(&leader, &config.leader.publication)
            .await
            .map_err(|source| SnapshotError::Sql {
                what: "listing published tables",
                source,
            })?;
        if tables.is_empty() {
            return Err(SnapshotError::Setup(format!(
                "publication {:?} lists no tables on the leader (run `pgsieve setup`)",
                config.leader.publication
            )));
        }
        Ok(LeaderSnapshot {
            leader,
            consistent_point,
            model,
            tables,
        })
    }

    /// Whether slot `slot` is in use by a walsender now (a `run` streaming
    /// from it).
    pub async fn slot_active(&self, slot: &str) -> Result<bool, SnapshotError> {
        let row = self
            .leader
            .query_one(
                "SELECT coalesce((SELECT active FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = $1), false)",
                &[&slot],
            )
            .await
            .map_err(|source| SnapshotError::Sql {
                what: "reading the slot's state",
                source,
            })?;
        Ok(row.get(0))
    }

    /// Ends the snapshot's transaction.
    pub async fn close(self) -> Result<(), SnapshotError> {
        self.leader
            .batch_execute("COMMIT")
            .await
            .map_err(|source| SnapshotError::Sql {
                what: "ending the snapshot transaction",
                source,
            })
    }
}
