//! The follower's replication origin: where progress lives, inside the same
//! transactions as the data, so a crash at any instant resumes exactly.

use pgsieve_protocol::Lsn;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// How long a replication origin still bound to an exiting session is waited for.
const ORIGIN_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Prepares an apply session: triggers and FK checks off (the leader's WAL
/// already carries their effects), synchronous commit on (a commit that
/// returned is durable, so it may be acknowledged to the leader), and the
/// origin created and bound to this session. Returns the origin's durable
/// progress (`0/0` before the first transaction).
pub async fn setup_apply_session(
    client: &Client,
    origin: &str,
) -> Result<Lsn, tokio_postgres::Error> {
    client
        .batch_execute(
            "SET session_replication_role = replica; SET synchronous_commit = on; \
             SET statement_timeout = 0; SET lock_timeout = 0",
        )
        .await?;
    client
        .execute(
            "SELECT pg_replication_origin_create($1) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
            &[&origin],
        )
        .await?;
    // The backend of a session this process just left (a rewind, a
    // reconnect) may still hold the origin for a moment: wait for it, briefly.
    let deadline = std::time::Instant::now() + ORIGIN_BUSY_WAIT;
    loop {
        match client
            .execute("SELECT pg_replication_origin_session_setup($1)", &[&origin])
            .await
        {
            Ok(_) => break,
            Err(e)
                if e.code() == Some(&SqlState::OBJECT_IN_USE)
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
    origin_progress(client, origin).await
}

/// The durably flushed progress of `origin` (`0/0` if it has none).
pub async fn origin_progress(client: &Client, origin: &str) -> Result<Lsn, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT coalesce(pg_replication_origin_progress($1, true)::text, '0/0')",
            &[&origin],
        )
        .await?;
    let text: String = row.get(0);
    Ok(text.parse().unwrap_or(Lsn::ZERO))
}

/// SQL that records `$1` (pg_lsn as text) and `$2` (commit time, µs since
/// 2000-01-01 as bigint) as the progress of the current transaction.
pub const XACT_SETUP_SQL: &str = "SELECT pg_replication_origin_xact_setup($1::text::pg_lsn, \
     timestamptz '2000-01-01 00:00:00+00' + $2::bigint * interval '1 microsecond')";

/// SQL that gives the current transaction an xid: PostgreSQL persists origin
/// progress only for transactions that have one.
pub const FORCE_XID_SQL: &str = "SELECT txid_current()";
