/*!
Online diff resync: brings a follower to the leader's state at one snapshot
by comparing every published table in key order and writing only the
differences (DESIGN.md "Gaps"); read-only, the same comparison is
`pgsieve verify`.

# Brief overview

- [`diff_follower`] compares (and, in [`Mode::Apply`], writes) one follower
  against a leader session that is inside a snapshot. [`resync_follower`]
  and [`verify_follower`] are its two modes.
- [`snapshot::LeaderSnapshot`] opens such a session from a temporary slot's
  exported snapshot, with the model built in it: the stream position the
  resync's origin moves to.
- [`plan`] builds the SQL of one table, [`compare`] merges the two
  key-ordered streams chunk by chunk, [`apply`] writes a batch of
  differences, [`progress`] reports counts and metrics.

# What the caller sets up

- `leader`: inside `BEGIN ISOLATION LEVEL REPEATABLE READ [READ ONLY]; SET
  TRANSACTION SNAPSHOT '…'` (the snapshot the model was built in and the
  `target` LSN belongs to). The engine adds `SET LOCAL` output settings and
  declares cursors in that transaction; the caller ends it. One diff at a
  time per leader session (fixed cursor names): to resync several followers
  at once, import the same exported snapshot into one session each. Nothing
  else may use the session meanwhile (its statements would run in the
  snapshot).
- `follower`, to apply: an apply session ([`crate::sink::origin::setup_apply_session`]:
  `session_replication_role = replica`, the origin bound), no transaction
  open. The engine opens ONE transaction, writes the differences, moves the
  origin to `target` with its last statement and commits: readers never see
  half a resync, no table is emptied, and a crash leaves the follower as it
  was. To verify: any session, no transaction open (the engine reads in one
  `REPEATABLE READ READ ONLY` transaction).

Memory is bounded by `chunk_rows` per side and per batch of differences,
whatever the table sizes; the follower's own rows decide nothing (the
replica set comes from the leader's model).
*/

pub mod apply;
pub mod compare;
pub mod plan;
pub mod progress;
pub mod snapshot;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pgsieve_filters::Model;
use pgsieve_protocol::{Lsn, PgTimestamp};
use tokio_postgres::Client;

use self::apply::{WriteError, Writer};
use self::compare::{Batch, DiffKind, Difference, Key, Merge, MergeError, RowSource, Side};
use self::plan::TablePlan;
use self::progress::TableProgress;
use crate::copy::PublishedTable;
use crate::metrics::resyncs::record_resync;
use crate::sink::catalog::{SchemaMismatch, check_columns, table_columns};
use crate::sink::origin::{FORCE_XID_SQL, XACT_SETUP_SQL};

pub use self::progress::Reporter;

/// Rows fetched per cursor round trip and differences written per batch.
pub const DEFAULT_CHUNK_ROWS: usize = 5_000;

/// Differences kept per table in a report (re-checks and samples); the
/// counts are always complete.
pub const DEFAULT_MAX_RECORDED: usize = 10_000;

/// Output settings both sides read with, so `::text` of dates, intervals,
/// floats and bytea is the same text on both servers.
const TEXT_SETTINGS: &str = "SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres'; \
     SET LOCAL TimeZone = 'UTC'; SET LOCAL extra_float_digits = 3; SET LOCAL bytea_output = 'hex'; \
     SET LOCAL work_mem = '64MB'";

/// Whether differences are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read only: count and record differences.
    VerifyOnly,
    /// Write the differences and move the origin to `target` in the same
    /// follower transaction.
    Apply {
        /// The stream position of the leader's snapshot (a slot's
        /// consistent point).
        target: Lsn,
    },
}

/// What to compare and how.
#[derive(Debug, Clone)]
pub struct DiffSpec<'a> {
    /// Follower name (errors, logs, metric label).
    pub follower: &'a str,
    /// Why (metric label of `pgsieve_resyncs_total`: `gap`, `forced`, …;
    /// [`DiffSpec::new`] sets `forced`).
    pub reason: &'a str,
    /// Published tables, as read at the snapshot.
    pub tables: &'a [PublishedTable],
    /// The model at the snapshot.
    pub model: &'a Model,
    /// The follower's bit in `model` (`None`: every secret).
    pub set_bit: Option<usize>,
    /// Verify or apply.
    pub mode: Mode,
    /// Rows per fetch and differences per written batch.
    pub chunk_rows: usize,
    /// Differences recorded per table in the report.
    pub max_recorded: usize,
    /// Only these keys, by quoted table name (a re-check); tables not
    /// listed are skipped. `None`: every row of every table.
    pub keys: Option<&'a BTreeMap<String, Vec<Key>>>,
}

impl<'a> DiffSpec<'a> {
    /// A whole-table comparison with default sizes.
    pub fn new(
        follower: &'a str,
        tables: &'a [PublishedTable],
        model: &'a Model,
        set_bit: Option<usize>,
        mode: Mode,
    ) -> Self {
        DiffSpec {
            follower,
            reason: "forced",
            tables,
            model,
            set_bit,
            mode,
            chunk_rows: DEFAULT_CHUNK_ROWS,
            max_recorded: DEFAULT_MAX_RECORDED,
            keys: None,
        }
    }
}

/// One table's result.
#[derive(Debug, Clone)]
pub struct TableReport {
    /// Final counts.
    pub progress: TableProgress,
    /// The first differences (up to `max_recorded`), in key order.
    pub differences: Vec<Difference>,
    /// Whether more differences exist than were recorded.
    pub truncated: bool,
}

/// The result of a diff.
#[derive(Debug, Clone)]
pub struct DiffReport {
    /// Per table, in the order compared.
    pub tables: Vec<TableReport>,
    /// Where the origin was moved (apply mode).
    pub target: Option<Lsn>,
    /// Wall time, first statement to commit.
    pub elapsed: Duration,
}

impl DiffReport {
    /// Whether the follower equals the leader's projection.
    pub fn is_equal(&self) -> bool {
        self.tables.iter().all(|t| !t.progress.differs())
    }

    /// Follower rows written.
    pub fn rows_changed(&self) -> u64 {
        self.tables.iter().map(|t| t.progress.changed).sum()
    }

    /// Follower `secrets` rows outside the set: (table, key) of each recorded one.
    pub fn out_of_set(&self) -> impl Iterator<Item = (&str, &Key)> {
        self.tables.iter().flat_map(|t| {
            t.differences
                .iter()
                .filter(|d| d.out_of_set)
                .map(move |d| (t.progress.table.as_str(), &d.key))
        })
    }

    /// The recorded differing keys by table: what a re-check reads.
    pub fn differing_keys(&self) -> BTreeMap<String, Vec<Key>> {
        self.tables
            .iter()
            .filter(|t| !t.differences.is_empty())
            .map(|t| {
                let keys = t.differences.iter().map(|d| d.key.clone()).collect();
                (t.progress.table.clone(), keys)
            })
            .collect()
    }

    /// Whether any table has more differences than it recorded.
    pub fn is_truncated(&self) -> bool {
        self.tables.iter().any(|t| t.truncated)
    }
}

/// Why a diff failed. The follower transaction is rolled back: nothing of
/// a failed resync is visible and the origin has not moved.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A statement failed.
    #[error("diff of follower {follower}, table {table}: {side} statement failed: {source}")]
    Sql {
        /// Follower name.
        follower: String,
        /// Table (or step, in parentheses).
        table: String,
        /// Where it ran.
        side: Side,
        /// The database error.
        source: tokio_postgres::Error,
    },
    /// The follower's table cannot hold the leader's rows.
    #[error("diff of follower {follower}: {source}")]
    Schema {
        /// Follower name.
        follower: String,
        /// The mismatch.
        source: Box<SchemaMismatch>,
    },
    /// Something that cannot happen with a correct leader session.
    #[error("diff of follower {follower}, table {table}: {what}")]
    Invariant {
        /// Follower name.
        follower: String,
        /// Table.
        table: String,
        /// What went wrong.
        what: String,
    },
}

impl DiffError {
    /// Whether retrying later may help (a lost connection, a restart).
    pub fn is_transient(&self) -> bool {
        match self {
            DiffError::Sql { source, .. } => crate::conn::is_transient_sql_error(source),
            _ => false,
        }
    }
}

/// Brings `follower` to the leader's state at its snapshot and moves its
/// origin to `target`, in one follower transaction (see the module doc for
/// what the caller sets up). `spec.mode` is ignored; set `spec.reason` for
/// the metric (`gap`, `slot_lost`, `failover`, …).
///
/// ```ignore
/// let mut spec = DiffSpec::new(&name, &tables, &model, set_bit, Mode::VerifyOnly);
/// spec.reason = "gap";
/// let report = diff::resync_follower(&leader, &follower, &spec, consistent_point, &mut |_| {}).await?;
/// ```
pub async fn resync_follower(
    leader: &Client,
    follower: &Client,
    spec: &DiffSpec<'_>,
    target: Lsn,
    progress: &mut (dyn FnMut(&TableProgress) + Send),
) -> Result<DiffReport, DiffError> {
    let spec = DiffSpec {
        mode: Mode::Apply { target },
        ..spec.clone()
    };
    diff_follower(leader, follower, &spec, progress).await
}

/// Compares `follower` with the leader's snapshot, writing nothing.
pub async fn verify_follower(
    leader: &Client,
    follower: &Client,
    spec: &DiffSpec<'_>,
    progress: &mut (dyn FnMut(&TableProgress) + Send),
) -> Result<DiffReport, DiffError> {
    let spec = DiffSpec {
        mode: Mode::VerifyOnly,
        ..spec.clone()
    };
    diff_follower(leader, follower, &spec, progress).await
}

/// Compares every table of `spec` and, in [`Mode::Apply`], writes the
/// differences and moves the origin; `progress` sees each table's counts
/// after every chunk.
pub async fn diff_follower(
    leader: &Client,
    follower: &Client,
    spec: &DiffSpec<'_>,
    progress: &mut (dyn FnMut(&TableProgress) + Send),
) -> Result<DiffReport, DiffError> {
    let started = Instant::now();
    let err = |table: &str, side: Side| sql_error(spec.follower, table, side);
    let begin = match spec.mode {
        Mode::VerifyOnly => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        Mode::Apply { .. } => "BEGIN",
    };
    follower
        .batch_execute(&format!("{begin}; {TEXT_SETTINGS}"))
        .await
        .map_err(err("(begin)", Side::Follower))?;
    let outcome = async {
        leader
            .batch_execute(TEXT_SETTINGS)
            .await
            .map_err(err("(settings)", Side::Leader))?;
        let mut tables = Vec::with_capacity(spec.tables.len());
        for table in spec.tables {
            if let Some(report) = diff_table(leader, follower, spec, table, progress).await? {
                tables.push(report);
            }
        }
        Ok::<_, DiffError>(tables)
    }
    .await;
    let tables = match outcome {
        Ok(tables) => tables,
        Err(e) => {
            // Best effort: a broken connection rolls back by itself.
            let _ = follower.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    };
    let target = match spec.mode {
        Mode::VerifyOnly => {
            follower
                .batch_execute("COMMIT")
                .await
                .map_err(err("(commit)", Side::Follower))?;
            None
        }
        Mode::Apply { target } => {
            // Progress sticks only for a transaction with an xid (one that
            // wrote nothing has none).
            let moved = async {
                follower.execute(FORCE_XID_SQL, &[]).await?;
                let now = PgTimestamp::now().0;
                follower
                    .execute(XACT_SETUP_SQL, &[&target.to_string(), &now])
                    .await?;
                follower.batch_execute("COMMIT").await
            }
            .await;
            if let Err(e) = moved {
                let _ = follower.batch_execute("ROLLBACK").await;
                return Err(err("(origin)", Side::Follower)(e));
            }
            Some(target)
        }
    };
    let report = DiffReport {
        tables,
        target,
        elapsed: started.elapsed(),
    };
    if let Some(target) = target {
        record_resync(
            spec.follower,
            spec.reason,
            report.rows_changed(),
            report.elapsed,
        );
        tracing::info!(
            follower = spec.follower,
            reason = spec.reason,
            %target,
            rows_changed = report.rows_changed(),
            elapsed_ms = report.elapsed.as_millis() as u64,
            "Diff resync committed."
        );
    }
    Ok(report)
}

/// Cursor names (one table at a time per session).
const LEADER_CURSOR: &str = "pgsieve_diff_leader";
const FOLLOWER_CURSOR: &str = "pgsieve_diff_follower";

/// Compares (and with [`Mode::Apply`], repairs) one table, chunk by chunk, reporting
/// progress after each; `None` when `spec.keys` names none of its rows.
async fn diff_table(
    leader: &Client,
    follower: &Client,
    spec: &DiffSpec<'_>,
    table: &PublishedTable,
    progress: &mut (dyn FnMut(&TableProgress) + Send),
) -> Result<Option<TableReport>, DiffError> {
    let qualified = table.qualified();
    let err = |side: Side| sql_error(spec.follower, &qualified, side);
    let keys = match spec.keys {
        None => None,
        Some(map) => match map.get(&qualified) {
            Some(keys) => Some(keys.as_slice()),
            None => return Ok(None),
        },
    };
    let plan = plan_table(leader, follower, spec, table, &qualified).await?;
    let (leader_rows, follower_rows) =
        row_sources(leader, follower, spec, &plan, keys, &qualified).await?;
    let writer = match spec.mode {
        Mode::VerifyOnly => None,
        Mode::Apply { .. } => Some(
            Writer::prepare(&plan, leader, follower)
                .await
                .map_err(|e| write_error(spec, &qualified, e))?,
        ),
    };
    let mut merge = Merge::new(&plan, leader_rows, follower_rows, spec.model, spec.set_bit);
    let table_started = Instant::now();
    let mut counts = TableProgress {
        table: qualified.clone(),
        ..TableProgress::default()
    };
    let mut recorded = Vec::new();
    let mut truncated = false;
    let chunk = spec.chunk_rows.max(1);
    while let Some(batch) = merge
        .next_batch(chunk as u64, chunk)
        .await
        .map_err(|e| match e {
            MergeError::Sql(side, e) => err(side)(e),
            MergeError::OutOfOrder(side) => DiffError::Invariant {
                follower: spec.follower.to_owned(),
                table: qualified.clone(),
                what: format!(
                    "the {side} returned rows out of byte order (COLLATE \"C\" not honoured?): comparison stopped"
                ),
            },
        })?
    {
        tally(&mut counts, &batch);
        if let Some(writer) = &writer
            && !batch.differences.is_empty()
        {
            counts.changed += writer
                .write(&batch.differences, spec.model, spec.set_bit)
                .await
                .map_err(|e| write_error(spec, &qualified, e))?;
        }
        let room = spec.max_recorded.saturating_sub(recorded.len());
        truncated |= batch.differences.len() > room;
        recorded.extend(batch.differences.into_iter().take(room));
        counts.elapsed_ms = table_started.elapsed().as_millis() as u64;
        progress(&counts);
    }
    merge.close().await.map_err(|(side, e)| err(side)(e))?;
    counts.done = true;
    counts.elapsed_ms = table_started.elapsed().as_millis() as u64;
    progress(&counts);
    Ok(Some(TableReport {
        progress: counts,
        differences: recorded,
        truncated,
    }))
}

/// The table's comparison plan, from the leader's columns once the follower's are
/// known to match: comparing tables of different shapes would write garbage.
async fn plan_table(
    leader: &Client,
    follower: &Client,
    spec: &DiffSpec<'_>,
    table: &PublishedTable,
    qualified: &str,
) -> Result<TablePlan, DiffError> {
    let err = |side: Side| sql_error(spec.follower, qualified, side);
    let leader_columns = table_columns(leader, qualified)
        .await
        .map_err(err(Side::Leader))?;
    let follower_columns = table_columns(follower, qualified)
        .await
        .map_err(err(Side::Follower))?;
    check_columns(qualified, &leader_columns, &follower_columns).map_err(|source| {
        DiffError::Schema {
            follower: spec.follower.to_owned(),
            source: Box::new(source),
        }
    })?;
    let filtered = table.name == "secrets" && table.schema == "public" && spec.set_bit.is_some();
    let plan = TablePlan::new(table, leader_columns, filtered);
    if filtered && plan.filter_key.is_none() {
        return Err(DiffError::Invariant {
            follower: spec.follower.to_owned(),
            table: qualified.to_owned(),
            what: "resource_id is not part of the primary key: secrets cannot be filtered".into(),
        });
    }
    Ok(plan)
}

/// Both sides' rows in key order: cursors over the whole table, or only `keys`
/// (a re-check of known differences).
async fn row_sources<'c>(
    leader: &'c Client,
    follower: &'c Client,
    spec: &DiffSpec<'_>,
    plan: &TablePlan,
    keys: Option<&[Key]>,
    qualified: &str,
) -> Result<(RowSource<'c>, RowSource<'c>), DiffError> {
    let err = |side: Side| sql_error(spec.follower, qualified, side);
    Ok(match keys {
        None => {
            let sql = plan.scan_sql();
            (
                RowSource::scan(leader, LEADER_CURSOR, &sql, spec.chunk_rows)
                    .await
                    .map_err(err(Side::Leader))?,
                RowSource::scan(follower, FOLLOWER_CURSOR, &sql, spec.chunk_rows)
                    .await
                    .map_err(err(Side::Follower))?,
            )
        }
        Some(keys) => (
            RowSource::lookup(leader, plan, keys)
                .await
                .map_err(err(Side::Leader))?,
            RowSource::lookup(follower, plan, keys)
                .await
                .map_err(err(Side::Follower))?,
        ),
    })
}

/// Adds one merge step's findings to the table's running counts.
fn tally(counts: &mut TableProgress, batch: &Batch) {
    counts.compared += batch.compared;
    counts.leader_skipped += batch.leader_skipped;
    for d in &batch.differences {
        match d.kind {
            DiffKind::Missing => counts.missing += 1,
            DiffKind::Different => counts.different += 1,
            DiffKind::Extra => counts.extra += 1,
        }
        if d.out_of_set {
            counts.out_of_set += 1;
        }
    }
}

/// Maps a statement error of `side` to a [`DiffError`] naming follower and table.
fn sql_error(
    follower: &str,
    table: &str,
    side: Side,
) -> impl FnOnce(tokio_postgres::Error) -> DiffError + use<> {
    let follower = follower.to_owned();
    let table = table.to_owned();
    move |source| DiffError::Sql {
        follower,
        table,
        side,
        source,
    }
}

fn write_error(spec: &DiffSpec<'_>, table: &str, e: WriteError) -> DiffError {
    let follower = spec.follower.to_owned();
    let table = table.to_owned();
    match e {
        WriteError::Sql(side, source) => sql_error(&follower, &table, side)(source),
        WriteError::OutOfSet(id) => DiffError::Invariant {
            follower,
            table,
            what: format!("refused to write a row of {id}, outside the follower's replica set"),
        },
        WriteError::Vanished(key) => DiffError::Invariant {
            follower,
            table,
            what: format!(
                "a leader row seen by the comparison is gone ({} key columns): the leader session is not at one snapshot",
                key.len()
            ),
        },
    }
}
