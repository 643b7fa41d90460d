//! Read-ahead: a task that keeps draining the leader's socket while the
//! reader is busy, up to [`READ_AHEAD_BYTES`].
//!
//! Why: when a sink lane is full the reader waits, and before this module its
//! socket reads waited with it. A stall of tens of milliseconds lets the
//! socket fill; when reading resumes the walsender's queue leaves at memory
//! speed, the leader's congestion control takes that burst for the path's
//! bandwidth, stops pacing the walsender's sends, and from then on every
//! pgoutput message leaves as its own segment: the walsender's CPU per
//! transaction more than doubles for the rest of the session (measured,
//! ARCHITECTURE.md "Data flow"). Reading ahead in memory rides out short sink
//! stalls; a long one still fills the read-ahead, and TCP flow control holds
//! the walsender as before, so memory stays bounded.
//!
//! The task reads with [`ReadPacing`] (bursts while data keeps coming) and
//! hands what it read to [`ReadAhead`] in one chunk per hand-over, so the
//! path from socket to frames gains one channel hop per burst, not per
//! message. It stops when the reader is dropped, so the connection closes
//! with the stream as before.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;

use super::framing::READ_CHUNK;
use super::pacing::ReadPacing;

/// Bytes read ahead of the reader before the socket is left alone.
pub(crate) const READ_AHEAD_BYTES: usize = 4 * 1024 * 1024;

/// The reading end: an [`AsyncRead`] over the chunks the drain task read.
/// End of file when the socket closed; the socket's error when it failed.
pub(crate) struct ReadAhead {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ReadAhead {
    /// Starts the drain task that owns `io`.
    pub(crate) fn spawn<R>(io: R, pacing: ReadPacing) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        // One chunk in flight: the rest waits in the task's own buffer, which
        // grows into one large chunk while the reader is away.
        let (sender, chunks) = mpsc::channel(1);
        tokio::spawn(drain(io, pacing, sender));
        ReadAhead {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            match ready!(self.chunks.poll_recv(cx)) {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Poll::Ready(Err(e)),
                // The socket reached end of file (or the task is gone).
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current[..n]);
        self.current.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// Reads `io` into memory while the reader has room, and hands over what it
/// has whenever the reader takes it. Ends at end of file, at a read error
/// (after handing over what came before it), or when the reader is dropped.
async fn drain<R: AsyncRead + Unpin>(
    mut io: R,
    mut pacing: ReadPacing,
    chunks: mpsc::Sender<io::Result<Bytes>>,
) {
    let mut pending = BytesMut::new();
    loop {
        let has_room = pending.len() < READ_AHEAD_BYTES;
        tokio::select! {
            biased;
            permit = chunks.reserve(), if !pending.is_empty() => match permit {
                Ok(permit) => permit.send(Ok(pending.split().freeze())),
                Err(_) => return,
            },
            () = chunks.closed(), if pending.is_empty() => return,
            read = paced_read(&mut io, &mut pacing, &mut pending), if has_room => match read {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    hand_over_rest(&chunks, pending).await;
                    let _ = chunks.send(Err(e)).await;
                    return;
                }
            },
        }
    }
    hand_over_rest(&chunks, pending).await;
}

/// The last bytes before end of file or an error still reach the reader.
async fn hand_over_rest(chunks: &mpsc::Sender<io::Result<Bytes>>, pending: BytesMut) {
    if !pending.is_empty() {
        let _ = chunks.send(Ok(pending.freeze())).await;
    }
}

/// One read into `buf`; in burst mode it waits at most the pacing's
/// patience, then takes whatever is there. Cancellation-safe: a read that
/// did not complete consumed nothing.
async fn paced_read<R: AsyncRead + Unpin>(
    io: &mut R,
    pacing: &mut ReadPacing,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    let read = loop {
        let read = io.read_buf(buf);
        let Some(patience) = pacing.patience() else {
            break read.await?;
        };
        match tokio::time::timeout(patience, read).await {
            Ok(read) => break read?,
            Err(_) => pacing.after_timeout(),
        }
    };
    pacing.after_read();
    Ok(read)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    use super::*;
    use crate::source::SourceError;
    use crate::source::framing::FrameReader;
    use crate::source::framing::tests::message;

    /// A connected pair whose kernel buffers are small, so what the writer
    /// can put in flight is mostly what the reading side takes out.
    async fn narrow_pair() -> (TcpStream, TcpStream) {
        let listening = TcpSocket::new_v4().unwrap();
        listening.set_send_buffer_size(64 * 1024).unwrap();
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener: TcpListener = listening.listen(1).unwrap();
        let connecting = TcpSocket::new_v4().unwrap();
        connecting.set_recv_buffer_size(64 * 1024).unwrap();
        let client = connecting
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    /// The point of the module: while the reader takes nothing, the socket
    /// is still drained (up to the bound), so the sender is not held back.
    #[tokio::test]
    async fn the_socket_is_drained_while_the_reader_is_busy() {
        let (mut server, client) = narrow_pair().await;
        let mut reader = FrameReader::new(
            ReadAhead::spawn(client, ReadPacing::default()),
            Arc::from("test:1"),
        );
        let wire: Vec<u8> = (0..256u32)
            .flat_map(|i| message(b'd', &[i as u8; 4096]))
            .collect();
        tokio::time::timeout(Duration::from_secs(10), server.write_all(&wire))
            .await
            .expect("the sender was held back although the read-ahead had room")
            .unwrap();
        for i in 0..256u32 {
            let frame = reader.next_frame().await.unwrap();
            assert_eq!(frame.body.len(), 4096);
            assert!(frame.body.iter().all(|b| *b == i as u8), "frame {i}");
        }
    }

    /// Memory stays bounded: past the read-ahead, TCP holds the sender.
    #[tokio::test]
    async fn a_full_read_ahead_leaves_the_sender_to_tcp() {
        let (mut server, client) = narrow_pair().await;
        let _reader = ReadAhead::spawn(client, ReadPacing::default());
        let wire = vec![0u8; 8 * READ_AHEAD_BYTES];
        let written = tokio::time::timeout(Duration::from_secs(2), server.write_all(&wire)).await;
        assert!(written.is_err(), "the read-ahead took more than its bound");
    }

    /// End of file and errors arrive after every byte that came before them.
    #[tokio::test]
    async fn the_end_of_the_stream_follows_its_last_bytes() {
        let (mut server, client) = narrow_pair().await;
        let mut reader = FrameReader::new(
            ReadAhead::spawn(client, ReadPacing::default()),
            Arc::from("test:1"),
        );
        server.write_all(&message(b'd', b"last")).await.unwrap();
        drop(server);
        let frame = reader.next_frame().await.unwrap();
        assert_eq!(&frame.body[..], b"last");
        assert!(matches!(
            reader.next_frame().await,
            Err(SourceError::Closed { .. })
        ));
    }

    /// Dropping the reader ends the task, which closes the socket: the peer
    /// sees end of file (a session's connection ends with its stream).
    #[tokio::test]
    async fn dropping_the_reader_closes_the_socket() {
        let (mut server, client) = narrow_pair().await;
        let reader = ReadAhead::spawn(client, ReadPacing::default());
        drop(reader);
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut server, &mut byte),
        )
        .await
        .expect("the socket stayed open after its reader was dropped");
        assert_eq!(read.unwrap(), 0);
    }

    /// With pacing on, a read after the first waits for a burst of bytes; a
    /// lone small message must still arrive (after the patience runs out),
    /// not sit in the socket until more comes.
    #[tokio::test]
    async fn paced_reads_take_a_lone_message_without_waiting_for_a_burst() {
        let (mut server, client) = narrow_pair().await;
        let socket = std::os::fd::AsFd::as_fd(&client)
            .try_clone_to_owned()
            .unwrap();
        let mut reader = FrameReader::new(
            ReadAhead::spawn(client, ReadPacing::new(Some(socket))),
            Arc::from("test:1"),
        );
        for round in 0..3u8 {
            server
                .write_all(&message(b'd', &[round; 10]))
                .await
                .unwrap();
            let frame = tokio::time::timeout(Duration::from_secs(10), reader.next_frame())
                .await
                .expect("a lone message stayed unread")
                .unwrap();
            assert_eq!(&frame.body[..], &[round; 10][..]);
        }
    }
}
