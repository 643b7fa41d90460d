//! Streamed in-progress transactions (protocol ≥ 2): Stream Start (`'S'`),
//! Stream Stop (`'E'`), Stream Commit (`'c'`), Stream Abort (`'A'`).

use crate::cursor::{Cursor, Result};
use crate::lsn::Lsn;
use crate::timestamp::PgTimestamp;

/// Stream Start (`'S'`): a chunk of transaction `xid` follows; changes
/// until Stream Stop carry their (sub)transaction xid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamStart {
    /// Top-level transaction id.
    pub xid: u32,
    /// This is the first chunk of the transaction.
    pub first_segment: bool,
}

/// Stream Commit (`'c'`): a streamed transaction committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamCommit {
    /// Top-level transaction id.
    pub xid: u32,
    /// Flags (currently 0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End LSN of the transaction: what a subscriber reports as flushed.
    pub end_lsn: Lsn,
    /// Commit time on the leader.
    pub commit_time: PgTimestamp,
}

/// Stream Abort (`'A'`): a streamed (sub)transaction aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamAbort {
    /// Top-level transaction id.
    pub xid: u32,
    /// Aborted subtransaction (equals `xid` when the whole transaction aborted).
    pub subxid: u32,
    /// LSN of the abort record; only with protocol 4 and `streaming = parallel`.
    pub abort_lsn: Option<Lsn>,
    /// Abort time; only with protocol 4 and `streaming = parallel`.
    pub abort_time: Option<PgTimestamp>,
}

impl StreamAbort {
    /// Whether only a subtransaction (not the whole transaction) aborted.
    pub fn is_subtransaction(&self) -> bool {
        self.subxid != self.xid
    }

    #[inline]
    pub(crate) fn parse(c: &mut Cursor, parallel_abort: bool) -> Result<StreamAbort> {
        let xid = c.u32("Stream Abort xid")?;
        let subxid = c.u32("Stream Abort subxid")?;
        let (abort_lsn, abort_time) = if parallel_abort {
            (
                Some(c.lsn("Stream Abort abort LSN")?),
                Some(c.timestamp("Stream Abort abort time")?),
            )
        } else {
            (None, None)
        };
        Ok(StreamAbort {
            xid,
            subxid,
            abort_lsn,
            abort_time,
        })
    }
}

impl StreamStart {
    #[inline]
    pub(crate) fn parse(c: &mut Cursor) -> Result<StreamStart> {
        Ok(StreamStart {
            xid: c.u32("Stream Start xid")?,
            first_segment: c.u8("Stream Start first-segment flag")? != 0,
        })
    }
}

impl StreamCommit {
    #[inline]
    pub(crate) fn parse(c: &mut Cursor) -> Result<StreamCommit> {
        Ok(StreamCommit {
            xid: c.u32("Stream Commit xid")?,
            flags: c.u8("Stream Commit flags")?,
            commit_lsn: c.lsn("Stream Commit commit LSN")?,
            end_lsn: c.lsn("Stream Commit end LSN")?,
            commit_time: c.timestamp("Stream Commit commit time")?,
        })
    }
}
