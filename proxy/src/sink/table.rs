//! One follower table as the sink applies to it: how its rows are addressed
//! and the statements prepared for it, each prepared at its first use and
//! reused for the session.

use std::collections::HashMap;
use std::sync::Arc;

use pgsieve_protocol::Lsn;
use pgsieve_protocol::pgoutput::Relation;
use tokio_postgres::{Client, Statement};

use super::catalog::match_relation;
use super::connection::FollowerConnection;
use super::error::{ApplyContext, ApplyError, Operation, Statement as Kind};
use super::statements::TableShape;
use crate::metrics::TableMetrics;

/// A follower table and its prepared statements.
pub struct TableApply {
    /// How rows are addressed.
    pub shape: TableShape,
    /// Its qualified name (errors).
    pub name: Arc<str>,
    /// The leader's relation it was matched with.
    pub relation: Arc<Relation>,
    /// Its per-table counters.
    pub metrics: TableMetrics,
    /// Columns that find an existing row.
    pub match_columns: Vec<usize>,
    /// Multi-row inserts by (row count, upsert): 1 and powers of two up to
    /// the maximum.
    inserts: HashMap<(usize, bool), Statement>,
    copy: Option<Statement>,
    delete: Option<Statement>,
    /// UPDATE statements by the set of unchanged-TOAST columns they leave out.
    updates: HashMap<Box<[u64]>, Statement>,
    /// Scratch: the unchanged-TOAST columns of the update being applied
    /// (reused, so an update allocates only its parameters).
    pub unchanged: ColumnSet,
}

impl TableApply {
    /// Matches `relation` with the follower's table (out of band: the
    /// pipeline is settled first).
    pub async fn matched(
        conn: &mut FollowerConnection,
        leader: &Client,
        relation: &Arc<Relation>,
        metrics: TableMetrics,
    ) -> Result<Self, ApplyError> {
        let follower = conn.settled().await?;
        let shape = match_relation(leader, follower, relation)
            .await
            .map_err(|source| ApplyError::Schema {
                follower: conn.follower().to_owned(),
                source,
            })?;
        Ok(Self {
            name: Arc::from(shape.table.as_str()),
            match_columns: shape.match_columns(),
            shape,
            relation: relation.clone(),
            metrics,
            inserts: HashMap::new(),
            copy: None,
            delete: None,
            updates: HashMap::new(),
            unchanged: ColumnSet::with_columns(relation.columns.len()),
        })
    }

    /// Context of a statement on this table.
    pub fn context(&self, commit_lsn: Lsn, op: Operation) -> ApplyContext {
        ApplyContext {
            commit_lsn,
            table: self.name.clone(),
            op,
        }
    }

    async fn prepare(
        &self,
        conn: &mut FollowerConnection,
        sql: &str,
        kind: Kind,
        commit_lsn: Lsn,
    ) -> Result<Statement, ApplyError> {
        conn.prepare(sql, prepare_context(&self.name, commit_lsn, kind))
            .await
    }

    /// The INSERT of `rows` rows (an upsert with `upsert`).
    pub async fn insert(
        &mut self,
        conn: &mut FollowerConnection,
        rows: usize,
        upsert: bool,
        commit_lsn: Lsn,
    ) -> Result<Statement, ApplyError> {
        if let Some(statement) = self.inserts.get(&(rows, upsert)) {
            return Ok(statement.clone());
        }
        let sql = self.shape.insert_rows_sql(rows, upsert);
        let statement = self.prepare(conn, &sql, Kind::Insert, commit_lsn).await?;
        self.inserts.insert((rows, upsert), statement.clone());
        Ok(statement)
    }

    /// The `COPY … FROM STDIN` of every column.
    pub async fn copy(
        &mut self,
        conn: &mut FollowerConnection,
        commit_lsn: Lsn,
    ) -> Result<Statement, ApplyError> {
        let sql = || self.shape.copy_sql();
        let context = || prepare_context(&self.name, commit_lsn, Kind::Copy);
        prepare_once(&mut self.copy, conn, sql, context).await
    }

    /// The DELETE by the match columns.
    pub async fn delete(
        &mut self,
        conn: &mut FollowerConnection,
        commit_lsn: Lsn,
    ) -> Result<Statement, ApplyError> {
        let sql = || self.shape.delete_sql(&self.match_columns);
        let context = || prepare_context(&self.name, commit_lsn, Kind::Delete);
        prepare_once(&mut self.delete, conn, sql, context).await
    }

    /// The UPDATE of every column but those in [`Self::unchanged`].
    pub async fn update(
        &mut self,
        conn: &mut FollowerConnection,
        commit_lsn: Lsn,
    ) -> Result<Statement, ApplyError> {
        if let Some(statement) = self.updates.get(self.unchanged.words()) {
            return Ok(statement.clone());
        }
        let set_cols: Vec<usize> = (0..self.shape.columns.len())
            .filter(|&i| !self.unchanged.contains(i))
            .collect();
        let sql = self.shape.update_sql(&set_cols, &self.match_columns);
        let statement = self.prepare(conn, &sql, Kind::Update, commit_lsn).await?;
        self.updates
            .insert(self.unchanged.words().into(), statement.clone());
        Ok(statement)
    }
}

fn prepare_context(table: &Arc<str>, commit_lsn: Lsn, kind: Kind) -> ApplyContext {
    ApplyContext {
        commit_lsn,
        table: table.clone(),
        op: Operation::Prepare(kind),
    }
}

/// The statement in `slot`, prepared from `sql` at its first use (the hot
/// path only clones the cached handle).
async fn prepare_once(
    slot: &mut Option<Statement>,
    conn: &mut FollowerConnection,
    sql: impl FnOnce() -> String,
    context: impl FnOnce() -> ApplyContext,
) -> Result<Statement, ApplyError> {
    if let Some(statement) = slot {
        return Ok(statement.clone());
    }
    let statement = conn.prepare(&sql(), context()).await?;
    *slot = Some(statement.clone());
    Ok(statement)
}

/// A set of column positions, as many as the relation has (PostgreSQL
/// allows 1 600), in 64-bit words.
pub struct ColumnSet {
    words: Vec<u64>,
}

impl ColumnSet {
    fn with_columns(columns: usize) -> Self {
        Self {
            words: vec![0; columns.div_ceil(64)],
        }
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Adds `column`.
    pub fn insert(&mut self, column: usize) {
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
