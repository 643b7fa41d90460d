//! Matching a leader relation against the follower's table, by name.
//!
//! Columns are matched by name and types by their SQL name
//! (`format_type`), never by OID: `hstore` and Conjur's enums get different
//! OIDs in every database. A follower column the leader lacks is allowed
//! (it keeps its default); a leader column the follower lacks, or a type
//! that differs, stops apply with an error naming both sides.

use pgsieve_protocol::pgoutput::Relation;
use tokio_postgres::Client;

use super::statements::{TableShape, qualified_name};

/// A column as a catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    /// Column name.
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, e.g. `character varying(64)`.
    pub type_name: String,
    /// Part of the primary key.
    pub is_primary_key: bool,
}

/// Why a leader relation cannot be applied to the follower.
#[derive(Debug, thiserror::Error)]
pub enum SchemaMismatch {
    /// The follower has no such table.
    #[error("table {table} does not exist on the follower")]
    MissingTable {
        /// Qualified name.
        table: String,
    },
    /// The follower table lacks a column the leader publishes.
    #[error("table {table}: the follower has no column {column:?} (leader type {leader_type})")]
    MissingColumn {
        /// Qualified name.
        table: String,
        /// Column name.
        column: String,
        /// Its type on the leader.
        leader_type: String,
    },
    /// Same column, different type.
    #[error(
        "table {table}: column {column:?} is {leader_type} on the leader but {follower_type} on the follower"
    )]
    TypeDiffers {
        /// Qualified name.
        table: String,
        /// Column name.
        column: String,
        /// Leader type.
        leader_type: String,
        /// Follower type.
        follower_type: String,
    },
    /// A catalog query failed.
    #[error("reading the catalog of {table}: {source}")]
    Query {
        /// Qualified name.
        table: String,
        /// The database error.
        source: tokio_postgres::Error,
    },
}

const COLUMNS_SQL: &str = "\
SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
       coalesce(a.attnum = ANY (i.indkey::int2[]), false)
FROM pg_attribute a
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum";

/// The columns of `table` (quoted, qualified) in attribute order; empty when
/// the table does not exist.
pub async fn table_columns(
    client: &Client,
    table: &str,
) -> Result<Vec<CatalogColumn>, tokio_postgres::Error> {
    let rows = client.query(COLUMNS_SQL, &[&table]).await?;
    Ok(rows
        .iter()
        .map(|row| CatalogColumn {
            name: row.get(0),
            type_name: row.get(1),
            is_primary_key: row.get(2),
        })
        .collect())
}

/// Checks that the follower's columns of `table` can take every leader
/// column: same names, same `format_type` types (the initial copy's check,
/// before any row moves; the stream's is [`match_relation`]). The first of
/// [`column_mismatches`].
pub fn check_columns(
    table: &str,
    leader: &[CatalogColumn],
    follower: &[CatalogColumn],
) -> Result<(), SchemaMismatch> {
    match column_mismatches(table, leader, follower)
        .into_iter()
        .next()
    {
        Some(mismatch) => Err(mismatch),
        None => Ok(()),
    }
}

/// Every reason the follower's `table` cannot take the leader's rows: the
/// one schema comparison `run`, the initial copy and `check` share. A column
/// only the follower has is no mismatch (rows are written by column name).
pub fn column_mismatches(
    table: &str,
    leader: &[CatalogColumn],
    follower: &[CatalogColumn],
) -> Vec<SchemaMismatch> {
    if follower.is_empty() {
        return vec![SchemaMismatch::MissingTable {
            table: table.to_owned(),
        }];
    }
    leader
        .iter()
        .filter_map(|column| {
            follower_column(table, &column.name, &column.type_name, true, follower).err()
        })
        .collect()
}

/// The follower's column `name` of `table`, if it exists and (when
/// `compare_type`) has the leader's type.
fn follower_column<'f>(
    table: &str,
    name: &str,
    leader_type: &str,
    compare_type: bool,
    follower: &'f [CatalogColumn],
) -> Result<&'f CatalogColumn, SchemaMismatch> {
    let Some(mine) = follower.iter().find(|c| c.name == name) else {
        return Err(SchemaMismatch::MissingColumn {
            table: table.to_owned(),
            column: name.to_owned(),
            leader_type: leader_type.to_owned(),
        });
    };
    if compare_type && mine.type_name != leader_type {
        return Err(SchemaMismatch::TypeDiffers {
            table: table.to_owned(),
            column: name.to_owned(),
            leader_type: leader_type.to_owned(),
            follower_type: mine.type_name.clone(),
        });
    }
    Ok(mine)
}

/// The relation's schema name as SQL sees it (pgoutput sends "" for pg_catalog).
pub fn relation_schema(relation: &Relation) -> &str {
    if relation.namespace.is_empty() {
        "pg_catalog"
    } else {
        &relation.namespace
    }
}

/// Checks the follower's table against the leader's and returns how rows
/// are addressed on the follower.
pub async fn match_relation(
    leader: &Client,
    follower: &Client,
    relation: &Relation,
) -> Result<TableShape, SchemaMismatch> {
    let table = qualified_name(relation_schema(relation), &relation.name);
    let query_err = |source| SchemaMismatch::Query {
        table: table.clone(),
        source,
    };
    let leader_cols = table_columns(leader, &table).await.map_err(query_err)?;
    let follower_cols = table_columns(follower, &table).await.map_err(query_err)?;
    if follower_cols.is_empty() {
        return Err(SchemaMismatch::MissingTable { table });
    }
    let mut columns = Vec::with_capacity(relation.columns.len());
    let mut primary_key = Vec::new();
    for (index, column) in relation.columns.iter().enumerate() {
        let leader_type = leader_cols
            .iter()
            .find(|c| c.name == column.name)
            .map(|c| c.type_name.clone())
            .unwrap_or_else(|| format!("oid {}", column.type_oid));
        let mine = follower_column(
            &table,
            &column.name,
            &leader_type,
            !leader_cols.is_empty(),
            &follower_cols,
        )?;
        if mine.is_primary_key {
            primary_key.push(index);
        }
        columns.push(column.name.clone());
    }
    // A follower primary key with columns the leader does not send cannot
    // be used to address rows: fall back to matching on every column.
    let follower_pk = follower_cols.iter().filter(|c| c.is_primary_key).count();
    if primary_key.len() != follower_pk {
        primary_key.clear();
    }
    Ok(TableShape {
        table,
        columns,
        primary_key,
    })
}
