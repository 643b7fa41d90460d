//! Row changes: Insert (`'I'`), Update (`'U'`), Delete (`'D'`) and
//! Truncate (`'T'`). These are the hot path: none of them holds a `Vec`
//! except the rare Truncate.

use crate::cursor::{Cursor, Result};
use crate::error::DecodeErrorKind;
use crate::pgoutput::tuple::TupleData;

/// Marker of a new tuple.
pub const TUPLE_NEW: u8 = b'N';
/// Marker of an old tuple holding only the replica identity (key) columns.
pub const TUPLE_KEY: u8 = b'K';
/// Marker of an old tuple holding the whole old row (REPLICA IDENTITY FULL).
pub const TUPLE_OLD: u8 = b'O';

/// Insert (`'I'`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insert {
    /// Transaction id, present only inside a stream block.
    pub xid: Option<u32>,
    /// OID of the relation (see [`RelationCache`](crate::pgoutput::RelationCache)).
    pub rel_id: u32,
    /// The inserted row.
    pub new: TupleData,
}

/// Update (`'U'`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// Transaction id, present only inside a stream block.
    pub xid: Option<u32>,
    /// OID of the relation.
    pub rel_id: u32,
    /// The old key (`'K'`, sent only when a key column changed) or old row
    /// (`'O'`, REPLICA IDENTITY FULL); `None` when the key is unchanged.
    pub old: Option<OldTuple>,
    /// The new row; unchanged TOASTed values come as `Column::UnchangedToast`.
    pub new: TupleData,
}

/// Delete (`'D'`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    /// Transaction id, present only inside a stream block.
    pub xid: Option<u32>,
    /// OID of the relation.
    pub rel_id: u32,
    /// The deleted row's key or whole old row.
    pub old: OldTuple,
}

/// The old row of an Update or Delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OldTuple {
    /// `'K'`: every column present, only replica-identity columns filled,
    /// the others NULL.
    Key(TupleData),
    /// `'O'`: the full old row.
    Full(TupleData),
}

impl OldTuple {
    /// The tuple, whichever kind it is.
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }

    /// Whether this is a key-only old tuple.
    pub fn is_key(&self) -> bool {
        matches!(self, OldTuple::Key(_))
    }

    /// The wire marker (`'K'` or `'O'`).
    pub fn marker(&self) -> u8 {
        match self {
            OldTuple::Key(_) => TUPLE_KEY,
            OldTuple::Full(_) => TUPLE_OLD,
        }
    }
}

/// Truncate (`'T'`) option bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TruncateOptions {
    /// `TRUNCATE … CASCADE` (bit 1).
    pub cascade: bool,
    /// `TRUNCATE … RESTART IDENTITY` (bit 2).
    pub restart_identity: bool,
}

impl TruncateOptions {
    /// Decodes the option byte (unknown bits are ignored).
    pub fn from_byte(byte: u8) -> Self {
        TruncateOptions {
            cascade: byte & 1 != 0,
            restart_identity: byte & 2 != 0,
        }
    }

    /// The option byte.
    pub fn as_byte(self) -> u8 {
        u8::from(self.cascade) | (u8::from(self.restart_identity) << 1)
    }
}

/// Truncate (`'T'`): one TRUNCATE statement over one or more relations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncate {
    /// Transaction id, present only inside a stream block.
    pub xid: Option<u32>,
    /// CASCADE / RESTART IDENTITY.
    pub options: TruncateOptions,
    /// OIDs of the truncated relations.
    pub rel_ids: Vec<u32>,
}

/// Reads a marker byte and fails unless it is one of `allowed`.
#[inline]
fn marker(c: &mut Cursor, allowed: &[u8], expected: &'static str) -> Result<u8> {
    let at = c.pos();
    let byte = c.u8(expected)?;
    if allowed.contains(&byte) {
        Ok(byte)
    } else {
        Err(c.error_at(at, DecodeErrorKind::UnexpectedTupleMarker(byte), expected))
    }
}

impl Insert {
    #[inline]
    pub(crate) fn parse(c: &mut Cursor, xid: Option<u32>) -> Result<Insert> {
        let rel_id = c.u32("Insert relation OID")?;
        marker(c, &[TUPLE_NEW], "tuple marker 'N'")?;
        Ok(Insert {
            xid,
            rel_id,
            new: TupleData::parse(c)?,
        })
    }
}

impl Update {
    #[inline]
    pub(crate) fn parse(c: &mut Cursor, xid: Option<u32>) -> Result<Update> {
        let rel_id = c.u32("Update relation OID")?;
        let first = marker(
            c,
            &[TUPLE_KEY, TUPLE_OLD, TUPLE_NEW],
            "tuple marker 'K', 'O' or 'N'",
        )?;
        let old = match first {
            TUPLE_KEY => Some(OldTuple::Key(TupleData::parse(c)?)),
            TUPLE_OLD => Some(OldTuple::Full(TupleData::parse(c)?)),
            _ => None,
        };
        if old.is_some() {
            marker(c, &[TUPLE_NEW], "tuple marker 'N'")?;
        }
        Ok(Update {
            xid,
            rel_id,
            old,
            new: TupleData::parse(c)?,
        })
    }
}

impl Delete {
    #[inline]
    pub(crate) fn parse(c: &mut Cursor, xid: Option<u32>) -> Result<Delete> {
        let rel_id = c.u32("Delete relation OID")?;
        let kind = marker(c, &[TUPLE_KEY, TUPLE_OLD], "tuple marker 'K' or 'O'")?;
        let tuple = TupleData::parse(c)?;
        let old = if kind == TUPLE_KEY {
            OldTuple::Key(tuple)
        } else {
            OldTuple::Full(tuple)
        };
        Ok(Delete { xid, rel_id, old })
    }
}

impl Truncate {
    #[inline]
    pub(crate) fn parse(c: &mut Cursor, xid: Option<u32>) -> Result<Truncate> {
        let count = c.len_i32("Truncate relation count")?;
        let options = TruncateOptions::from_byte(c.u8("Truncate options")?);
        // Never reserve more than the frame can hold (4 bytes per OID).
        let mut rel_ids = Vec::with_capacity(count.min(c.peek_rest().len() / 4));
        for _ in 0..count {
            rel_ids.push(c.u32("Truncate relation OID")?);
        }
        Ok(Truncate {
            xid,
            options,
            rel_ids,
        })
    }
}
