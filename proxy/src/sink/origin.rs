//! The follower's replication origin: where progress lives, inside the same
//! transactions as the data, so a crash at any instant resumes exactly.

use pgsieve_protocol::Lsn;
use postgres_types::{FromSql, Type};
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

/// The durably flushed progress of `origin` (`0/0` while it has none).
///
/// An answer that is not an LSN is an error, never a made-up `0/0`: a
/// follower at `0/0` counts as fresh or behind a gap, which re-copies or
/// resyncs it (ARCHITECTURE.md, "Session start and gaps").
pub async fn origin_progress(client: &Client, origin: &str) -> Result<Lsn, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_replication_origin_progress($1, true)::text",
            &[&origin],
        )
        .await?;
    let position: Option<OriginPosition> = row.try_get(0)?;
    Ok(position.map_or(Lsn::ZERO, |p| p.0))
}

/// An origin position read as text (`X/X`), checked while the row is read.
struct OriginPosition(Lsn);

impl<'a> FromSql<'a> for OriginPosition {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = <&str as FromSql>::from_sql(ty, raw)?;
        Ok(OriginPosition(parse_origin_position(text)?))
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

/// A replication origin position that is not an LSN.
#[derive(Debug, thiserror::Error)]
#[error("unreadable replication origin position {shown:?}")]
pub struct UnreadableOrigin {
    /// The answer, cut to 40 characters.
    shown: String,
}

/// Parses the text of `pg_replication_origin_progress`.
fn parse_origin_position(text: &str) -> Result<Lsn, UnreadableOrigin> {
    text.parse().map_err(|_| UnreadableOrigin {
        shown: text.chars().take(40).collect(),
    })
}

/// SQL that records `$1` (pg_lsn as text) and `$2` (commit time, µs since
/// 2000-01-01 as bigint) as the progress of the current transaction.
pub const XACT_SETUP_SQL: &str = "SELECT pg_replication_origin_xact_setup($1::text::pg_lsn, \
     timestamptz '2000-01-01 00:00:00+00' + $2::bigint * interval '1 microsecond')";

/// SQL that gives the current transaction an xid: PostgreSQL persists origin
/// progress only for transactions that have one.
pub const FORCE_XID_SQL: &str = "SELECT txid_current()";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_position_is_an_lsn_or_an_error() {
        assert_eq!(
            parse_origin_position("16/B374D848").ok(),
            Some(Lsn(0x16_B374_D848))
        );
        assert_eq!(parse_origin_position("0/0").ok(), Some(Lsn::ZERO));
        for bad in ["", "garbage", "1/2/3", "0/123456789", "-1/0"] {
            let err = parse_origin_position(bad).expect_err(bad);
            assert!(
                err.to_string()
                    .starts_with("unreadable replication origin position")
            );
        }
    }

    #[test]
    fn an_unreadable_origin_fails_the_row_read() {
        assert!(OriginPosition::from_sql(&Type::TEXT, b"not an lsn").is_err());
        let read = OriginPosition::from_sql(&Type::TEXT, b"0/16B3748")
            .ok()
            .map(|p| p.0);
        assert_eq!(read, Some(Lsn(0x16B_3748)));
        assert!(!OriginPosition::accepts(&Type::INT8));
    }
}
