//! Session start: where each follower stands against the slot, and bringing
//! every attached follower to a position the stream can continue from
//! (ARCHITECTURE.md, "Session start and gaps").
//!
//! One leader snapshot tied to a stream position `C` serves every follower:
//! the slot's own exported snapshot when the slot is (re)created, else a
//! temporary slot's. The model is built in it (never from a follower), then
//! each follower is, by its footing:
//!
//! - **fresh** (no origin): copied in full at `C` (initial copy);
//! - **behind a gap** (origin behind the slot's confirmed position, slot
//!   missing or invalidated): diff-resynced to `C` — only differences
//!   written, no table emptied, origin moved to `C` in the same follower
//!   transaction — or, with `on_gap = "stop"`, refused with one line;
//! - **resuming**: its `secrets` reconciled with the model; the stream
//!   replays from its origin, and transactions before `C` are decided by the
//!   model without feeding it again (`crate::filter`).

use std::fmt;
use std::sync::Arc;

use pgsieve_filters::{Model, ReplicaSetSpec};
use pgsieve_protocol::Lsn;
use tokio_postgres::Client;

use super::{FollowerSession, RunError};
use crate::bootstrap::{LeaderSnapshot, model_from_tables, snapshot_slot_name};
use crate::config::{Config, OnGap};
use crate::copy::{CopyError, PublishedTable, copy_tables, published_tables};
use crate::diff::{DiffSpec, Mode, Reporter, diff_follower};
use crate::reconcile::reconcile_follower;
use crate::source::{ReplicationConnection, SlotInfo, SnapshotAction, SourceConfig};

/// Why the slot no longer holds what a follower needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// The follower's origin is behind the slot's confirmed position: it was
    /// restored from a backup, or left a hub and came back.
    OriginBehindSlot {
        /// The follower's origin.
        origin: Lsn,
        /// The slot's confirmed flush position.
        confirmed: Lsn,
    },
    /// The slot does not exist (dropped, or a promoted standby: PostgreSQL 15
    /// does not carry logical slots over a failover).
    SlotMissing,
    /// The slot lost WAL it needed (`max_slot_wal_keep_size`).
    SlotLost,
}

impl Gap {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Gap::OriginBehindSlot { .. } => "origin_behind_slot",
            Gap::SlotMissing => "slot_missing",
            Gap::SlotLost => "slot_lost",
        }
    }
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gap::OriginBehindSlot { origin, confirmed } => write!(
                f,
                "its origin {origin} is behind the slot's confirmed position {confirmed} \
                 (restored from a backup, or removed from the hub and added back)"
            ),
            Gap::SlotMissing => write!(
                f,
                "the slot is missing (dropped, or the leader failed over to a standby)"
            ),
            Gap::SlotLost => write!(
                f,
                "the slot lost WAL the follower needs (wal_status = lost)"
            ),
        }
    }
}

/// Where one follower stands at session start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Footing {
    /// No origin yet: initial copy.
    Fresh,
    /// The stream cannot continue from its origin.
    Behind(Gap),
    /// The stream continues from its origin.
    Resume,
}

/// The footing of a follower whose origin is `origin`, given the slot.
pub fn footing(origin: Lsn, slot: Option<&SlotInfo>) -> Footing {
    if origin.is_zero() {
        return Footing::Fresh;
    }
    match slot {
        None => Footing::Behind(Gap::SlotMissing),
        Some(s) if !s.is_usable() => Footing::Behind(Gap::SlotLost),
        Some(s) if origin < s.confirmed_flush_lsn => Footing::Behind(Gap::OriginBehindSlot {
            origin,
            confirmed: s.confirmed_flush_lsn,
        }),
        Some(_) => Footing::Resume,
    }
}

/// What the stream starts with.
pub struct Start {
    /// The model at the snapshot.
    pub model: Model,
    /// Where the stream starts (the attached follower furthest behind).
    pub start_lsn: Lsn,
    /// The snapshot's position: transactions before it are in the model.
    pub model_at: Lsn,
}

/// Brings every attached follower to a position the stream continues from
/// (see the module docs); sets each one's `origin_lsn`.
pub(crate) async fn prepare(
    config: &Config,
    leader: &Arc<Client>,
    repl: &mut ReplicationConnection,
    followers: &mut [FollowerSession],
    specs: Vec<ReplicaSetSpec>,
) -> Result<Start, RunError> {
    let slot_info = repl.slot_info(&config.leader.slot).await?;
    let footings: Vec<Footing> = followers
        .iter()
        .map(|f| match f.client {
            Some(_) => footing(f.origin_lsn, slot_info.as_ref()),
            // Detached: it holds its own progress and is placed on rejoin.
            None => Footing::Resume,
        })
        .collect();
    if config.apply.on_gap == OnGap::Stop {
        for (f, footing) in followers.iter().zip(&footings) {
            if let Footing::Behind(gap) = footing {
                return Err(RunError::Gap {
                    follower: f.name.clone(),
                    gap: gap.clone(),
                });
            }
        }
    }
    let snapshot = open_snapshot(config, leader, repl, slot_info.as_ref()).await?;
    let at = snapshot.at();
    let model = model_from_tables(snapshot.client(), specs).await?;
    log_model(&model, at);
    let tables = if footings.iter().any(|f| *f != Footing::Resume) {
        tables_to_copy(&snapshot, &config.leader.publication).await?
    } else {
        Vec::new()
    };
    let place = Placement {
        snapshot: &snapshot,
        tables: &tables,
        model: &model,
        at,
    };
    for (f, footing) in followers.iter_mut().zip(&footings) {
        place.follower(f, footing).await?;
    }
    snapshot.finish().await?;
    let start_lsn = followers
        .iter()
        .filter(|f| f.client.is_some())
        .map(|f| f.origin_lsn)
        .min()
        .ok_or_else(|| RunError::Setup("no follower".into()))?;
    Ok(Start {
        model,
        start_lsn,
        model_at: at,
    })
}

/// The session's leader snapshot: the slot's own exported one when the
/// slot is missing or lost (and so recreated), else a temporary slot's.
async fn open_snapshot(
    config: &Config,
    leader: &Arc<Client>,
    repl: &mut ReplicationConnection,
    slot_info: Option<&SlotInfo>,
) -> Result<LeaderSnapshot, RunError> {
    let slot = config.leader.slot.as_str();
    if slot_info.is_some_and(SlotInfo::is_usable) {
        return Ok(LeaderSnapshot::temporary(
            &SourceConfig::for_leader(config),
            &snapshot_slot_name(slot, std::process::id()),
            leader.clone(),
        )
        .await?);
    }
    if slot_info.is_some() {
        tracing::warn!(%slot, "The slot lost WAL it needs: recreating it.");
        repl.drop_slot(slot).await?;
    }
    let created = repl
        .create_slot(slot, false, SnapshotAction::Export)
        .await?;
    tracing::info!(%slot, consistent_point = %created.consistent_point, "Created the replication slot.");
    Ok(LeaderSnapshot::import(&created, leader.clone()).await?)
}

/// The published tables, for a copy or a diff resync.
async fn tables_to_copy(
    snapshot: &LeaderSnapshot,
    publication: &str,
) -> Result<Vec<PublishedTable>, RunError> {
    let tables = published_tables(snapshot.client(), publication)
        .await
        .map_err(|source| RunError::Sql {
            what: "listing published tables".into(),
            source,
        })?;
    if tables.is_empty() {
        return Err(CopyError::EmptyPublication(publication.to_owned()).into());
    }
    Ok(tables)
}

/// What every follower is placed with: the snapshot at `at` and the model
/// built in it.
struct Placement<'a> {
    snapshot: &'a LeaderSnapshot,
    tables: &'a [PublishedTable],
    model: &'a Model,
    at: Lsn,
}

impl Placement<'_> {
    /// Copies, resyncs or reconciles `f` by its footing.
    async fn follower(&self, f: &mut FollowerSession, footing: &Footing) -> Result<(), RunError> {
        let Some(client) = f.client.clone() else {
            return Ok(());
        };
        let (leader, at) = (self.snapshot.client(), self.at);
        match footing {
            Footing::Fresh => {
                let report = copy_tables(
                    leader,
                    &client,
                    &f.name,
                    self.tables,
                    self.model,
                    f.set_bit,
                    at,
                )
                .await?;
                tracing::info!(follower = %f.name, tables = report.tables.len(), secrets_dropped = report.secrets_dropped, consistent_point = %at, "Initial copy committed.");
                f.origin_lsn = at;
            }
            Footing::Behind(gap) => {
                tracing::warn!(follower = %f.name, %gap, "Not streaming across a gap: resynchronizing the follower online.");
                let mut spec = DiffSpec::new(
                    &f.name,
                    self.tables,
                    self.model,
                    f.set_bit,
                    Mode::Apply { target: at },
                );
                spec.reason = gap.label();
                let mut reporter = Reporter::new(&f.name, "resyncing");
                let report = diff_follower(leader, &client, &spec, &mut |p| reporter.update(p))
                    .await
                    .map_err(|e| RunError::Resync {
                        follower: f.name.clone(),
                        source: Box::new(e),
                    })?;
                tracing::info!(follower = %f.name, rows_changed = report.rows_changed(), origin = %at, "Follower resynchronized.");
                crate::metrics::followers::record(&f.name).resynced(format!(
                    "diff resync ({gap}): {} rows changed, origin {at}",
                    report.rows_changed()
                ));
                f.origin_lsn = at;
            }
            Footing::Resume => {
                let report =
                    reconcile_follower(leader, &client, &f.name, self.model, f.set_bit).await?;
                if report.backfilled_rows > 0 {
                    // Rows copied as of `at`: the replay up to `at` may insert
                    // them again. Only then are the window's inserts upserts
                    // (a backlog catch-up keeps its plain inserts and COPY).
                    f.upsert_until = at;
                }
                if report.purged + report.backfilled_rows > 0 {
                    crate::metrics::followers::record(&f.name).resynced(format!(
                        "reconcile at start: {} resources purged, {} secrets rows backfilled",
                        report.purged, report.backfilled_rows
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Logs, per replica set, how many resources the model puts in it and a
/// digest of their sorted ids (FNV-1a over `id\n`…): operators see what a
/// start decided, and tests compare it with the leader's own answer.
fn log_model(model: &Model, at: Lsn) {
    tracing::info!(model_at = %at, approx_heap_mib = model.approx_heap_bytes() >> 20, "Model size.");
    for (bit, spec) in model.sets().iter().enumerate() {
        let mut ids: Vec<&str> = model.resources_in(bit).collect();
        ids.sort_unstable();
        ids.dedup();
        tracing::info!(model_at = %at, set = %spec.name, resources = ids.len(), digest = %format!("{:016x}", ids_digest(&ids)), "Model built from the leader.");
    }
}

/// FNV-1a (64 bit) over each id followed by a newline.
pub fn ids_digest(ids: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for &b in id.as_bytes().iter().chain(b"\n") {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(confirmed: u64, wal_status: &str) -> SlotInfo {
        SlotInfo {
            plugin: "pgoutput".into(),
            confirmed_flush_lsn: Lsn(confirmed),
            active: false,
            database: "conjur".into(),
            wal_status: wal_status.into(),
        }
    }

    #[test]
    fn footings() {
        let ok = slot(100, "reserved");
        assert_eq!(footing(Lsn::ZERO, Some(&ok)), Footing::Fresh);
        assert_eq!(footing(Lsn::ZERO, None), Footing::Fresh);
        assert_eq!(footing(Lsn(100), Some(&ok)), Footing::Resume);
        assert_eq!(footing(Lsn(150), Some(&ok)), Footing::Resume);
        assert_eq!(
            footing(Lsn(99), Some(&ok)),
            Footing::Behind(Gap::OriginBehindSlot {
                origin: Lsn(99),
                confirmed: Lsn(100)
            })
        );
        assert_eq!(footing(Lsn(150), None), Footing::Behind(Gap::SlotMissing));
        assert_eq!(
            footing(Lsn(150), Some(&slot(100, "lost"))),
            Footing::Behind(Gap::SlotLost)
        );
    }
}
