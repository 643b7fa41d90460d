//! Two-phase commit (protocol ≥ 3, option `two_phase`): Begin Prepare
//! (`'b'`), Prepare (`'P'`), Commit Prepared (`'K'`), Rollback Prepared
//! (`'r'`) and Stream Prepare (`'p'`).

use crate::cursor::{Cursor, Result};
use crate::lsn::Lsn;
use crate::pgoutput::pg_string::PgString;
use crate::timestamp::PgTimestamp;

/// Begin Prepare (`'b'`): a prepared transaction's changes follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeginPrepare {
    /// LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// End LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare time.
    pub prepare_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// Global transaction identifier.
    pub gid: PgString,
}

/// Prepare (`'P'`): ends a Begin Prepare block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepare {
    /// Flags (currently 0).
    pub flags: u8,
    /// LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// End LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare time.
    pub prepare_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// Global transaction identifier.
    pub gid: PgString,
}

/// Commit Prepared (`'K'`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitPrepared {
    /// Flags (currently 0).
    pub flags: u8,
    /// LSN of the commit-prepared record.
    pub commit_lsn: Lsn,
    /// End LSN of the commit-prepared transaction.
    pub end_lsn: Lsn,
    /// Commit time.
    pub commit_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// Global transaction identifier.
    pub gid: PgString,
}

/// Rollback Prepared (`'r'`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollbackPrepared {
    /// Flags (currently 0).
    pub flags: u8,
    /// End LSN of the prepared transaction.
    pub prepare_end_lsn: Lsn,
    /// End LSN of the rollback-prepared transaction.
    pub rollback_end_lsn: Lsn,
    /// Prepare time.
    pub prepare_time: PgTimestamp,
    /// Rollback time.
    pub rollback_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// Global transaction identifier.
    pub gid: PgString,
}

/// Stream Prepare (`'p'`): a streamed transaction was prepared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPrepare {
    /// Flags (currently 0).
    pub flags: u8,
    /// LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// End LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare time.
    pub prepare_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// Global transaction identifier.
    pub gid: PgString,
}

fn gid(c: &mut Cursor) -> Result<PgString> {
    Ok(PgString::from_checked(c.cstr_bytes("GID")?))
}

impl BeginPrepare {
    pub(crate) fn parse(c: &mut Cursor) -> Result<BeginPrepare> {
        Ok(BeginPrepare {
            prepare_lsn: c.lsn("Begin Prepare prepare LSN")?,
            end_lsn: c.lsn("Begin Prepare end LSN")?,
            prepare_time: c.timestamp("Begin Prepare prepare time")?,
            xid: c.u32("Begin Prepare xid")?,
            gid: gid(c)?,
        })
    }
}

impl Prepare {
    pub(crate) fn parse(c: &mut Cursor) -> Result<Prepare> {
        Ok(Prepare {
            flags: c.u8("Prepare flags")?,
            prepare_lsn: c.lsn("Prepare prepare LSN")?,
            end_lsn: c.lsn("Prepare end LSN")?,
            prepare_time: c.timestamp("Prepare prepare time")?,
            xid: c.u32("Prepare xid")?,
            gid: gid(c)?,
        })
    }
}

impl CommitPrepared {
    pub(crate) fn parse(c: &mut Cursor) -> Result<CommitPrepared> {
        Ok(CommitPrepared {
            flags: c.u8("Commit Prepared flags")?,
            commit_lsn: c.lsn("Commit Prepared commit LSN")?,
            end_lsn: c.lsn("Commit Prepared end LSN")?,
            commit_time: c.timestamp("Commit Prepared commit time")?,
            xid: c.u32("Commit Prepared xid")?,
            gid: gid(c)?,
        })
    }
}

impl RollbackPrepared {
    pub(crate) fn parse(c: &mut Cursor) -> Result<RollbackPrepared> {
        Ok(RollbackPrepared {
            flags: c.u8("Rollback Prepared flags")?,
            prepare_end_lsn: c.lsn("Rollback Prepared prepare end LSN")?,
            rollback_end_lsn: c.lsn("Rollback Prepared rollback end LSN")?,
            prepare_time: c.timestamp("Rollback Prepared prepare time")?,
            rollback_time: c.timestamp("Rollback Prepared rollback time")?,
            xid: c.u32("Rollback Prepared xid")?,
            gid: gid(c)?,
        })
    }
}

impl StreamPrepare {
    pub(crate) fn parse(c: &mut Cursor) -> Result<StreamPrepare> {
        Ok(StreamPrepare {
            flags: c.u8("Stream Prepare flags")?,
            prepare_lsn: c.lsn("Stream Prepare prepare LSN")?,
            end_lsn: c.lsn("Stream Prepare end LSN")?,
            prepare_time: c.timestamp("Stream Prepare prepare time")?,
            xid: c.u32("Stream Prepare xid")?,
            gid: gid(c)?,
        })
    }
}
