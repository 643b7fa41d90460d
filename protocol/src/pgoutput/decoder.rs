//! `PgOutputDecoder`: pgoutput decoding with the stream-block state kept
//! for the caller, so nobody can forget that changes inside Stream Start …
//! Stream Stop carry an xid.

use bytes::Bytes;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::pgoutput::message::{LogicalMessage, ParseContext, STREAM_START_TAG, STREAM_STOP_TAG};

/// Stateful pgoutput decoder for one replication session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PgOutputDecoder {
    in_stream: bool,
    parallel_abort: bool,
}

impl PgOutputDecoder {
    /// A decoder for a session without `streaming = parallel`.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder whose Stream Abort messages carry the v4 abort LSN and
    /// time: set when the session uses protocol 4 with `streaming = parallel`.
    pub fn with_parallel_abort(parallel_abort: bool) -> Self {
        PgOutputDecoder {
            in_stream: false,
            parallel_abort,
        }
    }

    /// Whether we are inside a Stream Start … Stream Stop block.
    pub fn in_stream(&self) -> bool {
        self.in_stream
    }

    /// Whether Stream Abort carries the v4 abort LSN and time.
    pub fn parallel_abort(&self) -> bool {
        self.parallel_abort
    }

    /// The context the next message will be parsed with.
    pub fn context(&self) -> ParseContext {
        ParseContext {
            in_stream: self.in_stream,
            parallel_abort: self.parallel_abort,
        }
    }

    /// Forgets the stream-block state (on reconnect).
    pub fn reset(&mut self) {
        self.in_stream = false;
    }

    /// Decodes one pgoutput message and follows Stream Start / Stream Stop.
    ///
    /// A nested Stream Start or a Stream Stop outside a block is an error;
    /// on any error the state is unchanged.
    #[inline]
    pub fn decode(&mut self, data: Bytes) -> Result<LogicalMessage, DecodeError> {
        let tag = data.first().copied();
        match tag {
            Some(STREAM_START_TAG) if self.in_stream => {
                return Err(state_error(
                    DecodeErrorKind::NestedStreamStart,
                    STREAM_START_TAG,
                    "Stream Stop before the next Stream Start",
                ));
            }
            Some(STREAM_STOP_TAG) if !self.in_stream => {
                return Err(state_error(
                    DecodeErrorKind::StreamStopOutsideStream,
                    STREAM_STOP_TAG,
                    "Stream Start before Stream Stop",
                ));
            }
            _ => {}
        }
        let message = LogicalMessage::parse(data, self.context())?;
        match tag {
            Some(STREAM_START_TAG) => self.in_stream = true,
            Some(STREAM_STOP_TAG) => self.in_stream = false,
            _ => {}
        }
        Ok(message)
    }
}

fn state_error(kind: DecodeErrorKind, tag: u8, expected: &'static str) -> DecodeError {
    DecodeError::new(kind, 0, Some(tag), expected)
}
