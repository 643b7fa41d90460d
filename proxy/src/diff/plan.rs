/*!
The SQL of one table's comparison, built once from the leader's catalog.

Both sides are read with the same column expressions, so the servers never
have to agree on anything but text: every key column comes out as `::text`
and is ordered `COLLATE "C"` (byte order, the order Rust compares `&[u8]`
in), `NULLS FIRST` (as `Option` orders), and the rest of the row travels as
one `md5` of the record of the leader's columns as text. A follower column
the leader lacks is ignored; types are never compared by OID (`hstore` and
Conjur's enums differ per database). A table without a primary key
(`policy_log`) is keyed by that row hash alone and compared as a multiset:
one narrow column to sort and send, whatever the width of its rows.
*/

use crate::copy::PublishedTable;
use crate::sink::catalog::CatalogColumn;
use crate::sink::statements::quote_ident;

/// How one table is compared and written.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// Quoted, schema-qualified name.
    pub table: String,
    /// Bare table name (`secrets` is filtered).
    pub name: String,
    /// The leader's columns, in attribute order.
    pub columns: Vec<CatalogColumn>,
    /// Indices into `columns` of the primary key; empty when the table has
    /// none (its key is then the row hash).
    pub key: Vec<usize>,
    /// Whether the table has a primary key (rows can then differ; without
    /// one a row is only missing or extra).
    pub has_primary_key: bool,
    /// Position in `key` of `resource_id` when rows are filtered by the
    /// replica set (`secrets` of a filtered follower).
    pub filter_key: Option<usize>,
}

impl TablePlan {
    /// The plan of `table` from its leader columns; `filtered` when its rows
    /// pass the replica-set decision (`secrets`).
    pub fn new(table: &PublishedTable, columns: Vec<CatalogColumn>, filtered: bool) -> Self {
        let key: Vec<usize> = (0..columns.len())
            .filter(|&i| columns[i].is_primary_key)
            .collect();
        let has_primary_key = !key.is_empty();
        let filter_key = if filtered {
            key.iter().position(|&i| columns[i].name == "resource_id")
        } else {
            None
        };
        TablePlan {
            table: table.qualified(),
            name: table.name.clone(),
            columns,
            key,
            has_primary_key,
            filter_key,
        }
    }

    /// Number of leading key columns in a compared row (the hash follows
    /// them when [`Self::has_primary_key`]).
    pub fn key_len(&self) -> usize {
        if self.has_primary_key {
            self.key.len()
        } else {
            1
        }
    }

    fn col(&self, i: usize) -> String {
        quote_ident(&self.columns[i].name)
    }

    /// `md5` of the record of every leader column as text.
    fn row_hash(&self) -> String {
        let all = (0..self.columns.len())
            .map(|i| format!("t.{}::text", self.col(i)))
            .collect::<Vec<_>>()
            .join(", ");
        format!("md5(ROW({all})::text)")
    }

    /// The key expressions: `t."c"::text` of each key column, or the row hash.
    fn key_exprs(&self) -> Vec<String> {
        if !self.has_primary_key {
            return vec![self.row_hash()];
        }
        self.key
            .iter()
            .map(|&i| format!("t.{}::text", self.col(i)))
            .collect()
    }

    /// The compared row: key texts, then (with a primary key) the hash of
    /// the whole row.
    fn select_list(&self) -> String {
        let mut list = self.key_exprs();
        if self.has_primary_key {
            list.push(self.row_hash());
        }
        list.join(", ")
    }

    fn order_by(&self) -> String {
        self.key_exprs()
            .iter()
            .map(|e| format!("{e} COLLATE \"C\" NULLS FIRST"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The whole table in key order, for a cursor.
    pub fn scan_sql(&self) -> String {
        format!(
            "SELECT {} FROM {} t ORDER BY {}",
            self.select_list(),
            self.table,
            self.order_by()
        )
    }

    /// `FROM` and `WHERE` of the rows whose keys are given as one `text[]`
    /// parameter per key column (`$1`, `$2`, …). With a primary key the
    /// lookup casts the texts to the leader's column types (so the key's
    /// index serves it); without one, rows are matched by their hash (every
    /// copy of a duplicated row comes back).
    fn lookup_from(&self) -> String {
        if !self.has_primary_key {
            return format!(
                "FROM {} t WHERE {} = ANY($1::text[])",
                self.table,
                self.row_hash()
            );
        }
        let unnest = (1..=self.key.len())
            .map(|n| format!("${n}::text[]"))
            .collect::<Vec<_>>()
            .join(", ");
        let names = (0..self.key.len())
            .map(|n| format!("k{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let on = self
            .key
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("t.{} = k.k{n}::{}", self.col(i), self.columns[i].type_name))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            "FROM {} t JOIN unnest({unnest}) AS k({names}) ON {on}",
            self.table
        )
    }

    /// The compared rows of the keys given as in [`Self::lookup_from`], in
    /// key order (a re-check).
    pub fn lookup_sql(&self) -> String {
        format!(
            "SELECT {} {} ORDER BY {}",
            self.select_list(),
            self.lookup_from(),
            self.order_by()
        )
    }

    /// Every leader column as text (then, without a primary key, the row
    /// hash), of the rows whose keys are given as in [`Self::lookup_from`]:
    /// the values a follower row is written from.
    pub fn fetch_sql(&self) -> String {
        let mut cols: Vec<String> = (0..self.columns.len())
            .map(|i| format!("t.{}::text", self.col(i)))
            .collect();
        if !self.has_primary_key {
            cols.push(self.row_hash());
        }
        format!("SELECT {} {}", cols.join(", "), self.lookup_from())
    }

    /// INSERT of every leader column (parameters in column order).
    pub fn insert_sql(&self) -> String {
        let cols = (0..self.columns.len())
            .map(|i| self.col(i))
            .collect::<Vec<_>>()
            .join(", ");
        let params = (1..=self.columns.len())
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("INSERT INTO {} ({cols}) VALUES ({params})", self.table)
    }

    /// Columns an UPDATE sets: every leader column outside the key.
    pub fn update_columns(&self) -> Vec<usize> {
        (0..self.columns.len())
            .filter(|i| !self.key.contains(i))
            .collect()
    }

    /// UPDATE of [`Self::update_columns`] (parameters 1..) of the row whose
    /// key follows (parameters after them); `None` when every column is key.
    pub fn update_sql(&self) -> Option<String> {
        let set_cols = self.update_columns();
        if set_cols.is_empty() || !self.has_primary_key {
            return None;
        }
        let set = set_cols
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{} = ${}", self.col(i), n + 1))
            .collect::<Vec<_>>()
            .join(", ");
        let cond = self
            .key
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{} = ${}", self.col(i), set_cols.len() + n + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        Some(format!("UPDATE {} SET {set} WHERE {cond}", self.table))
    }

    /// DELETE of one row by its key texts (parameters 1..): by the primary
    /// key, or (no key) the first row with that hash.
    pub fn delete_sql(&self) -> String {
        if self.has_primary_key {
            let cond = self
                .key
                .iter()
                .enumerate()
                .map(|(n, &i)| format!("{} = ${}", self.col(i), n + 1))
                .collect::<Vec<_>>()
                .join(" AND ");
            format!("DELETE FROM {} WHERE {cond}", self.table)
        } else {
            format!(
                "DELETE FROM {t} WHERE ctid = (SELECT ctid FROM {t} t WHERE {} = $1::text LIMIT 1)",
                self.row_hash(),
                t = self.table
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, type_name: &str, pk: bool) -> CatalogColumn {
        CatalogColumn {
            name: name.into(),
            type_name: type_name.into(),
            is_primary_key: pk,
        }
    }

    fn secrets() -> TablePlan {
        TablePlan::new(
            &PublishedTable {
                schema: "public".into(),
                name: "secrets".into(),
            },
            vec![
                col("resource_id", "text", true),
                col("version", "integer", true),
                col("value", "bytea", false),
                col("expires_at", "timestamp without time zone", false),
            ],
            true,
        )
    }

    #[test]
    fn keyed_table_orders_by_key_text_in_byte_order() {
        let plan = secrets();
        assert_eq!(plan.filter_key, Some(0));
        assert_eq!(
            plan.scan_sql(),
            "SELECT t.\"resource_id\"::text, t.\"version\"::text, md5(ROW(t.\"resource_id\"::text, \
             t.\"version\"::text, t.\"value\"::text, t.\"expires_at\"::text)::text) \
             FROM \"public\".\"secrets\" t ORDER BY t.\"resource_id\"::text COLLATE \"C\" NULLS FIRST, \
             t.\"version\"::text COLLATE \"C\" NULLS FIRST"
        );
        assert!(plan.lookup_sql().contains("t.\"version\" = k.k1::integer"));
        assert_eq!(
            plan.update_sql().as_deref(),
            Some(
                "UPDATE \"public\".\"secrets\" SET \"value\" = $1, \"expires_at\" = $2 \
                 WHERE \"resource_id\" = $3 AND \"version\" = $4"
            )
        );
        assert!(plan.fetch_sql().starts_with(
            "SELECT t.\"resource_id\"::text, t.\"version\"::text, t.\"value\"::text, \
             t.\"expires_at\"::text FROM \"public\".\"secrets\" t JOIN unnest("
        ));
    }

    #[test]
    fn table_without_key_is_keyed_by_row_hash() {
        let plan = TablePlan::new(
            &PublishedTable {
                schema: "public".into(),
                name: "policy_log".into(),
            },
            vec![
                col("policy_id", "text", false),
                col("subject", "hstore", false),
            ],
            false,
        );
        assert!(!plan.has_primary_key);
        assert_eq!(plan.key_len(), 1);
        assert_eq!(
            plan.scan_sql(),
            "SELECT md5(ROW(t.\"policy_id\"::text, t.\"subject\"::text)::text) \
             FROM \"public\".\"policy_log\" t \
             ORDER BY md5(ROW(t.\"policy_id\"::text, t.\"subject\"::text)::text) COLLATE \"C\" NULLS FIRST"
        );
        assert!(plan.update_sql().is_none());
        assert!(plan.delete_sql().contains("ctid = (SELECT ctid"));
        assert!(plan.lookup_sql().contains("= ANY($1::text[])"));
        assert!(
            plan.fetch_sql()
                .starts_with("SELECT t.\"policy_id\"::text, t.\"subject\"::text, md5(ROW(")
        );
    }
}
