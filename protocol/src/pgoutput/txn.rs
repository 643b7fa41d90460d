//! Transaction boundaries: Begin (`'B'`), Commit (`'C'`) and Origin (`'O'`).

use crate::cursor::{Cursor, Result};
use crate::lsn::Lsn;
use crate::pgoutput::pg_string::PgString;
use crate::timestamp::PgTimestamp;

/// Begin (`'B'`): a transaction starts; its changes follow until Commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the commit record (the transaction's final LSN).
    pub final_lsn: Lsn,
    /// Commit time on the leader.
    pub commit_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
}

/// Commit (`'C'`): the transaction ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Flags (currently always 0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End LSN of the transaction: what a subscriber reports as flushed.
    pub end_lsn: Lsn,
    /// Commit time on the leader.
    pub commit_time: PgTimestamp,
}

/// Origin (`'O'`): the transaction came from another node via a
/// replication origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Commit LSN on the origin server.
    pub origin_lsn: Lsn,
    /// Name of the replication origin.
    pub name: PgString,
}

impl Begin {
    #[inline]
    pub(crate) fn parse(c: &mut Cursor) -> Result<Begin> {
        Ok(Begin {
            final_lsn: c.lsn("Begin final LSN")?,
            commit_time: c.timestamp("Begin commit time")?,
            xid: c.u32("Begin xid")?,
        })
    }
}

impl Commit {
    #[inline]
    pub(crate) fn parse(c: &mut Cursor) -> Result<Commit> {
        Ok(Commit {
            flags: c.u8("Commit flags")?,
            commit_lsn: c.lsn("Commit commit LSN")?,
            end_lsn: c.lsn("Commit end LSN")?,
            commit_time: c.timestamp("Commit commit time")?,
        })
    }
}

impl Origin {
    #[inline]
    pub(crate) fn parse(c: &mut Cursor) -> Result<Origin> {
        Ok(Origin {
            origin_lsn: c.lsn("Origin commit LSN")?,
            name: PgString::from_checked(c.cstr_bytes("Origin name")?),
        })
    }
}
