/*!
The chunked merge of two key-ordered row streams, leader and follower.

Each side is a server-side cursor over [`TablePlan::scan_sql`] fetched
`chunk` rows at a time (or, for a re-check, the rows of a key list), so
memory holds at most one chunk per side plus the differences not yet
written, whatever the table's size. Keys compare as byte strings, column by
column, `None` (NULL) first: the order the SQL asks both servers for.
Leader `secrets` rows outside the follower's replica set are skipped here,
before anything else sees them; follower rows outside it are reported.
*/

use std::cmp::Ordering;
use std::collections::VecDeque;

use pgsieve_filters::Model;
use tokio_postgres::{Client, Row};

use super::plan::TablePlan;

/// A row's key: the text of each key column (`None` for NULL).
pub type Key = Vec<Option<String>>;

/// Which server a failed statement ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The leader (reads at the snapshot).
    Leader,
    /// The follower.
    Follower,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Leader => "leader",
            Side::Follower => "follower",
        })
    }
}

/// What differs about one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// On the leader (in the follower's projection), not on the follower.
    Missing,
    /// On both, with different values.
    Different,
    /// On the follower, not in the leader's projection.
    Extra,
}

/// One difference found by the merge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Difference {
    /// What differs.
    pub kind: DiffKind,
    /// The row's key texts (the md5 of the row for a table without a key).
    pub key: Key,
    /// Leader row hash (`None`: no leader row, or no key).
    pub leader_hash: Option<String>,
    /// Follower row hash (`None`: no follower row, or no key).
    pub follower_hash: Option<String>,
    /// The follower row is a `secrets` row outside the replica set.
    pub out_of_set: bool,
}

/// What one step of the merge found.
#[derive(Debug, Default)]
pub struct Batch {
    /// Distinct keys looked at (rows present on either side).
    pub compared: u64,
    /// Leader rows left out by the replica-set decision.
    pub leader_skipped: u64,
    /// Differences, in key order.
    pub differences: Vec<Difference>,
}

/// One side of the merge: a cursor fetched in chunks, or rows already read.
pub struct RowSource<'c> {
    client: &'c Client,
    cursor: Option<&'static str>,
    buf: VecDeque<Row>,
    chunk: usize,
    done: bool,
}

impl<'c> RowSource<'c> {
    /// Declares cursor `name` over `sql` on `client` (which must be inside a
    /// transaction).
    pub async fn scan(
        client: &'c Client,
        name: &'static str,
        sql: &str,
        chunk: usize,
    ) -> Result<RowSource<'c>, tokio_postgres::Error> {
        client
            .batch_execute(&format!("DECLARE {name} NO SCROLL CURSOR FOR {sql}"))
            .await?;
        Ok(RowSource {
            client,
            cursor: Some(name),
            buf: VecDeque::new(),
            chunk: chunk.max(1),
            done: false,
        })
    }

    /// The rows of `keys` (one `text[]` per key column), read at once:
    /// re-checks are bounded by the caller.
    pub async fn lookup(
        client: &'c Client,
        plan: &TablePlan,
        keys: &[Key],
    ) -> Result<RowSource<'c>, tokio_postgres::Error> {
        let columns = key_columns(plan.key_len(), keys);
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = client.query(&plan.lookup_sql(), &params).await?;
        Ok(RowSource {
            client,
            cursor: None,
            buf: rows.into(),
            chunk: 1,
            done: true,
        })
    }

    async fn fill(&mut self) -> Result<(), tokio_postgres::Error> {
        if !self.buf.is_empty() || self.done {
            return Ok(());
        }
        let Some(name) = self.cursor else {
            self.done = true;
            return Ok(());
        };
        let rows = self
            .client
            .query(&format!("FETCH {} FROM {name}", self.chunk), &[])
            .await?;
        if rows.len() < self.chunk {
            self.done = true;
        }
        self.buf.extend(rows);
        Ok(())
    }

    /// Closes the cursor (if any).
    pub async fn close(self) -> Result<(), tokio_postgres::Error> {
        if let Some(name) = self.cursor {
            self.client.batch_execute(&format!("CLOSE {name}")).await?;
        }
        Ok(())
    }
}

/// The key texts as one array per key column (the `lookup` parameters).
pub fn key_columns(width: usize, keys: &[Key]) -> Vec<Vec<Option<String>>> {
    (0..width)
        .map(|i| keys.iter().map(|k| k.get(i).cloned().flatten()).collect())
        .collect()
}

fn text(row: &Row, i: usize) -> Option<&str> {
    row.get::<_, Option<&str>>(i)
}

/// Compares the key columns of two rows, bytewise, NULL first.
fn compare_keys(width: usize, a: &Row, b: &Row) -> Ordering {
    for i in 0..width {
        let order = text(a, i)
            .map(str::as_bytes)
            .cmp(&text(b, i).map(str::as_bytes));
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

fn key_of(width: usize, row: &Row) -> Key {
    (0..width)
        .map(|i| text(row, i).map(str::to_owned))
        .collect()
}

/// Merges a leader and a follower source of one table.
///
/// Each side must come in strictly increasing key order (non-decreasing
/// without a key) as Rust compares keys; a row out of that order (a server
/// that sorted by another collation) stops the merge with
/// [`MergeError::OutOfOrder`]
/// instead of reporting spurious differences.
pub struct Merge<'c, 'm> {
    plan: &'c TablePlan,
    leader: RowSource<'c>,
    follower: RowSource<'c>,
    model: &'m Model,
    set_bit: Option<usize>,
    last_leader: Option<Row>,
    last_follower: Option<Row>,
}

/// Why a merge step failed.
#[derive(Debug)]
pub enum MergeError {
    /// A statement failed.
    Sql(Side, tokio_postgres::Error),
    /// A side is not in byte order.
    OutOfOrder(Side),
}

impl<'c, 'm> Merge<'c, 'm> {
    /// A merge of `leader` and `follower` rows of `plan`'s table, `secrets`
    /// filtered for `set_bit` of `model`.
    pub fn new(
        plan: &'c TablePlan,
        leader: RowSource<'c>,
        follower: RowSource<'c>,
        model: &'m Model,
        set_bit: Option<usize>,
    ) -> Self {
        Merge {
            plan,
            leader,
            follower,
            model,
            set_bit,
            last_leader: None,
            last_follower: None,
        }
    }

    /// Takes the next row of `side`, checking it follows the previous one.
    fn pop(&mut self, side: Side) -> Result<Option<Row>, MergeError> {
        let width = self.plan.key_len();
        let strict = self.plan.has_primary_key;
        let (source, last) = match side {
            Side::Leader => (&mut self.leader, &mut self.last_leader),
            Side::Follower => (&mut self.follower, &mut self.last_follower),
        };
        let Some(row) = source.buf.pop_front() else {
            return Ok(None);
        };
        if let Some(prev) = last.as_ref() {
            let order = compare_keys(width, prev, &row);
            if order == Ordering::Greater || (strict && order == Ordering::Equal) {
                return Err(MergeError::OutOfOrder(side));
            }
        }
        *last = Some(row.clone());
        Ok(Some(row))
    }

    /// Whether the row may be held by the follower.
    fn in_set(&self, row: &Row) -> bool {
        match (self.plan.filter_key, self.set_bit) {
            (Some(i), Some(bit)) => {
                text(row, i).is_some_and(|id| self.model.decide(id.as_bytes()).contains(bit))
            }
            _ => true,
        }
    }

    fn hash(&self, row: &Row) -> Option<String> {
        self.plan
            .has_primary_key
            .then(|| text(row, self.plan.key_len()).map(str::to_owned))
            .flatten()
    }

    /// Runs the merge until `max_rows` keys were looked at or `max_diffs`
    /// differences are pending; `None` once both sides are exhausted.
    pub async fn next_batch(
        &mut self,
        max_rows: u64,
        max_diffs: usize,
    ) -> Result<Option<Batch>, MergeError> {
        let width = self.plan.key_len();
        let mut batch = Batch::default();
        let mut any = false;
        while batch.compared < max_rows && batch.differences.len() < max_diffs {
            // Both servers fetch (and, the first time, sort) at once.
            let (leader, follower) = tokio::join!(self.leader.fill(), self.follower.fill());
            leader.map_err(|e| MergeError::Sql(Side::Leader, e))?;
            follower.map_err(|e| MergeError::Sql(Side::Follower, e))?;
            if let Some(row) = self.leader.buf.front()
                && !self.in_set(row)
            {
                self.pop(Side::Leader)?;
                batch.leader_skipped += 1;
                any = true;
                continue;
            }
            let order = match (self.leader.buf.front(), self.follower.buf.front()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(l), Some(f)) => compare_keys(width, l, f),
            };
            any = true;
            batch.compared += 1;
            match order {
                Ordering::Less => {
                    if let Some(l) = self.pop(Side::Leader)? {
                        batch.differences.push(Difference {
                            kind: DiffKind::Missing,
                            key: key_of(width, &l),
                            leader_hash: self.hash(&l),
                            follower_hash: None,
                            out_of_set: false,
                        });
                    }
                }
                Ordering::Greater => {
                    if let Some(f) = self.pop(Side::Follower)? {
                        batch.differences.push(Difference {
                            kind: DiffKind::Extra,
                            key: key_of(width, &f),
                            leader_hash: None,
                            follower_hash: self.hash(&f),
                            out_of_set: !self.in_set(&f),
                        });
                    }
                }
                Ordering::Equal => {
                    let (Some(l), Some(f)) = (self.pop(Side::Leader)?, self.pop(Side::Follower)?)
                    else {
                        break;
                    };
                    let (lh, fh) = (self.hash(&l), self.hash(&f));
                    if lh != fh {
                        batch.differences.push(Difference {
                            kind: DiffKind::Different,
                            key: key_of(width, &l),
                            leader_hash: lh,
                            follower_hash: fh,
                            out_of_set: false,
                        });
                    }
                }
            }
        }
        Ok(any.then_some(batch))
    }

    /// Closes both cursors.
    pub async fn close(self) -> Result<(), (Side, tokio_postgres::Error)> {
        self.leader.close().await.map_err(|e| (Side::Leader, e))?;
        self.follower.close().await.map_err(|e| (Side::Follower, e))
    }
}
