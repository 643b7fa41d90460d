//! SQL text for applying row changes: built once per relation (and per set
//! of unchanged-TOAST columns for updates), then prepared and reused.
//!
//! Every statement takes its values as parameters in the leader's column
//! order; the follower infers each parameter's type from its own column, and
//! values travel in pgoutput's text (or binary) form, so types are matched
//! by name on the follower, never by leader OID.

use std::fmt::Write as _;

pub use crate::sql::{qualified_name, quote_ident};

/// How rows of one table are addressed on the follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    /// Quoted, schema-qualified table name.
    pub table: String,
    /// Column names in the leader's (pgoutput) order.
    pub columns: Vec<String>,
    /// Indices into `columns` of the follower's primary key; empty when the
    /// follower table has none (rows are then matched on every column).
    pub primary_key: Vec<usize>,
}

impl TableShape {
    /// Whether rows are addressed by a primary key.
    pub fn has_primary_key(&self) -> bool {
        !self.primary_key.is_empty()
    }

    /// Columns used to find an existing row.
    pub fn match_columns(&self) -> Vec<usize> {
        if self.has_primary_key() {
            self.primary_key.clone()
        } else {
            (0..self.columns.len()).collect()
        }
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// INSERT of all columns; an upsert on the primary key (idempotent replay).
    pub fn insert_sql(&self) -> String {
        self.insert_rows_sql(1, true)
    }

    /// Most rows one multi-row INSERT may carry (PostgreSQL allows 65 535
    /// parameters per statement).
    pub fn max_insert_rows(&self) -> usize {
        (65_535 / self.columns.len().max(1)).clamp(1, 256)
    }

    /// `COPY … FROM STDIN` of all columns in the leader's order (text
    /// format): runs of plain inserts ([`super::copy_in`]).
    pub fn copy_sql(&self) -> String {
        format!("COPY {} ({}) FROM STDIN", self.table, self.column_list())
    }

    /// INSERT of `rows` rows at once (parameters row by row); with `upsert`,
    /// ON CONFLICT on the primary key. Consecutive leader inserts into one
    /// table travel in one statement; two of them never share a key (the
    /// leader would have needed a DELETE in between, which ends the batch),
    /// so ON CONFLICT never sees a row twice. A plain INSERT saves the
    /// follower the conflict probe (a sixth of its CPU on single-row
    /// rotations); the sink uses it wherever the follower cannot hold the
    /// row yet (see `Sink::upsert_until`).
    pub fn insert_rows_sql(&self, rows: usize, upsert: bool) -> String {
        let width = self.columns.len();
        let values = (0..rows)
            .map(|r| {
                let params = (1..=width)
                    .map(|c| format!("${}", r * width + c))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("({params})")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES {values}",
            self.table,
            self.column_list()
        );
        if upsert && self.has_primary_key() {
            let key = self
                .primary_key
                .iter()
                .map(|&i| quote_ident(&self.columns[i]))
                .collect::<Vec<_>>()
                .join(", ");
            let rest: Vec<String> = (0..self.columns.len())
                .filter(|i| !self.primary_key.contains(i))
                .map(|i| {
                    let c = quote_ident(&self.columns[i]);
                    format!("{c} = EXCLUDED.{c}")
                })
                .collect();
            if rest.is_empty() {
                let _ = write!(sql, " ON CONFLICT ({key}) DO NOTHING");
            } else {
                let _ = write!(
                    sql,
                    " ON CONFLICT ({key}) DO UPDATE SET {}",
                    rest.join(", ")
                );
            }
        }
        sql
    }

    /// The WHERE clause matching `columns` against parameters numbered from
    /// `first_param`. Without a primary key the match is null-safe and hits
    /// at most one row (duplicates are legal there).
    fn where_clause(&self, match_cols: &[usize], first_param: usize) -> String {
        let op = if self.has_primary_key() {
            "="
        } else {
            "IS NOT DISTINCT FROM"
        };
        let cond = match_cols
            .iter()
            .enumerate()
            .map(|(n, &i)| {
                format!(
                    "{} {op} ${}",
                    quote_ident(&self.columns[i]),
                    first_param + n
                )
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        if self.has_primary_key() {
            cond
        } else {
            format!(
                "ctid = (SELECT ctid FROM {} WHERE {cond} LIMIT 1)",
                self.table
            )
        }
    }

    /// UPDATE setting `set_cols` (parameters 1..) of the row matched by
    /// `match_cols` (parameters after them). Unchanged-TOAST columns are left
    /// out of `set_cols` by the caller.
    pub fn update_sql(&self, set_cols: &[usize], match_cols: &[usize]) -> String {
        let set = set_cols
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{} = ${}", quote_ident(&self.columns[i]), n + 1))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "UPDATE {} SET {set} WHERE {}",
            self.table,
            self.where_clause(match_cols, set_cols.len() + 1)
        )
    }

    /// DELETE of the row matched by `match_cols` (parameters 1..).
    pub fn delete_sql(&self, match_cols: &[usize]) -> String {
        format!(
            "DELETE FROM {} WHERE {}",
            self.table,
            self.where_clause(match_cols, 1)
        )
    }
}

/// TRUNCATE of several tables at once (the leader lists every table its
/// CASCADE reached, so foreign keys between them stay satisfied).
pub fn truncate_sql(tables: &[&str], cascade: bool, restart_identity: bool) -> String {
    let mut sql = format!("TRUNCATE {}", tables.join(", "));
    if restart_identity {
        sql.push_str(" RESTART IDENTITY");
    }
    if cascade {
        sql.push_str(" CASCADE");
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> TableShape {
        TableShape {
            table: qualified_name("public", "secrets"),
            columns: ["resource_id", "version", "value", "expires_at"]
                .map(String::from)
                .to_vec(),
            primary_key: vec![0, 1],
        }
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(qualified_name("public", "User"), "\"public\".\"User\"");
    }

    #[test]
    fn insert_is_an_upsert_on_the_primary_key() {
        assert_eq!(
            secrets().insert_sql(),
            "INSERT INTO \"public\".\"secrets\" (\"resource_id\", \"version\", \"value\", \"expires_at\") \
             VALUES ($1, $2, $3, $4) ON CONFLICT (\"resource_id\", \"version\") \
             DO UPDATE SET \"value\" = EXCLUDED.\"value\", \"expires_at\" = EXCLUDED.\"expires_at\""
        );
    }

    #[test]
    fn multi_row_inserts_number_parameters_row_by_row() {
        let sql = secrets().insert_rows_sql(2, true);
        assert!(
            sql.contains("VALUES ($1, $2, $3, $4), ($5, $6, $7, $8) ON CONFLICT"),
            "{sql}"
        );
        assert_eq!(secrets().max_insert_rows(), 256);
        assert_eq!(
            secrets().insert_rows_sql(2, false),
            "INSERT INTO \"public\".\"secrets\" (\"resource_id\", \"version\", \"value\", \"expires_at\") \
             VALUES ($1, $2, $3, $4), ($5, $6, $7, $8)"
        );
    }

    #[test]
    fn copy_names_every_column_in_leader_order() {
        assert_eq!(
            secrets().copy_sql(),
            "COPY \"public\".\"secrets\" (\"resource_id\", \"version\", \"value\", \"expires_at\") FROM STDIN"
        );
    }

    #[test]
    fn all_key_tables_do_nothing_on_conflict() {
        let shape = TableShape {
            table: "t".into(),
            columns: vec!["a".into()],
            primary_key: vec![0],
        };
        assert!(
            shape
                .insert_sql()
                .ends_with("ON CONFLICT (\"a\") DO NOTHING")
        );
    }

    #[test]
    fn update_skips_unchanged_columns_and_matches_the_key() {
        assert_eq!(
            secrets().update_sql(&[0, 1, 3], &[0, 1]),
            "UPDATE \"public\".\"secrets\" SET \"resource_id\" = $1, \"version\" = $2, \"expires_at\" = $3 \
             WHERE \"resource_id\" = $4 AND \"version\" = $5"
        );
    }

    #[test]
    fn tables_without_key_match_one_row_null_safely() {
        let shape = TableShape {
            table: "\"public\".\"policy_log\"".into(),
            columns: vec!["policy_id".into(), "version".into()],
            primary_key: vec![],
        };
        assert_eq!(
            shape.insert_sql(),
            "INSERT INTO \"public\".\"policy_log\" (\"policy_id\", \"version\") VALUES ($1, $2)"
        );
        assert_eq!(
            shape.delete_sql(&shape.match_columns()),
            "DELETE FROM \"public\".\"policy_log\" WHERE ctid = (SELECT ctid FROM \"public\".\"policy_log\" \
             WHERE \"policy_id\" IS NOT DISTINCT FROM $1 AND \"version\" IS NOT DISTINCT FROM $2 LIMIT 1)"
        );
    }

    #[test]
    fn truncate_lists_every_table() {
        assert_eq!(
            truncate_sql(&["a", "b"], true, false),
            "TRUNCATE a, b CASCADE"
        );
    }
}
