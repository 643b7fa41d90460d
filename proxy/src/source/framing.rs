//! The 5-byte message framing of the PostgreSQL wire protocol (`tag`,
//! `Int32 length` including itself, body), read from one growing buffer.
//!
//! Why our own: postgres-protocol's `backend::Message::parse` rejects the
//! `'W'` (CopyBothResponse) that starts streaming replication. Framing here
//! knows no tags; it only cuts complete messages out of the read buffer and
//! hands each body out as a zero-copy [`Bytes`] slice of that buffer, so a
//! CopyData payload reaches the decoder without a copy.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::SourceError;
use super::pacing::ReadPacing;
use super::read_ahead::ReadAhead;

/// Bytes asked from the socket per read; large reads keep syscalls per row low.
pub(crate) const READ_CHUNK: usize = 128 * 1024;

/// Largest message accepted. PostgreSQL caps a message (and a CopyData row)
/// near 1 GiB; anything above is a corrupt length word.
const MAX_MESSAGE_LEN: usize = 1 << 30;

/// One backend message: its tag and its body (the length word stripped).
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// The message type byte, e.g. `b'd'` for CopyData.
    pub tag: u8,
    /// The message body, a slice of the shared read buffer.
    pub body: Bytes,
}

/// Reads whole backend messages from the read half of a connection.
///
/// Cancellation-safe: bytes read before a dropped `next_frame` future stay
/// in the buffer, so `next_frame` can sit in a `select!`.
pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    addr: Arc<str>,
}

impl<R: AsyncRead + Unpin + Send + 'static> FrameReader<R> {
    /// From now on a task reads the socket ahead of this reader, in paced
    /// bursts (streaming sessions; see `read_ahead` and `pacing`). Bytes
    /// already buffered stay first in line.
    pub(crate) fn read_ahead(self, pacing: ReadPacing) -> FrameReader<ReadAhead> {
        FrameReader {
            io: ReadAhead::spawn(self.io, pacing),
            buf: self.buf,
            addr: self.addr,
        }
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `io`; `addr` names the peer in errors.
    pub(crate) fn new(io: R, addr: Arc<str>) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            addr,
        }
    }

    /// The `host:port` this reader talks to.
    pub(crate) fn addr(&self) -> &Arc<str> {
        &self.addr
    }

    /// The next complete message, reading from the socket as needed.
    pub(crate) async fn next_frame(&mut self) -> Result<Frame, SourceError> {
        loop {
            if let Some(frame) = split_frame(&mut self.buf)? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Reads at least one more byte into the buffer.
    async fn fill(&mut self) -> Result<(), SourceError> {
        let wanted = pending_len(&self.buf).unwrap_or(0);
        let missing = wanted.saturating_sub(self.buf.len());
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 || missing > 0 {
            self.buf.reserve(missing.max(READ_CHUNK));
        }
        let read = self
            .io
            .read_buf(&mut self.buf)
            .await
            .map_err(|source| SourceError::Io {
                addr: self.addr.to_string(),
                source,
            })?;
        if read == 0 {
            return Err(SourceError::Closed {
                addr: self.addr.to_string(),
            });
        }
        Ok(())
    }
}

/// Total bytes (tag + length word + body) of the message at the start of
/// `buf`, once its header is complete.
fn pending_len(buf: &[u8]) -> Option<usize> {
    let header = buf.get(..5)?;
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    usize::try_from(len).ok()?.checked_add(1)
}

/// Cuts one complete message off the front of `buf`, or `Ok(None)` when
/// more bytes are needed.
pub(crate) fn split_frame(buf: &mut BytesMut) -> Result<Option<Frame>, SourceError> {
    let Some(header) = buf.get(..5) else {
        return Ok(None);
    };
    let tag = header[0];
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len)
        .ok()
        .filter(|len| (4..=MAX_MESSAGE_LEN).contains(len))
        .ok_or_else(|| {
            SourceError::Protocol(format!(
                "message {:?} has invalid length {len}",
                char::from(tag)
            ))
        })?;
    let total = len + 1;
    if buf.len() < total {
        return Ok(None);
    }
    let mut message = buf.split_to(total).freeze();
    message.advance(5);
    Ok(Some(Frame { tag, body: message }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One backend message on the wire (shared with `read_ahead`'s tests).
    pub(crate) fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn splits_complete_messages_and_waits_for_partial_ones() {
        let mut wire = message(b'd', b"hello");
        wire.extend(message(b'Z', b"I"));
        let mut buf = BytesMut::new();
        for (i, byte) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let got = split_frame(&mut buf).unwrap();
            match i {
                9 => {
                    let f = got.unwrap();
                    assert_eq!((f.tag, &f.body[..]), (b'd', &b"hello"[..]));
                }
                15 => {
                    let f = got.unwrap();
                    assert_eq!((f.tag, &f.body[..]), (b'Z', &b"I"[..]));
                }
                _ => assert!(got.is_none(), "frame too early at byte {i}"),
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_lengths_below_four() {
        let mut buf = BytesMut::from(&[b'd', 0, 0, 0, 3][..]);
        assert!(matches!(
            split_frame(&mut buf),
            Err(SourceError::Protocol(_))
        ));
        let mut buf = BytesMut::from(&[b'd', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            split_frame(&mut buf),
            Err(SourceError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn reader_reassembles_across_reads() {
        let mut wire = message(b'd', &[7u8; 300_000]);
        wire.extend(message(b'c', b""));
        let (mut tx, rx) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&wire).await.unwrap();
        });
        let mut reader = FrameReader::new(rx, Arc::from("test:1"));
        let big = reader.next_frame().await.unwrap();
        assert_eq!((big.tag, big.body.len()), (b'd', 300_000));
        assert!(big.body.iter().all(|b| *b == 7));
        let done = reader.next_frame().await.unwrap();
        assert_eq!((done.tag, done.body.len()), (b'c', 0));
        writer.await.unwrap();
        assert!(matches!(
            reader.next_frame().await,
            Err(SourceError::Closed { .. })
        ));
    }
}
