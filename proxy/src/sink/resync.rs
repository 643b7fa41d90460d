//! Grant and revoke effects on one follower: re-sync exactly the variables
//! whose membership in this follower's replica set flipped, inside the
//! follower transaction that applies the leader transaction causing it.
//!
//! Out of the set → delete the variable's `secrets` rows on the follower.
//! In the set → delete them too, then copy the leader's *current* rows —
//! but only those the leader, queried now with the same rule in SQL, still
//! places in the set. The stream may lag the leader: a revoke committed
//! there but not yet streamed must not let values through. Rows copied ahead
//! of the stream are re-applied idempotently when their changes arrive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgsieve_filters::{Flip, ReplicaSetSpec, Rule};
use pgsieve_protocol::Lsn;
use tokio_postgres::Client;

use super::connection::FollowerConnection;
use super::error::{ApplyContext, ApplyError, Operation, Statement};
use super::secrets::{BACKFILL_CHUNK_IDS, SecretsTable};
use crate::conjur::SECRETS_QUALIFIED as SECRETS;
use crate::metrics::FollowerMetrics;

/// What one re-sync did.
#[derive(Debug, Clone, Copy)]
pub struct Resynced {
    /// Rows copied from the leader.
    pub rows: u64,
    /// The leader WAL position after the copy's snapshot, when rows may
    /// have been copied ahead of the stream (inserts until it are upserts).
    pub copied_through: Option<Lsn>,
}

/// Per-follower re-sync of flipped variables.
#[derive(Debug)]
pub struct Resync {
    set: ReplicaSetSpec,
    always_like: Vec<String>,
    prepared: Option<Prepared>,
}

#[derive(Debug)]
struct Prepared {
    table: SecretsTable,
    select_sql: String,
}

/// The leader-side rule in SQL: `$1` data group, `$2` resource ids, `$3`
/// true for rule `any`, `$4` LIKE patterns of `always`. Any resource kind
/// (only public keys are never filtered, and they never flip).
fn select_sql(select_list: &str) -> String {
    format!(
        "WITH RECURSIVE closure(role_id) AS ( \
           SELECT $1::text \
           UNION SELECT m.role_id FROM public.role_memberships m JOIN closure c ON m.member_id = c.role_id) \
         SELECT {select_list} FROM {SECRETS} s JOIN public.resources r ON r.resource_id = s.resource_id \
         WHERE s.resource_id = ANY($2::text[]) AND ( \
           r.owner_id IN (SELECT role_id FROM closure) \
           OR EXISTS (SELECT 1 FROM public.permissions p WHERE p.resource_id = s.resource_id \
                      AND p.role_id IN (SELECT role_id FROM closure) \
                      AND ($3::bool OR p.privilege = 'execute')) \
           OR s.resource_id LIKE ANY($4::text[]))"
    )
}

/// Whether 32-bit xid `$1` is visible to a snapshot taken now (its epoch
/// taken from the snapshot's xmax, one less when the xid is ahead of xmax's
/// low half, i.e. from before a wraparound).
const VISIBLE_SQL: &str = "\
SELECT pg_visible_in_snapshot(
         ((((x >> 32) - (($1::int8 > (x & 4294967295))::int)) << 32) | $1::int8)::text::xid8,
         pg_current_snapshot())
FROM (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8 AS x) AS s";

/// How long a committed transaction may stay invisible before apply stops.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until leader transaction `xid` is visible to new snapshots. Logical
/// decoding may hand over a commit as soon as its WAL record is flushed, a
/// moment before the committing backend leaves the proc array; a backfill
/// query in that moment would not see the grant and would copy nothing.
/// `false` after [`VISIBLE_TIMEOUT`]: apply then stops rather than re-sync
/// from a view that may lack the grant.
async fn wait_visible(leader: &Client, xid: u32) -> Result<bool, tokio_postgres::Error> {
    let started = Instant::now();
    loop {
        let visible: bool = leader
            .query_one(VISIBLE_SQL, &[&i64::from(xid)])
            .await?
            .get(0);
        if visible {
            return Ok(true);
        }
        if started.elapsed() > VISIBLE_TIMEOUT {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A `*` glob as a LIKE pattern.
pub fn glob_to_like(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len());
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

impl Resync {
    /// Re-sync for the follower holding replica set `set`.
    pub fn new(set: ReplicaSetSpec) -> Self {
        let always_like = set.always.iter().map(|g| glob_to_like(g)).collect();
        Self {
            set,
            always_like,
            prepared: None,
        }
    }

    async fn prepare(&mut self, conn: &mut FollowerConnection) -> Result<&Prepared, ApplyError> {
        if self.prepared.is_none() {
            let context = ApplyContext {
                commit_lsn: Lsn::ZERO,
                table: Arc::from(SECRETS),
                op: Operation::Prepare(Statement::Resync),
            };
            let client = conn.settled().await?;
            let table = SecretsTable::prepare(client)
                .await
                .map_err(|source| ApplyError::statement(conn.follower(), context, source))?;
            let select_sql = select_sql(&table.leader_select_list());
            self.prepared = Some(Prepared { table, select_sql });
        }
        self.prepared.as_ref().ok_or_else(|| {
            ApplyError::invalid(conn.follower(), Lsn::ZERO, "resync statements missing")
        })
    }

    /// Re-syncs `flips` (all of this follower's set) inside the open
    /// follower transaction.
    pub async fn run(
        &mut self,
        conn: &mut FollowerConnection,
        leader: &Client,
        metrics: &FollowerMetrics,
        (xid, commit_lsn): (u32, Lsn),
        flips: &[&Flip],
    ) -> Result<Resynced, ApplyError> {
        let (wanted, leaving): (Vec<&Flip>, Vec<&Flip>) =
            flips.iter().copied().partition(|f| f.now_in);
        // Variables that left the set: purge (counted as such). Variables
        // that entered it: clear whatever the follower holds, then copy.
        self.purge(conn, metrics, commit_lsn, &leaving).await?;
        if wanted.is_empty() {
            return Ok(Resynced {
                rows: 0,
                copied_through: None,
            });
        }
        let follower = conn.follower().to_owned();
        let leader_err = |op: Operation| {
            let follower = follower.clone();
            move |source| ApplyError::statement(&follower, secrets_context(commit_lsn, op), source)
        };
        let visible = wait_visible(leader, xid)
            .await
            .map_err(leader_err(Operation::ResyncWait))?;
        if !visible {
            return Err(ApplyError::invalid(
                conn.follower(),
                commit_lsn,
                format!(
                    "leader transaction {xid} was still invisible to new snapshots after \
                     {VISIBLE_TIMEOUT:?}; cannot re-sync its grants"
                ),
            ));
        }
        let rows = self.copy(conn, leader, commit_lsn, &wanted).await?;
        // Every transaction the query's snapshot saw committed before the
        // WAL position read after it: until the stream passes it, inserts
        // may meet rows just copied.
        let after: String = leader
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .map_err(leader_err(Operation::ResyncRead))?
            .get(0);
        let after: Lsn = after.parse().map_err(|_| {
            ApplyError::invalid(
                conn.follower(),
                commit_lsn,
                format!("the leader returned an unreadable WAL position {after:?}"),
            )
        })?;
        metrics.backfilled(wanted.len() as u64, rows);
        Ok(Resynced {
            rows,
            copied_through: Some(after),
        })
    }

    /// Deletes the rows of variables that left the set, a chunk of ids at a
    /// time (one revoke may flip a whole policy's variables).
    async fn purge(
        &mut self,
        conn: &mut FollowerConnection,
        metrics: &FollowerMetrics,
        commit_lsn: Lsn,
        leaving: &[&Flip],
    ) -> Result<(), ApplyError> {
        if leaving.is_empty() {
            return Ok(());
        }
        metrics.purged(leaving.len() as u64);
        let delete = self.prepare(conn).await?.table.delete.clone();
        for chunk in leaving.chunks(BACKFILL_CHUNK_IDS) {
            let client = conn.pipelined_client();
            let purged_rows = metrics.purge_rows();
            let delete = delete.clone();
            let chunk = ids(chunk);
            conn.push_future(
                async move {
                    let rows = client.execute(&delete, &[&chunk]).await?;
                    purged_rows.increment(rows);
                    Ok(rows)
                },
                secrets_context(commit_lsn, Operation::ResyncPurge),
            )
            .await?;
        }
        Ok(())
    }

    /// Clears and copies the variables that entered the set, the rows of a
    /// few hundred resources at a time so memory does not grow with how
    /// many one grant flips; returns the rows copied.
    async fn copy(
        &mut self,
        conn: &mut FollowerConnection,
        leader: &Client,
        commit_lsn: Lsn,
        wanted: &[&Flip],
    ) -> Result<u64, ApplyError> {
        let any = self.set.rule == Rule::Any;
        let prepared = self.prepare(conn).await?;
        let (delete, insert, select) = (
            prepared.table.delete.clone(),
            prepared.table.insert.clone(),
            prepared.select_sql.clone(),
        );
        let mut copied = 0u64;
        for chunk in wanted.chunks(BACKFILL_CHUNK_IDS) {
            let chunk = ids(chunk);
            let client = conn.pipelined_client();
            let delete = delete.clone();
            let clear = chunk.clone();
            conn.push_future(
                async move { client.execute(&delete, &[&clear]).await },
                secrets_context(commit_lsn, Operation::ResyncClear),
            )
            .await?;
            let rows = leader
                .query(
                    &select,
                    &[&self.set.data_group, &chunk, &any, &self.always_like],
                )
                .await
                .map_err(|source| {
                    ApplyError::statement(
                        conn.follower(),
                        secrets_context(commit_lsn, Operation::ResyncRead),
                        source,
                    )
                })?;
            copied += rows.len() as u64;
            for row in rows {
                conn.push(
                    &insert,
                    SecretsTable::insert_params(&row),
                    secrets_context(commit_lsn, Operation::ResyncCopy),
                )
                .await?;
            }
        }
        Ok(copied)
    }
}

fn secrets_context(commit_lsn: Lsn, op: Operation) -> ApplyContext {
    ApplyContext {
        commit_lsn,
        table: Arc::from(SECRETS),
        op,
    }
}

fn ids(flips: &[&Flip]) -> Vec<String> {
    flips.iter().map(|f| f.resource_id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_escaped_like_patterns() {
        assert_eq!(
            glob_to_like("*:variable:conjur/shared/*"),
            "%:variable:conjur/shared/%"
        );
        assert_eq!(glob_to_like("a_b%c"), "a\\_b\\%c");
    }
}
