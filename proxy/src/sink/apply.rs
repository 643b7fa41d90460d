//! The follower sink: ordered leader transactions → SQL on one follower.
//!
//! One follower session, bound to the replication origin. Leader
//! transactions are applied whole; consecutive small ones share a follower
//! transaction (group commit, bounded by rows and time), and the group's
//! last commit end LSN is recorded with `pg_replication_origin_xact_setup`
//! inside the same follower transaction. Statements are prepared once per
//! relation and pipelined. Any failure stops apply with one error naming the
//! follower, LSN, table and cause; nothing is skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pgsieve_filters::SetMask;
use pgsieve_protocol::pgoutput::{Column, OldTuple, Relation, Truncate, TupleData};
use pgsieve_protocol::{Lsn, PgTimestamp};
use tokio_postgres::{Client, Statement};

use super::catalog::{SchemaMismatch, match_relation};
use super::copy_in::encode_copy_row;
use super::origin::{FORCE_XID_SQL, XACT_SETUP_SQL};
use super::pipeline::Pipeline;
use super::pipeline::StatementResult;
use super::statements::{TableShape, truncate_sql};
use super::value::WireValue;
use crate::metrics::{FollowerMetrics, TableMetrics};
use crate::txn::{RowChange, RowOp, TxnCommit, TxnEvent};
use futures_util::task::noop_waker_ref;
use std::future::Future;

/// Where an apply failure happened.
#[derive(Debug, Clone)]
pub struct ApplyContext {
    /// Commit LSN of the leader transaction being applied.
    pub commit_lsn: Lsn,
    /// Qualified table name, or the control statement.
    pub table: Arc<str>,
    /// `insert`, `update`, `delete`, `truncate`, `commit`, …
    pub op: &'static str,
}

/// A leader commit older than this means the sink is replaying a backlog:
/// groups then fill up to their time bound ([`Sink::group_hold`]).
const BACKLOG_LAG: Duration = Duration::from_millis(200);

/// Plain inserts into one table that go out as one `COPY` at most (and
/// fewer go out as multi-row INSERTs: a COPY waits for the follower to
/// accept it before its rows can follow).
const COPY_MAX_ROWS: usize = 4096;
const COPY_MIN_ROWS: usize = 64;

/// Statements one follower connection may have unanswered.
const MAX_IN_FLIGHT: usize = 1024;
/// Parameter values those statements may carry in all: bounds the encoded
/// rows waiting in the connection's queue (a few MiB), whatever the
/// statement shapes (ARCHITECTURE.md, "Invariants": bounded memory).
const MAX_VALUES_IN_FLIGHT: usize = 32 * 1024;

/// A failure of the follower sink.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A statement failed on the follower.
    #[error(
        "follower {follower}: {op} on {table} of the leader transaction committed at {commit_lsn} failed: {source}"
    )]
    Statement {
        /// Follower name.
        follower: String,
        /// Leader commit LSN.
        commit_lsn: Lsn,
        /// Table.
        table: Arc<str>,
        /// Operation.
        op: &'static str,
        /// The database error (connection loss included).
        #[source]
        source: tokio_postgres::Error,
    },
    /// The follower's table does not match the leader's relation.
    #[error("follower {follower}: {source}")]
    Schema {
        /// Follower name.
        follower: String,
        /// The mismatch.
        #[source]
        source: SchemaMismatch,
    },
    /// A change refers to a relation the sink was never told about, or has a
    /// shape that cannot be applied.
    #[error("follower {follower}: {what} (leader transaction committed at {commit_lsn})")]
    Invalid {
        /// Follower name.
        follower: String,
        /// Leader commit LSN.
        commit_lsn: Lsn,
        /// What is wrong.
        what: String,
    },
}

impl ApplyError {
    /// The follower that failed (metrics label, status).
    pub fn follower(&self) -> &str {
        match self {
            ApplyError::Statement { follower, .. }
            | ApplyError::Schema { follower, .. }
            | ApplyError::Invalid { follower, .. } => follower,
        }
    }

    /// The leader transaction whose plain INSERT hit a row the follower
    /// already held: it and what follows must be re-applied as upserts.
    pub fn duplicate_key_at(&self) -> Option<Lsn> {
        match self {
            ApplyError::Statement {
                commit_lsn,
                op: "insert",
                source,
                ..
            } if source.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Some(*commit_lsn)
            }
            _ => None,
        }
    }

    /// Whether the follower connection was lost (reconnect and resume from
    /// the origin) rather than a change being unappliable (stop). A
    /// duplicate key of a plain INSERT is transient too: resumed with
    /// upserts, it applies ([`Self::duplicate_key_at`]).
    pub fn is_transient(&self) -> bool {
        if self.duplicate_key_at().is_some() {
            return true;
        }
        self.sql_error()
            .is_some_and(crate::source::is_transient_sql_error)
    }

    /// The follower's database error behind this failure, if there is one.
    fn sql_error(&self) -> Option<&tokio_postgres::Error> {
        match self {
            ApplyError::Statement { source, .. }
            | ApplyError::Schema {
                source: SchemaMismatch::Query { source, .. },
                ..
            } => Some(source),
            _ => None,
        }
    }
}

/// Durable progress of one follower, shared with the feedback task.
#[derive(Debug, Default)]
pub struct Progress {
    committed_end: AtomicU64,
    last_apply_micros: AtomicU64,
    /// Leader commit time (µs since 2000) of the last applied transaction, 0 if none.
    last_commit_time: AtomicI64,
    /// Newest leader commit time (µs since 2000) among the leader
    /// transactions durably committed on the follower (heartbeats
    /// included), 0 if none; progress-only commits never set it.
    newest_leader_commit: AtomicI64,
    /// Statements the follower has taken into the pipeline: moves while a
    /// long leader transaction applies, before its commit moves the LSN
    /// (the stall detector's sign of work).
    statements: AtomicU64,
    /// Unique per `Progress` in this process (one per streaming session).
    session: u64,
}

impl Progress {
    /// A progress starting at `lsn` (the origin's value at start).
    pub fn starting_at(lsn: Lsn) -> Arc<Self> {
        static SESSIONS: AtomicU64 = AtomicU64::new(1);
        let p = Self {
            session: SESSIONS.fetch_add(1, Ordering::Relaxed),
            ..Self::default()
        };
        p.committed_end.store(lsn.0, Ordering::Release);
        Arc::new(p)
    }

    /// End LSN of the last leader transaction durably committed on the follower.
    pub fn committed_end(&self) -> Lsn {
        Lsn(self.committed_end.load(Ordering::Acquire))
    }

    fn record(&self, lsn: Lsn, commit_time: PgTimestamp) {
        self.committed_end.fetch_max(lsn.0, Ordering::AcqRel);
        self.last_commit_time
            .store(commit_time.0, Ordering::Release);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.last_apply_micros.store(now, Ordering::Release);
    }

    /// Unix time (µs) of the last follower commit, 0 if none.
    pub fn last_apply_micros(&self) -> u64 {
        self.last_apply_micros.load(Ordering::Acquire)
    }

    /// The newest leader commit time durably applied (a real leader
    /// transaction, never a progress-only commit): the lag in seconds is
    /// its age. `None` before the first one of this session.
    pub fn newest_leader_commit(&self) -> Option<PgTimestamp> {
        match self.newest_leader_commit.load(Ordering::Acquire) {
            0 => None,
            t => Some(PgTimestamp(t)),
        }
    }

    /// `(session, statements)`: which session this progress belongs to
    /// (unique in the process) and how many statements the follower has
    /// taken in it so far.
    pub fn statements(&self) -> (u64, u64) {
        (self.session, self.statements.load(Ordering::Acquire))
    }

    pub(crate) fn worked(&self) {
        self.statements.fetch_add(1, Ordering::AcqRel);
    }

    fn record_leader_commits(&self, commit_times: &[PgTimestamp]) {
        if let Some(newest) = commit_times.iter().map(|t| t.0).max() {
            self.newest_leader_commit
                .fetch_max(newest, Ordering::AcqRel);
        }
    }

    /// Leader commit time of the last transaction committed on the
    /// follower (for lag in seconds), `None` before the first commit.
    pub fn last_commit_time(&self) -> Option<PgTimestamp> {
        match self.last_commit_time.load(Ordering::Acquire) {
            0 => None,
            t => Some(PgTimestamp(t)),
        }
    }
}

/// Group-commit bounds.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// Most leader rows per follower transaction.
    pub max_rows: u64,
    /// Longest a follower transaction stays open.
    pub max_wait: Duration,
}

/// What one sink applies and how.
#[derive(Debug)]
pub struct SinkSpec {
    /// Follower name (logs, errors).
    pub follower: String,
    /// Bit of the follower's replica set; `None` receives every row.
    pub set_bit: Option<usize>,
    /// Grant/revoke re-sync for the follower's set.
    pub resync: Option<super::resync::Resync>,
    /// Group-commit bounds.
    pub limits: GroupLimits,
    /// Skip leader transactions committed before this LSN (already applied).
    pub skip_until: Lsn,
    /// Apply inserts of leader transactions committed before this LSN as
    /// upserts (after a duplicate key; see `Sink::upsert_until`).
    pub upsert_until: Lsn,
}

/// Counters a sink keeps for logs and metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct SinkStats {
    /// Rows applied.
    pub rows_applied: u64,
    /// Rows dropped by the filter.
    pub rows_dropped: u64,
    /// Leader transactions applied.
    pub transactions: u64,
    /// Follower transactions committed.
    pub follower_commits: u64,
}

struct TableApply {
    shape: TableShape,
    name: Arc<str>,
    relation: Arc<Relation>,
    /// Multi-row inserts by (row count, upsert): 1 and powers of two up to
    /// the maximum.
    inserts: HashMap<(usize, bool), Statement>,
    /// `COPY … FROM STDIN`, prepared at its first use.
    copy: Option<Statement>,
    delete: Statement,
    /// UPDATE statements by the set of unchanged-TOAST columns they leave out.
    updates: HashMap<Box<[u64]>, Statement>,
    /// Scratch: the unchanged-TOAST columns of the update being applied
    /// (reused, so an update allocates only its parameters).
    unchanged: ColumnSet,
    metrics: TableMetrics,
}

/// A set of column positions, as many as the relation has (PostgreSQL
/// allows 1 600), in 64-bit words.
struct ColumnSet {
    words: Vec<u64>,
}

impl ColumnSet {
    fn with_columns(columns: usize) -> Self {
        Self {
            words: vec![0; columns.div_ceil(64)],
        }
    }

    fn clear(&mut self) {
        self.words.fill(0);
    }

    fn insert(&mut self, column: usize) {
        if let Some(word) = self.words.get_mut(column / 64) {
            *word |= 1 << (column % 64);
        }
    }

    fn contains(&self, column: usize) -> bool {
        self.words
            .get(column / 64)
            .is_some_and(|word| word & (1 << (column % 64)) != 0)
    }

    fn words(&self) -> &[u64] {
        &self.words
    }
}

struct Group {
    started: Instant,
    rows: u64,
    /// Whether BEGIN was sent. It goes out with the group's first statement:
    /// a run of leader transactions whose rows were all filtered out costs
    /// the follower nothing, and their end LSN rides on the next commit.
    begun: bool,
    wrote: bool,
    last_end: Lsn,
    last_time: PgTimestamp,
    in_leader_txn: bool,
    commit_lsn: Lsn,
}

/// Applies ordered leader transactions to one follower.
pub struct Sink {
    follower: String,
    client: Arc<Client>,
    leader: Arc<Client>,
    /// Bit of this follower's replica set; `None` receives every row.
    set_bit: Option<usize>,
    tables: HashMap<u32, TableApply>,
    begin: Statement,
    commit: Statement,
    xact_setup: Statement,
    force_xid: Statement,
    pipeline: Pipeline<ApplyContext>,
    group: Option<Group>,
    limits: GroupLimits,
    progress: Arc<Progress>,
    last_idle_write: Instant,
    stats: SinkStats,
    resync: Option<super::resync::Resync>,
    /// Leader transactions committed before this LSN are already on the
    /// follower (hub restart from the slowest follower): skip them.
    skip_until: Lsn,
    skipping: bool,
    /// Inserts of leader transactions committed before this LSN are upserts;
    /// later ones are plain INSERTs. The follower can already hold a row
    /// only when a backfill copied it from a leader snapshot that saw its
    /// transaction, and every transaction such a snapshot saw committed
    /// before the leader WAL position read after it; each backfill moves
    /// this bound there. (Replays after a restart are skipped by origin, so
    /// they never overlap.) A duplicate key anyway restarts the follower
    /// with upserts through the failing transaction (`ApplyError::duplicate_key_at`).
    upsert_until: Lsn,
    /// Consecutive inserts into one table, sent as one multi-row statement.
    batch: Option<InsertBatch>,
    metrics: FollowerMetrics,
    /// Leader commit times of the transactions in the open group (apply
    /// latency, group size); reused across groups.
    commit_times: Vec<PgTimestamp>,
}

/// Inserts waiting to be sent together.
struct InsertBatch {
    oid: u32,
    rows: usize,
    params: Vec<WireValue>,
    commit_lsn: Lsn,
    /// Whether the batch's statements are upserts (decided by its first
    /// transaction: later ones commit later, so are no more at risk).
    upsert: bool,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("follower", &self.follower)
            .field("set_bit", &self.set_bit)
            .field("tables", &self.tables.len())
            .field("pipeline", &self.pipeline)
            .finish()
    }
}

fn wire(tuple: &TupleData, column: Column<'_>) -> WireValue {
    WireValue::from_column(tuple, column)
}

impl Sink {
    /// A sink over an apply session already set up with
    /// [`super::origin::setup_apply_session`].
    pub async fn new(
        spec: SinkSpec,
        client: Arc<Client>,
        leader: Arc<Client>,
        progress: Arc<Progress>,
    ) -> Result<Sink, ApplyError> {
        let SinkSpec {
            follower,
            set_bit,
            resync,
            limits,
            skip_until,
            upsert_until,
        } = spec;
        let control = |op: &'static str| ApplyContext {
            commit_lsn: Lsn::ZERO,
            table: Arc::from("(session)"),
            op,
        };
        let prepare = |sql: &'static str, op: &'static str| {
            let client = client.clone();
            let follower = follower.clone();
            async move {
                client.prepare(sql).await.map_err(|source| {
                    let c = control(op);
                    ApplyError::Statement {
                        follower,
                        commit_lsn: c.commit_lsn,
                        table: c.table,
                        op: c.op,
                        source,
                    }
                })
            }
        };
        let metrics = FollowerMetrics::new(&follower);
        Ok(Sink {
            begin: prepare("BEGIN", "begin").await?,
            commit: prepare("COMMIT", "commit").await?,
            xact_setup: prepare(XACT_SETUP_SQL, "origin").await?,
            force_xid: prepare(FORCE_XID_SQL, "origin").await?,
            follower,
            client,
            leader,
            set_bit,
            tables: HashMap::new(),
            pipeline: Pipeline::new(MAX_IN_FLIGHT, MAX_VALUES_IN_FLIGHT),
            group: None,
            limits,
            progress,
            last_idle_write: Instant::now(),
            stats: SinkStats::default(),
            resync,
            skip_until,
            skipping: false,
            upsert_until,
            batch: None,
            metrics,
            commit_times: Vec::new(),
        })
    }

    /// Follower name.
    pub fn follower(&self) -> &str {
        &self.follower
    }

    /// Counters so far.
    pub fn stats(&self) -> SinkStats {
        self.stats
    }

    /// Metric handles of this follower.
    pub fn metrics(&self) -> &FollowerMetrics {
        &self.metrics
    }

    /// Whether a follower transaction is open between two leader
    /// transactions: the caller should commit it when no more events are
    /// ready.
    ///
    /// A group that has nothing to apply yet (every row so far was filtered
    /// out) is not worth a commit: it waits for the next statement, the time bound
    /// or an idle keepalive ([`TxnEvent::Idle`]) to carry its progress.
    pub fn has_open_group_at_boundary(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| !g.in_leader_txn && (g.begun || g.wrote))
    }

    /// How long to keep the open group waiting for more leader transactions
    /// when none is ready: while replaying a backlog (the last leader commit
    /// is over [`BACKLOG_LAG`] old), until the group's time bound, so a
    /// catch-up commits a few large groups rather than one per reader
    /// burst; live (or at the bound), not at all.
    pub fn group_hold(&self) -> Option<Duration> {
        let group = self.group.as_ref()?;
        let lag_micros = PgTimestamp::now().0.saturating_sub(group.last_time.0);
        if lag_micros < BACKLOG_LAG.as_micros() as i64 {
            return None;
        }
        self.limits
            .max_wait
            .checked_sub(group.started.elapsed())
            .filter(|left| !left.is_zero())
    }

    /// Sends the open group's BEGIN if it has not gone out yet: called before
    /// any statement of the group.
    async fn begin_if_needed(&mut self) -> Result<(), ApplyError> {
        let Some(group) = &mut self.group else {
            return Ok(());
        };
        if group.begun {
            return Ok(());
        }
        group.begun = true;
        let commit_lsn = group.commit_lsn;
        self.push_control(Control::Begin, commit_lsn).await
    }

    fn fail(&self, (source, context): (tokio_postgres::Error, ApplyContext)) -> ApplyError {
        ApplyError::Statement {
            follower: self.follower.clone(),
            commit_lsn: context.commit_lsn,
            table: context.table,
            op: context.op,
            source,
        }
    }

    /// Sends one statement through the pipeline.
    pub(crate) async fn push(
        &mut self,
        statement: &Statement,
        params: Vec<WireValue>,
        context: ApplyContext,
    ) -> Result<(), ApplyError> {
        self.begin_if_needed().await?;
        let client = self.client.clone();
        let statement = statement.clone();
        let weight = params.len().max(1);
        let future = async move { client.execute_raw(&statement, params).await };
        self.pipeline
            .push_weighted(future, context, weight)
            .await
            .map_err(|e| self.fail(e))?;
        self.progress.worked();
        Ok(())
    }

    async fn push_control(&mut self, which: Control, commit_lsn: Lsn) -> Result<(), ApplyError> {
        let (statement, op) = match which {
            Control::Begin => (self.begin.clone(), "begin"),
            Control::Commit => (self.commit.clone(), "commit"),
            Control::ForceXid => (self.force_xid.clone(), "origin"),
        };
        let client = self.client.clone();
        let future = async move {
            client
                .execute_raw(&statement, std::iter::empty::<WireValue>())
                .await
        };
        let context = ApplyContext {
            commit_lsn,
            table: Arc::from("(transaction)"),
            op,
        };
        self.pipeline
            .push(future, context)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Applies one event.
    pub async fn handle(&mut self, event: &TxnEvent) -> Result<(), ApplyError> {
        match self.handle_event(event).await {
            Err(e) => Err(self.failed(e).await),
            ok => ok,
        }
    }

    /// The error to report for `error` (its root cause), remembered for
    /// `pgsieve status`.
    async fn failed(&mut self, error: ApplyError) -> ApplyError {
        let error = self.root_cause(error).await;
        self.metrics
            .apply_failed(crate::report::error_chain(&error));
        error
    }

    /// A statement sent outside the pipeline (a lazy prepare, a catalog
    /// read for a new relation, a re-sync query) fails with "current transaction is aborted" when a pipelined
    /// statement failed first and its answer is not read yet: that earlier
    /// failure is the one to report (and to act on: a duplicate key means
    /// "resume with upserts", an aborted transaction means nothing).
    async fn root_cause(&mut self, error: ApplyError) -> ApplyError {
        let aborted = error.sql_error().is_some_and(|e| {
            e.code() == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
        });
        if !aborted {
            return error;
        }
        match self.pipeline.drain().await {
            Err(first) => self.fail(first),
            Ok(()) => error,
        }
    }

    async fn handle_event(&mut self, event: &TxnEvent) -> Result<(), ApplyError> {
        if self.skipping {
            if let TxnEvent::Commit(_) = event {
                self.skipping = false;
            }
            if !matches!(event, TxnEvent::Relation(_)) {
                return Ok(());
            }
        }
        match event {
            TxnEvent::Begin(begin) if begin.commit_lsn < self.skip_until => {
                self.skipping = true;
                Ok(())
            }
            TxnEvent::Relation(relation) => self.on_relation(relation).await,
            TxnEvent::Begin(begin) => {
                if self.group.is_none() {
                    self.commit_times.clear();
                    self.group = Some(Group {
                        started: Instant::now(),
                        rows: 0,
                        begun: false,
                        wrote: false,
                        last_end: Lsn::ZERO,
                        last_time: begin.commit_time,
                        in_leader_txn: true,
                        commit_lsn: begin.commit_lsn,
                    });
                }
                if let Some(group) = &mut self.group {
                    group.in_leader_txn = true;
                    group.commit_lsn = begin.commit_lsn;
                }
                Ok(())
            }
            TxnEvent::Change(change) => self.on_change(change).await,
            TxnEvent::Truncate(truncate) => self.on_truncate(truncate).await,
            TxnEvent::Commit(commit) => self.on_commit(commit).await,
            TxnEvent::Idle { wal_end } => self.on_idle(*wal_end).await,
        }
    }

    fn commit_lsn(&self) -> Lsn {
        self.group.as_ref().map_or(Lsn::ZERO, |g| g.commit_lsn)
    }

    async fn on_relation(&mut self, relation: &Arc<Relation>) -> Result<(), ApplyError> {
        self.flush_batch().await?;
        if let Some(existing) = self.tables.get(&relation.oid) {
            if existing.relation.as_ref() == relation.as_ref() {
                return Ok(());
            }
        }
        let shape = match_relation(&self.leader, &self.client, relation)
            .await
            .map_err(|source| ApplyError::Schema {
                follower: self.follower.clone(),
                source,
            })?;
        let name: Arc<str> = Arc::from(shape.table.as_str());
        let prepare_err = |follower: &str, op: &'static str| {
            let follower = follower.to_owned();
            let name = name.clone();
            move |source| ApplyError::Statement {
                follower,
                commit_lsn: Lsn::ZERO,
                table: name,
                op,
                source,
            }
        };
        let insert = self
            .client
            .prepare(&shape.insert_sql())
            .await
            .map_err(prepare_err(&self.follower, "prepare insert"))?;
        let delete = self
            .client
            .prepare(&shape.delete_sql(&shape.match_columns()))
            .await
            .map_err(prepare_err(&self.follower, "prepare delete"))?;
        self.tables.insert(
            relation.oid,
            TableApply {
                shape,
                name,
                relation: relation.clone(),
                inserts: HashMap::from([((1, true), insert)]),
                copy: None,
                delete,
                updates: HashMap::new(),
                unchanged: ColumnSet::with_columns(relation.columns.len()),
                metrics: self.metrics.table(relation),
            },
        );
        Ok(())
    }

    fn allowed(&self, mask: SetMask) -> bool {
        self.set_bit.is_none_or(|bit| mask.contains(bit))
    }

    async fn on_change(&mut self, change: &RowChange) -> Result<(), ApplyError> {
        if !self.allowed(change.mask) {
            self.stats.rows_dropped += 1;
            if let Some(table) = self.tables.get(&change.relation.oid) {
                table.metrics.dropped.increment(1);
            }
            return Ok(());
        }
        let commit_lsn = self.commit_lsn();
        let oid = change.relation.oid;
        let continues_batch = matches!(change.op, RowOp::Insert(_))
            && self.batch.as_ref().is_none_or(|b| b.oid == oid);
        if !continues_batch {
            self.flush_batch().await?;
        }
        let Some(table) = self.tables.get_mut(&oid) else {
            return Err(ApplyError::Invalid {
                follower: self.follower.clone(),
                commit_lsn,
                what: format!(
                    "change for relation {} before its definition",
                    change.relation.name
                ),
            });
        };
        let context = ApplyContext {
            commit_lsn,
            table: table.name.clone(),
            op: change.op.as_str(),
        };
        let (statement, params) = match &change.op {
            RowOp::Insert(insert) => {
                let upsert = commit_lsn < self.upsert_until;
                // Plain inserts gather for one COPY; upserts go by INSERT.
                let max_rows = match self.batch.as_ref().map_or(upsert, |b| b.upsert) {
                    true => table.shape.max_insert_rows(),
                    false => COPY_MAX_ROWS,
                };
                let batch = self.batch.get_or_insert_with(|| InsertBatch {
                    oid,
                    rows: 0,
                    params: Vec::with_capacity(
                        table.shape.max_insert_rows().max(COPY_MIN_ROWS) * insert.new.len(),
                    ),
                    commit_lsn,
                    upsert,
                });
                super::value::encode_row(&insert.new, &mut batch.params);
                batch.rows += 1;
                let full = batch.rows >= max_rows;
                table.metrics.forwarded.increment(1);
                self.stats.rows_applied += 1;
                if let Some(group) = &mut self.group {
                    group.rows += 1;
                    group.wrote = true;
                }
                if full {
                    self.flush_batch().await?;
                }
                return Ok(());
            }
            RowOp::Delete(delete) => {
                let old = old_tuple(&delete.old);
                let params = table
                    .shape
                    .match_columns()
                    .iter()
                    .map(|&i| old.get(i).map_or(WireValue::NULL, |c| wire(old, c)))
                    .collect();
                (table.delete.clone(), params)
            }
            RowOp::Update(update) => {
                let new = &update.new;
                let match_cols = table.shape.match_columns();
                table.unchanged.clear();
                let mut params = Vec::with_capacity(new.len() + match_cols.len());
                for (i, column) in new.columns().enumerate() {
                    if column.is_unchanged_toast() {
                        table.unchanged.insert(i);
                    } else {
                        params.push(wire(new, column));
                    }
                }
                let key_source = update.old.as_ref().map_or(new, old_tuple);
                for &i in &match_cols {
                    params.push(
                        key_source
                            .get(i)
                            .map_or(WireValue::NULL, |c| wire(key_source, c)),
                    );
                }
                let statement = match table.updates.get(table.unchanged.words()) {
                    Some(statement) => statement.clone(),
                    None => {
                        let set_cols: Vec<usize> = (0..new.len())
                            .filter(|&i| !table.unchanged.contains(i))
                            .collect();
                        let sql = table.shape.update_sql(&set_cols, &match_cols);
                        let statement = self.client.prepare(&sql).await.map_err(|source| {
                            ApplyError::Statement {
                                follower: self.follower.clone(),
                                commit_lsn,
                                table: table.name.clone(),
                                op: "prepare update",
                                source,
                            }
                        })?;
                        table
                            .updates
                            .insert(table.unchanged.words().into(), statement.clone());
                        statement
                    }
                };
                (statement, params)
            }
        };
        table.metrics.forwarded.increment(1);
        self.push(&statement, params, context).await?;
        self.stats.rows_applied += 1;
        if let Some(group) = &mut self.group {
            group.rows += 1;
            group.wrote = true;
        }
        Ok(())
    }

    async fn on_truncate(&mut self, truncate: &Truncate) -> Result<(), ApplyError> {
        self.flush_batch().await?;
        let commit_lsn = self.commit_lsn();
        let mut names = Vec::with_capacity(truncate.rel_ids.len());
        for oid in truncate.rel_ids.iter() {
            match self.tables.get(oid) {
                Some(table) => names.push(table.shape.table.clone()),
                None => {
                    return Err(ApplyError::Invalid {
                        follower: self.follower.clone(),
                        commit_lsn,
                        what: format!("TRUNCATE of relation OID {oid} before its definition"),
                    });
                }
            }
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let sql = truncate_sql(
            &refs,
            truncate.options.cascade,
            truncate.options.restart_identity,
        );
        let client = self.client.clone();
        let context = ApplyContext {
            commit_lsn,
            table: Arc::from(names.join(", ")),
            op: "truncate",
        };
        self.begin_if_needed().await?;
        self.pipeline
            .push(
                async move { client.batch_execute(&sql).await.map(|_| 0) },
                context,
            )
            .await
            .map_err(|e| self.fail(e))?;
        if let Some(group) = &mut self.group {
            group.wrote = true;
        }
        Ok(())
    }

    async fn on_commit(&mut self, commit: &TxnCommit) -> Result<(), ApplyError> {
        if self.group.is_none() {
            return Err(ApplyError::Invalid {
                follower: self.follower.clone(),
                commit_lsn: commit.commit_lsn,
                what: "commit without begin".into(),
            });
        }
        if let (Some(bit), false) = (self.set_bit, commit.effects.is_empty()) {
            let flips: Vec<_> = commit.effects.for_set(bit).collect();
            if !flips.is_empty() {
                self.flush_batch().await?;
                self.resync_flips(commit.xid, commit.commit_lsn, &flips)
                    .await?;
            }
        }
        self.stats.transactions += 1;
        let Some(group) = &mut self.group else {
            return Ok(());
        };
        self.commit_times.push(commit.commit_time);
        group.in_leader_txn = false;
        group.last_end = commit.end_lsn;
        group.last_time = commit.commit_time;
        if group.rows >= self.limits.max_rows || group.started.elapsed() >= self.limits.max_wait {
            self.commit_group().await?;
        }
        Ok(())
    }

    async fn resync_flips(
        &mut self,
        xid: u32,
        commit_lsn: Lsn,
        flips: &[&pgsieve_filters::Flip],
    ) -> Result<(), ApplyError> {
        let Some(resync) = self.resync.take() else {
            return Ok(());
        };
        let mut resync = resync;
        let started = Instant::now();
        let result = resync.run(self, xid, commit_lsn, flips).await;
        tracing::debug!(
            follower = %self.follower,
            %commit_lsn,
            variables = flips.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "Re-synced flipped variables."
        );
        self.resync = Some(resync);
        let rows = result?;
        if let Some(group) = &mut self.group {
            group.wrote = true;
            group.rows += rows;
        }
        Ok(())
    }

    /// Sends the pending multi-row insert: the full batch as one statement,
    /// a partial one as power-of-two chunks (so each table needs at most a
    /// handful of prepared shapes).
    async fn flush_batch(&mut self) -> Result<(), ApplyError> {
        let Some(mut batch) = self.batch.take() else {
            return Ok(());
        };
        let Some(table) = self.tables.get(&batch.oid) else {
            return Err(ApplyError::Invalid {
                follower: self.follower.clone(),
                commit_lsn: batch.commit_lsn,
                what: format!("insert batch for unknown relation {}", batch.oid),
            });
        };
        let width = table.shape.columns.len().max(1);
        let max_rows = table.shape.max_insert_rows();
        let name = table.name.clone();
        if !batch.upsert && batch.rows >= COPY_MIN_ROWS && batch.params.len() == batch.rows * width
        {
            let mut data = BytesMut::with_capacity(batch.params.len() * 16);
            let encoded = batch
                .params
                .chunks(width)
                .all(|row| encode_copy_row(row, &mut data));
            if encoded {
                let statement = self.copy_statement(batch.oid, batch.commit_lsn).await?;
                let context = ApplyContext {
                    commit_lsn: batch.commit_lsn,
                    table: name,
                    op: "insert",
                };
                let weight = batch.params.len();
                drop(batch);
                return self
                    .push_copy(statement, data.freeze(), context, weight)
                    .await;
            }
        }
        while batch.rows > 0 {
            let chunk = if batch.rows >= max_rows {
                max_rows
            } else {
                1 << (usize::BITS - 1 - batch.rows.leading_zeros())
            };
            let statement = self
                .insert_statement(batch.oid, chunk, batch.upsert, batch.commit_lsn)
                .await?;
            // Every row has the table's width (the tuple gate in `txn`).
            let rest = batch
                .params
                .split_off((chunk * width).min(batch.params.len()));
            let params = std::mem::replace(&mut batch.params, rest);
            batch.rows -= chunk;
            let context = ApplyContext {
                commit_lsn: batch.commit_lsn,
                table: name.clone(),
                op: "insert",
            };
            self.push(&statement, params, context).await?;
        }
        Ok(())
    }

    async fn copy_statement(&mut self, oid: u32, commit_lsn: Lsn) -> Result<Statement, ApplyError> {
        let Some(table) = self.tables.get_mut(&oid) else {
            return Err(ApplyError::Invalid {
                follower: self.follower.clone(),
                commit_lsn,
                what: format!("insert for unknown relation {oid}"),
            });
        };
        if let Some(statement) = &table.copy {
            return Ok(statement.clone());
        }
        let statement = self
            .client
            .prepare(&table.shape.copy_sql())
            .await
            .map_err(|source| ApplyError::Statement {
                follower: self.follower.clone(),
                commit_lsn,
                table: table.name.clone(),
                op: "prepare copy",
                source,
            })?;
        table.copy = Some(statement.clone());
        Ok(statement)
    }

    /// Queues one `COPY … FROM STDIN` of `data` (rows in text format).
    ///
    /// The COPY runs as a task of its own: its rows can only follow the
    /// follower's acceptance (a round trip), and later statements wait behind
    /// it on the connection, so it must not wait for the pipeline's next look
    /// at its answers. Order is kept by the connection, which sends requests
    /// in the order they were made.
    async fn push_copy(
        &mut self,
        statement: Statement,
        data: Bytes,
        context: ApplyContext,
        weight: usize,
    ) -> Result<(), ApplyError> {
        self.begin_if_needed().await?;
        let client = self.client.clone();
        let copy = async move {
            let sink = client.copy_in::<_, Bytes>(&statement).await?;
            futures_util::pin_mut!(sink);
            futures_util::SinkExt::send(&mut sink, data).await?;
            sink.finish().await
        };
        // The first poll queues the request on the connection, now, before
        // any later statement; the task then sends the rows once the
        // follower accepts the COPY.
        let mut copy: std::pin::Pin<Box<dyn Future<Output = StatementResult> + Send>> =
            Box::pin(copy);
        let first = copy
            .as_mut()
            .poll(&mut std::task::Context::from_waker(noop_waker_ref()));
        let task = match first {
            std::task::Poll::Ready(result) => tokio::spawn(std::future::ready(result)),
            std::task::Poll::Pending => tokio::spawn(copy),
        };
        let future = async move {
            match task.await {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: the runtime is shutting down.
                Err(_) => std::future::pending().await,
            }
        };
        self.pipeline
            .push_weighted(future, context, weight)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn insert_statement(
        &mut self,
        oid: u32,
        rows: usize,
        upsert: bool,
        commit_lsn: Lsn,
    ) -> Result<Statement, ApplyError> {
        let Some(table) = self.tables.get_mut(&oid) else {
            return Err(ApplyError::Invalid {
                follower: self.follower.clone(),
                commit_lsn,
                what: format!("insert for unknown relation {oid}"),
            });
        };
        if let Some(statement) = table.inserts.get(&(rows, upsert)) {
            return Ok(statement.clone());
        }
        let sql = table.shape.insert_rows_sql(rows, upsert);
        let statement =
            self.client
                .prepare(&sql)
                .await
                .map_err(|source| ApplyError::Statement {
                    follower: self.follower.clone(),
                    commit_lsn,
                    table: table.name.clone(),
                    op: "prepare insert",
                    source,
                })?;
        table.inserts.insert((rows, upsert), statement.clone());
        Ok(statement)
    }

    /// Commits the open follower transaction at a leader-transaction
    /// boundary, recording the last applied end LSN as origin progress.
    pub async fn commit_group(&mut self) -> Result<(), ApplyError> {
        match self.commit_open_group().await {
            Err(e) => Err(self.failed(e).await),
            ok => ok,
        }
    }

    async fn commit_open_group(&mut self) -> Result<(), ApplyError> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        if group.in_leader_txn {
            return Err(ApplyError::Invalid {
                follower: self.follower.clone(),
                commit_lsn: self.commit_lsn(),
                what: "commit requested inside a leader transaction".into(),
            });
        }
        self.flush_batch().await?;
        // Nothing sent yet (only filtered rows, or an idle position): the
        // progress still needs a transaction of its own.
        self.begin_if_needed().await?;
        let Some(group) = self.group.take() else {
            return Ok(());
        };
        if !group.wrote {
            self.push_control(Control::ForceXid, group.commit_lsn)
                .await?;
        }
        let client = self.client.clone();
        let statement = self.xact_setup.clone();
        let lsn = group.last_end.to_string();
        let micros = group.last_time.0;
        let context = ApplyContext {
            commit_lsn: group.commit_lsn,
            table: Arc::from("(origin)"),
            op: "origin progress",
        };
        self.pipeline
            .push(
                async move { client.execute(&statement, &[&lsn, &micros]).await },
                context,
            )
            .await
            .map_err(|e| self.fail(e))?;
        self.push_control(Control::Commit, group.commit_lsn).await?;
        self.pipeline.drain().await.map_err(|e| self.fail(e))?;
        self.stats.follower_commits += 1;
        self.progress.record(group.last_end, group.last_time);
        self.progress.record_leader_commits(&self.commit_times);
        self.metrics.committed(&self.commit_times);
        self.commit_times.clear();
        Ok(())
    }

    async fn on_idle(&mut self, wal_end: Lsn) -> Result<(), ApplyError> {
        let idle_write_due = self.last_idle_write.elapsed() >= Duration::from_millis(500);
        if let Some(group) = &mut self.group {
            if group.in_leader_txn {
                return Ok(());
            }
            group.last_end = group.last_end.max(wal_end);
            // A group of filtered transactions only has progress to write:
            // as rate-limited as any idle write.
            if !group.begun {
                if !idle_write_due {
                    return Ok(());
                }
                self.last_idle_write = Instant::now();
            }
            return self.commit_group().await;
        }
        let behind = wal_end > self.progress.committed_end();
        if behind && idle_write_due {
            self.last_idle_write = Instant::now();
            self.group = Some(Group {
                started: Instant::now(),
                rows: 0,
                begun: false,
                wrote: false,
                last_end: wal_end,
                last_time: PgTimestamp::now(),
                in_leader_txn: false,
                commit_lsn: wal_end,
            });
            self.commit_group().await?;
        }
        Ok(())
    }

    /// Abandons the open follower transaction (shutdown or reconnect).
    pub async fn abandon(&mut self) {
        self.batch = None;
        self.commit_times.clear();
        self.pipeline.clear();
        if self.group.take().is_some_and(|g| g.begun) {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
    }

    pub(crate) fn client(&self) -> &Arc<Client> {
        &self.client
    }

    pub(crate) fn leader(&self) -> &Arc<Client> {
        &self.leader
    }

    /// A backfill read the leader at a snapshot taken before WAL position
    /// `lsn`: the follower may now hold rows of transactions committed
    /// before it, so their inserts must be upserts.
    pub(crate) fn backfilled_through(&mut self, lsn: Lsn) {
        self.upsert_until = self.upsert_until.max(lsn);
    }

    pub(crate) async fn push_future(
        &mut self,
        future: impl std::future::Future<Output = super::pipeline::StatementResult> + Send + 'static,
        context: ApplyContext,
    ) -> Result<(), ApplyError> {
        self.begin_if_needed().await?;
        self.pipeline
            .push(future, context)
            .await
            .map_err(|e| self.fail(e))?;
        self.progress.worked();
        Ok(())
    }
}

fn old_tuple(old: &OldTuple) -> &TupleData {
    match old {
        OldTuple::Key(t) | OldTuple::Full(t) => t,
    }
}

#[derive(Debug, Clone, Copy)]
enum Control {
    Begin,
    Commit,
    ForceXid,
}
