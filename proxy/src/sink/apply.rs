//! The follower sink: ordered leader transactions → SQL on one follower.
//!
//! Leader transactions are applied whole; consecutive small ones share a
//! follower transaction (group commit, bounded by rows and time), and the
//! group's last commit end LSN is recorded as the origin's progress inside
//! the same follower transaction ([`FollowerConnection::commit`]). Any
//! failure stops apply with one error naming the follower, LSN, table and
//! statement; nothing is skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgsieve_filters::SetMask;
use pgsieve_protocol::pgoutput::{OldTuple, Relation, Truncate, TupleData};
use pgsieve_protocol::{Lsn, PgTimestamp};
use tokio_postgres::Client;

use super::batch::{Gathered, InsertBatch, PendingInserts};
use super::connection::FollowerConnection;
use super::error::{ApplyContext, ApplyError, Operation};
use super::resync::Resync;
use super::statements::truncate_sql;
use super::table::TableApply;
use super::value::WireValue;
use crate::metrics::FollowerMetrics;
use crate::progress::Progress;
use crate::txn::{RowChange, RowOp, TxnBegin, TxnCommit, TxnEvent};

/// A leader commit older than this means the sink is replaying a backlog:
/// groups then fill up to their time bound ([`Sink::group_hold`]).
const BACKLOG_LAG: Duration = Duration::from_millis(200);

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
    pub resync: Option<Resync>,
    /// Group-commit bounds.
    pub limits: GroupLimits,
    /// Skip leader transactions committed before this LSN (already applied).
    pub skip_until: Lsn,
    /// Apply inserts of leader transactions committed before this LSN as
    /// upserts (see `Sink::upsert_until`).
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

/// The open follower transaction: the leader transactions it holds so far.
/// Its BEGIN goes out with its first statement ([`FollowerConnection`]): a
/// run of leader transactions whose rows were all filtered out costs the
/// follower nothing, and their end LSN rides on the next commit.
struct Group {
    started: Instant,
    rows: u64,
    wrote: bool,
    last_end: Lsn,
    last_time: PgTimestamp,
    in_leader_txn: bool,
    commit_lsn: Lsn,
    /// It holds a speculative leader transaction and nothing else: an
    /// Abandon rolls it back whole.
    speculative: bool,
}

impl Group {
    fn new(commit_lsn: Lsn, last_end: Lsn, last_time: PgTimestamp, in_leader_txn: bool) -> Self {
        Self {
            started: Instant::now(),
            rows: 0,
            wrote: false,
            last_end,
            last_time,
            in_leader_txn,
            commit_lsn,
            speculative: false,
        }
    }

    fn wrote(&mut self, rows: u64) {
        self.rows += rows;
        self.wrote = true;
    }
}

/// Applies ordered leader transactions to one follower.
pub struct Sink {
    conn: FollowerConnection,
    leader: Arc<Client>,
    /// Bit of this follower's replica set; `None` receives every row.
    set_bit: Option<usize>,
    tables: HashMap<u32, TableApply>,
    group: Option<Group>,
    limits: GroupLimits,
    last_idle_write: Instant,
    stats: SinkStats,
    resync: Option<Resync>,
    /// Leader transactions committed before this LSN are already on the
    /// follower (hub restart from the slowest follower): skip them.
    skip_until: Lsn,
    skipping: bool,
    /// Inserts of leader transactions committed before this LSN are upserts;
    /// later ones are plain INSERTs (or COPY). The follower can already hold
    /// a row only when a backfill copied it from a leader snapshot that saw
    /// its transaction, and every transaction such a snapshot saw committed
    /// before the leader WAL position read after it; each backfill moves
    /// this bound there. A duplicate key anyway restarts the follower with
    /// upserts through the failing transaction (`run::policy`).
    upsert_until: Lsn,
    /// Inserts gathered per table, sent together.
    inserts: PendingInserts,
    metrics: FollowerMetrics,
    /// Leader commit times of the transactions in the open group (apply
    /// latency, group size); reused across groups.
    commit_times: Vec<PgTimestamp>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("conn", &self.conn)
            .field("set_bit", &self.set_bit)
            .field("tables", &self.tables.len())
            .finish()
    }
}

fn wire_at(tuple: &TupleData, index: usize) -> WireValue {
    tuple
        .get(index)
        .map_or(WireValue::NULL, |c| WireValue::from_column(tuple, c))
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
        let metrics = FollowerMetrics::new(&spec.follower);
        Ok(Sink {
            conn: FollowerConnection::open(spec.follower, client, progress).await?,
            leader,
            set_bit: spec.set_bit,
            tables: HashMap::new(),
            group: None,
            limits: spec.limits,
            last_idle_write: Instant::now(),
            stats: SinkStats::default(),
            resync: spec.resync,
            skip_until: spec.skip_until,
            skipping: false,
            upsert_until: spec.upsert_until,
            inserts: PendingInserts::default(),
            metrics,
            commit_times: Vec::new(),
        })
    }

    /// Follower name.
    pub fn follower(&self) -> &str {
        self.conn.follower()
    }

    /// Counters so far.
    pub fn stats(&self) -> SinkStats {
        self.stats
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
            .is_some_and(|g| !g.in_leader_txn && (self.conn.in_transaction() || g.wrote))
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

    /// Applies one event.
    pub async fn handle(&mut self, event: &TxnEvent) -> Result<(), ApplyError> {
        let result = self.handle_event(event).await;
        self.remember(result)
    }

    /// Commits the open follower transaction at a leader-transaction
    /// boundary, recording the last applied end LSN as origin progress.
    pub async fn commit_group(&mut self) -> Result<(), ApplyError> {
        let result = self.commit_open_group().await;
        self.remember(result)
    }

    /// Remembers a failure for `pgsieve status`.
    fn remember(&self, result: Result<(), ApplyError>) -> Result<(), ApplyError> {
        if let Err(error) = &result {
            self.metrics.apply_failed(crate::report::error_chain(error));
        }
        result
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
            TxnEvent::Begin(begin) if begin.speculative => self.on_speculative_begin(begin).await,
            TxnEvent::Abandon { .. } => self.on_abandon().await,
            TxnEvent::Begin(begin) => {
                if self.group.is_none() {
                    self.commit_times.clear();
                }
                let group = self.group.get_or_insert_with(|| {
                    Group::new(begin.commit_lsn, Lsn::ZERO, begin.commit_time, true)
                });
                group.in_leader_txn = true;
                group.commit_lsn = begin.commit_lsn;
                Ok(())
            }
            TxnEvent::Change(change) => self.on_change(change).await,
            TxnEvent::Truncate(truncate) => self.on_truncate(truncate).await,
            TxnEvent::Commit(commit) => self.on_commit(commit).await,
            TxnEvent::Idle { wal_end } => self.on_idle(*wal_end).await,
        }
    }

    /// A speculative transaction gets a follower transaction of its own, so
    /// giving it up rolls back nothing else: the open group commits first.
    async fn on_speculative_begin(&mut self, begin: &TxnBegin) -> Result<(), ApplyError> {
        if begin.commit_lsn < self.skip_until {
            return Err(ApplyError::invalid(
                self.conn.follower(),
                begin.commit_lsn,
                "a speculative transaction from before the follower's progress",
            ));
        }
        self.commit_open_group().await?;
        self.commit_times.clear();
        let mut group = Group::new(begin.commit_lsn, Lsn::ZERO, begin.commit_time, true);
        group.speculative = true;
        self.group = Some(group);
        Ok(())
    }

    /// Rolls back the speculative transaction; it comes again at its commit.
    async fn on_abandon(&mut self) -> Result<(), ApplyError> {
        let Some(group) = self.group.take_if(|g| g.speculative) else {
            return Ok(());
        };
        self.stats.rows_applied = self.stats.rows_applied.saturating_sub(group.rows);
        self.inserts.clear();
        self.commit_times.clear();
        for table in self.tables.values_mut() {
            table.metrics.discard();
        }
        self.conn.rollback_checked(group.commit_lsn).await
    }

    fn commit_lsn(&self) -> Lsn {
        self.group.as_ref().map_or(Lsn::ZERO, |g| g.commit_lsn)
    }

    async fn on_relation(&mut self, relation: &Arc<Relation>) -> Result<(), ApplyError> {
        self.flush_inserts().await?;
        if let Some(existing) = self.tables.get(&relation.oid) {
            if existing.relation.as_ref() == relation.as_ref() {
                return Ok(());
            }
        }
        let metrics = self.metrics.table(relation);
        let table = TableApply::matched(&mut self.conn, &self.leader, relation, metrics).await?;
        if let Some(mut redefined) = self.tables.insert(relation.oid, table) {
            // Its rows of the open group would be lost with it: counted now.
            redefined.metrics.emit();
        }
        Ok(())
    }

    fn allowed(&self, mask: SetMask) -> bool {
        self.set_bit.is_none_or(|bit| mask.contains(bit))
    }

    async fn on_change(&mut self, change: &RowChange) -> Result<(), ApplyError> {
        let oid = change.relation.oid;
        if !self.allowed(change.mask) {
            self.stats.rows_dropped += 1;
            if let Some(table) = self.tables.get_mut(&oid) {
                table.metrics.dropped();
            }
            return Ok(());
        }
        if !matches!(change.op, RowOp::Insert(_)) {
            self.flush_inserts().await?;
        }
        let commit_lsn = self.commit_lsn();
        let Some(table) = self.tables.get_mut(&oid) else {
            return Err(ApplyError::invalid(
                self.conn.follower(),
                commit_lsn,
                format!(
                    "change for relation {} before its definition",
                    change.relation.name
                ),
            ));
        };
        table.metrics.forwarded();
        self.stats.rows_applied += 1;
        if let Some(group) = &mut self.group {
            group.wrote(1);
        }
        match &change.op {
            RowOp::Insert(insert) => {
                let upsert = commit_lsn < self.upsert_until;
                match self.inserts.add(table, commit_lsn, upsert, &insert.new) {
                    Gathered::Room => Ok(()),
                    Gathered::Full(index) => {
                        let batch = self.inserts.take(index);
                        self.send_batch(batch).await
                    }
                    Gathered::Overfull => self.flush_inserts().await,
                }
            }
            RowOp::Delete(delete) => {
                let old = old_tuple(&delete.old);
                let params = table
                    .match_columns
                    .iter()
                    .map(|&i| wire_at(old, i))
                    .collect();
                let statement = table.delete(&mut self.conn, commit_lsn).await?;
                let context = table.context(commit_lsn, Operation::Delete);
                self.conn.push(&statement, params, context).await
            }
            RowOp::Update(update) => {
                let new = &update.new;
                table.unchanged.clear();
                let mut params = Vec::with_capacity(new.len() + table.match_columns.len());
                for (i, column) in new.columns().enumerate() {
                    if column.is_unchanged_toast() {
                        table.unchanged.insert(i);
                    } else {
                        params.push(WireValue::from_column(new, column));
                    }
                }
                let key_source = update.old.as_ref().map_or(new, old_tuple);
                params.extend(table.match_columns.iter().map(|&i| wire_at(key_source, i)));
                let statement = table.update(&mut self.conn, commit_lsn).await?;
                let context = table.context(commit_lsn, Operation::Update);
                self.conn.push(&statement, params, context).await
            }
        }
    }

    async fn on_truncate(&mut self, truncate: &Truncate) -> Result<(), ApplyError> {
        self.flush_inserts().await?;
        let commit_lsn = self.commit_lsn();
        let mut names = Vec::with_capacity(truncate.rel_ids.len());
        for oid in truncate.rel_ids.iter() {
            let Some(table) = self.tables.get(oid) else {
                return Err(ApplyError::invalid(
                    self.conn.follower(),
                    commit_lsn,
                    format!("TRUNCATE of relation OID {oid} before its definition"),
                ));
            };
            names.push(table.shape.table.as_str());
        }
        let sql = truncate_sql(
            &names,
            truncate.options.cascade,
            truncate.options.restart_identity,
        );
        let context = ApplyContext {
            commit_lsn,
            table: Arc::from(names.join(", ")),
            op: Operation::Truncate,
        };
        let client = self.conn.pipelined_client();
        self.conn
            .push_future(
                async move { client.batch_execute(&sql).await.map(|_| 0) },
                context,
            )
            .await?;
        if let Some(group) = &mut self.group {
            group.wrote(0);
        }
        Ok(())
    }

    async fn on_commit(&mut self, commit: &TxnCommit) -> Result<(), ApplyError> {
        if self.group.is_none() {
            return Err(ApplyError::invalid(
                self.conn.follower(),
                commit.commit_lsn,
                "commit without begin",
            ));
        }
        if let (Some(bit), false) = (self.set_bit, commit.effects.is_empty()) {
            let flips: Vec<_> = commit.effects.for_set(bit).collect();
            if !flips.is_empty() {
                self.flush_inserts().await?;
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
        group.commit_lsn = commit.commit_lsn;
        let is_speculative = std::mem::take(&mut group.speculative);
        if is_speculative
            || group.rows >= self.limits.max_rows
            || group.started.elapsed() >= self.limits.max_wait
        {
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
        let Some(resync) = &mut self.resync else {
            return Ok(());
        };
        let started = Instant::now();
        let done = resync
            .run(
                &mut self.conn,
                &self.leader,
                &self.metrics,
                (xid, commit_lsn),
                flips,
            )
            .await?;
        tracing::debug!(
            follower = %self.conn.follower(),
            %commit_lsn,
            variables = flips.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "Re-synced flipped variables."
        );
        if let Some(lsn) = done.copied_through {
            self.upsert_until = self.upsert_until.max(lsn);
        }
        if let Some(group) = &mut self.group {
            group.wrote(done.rows);
        }
        Ok(())
    }

    /// Sends every gathered insert.
    async fn flush_inserts(&mut self) -> Result<(), ApplyError> {
        while let Some(batch) = self.inserts.pop() {
            self.send_batch(batch).await?;
        }
        Ok(())
    }

    async fn send_batch(&mut self, batch: InsertBatch) -> Result<(), ApplyError> {
        let Some(table) = self.tables.get_mut(&batch.oid) else {
            return Err(ApplyError::invalid(
                self.conn.follower(),
                self.commit_lsn(),
                format!("insert batch for unknown relation {}", batch.oid),
            ));
        };
        batch.send(table, &mut self.conn).await
    }

    async fn commit_open_group(&mut self) -> Result<(), ApplyError> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        if group.in_leader_txn {
            return Err(ApplyError::invalid(
                self.conn.follower(),
                group.commit_lsn,
                "commit requested inside a leader transaction",
            ));
        }
        self.flush_inserts().await?;
        let Some(group) = self.group.take() else {
            return Ok(());
        };
        self.conn
            .commit(
                group.commit_lsn,
                group.last_end,
                group.last_time,
                group.wrote,
            )
            .await?;
        self.stats.follower_commits += 1;
        self.conn
            .progress()
            .record_leader_commits(&self.commit_times);
        self.metrics.committed(&self.commit_times);
        self.commit_times.clear();
        for table in self.tables.values_mut() {
            table.metrics.emit();
        }
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
            if !self.conn.in_transaction() {
                if !idle_write_due {
                    return Ok(());
                }
                self.last_idle_write = Instant::now();
            }
            return self.commit_group().await;
        }
        let behind = wal_end > self.conn.progress().committed_end();
        if behind && idle_write_due {
            self.last_idle_write = Instant::now();
            self.group = Some(Group::new(wal_end, wal_end, PgTimestamp::now(), false));
            self.commit_group().await?;
        }
        Ok(())
    }

    /// Abandons the open follower transaction (shutdown or reconnect).
    pub async fn abandon(&mut self) {
        self.inserts.clear();
        self.commit_times.clear();
        self.group = None;
        for table in self.tables.values_mut() {
            table.metrics.discard();
        }
        self.conn.rollback().await;
    }
}

fn old_tuple(old: &OldTuple) -> &TupleData {
    match old {
        OldTuple::Key(t) | OldTuple::Full(t) => t,
    }
}
