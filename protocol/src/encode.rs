//! Encoders: the inverse of every decoder in this crate.
//!
//! pgsieve never sends pgoutput; these exist so that tests, fuzz seeds,
//! benches and other crates' synthetic streams all make frames the same
//! way, and so that decode → encode → decode can be checked. Everything
//! writes into the caller's `BytesMut`.
//!
//! Limits PostgreSQL never reaches are clamped rather than panicking:
//! strings stop at their first NUL, a value longer than `i32::MAX` bytes or
//! a list longer than its count field allows is cut to fit.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::{
    PRIMARY_KEEPALIVE_TAG, PrimaryKeepalive, ReplicationMessage, STANDBY_STATUS_UPDATE_TAG,
    StandbyStatusUpdate, XLOG_DATA_TAG, XLogData,
};
use crate::lsn::Lsn;
use crate::pgoutput::{
    COLUMN_BINARY, COLUMN_NULL, COLUMN_TEXT, COLUMN_UNCHANGED_TOAST, Column, LogicalMessage,
    OldTuple, TUPLE_NEW, TupleData,
};
use crate::timestamp::PgTimestamp;

fn put_lsn(buf: &mut BytesMut, lsn: Lsn) {
    buf.put_u64(lsn.0);
}

fn put_time(buf: &mut BytesMut, time: PgTimestamp) {
    buf.put_i64(time.0);
}

/// A NUL-terminated string, cut at an embedded NUL.
fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    buf.put_slice(s.get(..end).unwrap_or_default());
    buf.put_u8(0);
}

/// Int32 length then bytes, cut to `i32::MAX`.
fn put_sized(buf: &mut BytesMut, value: &[u8]) {
    let len = i32::try_from(value.len()).unwrap_or(i32::MAX);
    buf.put_i32(len);
    buf.put_slice(value.get(..len.unsigned_abs() as usize).unwrap_or(value));
}

fn put_xid(buf: &mut BytesMut, xid: Option<u32>) {
    if let Some(xid) = xid {
        buf.put_u32(xid);
    }
}

impl XLogData {
    /// Writes the `'w'` CopyData payload.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(25 + self.data.len());
        buf.put_u8(XLOG_DATA_TAG);
        put_lsn(buf, self.wal_start);
        put_lsn(buf, self.wal_end);
        put_time(buf, self.send_time);
        buf.put_slice(&self.data);
    }
}

impl PrimaryKeepalive {
    /// Writes the `'k'` CopyData payload.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(PRIMARY_KEEPALIVE_TAG);
        put_lsn(buf, self.wal_end);
        put_time(buf, self.send_time);
        buf.put_u8(u8::from(self.reply_requested));
    }
}

impl ReplicationMessage {
    /// Writes the CopyData payload of either wrapper.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            ReplicationMessage::XLogData(x) => x.encode(buf),
            ReplicationMessage::PrimaryKeepalive(k) => k.encode(buf),
        }
    }
}

impl StandbyStatusUpdate {
    /// Writes the `'r'` CopyData payload (without the CopyData header).
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(STANDBY_STATUS_UPDATE_TAG);
        put_lsn(buf, self.write);
        put_lsn(buf, self.flush);
        put_lsn(buf, self.apply);
        put_time(buf, self.client_time);
        buf.put_u8(u8::from(self.reply_requested));
    }
}

impl TupleData {
    /// Writes the TupleData (Int16 count + columns).
    pub fn encode(&self, buf: &mut BytesMut) {
        // `len` came from a u16 that was a non-negative i16.
        buf.put_i16(i16::try_from(self.len()).unwrap_or(i16::MAX));
        buf.put_slice(self.encoded_columns());
    }

    /// A tuple holding `columns`, in order.
    pub fn from_columns<'a>(columns: impl IntoIterator<Item = Column<'a>>) -> TupleData {
        let mut builder = TupleBuilder::new();
        for column in columns {
            builder.push(column);
        }
        builder.finish()
    }
}

/// Builds a [`TupleData`] column by column.
///
/// ```
/// use pgsieve_protocol::{Column, TupleBuilder};
/// let tuple = TupleBuilder::new().text(b"acct:variable:db/pw").int(1).null().finish();
/// assert_eq!(tuple.get(1), Some(Column::Text(b"1")));
/// ```
#[derive(Clone, Debug, Default)]
pub struct TupleBuilder {
    data: BytesMut,
    len: u16,
}

impl TupleBuilder {
    /// Most columns a TupleData can carry (its count is an Int16).
    pub const MAX_COLUMNS: usize = i16::MAX as usize;

    /// An empty tuple.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `column`; columns past [`Self::MAX_COLUMNS`] are dropped.
    pub fn push(&mut self, column: Column<'_>) -> &mut Self {
        if usize::from(self.len) >= Self::MAX_COLUMNS {
            return self;
        }
        self.len += 1;
        match column {
            Column::Null => self.data.put_u8(COLUMN_NULL),
            Column::UnchangedToast => self.data.put_u8(COLUMN_UNCHANGED_TOAST),
            Column::Text(value) => {
                self.data.put_u8(COLUMN_TEXT);
                put_sized(&mut self.data, value);
            }
            Column::Binary(value) => {
                self.data.put_u8(COLUMN_BINARY);
                put_sized(&mut self.data, value);
            }
        }
        self
    }

    /// Appends a NULL.
    pub fn null(&mut self) -> &mut Self {
        self.push(Column::Null)
    }

    /// Appends an unchanged-TOAST placeholder.
    pub fn unchanged_toast(&mut self) -> &mut Self {
        self.push(Column::UnchangedToast)
    }

    /// Appends a text-format value.
    pub fn text(&mut self, value: impl AsRef<[u8]>) -> &mut Self {
        self.push(Column::Text(value.as_ref()))
    }

    /// Appends a binary-format value.
    pub fn binary(&mut self, value: impl AsRef<[u8]>) -> &mut Self {
        self.push(Column::Binary(value.as_ref()))
    }

    /// Appends an integer in text format, as PostgreSQL prints it.
    pub fn int(&mut self, value: i64) -> &mut Self {
        self.text(value.to_string())
    }

    /// The finished tuple.
    pub fn finish(&mut self) -> TupleData {
        let data = std::mem::take(&mut self.data).freeze();
        let len = std::mem::take(&mut self.len);
        TupleData::from_encoded(data, len)
    }
}

impl LogicalMessage {
    /// Writes this message as pgoutput sends it. Optional fields (`xid`,
    /// v4 Stream Abort fields) are written when they are `Some`, so the
    /// result parses back under the matching [`ParseContext`](crate::ParseContext).
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(self.tag());
        match self {
            LogicalMessage::Begin(m) => {
                put_lsn(buf, m.final_lsn);
                put_time(buf, m.commit_time);
                buf.put_u32(m.xid);
            }
            LogicalMessage::Commit(m) => {
                buf.put_u8(m.flags);
                put_lsn(buf, m.commit_lsn);
                put_lsn(buf, m.end_lsn);
                put_time(buf, m.commit_time);
            }
            LogicalMessage::Origin(m) => {
                put_lsn(buf, m.origin_lsn);
                put_cstr(buf, m.name.as_bytes());
            }
            LogicalMessage::Relation(m) => {
                put_xid(buf, m.xid);
                buf.put_u32(m.oid);
                put_cstr(buf, m.namespace.as_bytes());
                put_cstr(buf, m.name.as_bytes());
                buf.put_u8(m.replica_identity.as_byte());
                let count = i16::try_from(m.columns.len()).unwrap_or(i16::MAX);
                buf.put_i16(count);
                for column in m.columns.iter().take(count.unsigned_abs().into()) {
                    buf.put_u8(u8::from(column.is_key));
                    put_cstr(buf, column.name.as_bytes());
                    buf.put_u32(column.type_oid);
                    buf.put_i32(column.type_modifier);
                }
            }
            LogicalMessage::Type(m) => {
                put_xid(buf, m.xid);
                buf.put_u32(m.oid);
                put_cstr(buf, m.namespace.as_bytes());
                put_cstr(buf, m.name.as_bytes());
            }
            LogicalMessage::Insert(m) => {
                put_xid(buf, m.xid);
                buf.put_u32(m.rel_id);
                buf.put_u8(TUPLE_NEW);
                m.new.encode(buf);
            }
            LogicalMessage::Update(m) => {
                put_xid(buf, m.xid);
                buf.put_u32(m.rel_id);
                if let Some(old) = &m.old {
                    put_old(buf, old);
                }
                buf.put_u8(TUPLE_NEW);
                m.new.encode(buf);
            }
            LogicalMessage::Delete(m) => {
                put_xid(buf, m.xid);
                buf.put_u32(m.rel_id);
                put_old(buf, &m.old);
            }
            LogicalMessage::Truncate(m) => {
                put_xid(buf, m.xid);
                let count = i32::try_from(m.rel_ids.len()).unwrap_or(i32::MAX);
                buf.put_i32(count);
                buf.put_u8(m.options.as_byte());
                for rel_id in m.rel_ids.iter().take(count.unsigned_abs() as usize) {
                    buf.put_u32(*rel_id);
                }
            }
            LogicalMessage::Message(m) => {
                put_xid(buf, m.xid);
                buf.put_u8(m.flags);
                put_lsn(buf, m.message_lsn);
                put_cstr(buf, m.prefix.as_bytes());
                put_sized(buf, &m.content);
            }
            LogicalMessage::StreamStart(m) => {
                buf.put_u32(m.xid);
                buf.put_u8(u8::from(m.first_segment));
            }
            LogicalMessage::StreamStop => {}
            LogicalMessage::StreamCommit(m) => {
                buf.put_u32(m.xid);
                buf.put_u8(m.flags);
                put_lsn(buf, m.commit_lsn);
                put_lsn(buf, m.end_lsn);
                put_time(buf, m.commit_time);
            }
            LogicalMessage::StreamAbort(m) => {
                buf.put_u32(m.xid);
                buf.put_u32(m.subxid);
                if let Some(lsn) = m.abort_lsn {
                    put_lsn(buf, lsn);
                    put_time(buf, m.abort_time.unwrap_or_default());
                }
            }
            LogicalMessage::BeginPrepare(m) => {
                put_lsn(buf, m.prepare_lsn);
                put_lsn(buf, m.end_lsn);
                put_time(buf, m.prepare_time);
                buf.put_u32(m.xid);
                put_cstr(buf, m.gid.as_bytes());
            }
            LogicalMessage::Prepare(m) => {
                buf.put_u8(m.flags);
                put_lsn(buf, m.prepare_lsn);
                put_lsn(buf, m.end_lsn);
                put_time(buf, m.prepare_time);
                buf.put_u32(m.xid);
                put_cstr(buf, m.gid.as_bytes());
            }
            LogicalMessage::CommitPrepared(m) => {
                buf.put_u8(m.flags);
                put_lsn(buf, m.commit_lsn);
                put_lsn(buf, m.end_lsn);
                put_time(buf, m.commit_time);
                buf.put_u32(m.xid);
                put_cstr(buf, m.gid.as_bytes());
            }
            LogicalMessage::RollbackPrepared(m) => {
                buf.put_u8(m.flags);
                put_lsn(buf, m.prepare_end_lsn);
                put_lsn(buf, m.rollback_end_lsn);
                put_time(buf, m.prepare_time);
                put_time(buf, m.rollback_time);
                buf.put_u32(m.xid);
                put_cstr(buf, m.gid.as_bytes());
            }
            LogicalMessage::StreamPrepare(m) => {
                buf.put_u8(m.flags);
                put_lsn(buf, m.prepare_lsn);
                put_lsn(buf, m.end_lsn);
                put_time(buf, m.prepare_time);
                buf.put_u32(m.xid);
                put_cstr(buf, m.gid.as_bytes());
            }
        }
    }

    /// This message encoded into a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }

    /// This message wrapped in an XLogData payload (`'w'`), as the
    /// walsender sends it.
    pub fn to_xlog_data(&self, wal_start: Lsn, wal_end: Lsn, send_time: PgTimestamp) -> Bytes {
        let mut buf = BytesMut::new();
        XLogData {
            wal_start,
            wal_end,
            send_time,
            data: self.to_bytes(),
        }
        .encode(&mut buf);
        buf.freeze()
    }
}

fn put_old(buf: &mut BytesMut, old: &OldTuple) {
    buf.put_u8(old.marker());
    old.tuple().encode(buf);
}
