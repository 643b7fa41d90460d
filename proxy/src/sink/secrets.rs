//! Statements on a follower's `secrets` table shared by the two writers that
//! copy secrets outside the stream: grant backfills in the stream
//! (`resync`) and the session-start reconcile (`reconcile.rs`).
//!
//! Columns are the follower's, by name; values travel as text, and the
//! leader side selects the same names cast to text, so types that differ in
//! OID between databases (enums, `bytea`) still match.

use tokio_postgres::{Client, Statement};

use super::catalog::table_columns;
use super::statements::quote_ident;
use super::value::WireValue;
use crate::conjur::SECRETS_QUALIFIED;

/// How many resource ids one backfill query asks the leader for: bounds the
/// rows held in memory at once (ids × versions each).
pub const BACKFILL_CHUNK_IDS: usize = 256;

/// Prepared statements on the follower's `secrets`.
#[derive(Debug, Clone)]
pub struct SecretsTable {
    /// Column names on the follower, in its order.
    pub columns: Vec<String>,
    /// `DELETE … WHERE resource_id = ANY($1::text[])`.
    pub delete: Statement,
    /// `INSERT … VALUES (…) ON CONFLICT DO NOTHING` of one row (all columns).
    pub insert: Statement,
}

impl SecretsTable {
    /// Prepares the statements on `follower`.
    pub async fn prepare(follower: &Client) -> Result<Self, tokio_postgres::Error> {
        let columns: Vec<String> = table_columns(follower, SECRETS_QUALIFIED)
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect();
        let names = columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let params = (1..=columns.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let delete = follower
            .prepare(&format!(
                "DELETE FROM {SECRETS_QUALIFIED} WHERE resource_id = ANY($1::text[])"
            ))
            .await?;
        let insert = follower
            .prepare(&format!(
                "INSERT INTO {SECRETS_QUALIFIED} ({names}) VALUES ({params}) ON CONFLICT DO NOTHING"
            ))
            .await?;
        Ok(Self {
            columns,
            delete,
            insert,
        })
    }

    /// `s."col"::text, …` for a leader query over `secrets s`, in the
    /// follower's column order.
    pub fn leader_select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| format!("s.{}::text", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The parameters of [`SecretsTable::insert`] for one leader row read
    /// with [`SecretsTable::leader_select_list`].
    pub fn insert_params(row: &tokio_postgres::Row) -> Vec<WireValue> {
        (0..row.len())
            .map(|i| match row.get::<_, Option<String>>(i) {
                Some(text) => WireValue::text(text.into()),
                None => WireValue::NULL,
            })
            .collect()
    }
}
