//! Message (`'M'`): a `pg_logical_emit_message` record (option `messages`).

use bytes::Bytes;

use crate::cursor::{Cursor, Result};
use crate::lsn::Lsn;
use crate::pgoutput::pg_string::PgString;

/// Flag bit of [`Message::flags`]: the message is transactional.
pub const MESSAGE_TRANSACTIONAL: u8 = 1;

/// Message (`'M'`): a logical decoding message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Transaction id, present only inside a stream block.
    pub xid: Option<u32>,
    /// Flags; bit 1 = transactional.
    pub flags: u8,
    /// LSN of the logical decoding message record.
    pub message_lsn: Lsn,
    /// The message's prefix.
    pub prefix: PgString,
    /// The message's content, sharing the frame.
    pub content: Bytes,
}

impl Message {
    /// Whether the message was emitted as part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.flags & MESSAGE_TRANSACTIONAL != 0
    }

    pub(crate) fn parse(c: &mut Cursor, xid: Option<u32>) -> Result<Message> {
        let flags = c.u8("Message flags")?;
        let message_lsn = c.lsn("Message LSN")?;
        let prefix = PgString::from_checked(c.cstr_bytes("Message prefix")?);
        let len = c.len_i32("Message content length")?;
        let content = c.bytes(len, "Message content")?;
        Ok(Message {
            xid,
            flags,
            message_lsn,
            prefix,
            content,
        })
    }
}
