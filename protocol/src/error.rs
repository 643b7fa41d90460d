//! The one error type of the codec: small, `Copy`, and allocation-free.
//!
//! A decode error must be cheap enough to build on the hot path and precise
//! enough for an operator: it names the byte offset, the message tag and the
//! field that was being read.

use std::fmt;

/// Why a byte string is not a valid replication or pgoutput message.
///
/// `offset` counts bytes from the start of the buffer handed to the parser
/// (the CopyData payload for frames, the XLogData `data` for pgoutput).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// What went wrong.
    pub kind: DecodeErrorKind,
    /// Byte offset of the field that failed, from the start of the buffer.
    pub offset: usize,
    /// Tag byte of the message being decoded, when it was read.
    pub tag: Option<u8>,
    /// The field that was expected at `offset` (e.g. `"column length"`).
    pub expected: &'static str,
}

/// The kinds of malformed input; each one decides nothing by itself; every
/// decode error means "stop, do not advance past this message".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The buffer ended in the middle of a field.
    UnexpectedEof,
    /// A message tag this codec does not know.
    UnknownTag(u8),
    /// A length or count that is negative (or otherwise impossible).
    BadLength(i32),
    /// A string that is not UTF-8.
    InvalidUtf8,
    /// A string without its terminating NUL byte.
    MissingNul,
    /// Bytes left over after a complete message.
    TrailingBytes,
    /// In Update/Delete: a byte other than the expected `'K'`, `'O'` or `'N'`.
    UnexpectedTupleMarker(u8),
    /// In TupleData: a column kind other than `'n'`, `'u'`, `'t'`, `'b'`.
    UnknownColumnKind(u8),
    /// In Relation: a replica identity other than `d`, `n`, `f`, `i`.
    BadReplicaIdentity(u8),
    /// Stream Start while already inside a Stream Start … Stream Stop block.
    NestedStreamStart,
    /// Stream Stop outside a Stream Start … Stream Stop block.
    StreamStopOutsideStream,
}

impl DecodeError {
    /// Builds an error; `expected` names the field being read.
    pub fn new(
        kind: DecodeErrorKind,
        offset: usize,
        tag: Option<u8>,
        expected: &'static str,
    ) -> Self {
        DecodeError {
            kind,
            offset,
            tag,
            expected,
        }
    }
}

/// Prints a byte as `'x'` when printable, else as `0xNN`.
struct ByteName(u8);

impl fmt::Display for ByteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "0x{:02X}", self.0)
        }
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeErrorKind::UnexpectedEof => f.write_str("unexpected end of data"),
            DecodeErrorKind::UnknownTag(t) => write!(f, "unknown message tag {}", ByteName(t)),
            DecodeErrorKind::BadLength(n) => write!(f, "invalid length {n}"),
            DecodeErrorKind::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            DecodeErrorKind::MissingNul => f.write_str("string has no terminating NUL"),
            DecodeErrorKind::TrailingBytes => f.write_str("trailing bytes after the message"),
            DecodeErrorKind::UnexpectedTupleMarker(b) => {
                write!(f, "unexpected tuple marker {}", ByteName(b))
            }
            DecodeErrorKind::UnknownColumnKind(b) => {
                write!(f, "unknown column kind {}", ByteName(b))
            }
            DecodeErrorKind::BadReplicaIdentity(b) => {
                write!(f, "unknown replica identity {}", ByteName(b))
            }
            DecodeErrorKind::NestedStreamStart => f.write_str("Stream Start inside a stream block"),
            DecodeErrorKind::StreamStopOutsideStream => {
                f.write_str("Stream Stop outside a stream block")
            }
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed replication message")?;
        if let Some(tag) = self.tag {
            write!(f, " (tag {})", ByteName(tag))?;
        }
        write!(
            f,
            " at byte {}: {} (expected {})",
            self.offset, self.kind, self.expected
        )
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_offset_tag_and_field() {
        let err = DecodeError::new(
            DecodeErrorKind::BadLength(-5),
            17,
            Some(b'I'),
            "column length",
        );
        assert_eq!(
            err.to_string(),
            "malformed replication message (tag 'I') at byte 17: invalid length -5 (expected column length)"
        );
        let err = DecodeError::new(DecodeErrorKind::UnknownTag(0), 0, None, "message tag");
        assert_eq!(
            err.to_string(),
            "malformed replication message at byte 0: unknown message tag 0x00 (expected message tag)"
        );
    }
}
