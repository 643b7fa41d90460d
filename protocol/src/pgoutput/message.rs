//! `LogicalMessage`: every pgoutput message of protocol versions 1–4, its
//! tags, and the pure parse function.

use bytes::Bytes;

use crate::cursor::Cursor;
use crate::error::{DecodeError, DecodeErrorKind};
use crate::pgoutput::change::{Delete, Insert, Truncate, Update};
use crate::pgoutput::logical_message::Message;
use crate::pgoutput::pg_type::Type;
use crate::pgoutput::relation::Relation;
use crate::pgoutput::stream::{StreamAbort, StreamCommit, StreamStart};
use crate::pgoutput::two_phase::{
    BeginPrepare, CommitPrepared, Prepare, RollbackPrepared, StreamPrepare,
};
use crate::pgoutput::txn::{Begin, Commit, Origin};

/// Begin.
pub const BEGIN_TAG: u8 = b'B';
/// Logical decoding message.
pub const MESSAGE_TAG: u8 = b'M';
/// Commit.
pub const COMMIT_TAG: u8 = b'C';
/// Origin.
pub const ORIGIN_TAG: u8 = b'O';
/// Relation.
pub const RELATION_TAG: u8 = b'R';
/// Type.
pub const TYPE_TAG: u8 = b'Y';
/// Insert.
pub const INSERT_TAG: u8 = b'I';
/// Update.
pub const UPDATE_TAG: u8 = b'U';
/// Delete.
pub const DELETE_TAG: u8 = b'D';
/// Truncate.
pub const TRUNCATE_TAG: u8 = b'T';
/// Stream Start.
pub const STREAM_START_TAG: u8 = b'S';
/// Stream Stop.
pub const STREAM_STOP_TAG: u8 = b'E';
/// Stream Commit.
pub const STREAM_COMMIT_TAG: u8 = b'c';
/// Stream Abort.
pub const STREAM_ABORT_TAG: u8 = b'A';
/// Begin Prepare.
pub const BEGIN_PREPARE_TAG: u8 = b'b';
/// Prepare.
pub const PREPARE_TAG: u8 = b'P';
/// Commit Prepared.
pub const COMMIT_PREPARED_TAG: u8 = b'K';
/// Rollback Prepared.
pub const ROLLBACK_PREPARED_TAG: u8 = b'r';
/// Stream Prepare.
pub const STREAM_PREPARE_TAG: u8 = b'p';

/// What the bytes alone cannot say: whether we are inside a Stream Start …
/// Stream Stop block (changes then carry an xid) and whether Stream Abort
/// carries the v4 abort LSN and time (`streaming = parallel`).
///
/// Prefer [`PgOutputDecoder`](crate::pgoutput::PgOutputDecoder), which tracks
/// `in_stream` itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ParseContext {
    /// Inside a stream block: DML, Relation, Type and Message carry an xid.
    pub in_stream: bool,
    /// Protocol 4 with `streaming = parallel`: Stream Abort has LSN and time.
    pub parallel_abort: bool,
}

/// One pgoutput message (the `data` of an XLogData).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogicalMessage {
    /// `'B'`
    Begin(Begin),
    /// `'C'`
    Commit(Commit),
    /// `'O'`
    Origin(Origin),
    /// `'R'`
    Relation(Relation),
    /// `'Y'`
    Type(Type),
    /// `'I'`
    Insert(Insert),
    /// `'U'`
    Update(Update),
    /// `'D'`
    Delete(Delete),
    /// `'T'`
    Truncate(Truncate),
    /// `'M'`
    Message(Message),
    /// `'S'`
    StreamStart(StreamStart),
    /// `'E'`
    StreamStop,
    /// `'c'`
    StreamCommit(StreamCommit),
    /// `'A'`
    StreamAbort(StreamAbort),
    /// `'b'`
    BeginPrepare(BeginPrepare),
    /// `'P'`
    Prepare(Prepare),
    /// `'K'`
    CommitPrepared(CommitPrepared),
    /// `'r'`
    RollbackPrepared(RollbackPrepared),
    /// `'p'`
    StreamPrepare(StreamPrepare),
}

impl LogicalMessage {
    /// Decodes one pgoutput message; `ctx` says whether an xid precedes
    /// changes and whether Stream Abort has its v4 fields. The whole of
    /// `data` must be consumed. Values share `data`'s buffer.
    #[inline]
    pub fn parse(data: Bytes, ctx: ParseContext) -> Result<LogicalMessage, DecodeError> {
        let mut c = Cursor::new(data);
        let tag = c.u8("pgoutput message tag")?;
        c.set_tag(tag);
        let xid = |c: &mut Cursor| -> Result<Option<u32>, DecodeError> {
            if ctx.in_stream {
                c.u32("xid of streamed change").map(Some)
            } else {
                Ok(None)
            }
        };
        let message = match tag {
            BEGIN_TAG => LogicalMessage::Begin(Begin::parse(&mut c)?),
            COMMIT_TAG => LogicalMessage::Commit(Commit::parse(&mut c)?),
            ORIGIN_TAG => LogicalMessage::Origin(Origin::parse(&mut c)?),
            RELATION_TAG => {
                let xid = xid(&mut c)?;
                LogicalMessage::Relation(Relation::parse(&mut c, xid)?)
            }
            TYPE_TAG => {
                let xid = xid(&mut c)?;
                LogicalMessage::Type(Type::parse(&mut c, xid)?)
            }
            INSERT_TAG => {
                let xid = xid(&mut c)?;
                LogicalMessage::Insert(Insert::parse(&mut c, xid)?)
            }
            UPDATE_TAG => {
                let xid = xid(&mut c)?;
                LogicalMessage::Update(Update::parse(&mut c, xid)?)
            }
            DELETE_TAG => {
                let xid = xid(&mut c)?;
                LogicalMessage::Delete(Delete::parse(&mut c, xid)?)
            }
            TRUNCATE_TAG => {
                let xid = xid(&mut c)?;
                LogicalMessage::Truncate(Truncate::parse(&mut c, xid)?)
            }
            MESSAGE_TAG => {
                let xid = xid(&mut c)?;
                LogicalMessage::Message(Message::parse(&mut c, xid)?)
            }
            STREAM_START_TAG => LogicalMessage::StreamStart(StreamStart::parse(&mut c)?),
            STREAM_STOP_TAG => LogicalMessage::StreamStop,
            STREAM_COMMIT_TAG => LogicalMessage::StreamCommit(StreamCommit::parse(&mut c)?),
            STREAM_ABORT_TAG => {
                LogicalMessage::StreamAbort(StreamAbort::parse(&mut c, ctx.parallel_abort)?)
            }
            BEGIN_PREPARE_TAG => LogicalMessage::BeginPrepare(BeginPrepare::parse(&mut c)?),
            PREPARE_TAG => LogicalMessage::Prepare(Prepare::parse(&mut c)?),
            COMMIT_PREPARED_TAG => LogicalMessage::CommitPrepared(CommitPrepared::parse(&mut c)?),
            ROLLBACK_PREPARED_TAG => {
                LogicalMessage::RollbackPrepared(RollbackPrepared::parse(&mut c)?)
            }
            STREAM_PREPARE_TAG => LogicalMessage::StreamPrepare(StreamPrepare::parse(&mut c)?),
            other => {
                return Err(c.error_at(
                    0,
                    DecodeErrorKind::UnknownTag(other),
                    "a pgoutput message tag",
                ));
            }
        };
        c.finish()?;
        Ok(message)
    }

    /// The message's wire tag.
    pub fn tag(&self) -> u8 {
        match self {
            LogicalMessage::Begin(_) => BEGIN_TAG,
            LogicalMessage::Commit(_) => COMMIT_TAG,
            LogicalMessage::Origin(_) => ORIGIN_TAG,
            LogicalMessage::Relation(_) => RELATION_TAG,
            LogicalMessage::Type(_) => TYPE_TAG,
            LogicalMessage::Insert(_) => INSERT_TAG,
            LogicalMessage::Update(_) => UPDATE_TAG,
            LogicalMessage::Delete(_) => DELETE_TAG,
            LogicalMessage::Truncate(_) => TRUNCATE_TAG,
            LogicalMessage::Message(_) => MESSAGE_TAG,
            LogicalMessage::StreamStart(_) => STREAM_START_TAG,
            LogicalMessage::StreamStop => STREAM_STOP_TAG,
            LogicalMessage::StreamCommit(_) => STREAM_COMMIT_TAG,
            LogicalMessage::StreamAbort(_) => STREAM_ABORT_TAG,
            LogicalMessage::BeginPrepare(_) => BEGIN_PREPARE_TAG,
            LogicalMessage::Prepare(_) => PREPARE_TAG,
            LogicalMessage::CommitPrepared(_) => COMMIT_PREPARED_TAG,
            LogicalMessage::RollbackPrepared(_) => ROLLBACK_PREPARED_TAG,
            LogicalMessage::StreamPrepare(_) => STREAM_PREPARE_TAG,
        }
    }

    /// PostgreSQL's name of the message, for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            LogicalMessage::Begin(_) => "Begin",
            LogicalMessage::Commit(_) => "Commit",
            LogicalMessage::Origin(_) => "Origin",
            LogicalMessage::Relation(_) => "Relation",
            LogicalMessage::Type(_) => "Type",
            LogicalMessage::Insert(_) => "Insert",
            LogicalMessage::Update(_) => "Update",
            LogicalMessage::Delete(_) => "Delete",
            LogicalMessage::Truncate(_) => "Truncate",
            LogicalMessage::Message(_) => "Message",
            LogicalMessage::StreamStart(_) => "Stream Start",
            LogicalMessage::StreamStop => "Stream Stop",
            LogicalMessage::StreamCommit(_) => "Stream Commit",
            LogicalMessage::StreamAbort(_) => "Stream Abort",
            LogicalMessage::BeginPrepare(_) => "Begin Prepare",
            LogicalMessage::Prepare(_) => "Prepare",
            LogicalMessage::CommitPrepared(_) => "Commit Prepared",
            LogicalMessage::RollbackPrepared(_) => "Rollback Prepared",
            LogicalMessage::StreamPrepare(_) => "Stream Prepare",
        }
    }
}
