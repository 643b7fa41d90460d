//! Relation (`'R'`): the shape of a published table, sent before its first
//! change and again whenever its definition changes.

use crate::cursor::{Cursor, Result};
use crate::error::DecodeErrorKind;

/// Relation (`'R'`). Rare, so it owns its strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    /// Transaction id, present only inside a stream block.
    pub xid: Option<u32>,
    /// OID of the table on the leader; DML messages refer to it as `rel_id`.
    pub oid: u32,
    /// Schema name (`""` means `pg_catalog`).
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Replica identity setting of the table.
    pub replica_identity: ReplicaIdentity,
    /// Published columns, in the order TupleData sends them.
    pub columns: Vec<RelationColumn>,
}

/// One published column of a [`Relation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationColumn {
    /// The column is part of the replica identity (key).
    pub is_key: bool,
    /// Column name.
    pub name: String,
    /// OID of the column's data type.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`), -1 when none.
    pub type_modifier: i32,
}

/// `pg_class.relreplident`: which old values UPDATE/DELETE carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing (UPDATE/DELETE cannot be published).
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    /// The wire byte (`d`, `n`, `f`, `i`).
    pub fn as_byte(self) -> u8 {
        match self {
            ReplicaIdentity::Default => b'd',
            ReplicaIdentity::Nothing => b'n',
            ReplicaIdentity::Full => b'f',
            ReplicaIdentity::Index => b'i',
        }
    }

    /// The identity for a wire byte, if known.
    pub fn from_byte(byte: u8) -> Option<ReplicaIdentity> {
        Some(match byte {
            b'd' => ReplicaIdentity::Default,
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            _ => return None,
        })
    }
}

impl Relation {
    /// Position of the column called `name` in TupleData order.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// `schema.table`, unquoted (for logs and matching; quote for SQL).
    /// An empty schema is `pg_catalog`, as pgoutput means it.
    pub fn qualified_name(&self) -> String {
        let namespace = if self.namespace.is_empty() {
            "pg_catalog"
        } else {
            &self.namespace
        };
        format!("{namespace}.{}", self.name)
    }

    /// Indexes of the key columns, in order.
    pub fn key_indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
    }

    pub(crate) fn parse(c: &mut Cursor, xid: Option<u32>) -> Result<Relation> {
        let oid = c.u32("Relation OID")?;
        let namespace = c.cstr("Relation namespace")?.to_owned();
        let name = c.cstr("Relation name")?.to_owned();
        let at = c.pos();
        let identity = c.u8("Relation replica identity")?;
        let replica_identity = ReplicaIdentity::from_byte(identity).ok_or_else(|| {
            c.error_at(
                at,
                DecodeErrorKind::BadReplicaIdentity(identity),
                "replica identity d, n, f or i",
            )
        })?;
        let count = c.len_i16("Relation column count")?;
        // Each column needs at least 10 bytes: never reserve more than the frame can hold.
        let mut columns = Vec::with_capacity(count.min(c.peek_rest().len() / 10));
        for _ in 0..count {
            let flags = c.u8("column flags")?;
            let name = c.cstr("column name")?.to_owned();
            let type_oid = c.u32("column type OID")?;
            let type_modifier = c.i32("column type modifier")?;
            columns.push(RelationColumn {
                is_key: flags & 1 != 0,
                name,
                type_oid,
                type_modifier,
            });
        }
        Ok(Relation {
            xid,
            oid,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }
}
