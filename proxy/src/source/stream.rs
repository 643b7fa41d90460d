//! The streaming halves after `START_REPLICATION`: [`ReplicationStream`]
//! reads CopyData, [`StatusSender`] writes it.
//!
//! They are independent on purpose (ARCHITECTURE.md, "Data flow"): when the pipeline
//! is full the run loop stops reading, the read-ahead fills (`read_ahead`),
//! then TCP flow control holds the walsender,
//! and the feedback timer must still get its standby status updates out, or
//! `wal_sender_timeout` kills the session. The write half lives in its own
//! task fed by a bounded channel, so a caller dropped mid-send never leaves
//! half a message on the wire.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, oneshot};

use super::error::SourceError;
use super::framing::FrameReader;
use super::messages::{self, tag};
use super::read_ahead::ReadAhead;
use crate::conn::BoxedIo;

/// Read half of a streaming replication session.
pub struct ReplicationStream {
    reader: FrameReader<ReadAhead>,
    is_ended: bool,
}

impl ReplicationStream {
    pub(crate) fn new(reader: FrameReader<ReadAhead>) -> Self {
        ReplicationStream {
            reader,
            is_ended: false,
        }
    }

    /// The next CopyData payload (an XLogData `'w'` or keepalive `'k'`
    /// message), as a zero-copy slice of the read buffer.
    ///
    /// `Ok(None)`: the server ended the copy (CopyDone or CommandComplete),
    /// and every later call says so again. An ErrorResponse becomes
    /// [`SourceError::Server`]. Cancellation-safe: it can sit in a
    /// `select!` without losing bytes.
    pub async fn next_copy_data(&mut self) -> Result<Option<Bytes>, SourceError> {
        if self.is_ended {
            return Ok(None);
        }
        loop {
            let frame = self.reader.next_frame().await?;
            match frame.tag {
                tag::COPY_DATA => return Ok(Some(frame.body)),
                tag::COPY_DONE | tag::COMMAND_COMPLETE => {
                    self.is_ended = true;
                    return Ok(None);
                }
                tag::ERROR_RESPONSE => {
                    self.is_ended = true;
                    return Err(messages::parse_error(&frame.body));
                }
                tag::NOTICE_RESPONSE => super::connect::log_notice(&frame.body),
                tag::PARAMETER_STATUS => {}
                other => {
                    return Err(SourceError::Protocol(format!(
                        "unexpected message {:?} during replication",
                        char::from(other)
                    )));
                }
            }
        }
    }

    /// `host:port` of the leader.
    pub fn addr(&self) -> &str {
        self.reader.addr()
    }
}

/// What the writer task is asked to send.
enum Outgoing {
    CopyData(Bytes),
    CopyDone,
}

struct Request {
    message: Outgoing,
    done: oneshot::Sender<std::io::Result<()>>,
}

/// Write half of a streaming replication session: sends CopyData (standby
/// status updates built by the caller) and CopyDone. Cheap to clone; the
/// connection's write side closes when the last clone is dropped.
#[derive(Clone)]
pub struct StatusSender {
    requests: mpsc::Sender<Request>,
    addr: Arc<str>,
}

impl StatusSender {
    /// Starts the writer task that owns `writer`.
    pub(crate) fn spawn(writer: WriteHalf<BoxedIo>, addr: Arc<str>) -> Self {
        let (requests, rx) = mpsc::channel(16);
        tokio::spawn(write_loop(writer, rx));
        StatusSender { requests, addr }
    }

    /// Sends `payload` as one CopyData message and waits until it was
    /// written and flushed. Dropping this future after the request was
    /// queued still writes the whole message.
    pub async fn send_copy_data(&self, payload: Bytes) -> Result<(), SourceError> {
        if payload.len() > (i32::MAX as usize) - 4 {
            return Err(SourceError::Config("CopyData payload over 2 GiB".into()));
        }
        self.request(Outgoing::CopyData(payload)).await
    }

    /// Sends CopyDone: asks the server to end the stream. The read half then
    /// drains to `Ok(None)`.
    pub async fn finish(&self) -> Result<(), SourceError> {
        self.request(Outgoing::CopyDone).await
    }

    /// `host:port` of the leader.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn request(&self, message: Outgoing) -> Result<(), SourceError> {
        let closed = || SourceError::Closed {
            addr: self.addr.to_string(),
        };
        let (done, result) = oneshot::channel();
        self.requests
            .send(Request { message, done })
            .await
            .map_err(|_| closed())?;
        result
            .await
            .map_err(|_| closed())?
            .map_err(|source| SourceError::Io {
                addr: self.addr.to_string(),
                source,
            })
    }
}

/// Owns the write half: one request at a time, each written whole. Stops
/// after the first write error (later requests see `Closed`) or when every
/// sender is gone.
async fn write_loop(mut writer: WriteHalf<BoxedIo>, mut requests: mpsc::Receiver<Request>) {
    let mut buf = BytesMut::with_capacity(256);
    while let Some(Request { message, done }) = requests.recv().await {
        buf.clear();
        let payload = match message {
            Outgoing::CopyData(payload) => {
                buf.put_u8(b'd');
                // Fits: send_copy_data checked the length.
                buf.put_i32(i32::try_from(payload.len() + 4).unwrap_or(i32::MAX));
                Some(payload)
            }
            Outgoing::CopyDone => {
                postgres_protocol::message::frontend::copy_done(&mut buf);
                None
            }
        };
        let mut result = writer.write_all(&buf).await;
        if let (Ok(()), Some(payload)) = (&result, &payload) {
            result = writer.write_all(payload).await;
        }
        if result.is_ok() {
            result = writer.flush().await;
        }
        let is_failed = result.is_err();
        let _ = done.send(result);
        if is_failed {
            break;
        }
    }
}
