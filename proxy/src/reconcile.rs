//! Session-start reconcile: before its first streamed change, bring one
//! follower's `secrets` to exactly its replica set's projection under the
//! leader's model at a known snapshot (`crate::bootstrap::LeaderSnapshot`).
//!
//! - Every resource the follower holds secrets of that is outside its set by
//!   the leader's model is purged (a revoke it missed, a configuration change
//!   of `replica_set`, `account`, `privilege` or `always`, rows planted on it).
//! - Every resource in its set whose secrets it lacks is backfilled from the
//!   leader, in the same snapshot as the model (chunked: a few hundred
//!   resources' rows in memory at a time).
//! - Every resource in its set it holds *incompletely* is backfilled too
//!   (missing rows only: the insert does nothing on a key it holds). A
//!   follower can hold an in-set variable without some of its versions: a
//!   grant's copy that found the variable revoked again on the leader copies
//!   nothing, later versions stream in, and a restart before the next grant
//!   replays that grant inside the window, where it has no effect (ARCHITECTURE.md,
//!   "Session start and gaps"). Versions newer than the newest it holds are
//!   the stream's to bring; so a resource is incomplete when the leader has
//!   more versions up to the follower's newest than the follower holds.
//!
//! Cost: one pass over the resource ids the follower holds (a cursor in byte
//! order, merged with the model's sorted in-set ids) plus work proportional
//! to what differs. The follower's rows are only ever *removed* on its word;
//! what is sent to it is decided by the leader's model alone, so a follower
//! lying about what it holds can only deprive itself.
//!
//! Everything happens in one follower transaction, without moving its
//! origin: the stream then replays from the origin, and its rows of
//! transactions the snapshot already holds are applied as upserts
//! (`SinkSpec::upsert_until`).

use std::time::Instant;

use futures_util::future::try_join_all;
use pgsieve_filters::Model;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::conjur::SECRETS_QUALIFIED;
use crate::sink::secrets::{BACKFILL_CHUNK_IDS, SecretsTable};
use crate::sink::value::WireValue;

/// Held resource ids fetched from the follower per round trip.
const HELD_FETCH: usize = 2000;

/// What one reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Distinct resources the follower held secrets of.
    pub held: u64,
    /// Resources purged (outside the set).
    pub purged: u64,
    /// Secrets rows those purges deleted.
    pub purged_rows: u64,
    /// Resources in the set the follower lacked, asked of the leader.
    pub backfilled: u64,
    /// Secrets rows copied for them.
    pub backfilled_rows: u64,
    /// Of the backfilled resources, those the follower held incompletely.
    pub repaired: u64,
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
#[error("reconciling follower {follower}'s secrets with the leader's model ({step}): {source}")]
pub struct ReconcileError {
    /// The follower.
    pub follower: String,
    /// What was being done.
    pub step: &'static str,
    /// The database error.
    pub source: tokio_postgres::Error,
}

/// Reconciles `follower` (an apply session, idle) against `model`'s set
/// `set_bit` (`None`: a follower that holds every secret, so nothing is
/// purged), reading backfills through `leader` (inside the model's
/// snapshot). Commits on the follower; the origin is not moved.
pub async fn reconcile_follower(
    leader: &Client,
    follower: &Client,
    name: &str,
    model: &Model,
    set_bit: Option<usize>,
) -> Result<ReconcileReport, ReconcileError> {
    let started = Instant::now();
    let table = SecretsTable::prepare(follower)
        .await
        .map_err(|e| failed(name, "preparing statements", e))?;
    let select = format!(
        "SELECT {} FROM {SECRETS_QUALIFIED} s WHERE s.resource_id = ANY($1::text[])",
        table.leader_select_list()
    );
    let select = leader
        .prepare(&select)
        .await
        .map_err(|e| failed(name, "preparing the leader query", e))?;
    let incomplete = leader
        .prepare(&incomplete_sql())
        .await
        .map_err(|e| failed(name, "preparing the leader query", e))?;

    let mut in_set: Vec<&str> = match set_bit {
        Some(bit) => model.resources_in(bit).collect(),
        None => model.resources().collect(),
    };
    in_set.sort_unstable();
    in_set.dedup();

    follower
        .batch_execute(&format!(
            "BEGIN; DECLARE pgsieve_held NO SCROLL CURSOR FOR \
             SELECT resource_id COLLATE \"C\", max(version)::int8, count(*) \
             FROM {SECRETS_QUALIFIED} GROUP BY 1 ORDER BY 1"
        ))
        .await
        .map_err(|e| failed(name, "reading what the follower holds", e))?;
    let mut report = ReconcileReport::default();
    // Index of the next in-set id not yet met among the held ones (an
    // index, not a held iterator: borrowed iterators across awaits defeat
    // the compiler's `Send` proof).
    let mut next = 0usize;
    let mut missing: Vec<String> = Vec::new();
    loop {
        let rows = follower
            .query(&format!("FETCH {HELD_FETCH} FROM pgsieve_held"), &[])
            .await
            .map_err(|e| failed(name, "reading what the follower holds", e))?;
        let done = rows.len() < HELD_FETCH;
        let mut purge: Vec<String> = Vec::new();
        let mut kept = HeldVersions::default();
        for row in &rows {
            let held: &str = row.get(0);
            report.held += 1;
            // In-set ids below this held one are missing on the follower.
            while let Some(&w) = in_set.get(next) {
                if w.as_bytes() < held.as_bytes() {
                    missing.push(w.to_owned());
                    next += 1;
                } else {
                    break;
                }
            }
            if in_set.get(next) == Some(&held) {
                next += 1;
            }
            if set_bit.is_some_and(|bit| !model.decide(held.as_bytes()).contains(bit)) {
                purge.push(held.to_owned());
            } else {
                kept.push(held, row.get(1), row.get(2));
            }
        }
        let repair = kept
            .incomplete(leader, &incomplete)
            .await
            .map_err(|e| failed(name, "comparing versions with the leader", e))?;
        report.repaired += repair.len() as u64;
        missing.extend(repair);
        if !purge.is_empty() {
            report.purged += purge.len() as u64;
            report.purged_rows += follower
                .execute(&table.delete, &[&purge])
                .await
                .map_err(|e| failed(name, "purging secrets outside the set", e))?;
        }
        if missing.len() >= BACKFILL_CHUNK_IDS {
            backfill(leader, follower, &select, &table, &missing, &mut report)
                .await
                .map_err(|e| failed(name, "backfilling secrets of the set", e))?;
            missing.clear();
        }
        if done {
            break;
        }
    }
    // In-set ids after the last held one are missing too; so is whatever
    // the loop above collected below a full chunk.
    let rest = in_set.get(next..).unwrap_or_default();
    for id in rest {
        missing.push((*id).to_owned());
        if missing.len() >= BACKFILL_CHUNK_IDS {
            backfill(leader, follower, &select, &table, &missing, &mut report)
                .await
                .map_err(|e| failed(name, "backfilling secrets of the set", e))?;
            missing.clear();
        }
    }
    backfill(leader, follower, &select, &table, &missing, &mut report)
        .await
        .map_err(|e| failed(name, "backfilling secrets of the set", e))?;
    follower
        .batch_execute("CLOSE pgsieve_held; COMMIT")
        .await
        .map_err(|e| failed(name, "committing", e))?;
    crate::metrics::count_reconcile(name, report.purged, report.backfilled_rows);
    tracing::info!(
        follower = name,
        held = report.held,
        purged = report.purged,
        purged_rows = report.purged_rows,
        backfilled = report.backfilled,
        backfilled_rows = report.backfilled_rows,
        repaired = report.repaired,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Follower's secrets reconciled with the leader's model."
    );
    Ok(report)
}

/// Of the resource ids `$1`, with the follower's newest version `$2` and its
/// count of versions `$3`: those the leader holds more versions of up to
/// that newest one.
fn incomplete_sql() -> String {
    format!(
        "SELECT f.id \
         FROM unnest($1::text[], $2::int8[], $3::int8[]) AS f(id, newest, held) \
         JOIN {SECRETS_QUALIFIED} s ON s.resource_id = f.id AND s.version <= f.newest \
         GROUP BY f.id, f.held HAVING count(*) > f.held"
    )
}

/// The in-set resources of one fetch the follower holds: newest version and
/// how many versions.
#[derive(Default)]
struct HeldVersions {
    ids: Vec<String>,
    newest: Vec<i64>,
    count: Vec<i64>,
}

impl HeldVersions {
    fn push(&mut self, id: &str, newest: i64, count: i64) {
        self.ids.push(id.to_owned());
        self.newest.push(newest);
        self.count.push(count);
    }

    /// The ids the follower holds incompletely (one leader query per fetch).
    async fn incomplete(
        &self,
        leader: &Client,
        incomplete: &tokio_postgres::Statement,
    ) -> Result<Vec<String>, tokio_postgres::Error> {
        if self.ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = leader
            .query(incomplete, &[&self.ids, &self.newest, &self.count])
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}

fn failed(follower: &str, step: &'static str, source: tokio_postgres::Error) -> ReconcileError {
    ReconcileError {
        follower: follower.to_owned(),
        step,
        source,
    }
}

/// Copies the leader's rows of `ids` (all in the set by the model, and read
/// in the model's snapshot) into the follower, pipelined.
async fn backfill(
    leader: &Client,
    follower: &Client,
    select: &tokio_postgres::Statement,
    table: &SecretsTable,
    ids: &[String],
    report: &mut ReconcileReport,
) -> Result<(), tokio_postgres::Error> {
    for ids in ids.chunks(BACKFILL_CHUNK_IDS) {
        report.backfilled += ids.len() as u64;
        let rows = leader.query(select, &[&ids]).await?;
        report.backfilled_rows += rows.len() as u64;
        let params: Vec<Vec<WireValue>> = rows.iter().map(SecretsTable::insert_params).collect();
        let refs: Vec<Vec<&(dyn ToSql + Sync)>> = params
            .iter()
            .map(|p| p.iter().map(|v| v as &(dyn ToSql + Sync)).collect())
            .collect();
        try_join_all(refs.iter().map(|r| follower.execute(&table.insert, r))).await?;
    }
    Ok(())
}
