//! Type (`'Y'`): names a non-built-in data type before a Relation uses it.

use crate::cursor::{Cursor, Result};

/// Type (`'Y'`). Rare, so it owns its strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type {
    /// Transaction id, present only inside a stream block.
    pub xid: Option<u32>,
    /// OID of the data type on the leader.
    pub oid: u32,
    /// Schema name (`""` means `pg_catalog`).
    pub namespace: String,
    /// Type name.
    pub name: String,
}

impl Type {
    pub(crate) fn parse(c: &mut Cursor, xid: Option<u32>) -> Result<Type> {
        Ok(Type {
            xid,
            oid: c.u32("Type OID")?,
            namespace: c.cstr("Type namespace")?.to_owned(),
            name: c.cstr("Type name")?.to_owned(),
        })
    }
}
