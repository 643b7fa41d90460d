/*!
A row change as tap fields: key columns, the old key of a key-changing
update, and the other columns, every value passed through `redact.rs`.
*/

use pgsieve_protocol::pgoutput::{OldTuple, Relation, TupleData};

use super::line::Fields;
use super::redact::show;
use crate::txn::{RowChange, RowOp};

/// The printable parts of one row change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// Replica-identity columns of the row (old row for a delete).
    pub key: Fields,
    /// Old key of an update that sent one (the key changed, or identity is FULL).
    pub old_key: Option<Fields>,
    /// The other columns; empty for a delete that carries only the key.
    pub columns: Fields,
}

/// Splits `change`'s row into key and other columns, redacting sensitive values.
pub fn describe(change: &RowChange, show_values: bool) -> Described {
    let relation = &change.relation;
    match &change.op {
        RowOp::Insert(m) => {
            let (key, columns) = split(relation, &m.new, show_values);
            Described {
                key,
                old_key: None,
                columns,
            }
        }
        RowOp::Update(m) => {
            let (key, columns) = split(relation, &m.new, show_values);
            let old_key = m
                .old
                .as_ref()
                .map(|old| split(relation, old.tuple(), show_values).0);
            Described {
                key,
                old_key,
                columns,
            }
        }
        RowOp::Delete(m) => {
            let (key, columns) = split(relation, m.old.tuple(), show_values);
            let columns = match m.old {
                OldTuple::Full(_) => columns,
                // Non-key columns of a key-only old tuple are placeholders.
                OldTuple::Key(_) => Fields::default(),
            };
            Described {
                key,
                old_key: None,
                columns,
            }
        }
    }
}

fn split(relation: &Relation, tuple: &TupleData, show_values: bool) -> (Fields, Fields) {
    let mut key = Vec::new();
    let mut other = Vec::new();
    for (column, value) in relation.columns.iter().zip(tuple.columns()) {
        let shown = show(&relation.name, &column.name, value, show_values).to_json_string();
        let entry = (column.name.clone(), shown);
        if column.is_key {
            key.push(entry);
        } else {
            other.push(entry);
        }
    }
    (Fields(key), Fields(other))
}
