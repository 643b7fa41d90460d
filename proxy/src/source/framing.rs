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
    pacing: ReadPacing,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `io`; `addr` names the peer in errors.
    pub(crate) fn new(io: R, addr: Arc<str>) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            addr,
            pacing: ReadPacing::default(),
        }
    }

    /// Reads in bursts from now on (streaming sessions; see `pacing`).
    pub(crate) fn pace_reads(&mut self, pacing: ReadPacing) {
        self.pacing = pacing;
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
        let read = loop {
            let read = self.io.read_buf(&mut self.buf);
            let Some(patience) = self.pacing.patience() else {
                break read.await;
            };
            match tokio::time::timeout(patience, read).await {
                Ok(read) => break read,
                // Cancellation-safe: a read that timed out consumed nothing.
                Err(_) => self.pacing.after_timeout(),
            }
        }
        .map_err(|source| SourceError::Io {
            addr: self.addr.to_string(),
            source,
        })?;
        self.pacing.after_read();
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
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
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

    /// With pacing on, a read after the first waits for a burst of bytes; a
    /// lone small message must still arrive (after the patience runs out),
    /// not sit in the socket until more comes.
    #[tokio::test]
    async fn paced_reads_take_a_lone_message_without_waiting_for_a_burst() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let socket = std::os::fd::AsFd::as_fd(&client)
            .try_clone_to_owned()
            .unwrap();
        let mut reader = FrameReader::new(client, Arc::from("test:1"));
        reader.pace_reads(ReadPacing::new(Some(socket)));
        for round in 0..3u8 {
            server
                .write_all(&message(b'd', &[round; 10]))
                .await
                .unwrap();
            let frame =
                tokio::time::timeout(std::time::Duration::from_secs(10), reader.next_frame())
                    .await
                    .expect("a lone message stayed unread")
                    .unwrap();
            assert_eq!(&frame.body[..], &[round; 10][..]);
            assert!(
                reader.pacing.patience().is_some(),
                "pacing did not switch to bursts after a read"
            );
        }
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
