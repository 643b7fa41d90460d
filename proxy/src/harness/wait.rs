/*!
Waiting for replication to catch up: tests, the demo and the bench all need "everything
the leader has committed so far is applied on this follower" before they compare or
measure. Progress is read from the follower's replication origin (which pgsieve writes
in the same transaction as the data), never inferred from the data itself.
*/

use std::time::{Duration, Instant};

use tokio_postgres::GenericClient;

use super::error::{HarnessError, PgContext};

/// How often [`wait_caught_up`] polls the follower.
const POLL: Duration = Duration::from_millis(20);

/// Waits until the follower's replication origin `origin` has recorded the leader's
/// current WAL insert position (read once, at the call), i.e. every leader transaction
/// committed before the call is applied on the follower. Fails with
/// [`HarnessError::Timeout`] after `timeout`.
pub async fn wait_caught_up(
    leader: &impl GenericClient,
    follower: &impl GenericClient,
    origin: &str,
    timeout: Duration,
) -> Result<(), HarnessError> {
    let target: String = leader
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .ctx(|| "reading the leader's WAL insert position".into())?
        .get(0);
    poll(
        timeout,
        POLL,
        || format!("origin {origin} reaching the leader's WAL position {target}"),
        async || {
            let row = follower
                .query_one(
                    "SELECT coalesce((SELECT pg_replication_origin_progress(roname, true) \
                       FROM pg_replication_origin WHERE roname = $1) >= $2::text::pg_lsn, false)",
                    &[&origin, &target],
                )
                .await
                .ctx(|| format!("reading the progress of origin {origin}"))?;
            Ok(row.get::<_, bool>(0).then_some(()))
        },
    )
    .await?;
    settle(follower).await
}

/// Runs `probe` every `every` until it yields a value; fails with
/// [`HarnessError::Timeout`] naming `what()` once `timeout` has passed. The loop the
/// waits of the harness and the bench share.
pub async fn poll<T>(
    timeout: Duration,
    every: Duration,
    what: impl FnOnce() -> String,
    mut probe: impl AsyncFnMut() -> Result<Option<T>, HarnessError>,
) -> Result<T, HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(HarnessError::Timeout {
                what: what(),
                waited: timeout,
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// Origin progress is recorded with the commit record, a moment before the
/// committing transaction leaves the proc array: waits (briefly, bounded) until
/// no transaction is in progress on the follower, so a snapshot taken next
/// sees everything the origin says is applied.
async fn settle(follower: &impl GenericClient) -> Result<(), HarnessError> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let idle: bool = follower
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_snapshot_xip(pg_current_snapshot()))",
                &[],
            )
            .await
            .ctx(|| "reading the follower's running transactions".into())?
            .get(0);
        if idle || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until pgsieve has committed its initial copy on the follower: the origin
/// `origin` exists with non-zero progress (pgsieve records the slot's consistent
/// point in the same transaction as the last copied rows, so from then on the follower
/// holds everything the leader had committed before the slot was created). Unlike
/// [`wait_caught_up`], this does not depend on idle keepalives advancing the origin
/// past WAL that carries no transaction. Returns the recorded LSN as text.
pub async fn wait_initial_copy(
    follower: &impl GenericClient,
    origin: &str,
    timeout: Duration,
) -> Result<String, HarnessError> {
    poll(
        timeout,
        POLL,
        || format!("the initial copy recording origin {origin}"),
        async || {
            let row = follower
                .query_one(
                    "SELECT (SELECT pg_replication_origin_progress(roname, true)::text \
                       FROM pg_replication_origin WHERE roname = $1 \
                       AND pg_replication_origin_progress(roname, true) > '0/0'::pg_lsn)",
                    &[&origin],
                )
                .await
                .ctx(|| format!("reading the progress of origin {origin}"))?;
            Ok(row.get::<_, Option<String>>(0))
        },
    )
    .await
}
