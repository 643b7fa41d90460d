//! The streaming-replication wrappers inside CopyData: XLogData (`'w'`) and
//! Primary Keepalive (`'k'`) from the leader, Standby Status Update (`'r'`)
//! to it.
//!
//! `payload` everywhere means the CopyData body without the 5-byte CopyData
//! header. Encoders live in `encode.rs`.

use bytes::{Buf, Bytes};

use crate::cursor::Cursor;
use crate::error::{DecodeError, DecodeErrorKind};
use crate::lsn::Lsn;
use crate::timestamp::PgTimestamp;

/// Tag of XLogData.
pub const XLOG_DATA_TAG: u8 = b'w';
/// Tag of Primary Keepalive.
pub const PRIMARY_KEEPALIVE_TAG: u8 = b'k';
/// Tag of Standby Status Update.
pub const STANDBY_STATUS_UPDATE_TAG: u8 = b'r';

/// A CopyData payload sent by the leader's walsender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// WAL data: for logical replication, one pgoutput message.
    XLogData(XLogData),
    /// A keepalive, possibly asking for an immediate status update.
    PrimaryKeepalive(PrimaryKeepalive),
}

/// XLogData (`'w'`): one chunk of decoded WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XLogData {
    /// Start of this chunk's WAL (0 for some pgoutput messages).
    pub wal_start: Lsn,
    /// Current end of WAL on the server.
    pub wal_end: Lsn,
    /// Server clock at transmission.
    pub send_time: PgTimestamp,
    /// The pgoutput message, sharing the received frame.
    pub data: Bytes,
}

/// Primary Keepalive (`'k'`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// Current end of WAL on the server.
    pub wal_end: Lsn,
    /// Server clock at transmission.
    pub send_time: PgTimestamp,
    /// The server wants a status update now or it will time us out.
    pub reply_requested: bool,
}

/// Standby Status Update (`'r'`): our progress report to the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// Last WAL byte + 1 received and written.
    pub write: Lsn,
    /// Last WAL byte + 1 durably stored (what the slot may release).
    pub flush: Lsn,
    /// Last WAL byte + 1 applied.
    pub apply: Lsn,
    /// Our clock at transmission.
    pub client_time: PgTimestamp,
    /// Ask the server to reply immediately (used to probe liveness).
    pub reply_requested: bool,
}

impl ReplicationMessage {
    /// Decodes one CopyData payload from the walsender.
    ///
    /// An unknown tag is `DecodeErrorKind::UnknownTag`; a caller may choose
    /// to skip such messages.
    #[inline]
    pub fn parse(mut payload: Bytes) -> Result<ReplicationMessage, DecodeError> {
        // Fast path for the common case, a complete XLogData header: no
        // cursor, and the payload itself becomes `data` (no refcount change).
        if let Some([XLOG_DATA_TAG, header @ ..]) = payload.first_chunk::<25>() {
            let header = XLogData {
                wal_start: Lsn(u64::from_be_bytes(be8(header, 0))),
                wal_end: Lsn(u64::from_be_bytes(be8(header, 8))),
                send_time: PgTimestamp(i64::from_be_bytes(be8(header, 16))),
                data: Bytes::new(),
            };
            payload.advance(25);
            return Ok(ReplicationMessage::XLogData(XLogData {
                data: payload,
                ..header
            }));
        }
        let mut c = Cursor::new(payload);
        let tag = c.u8("replication message tag")?;
        c.set_tag(tag);
        match tag {
            XLOG_DATA_TAG => {
                let wal_start = c.lsn("XLogData WAL start")?;
                let wal_end = c.lsn("XLogData WAL end")?;
                let send_time = c.timestamp("XLogData send time")?;
                let data = c.rest();
                Ok(ReplicationMessage::XLogData(XLogData {
                    wal_start,
                    wal_end,
                    send_time,
                    data,
                }))
            }
            PRIMARY_KEEPALIVE_TAG => {
                let wal_end = c.lsn("keepalive WAL end")?;
                let send_time = c.timestamp("keepalive send time")?;
                let reply_requested = c.u8("keepalive reply flag")? != 0;
                c.finish()?;
                Ok(ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                    wal_end,
                    send_time,
                    reply_requested,
                }))
            }
            other => Err(c.error_at(
                0,
                DecodeErrorKind::UnknownTag(other),
                "replication message tag 'w' or 'k'",
            )),
        }
    }
}

/// The 8 bytes at `at` of a fixed-size header (zeros if out of range,
/// which the callers' lengths rule out).
#[inline(always)]
fn be8(header: &[u8; 24], at: usize) -> [u8; 8] {
    header
        .get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .unwrap_or_default()
}

impl StandbyStatusUpdate {
    /// Decodes an `'r'` payload (the leader never sends one; tests and
    /// fakes of the leader do).
    pub fn parse(payload: Bytes) -> Result<StandbyStatusUpdate, DecodeError> {
        let mut c = Cursor::new(payload);
        let tag = c.u8("status update tag")?;
        c.set_tag(tag);
        if tag != STANDBY_STATUS_UPDATE_TAG {
            return Err(c.error_at(0, DecodeErrorKind::UnknownTag(tag), "status update tag 'r'"));
        }
        let update = StandbyStatusUpdate {
            write: c.lsn("write LSN")?,
            flush: c.lsn("flush LSN")?,
            apply: c.lsn("apply LSN")?,
            client_time: c.timestamp("client time")?,
            reply_requested: c.u8("reply flag")? != 0,
        };
        c.finish()?;
        Ok(update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xlog_data_keeps_payload_zero_copy() {
        let mut f = vec![b'w'];
        f.extend_from_slice(&1u64.to_be_bytes());
        f.extend_from_slice(&2u64.to_be_bytes());
        f.extend_from_slice(&3i64.to_be_bytes());
        f.extend_from_slice(b"Bxyz");
        let payload = Bytes::from(f);
        let ReplicationMessage::XLogData(x) = ReplicationMessage::parse(payload.clone()).unwrap()
        else {
            panic!("not XLogData")
        };
        assert_eq!(
            (x.wal_start, x.wal_end, x.send_time),
            (Lsn(1), Lsn(2), PgTimestamp(3))
        );
        assert_eq!(x.data, Bytes::from_static(b"Bxyz"));
        assert_eq!(x.data.as_ptr(), payload[25..].as_ptr());
    }

    #[test]
    fn keepalive_and_unknown_tag() {
        let mut f = vec![b'k'];
        f.extend_from_slice(&0x16B_3748u64.to_be_bytes());
        f.extend_from_slice(&9i64.to_be_bytes());
        f.push(1);
        assert_eq!(
            ReplicationMessage::parse(Bytes::from(f.clone())).unwrap(),
            ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                wal_end: Lsn(0x16B_3748),
                send_time: PgTimestamp(9),
                reply_requested: true
            })
        );
        f.push(0);
        let err = ReplicationMessage::parse(Bytes::from(f)).unwrap_err();
        assert_eq!((err.kind, err.offset), (DecodeErrorKind::TrailingBytes, 18));
        let err = ReplicationMessage::parse(Bytes::from_static(b"h")).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::UnknownTag(b'h'));
        let err = ReplicationMessage::parse(Bytes::new()).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::UnexpectedEof);
    }

    #[test]
    fn status_update_is_34_bytes_in_doc_order() {
        let update = StandbyStatusUpdate {
            write: Lsn(1),
            flush: Lsn(2),
            apply: Lsn(3),
            client_time: PgTimestamp(4),
            reply_requested: false,
        };
        let mut buf = bytes::BytesMut::new();
        update.encode(&mut buf);
        let mut expected = vec![b'r'];
        for n in [1u64, 2, 3, 4] {
            expected.extend_from_slice(&n.to_be_bytes());
        }
        expected.push(0);
        assert_eq!(buf.as_ref(), expected.as_slice());
        assert_eq!(StandbyStatusUpdate::parse(buf.freeze()).unwrap(), update);
    }
}
