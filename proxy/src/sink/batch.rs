//! Inserts gathered per table and sent together: a run of plain inserts as
//! one `COPY`, upserts (and short runs) as multi-row INSERTs in power-of-two
//! chunks, so each table needs at most a handful of prepared shapes.
//!
//! Inserts into different tables may be gathered side by side and sent in
//! another order than the leader wrote them: apply sessions run with
//! `session_replication_role = replica` (no triggers, no foreign-key checks)
//! and every other kind of change, every commit and every relation message
//! sends what is gathered first, so only inserts into *different* tables
//! trade places, inside one follower transaction. A policy load writing
//! roles, resources, permissions and annotations in turn then goes out as a
//! few large COPYs instead of many short INSERTs.

use bytes::BytesMut;
use pgsieve_protocol::Lsn;
use pgsieve_protocol::pgoutput::TupleData;

use super::connection::FollowerConnection;
use super::copy_in::encode_copy_row;
use super::error::{ApplyError, Operation};
use super::table::TableApply;
use super::value::{WireValue, encode_row};

/// Plain inserts into one table that go out as one `COPY` at most (and
/// fewer go out as multi-row INSERTs: a COPY waits for the follower to
/// accept it before its rows can follow).
const COPY_MAX_ROWS: usize = 4096;
const COPY_MIN_ROWS: usize = 64;
/// Rows gathered over every table at most (bounded memory: a few MiB).
const PENDING_MAX_ROWS: usize = 2 * COPY_MAX_ROWS;

/// What [`PendingInserts::add`] asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gathered {
    /// Room for more.
    Room,
    /// The batch at this index is full: send it.
    Full(usize),
    /// Too many rows are gathered over all tables: send everything.
    Overfull,
}

/// The batches being gathered, at most one per table.
#[derive(Default)]
pub struct PendingInserts {
    batches: Vec<InsertBatch>,
    rows: usize,
}

impl PendingInserts {
    /// Whether nothing is gathered.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Gathers `row` of `table` (a new batch takes `commit_lsn` and `upsert`
    /// from the transaction that starts it).
    pub fn add(
        &mut self,
        table: &TableApply,
        commit_lsn: Lsn,
        upsert: bool,
        row: &TupleData,
    ) -> Gathered {
        let oid = table.relation.oid;
        let index = match self.batches.iter().position(|b| b.oid == oid) {
            Some(index) => index,
            None => {
                self.batches
                    .push(InsertBatch::new(table, commit_lsn, upsert));
                self.batches.len() - 1
            }
        };
        self.rows += 1;
        if self.batches[index].add(table, row) {
            Gathered::Full(index)
        } else if self.rows >= PENDING_MAX_ROWS {
            Gathered::Overfull
        } else {
            Gathered::Room
        }
    }

    /// Takes the batch at `index` out, to be sent.
    pub fn take(&mut self, index: usize) -> InsertBatch {
        let batch = self.batches.swap_remove(index);
        self.rows -= batch.rows;
        batch
    }

    /// Takes the last batch out, to be sent (`None` when all are).
    pub fn pop(&mut self) -> Option<InsertBatch> {
        let batch = self.batches.pop()?;
        self.rows -= batch.rows;
        Some(batch)
    }

    /// Drops everything gathered (the follower transaction is abandoned).
    pub fn clear(&mut self) {
        self.batches.clear();
        self.rows = 0;
    }
}

/// Inserts waiting to be sent together.
pub struct InsertBatch {
    /// The table's relation OID.
    pub oid: u32,
    rows: usize,
    params: Vec<WireValue>,
    commit_lsn: Lsn,
    /// Whether the batch's statements are upserts (decided by its first
    /// transaction: later ones commit later, so are no more at risk).
    upsert: bool,
}

impl InsertBatch {
    /// An empty batch for `table`, its room reserved once.
    pub fn new(table: &TableApply, commit_lsn: Lsn, upsert: bool) -> Self {
        let width = table.shape.columns.len();
        Self {
            oid: table.relation.oid,
            rows: 0,
            params: Vec::with_capacity(table.shape.max_insert_rows().max(COPY_MIN_ROWS) * width),
            commit_lsn,
            upsert,
        }
    }

    /// Adds a row; `true` when the batch is full and must be sent.
    pub fn add(&mut self, table: &TableApply, row: &TupleData) -> bool {
        encode_row(row, &mut self.params);
        self.rows += 1;
        let max_rows = match self.upsert {
            true => table.shape.max_insert_rows(),
            false => COPY_MAX_ROWS,
        };
        self.rows >= max_rows
    }

    /// Sends the batch on `conn`.
    pub async fn send(
        mut self,
        table: &mut TableApply,
        conn: &mut FollowerConnection,
    ) -> Result<(), ApplyError> {
        let width = table.shape.columns.len().max(1);
        if !self.upsert && self.rows >= COPY_MIN_ROWS && self.params.len() == self.rows * width {
            let mut data = BytesMut::with_capacity(self.params.len() * 16);
            if self
                .params
                .chunks(width)
                .all(|row| encode_copy_row(row, &mut data))
            {
                let statement = table.copy(conn, self.commit_lsn).await?;
                let context = table.context(self.commit_lsn, Operation::Insert);
                let weight = self.params.len();
                drop(self);
                return conn
                    .push_copy(statement, data.freeze(), context, weight)
                    .await;
            }
        }
        let max_rows = table.shape.max_insert_rows();
        while self.rows > 0 {
            let chunk = if self.rows >= max_rows {
                max_rows
            } else {
                1 << (usize::BITS - 1 - self.rows.leading_zeros())
            };
            let statement = table
                .insert(conn, chunk, self.upsert, self.commit_lsn)
                .await?;
            // Every row has the table's width (the tuple gate in `txn`).
            let rest = self
                .params
                .split_off((chunk * width).min(self.params.len()));
            let params = std::mem::replace(&mut self.params, rest);
            self.rows -= chunk;
            let context = table.context(self.commit_lsn, Operation::Insert);
            conn.push(&statement, params, context).await?;
        }
        Ok(())
    }
}
